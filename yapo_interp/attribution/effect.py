"""Attribution by effect (the default): what each vector does to the SAE code of real activations,
per direction ``d`` (``effect_codes``; the quantities are defined in the package docstring). Pure:
the activations come in as tensors, no model is run and no file is read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from yapo_interp.attribution.encode import _sae_input
from yapo_interp.errors import UserError
from yapo_interp.steering import intervention

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE


@dataclass(frozen=True)
class EffectCodes:
    """What one vector does to the SAE code of real activations, in one direction ``d``.

    All expectations are over the tokens given (BOS excluded by the callers here).
    """

    method: str  # "bipo" (dense, eq. 2) or "yapo" (sparse, eq. 3)
    direction: int  # d
    strength: float  # λ
    effect: Float[torch.Tensor, "d_sae"]  # E_h[Enc(Φ(h)) − Enc(h)]
    gated: Float[torch.Tensor, "d_sae"] | None  # YaPO: E_h[ReLU(Enc(h) + d·λ·v) − Enc(h)]
    share: Float[torch.Tensor, "d_sae"]  # (effect_f · W_dec[f]) · Δ / ‖Δ‖², Δ = E_h[Φ(h) − h]
    mean_shift: Float[torch.Tensor, "d_model"]  # Δ
    decoded_r2: float  # per token: 1 − E‖(Φ(h)−h) − (Dec(Enc Φ(h)) − Dec(Enc h))‖² / E‖Φ(h)−h‖²
    mean_r2: float  # on the means: 1 − ‖Δ − effect @ W_dec‖² / ‖Δ‖²
    n_tokens: int

    def summary(self) -> dict[str, Any]:
        """Scalars for the JSON report."""
        active = self.effect.abs() > 0
        return {"method": self.method, "direction": self.direction, "strength": self.strength,
                "n_tokens": self.n_tokens, "decoded_r2": self.decoded_r2,
                "mean_r2": self.mean_r2,
                "mean_shift_norm": float(self.mean_shift.norm()),
                "features_changed": int(active.sum()),
                "share_total": float(self.share.sum())}


def effect_codes(
    batches: Iterable[Float[torch.Tensor, "token d_model"]],
    sae: SAE,
    vectors: Mapping[str, torch.Tensor],
    *,
    directions: Sequence[int] = (1, -1),
    strength: float = 1.0,
) -> dict[tuple[str, int], EffectCodes]:
    """Effect of each vector on the SAE code of real activations, per direction (Mayne et al.).

    ``vectors`` maps a method name to its vector: a ``d_model`` vector steers densely
    (``Φ(h) = h + d·λ·v``, eq. 2), a ``d_sae`` vector sparsely (eq. 3, and its gated code
    ``ReLU(Enc(h) + d·λ·v) − Enc(h)`` is reported too). ``batches`` are real residual-stream
    activations at the SAE's hook, one row per token, consumed once. Pure: no model, no files.
    """
    d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
    kinds = {}
    for method, vector in vectors.items():
        if vector.shape not in ((d_in,), (d_sae,)):
            raise UserError(f"The {method} vector has shape {tuple(vector.shape)}; the SAE takes "
                            f"d_model={d_in} (dense) or d_sae={d_sae} (sparse) vectors.")
        kinds[method] = vector.shape == (d_sae,) and (d_sae != d_in or method in ("yapo", "sas"))
    for direction in directions:
        if direction not in (1, -1):
            raise UserError(f"A direction is +1 or -1 (got {direction}).")
    keys = [(method, int(direction)) for method in vectors for direction in directions]
    zeros = {"effect": torch.zeros(d_sae, dtype=torch.float64),
             "gated": torch.zeros(d_sae, dtype=torch.float64),
             "shift": torch.zeros(d_in, dtype=torch.float64)}
    sums = {key: {name: value.clone() for name, value in zeros.items()} | {
        "shift_sq": 0.0, "error_sq": 0.0} for key in keys}
    n_tokens = 0
    with torch.no_grad():
        for h in batches:
            h = _sae_input(h.reshape(-1, d_in), sae)
            if h.shape[0] == 0:
                continue
            n_tokens += h.shape[0]
            codes = sae.encode(h)
            clean = sae.decode(codes)
            for method, direction in keys:
                vector = _sae_input(vectors[method], sae)
                sparse = kinds[method]
                scale = direction * strength
                steered = intervention(h, vector, scale, sae if sparse else None)
                steered_codes = sae.encode(steered)
                total = sums[(method, direction)]
                total["effect"] += (steered_codes - codes).double().sum(0).cpu()
                if sparse:
                    gated = torch.relu(codes + scale * vector) - codes
                    total["gated"] += gated.double().sum(0).cpu()
                shift = (steered - h).double()
                decoded = (sae.decode(steered_codes) - clean).double()
                total["shift"] += shift.sum(0).cpu()
                total["shift_sq"] += float((shift ** 2).sum())
                total["error_sq"] += float(((shift - decoded) ** 2).sum())
    if n_tokens == 0:
        raise UserError("Effect attribution needs real activations: the prompts gave no tokens "
                        "(after BOS).")
    W_dec = sae.W_dec.detach().double().cpu()
    result = {}
    for method, direction in keys:
        total = sums[(method, direction)]
        effect = total["effect"] / n_tokens
        mean_shift = total["shift"] / n_tokens
        denominator = float(mean_shift @ mean_shift)
        share = (effect * (W_dec @ mean_shift) / denominator if denominator > 0
                 else torch.zeros_like(effect))
        unexplained = mean_shift - effect @ W_dec
        mean_r2 = (1.0 - float(unexplained @ unexplained) / denominator if denominator > 0
                   else float("nan"))
        result[(method, direction)] = EffectCodes(
            method=method, direction=direction, strength=float(strength),
            effect=effect.float(), gated=(total["gated"] / n_tokens).float()
            if kinds[method] else None,
            share=share.float(), mean_shift=mean_shift.float(),
            decoded_r2=(1.0 - total["error_sq"] / total["shift_sq"] if total["shift_sq"] > 0
                        else float("nan")),
            mean_r2=mean_r2,
            n_tokens=n_tokens)
    return result
