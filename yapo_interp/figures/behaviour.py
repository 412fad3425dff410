"""Figures of a behaviour evaluation (:mod:`yapo_interp.behaviour`): score against multiplier
(BiPO's figure) and effect against cost. The metrics' axis titles come with the call (the
behaviour stage's ``METRICS``), so this module needs nothing from the stage that draws it."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.errors import UserError
from yapo_interp.style import METHOD_LABELS, method_color


def behaviour_sweep_figure(summary: pd.DataFrame, metric_titles: Mapping[str, str], *,
                           title: str = "Behaviour steering",
                           judge_weaker: bool = False) -> go.Figure:
    """Score against multiplier ``λ·d``, one line per method, one panel per metric of
    ``metric_titles`` (column -> axis title, in panel order) found in ``summary`` (BiPO's
    figure), with the bootstrap intervals as error bars; ``judge_weaker`` labels the judge
    panel as the offline judge's."""
    metrics = [metric for metric in metric_titles if metric in set(summary["metric"])]
    if not metrics:
        raise UserError("the summary has no scores to plot")
    titles = [metric_titles[m] + (" — offline judge, weaker" if m == "judge_score"
                                  and judge_weaker else "") for m in metrics]
    figure = make_subplots(rows=1, cols=len(metrics), subplot_titles=titles,
                           horizontal_spacing=0.06)
    for column, metric in enumerate(metrics, 1):
        for method in dict.fromkeys(summary["method"]):
            rows = summary[(summary["metric"] == metric) & (summary["method"] == method)]
            rows = rows.sort_values("multiplier")
            figure.add_trace(go.Scatter(
                x=rows["multiplier"], y=rows["value"], mode="lines+markers",
                name=METHOD_LABELS.get(method, method), legendgroup=method,
                showlegend=column == 1, line=dict(color=method_color(method)),
                error_y=dict(type="data", symmetric=False,
                             array=rows["high"] - rows["value"],
                             arrayminus=rows["value"] - rows["low"])), row=1, col=column)
        figure.update_xaxes(title_text="multiplier λ·d", row=1, col=column)
    figure.update_layout(title=title)
    return figure


def effect_cost_figure(summary: pd.DataFrame, cost_summary: pd.DataFrame, *,
                       metric: str = "ab_letter_prob", metric_title: str | None = None,
                       title: str = "Effect against cost") -> go.Figure:
    """The steering effect (``metric``, its axis titled ``metric_title``) against the
    cross-entropy increase on neutral text, one line per method through its multipliers (each
    point labelled with its ``λ·d``)."""
    effect = summary[summary["metric"] == metric][["method", "multiplier", "value"]]
    merged = effect.merge(cost_summary, on=["method", "multiplier"], how="inner")
    if merged.empty:
        raise UserError(f"no {metric} scores with a matching cost to plot")
    figure = go.Figure()
    for method in dict.fromkeys(merged["method"]):
        rows = merged[merged["method"] == method].sort_values("multiplier")
        figure.add_trace(go.Scatter(
            x=rows["ce_increase"], y=rows["value"], mode="lines+markers+text",
            text=[f"{m:g}" for m in rows["multiplier"]], textposition="top center",
            name=METHOD_LABELS.get(method, method), line=dict(color=method_color(method))))
    figure.update_layout(title=title, xaxis_title="cross-entropy increase on neutral text "
                                                  "(nats/token)",
                         yaxis_title=metric_title or metric)
    return figure
