"""Paper-style figures, regenerated from a run's saved results alone (no model, no recomputation).

``python -m yapo_interp.figures RUN_DIR`` walks ``RUN_DIR`` for the files the other commands write
and draws, into ``figures/`` (or ``--out``), HTML always and PNG/SVG when kaleido can render:

* ``patching_summary.csv`` (``yapo_interp.patching``) -> activation patching curves (paper fig. 3);
* training folders with ``log.jsonl`` + ``run.json`` (``yapo_interp.train``) -> train and eval loss
  of YaPO vs BiPO per country and setting (fig. 2);
* ``stability.csv`` (``yapo_interp.evaluate --stability``) -> accuracy across epochs (fig. 5);
* ``table*.csv`` (``yapo_interp.evaluate``) -> the results tables as Plotly tables (tables 1-5);
* ``top_features.csv`` (``yapo_interp.attribution``) -> top-feature tables and the top-weights bars;
* ``r2_by_k.csv`` (``yapo_interp.attribution``) -> R² of each vector by its top-k SAE features.

The attribution's figures are drawn here too when it runs (``top_features_table_figure``,
``top_weights_figure``, ``r2_by_k_figure``).

Every figure uses the shared template and the fixed method colours of ``yapo_interp.style``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.cli import run_cli
from yapo_interp.data.countries import DISPLAY_NAMES
from yapo_interp.errors import UserError
from yapo_interp.io import read_json, read_jsonl
from yapo_interp.patching import patching_figure
from yapo_interp.style import METHOD_LABELS, method_color, save_figure

if TYPE_CHECKING:  # needed only for type hints (and the attribution imports this module)
    import torch

    from yapo_interp.attribution.compare import CodeComparison


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


# --------------------------------------------------------------------------------------------
# Feature attribution (yapo_interp.attribution)
# --------------------------------------------------------------------------------------------


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
# --------------------------------------------------------------------------------------------


def _figure_name(path: Path, run_dir: Path, stem: str) -> str:
    """A flat, unique file name for a result found at ``path`` below ``run_dir``."""
    parts = [part for part in path.parent.relative_to(run_dir).parts if part not in (".", "")]
    return "_".join(parts + [stem]) if parts else stem


def regenerate(run_dir: str | Path, out_dir: str | Path = "figures",
               image_formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Draw every figure that ``run_dir``'s saved results allow; return the files written."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give the output folder of a run "
                        "(e.g. runs/study).")
    written: list[Path] = []
    for summary_path in sorted(run_dir.rglob("patching_summary.csv")):
        summary = pd.read_csv(summary_path)
        chosen_path = summary_path.with_name("chosen_layer.json")
        chosen = read_json(chosen_path)["chosen_layer"] if chosen_path.is_file() else None
        countries = summary.country.nunique()
        written += save_figure(patching_figure(summary, chosen),
                               out_dir / _figure_name(summary_path, run_dir, "patching_curves"),
                               image_formats=image_formats, width=460 * countries + 100,
                               height=560)
    runs = find_training_runs(run_dir)
    if any("train_loss" in run.log for run in runs):
        fig = loss_figure(runs)
        written += save_figure(fig, out_dir / "loss_curves", image_formats=image_formats,
                               width=int(fig.layout.width), height=int(fig.layout.height))
    for stability_path in sorted(run_dir.rglob("stability.csv")):
        stability = pd.read_csv(stability_path)
        if stability.empty:
            continue
        fig = accuracy_epochs_figure(stability)
        written += save_figure(fig, out_dir / _figure_name(stability_path, run_dir,
                                                           "accuracy_epochs"),
                               image_formats=image_formats, width=int(fig.layout.width),
                               height=int(fig.layout.height))
    for stem, title in TABLE_TITLES.items():
        for table_path in sorted(run_dir.rglob(f"{stem}.csv")):
            table = pd.read_csv(table_path).fillna("")
            fig = table_figure(table, title)
            written += save_figure(fig, out_dir / _figure_name(table_path, run_dir, stem),
                                   image_formats=image_formats, width=1200,
                                   height=int(fig.layout.height))
    for features_path in sorted(run_dir.rglob("top_features.csv")):
        features = pd.read_csv(features_path).fillna({"neuronpedia": ""})
        for method in ("bipo", "yapo"):
            if features[f"{method}_rank"].notna().any():
                k = int(features[f"{method}_rank"].max())
                written += save_figure(
                    top_features_table_figure(features, method),
                    out_dir / _figure_name(features_path, run_dir, f"top_features_{method}"),
                    image_formats=image_formats, width=1600, height=140 + 48 * k)
    for r2_path in sorted(run_dir.rglob("r2_by_k.csv")):
        r2 = pd.read_csv(r2_path)
        if not r2.empty:
            written += save_figure(r2_by_k_figure(r2),
                                   out_dir / _figure_name(r2_path, run_dir, "r2_by_k"),
                                   image_formats=image_formats, width=800, height=480)
    if not written:
        raise UserError(f"Found no saved results under {run_dir} (looked for patching_summary.csv"
                        ", log.jsonl + run.json, stability.csv, table*.csv, top_features.csv).")
    return written


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.figures``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.figures",
        description="Regenerate every figure of a run from its saved results.")
    parser.add_argument("run_dir", type=Path, help="output folder of a run or study")
    parser.add_argument("--out", type=Path, default=Path("figures"),
                        help="where to write the figures (default: figures/)")
    parser.add_argument("--formats", nargs="*", default=["png"], choices=["png", "svg", "pdf"],
                        help="image formats besides HTML, when kaleido is installed (default: png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Regenerate the figures of the run named in ``argv`` and list the files written."""
    args = build_parser().parse_args(argv)
    written = regenerate(args.run_dir, args.out, tuple(args.formats))
    html = [path for path in written if path.suffix == ".html"]
    print(f"wrote {len(html)} figures ({len(written)} files) to {args.out}")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
