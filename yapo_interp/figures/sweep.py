"""Figures of a sweep (:mod:`yapo_interp.sweep`): convergence and score against λ, each method at
its selected learning rate."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.style import METHOD_LABELS, method_color


def group_key(country: str, setting: str) -> str:
    """``country/setting``: the name of a group a λ is chosen for (``all`` pools countries)."""
    return f"{country}/{setting}"


def selection_groups(frame: pd.DataFrame) -> pd.Series:
    """:func:`group_key` per row (``all/setting`` when the frame has no country column)."""
    countries = frame["country"].astype(str) if "country" in frame else ["all"] * len(frame)
    return pd.Series([group_key(country, setting) for country, setting in
                      zip(countries, frame["setting"].astype(str))], index=frame.index,
                     dtype=object)


def selected_multiplier(chosen: dict[str, Any], country: str, setting: str) -> float | None:
    """The λ ``chosen`` selected for ``(country, setting)``: its own group's when it has one,
    else the method's pooled λ (and, for the countries pooled, ``all``, the λ every group chose
    when they agree; NaN otherwise)."""
    groups = chosen.get("multiplier_by_group") or {}
    if country == "all":
        own = {value for key, value in groups.items() if key.endswith(group_key("", setting))}
        return own.pop() if len(own) == 1 else (math.nan if own else chosen.get("multiplier"))
    return groups.get(group_key(country, setting), chosen.get("multiplier"))


def at_selection(frame: pd.DataFrame, selection: dict[str, Any], *,
                 by_multiplier: bool = True) -> pd.DataFrame:
    """The rows of ``frame`` where each method sits at its selected lr (and λ, when
    ``by_multiplier`` and the frame has a ``multiplier`` column: each (country, setting) at
    its own ``multiplier_by_group`` when the selection has one); a method without an lr (the
    baseline, CAA, SAS) is filtered on λ alone, a method not in the selection is dropped. The
    figures, the report's tables and the paired differences all read these rows."""
    keep = []
    for method, chosen in selection.get("methods", {}).items():
        rows = frame[frame["method"] == method]
        if chosen.get("lr") is not None:
            rows = rows[rows["lr"] == chosen["lr"]]
        if by_multiplier and "multiplier" in rows and chosen.get("multiplier") is not None:
            wanted = pd.Series(chosen["multiplier"], index=rows.index, dtype=float)
            if chosen.get("multiplier_by_group") and "setting" in rows:  # each vector at its λ
                groups = selection_groups(rows)
                wanted = groups.map({group: selected_multiplier(chosen, *group.split("/", 1))
                                     for group in groups.unique()}).astype(float)
            rows = rows[rows["multiplier"] == wanted]
        keep.append(rows)
    return pd.concat(keep, ignore_index=True) if keep else frame.iloc[:0]


def by_group(frame: pd.DataFrame) -> list[tuple[str, tuple[str, str], pd.DataFrame]]:
    """``(title, (country, setting), rows)`` per (country, training setting) of ``frame``,
    sorted: each group has its own data, vector and λ, so a figure never averages across them
    (Nepal's λ curves fall where Egypt's rise; its non-localized runs stop at step 100). A frame
    without those columns is one group (``country`` "all", ``setting`` "both")."""
    if frame.empty:
        return []
    country = frame["country"].astype(str) if "country" in frame else pd.Series("all", frame.index)
    setting = frame["setting"].astype(str) if "setting" in frame else pd.Series("both", frame.index)
    groups = []
    for (name, trained), rows in frame.groupby([country, setting], sort=True):
        title = " · ".join(part for part in (
            "" if name == "all" else name, "" if trained == "both" else f"trained {trained}")
            if part)
        groups.append((title, (name, trained), rows))
    return groups


def _titled(group: str, kind: str) -> str:
    return f"{group} · {kind}" if group else kind


def _spacing(rows: int) -> float:
    """Vertical space between subplot rows: room for a title, less of it as rows are added."""
    return min(0.12, 0.3 / max(1, rows))


