"""The study a sweep answers, as tables, figures and a short Markdown report (no model, only the
files ``gather`` wrote): does a method converge faster at its best learning rate (validation
loss against step, steps to each loss threshold with CIs over seeds), does it score higher on
the test questions (mean over seeds with a Student-t CI; the paired bootstrap over questions is
``differences.csv``), and is it stable across seeds (their spread). The paper's figure 2 (loss
curves), figure 5 (scores and their spread) and tables 1 (MCQ accuracy) and 3 (RCA and PNLG)
come out of :func:`write_report`; ``python -m yapo_interp.sweep --report-only`` redraws them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from yapo_interp.figures import (at_selection, loss_curves_figure, lr_sensitivity_figure,
                                 seed_scores_figure)
from yapo_interp.io import write_table, write_text
from yapo_interp.metrics import (first_step_below, max_rebound, mean_ci_over_seeds,
                                 pnlg_aggregate, rca_aggregate, steps_to_threshold_ci)
from yapo_interp.style import save_figure
from yapo_interp.sweep.gather import describe_lambda, unhelpful_steering
from yapo_interp.sweep.grid import BASELINE_METHOD, MEAN_METHODS

# Validation-loss thresholds for steps-to-threshold: the DPO loss starts at ln 2 ≈ 0.693 and
# the paper's figure 2 uses 0.1; a small model may never get there, so the ladder goes down
# from 0.6 and a "never" is reported as such.
THRESHOLDS = (0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
SCORE_METRICS = ("accuracy", "margin", "p_correct")
UNIT_SCORES = ("accuracy", "p_correct", "acc_localized", "acc_nonlocalized", "rca")  # in [0, 1]


def _bounds(score: str) -> tuple[float, float] | None:
    """The range ``score`` can take, which its interval over seeds is clipped to."""
    return (0.0, 1.0) if score in UNIT_SCORES else None


def convergence_by_threshold(curves: pd.DataFrame, selection: dict[str, Any],
                             thresholds: tuple[float, ...] = THRESHOLDS) -> pd.DataFrame:
    """Steps until the validation loss first reaches each threshold, per method, lr, country
    and setting: the median over seeds with a bootstrap CI over seeds (``inf``: never reached;
    ``metrics.steps_to_threshold_ci``), and whether the lr is the method's selected one."""
    evals = curves.dropna(subset=["eval_loss"]) if "eval_loss" in curves else curves.iloc[:0]
    rows = []
    for (method, lr, country, setting), group in evals.groupby(
            ["method", "lr", "country", "setting"], sort=True):
        selected = selection.get("methods", {}).get(method, {}).get("lr") == lr
        for threshold in thresholds:
            per_seed = [first_step_below(run["step"], run["eval_loss"], threshold)
                        for _, run in group.groupby("trial")]
            interval = steps_to_threshold_ci(per_seed)
            rows.append({"method": method, "lr": lr, "country": country, "setting": setting,
                         "selected_lr": selected, "threshold": threshold,
                         "median_steps": interval.value, "ci_low": interval.low,
                         "ci_high": interval.high, "n_seeds": interval.n,
                         "n_reached": sum(step < math.inf for step in per_seed)})
    return pd.DataFrame(rows)


def seed_scores(table: pd.DataFrame, selection: dict[str, Any], *, split: str = "test"
                ) -> pd.DataFrame:
    """Each method at its selected lr and λ on ``split``: per country, training setting and
    evaluated form, the mean over seeds of accuracy, margin and p_correct with a Student-t CI
    over seeds, their standard deviation over seeds (stability) and the per-seed values."""
    rows = at_selection(table[table["split"] == split], selection)
    out = []
    keys = ["method", "country", "setting", "eval_setting"]
    for values, group in rows.groupby(keys, sort=True):
        record = dict(zip(keys, values))
        record.update(lr=group["lr"].iloc[0], multiplier=float(group["multiplier"].iloc[0]),
                      n_questions=int(group["n_questions"].iloc[0]))
        for metric in SCORE_METRICS:
            per_seed = group.sort_values("seed")[metric].to_numpy(float)
            interval = mean_ci_over_seeds(per_seed, bounds=_bounds(metric))
            record.update({metric: interval.value, f"{metric}_ci_low": interval.low,
                           f"{metric}_ci_high": interval.high,
                           f"{metric}_seed_sd": float(pd.Series(per_seed).std(ddof=1)),
                           f"{metric}_per_seed": json.dumps([round(v, 4) for v in per_seed])})
        record["n_seeds"] = int(group["seed"].nunique())
        out.append(record)
    return pd.DataFrame(out)


