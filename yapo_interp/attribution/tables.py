"""The attribution's results as tables (one row per listed feature, per example, per point of
R²(k), per top feature and direction) and as the text the command prints (``format_overlap``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

import pandas as pd
import torch

from yapo_interp.attribution.compare import CodeComparison
from yapo_interp.attribution.effect import EffectCodes
from yapo_interp.attribution.encode import _cosine
from yapo_interp.attribution.explain import ActivatingExample, FeatureLogits, neuronpedia_url

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE

    from yapo_interp.attribution.analysis import AttributionReport  # it imports this module


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
    """One row per top-activating example, ranked within its feature."""
    rows = [dict(asdict(example), rank=rank)
            for feature_examples in examples.values()
            for rank, example in enumerate(feature_examples, 1)]
    columns = ["feature", "rank", "activation", "prompt_index", "position", "token", "context",
               "prompt"]
    return pd.DataFrame(rows, columns=columns)


def effect_features_table(
    by_direction: Mapping[int, CodeComparison],
    effects: Mapping[tuple[str, int], EffectCodes],
    yapo_vector: torch.Tensor,
) -> pd.DataFrame:
    """The effect attribution's top features: one row per (direction, method, rank), with the
    other method's effect on the same feature, YaPO's gated code, the decoded share and ``v_f``."""
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
    return pd.DataFrame(rows, columns=[
        "direction", "method", "rank", "feature", "effect", "bipo_effect", "yapo_effect",
        "gated", "share", "in_both", "yapo_v"])


def r2_table(rows: list[tuple[str, int | None, int, float, str]]) -> pd.DataFrame:
    """R²(k) rows (method, direction or None, k, R², what was fitted) as a table."""
    frame = pd.DataFrame(rows, columns=["method", "direction", "k", "r2", "target"])
    frame["direction"] = frame["direction"].astype("Int64")
    return frame


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
            label = method if pd.isna(direction) else f"{method} d={int(direction):+d}"
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
