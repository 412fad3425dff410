"""Feature attribution: which SAE features a steering vector uses, and where BiPO and YaPO disagree.

The paper's limitations section (section 7) proposes this analysis: "encoding BiPO's dense steering
vector and computing the difference with YaPO's steering vector, and looking at the features
misalignment". The two vectors live in different spaces:

* BiPO (eq. 1-2) learns ``v ∈ R^{d_model}`` and adds it to the residual stream: ``h' = h + d·λ·v``.
* YaPO (eq. 3-4) learns ``v ∈ R^{d_sae}`` and adds it to the SAE code:
  ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``. Wherever the steered code stays positive,
  the change of the residual stream is exactly ``d·λ·v @ W_dec``: YaPO's ``v`` is a vector of
  *decoder coefficients*, and ``decoded_direction(v, sae) = v @ W_dec`` is its dense direction.

**Attribution by effect (the default, ``--attribution effect``).** Reading a vector's entries is
not reading what it does. Through the ReLU of eq. 3 a negative entry of YaPO's ``v`` acts only on
a feature that is already active, so ``d = +1`` and ``d = −1`` move different features; and a bare
dense vector is out of distribution for an SAE, which decomposes it poorly (Mayne et al. 2024). So
each vector is run on real activations ``h`` (the dataset prompts' tokens at the layer, BOS left
out) and ``effect_codes`` measures, for each direction ``d``:

* the change of the SAE code, ``E_h[Enc(Φ(h)) − Enc(h)]``, with ``Φ`` the vector's intervention
  (eq. 2 for BiPO, eq. 3 for YaPO) — the same quantity for both methods, so they compare directly;
* for YaPO, the gated code ``E_h[ReLU(Enc(h) + d·λ·v) − Enc(h)]``: what eq. 3 writes into the
  code before decoding (zero on a feature that the ReLU keeps off, whatever ``v`` says there);
* the decoded share: per feature, ``(effect_f · W_dec[f]) · Δ / ‖Δ‖²`` with ``Δ = E_h[Φ(h) − h]``,
  and overall the R² of ``Φ(h) − h`` by the decoded code change, on the means (``Δ`` by
  ``effect @ W_dec``) and token by token (``Dec(Enc Φ(h)) − Dec(Enc h)``; this one goes below 0
  when the SAE's reconstruction error moves more than the vector does).

BiPO and YaPO are compared on these effect codes per direction (``compare_codes``: top features,
Jaccard, cosines), and ``r2_by_k`` says how many features it takes to explain the mean shift ``Δ``.

**Static encodings (``--attribution static``).** The earlier reading: YaPO's ``v`` as it is, and
the BiPO vector written as a code in the same SAE basis (``encode_dense``, ``--method``):

``"signed_nnls"`` (default)
    A sparse least-squares fit of the dense vector by decoder rows, ``min_c ‖c @ W_dec − v‖²``,
    solved as non-negative least squares (Lawson–Hanson, the algorithm of ``scipy.optimize.nnls``)
    over the doubled dictionary ``[W_dec; −W_dec]``, so each feature can be pushed up or down. The result is in the
    same units as YaPO's ``v`` (decoder coefficients), is sparse (an active-set NNLS solution has at
    most ``d_model`` non-zeros, and in practice far fewer for a vector made of few features), and,
    like YaPO's ``v``, signed: YaPO learns negative entries to switch features off, and a
    non-negative fit would have to imitate "less of feature g" with unrelated features pointing the
    other way. That is why it is the default.
``"nnls"``
    The same fit restricted to ``c ≥ 0`` (the issue's "non-negative sparse least squares").
``"cosine"``
    ``cos(v, W_dec[f])`` for every feature: projection onto each decoder direction. Cheap and
    model-free, but not a decomposition: in an overcomplete dictionary, features correlated with
    the true ones score high too, and the numbers are not coefficients.
``"encoder"``
    The SAE encoder applied to ``v`` as a direction: the change of the encoder's pre-activations
    when ``v`` is added to any input, ``(x + v − b_dec) W_enc + b_enc − [(x − b_dec) W_enc + b_enc]
    = v W_enc`` (biases cancel). This is exactly how much BiPO's vector moves each feature's
    pre-activation, but it ignores thresholds and is dense.
``"encoder_offset"``
    ``Enc(m + v) − Enc(m)`` with ``m`` the mean activation at the layer over the dataset prompts:
    the change in the *active* code at a typical activation, respecting the encoder's bias,
    ReLU / JumpReLU threshold or top-k (needs ``mean_activation``).

``compare_codes`` then lists the top-k features of each code by absolute weight, their overlap
(Jaccard of the top-k sets, cosine of the full codes, Spearman rank correlation), the features only
one method uses, and the dense cosine between the two decoded directions. Each listed feature is
explained offline by the tokens its decoder direction promotes and suppresses through the
unembedding (logit lens: ``W_dec[f]`` through the final norm's gain, then ``W_U``), by the dataset
prompts and positions that activate it most (``top_activating_examples``), and by a Neuronpedia URL
when the SAE carries a Neuronpedia id (never fetched).

Command line (tables and figures in ``--out``)::

    python -m yapo_interp.attribution --bipo runs/train/bipo-egypt-localized-L9/vector \
        --yapo runs/train/yapo-egypt-localized-L9/vector --preset embedded --k 20

(``vector`` is the last epoch; ``vectors/epoch_NN`` any other.) The SAE is the one named in the
YaPO vector's metadata (else the preset's SAE at the vector's layer); a vector that does not fit
the model or the SAE (width, layer, SAE fingerprint) is refused with the reason. ``--strength``
sets λ of the effect attribution, ``--attribution static --method M`` the static reading.
Written: ``top_features.csv`` (the tabulated direction: weights, ranks, logit lens, top example;
in effect mode also ``yapo_v``, ``yapo_gated`` and the decoded shares), ``effect_features.csv``
(top features per direction and method), ``r2_by_k.csv``, ``top_examples.csv``,
``attribution.json``, the HTML figures and ``features/`` (a page per listed feature,
``yapo_interp.feature_pages``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from yapo_interp.errors import UserError
from yapo_interp.io import read_text

if TYPE_CHECKING:  # slow imports, needed only for type hints
    import pandas as pd
    import plotly.graph_objects as go
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

ENCODE_METHODS = ("signed_nnls", "nnls", "cosine", "encoder", "encoder_offset")
DEFAULT_METHOD = "signed_nnls"
ATTRIBUTIONS = ("effect", "static")  # what a code is: the change a vector makes, or its encoding
R2_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
NEURONPEDIA_URL = "https://www.neuronpedia.org/{neuronpedia_id}/{feature}"


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of one attribution run (saved with every result)."""

    attribution: str = "effect"  # "effect" on real activations, or "static" encodings
    method: str = DEFAULT_METHOD  # static: how the dense vector becomes a code (module docstring)
    strength: float = 1.0  # effect: λ of eq. 2 / 3
    directions: tuple[int, ...] = (1, -1)  # effect: d of eq. 2 / 3; the first one is tabulated
    k: int = 20  # top-k features listed per vector
    n_tokens: int = 10  # promoted / suppressed tokens per feature (logit lens)
    n_examples: int = 5  # top-activating dataset examples per feature
    max_prompts: int = 400  # dataset prompts run for examples / mean activation (evenly spaced)
    max_tokens: int = 256  # prompts are cut to this many tokens
    batch_size: int = 8
    skip_bos: bool = True  # the BOS position is excluded from top activations and the mean
    nnls_tol: float = 1e-5  # NNLS stops when no feature correlates with the residual above this
    max_features: int | None = None  # NNLS stops after this many features (None: fit fully)
    feature_pages: bool = True  # an offline HTML page per listed feature (feature_pages.py)


