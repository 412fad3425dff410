"""Figures of the feature attribution (:mod:`yapo_interp.attribution`): top-feature tables, the
top-weights bars, R² by top-k, and the activation histogram of a feature page
(:mod:`yapo_interp.feature_pages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.style import METHOD_LABELS, method_color

if TYPE_CHECKING:  # needed only for type hints (the attribution imports this module)
    import torch

    from yapo_interp.attribution.compare import CodeComparison
    from yapo_interp.feature_pages import FeatureStats


def top_features_table_figure(features: pd.DataFrame, method: str) -> go.Figure:
    """A go.Table of one vector's top-k features (``method`` is "bipo" or "yapo").

    A table from the effect attribution (it has a ``yapo_v`` column) labels the weights as
    effects and adds YaPO's own entry ``v_f`` beside them."""
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


def pd_isna(value: Any) -> bool:
    """True for None, NaN and pandas' NA."""
    return bool(pd.isna(value))


def r2_by_k_figure(r2: pd.DataFrame) -> go.Figure:
    """R² of each code's target by its top-k features against k (log axis), one line per code."""
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


# --------------------------------------------------------------------------------------------
# Regenerating a run's figures, and the command line


def histogram_html(stats: FeatureStats) -> str:
    """The activation histogram as a plotly ``<div>`` (plotly.js must be loaded by the page)."""
    figure = go.Figure(go.Histogram(x=stats.activations, nbinsx=40, marker_color="#d62728"))
    figure.update_layout(template="yapo", height=260, width=560, margin=dict(l=50, r=20, t=30,
                                                                            b=40),
                         title=f"non-zero activations ({len(stats.activations)} tokens)")
    figure.update_xaxes(title_text="activation")
    figure.update_yaxes(title_text="tokens")
    return figure.to_html(full_html=False, include_plotlyjs=False)