def table1_mcq(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 1's shape: test MCQ accuracy per country and evaluated form (rows) and method
    (columns, ``mean [low, high]`` over seeds), for each training setting; the baseline is
    the same unsteered model in every setting."""
    if scores.empty:
        return pd.DataFrame()
    cells = scores.assign(cell=[
        _interval(row.accuracy, row.accuracy_ci_low, row.accuracy_ci_high, ".1%")
        for row in scores.itertuples()])
    base = cells[cells["method"] == BASELINE_METHOD]
    trained = cells[cells["method"] != BASELINE_METHOD]
    settings = sorted(trained["setting"].unique()) or ["both"]
    base = pd.concat([base.assign(setting=setting) for setting in settings])
    wide = pd.concat([base, trained]).pivot_table(
        index=["setting", "country", "eval_setting"], columns="method", values="cell",
        aggfunc="first")
    order = [m for m in (BASELINE_METHOD, *MEAN_METHODS, "bipo", "sae-dense", "yapo")
             if m in wide.columns]
    return wide[order].reset_index().rename(columns={"setting": "trained on",
                                                     "eval_setting": "evaluated on"})


def table3_rca_pnlg(instances: pd.DataFrame, selection: dict[str, Any], *,
                    split: str = "test") -> pd.DataFrame:
    """Table 3's numbers: RCA and PNLG (on aggregate accuracies, as the paper's tables) of
    each method at its selected lr and λ, per country and training setting, per seed, then
    the mean over seeds with a Student-t CI."""
    rows = at_selection(instances[instances["split"] == split], selection)
    per_seed = []
    for (method, country, setting, seed), group in rows.groupby(
            ["method", "country", "setting", "seed"], sort=True):
        accuracy = group.groupby("form")["score"].mean()
        if not {"localized", "nonlocalized"} <= set(accuracy.index):
            continue
        loc, non = float(accuracy["localized"]), float(accuracy["nonlocalized"])
        per_seed.append({"method": method, "country": country, "setting": setting,
                         "seed": seed, "acc_localized": loc, "acc_nonlocalized": non,
                         "rca": rca_aggregate(loc, non), "pnlg": pnlg_aggregate(loc, non)})
    if not per_seed:
        return pd.DataFrame()
    frame = pd.DataFrame(per_seed)
    out = []
    for (method, country, setting), group in frame.groupby(["method", "country", "setting"]):
        record = {"method": method, "country": country, "setting": setting,
                  "n_seeds": len(group)}
        for column in ("acc_localized", "acc_nonlocalized", "rca", "pnlg"):
            interval = mean_ci_over_seeds(group[column], bounds=_bounds(column))
            record.update({column: interval.value, f"{column}_ci_low": interval.low,
                           f"{column}_ci_high": interval.high})
        out.append(record)
    return pd.DataFrame(out)


def trial_summary(table: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per trained trial: its settings, final and best validation loss, the largest
    rebound of its validation loss above its best so far (``metrics.max_rebound``, from
    ``curves``), steps, perturbation and vector norm (the figure of validation loss against lr
    reads it)."""
    columns = ["trial", "method", "country", "setting", "lr", "seed", "final_eval_loss",
               "best_eval_loss", "eval_loss_rebound", "steps", "final_perturbation",
               "vector_norm", "seconds"]
    trials = table.drop_duplicates("trial")
    trials = trials[~trials["method"].isin([BASELINE_METHOD])]
    if curves is not None and "eval_loss" in curves:
        evals = curves.dropna(subset=["eval_loss"])
        rebound = {trial: max_rebound(run["step"], run["eval_loss"])
                   for trial, run in evals.groupby("trial")}
        trials = trials.assign(eval_loss_rebound=trials["trial"].map(rebound))
    return trials[[c for c in columns if c in trials]].reset_index(drop=True)


