"""Two codes in one SAE basis side by side: their top-k features, the overlap of those lists,
rank and cosine agreement (``compare_codes``). Pure: no model is run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from yapo_interp.attribution.encode import _cosine, _sae_input, decoded_direction
from yapo_interp.errors import UserError

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE


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
