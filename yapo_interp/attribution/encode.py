"""A dense vector written in an SAE's basis: the static encodings of ``--attribution static``
(``encode_dense``, its methods described in the package docstring), the dense direction of a code
(``decoded_direction``) and how well a code reproduces a vector (``fit_quality``, and by its
top-k features, ``r2_by_k``). Pure: no model
is run, no file is read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

from yapo_interp.attribution.config import DEFAULT_METHOD, ENCODE_METHODS
from yapo_interp.errors import UserError

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE


def _nnls_fit(
    target: Float[torch.Tensor, "d_model"],
    atoms: Float[torch.Tensor, "n_atoms d_model"],
    *,
    tol: float = 1e-5,
    max_iter: int | None = None,
    max_features: int | None = None,
) -> Float[torch.Tensor, "n_atoms"]:
    """Non-negative least squares ``min_{c ≥ 0} ‖c @ atoms − target‖²`` (Lawson–Hanson).

    The active-set algorithm of Lawson and Hanson (1974), the one behind
    ``scipy.optimize.nnls``, written in torch so that the tolerance is ours and the dictionary
    stays where it is: each step computes the gradient ``atoms @ residual`` for all atoms on the
    atoms' device and dtype (a 65k-wide Gemma Scope decoder is never copied to float64), adds the
    atom that most lowers the error, and solves the least-squares problem on the chosen atoms in
    float64, stepping back whenever a weight would turn negative. Atoms join one at a time, so the
    fit is sparse: it stops once no atom's normalised correlation with the residual exceeds
    ``tol · ‖target‖`` (float32 SAE weights make 1e-5 a sensible floor; a smaller ``tol`` fits
    rounding noise with many tiny weights), or once ``max_features`` atoms are in use (a greedy,
    cheaper, sparser fit: the atoms chosen first are the ones that explain most of the target).
    """
    n_atoms, d_model = atoms.shape
    target64 = target.detach().double().cpu()
    code = torch.zeros(n_atoms, dtype=torch.float64)
    threshold = tol * float(target64.norm())
    if threshold == 0.0 or n_atoms == 0:
        return code.to(atoms.dtype)
    atom_norms = atoms.norm(dim=-1).clamp_min(1e-12)
    max_iter = max_iter or 3 * max(d_model, 1) + 50
    excluded = torch.zeros(n_atoms, dtype=torch.bool)  # chosen atoms, and atoms refused
    # The passive set: its atoms in float64, their correlations with the target, and the
    # Cholesky factor of their Gram matrix (grown by one row per added atom, O(k²)).
    chosen: list[int] = []
    rows = torch.zeros(0, d_model, dtype=torch.float64)
    rhs = torch.zeros(0, dtype=torch.float64)
    factor = torch.zeros(0, 0, dtype=torch.float64)
    weights = torch.zeros(0, dtype=torch.float64)

    def solve() -> torch.Tensor:
        half = torch.linalg.solve_triangular(factor, rhs[:, None], upper=False)
        return torch.linalg.solve_triangular(factor.T, half, upper=True)[:, 0]

    residual = target64
    for _ in range(max_iter):
        if max_features is not None and len(chosen) >= max_features:
            break
        scores = (atoms @ residual.to(atoms.device, atoms.dtype)) / atom_norms
        scores = scores.cpu()  # > 0: adding this atom lowers the error
        scores[excluded] = -math.inf
        best = int(scores.argmax())
        if not float(scores[best]) > threshold:
            break
        excluded[best] = True
        row = atoms[best].detach().double().cpu()
        cross = torch.linalg.solve_triangular(factor, (rows @ row)[:, None], upper=False)[:, 0]
        pivot = float(row @ row - cross @ cross)
        if pivot <= 1e-10 * float(row @ row):  # (numerically) a combination of chosen atoms
            continue
        size = len(chosen)
        grown = torch.zeros(size + 1, size + 1, dtype=torch.float64)
        grown[:size, :size], grown[size, :size], grown[size, size] = factor, cross, pivot**0.5
        factor = grown
        rows = torch.cat([rows, row[None]])
        rhs = torch.cat([rhs, (row @ target64)[None]])
        weights = torch.cat([weights, torch.zeros(1, dtype=torch.float64)])
        chosen.append(best)
        while True:  # step back towards the old weights whenever a new one would be <= 0
            solution = solve()
            if bool((solution > 0).all()):
                weights = solution
                break
            negative = solution <= 0
            gap = (weights[negative] - solution[negative]).clamp_min(1e-300)
            step = float((weights[negative] / gap).min())
            weights = weights + step * (solution - weights)
            keep = weights > 1e-12
            for position in torch.nonzero(~keep).flatten().tolist():
                if chosen[position] != best:  # a dropped atom may come back later
                    excluded[chosen[position]] = False
            chosen = [atom for atom, kept in zip(chosen, keep.tolist()) if kept]
            rows, rhs, weights = rows[keep], rhs[keep], weights[keep]
            if not chosen:
                factor = torch.zeros(0, 0, dtype=torch.float64)
                break
            factor = torch.linalg.cholesky(rows @ rows.T)  # rare: rebuilt from scratch
        residual = target64 - weights @ rows
    if chosen:
        code[torch.tensor(chosen, dtype=torch.long)] = weights
    return code.to(atoms.dtype)


def nnls_code(
    vector: Float[torch.Tensor, "d_model"],
    W_dec: Float[torch.Tensor, "d_sae d_model"],
    *,
    signed: bool = False,
    tol: float = 1e-5,
    max_iter: int | None = None,
    max_features: int | None = None,
) -> Float[torch.Tensor, "d_sae"]:
    """Sparse least-squares code ``c`` with ``c @ W_dec ≈ vector``; ``c ≥ 0`` unless ``signed``.

    A signed fit is NNLS over ``[W_dec; −W_dec]``: the weight of ``−W_dec[f]`` becomes a negative
    entry of ``c``.
    """
    W_dec = W_dec.detach()
    atoms = torch.cat([W_dec, -W_dec]) if signed else W_dec
    weights = _nnls_fit(vector.detach(), atoms, tol=tol, max_iter=max_iter,
                         max_features=max_features)
    d_sae = W_dec.shape[0]
    code = weights[:d_sae] - weights[d_sae:] if signed else weights
    return code.to(W_dec.device)


def cosine_code(
    vector: Float[torch.Tensor, "d_model"], W_dec: Float[torch.Tensor, "d_sae d_model"]
) -> Float[torch.Tensor, "d_sae"]:
    """Cosine similarity of ``vector`` with every decoder row."""
    vector = vector.to(W_dec.device, W_dec.dtype)
    return torch.nn.functional.cosine_similarity(W_dec, vector[None, :], dim=-1)


def _pre_activations(sae: SAE, x: Float[torch.Tensor, "batch d_model"]
                     ) -> Float[torch.Tensor, "batch d_sae"]:
    """The SAE encoder's pre-activations (read at its ``hook_sae_acts_pre``), any architecture."""
    captured: dict[str, torch.Tensor] = {}

    def capture(value, hook):
        captured["pre"] = value.detach().clone()
        return value

    with sae.hooks(fwd_hooks=[("hook_sae_acts_pre", capture)]):
        sae.encode(x)
    return captured["pre"]