def sweep_figures(curves: pd.DataFrame | None, table: pd.DataFrame | None,
                  selection: dict[str, Any]) -> dict[str, go.Figure]:
    """Plotly figures of a sweep, each method at its selected lr, averaged over its trials, one
    row per (country, training setting): ``loss_vs_perturbation`` — training loss against step
    and against the perturbation ``‖Φ(h) − h‖`` of the same steps (is a method fast, or does it
    only move further?); ``score_vs_lambda`` — validation and test margin against λ, the
    group's chosen λ starred on validation (the λ choice, AxBench-style)."""
    figures = {}
    if curves is not None and not curves.empty and "perturbation" in curves:
        groups = by_group(at_selection(curves.dropna(subset=["train_loss"]), selection,
                                       by_multiplier=False))
        figure = make_subplots(rows=max(1, len(groups)), cols=2, shared_yaxes=True,
                               vertical_spacing=_spacing(len(groups)), subplot_titles=[
                                   _titled(title, kind) for title, _, _ in groups for kind in
                                   ("loss against step", "loss against perturbation ‖Φ(h) − h‖")])
        for row, (_, _, part) in enumerate(groups, start=1):
            for method, rows in part.groupby("method", sort=True):
                mean = rows.groupby("step")[["train_loss", "perturbation"]].mean().reset_index()
                style = dict(color=method_color(method), width=1.8)
                label = METHOD_LABELS.get(method, method)
                figure.add_trace(go.Scatter(x=mean["step"], y=mean["train_loss"], mode="lines",
                                            name=label, line=style, legendgroup=method,
                                            showlegend=row == 1), row=row, col=1)
                figure.add_trace(go.Scatter(x=mean["perturbation"], y=mean["train_loss"],
                                            mode="lines+markers", name=label, line=style,
                                            marker=dict(size=4), legendgroup=method,
                                            showlegend=False), row=row, col=2)
            figure.update_yaxes(title_text="training loss (mean over seeds)", row=row, col=1)
        last = max(1, len(groups))
        figure.update_xaxes(title_text="optimiser step", row=last, col=1)
        figure.update_xaxes(title_text="mean ‖Φ(h) − h‖ per token", row=last, col=2)
        figure.update_layout(title="Convergence at each method's selected learning rate",
                             height=320 * last + 140, width=1100)
        figures["loss_vs_perturbation"] = figure
    if table is not None and not table.empty:
        unsteered = table[table["method"] == "baseline"]
        own_setting = table[(table["eval_setting"] == table["setting"])
                            & (table["method"] != "baseline")]
        groups = by_group(at_selection(own_setting, selection, by_multiplier=False))
        figure = make_subplots(rows=max(1, len(groups)), cols=2, shared_yaxes=True,
                               vertical_spacing=_spacing(len(groups)), subplot_titles=[
                                   _titled(title, kind) for title, _, _ in groups
                                   for kind in ("validation (chooses λ)", "test (reported)")])
        for row, (_, (country, setting), part) in enumerate(groups, start=1):
            for method, rows in part.groupby("method", sort=True):
                color, label = method_color(method), METHOD_LABELS.get(method, method)
                for column, split in enumerate(("validation", "test"), start=1):
                    mean = rows[rows["split"] == split].groupby("multiplier")["margin"].mean()
                    figure.add_trace(go.Scatter(
                        x=mean.index, y=mean.values, mode="lines+markers", name=label,
                        legendgroup=method, showlegend=row == 1 and column == 1,
                        line=dict(color=color, width=1.8)), row=row, col=column)
                    chosen = selected_multiplier(selection.get("methods", {}).get(method, {}),
                                                 country, setting)
                    if column == 1 and chosen in mean.index:
                        figure.add_trace(go.Scatter(
                            x=[chosen], y=[mean[chosen]], mode="markers", showlegend=False,
                            legendgroup=method, hoverinfo="skip", marker=dict(
                                symbol="star", size=14, color=color,
                                line=dict(color="black", width=1))), row=row, col=column)
            lambdas = sorted(part["multiplier"].unique())
            for column, split in enumerate(("validation", "test"), start=1):
                base = unsteered[(unsteered["split"] == split)
                                 & (unsteered["eval_setting"] == setting)]
                if "country" in base and country != "all":
                    base = base[base["country"] == country]
                if base.empty or not lambdas:
                    continue
                figure.add_trace(go.Scatter(
                    x=[lambdas[0], lambdas[-1]], y=[base["margin"].mean()] * 2, mode="lines",
                    name="unsteered", legendgroup="baseline",
                    showlegend=not any(trace.name == "unsteered" for trace in figure.data),
                    hoverinfo="y",
                    line=dict(color=method_color("baseline"), width=1.5, dash="dash")),
                    row=row, col=column)
            figure.update_yaxes(title_text="margin (log-odds)", row=row, col=1)
        last = max(1, len(groups))
        for column in (1, 2):
            figure.update_xaxes(title_text="λ (steering strength)", row=last, col=column)
        figure.update_layout(title="Score against λ at each method's selected learning rate "
                                   "(star: the λ chosen on validation)",
                             height=320 * last + 140, width=1100)
        figures["score_vs_lambda"] = figure
    return figures


