"""The paper's tables from instance rows: tables 1 and 2 (scores per country and method, with the
difference to the baseline), table 5 (PNLG and RCA per country) and table 3 (per language), as
numbers (CSV) and as the paper's text layout (Markdown); writing every result file of a run."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from yapo_interp.evaluate.conditions import (SETTING_TITLES, TASK_TITLES, EvalConfig,
                                             display_country)
from yapo_interp.evaluate.summaries import (EvaluationResult, accuracy_by_position, column_order,
                                            countries_in_order, paired_differences, select_rows)
from yapo_interp.io import run_info, write_json, write_table, write_text
from yapo_interp.metrics import relative_change


# --------------------------------------------------------------------------------------------
# Paper-style tables
# --------------------------------------------------------------------------------------------


def _mean_score(rows: pd.DataFrame) -> float:
    scores = rows["score"].dropna()
    return float(scores.mean()) if len(scores) else float("nan")


def _fmt_delta(value: float, fmt: Callable[[float], str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f" ({'+' if value >= 0 else '−'}{fmt(abs(value))})"


def _fmt_relative(value: float) -> str:
    if value is None or math.isnan(value):
        return ""
    arrow = "↑" if value > 0 else "↓" if value < 0 else ""
    return f" ({arrow}{abs(value) * 100:.1f}%)"


def average_label(covered: int, total: int) -> str:
    """The "Average" row's name: how many of the countries it averages over, when a column lacks
    some (every column of the row is averaged over the same countries, so that the baseline and
    a steered column are compared on equal terms)."""
    if covered == total:
        return "Average"
    return f"Average ({covered} of {total} countries: those with every column)"


def table_scores(frame: pd.DataFrame, config: EvalConfig = EvalConfig(), *, task: str = "mcq"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 1 (``task="mcq"``, accuracy in %) and 2 (``task="open"``, judge score 0-10).

    Returns ``(numbers, display)``: ``numbers`` has one column per (setting, method) and its
    difference to the baseline (``"{setting}/{column}"``, ``"{setting}/{column} Δ"``) on the
    table's scale; ``display`` is the paper's layout as text ("47.7% (+4.6%)"). Rows are
    countries in the paper's order, then one "Average" row per language: the mean over the
    countries that have a value in every column (all of them unless a vector is missing for
    some), so that baseline and steered columns average the same countries.
    """
    scale = 100.0 if task == "mcq" else 10.0
    columns = column_order(frame)
    baseline = "Baseline" if "Baseline" in columns else None
    rows = []
    for language, country in countries_in_order(frame):
        row: dict[str, Any] = {"language": language, "country": country}
        for setting in config.settings:
            for column in columns:
                row[f"{setting}/{column}"] = _mean_score(
                    select_rows(frame, column, country, setting)) * scale
        rows.append(row)
    numbers = pd.DataFrame(rows)
    value_columns = [c for c in numbers.columns if "/" in c]
    averaged = []
    average_labels: dict[str, str] = {}
    for language, group in numbers.groupby("language", sort=False):
        averaged.append(group)
        if len(group) > 1:
            # every column averaged over the same countries: those with a value in every column
            covered = group[group[value_columns].notna().all(axis=1)]
            averaged.append(pd.DataFrame([{"language": language, "country": "Average",
                                           **covered[value_columns].mean().to_dict()}]))
            average_labels[language] = average_label(len(covered), len(group))
    numbers = pd.concat(averaged, ignore_index=True)
    if baseline:
        for setting in config.settings:
            for column in columns:
                if column != baseline:
                    numbers[f"{setting}/{column} Δ"] = (numbers[f"{setting}/{column}"]
                                                        - numbers[f"{setting}/{baseline}"])
    ordered = ["language", "country"] + [
        name for setting in config.settings for column in columns
        for name in (f"{setting}/{column}", f"{setting}/{column} Δ") if name in numbers]
    numbers = numbers[ordered]

    def fmt(value: float) -> str:
        if value is None or math.isnan(value):
            return "–"
        return f"{value:.1f}%" if task == "mcq" else f"{value:.2f}"

    display_rows = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize(),
                 "Country": average_labels.get(row["language"], "Average")
                 if row["country"] == "Average" else display_country(row["country"])}
        for setting in config.settings:
            for column in columns:
                value = row[f"{setting}/{column}"]
                delta = row.get(f"{setting}/{column} Δ")
                text = fmt(value)
                if delta is not None and not (isinstance(delta, float) and math.isnan(delta)):
                    text += _fmt_delta(delta, fmt)
                shown[f"{SETTING_TITLES[setting]} · {column}"] = text
        display_rows.append(shown)
    return numbers, pd.DataFrame(display_rows)


def _wide_gap(long: pd.DataFrame, variant: str) -> tuple[list[str], pd.DataFrame]:
    suffix = "" if variant == "aggregate" else "_instance"
    columns = list(dict.fromkeys(long["column"]))
    wide = long.pivot_table(index=["task", "language", "country"], columns="column",
                            values=[f"pnlg{suffix}", f"rca{suffix}"], sort=False, dropna=False)
    wide.columns = [f"{'PNLG' if metric.startswith('pnlg') else 'RCA'}/{column}"
                    for metric, column in wide.columns]
    return columns, wide.reset_index()