def _interval(value: float, low: float, high: float, spec: str = "+.3f") -> str:
    """``value [low, high]`` in ``spec``; the value alone when there is no interval (one seed,
    or a method with no seed at all: its bounds are NaN)."""
    if math.isnan(low) or math.isnan(high):
        return f"{value:{spec}}"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def report_markdown(selection: dict[str, Any], trials: pd.DataFrame,
                    convergence: pd.DataFrame, scores: pd.DataFrame,
                    differences: pd.DataFrame | None, rca: pd.DataFrame) -> str:
    """The report as Markdown: what was run, what was selected on validation, convergence,
    test scores over seeds and the paired differences, each with its interval."""
    lines = ["# Sweep report", "",
             "Generated by `yapo_interp.sweep.report` from this folder's tables; every "
             "interval is 95 %. A number without an interval rests on one seed (or, for the "
             "baseline, CAA and SAS, on no seed at all: they are deterministic).", "",
             "## Trials", "",
             "Validation losses are means over seeds; `max_rebound` is the largest rise of a "
             "trial's validation loss above its best value so far, the worst over seeds (0: it "
             "never went back up; a spike means the lr is near the edge of stability).", ""]
    rebound = {"max_rebound": ("eval_loss_rebound", "max")} \
        if "eval_loss_rebound" in trials else {}
    counts = trials.groupby(["method", "country", "setting", "lr"]).agg(
        seeds=("seed", "nunique"), final_validation_loss=("final_eval_loss", "mean"),
        best_validation_loss=("best_eval_loss", "mean"), **rebound,
        minutes=("seconds", lambda s: round(float(s.mean()) / 60, 1))).reset_index()
    lines += [counts.to_markdown(index=False, floatfmt=".3f"), "", "## Selection (validation "
              "questions only)", ""]
    unhelpful = unhelpful_steering(selection)
    metric = selection.get("metric", "margin")
    for method, chosen in selection.get("methods", {}).items():
        if method == BASELINE_METHOD:
            continue
        seeds = chosen.get("n_seeds_by_lr", {})
        by_lr = ", ".join(
            f"{lr}: {loss:.3f}" + (f" ({seeds[lr]} seed{'s' * (seeds[lr] > 1)})"
                                   if lr in seeds else "")
            for lr, loss in chosen.get("validation_loss_by_lr", {}).items())
        lines.append(f"- **{method}**: lr {chosen.get('lr')}, {describe_lambda(chosen)}"
                     + (f"; mean final validation loss by lr on "
                        f"{', '.join(chosen.get('lr_compared_on', []))} ({by_lr})"
                        if by_lr else "")
                     + (f" — {chosen['note']}" if "note" in chosen else ""))
        if unhelpful.get(method):
            lines.append("  - no λ beats the unsteered model on validation: " + ", ".join(
                f"{group} (validation {metric} {steered:+.3f}, unsteered {unsteered:+.3f})"
                for group, (steered, unsteered) in unhelpful[method].items()))
    lines += ["", "## Convergence at each method's selected lr", "",
              "Median steps (over seeds) until the validation loss first reaches the "
              "threshold, bootstrap CI over seeds; `inf` = not reached within the run.", ""]
    chosen_rows = convergence[convergence["selected_lr"]] if not convergence.empty else \
        convergence
    if not chosen_rows.empty:
        wide = chosen_rows.assign(cell=[
            f"{_interval(r.median_steps, r.ci_low, r.ci_high, 'g')} ({r.n_reached}/{r.n_seeds})"
            for r in chosen_rows.itertuples()]).pivot_table(
            index=["country", "setting", "threshold"], columns="method", values="cell",
            aggfunc="first").sort_index(level=2, ascending=False)
        lines += [wide.reset_index().to_markdown(index=False), ""]
    lines += ["## Test scores at the selected lr and λ (mean over seeds, t-CI over seeds)", ""]
    if not scores.empty:
        own = scores[(scores["eval_setting"] == "both")]
        view = own.assign(
            accuracy=[_interval(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high, ".1%")
                      for r in own.itertuples()],
            margin=[_interval(r.margin, r.margin_ci_low, r.margin_ci_high)
                    for r in own.itertuples()],
            margin_seed_sd=own["margin_seed_sd"].round(3))[
            ["method", "country", "setting", "lr", "multiplier", "n_seeds", "n_questions",
             "accuracy", "margin", "margin_seed_sd"]]
        lines += [view.to_markdown(index=False), ""]
    if differences is not None and not differences.empty:
        lines += ["## Paired differences on the test questions (bootstrap over questions)",
                  "", "Per instance, each method's score is averaged over its seeds first.", ""]
        shown = differences[differences["metric"].isin(["margin", "accuracy"])]
        if shown["country"].nunique() == 2:  # one country and "all": the same numbers twice
            shown = shown[shown["country"] != "all"]
        view = shown.assign(difference=[_interval(r.difference, r.ci_low, r.ci_high)
                                        for r in shown.itertuples()])[
            ["country", "setting", "metric", "method_a", "method_b", "difference",
             "n_questions"]]
        lines += [view.to_markdown(index=False), ""]
    if not rca.empty:
        lines += ["## RCA and PNLG (test, aggregate accuracies, mean over seeds)", ""]
        view = rca.assign(
            rca=[_interval(r.rca, r.rca_ci_low, r.rca_ci_high) for r in rca.itertuples()],
            pnlg=[_interval(r.pnlg, r.pnlg_ci_low, r.pnlg_ci_high)
                  for r in rca.itertuples()])[
            ["method", "country", "setting", "n_seeds", "acc_localized", "acc_nonlocalized",
             "rca", "pnlg"]]
        lines += [view.to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)