# --------------------------------------------------------------------------------------------
# Dense vector -> SAE code
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Comparing two codes
# --------------------------------------------------------------------------------------------


def top_features(code: Float[torch.Tensor, "d_sae"], k: int = 20) -> list[tuple[int, float]]:
    """The ``k`` features with the largest absolute weight, as (feature, signed weight), largest
    first; features with weight exactly 0 are never listed."""
    code = code.detach().cpu().double()
    k = min(k, int((code != 0).sum()))
    if k <= 0:
        return []
    indices = code.abs().topk(k).indices
    return [(int(index), float(code[index])) for index in indices]


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    sorted_values, order = values.sort()
    n = values.numel()
    ranks = torch.empty(n, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() - 1) / 2  # mean of positions start+1..end
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    ra, rb = _average_ranks(a.detach().cpu().double()), _average_ranks(b.detach().cpu().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = ra.norm() * rb.norm()
    return float(ra @ rb / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class CodeComparison:
    """Overlap of two codes in one SAE basis: BiPO (encoded) against YaPO."""

    k: int
    bipo_top: list[tuple[int, float]]  # (feature, weight), largest |weight| first
    yapo_top: list[tuple[int, float]]
    shared: list[int]  # in both top-k lists, in YaPO's order
    only_bipo: list[int]  # in BiPO's top-k only
    only_yapo: list[int]  # in YaPO's top-k only
    jaccard: float  # |top-k ∩| / |top-k ∪|
    code_cosine: float  # cosine of the full d_sae codes
    spearman: float  # rank correlation of the full codes
    spearman_top: float  # rank correlation over the union of the two top-k lists
    sign_agreement: float  # fraction of shared features whose weights have the same sign
    bipo_nonzero: int
    yapo_nonzero: int
    bipo_only_nonzero: int  # features non-zero in BiPO's code and exactly zero in YaPO's
    yapo_only_nonzero: int  # and the other way round
    decoded_cosine: float | None = None  # cos(bipo_code @ W_dec, yapo_code @ W_dec)
    dense_cosine: float | None = None  # cos(bipo dense vector, yapo_code @ W_dec)

    def summary(self) -> dict[str, Any]:
        """The overlap figures, without the feature lists."""
        return {key: value for key, value in asdict(self).items()
                if key not in ("bipo_top", "yapo_top", "shared", "only_bipo", "only_yapo")}


def compare_codes(
    bipo_code: Float[torch.Tensor, "d_sae"],
    yapo_code: Float[torch.Tensor, "d_sae"],
    k: int = 20,
    *,
    sae: SAE | None = None,
    bipo_vector: Float[torch.Tensor, "d_model"] | None = None,
) -> CodeComparison:
    """Top-k features of each code, their overlap and the features only one uses.

    With ``sae``, also the cosine of the two decoded directions (``decoded_direction``); with
    ``bipo_vector`` as well, the cosine of the original dense BiPO vector with YaPO's direction.
    """
    if bipo_code.shape != yapo_code.shape or bipo_code.ndim != 1:
        raise UserError(f"Codes of different shapes cannot be compared: BiPO "
                        f"{tuple(bipo_code.shape)}, YaPO {tuple(yapo_code.shape)}; both must be "
                        "codes of the same SAE.")
    if k < 1:
        raise UserError(f"k must be at least 1 (got {k}).")
    bipo_code = bipo_code.detach().cpu().double()
    yapo_code = yapo_code.detach().cpu().double()
    bipo_top, yapo_top = top_features(bipo_code, k), top_features(yapo_code, k)
    bipo_set = {feature for feature, _ in bipo_top}
    yapo_set = {feature for feature, _ in yapo_top}
    union = bipo_set | yapo_set
    shared = [feature for feature, _ in yapo_top if feature in bipo_set]
    same_sign = [float(bipo_code[f] * yapo_code[f] > 0) for f in shared]
    union_index = torch.tensor(sorted(union), dtype=torch.long)
    decoded_cosine = dense_cosine = None
    if sae is not None:
        yapo_direction = decoded_direction(yapo_code.float(), sae)
        decoded_cosine = _cosine(decoded_direction(bipo_code.float(), sae), yapo_direction)
        if bipo_vector is not None:
            dense_cosine = _cosine(_sae_input(bipo_vector, sae), yapo_direction)
    return CodeComparison(
        k=k,
        bipo_top=bipo_top,
        yapo_top=yapo_top,
        shared=shared,
        only_bipo=[feature for feature, _ in bipo_top if feature not in yapo_set],
        only_yapo=[feature for feature, _ in yapo_top if feature not in bipo_set],
        jaccard=len(bipo_set & yapo_set) / len(union) if union else float("nan"),
        code_cosine=_cosine(bipo_code, yapo_code),
        spearman=spearman(bipo_code, yapo_code),
        spearman_top=(spearman(bipo_code[union_index], yapo_code[union_index])
                      if len(union) > 1 else float("nan")),
        sign_agreement=sum(same_sign) / len(same_sign) if same_sign else float("nan"),
        bipo_nonzero=int((bipo_code != 0).sum()),
        yapo_nonzero=int((yapo_code != 0).sum()),
        bipo_only_nonzero=int(((bipo_code != 0) & (yapo_code == 0)).sum()),
        yapo_only_nonzero=int(((yapo_code != 0) & (bipo_code == 0)).sum()),
        decoded_cosine=decoded_cosine,
        dense_cosine=dense_cosine,
    )


# --------------------------------------------------------------------------------------------
# Attribution by effect on real activations (the default)
# --------------------------------------------------------------------------------------------


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
    from yapo_interp.steering import intervention

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


def token_activations(
    model: HookedTransformer, layer: int, prompts: Sequence[str], *, batch_size: int = 8,
    max_tokens: int = 256, skip_bos: bool = True,
) -> Iterator[Float[torch.Tensor, "token d_model"]]:
    """The residual stream at ``blocks.{layer}.hook_resid_post`` of the prompts' real tokens
    (no padding; BOS left out unless ``skip_bos=False``), one tensor per batch of prompts."""
    first = 1 if skip_bos else 0
    token_lists = _tokenize(model, prompts, max_tokens)
    for _, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                "effect attribution"):
        rows = [resid[row, first:length] for row, length in enumerate(lengths)]
        yield torch.cat(rows) if rows else resid[:0, 0]


# --------------------------------------------------------------------------------------------
# Explaining features offline: logit lens, top-activating examples, Neuronpedia links
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureLogits:
    """Tokens a feature's decoder direction promotes / suppresses through the unembedding."""

    feature: int
    promoted: list[tuple[str, float]]  # (token, logit change per unit of the feature)
    suppressed: list[tuple[str, float]]


def _through_final_norm(model: HookedTransformer, directions: torch.Tensor) -> torch.Tensor:
    """A residual direction as the unembedding sees it: centred (LayerNorm) and scaled by the
    final norm's gain. The norm's division by the RMS is a positive scalar per position, so it
    changes no ranking and is left out."""
    norm = getattr(model, "ln_final", None)
    if norm is None:
        return directions
    if "LayerNorm" in type(norm).__name__:
        directions = directions - directions.mean(dim=-1, keepdim=True)
    gain = getattr(norm, "w", None)
    return directions * gain if gain is not None else directions


def logit_lens(
    model: HookedTransformer,
    directions: Float[torch.Tensor, "feature d_model"],
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k and bottom-k tokens of ``directions`` through the final norm's gain and ``W_U``.

    Returns (top values, top token ids, bottom values, bottom token ids), each ``[feature, k]``.
    """
    with torch.no_grad():
        directions = directions.to(model.W_U.device, model.W_U.dtype)
        logits = _through_final_norm(model, directions) @ model.W_U  # [feature, d_vocab]
        k = min(k, logits.shape[-1])
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
    return top.values, top.indices, bottom.values, bottom.indices


def _token_strings(model: HookedTransformer, token_ids: Sequence[int]) -> list[str]:
    return list(model.to_str_tokens(torch.tensor(list(token_ids), dtype=torch.long)))


def feature_logit_lens(
    model: HookedTransformer, sae: SAE, features: Sequence[int], k: int = 10
) -> dict[int, FeatureLogits]:
    """``FeatureLogits`` for each feature: logit lens of its decoder row ``W_dec[f]``."""
    features = list(dict.fromkeys(int(f) for f in features))
    if not features:
        return {}
    rows = sae.W_dec.detach()[torch.tensor(features, device=sae.W_dec.device)]
    top_values, top_ids, bottom_values, bottom_ids = logit_lens(model, rows, k)
    result = {}
    for row, feature in enumerate(features):
        promoted = _token_strings(model, top_ids[row].tolist())
        suppressed = _token_strings(model, bottom_ids[row].tolist())
        result[feature] = FeatureLogits(
            feature=feature,
            promoted=list(zip(promoted, top_values[row].tolist())),
            suppressed=list(zip(suppressed, bottom_values[row].tolist())),
        )
    return result


@dataclass(frozen=True)
class ActivatingExample:
    """One dataset prompt that activates a feature: its strongest position and the value there."""

    feature: int
    activation: float
    prompt_index: int
    position: int  # token position in the prompt (BOS is position 0)
    token: str
    context: str  # up to 12 tokens before the position and 3 after, the token in [[ ]]
    prompt: str


def _tokenize(model: HookedTransformer, prompts: Sequence[str], max_tokens: int
              ) -> list[torch.Tensor]:
    return [model.to_tokens(prompt, prepend_bos=True)[0, :max_tokens].cpu() for prompt in prompts]


def _padded(token_lists: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    width = max(len(tokens) for tokens in token_lists)
    batch = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        batch[row, : len(tokens)] = tokens
    return batch


def _layer_activations(
    model: HookedTransformer, layer: int, token_lists: list[torch.Tensor], batch_size: int,
    description: str,
):
    """Yield (first prompt index, [batch, pos, d_model] residual stream at layer, lengths)."""
    hook_name = f"blocks.{layer}.hook_resid_post"
    pad_id = model.tokenizer.pad_token_id if model.tokenizer is not None else None
    pad_id = 0 if pad_id is None else pad_id
    starts = range(0, len(token_lists), batch_size)
    for start in tqdm(starts, desc=description, leave=False, disable=len(starts) < 2):
        chunk = token_lists[start:start + batch_size]
        tokens = _padded(chunk, pad_id).to(model.cfg.device)
        with torch.no_grad():
            # right padding: with causal attention the real positions never see the pads
            _, cache = model.run_with_cache(tokens, names_filter=hook_name,
                                            stop_at_layer=layer + 1)
        yield start, cache[hook_name], [len(tokens_) for tokens_ in chunk]


def mean_activation(
    model: HookedTransformer, layer: int, prompts: Sequence[str], *, batch_size: int = 8,
    max_tokens: int = 256, skip_bos: bool = True,
) -> Float[torch.Tensor, "d_model"]:
    """Mean residual stream at ``blocks.{layer}.hook_resid_post`` over the prompts' tokens."""
    if not prompts:
        raise UserError("mean_activation needs at least one prompt.")
    total = torch.zeros(model.cfg.d_model, dtype=torch.float64)
    count = 0
    token_lists = _tokenize(model, prompts, max_tokens)
    first = 1 if skip_bos else 0
    for _, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                "mean activation"):
        for row, length in enumerate(lengths):
            total += resid[row, first:length].double().sum(0).cpu()
            count += max(length - first, 0)
    if count == 0:
        raise UserError("The prompts have no tokens after BOS; give longer prompts.")
    return (total / count).to(model.cfg.dtype)


def top_activating_examples(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    prompts: Sequence[str],
    features: Sequence[int],
    k: int = 5,
    *,
    batch_size: int = 8,
    max_tokens: int = 256,
    skip_bos: bool = True,
) -> dict[int, list[ActivatingExample]]:
    """For each feature, the ``k`` prompts where it fires most, strongest first.

    The model runs only up to ``layer`` (``stop_at_layer``); the SAE encodes
    ``blocks.{layer}.hook_resid_post``; a prompt's score is the feature's maximum over its
    positions (BOS excluded unless ``skip_bos=False``), and the position of that maximum is
    reported. Prompts where the feature never fires (activation 0) are not listed.
    """
    features = list(dict.fromkeys(int(f) for f in features))
    if not features or not prompts:
        return {feature: [] for feature in features}
    feature_index = torch.tensor(features, dtype=torch.long)
    n_prompts = len(prompts)
    best_value = torch.full((n_prompts, len(features)), -math.inf)
    best_position = torch.zeros((n_prompts, len(features)), dtype=torch.long)
    token_lists = _tokenize(model, prompts, max_tokens)
    first = 1 if skip_bos else 0
    for start, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                    "top activations"):
        with torch.no_grad():
            acts = sae.encode(resid.to(sae.W_dec.device, sae.W_dec.dtype))
        acts = acts[..., feature_index.to(acts.device)].float().cpu()  # [batch, pos, n_feat]
        for row, length in enumerate(lengths):
            if length <= first:
                continue
            values, positions = acts[row, first:length].max(dim=0)
            best_value[start + row] = values
            best_position[start + row] = positions + first
    result: dict[int, list[ActivatingExample]] = {}
    for column, feature in enumerate(features):
        order = best_value[:, column].argsort(descending=True)[:k]
        examples = []
        for prompt_index in order.tolist():
            value = float(best_value[prompt_index, column])
            if not value > 0:
                break
            tokens = token_lists[prompt_index]
            position = int(best_position[prompt_index, column])
            strings = _token_strings(model, tokens.tolist())
            before = "".join(strings[max(first, position - 12):position])
            after = "".join(strings[position + 1:position + 4])
            examples.append(ActivatingExample(
                feature=feature, activation=value, prompt_index=prompt_index, position=position,
                token=strings[position], context=f"{before}[[{strings[position]}]]{after}",
                prompt=prompts[prompt_index],
            ))
        result[feature] = examples
    return result


