"""Figures of a sweep (:mod:`yapo_interp.sweep`): convergence and score against λ, each method at
its selected learning rate."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.style import METHOD_LABELS, method_color


def _at_selected_lr(frame: pd.DataFrame, selection: dict[str, Any]) -> list[pd.DataFrame]:
    """Rows of each method at its selected lr (all rows of a method without one)."""
    keep = []
    for method, rows in frame.groupby("method", sort=True):
        lr = selection.get("methods", {}).get(method, {}).get("lr")
        keep.append(rows if lr is None else rows[rows["lr"] == lr])
    return keep


def sweep_figures(curves: pd.DataFrame | None, table: pd.DataFrame | None,
                  selection: dict[str, Any]) -> dict[str, go.Figure]:
    """Plotly figures of a sweep, each method at its selected lr, averaged over its trials:
    ``loss_vs_perturbation`` — training loss against step and against the perturbation
    ``‖Φ(h) − h‖`` of the same steps (is a method fast, or does it only move further?);
    ``score_vs_lambda`` — validation and test margin against λ (the λ choice, AxBench-style)."""
    figures = {}
    if curves is not None and not curves.empty and "perturbation" in curves:
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[
            "loss against step", "loss against perturbation ‖Φ(h) − h‖"])
        for rows in _at_selected_lr(curves.dropna(subset=["train_loss"]), selection):
            if rows.empty:
                continue
            method = rows["method"].iloc[0]
            mean = rows.groupby("step")[["train_loss", "perturbation"]].mean().reset_index()
            style = dict(color=method_color(method), width=1.8)
            label = METHOD_LABELS.get(method, method)
            figure.add_trace(go.Scatter(x=mean["step"], y=mean["train_loss"], mode="lines",
                                        name=label, line=style, legendgroup=method),
                             row=1, col=1)
            figure.add_trace(go.Scatter(x=mean["perturbation"], y=mean["train_loss"],
                                        mode="lines+markers", name=label, line=style,
                                        marker=dict(size=4), legendgroup=method,
                                        showlegend=False), row=1, col=2)
        figure.update_xaxes(title_text="optimiser step", row=1, col=1)
        figure.update_xaxes(title_text="mean ‖Φ(h) − h‖ per token", row=1, col=2)
        figure.update_yaxes(title_text="training loss (mean over trials)", row=1, col=1)
        figure.update_layout(title="Convergence at each method's selected learning rate",
                             height=460, width=1100)
        figures["loss_vs_perturbation"] = figure
    if table is not None and not table.empty:
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                               subplot_titles=["validation (chooses λ)", "test (reported)"])
        own_setting = table[table["eval_setting"] == table["setting"]]
        for rows in _at_selected_lr(own_setting, selection):
            if rows.empty:
                continue
            method = rows["method"].iloc[0]
            for column, split in enumerate(("validation", "test"), start=1):
                mean = rows[rows["split"] == split].groupby("multiplier")["margin"].mean()
                figure.add_trace(go.Scatter(
                    x=mean.index, y=mean.values, mode="lines+markers",
                    name=METHOD_LABELS.get(method, method), legendgroup=method,
                    showlegend=column == 1, line=dict(color=method_color(method), width=1.8)),
                    row=1, col=column)
                figure.update_xaxes(title_text="λ (steering strength)", row=1, col=column)
        figure.update_yaxes(title_text="margin of the correct option (log-odds)", row=1, col=1)
        figure.update_layout(title="Score against λ at each method's selected learning rate",
                             height=460, width=1100)
        figures["score_vs_lambda"] = figure
    return figures
