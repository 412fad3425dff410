"""Writing an attribution to a folder: the CSV tables, the HTML figures (``yapo_interp.figures``),
a page per listed feature (``yapo_interp.feature_pages``) and ``attribution.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yapo_interp.attribution.analysis import AttributionReport
from yapo_interp.attribution.encode import _cosine
from yapo_interp.feature_pages import write_feature_pages
from yapo_interp.figures import r2_by_k_figure, top_features_table_figure, top_weights_figure
from yapo_interp.io import run_info, write_json, write_table
from yapo_interp.style import save_figure


def _write_feature_pages(report: AttributionReport, out: Path) -> list[Path]:
    """The feature pages of the listed features, with both vectors' weights on each."""
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