def neuronpedia_id(sae: SAE) -> str | None:
    metadata = getattr(sae.cfg, "metadata", None)
    return getattr(metadata, "neuronpedia_id", None) if metadata is not None else None


def neuronpedia_url(sae: SAE, feature: int) -> str | None:
    """The feature's Neuronpedia page when the SAE has a Neuronpedia id (e.g. Gemma Scope); only
    the link is built, nothing is fetched."""
    identifier = neuronpedia_id(sae)
    if not identifier:
        return None
    return NEURONPEDIA_URL.format(neuronpedia_id=identifier, feature=int(feature))


# --------------------------------------------------------------------------------------------
# The whole analysis, as a notebook calls it
# --------------------------------------------------------------------------------------------


@dataclass
class AttributionReport:
    """Everything one attribution run found; ``features`` is one row per listed feature."""

    config: AttributionConfig
    bipo_code: torch.Tensor
    yapo_code: torch.Tensor
    comparison: CodeComparison
    bipo_fit: dict[str, float]
    features: pd.DataFrame
    examples: pd.DataFrame
    logits: dict[int, FeatureLogits] = field(default_factory=dict)
    r2: pd.DataFrame | None = None  # R² by number of features k (``r2_by_k``), per code
    feature_stats: dict = field(default_factory=dict)  # feature -> feature_pages.FeatureStats
    effects: dict[tuple[str, int], EffectCodes] = field(default_factory=dict)  # effect only
    by_direction: dict[int, CodeComparison] = field(default_factory=dict)  # effect only
    effect_features: pd.DataFrame | None = None  # effect only: top features per direction