def _sae_input(vector: torch.Tensor, sae: SAE) -> torch.Tensor:
    return vector.detach().to(sae.W_dec.device, sae.W_dec.dtype)


def encode_dense(
    vector: Float[torch.Tensor, "d_model"],
    sae: SAE,
    method: str = DEFAULT_METHOD,
    *,
    mean_activation: Float[torch.Tensor, "d_model"] | None = None,
    tol: float = 1e-5,
    max_features: int | None = None,
) -> Float[torch.Tensor, "d_sae"]:
    """Write a dense steering vector (BiPO, CAA) as a ``d_sae`` code of ``sae``.

    ``method`` is one of ``ENCODE_METHODS``; the default, ``"signed_nnls"``, gives a sparse signed
    code in decoder-coefficient units, the units of YaPO's vector (module docstring says why).
    ``"encoder_offset"`` needs ``mean_activation`` (``mean_activation(model, layer, prompts)``).
    ``tol`` and ``max_features`` bound the least-squares fits (see ``_nnls_fit``).
    """
    if method not in ENCODE_METHODS:
        raise UserError(f"Unknown encoding method {method!r}; choose one of "
                        f"{', '.join(ENCODE_METHODS)}.")
    if vector.ndim != 1 or vector.shape[0] != sae.cfg.d_in:
        raise UserError(f"The dense vector has shape {tuple(vector.shape)}, but the SAE reads "
                        f"vectors of width d_in={sae.cfg.d_in}.")
    vector = _sae_input(vector, sae)
    with torch.no_grad():
        if method in ("nnls", "signed_nnls"):
            return nnls_code(vector, sae.W_dec, signed=method == "signed_nnls", tol=tol,
                             max_features=max_features)
        if method == "cosine":
            return cosine_code(vector, sae.W_dec)
        if method == "encoder":
            if sae.cfg.normalize_activations in ("layer_norm", "constant_norm_rescale"):
                raise UserError("This SAE normalises each input (normalize_activations="
                                f"{sae.cfg.normalize_activations!r}), so a bare direction has no "
                                "encoding; use --method encoder_offset.")
            pre = _pre_activations(sae, torch.stack([vector, torch.zeros_like(vector)]))
            return pre[0] - pre[1]
        if mean_activation is None:
            raise UserError("method 'encoder_offset' needs mean_activation (the mean residual "
                            "stream at the layer; see mean_activation()).")
        mean = _sae_input(mean_activation, sae)
        codes = sae.encode(torch.stack([mean + vector, mean]))
        return (codes[0] - codes[1]).detach()