def _band(x: pd.Series, low: pd.Series, high: pd.Series, color: str, group: str) -> go.Scatter:
    """A filled band between ``low`` and ``high`` (drawn as one closed polygon)."""
    return go.Scatter(x=list(x) + list(x)[::-1], y=list(high) + list(low)[::-1], fill="toself",
                      mode="lines", fillcolor=color, opacity=0.18, line=dict(width=0),
                      hoverinfo="skip",
                      showlegend=False, legendgroup=group)


def loss_curves_figure(curves: pd.DataFrame, selection: dict[str, Any]) -> go.Figure:
    """Figure 2 of the paper, with seeds: training loss (mean per epoch) and validation loss
    against step, each method at its selected lr; a line is the mean over seeds, the band
    their range. One row per (country, training setting)."""
    groups = by_group(at_selection(curves, selection, by_multiplier=False))
    titles = [_titled(title, kind) for title, _, _ in groups
              for kind in ("training loss (epoch mean)", "validation loss")]
    figure = make_subplots(rows=max(1, len(groups)), cols=2, subplot_titles=titles,
                           shared_xaxes=True, vertical_spacing=0.12)
    for row, (_, _, part) in enumerate(groups, start=1):
        for method, rows in part.groupby("method", sort=True):
            color, label = method_color(method), METHOD_LABELS.get(method, method)
            lr = rows["lr"].iloc[0]
            train = rows.dropna(subset=["train_loss"]).groupby(["trial", "epoch"]).agg(
                step=("step", "max"), loss=("train_loss", "mean")).reset_index()
            valid = rows.dropna(subset=["eval_loss"])[["trial", "step", "eval_loss"]].rename(
                columns={"eval_loss": "loss"})
            for column, frame in ((1, train), (2, valid)):
                if frame.empty:
                    continue
                stats = frame.groupby("step")["loss"].agg(["mean", "min", "max", "count"])
                figure.add_trace(_band(stats.index.to_series(), stats["min"], stats["max"],
                                       color, method), row=row, col=column)
                figure.add_trace(go.Scatter(
                    x=stats.index, y=stats["mean"], mode="lines", legendgroup=method,
                    name=f"{label} (lr {lr:g}, {_seeds(int(stats['count'].max()))})",
                    showlegend=row == 1 and column == 2, line=dict(color=color, width=2)),
                    row=row, col=column)
    figure.update_xaxes(title_text="optimiser step", row=max(1, len(groups)))
    figure.update_yaxes(title_text="DPO loss")
    figure.update_layout(title="Loss curves at each method's selected learning rate (line: "
                               "mean over seeds; band: their range)",
                         height=320 * max(1, len(groups)) + 120, width=1100)
    return figure