def table_gap_by_country(long: pd.DataFrame, *, variant: str = "aggregate"
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5: PNLG (↓, change to the baseline in absolute terms: PNLG is signed) and RCA (↑,
    in %, difference in points) per language, country and task. ``variant`` is ``aggregate``
    (the paper's tables) or ``instance`` (eq. 5 and 6 averaged over pairs)."""
    columns, wide = _wide_gap(long, variant)
    task_rank = {task: index for index, task in enumerate(TASK_TITLES)}
    country_rank = {key: index for index, key in enumerate(countries_in_order(long))}
    wide["_country"] = [country_rank[(language, country)] for language, country
                        in zip(wide["language"], wide["country"])]
    wide["_task"] = wide["task"].map(task_rank)
    wide = wide.sort_values(["_country", "_task"], kind="stable").drop(
        columns=["_country", "_task"])
    for column in columns:
        wide[f"RCA/{column}"] = wide[f"RCA/{column}"] * 100.0
    baseline = "Baseline" if "Baseline" in columns else None
    if baseline:
        for column in columns:
            if column == baseline:
                continue
            # PNLG is signed: a relative change of it cannot be read (-1.2 -> 0 is "+100%"),
            # so the change is shown in absolute terms
            wide[f"PNLG/{column} Δ"] = wide[f"PNLG/{column}"] - wide[f"PNLG/{baseline}"]
            wide[f"RCA/{column} Δ"] = wide[f"RCA/{column}"] - wide[f"RCA/{baseline}"]
    numbers = wide[["language", "country", "task"] + [
        name for metric in ("PNLG", "RCA") for column in columns
        for name in (f"{metric}/{column}", f"{metric}/{column} rel", f"{metric}/{column} Δ")
        if name in wide]].reset_index(drop=True)
    display = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize(),
                 "Country": display_country(row["country"]),
                 "Task": TASK_TITLES.get(row["task"], row["task"])}
        for column in columns:
            value = row[f"PNLG/{column}"]
            shown[f"PNLG ↓ · {column}"] = ("–" if math.isnan(value) else f"{value:.3f}") + (
                _fmt_delta(row[f"PNLG/{column} Δ"], lambda v: f"{v:.3f}")
                if f"PNLG/{column} Δ" in row else "")
        for column in columns:
            value = row[f"RCA/{column}"]
            shown[f"RCA ↑ · {column}"] = ("–" if math.isnan(value) else f"{value:.1f}%") + (
                _fmt_delta(row[f"RCA/{column} Δ"], lambda v: f"{v:.1f}%")
                if f"RCA/{column} Δ" in row else "")
        display.append(shown)
    return numbers, pd.DataFrame(display)


def table_gap_by_language(long: pd.DataFrame, *, variant: str = "aggregate"
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3: RCA (↑, %) and PNLG (↓) per language (mean over its countries that have every
    column, so that all columns average the same countries) and overall (mean over languages),
    MCQ and open-ended, with the change to the baseline: relative for RCA, absolute for PNLG
    (a signed quantity)."""
    columns, wide = _wide_gap(long, variant)
    metrics = [c for c in wide.columns if "/" in c]
    # every column averaged over the same countries: those with a value for every column
    covered = pd.concat([wide[[f"RCA/{column}", f"PNLG/{column}"]].notna().any(axis=1)
                         for column in columns], axis=1).all(axis=1)
    by_language = wide[covered].groupby(["task", "language"], sort=False)[metrics].mean(
        ).reset_index()
    overall = by_language.groupby("task", sort=False)[metrics].mean().reset_index()
    overall["language"] = "overall"
    table = pd.concat([by_language, overall], ignore_index=True)
    rows = []
    for language in dict.fromkeys(table["language"]):
        row: dict[str, Any] = {"language": language}
        for metric in ("RCA", "PNLG"):
            for task in TASK_TITLES:
                match = table[(table["language"] == language) & (table["task"] == task)]
                for column in columns:
                    value = float(match[f"{metric}/{column}"].iloc[0]) if len(match) else (
                        float("nan"))
                    row[f"{metric}/{task}/{column}"] = value * (100.0 if metric == "RCA" else 1)
        rows.append(row)
    numbers = pd.DataFrame(rows)
    baseline = "Baseline" if "Baseline" in columns else None
    if baseline:
        for metric in ("RCA", "PNLG"):
            for task in TASK_TITLES:
                for column in columns:
                    if column != baseline and f"{metric}/{task}/{column}" in numbers:
                        value = numbers[f"{metric}/{task}/{column}"]
                        base = numbers[f"{metric}/{task}/{baseline}"]
                        if metric == "PNLG":  # signed: the change in absolute terms
                            numbers[f"{metric}/{task}/{column} Δ"] = value - base
                        else:
                            numbers[f"{metric}/{task}/{column} rel"] = [
                                relative_change(v, b) for v, b in zip(value, base)]
    numbers = numbers.dropna(axis=1, how="all")
    display = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize()}
        for metric, arrow in (("RCA", "↑"), ("PNLG", "↓")):
            for task in TASK_TITLES:
                for column in columns:
                    key = f"{metric}/{task}/{column}"
                    if key not in row:
                        continue
                    value = row[key]
                    text = "–" if math.isnan(value) else (
                        f"{value:.1f}" if metric == "RCA" else f"{value:.3f}")
                    text += _fmt_relative(row[f"{key} rel"]) if f"{key} rel" in row else ""
                    if f"{key} Δ" in row:
                        text += _fmt_delta(row[f"{key} Δ"], lambda v: f"{v:.3f}")
                    shown[f"{metric} {arrow} · {TASK_TITLES[task]} · {column}"] = text
        display.append(shown)
    return numbers, pd.DataFrame(display)


# --------------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------------


def write_results(result: EvaluationResult, out: str | Path, config: EvalConfig,
                  settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write instance rows, summaries, tables 1/2/3/5 (CSV numbers + Markdown layout), the
    stability view and ``settings.json`` (``run_info``) into ``out``; all atomically."""
    out = Path(out)
    files: dict[str, Path] = {}

    def table(name: str, numbers: pd.DataFrame, display: pd.DataFrame | None = None) -> None:
        files[name] = write_table(out / f"{name}.csv", numbers)
        if display is not None:  # text cells kept as written ("3.00", not 3)
            files[f"{name}_md"] = write_text(out / f"{name}.md", markdown(display))

    table("mcq_instances", result.mcq)
    if result.open is not None and not result.open.empty:
        table("open_instances", result.open)
    if not result.scores.empty:
        table("scores", result.scores)
    if not result.gaps.empty:
        table("gaps", result.gaps)
    table("table1_mcq", *table_scores(result.mcq, config, task="mcq"))
    if result.open is not None and not result.open.empty:
        table("table2_open", *table_scores(result.open, config, task="open"))
    if not result.gaps_long.empty:
        table("gap_by_country", result.gaps_long)
        table("table5_gap_by_country", *table_gap_by_country(result.gaps_long))
        table("table5_gap_by_country_per_instance",
              *table_gap_by_country(result.gaps_long, variant="instance"))
        table("table3_gap_by_language", *table_gap_by_language(result.gaps_long))
        table("table3_gap_by_language_per_instance",
              *table_gap_by_language(result.gaps_long, variant="instance"))
    if result.stability is not None and not result.stability.empty:
        table("stability", result.stability)
    by_position = accuracy_by_position(result.mcq)
    if not by_position.empty:
        table("mcq_by_position", by_position)
    differences = paired_differences(result.mcq, config=config) if not result.mcq.empty else (
        pd.DataFrame())
    if not differences.empty:
        table("differences", differences)
    files["settings"] = write_json(out / "settings.json", run_info(
        {**settings, "config": asdict(config), "files": {k: str(v) for k, v in files.items()}}))
    result.files = files
    return files


def markdown(display: pd.DataFrame) -> str:
    """A display table as Markdown, its text cells kept verbatim (tabulate would reparse "3.00")."""
    return display.to_markdown(index=False, disable_numparse=True) + "\n"


def format_summary(result: EvaluationResult) -> str:
    """Accuracy per setting with RCA and PNLG, one line per condition and country."""
    lines = []
    for task, frame in result.scores.groupby("task", sort=False):
        unit = "accuracy" if task == "mcq" else "judge score /10"
        lines.append(f"{TASK_TITLES.get(task, task)} ({unit}; 95% bootstrap CI):")
        gaps = result.gaps[result.gaps["task"] == task] if not result.gaps.empty else None
        for (condition, country), group in frame.groupby(["condition", "country"], sort=False):
            parts = []
            for _, row in group.iterrows():
                scale = 100.0 if task == "mcq" else 10.0
                unit_suffix = "%" if task == "mcq" else ""
                text = (f"{row['setting']} {row['score'] * scale:.1f}{unit_suffix} "
                        f"[{row['ci_low'] * scale:.1f}, {row['ci_high'] * scale:.1f}]")
                extra = []
                if row.get("unparsed"):
                    extra.append(f"{row['unparsed']} unparsed")
                if row.get("unscored"):
                    extra.append(f"{row['unscored']} unscored")
                if extra:
                    text += f" ({', '.join(extra)})"
                parts.append(text)
            line = f"  {display_country(country):12s} {condition:28s} " + "  ".join(parts)
            if gaps is not None and len(gaps):
                match = gaps[(gaps["condition"] == condition) & (gaps["country"] == country)]
                if len(match):
                    gap = match.iloc[0]
                    line += (f"  | RCA {gap['rca'] * 100:.1f}% (per instance "
                             f"{gap['rca_instance'] * 100:.1f}%)  PNLG {gap['pnlg']:.3f} "
                             f"(per instance {gap['pnlg_instance']:.3f})")
            lines.append(line)
    return "\n".join(lines)