def _format_tokens(pairs: list[tuple[str, float]], n: int = 6) -> str:
    return " · ".join(repr(token)[1:-1] for token, _ in pairs[:n])


def feature_table(
    comparison: CodeComparison,
    bipo_code: torch.Tensor,
    yapo_code: torch.Tensor,
    logits: dict[int, FeatureLogits],
    examples: dict[int, list[ActivatingExample]],
    sae: SAE | None = None,
) -> pd.DataFrame:
    """One row per feature in either top-k list: weights, ranks, status, explanation, link."""
    import pandas as pd

    bipo_rank = {feature: rank for rank, (feature, _) in enumerate(comparison.bipo_top, 1)}
    yapo_rank = {feature: rank for rank, (feature, _) in enumerate(comparison.yapo_top, 1)}
    ordered = list(dict.fromkeys([f for f, _ in comparison.yapo_top]
                                 + [f for f, _ in comparison.bipo_top]))
    rows = []
    for feature in ordered:
        status = ("shared" if feature in bipo_rank and feature in yapo_rank
                  else "only_bipo" if feature in bipo_rank else "only_yapo")
        lens = logits.get(feature)
        feature_examples = examples.get(feature, [])
        rows.append({
            "feature": feature,
            "status": status,
            "bipo_rank": bipo_rank.get(feature),
            "yapo_rank": yapo_rank.get(feature),
            "bipo_weight": float(bipo_code[feature]),
            "yapo_weight": float(yapo_code[feature]),
            "promotes": _format_tokens(lens.promoted) if lens else "",
            "suppresses": _format_tokens(lens.suppressed) if lens else "",
            "top_example": feature_examples[0].context if feature_examples else "",
            "top_activation": feature_examples[0].activation if feature_examples else None,
            "neuronpedia": (neuronpedia_url(sae, feature) if sae is not None else None) or "",
        })
    frame = pd.DataFrame(rows)
    for column in ("bipo_rank", "yapo_rank"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def examples_table(examples: dict[int, list[ActivatingExample]]) -> pd.DataFrame:
    import pandas as pd

    rows = [dict(asdict(example), rank=rank)
            for feature_examples in examples.values()
            for rank, example in enumerate(feature_examples, 1)]
    columns = ["feature", "rank", "activation", "prompt_index", "position", "token", "context",
               "prompt"]
    return pd.DataFrame(rows, columns=columns)


def attribute(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    bipo_vector: Float[torch.Tensor, "d_model"],
    yapo_vector: Float[torch.Tensor, "d_sae"],
    prompts: Sequence[str] = (),
    config: AttributionConfig = AttributionConfig(),
) -> AttributionReport:
    """Attribute both vectors to SAE features, compare them, explain the listed features.

    With ``config.attribution == "effect"`` (default) the codes are each vector's effect on the
    SAE code of the prompts' activations (``effect_codes``), per direction, and ``prompts`` are
    required. With ``"static"``, the BiPO vector is encoded by ``config.method`` and YaPO's ``v``
    is taken as it is; ``prompts`` then feed the top-activating examples and, for
    ``method="encoder_offset"``, the mean activation (with none, examples are left empty).
    """
    if bipo_vector.shape != (sae.cfg.d_in,):
        raise UserError(f"The BiPO vector has shape {tuple(bipo_vector.shape)}, but the SAE and "
                        f"model have d_model={sae.cfg.d_in}.")
    if yapo_vector.shape != (sae.cfg.d_sae,):
        raise UserError(f"The YaPO vector has shape {tuple(yapo_vector.shape)}, but the SAE has "
                        f"d_sae={sae.cfg.d_sae}: it was trained with another SAE.")
    prompts = list(prompts)
    if config.attribution not in ATTRIBUTIONS:
        raise UserError(f"Unknown attribution {config.attribution!r}; choose one of "
                        f"{', '.join(ATTRIBUTIONS)}.")
    if config.attribution == "effect":
        return _attribute_by_effect(model, sae, layer, bipo_vector, yapo_vector, prompts, config)
    mean = None
    if config.method == "encoder_offset":
        if not prompts:
            raise UserError("method 'encoder_offset' needs dataset prompts for the mean "
                            "activation (--prompts-from cultural or FILE).")
        mean = mean_activation(model, layer, prompts, batch_size=config.batch_size,
                               max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    bipo_code = encode_dense(bipo_vector, sae, config.method, mean_activation=mean,
                             tol=config.nnls_tol, max_features=config.max_features).cpu()
    yapo_code = yapo_vector.detach().float().cpu()
    comparison = compare_codes(bipo_code, yapo_code, config.k, sae=sae, bipo_vector=bipo_vector)
    listed = [f for f, _ in comparison.yapo_top] + [f for f, _ in comparison.bipo_top]
    logits = feature_logit_lens(model, sae, listed, config.n_tokens)
    examples = (top_activating_examples(model, sae, layer, prompts, listed, config.n_examples,
                                        batch_size=config.batch_size,
                                        max_tokens=config.max_tokens, skip_bos=config.skip_bos)
                if prompts else {})
    yapo_direction = decoded_direction(yapo_code, sae)
    r2 = [("bipo", None, k, value, "BiPO vector")
          for k, value in r2_by_k(bipo_vector, sae.W_dec, bipo_code, R2_KS + (sae.cfg.d_sae,))]
    r2 += [("yapo", None, k, value, "v @ W_dec")
           for k, value in r2_by_k(yapo_direction, sae.W_dec, yapo_code, R2_KS + (sae.cfg.d_sae,))]
    return AttributionReport(
        config=config, bipo_code=bipo_code, yapo_code=yapo_code, comparison=comparison,
        bipo_fit=fit_quality(bipo_vector, bipo_code, sae),
        features=feature_table(comparison, bipo_code, yapo_code, logits, examples, sae),
        examples=examples_table(examples), logits=logits, r2=_r2_frame(r2),
        feature_stats=_feature_stats(model, sae, layer, prompts, listed, config),
    )


def _feature_stats(model: HookedTransformer, sae: SAE, layer: int, prompts: list[str],
                   features: list[int], config: AttributionConfig) -> dict:
    """Statistics for the feature pages, when asked for and there are prompts."""
    if not (config.feature_pages and prompts):
        return {}
    from yapo_interp.feature_pages import feature_statistics

    return feature_statistics(model, sae, layer, prompts, features,
                              n_contexts=max(config.n_examples, 8), batch_size=config.batch_size,
                              max_tokens=config.max_tokens, skip_bos=config.skip_bos)


def _r2_frame(rows: list[tuple[str, int | None, int, float, str]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["method", "direction", "k", "r2", "target"])
    frame["direction"] = frame["direction"].astype("Int64")
    return frame


def _attribute_by_effect(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    bipo_vector: Float[torch.Tensor, "d_model"],
    yapo_vector: Float[torch.Tensor, "d_sae"],
    prompts: list[str],
    config: AttributionConfig,
) -> AttributionReport:
    """``attribute`` with codes measured on the prompts' activations (``effect_codes``)."""
    import pandas as pd

    if not prompts:
        raise UserError("Effect attribution runs the vectors on real activations and needs "
                        "dataset prompts (--prompts-from cultural or FILE), or use "
                        "--attribution static.")
    if not config.directions:
        raise UserError("Effect attribution needs at least one direction (+1 or -1).")
    activations = token_activations(model, layer, prompts, batch_size=config.batch_size,
                                    max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    effects = effect_codes(activations, sae, {"bipo": bipo_vector, "yapo": yapo_vector},
                           directions=config.directions, strength=config.strength)
    by_direction = {direction: compare_codes(effects[("bipo", direction)].effect,
                                             effects[("yapo", direction)].effect, config.k,
                                             sae=sae)
                    for direction in config.directions}
    primary = config.directions[0]
    bipo, yapo = effects[("bipo", primary)], effects[("yapo", primary)]
    comparison = compare_codes(bipo.effect, yapo.effect, config.k, sae=sae,
                               bipo_vector=bipo_vector)
    listed = [f for c in by_direction.values() for f, _ in c.yapo_top + c.bipo_top]
    logits = feature_logit_lens(model, sae, listed, config.n_tokens)
    examples = top_activating_examples(model, sae, layer, prompts, listed, config.n_examples,
                                       batch_size=config.batch_size,
                                       max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    features = feature_table(comparison, bipo.effect, yapo.effect, logits, examples, sae)
    features["yapo_v"] = [float(yapo_vector[f]) for f in features["feature"]]
    features["yapo_gated"] = [float(yapo.gated[f]) for f in features["feature"]]
    features["bipo_share"] = [float(bipo.share[f]) for f in features["feature"]]
    features["yapo_share"] = [float(yapo.share[f]) for f in features["feature"]]
    rows = []
    for direction, compared in by_direction.items():
        codes = {"bipo": effects[("bipo", direction)], "yapo": effects[("yapo", direction)]}
        for method, top in (("bipo", compared.bipo_top), ("yapo", compared.yapo_top)):
            other = "yapo" if method == "bipo" else "bipo"
            for rank, (feature, value) in enumerate(top, 1):
                rows.append({
                    "direction": direction, "method": method, "rank": rank, "feature": feature,
                    "effect": value, f"{other}_effect": float(codes[other].effect[feature]),
                    "gated": float(codes["yapo"].gated[feature]),
                    "share": float(codes[method].share[feature]),
                    "in_both": feature in compared.shared,
                    "yapo_v": float(yapo_vector[feature]),
                })
    r2 = [(method, direction, k, value, "E[Φ(h) − h]")
          for (method, direction), codes in effects.items()
          for k, value in r2_by_k(codes.mean_shift, sae.W_dec, codes.effect,
                                  R2_KS + (sae.cfg.d_sae,))]
    return AttributionReport(
        config=config, bipo_code=bipo.effect, yapo_code=yapo.effect, comparison=comparison,
        bipo_fit=fit_quality(bipo.mean_shift, bipo.effect, sae),
        features=features, examples=examples_table(examples), logits=logits,
        effects=effects, by_direction=by_direction,
        effect_features=pd.DataFrame(rows, columns=[
            "direction", "method", "rank", "feature", "effect", "bipo_effect", "yapo_effect",
            "gated", "share", "in_both", "yapo_v"]),
        r2=_r2_frame(r2),
        feature_stats=_feature_stats(model, sae, layer, prompts, listed, config),
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def top_features_table_figure(features: pd.DataFrame, method: str) -> go.Figure:
    """A go.Table of one vector's top-k features (``method`` is "bipo" or "yapo").

    A table from the effect attribution (it has a ``yapo_v`` column) labels the weights as
    effects and adds YaPO's own entry ``v_f`` beside them."""
    import plotly.graph_objects as go

    from yapo_interp.style import METHOD_LABELS, method_color

    rank_column = f"{method}_rank"
    rows = features[features[rank_column].notna()].sort_values(rank_column)
    other = "yapo" if method == "bipo" else "bipo"
    effect = "yapo_v" in rows.columns
    kind = "effect" if effect else "weight"
    header = ["rank", "feature", f"{METHOD_LABELS[method]} {kind}",
              f"{METHOD_LABELS[other]} {kind}", "in both", "promotes", "suppresses",
              "top example"]
    cells = [
        rows[rank_column].tolist(),
        [f'<a href="{url}">{f}</a>' if url else str(f)
         for f, url in zip(rows["feature"], rows["neuronpedia"])],
        [f"{w:+.3g}" if w else "0" for w in rows[f"{method}_weight"]],
        [f"{w:+.3g}" if w else "0" for w in rows[f"{other}_weight"]],
        ["yes" if s == "shared" else "" for s in rows["status"]],
        rows["promotes"].tolist(),
        rows["suppresses"].tolist(),
        rows["top_example"].tolist(),
    ]
    widths = [40, 60, 80, 80, 50, 220, 220, 300]
    if effect:
        header.insert(4, "YaPO v")
        cells.insert(4, [f"{w:+.3g}" if w else "0" for w in rows["yapo_v"]])
        widths.insert(4, 60)
    figure = go.Figure(go.Table(
        columnwidth=widths,
        header=dict(values=[f"<b>{h}</b>" for h in header], fill_color=method_color(method),
                    font=dict(color="white"), align="left"),
        cells=dict(values=cells, align="left", height=24),
    ))
    figure.update_layout(title=f"Top {len(rows)} SAE features of the {METHOD_LABELS[method]} "
                               "vector" + (" by effect on real activations (d = +1)" if effect
                                           else ""))
    return figure


def top_weights_figure(comparison: CodeComparison, bipo_code: torch.Tensor,
                       yapo_code: torch.Tensor) -> go.Figure:
    """Side by side: each vector's top-k weights (and the other vector's weight on the same
    features), each code scaled so its largest |weight| is 1."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from yapo_interp.style import METHOD_LABELS, method_color

    scale = {"bipo": float(bipo_code.abs().max()) or 1.0,
             "yapo": float(yapo_code.abs().max()) or 1.0}
    codes = {"bipo": bipo_code, "yapo": yapo_code}
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=[
        f"{METHOD_LABELS['bipo']} top {comparison.k} (encoded)",
        f"{METHOD_LABELS['yapo']} top {comparison.k}"])
    for column, (method, top) in enumerate([("bipo", comparison.bipo_top),
                                            ("yapo", comparison.yapo_top)], 1):
        labels = [f"f{feature}" for feature, _ in top][::-1]
        features = [feature for feature, _ in top][::-1]
        for shown in ("bipo", "yapo"):
            values = [float(codes[shown][f]) / scale[shown] for f in features]
            figure.add_trace(go.Bar(
                y=labels, x=values, orientation="h", name=METHOD_LABELS[shown],
                marker_color=method_color(shown), opacity=1.0 if shown == method else 0.45,
                legendgroup=shown, showlegend=shown == method,
            ), row=1, col=column)
    figure.update_layout(barmode="group", height=max(420, 28 * comparison.k + 160),
                         title=f"Top SAE features, BiPO vs YaPO (Jaccard {comparison.jaccard:.2f}"
                               f", code cosine {comparison.code_cosine:.2f})")
    figure.update_xaxes(title_text="weight / max |weight| of that vector")
    return figure


def _write_feature_pages(report: AttributionReport, out: Path) -> list[Path]:
    """The feature pages of the listed features, with both vectors' weights on each."""
    from yapo_interp.feature_pages import write_feature_pages

    effect = bool(report.effects)
    kind = f"effect d={report.config.directions[0]:+d}" if effect else "code"
    weights, links = {}, {}
    for row in report.features.itertuples():
        weights[row.feature] = {f"BiPO {kind}": float(row.bipo_weight),
                                f"YaPO {kind}": float(row.yapo_weight)}
        if effect:
            weights[row.feature]["YaPO v"] = float(row.yapo_v)
        links[row.feature] = row.neuronpedia
    for feature in report.feature_stats:  # listed only in the other direction's top-k
        if feature not in weights:
            weights[feature] = {"YaPO v": float(report.yapo_code[feature])} if not effect else {
                f"BiPO effect d={d:+d}": float(report.effects[("bipo", d)].effect[feature])
                for d in report.config.directions} | {
                f"YaPO effect d={d:+d}": float(report.effects[("yapo", d)].effect[feature])
                for d in report.config.directions}
    return write_feature_pages(report.feature_stats, out, logits=report.logits, weights=weights,
                               links=links, title="Features of the BiPO and YaPO vectors")


def write_report(report: AttributionReport, out: str | Path, settings: dict[str, Any], *,
                 image_formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write CSV tables, HTML figures (plus ``image_formats`` when kaleido can render them) and
    ``attribution.json``; return the files written."""
    from yapo_interp.io import run_info, write_json, write_table
    from yapo_interp.style import save_figure

    out = Path(out)
    written = [write_table(out / "top_features.csv", report.features),
               write_table(out / "top_examples.csv", report.examples)]
    for method in ("bipo", "yapo"):
        written += save_figure(top_features_table_figure(report.features, method),
                               out / f"top_features_{method}.html", image_formats=image_formats,
                               height=140 + 48 * report.config.k, width=1600)
    written += save_figure(top_weights_figure(report.comparison, report.bipo_code,
                                              report.yapo_code), out / "top_weights.html",
                           image_formats=image_formats,
                           height=max(560, 28 * report.config.k + 160))
    if report.effect_features is not None:
        written.append(write_table(out / "effect_features.csv", report.effect_features))
    if report.feature_stats:
        written += _write_feature_pages(report, out / "features")
    if report.r2 is not None:
        written.append(write_table(out / "r2_by_k.csv", report.r2))
        written += save_figure(r2_by_k_figure(report.r2), out / "r2_by_k.html",
                               image_formats=image_formats, width=800, height=480)
    result = run_info(settings)
    result.update({
        "overlap": report.comparison.summary(),
        "bipo_fit": report.bipo_fit,
        "bipo_top": report.comparison.bipo_top,
        "yapo_top": report.comparison.yapo_top,
        "shared": report.comparison.shared,
        "only_bipo": report.comparison.only_bipo,
        "only_yapo": report.comparison.only_yapo,
        "features": json.loads(report.features.to_json(orient="records")),
    })
    if report.effects:
        result["effects"] = {f"{method}{direction:+d}": codes.summary()
                             for (method, direction), codes in report.effects.items()}
        result["by_direction"] = {
            f"{direction:+d}": compared.summary() | {
                "shared": compared.shared, "only_bipo": compared.only_bipo,
                "only_yapo": compared.only_yapo,
                "mean_shift_cosine": _cosine(report.effects[("bipo", direction)].mean_shift,
                                             report.effects[("yapo", direction)].mean_shift),
                "yapo_gated_cosine": _cosine(report.effects[("yapo", direction)].gated,
                                             report.effects[("yapo", direction)].effect)}
            for direction, compared in report.by_direction.items()}
    if report.r2 is not None:
        result["r2_by_k"] = json.loads(report.r2.to_json(orient="records"))
    written.append(write_json(out / "attribution.json", result))
    return written


def pd_isna(value: Any) -> bool:
    """True for None, NaN and pandas' NA."""
    import pandas as pd

    return bool(pd.isna(value))


def r2_by_k_figure(r2: pd.DataFrame) -> go.Figure:
    """R² of each code's target by its top-k features against k (log axis), one line per code."""
    import plotly.graph_objects as go

    from yapo_interp.style import METHOD_LABELS, method_color

    figure = go.Figure()
    for (method, direction), curve in r2.groupby(["method", "direction"], dropna=False,
                                                 sort=False):
        label = METHOD_LABELS.get(method, method)
        if not pd_isna(direction):
            label += f", d = {int(direction):+d}"
        figure.add_trace(go.Scatter(
            x=curve.k, y=curve.r2, mode="lines+markers", name=label,
            line=dict(color=method_color(method), dash="solid" if pd_isna(direction)
                      or int(direction) > 0 else "dash")))
    figure.update_xaxes(title_text="features k (largest |weight| first, refitted)", type="log")
    figure.update_yaxes(title_text="R²", range=[0, 1.02])
    target = ", ".join(dict.fromkeys(r2["target"])) if "target" in r2 else ""
    figure.update_layout(title=f"How many SAE features it takes: R² of {target} by top-k")
    return figure


def format_overlap(report: AttributionReport) -> str:
    """The overlap figures as printed by the command."""
    c, fit = report.comparison, report.bipo_fit

    def number(value: float | None) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.3f}"

    if report.effects:
        first = report.config.directions[0]
        header = [
            f"Effect on real activations (λ = {report.config.strength:g}, "
            f"{report.effects[('bipo', first)].n_tokens} tokens); tabulated: d = {first:+d}",
            f"BiPO effect code: {fit['nonzero']} features changed, decoded cosine with the mean "
            f"shift E[Φ(h) − h] {number(fit['cosine'])}, R² {number(fit['r2'])}"]
        for direction, compared in report.by_direction.items():
            bipo, yapo = report.effects[("bipo", direction)], report.effects[("yapo", direction)]
            header.append(
                f"d = {direction:+d}: top-{compared.k} Jaccard {number(compared.jaccard)}, code "
                f"cosine {number(compared.code_cosine)}, mean-shift cosine "
                f"{number(_cosine(bipo.mean_shift, yapo.mean_shift))}; R² of Φ(h) − h by the "
                f"decoded code change, on the means / per token: BiPO {number(bipo.mean_r2)} / "
                f"{number(bipo.decoded_r2)}, YaPO {number(yapo.mean_r2)} / "
                f"{number(yapo.decoded_r2)}; YaPO gated vs re-encoded cosine "
                f"{number(_cosine(yapo.gated, yapo.effect))}")
            header.append(f"  shared {compared.shared}, only BiPO {compared.only_bipo}, "
                          f"only YaPO {compared.only_yapo}")
    else:
        header = [
            f"BiPO encoded with {report.config.method}: {fit['nonzero']} non-zero features, "
            f"decoded cosine with the dense vector {number(fit['cosine'])}, R² "
            f"{number(fit['r2'])}"]
    if report.r2 is not None and not report.r2.empty:
        for (method, direction), curve in report.r2.groupby(["method", "direction"],
                                                            dropna=False, sort=False):
            label = method if pd_isna(direction) else f"{method} d={int(direction):+d}"
            header.append(f"R²(k) {label}: " + ", ".join(
                f"{int(k)}:{number(float(r2))}" for k, r2 in zip(curve.k, curve.r2)))
    lines = [
        *header,
        f"YaPO: {c.yapo_nonzero} non-zero features; non-zero in one code only: "
        f"{c.bipo_only_nonzero} BiPO, {c.yapo_only_nonzero} YaPO",
        f"top-{c.k} Jaccard        {number(c.jaccard)}  ({len(c.shared)} shared, "
        f"{len(c.only_bipo)} only BiPO, {len(c.only_yapo)} only YaPO)",
        f"code cosine          {number(c.code_cosine)}",
        f"Spearman (all)       {number(c.spearman)}",
        f"Spearman (top union) {number(c.spearman_top)}",
        f"sign agreement       {number(c.sign_agreement)}",
        f"decoded cosine       {number(c.decoded_cosine)}  (BiPO code vs YaPO, through W_dec)",
        f"dense cosine         {number(c.dense_cosine)}  (BiPO vector vs YaPO through W_dec)",
        f"shared:    {c.shared}",
        f"only BiPO: {c.only_bipo}",
        f"only YaPO: {c.only_yapo}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _spread(items: list[str], limit: int) -> list[str]:
    """At most ``limit`` items, evenly spaced (deterministic), keeping every language/country."""
    if limit <= 0 or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _prompts_from_file(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--prompts-from {path}: no such file (give 'cultural' or a .txt, .jsonl "
                        "or .csv file).")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        prompts = []
        for number, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}, line {number}: not JSON ({error.msg}).") from None
            keys = [key for key in ("prompt", "question", "localized_prompt",
                                    "nonlocalized_prompt") if isinstance(record, dict)
                    and isinstance(record.get(key), str)]
            if not keys:
                raise UserError(f"{path}, line {number}: no 'prompt' or 'question' field.")
            prompts += [record[key] for key in keys]
        return prompts
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(
            io.StringIO(read_text(path)))
        for column in ("prompt", "question"):
            if column in frame.columns:
                return [str(value) for value in frame[column].dropna()]
        raise UserError(f"{path} has no 'prompt' or 'question' column (columns: "
                        f"{', '.join(map(str, frame.columns))}).")
    return [line for line in read_text(path).splitlines() if line.strip()]


def _cultural_prompts() -> list[str]:
    """Both forms (localized, non-localized) of every item of the shipped cultural dataset."""
    try:
        from yapo_interp.data.loaders import load_cultural
    except ImportError as error:
        raise UserError("The shipped cultural dataset is not available in this version "
                        f"({error}); pass --prompts-from FILE (one prompt a line).") from None
    prompts: dict[str, None] = {}
    for item in load_cultural():
        for text in (item.localized_prompt, item.nonlocalized_prompt):
            if text:
                prompts[text] = None
    if not prompts:
        raise UserError("The shipped cultural dataset gave no prompts; pass --prompts-from FILE.")
    return list(prompts)


def load_prompts(spec: str | None, limit: int = 0) -> list[str]:
    """Dataset prompts for examples: ``"cultural"`` (shipped set), a file, or none."""
    if not spec or spec == "none":
        return []
    prompts = _cultural_prompts() if spec == "cultural" else _prompts_from_file(Path(spec))
    return _spread(prompts, limit)


def _load_vector(path: str | Path):
    try:
        from yapo_interp.steering import SteeringVector
    except ImportError as error:  # pragma: no cover - the steering module ships with the package
        raise UserError(f"Steering vectors cannot be loaded: {error}.") from None
    return SteeringVector.load(path)


def _sae_for(yapo, preset, model, device: str):
    """The SAE named in the YaPO vector's metadata, else the preset's SAE at the vector's layer."""
    from yapo_interp.models import load_sae

    info = (yapo.metadata or {}).get("sae") or {}
    path = info.get("path")
    if path and Path(path).expanduser().is_dir():
        return load_sae(str(path), model=model, device=device), f"{path}"
    release, sae_id = info.get("release"), info.get("id")
    if release:
        return (load_sae(release, sae_id, layer=yapo.layer, model=model, device=device),
                f"{release}/{sae_id}" if sae_id else f"{release} layer {yapo.layer}")
    if path:
        print(f"note: the SAE folder {path} named in the YaPO vector is missing; using the "
              f"{preset.name} preset's SAE for layer {yapo.layer}", file=sys.stderr)
    release, sae_id = preset.sae_for_layer(yapo.layer)
    return (load_sae(release, sae_id, layer=yapo.layer, model=model, device=device),
            f"{release}/{sae_id}" if sae_id else f"{release} layer {yapo.layer}")


def build_parser() -> argparse.ArgumentParser:
    from yapo_interp.cli import add_common_args

    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.attribution",
        description="Encode a dense BiPO vector into SAE features and compare it with a YaPO "
                    "vector: top features, overlap, logit lens, top-activating prompts.",
    )
    parser.add_argument("--bipo", required=True, type=Path,
                        help="dense vector (bipo or caa): PATH of PATH.safetensors + PATH.json")
    parser.add_argument("--yapo", required=True, type=Path,
                        help="sparse vector (yapo or sas): PATH of PATH.safetensors + PATH.json")
    parser.add_argument("--attribution", default="effect", choices=ATTRIBUTIONS,
                        help="'effect' (default): each vector's change of the SAE code of the "
                             "prompts' activations, per direction; 'static': BiPO encoded by "
                             "--method against YaPO's v")
    parser.add_argument("--strength", type=float, default=AttributionConfig.strength,
                        help="λ of eq. 2 / 3 for the effect attribution (default: 1)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=ENCODE_METHODS,
                        help="static attribution: how the BiPO vector becomes an SAE code "
                             f"(default: {DEFAULT_METHOD})")
    parser.add_argument("--k", type=int, default=AttributionConfig.k,
                        help="features listed per vector (default: 20)")
    parser.add_argument("--prompts-from", default="cultural",
                        help="prompts for top-activating examples: 'cultural' (shipped set), a "
                             "file (.txt one a line, .jsonl/.csv with a prompt column), or 'none'")
    parser.add_argument("--max-prompts", type=int, default=AttributionConfig.max_prompts,
                        help="at most this many prompts, evenly spaced (default: 400; 0 = all)")
    parser.add_argument("--examples", type=int, default=AttributionConfig.n_examples,
                        help="top-activating examples per feature (default: 5)")
    parser.add_argument("--max-features", type=int, default=None,
                        help="stop the (signed_)nnls fit after this many features (default: fit "
                             "until no feature lowers the error)")
    parser.add_argument("--batch-size", type=int, default=AttributionConfig.batch_size)
    parser.add_argument("--no-feature-pages", action="store_true",
                        help="skip the offline HTML page per listed feature (features/)")
    parser.add_argument("--no-images", action="store_true",
                        help="write HTML figures only (no PNG, which needs kaleido + Chrome)")
    add_common_args(parser, out_default="runs/attribution")
    return parser


def main(argv: list[str] | None = None) -> int:
    from yapo_interp.cli import check_run_args, model_name, preset_from_args, set_seed
    from yapo_interp.models import check_layer, load_model

    args = build_parser().parse_args(argv)
    if args.k < 1:
        raise UserError(f"--k must be at least 1 (got {args.k}).")
    set_seed(args.seed)
    bipo, yapo = _load_vector(args.bipo), _load_vector(args.yapo)
    if bipo.is_sparse:
        raise UserError(f"--bipo {args.bipo} is a sparse {bipo.method} vector; give a dense "
                        "(bipo or caa) vector.")
    if not yapo.is_sparse:
        raise UserError(f"--yapo {args.yapo} is a dense {yapo.method} vector; give a sparse "
                        "(yapo or sas) vector.")
    if bipo.layer != yapo.layer:
        raise UserError(f"The vectors steer different layers (BiPO {bipo.layer}, YaPO "
                        f"{yapo.layer}); their features can only be compared at one layer.")
    if not (math.isfinite(args.strength) and args.strength > 0):
        raise UserError(f"--strength must be a positive number (got {args.strength}).")
    config = AttributionConfig(attribution=args.attribution, method=args.method,
                               strength=args.strength, k=args.k, n_examples=args.examples,
                               max_prompts=args.max_prompts, batch_size=args.batch_size,
                               max_features=args.max_features,
                               feature_pages=not args.no_feature_pages)
    prompts = load_prompts(args.prompts_from, config.max_prompts)
    preset = preset_from_args(args)
    check_run_args(args, layers=[yapo.layer], flag="the vectors' layer")  # before the model load
    model = load_model(model_name(args), device=args.device)
    check_layer(model, yapo.layer)
    if bipo.vector.shape[-1] != model.cfg.d_model:
        raise UserError(f"--bipo {args.bipo} has d_model={bipo.vector.shape[-1]}, but "
                        f"{model.cfg.model_name} has d_model={model.cfg.d_model}: it was trained "
                        "on another model.")
    sae, sae_name = _sae_for(yapo, preset, model, args.device)
    if yapo.vector.shape[-1] != sae.cfg.d_sae:
        raise UserError(f"--yapo {args.yapo} has d_sae={yapo.vector.shape[-1]}, but the SAE "
                        f"{sae_name} has d_sae={sae.cfg.d_sae}: the vector was trained with "
                        "another SAE.")
    bipo.check_fits(model=model, source=f"--bipo {args.bipo}")
    yapo.check_fits(model=model, sae=sae, source=f"--yapo {args.yapo}")
    print(f"model {model.cfg.model_name}, layer {yapo.layer}, SAE {sae_name} "
          f"(d_sae {sae.cfg.d_sae}), {len(prompts)} prompts, attribution {config.attribution}"
          + (f" (method {config.method})" if config.attribution == "static" else ""))
    report = attribute(model, sae, yapo.layer, bipo.vector.detach().float(),
                       yapo.vector.detach().float(), prompts, config)
    print(format_overlap(report))
    settings = {"config": asdict(config), "bipo": str(args.bipo), "yapo": str(args.yapo),
                "bipo_metadata": bipo.metadata, "yapo_metadata": yapo.metadata,
                "model": model.cfg.model_name, "layer": yapo.layer, "sae": sae_name,
                "prompts_from": args.prompts_from, "n_prompts": len(prompts),
                "preset": args.preset, "seed": args.seed}
    written = write_report(report, args.out, settings,
                           image_formats=() if args.no_images else ("png",))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    from yapo_interp.cli import run_cli

    run_cli(main)
