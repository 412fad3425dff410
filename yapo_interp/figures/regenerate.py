"""Regenerating every figure of a run from its saved results alone (no model, no
recomputation): :func:`regenerate` walks a run folder for the files the other commands write."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from yapo_interp.errors import UserError
from yapo_interp.figures.attribution import r2_by_k_figure, top_features_table_figure
from yapo_interp.figures.patching import patching_figure
from yapo_interp.figures.training import (TABLE_TITLES, accuracy_epochs_figure,
                                          find_training_runs, loss_figure, table_figure)
from yapo_interp.io import read_json
from yapo_interp.style import save_figure


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