def lr_sensitivity_figure(trials: pd.DataFrame, selection: dict[str, Any]) -> go.Figure:
    """Final validation loss against learning rate, one dot per seed and a line through the
    means, per method and per (country, training setting): is each method's selected lr an
    interior optimum or the grid's edge? Each panel holds its own group's trials only, so an lr
    run on more groups is not compared with one run on fewer."""
    trained = trials.dropna(subset=["lr", "final_eval_loss"])
    groups = by_group(trained)
    columns = min(2, max(1, len(groups)))
    rows_needed = max(1, math.ceil(len(groups) / columns))
    figure = make_subplots(rows=rows_needed, cols=columns, shared_xaxes="all",
                           shared_yaxes=True, vertical_spacing=0.14,
                           subplot_titles=[title for title, _, _ in groups])
    for index, (_, _, part) in enumerate(groups):
        row, column = index // columns + 1, index % columns + 1
        for method, rows in part.groupby("method", sort=True):
            color, label = method_color(method), METHOD_LABELS.get(method, method)
            means = rows.groupby("lr")["final_eval_loss"].mean()
            figure.add_trace(go.Scatter(x=means.index, y=means.values, mode="lines+markers",
                                        name=label, legendgroup=method, showlegend=index == 0,
                                        line=dict(color=color, width=2)), row=row, col=column)
            figure.add_trace(go.Scatter(x=rows["lr"], y=rows["final_eval_loss"], mode="markers",
                                        legendgroup=method, showlegend=False,
                                        hovertext=rows["trial"], marker=dict(
                                            color=color, size=7, opacity=0.6)),
                             row=row, col=column)
            lr = selection.get("methods", {}).get(method, {}).get("lr")
            if lr in means.index:
                figure.add_trace(go.Scatter(x=[lr], y=[means[lr]], mode="markers",
                                            showlegend=False, legendgroup=method,
                                            hoverinfo="skip", marker=dict(
                                                symbol="star", size=16, color=color,
                                                line=dict(color="black", width=1))),
                                 row=row, col=column)
    figure.update_xaxes(type="log")
    figure.update_xaxes(title_text="learning rate (AdamW peak)", row=rows_needed)
    figure.update_yaxes(title_text="final validation loss", col=1)
    figure.update_layout(title="Validation loss against learning rate (dots: seeds; star: "
                               "selected)", height=340 * rows_needed + 120, width=1000)
    return figure


def seed_scores_figure(scores: pd.DataFrame) -> go.Figure:
    """Figure 5 with seeds: test accuracy and margin of each method at its selected lr and λ
    (both forms), per country and training setting; a bar is the mean over seeds, its whisker
    the Student-t CI, the dots the seeds; the baseline is the unsteered model."""
    both = scores[scores["eval_setting"] == "both"]
    trained = both[both["method"] != "baseline"]
    base = both[both["method"] == "baseline"]
    settings = sorted(trained["setting"].unique()) if not trained.empty else ["both"]
    expanded = pd.concat([trained] + [base.assign(setting=s) for s in settings])
    expanded = expanded.assign(group=expanded["country"] + " · trained " + expanded["setting"])
    figure = make_subplots(rows=1, cols=2, subplot_titles=[
        "test accuracy (5 options; chance 20 %)", "test margin of the correct option (log-odds)"])
    for column, metric in enumerate(("accuracy", "margin"), start=1):
        for method, rows in expanded.groupby("method", sort=False):
            color, label = method_color(method), METHOD_LABELS.get(method, method)
            figure.add_trace(go.Bar(
                x=rows["group"], y=rows[metric], name=label, legendgroup=method,
                showlegend=column == 1, marker_color=color, offsetgroup=method,
                error_y=dict(type="data", symmetric=False,
                             array=rows[f"{metric}_ci_high"] - rows[metric],
                             arrayminus=rows[metric] - rows[f"{metric}_ci_low"])),
                row=1, col=column)
            dots = [(group, value) for group, values in zip(rows["group"],
                                                            rows[f"{metric}_per_seed"])
                    for value in json.loads(values)]
            if dots:
                figure.add_trace(go.Scatter(
                    x=[group for group, _ in dots], y=[value for _, value in dots],
                    mode="markers", offsetgroup=method, legendgroup=method, showlegend=False,
                    marker=dict(color="black", size=5, opacity=0.7)), row=1, col=column)
    figure.update_layout(barmode="group", scattermode="group", height=480, width=1150,
                         title="Test scores at each method's selected lr and λ (bar: mean over "
                               "seeds; whisker: 95 % t-CI; dots: seeds)")
    return figure


def _seeds(count: int) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{count} seed{'' if count == 1 else 's'}"