def write_report(out: str | Path, table: pd.DataFrame, curves: pd.DataFrame | None,
                 instances: pd.DataFrame | None, selection: dict[str, Any],
                 differences: pd.DataFrame | None, *,
                 image_formats: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write the report's tables (``convergence_by_threshold.csv``, ``seed_scores.csv``,
    ``table1_mcq.csv``, ``table3_rca_pnlg.csv``, ``trials.csv``), figures
    (``figures/figure2_loss_curves``, ``figures/lr_sensitivity``,
    ``figures/figure5_test_scores``) and ``report.md`` into ``out``; return the files."""
    out = Path(out)
    files: dict[str, Path] = {}
    if table.empty:
        return files
    trials = trial_summary(table, curves)
    convergence = convergence_by_threshold(curves, selection) if curves is not None else \
        pd.DataFrame()
    scores = seed_scores(table, selection)
    rca = table3_rca_pnlg(instances, selection) if instances is not None else pd.DataFrame()
    for name, frame in (("trials", trials), ("convergence_by_threshold", convergence),
                        ("seed_scores", scores), ("table1_mcq", table1_mcq(scores)),
                        ("table3_rca_pnlg", rca)):
        if not frame.empty:
            files[name] = write_table(out / f"{name}.csv", frame)
    figures = {}
    if curves is not None and "eval_loss" in curves:
        figures["figure2_loss_curves"] = loss_curves_figure(curves, selection)
    if not trials.empty:
        figures["lr_sensitivity"] = lr_sensitivity_figure(trials, selection)
    if not scores.empty:
        figures["figure5_test_scores"] = seed_scores_figure(scores)
    for name, figure in figures.items():
        written = save_figure(figure, out / "figures" / f"{name}.html",
                              image_formats=image_formats)
        files[name] = written[0]
    files["report"] = write_text(out / "report.md", report_markdown(
        selection, trials, convergence, scores, differences, rca))
    return files