def decoded_direction(
    code: Float[torch.Tensor, "d_sae"], sae: SAE
) -> Float[torch.Tensor, "d_model"]:
    """The dense direction of a code: ``code @ W_dec`` (eq. 3 without the ReLU clamp)."""
    return code.detach().to(sae.W_dec.device, sae.W_dec.dtype) @ sae.W_dec.detach()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def fit_quality(
    vector: Float[torch.Tensor, "d_model"], code: Float[torch.Tensor, "d_sae"], sae: SAE
) -> dict[str, float]:
    """How well a code's decoded direction reproduces the dense vector: cosine, R² (1 − ‖r‖²/‖v‖²)
    and the number of non-zero features.

    Meaningful for the least-squares methods; for the others the code is not a set of coefficients.
    """
    vector = _sae_input(vector, sae)
    decoded = decoded_direction(code, sae)
    residual = float((vector - decoded).double().norm() ** 2)
    total = float(vector.double().norm() ** 2)
    return {"cosine": _cosine(vector, decoded),
            "r2": 1.0 - residual / total if total > 0 else float("nan"),
            "nonzero": int((code != 0).sum())}


def r2_by_k(
    target: Float[torch.Tensor, "d_model"],
    W_dec: Float[torch.Tensor, "d_sae d_model"],
    code: Float[torch.Tensor, "d_sae"],
    ks: Sequence[int],
) -> list[tuple[int, float]]:
    """R² of ``target`` by the decoder rows of the code's top-k features (by |weight|), for each k.

    The weights are refitted by least squares on those rows, so the feature sets are nested and
    R² never falls as k grows: the curve says how many features it takes to say what the vector
    does. A k beyond the code's non-zero features is cut to their number.
    """
    target = target.detach().double().cpu()
    total = float(target @ target)
    code = code.detach().double().cpu()
    nonzero = int((code != 0).sum())
    order = code.abs().argsort(descending=True)[:nonzero]
    rows = W_dec.detach().double().cpu()[order]
    result = []
    for k in sorted({min(max(int(k), 0), nonzero) for k in ks}):
        if k == 0 or total == 0:
            result.append((k, 0.0 if total > 0 else float("nan")))
            continue
        basis = torch.linalg.qr(rows[:k].T).Q  # [d_model, k]: orthonormal span of the rows
        projected = basis @ (basis.T @ target)
        result.append((k, 1.0 - float(((target - projected) ** 2).sum()) / total))
    return result
