"""Figures of training and evaluation results: the loss curves of training runs (paper fig. 2),
accuracy across epochs (fig. 5) and the results tables (tables 1-5) as Plotly tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.data.countries import DISPLAY_NAMES
from yapo_interp.errors import UserError
from yapo_interp.io import read_json, read_jsonl
from yapo_interp.style import METHOD_LABELS, method_color


@dataclass(frozen=True)
class TrainingRun:
    """The loss log of one training run and what it trained."""

    path: Path
    method: str
    country: str | None
    setting: str | None
    layer: int | None
    log: pd.DataFrame


def find_training_runs(run_dir: Path) -> list[TrainingRun]:
    """Training folders (``log.jsonl`` + ``run.json``) below ``run_dir``, sorted by path."""
    runs = []
    for log_path in sorted(Path(run_dir).rglob("log.jsonl")):
        info_path = log_path.with_name("run.json")
        if not info_path.is_file():
            continue
        settings = read_json(info_path).get("settings", {})
        records = read_jsonl(log_path)
        if not records:
            continue
        method = settings.get("settings", {}).get("method") or settings.get("method")
        runs.append(TrainingRun(log_path.parent, str(method), settings.get("country"),
                                settings.get("setting"), settings.get("layer"),
                                pd.DataFrame(records)))
    return runs


def _title_case(text: str | None) -> str:
    return DISPLAY_NAMES.get(text or "", (text or "").replace("_", " ").title())


def loss_figure(runs: list[TrainingRun]) -> go.Figure:
    """Train (lines) and eval (dashed, markers) loss per optimiser step, one panel per
    (country, setting), YaPO and BiPO in their fixed colours (paper fig. 2)."""
    trained = [run for run in runs if "train_loss" in run.log]
    if not trained:
        raise UserError("No training logs with a train loss to plot.")
    panels = sorted({(run.country, run.setting) for run in trained}, key=str)
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, subplot_titles=[
        f"{_title_case(country)}, {setting or 'csv'}" for country, setting in panels])
    shown = set()
    for column, panel in enumerate(panels, start=1):
        for run in (r for r in trained if (r.country, r.setting) == panel):
            color, label = method_color(run.method), METHOD_LABELS.get(run.method, run.method)
            train = run.log.dropna(subset=["train_loss"])
            fig.add_trace(go.Scatter(
                x=train.step, y=train.train_loss, mode="lines", name=f"{label} train",
                line=dict(color=color, width=1.8), legendgroup=f"{run.method}-train",
                showlegend=(run.method, "train") not in shown), row=1, col=column)
            shown.add((run.method, "train"))
            if "eval_loss" in run.log:
                evaluation = run.log.dropna(subset=["eval_loss"])
                fig.add_trace(go.Scatter(
                    x=evaluation.step, y=evaluation.eval_loss, mode="lines+markers",
                    name=f"{label} validation", line=dict(color=color, dash="dash", width=1.8),
                    marker=dict(size=6), legendgroup=f"{run.method}-eval",
                    showlegend=(run.method, "eval") not in shown), row=1, col=column)
                shown.add((run.method, "eval"))
        fig.update_xaxes(title_text="optimiser step", row=1, col=column)
    fig.update_yaxes(title_text="preference loss (eq. 1 / 4)", row=1, col=1)
    fig.update_layout(template="yapo", title="Training and validation loss, YaPO vs BiPO",
                      height=460, width=max(560, 480 * len(panels)))
    return fig


def accuracy_epochs_figure(stability: pd.DataFrame) -> go.Figure:
    """MCQ accuracy of each epoch's vector with 95% intervals, one panel per (country, evaluation
    setting), one line per method (paper fig. 5); the baseline as a dotted level if present."""
    frame = stability.copy()
    frame["panel"] = list(zip(frame.country, frame.setting))
    panels = list(dict.fromkeys(sorted(frame.panel, key=str)))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, subplot_titles=[
        f"{_title_case(country)}, evaluated {setting}" for country, setting in panels])
    shown = set()
    for column, panel in enumerate(panels, start=1):
        rows = frame[frame.panel == panel]
        for method, group in rows.groupby("method", sort=False):
            group = group.sort_values("epoch")
            color, label = method_color(method), METHOD_LABELS.get(method, method)
            if method == "baseline" or group.epoch.isna().all():
                value = group.accuracy.mean()
                fig.add_hline(y=value, line=dict(color=color, dash="dot"), row=1, col=column,
                              annotation_text=f"{label} {value:.0%}", annotation_position="top left")
                continue
            fig.add_trace(go.Scatter(
                x=group.epoch, y=group.accuracy, mode="lines+markers", name=label,
                line=dict(color=color, width=2.2), legendgroup=method,
                showlegend=method not in shown,
                error_y=dict(type="data", symmetric=False, array=group.ci_high - group.accuracy,
                             arrayminus=group.accuracy - group.ci_low, thickness=1, width=3)),
                row=1, col=column)
            shown.add(method)
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=column)
    fig.update_yaxes(title_text="MCQ accuracy", tickformat=".0%", rangemode="tozero", row=1, col=1)
    fig.update_layout(template="yapo", title="Accuracy across training epochs",
                      height=460, width=max(560, 420 * len(panels)))
    return fig


def table_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """A results table as a Plotly table (numbers kept as written in the CSV)."""
    header_color = "#3b4a6b"
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{column}</b>" for column in table.columns],
                    fill_color=header_color, font=dict(color="white"), align="left"),
        cells=dict(values=[table[column].astype(str).tolist() for column in table.columns],
                   align="left", height=26,
                   fill_color=[["#f5f6f8" if i % 2 else "white" for i in range(len(table))]]),
    ))
    fig.update_layout(template="yapo", title=title, height=120 + 28 * len(table),
                      margin=dict(l=20, r=20, t=60, b=20))
    return fig


TABLE_TITLES = {
    "table1_mcq": "Table 1: MCQ accuracy by language and country",
    "table2_open": "Table 2: open-ended judge scores by language and country",
    "table3_gap_by_language": "Table 3: PNLG and RCA by language",
    "table5_gap_by_country": "Table 5: PNLG and RCA by country",
}
