"""Gathering and selecting: the finished trials as one tidy table (with curves, instances,
convergence and failures), each method's learning rate and λ chosen on the validation split, and
the method-minus-method differences on the test questions at the chosen values."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from yapo_interp.errors import UserError
from yapo_interp.figures import at_selection, selected_multiplier, selection_groups
from yapo_interp.io import read_jsonl, write_table
from yapo_interp.metrics import first_step_below, paired_difference_ci, steps_to_threshold_ci
from yapo_interp.sweep.grid import (BASELINE_METHOD, MEAN_METHODS, SELECT_METRICS,
                                    TrialSpec)
from yapo_interp.sweep.trial import finished_result


def gather(out: str | Path, trials: Sequence[TrialSpec], *,
           failed: Sequence[dict[str, Any]] = (), loss_threshold: float = 0.1
           ) -> tuple[pd.DataFrame, dict[str, Path]]:
    """One tidy table of the finished trials (a row per trial × split × λ × form, with every
    setting), written as parquet and CSV with the curves, instances, convergence and failures."""
    out = Path(out)
    rows, curves, instances = [], [], []
    for spec in trials:
        trial_dir = out / "trials" / spec.name
        result = finished_result(spec, trial_dir)
        if result is None:
            continue
        settings = {**asdict(spec), "multipliers": json.dumps(list(spec.multipliers)),
                    "trial": spec.name}
        log = trial_dir / "train" / "log.jsonl"
        records = read_jsonl(log) if log.is_file() else []
        evals = [r for r in records if "eval_loss" in r]
        reached = first_step_below([r["step"] for r in evals], [r["eval_loss"] for r in evals],
                                   loss_threshold) if evals else math.nan
        trained = {**result.get("setup", {}), **result["trained"],
                   "steps_to_threshold": reached,
                   "loss_threshold": loss_threshold, "seconds": result["seconds"]}
        in_grid = set(spec.multipliers)  # a trial scored at more λ reports the grid's
        baseline = spec.method == BASELINE_METHOD
        for row in result["rows"]:
            if baseline or row["multiplier"] in in_grid:
                rows.append({**{k: v for k, v in settings.items() if k != "multipliers"},
                             **row, **trained, "multipliers": settings["multipliers"]})
        # a log record's "lr" is the scheduled lr of that step: kept as "step_lr", so "lr"
        # stays the trial's (peak) learning rate on every row
        curves += [{"trial": spec.name, "method": spec.method, "country": spec.country,
                    "setting": spec.setting, "seed": spec.seed,
                    **{("step_lr" if key == "lr" else key): value
                       for key, value in record.items()}, "lr": spec.lr}
                   for record in records]
        if (trial_dir / "instances.parquet").is_file():
            scored = pd.read_parquet(trial_dir / "instances.parquet")
            if not baseline:
                scored = scored[scored["multiplier"].isin(in_grid)]
            instances.append(scored.assign(trial=spec.name, multipliers=settings["multipliers"]))
    table = pd.DataFrame(rows)
    files = {"results": write_table(out / "results.parquet", table),
             "results_csv": write_table(out / "results.csv", table)}
    if curves:
        frame = pd.DataFrame(curves)
        if "direction" in frame:  # an int, or a list with gradient accumulation
            frame["direction"] = frame["direction"].map(json.dumps)
        files["curves"] = write_table(out / "curves.parquet", frame)
    if instances:
        files["instances"] = write_table(out / "instances.parquet",
                                         pd.concat(instances, ignore_index=True))
    failures = pd.DataFrame([{**item, "multipliers": json.dumps(list(item["multipliers"]))}
                             for item in failed])
    files["failures"] = write_table(out / "failures.csv", failures if failed else pd.DataFrame(
        columns=["name", "method", "country", "setting", "lr", "seed", "error"]))
    convergence = convergence_table(table)
    if not convergence.empty:
        files["convergence"] = write_table(out / "convergence.csv", convergence)
    return table, files


def convergence_table(table: pd.DataFrame) -> pd.DataFrame:
    """Steps to the validation-loss threshold per (method, lr, country, setting): the median
    over seeds with a bootstrap CI over seeds (``inf``: never reached)."""
    if table.empty or "steps_to_threshold" not in table:
        return pd.DataFrame()
    trials = table.drop_duplicates("trial").dropna(subset=["steps_to_threshold"])
    rows = []
    for keys, group in trials.groupby(["method", "lr", "country", "setting"], dropna=False,
                                      sort=True):
        interval = steps_to_threshold_ci(group["steps_to_threshold"].to_numpy(float))
        rows.append({**dict(zip(["method", "lr", "country", "setting"], keys)),
                     "loss_threshold": float(group["loss_threshold"].iloc[0]),
                     "median_steps": interval.value, "ci_low": interval.low,
                     "ci_high": interval.high, "n_seeds": interval.n,
                     "n_reached": int((group["steps_to_threshold"] < math.inf).sum())})
    return pd.DataFrame(rows)


def losses_by_lr(trials: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One method's trials (one row each) → per lr its mean final validation loss and seed
    count, on the (country, setting) groups that every lr was run on, and those groups.

    Losses differ more between countries and settings than between lrs, so a pooled mean would
    rank an lr run on an easy group above one also run on a hard one. Each lr's loss is the mean
    over the shared groups of the mean over seeds, and its seed count the fewest any shared
    group has. With no group shared by every lr, all groups are pooled (and listed)."""
    frame = trials.assign(group=selection_groups(trials))
    groups_by_lr = frame.groupby("lr")["group"].agg(set)
    shared = set.intersection(*groups_by_lr) if len(groups_by_lr) else set()
    if shared:
        frame = frame[frame["group"].isin(shared)]
    per_group = frame.groupby(["lr", "group"]).agg(
        validation_loss=("final_eval_loss", "mean"), n_seeds=("seed", "nunique"))
    by_lr = per_group.groupby(level="lr").agg(validation_loss=("validation_loss", "mean"),
                                              n_seeds=("n_seeds", "min"))
    return by_lr, sorted(shared or set(frame["group"]))


def select_settings(table: pd.DataFrame, *, metric: str = "margin", min_seeds: int = 3
                    ) -> dict[str, Any]:
    """Per method: the lr with the lowest mean final validation loss over seeds, compared on the
    (country, setting) groups every lr was run on (:func:`losses_by_lr`, listed in
    ``lr_compared_on``), then, at that lr, the λ with the highest mean validation ``metric`` on
    the trial's own setting: per (country, setting) in ``multiplier_by_group`` (each has its
    own vector; the figures, tables and differences use these), and pooled in ``multiplier``
    (for a study that takes one λ per method). Only validation data is read: test rows never
    choose.

    The lr is chosen among the lrs run with at least ``min_seeds`` seeds when there are any, so
    a screen-then-confirm sweep (every lr on one seed, then more seeds at the lr the screen
    picked) is read as such: the minimum of several one-seed means is biased low (the winner's
    curse) and must not beat a mean over ``min_seeds`` seeds. With no lr at ``min_seeds`` seeds
    every lr competes and the choice carries a ``note``."""
    if metric not in SELECT_METRICS:
        raise UserError(f"unknown selection metric {metric!r}; use {', '.join(SELECT_METRICS)}")
    selection: dict[str, Any] = {"metric": metric, "min_seeds": min_seeds, "methods": {}}
    if table.empty:
        return selection
    for method, rows in table.groupby("method", sort=True):
        if method == BASELINE_METHOD:  # nothing to choose; kept for the differences against it
            # and, per (country, setting), the validation score every steered λ must beat
            validation = rows[rows["split"] == "validation"]
            validation = validation.assign(setting=validation["eval_setting"])
            by_group = validation.groupby(selection_groups(validation))[metric].mean()
            selection["methods"][method] = {
                "lr": None, "multiplier": 0.0, f"validation_{metric}_by_group": {
                    group: float(value) for group, value in by_group.items()}}
            continue
        trials = rows.drop_duplicates("trial")
        chosen: dict[str, Any] = {}
        at_lr = rows
        if method in MEAN_METHODS:  # nothing to choose: no learning rate
            chosen.update(lr=None, validation_loss=float(trials["final_eval_loss"].mean()))
        else:
            by_lr, compared_on = losses_by_lr(trials)
            finite = by_lr.dropna(subset=["validation_loss"])
            if (finite["n_seeds"] >= min_seeds).any():
                finite = finite[finite["n_seeds"] >= min_seeds]
            if not finite.empty:
                lr = float(finite["validation_loss"].idxmin())
                chosen.update(lr=lr, validation_loss=float(finite.loc[lr, "validation_loss"]),
                              n_seeds=int(finite.loc[lr, "n_seeds"]),
                              validation_loss_by_lr={f"{key:g}": float(value) for key, value
                                                     in by_lr["validation_loss"].items()},
                              n_seeds_by_lr={f"{key:g}": int(value) for key, value
                                             in by_lr["n_seeds"].items()},
                              lr_compared_on=compared_on)
                at_lr = rows[rows["lr"] == lr]
        validation = at_lr[(at_lr["split"] == "validation")
                           & (at_lr["eval_setting"] == at_lr["setting"])]
        if not validation.empty:
            by_multiplier = validation.groupby("multiplier")[metric].mean()
            chosen.update(multiplier=float(by_multiplier.idxmax()),
                          **{f"validation_{metric}": float(by_multiplier.max()),
                             f"validation_{metric}_by_multiplier": {
                                 f"{key:g}": float(value) for key, value in
                                 by_multiplier.items()}})
            # each (country, setting) has its own vector, so its own λ, on its own questions
            by_group = validation.assign(group=selection_groups(validation)).groupby(
                ["group", "multiplier"])[metric].mean()
            groups = {group: values.droplevel("group")
                      for group, values in by_group.groupby(level="group", sort=True)}
            chosen["multiplier_by_group"] = {group: float(values.idxmax())
                                             for group, values in groups.items()}
            chosen[f"validation_{metric}_by_group"] = {group: float(values.max())
                                                       for group, values in groups.items()}
        if method not in MEAN_METHODS and chosen.get("n_seeds", 0) < min_seeds:
            chosen["note"] = (f"only {chosen.get('n_seeds', 0)} seed(s) at the chosen lr; "
                              f"use at least {min_seeds} (--seeds) before relying on it")
        selection["methods"][method] = chosen
    return selection


def unhelpful_steering(selection: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method, the (country, setting) groups where even the selected λ does not beat the
    unsteered model on the validation questions: ``{group: (steered, unsteered)}``. The λ grid
    holds no 0, so the selection returns its best steered λ; this says when that best is
    worse than not steering (empty without a baseline trial)."""
    metric = selection.get("metric", "margin")
    methods = selection.get("methods", {})
    unsteered = methods.get(BASELINE_METHOD, {}).get(f"validation_{metric}_by_group", {})
    return {method: {group: (value, unsteered[group]) for group, value in
                     chosen.get(f"validation_{metric}_by_group", {}).items()
                     if group in unsteered and value <= unsteered[group]}
            for method, chosen in methods.items() if method != BASELINE_METHOD}


def describe_lambda(chosen: dict[str, Any]) -> str:
    """``λ 4.0``, or ``λ 4.0 (egypt/localized 4, nepal/localized 1)`` when the groups chose
    differently: the pooled λ, then each (country, setting)'s own."""
    groups = chosen.get("multiplier_by_group") or {}
    text = f"λ {chosen.get('multiplier')}"
    if len(set(groups.values())) > 1:
        text += " (" + ", ".join(f"{group} {value:g}" for group, value in groups.items()) + ")"
    return text


def read_selection(path: str | Path) -> dict[str, dict[str, float | None]]:
    """``{method: {"lr": ..., "multiplier": ...}}`` from a sweep's ``selection.json`` (or its
    folder), for a study to train and evaluate each method at its selected values; a missing or
    unreadable file is a one-line ``UserError``."""
    path = Path(path)
    if path.is_dir():
        path = path / "selection.json"
    try:
        selection = json.loads(path.read_text(encoding="utf-8"))
        methods = selection["methods"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a sweep selection ({type(error).__name__}: {error}); run "
                        "python -m yapo_interp.sweep first and pass its --out folder.") from None
    return {method: {"lr": chosen.get("lr"), "multiplier": chosen.get("multiplier")}
            for method, chosen in methods.items()}


DIFFERENCE_METRICS = {"margin": "margin", "p_correct": "p_correct", "accuracy": "score"}


def method_differences(instances: pd.DataFrame, selection: dict[str, Any], *,
                       split: str = "test", n_resamples: int = 2000, seed: int = 0
                       ) -> pd.DataFrame:
    """Every method-minus-method difference on ``split`` with each method at its selected lr
    and λ: per instance (item and form) the metric is averaged over seeds, then
    ``metrics.paired_difference_ci`` pairs the two methods on the instances both scored and
    resamples questions. One row per (country — and ``all``, countries pooled —, training
    setting, metric, method pair)."""
    chosen = {method: picked for method, picked in selection.get("methods", {}).items()
              if picked.get("multiplier") is not None}  # a method with no λ was not scored
    keys = ["country", "setting", "item_id", "form"]
    selected = at_selection(instances[instances["split"] == split], {"methods": chosen})
    per_method = {method: rows.groupby(keys + ["question_id"], as_index=False)[
                      list(DIFFERENCE_METRICS.values())].mean()
                  for method, rows in selected.groupby("method", sort=True)}
    if BASELINE_METHOD in per_method:  # trained on no setting: compared within each one
        settings = sorted({setting for method, rows in per_method.items()
                           if method != BASELINE_METHOD for setting in rows["setting"]})
        base = per_method.pop(BASELINE_METHOD)
        if settings:
            per_method[BASELINE_METHOD] = pd.concat(
                [base.assign(setting=setting) for setting in settings], ignore_index=True)
    results = []
    methods = sorted(per_method, key=lambda method: (method == BASELINE_METHOD, method))
    for index, first in enumerate(methods):
        for second in methods[index + 1:]:
            joined = per_method[first].merge(per_method[second], on=keys + ["question_id"],
                                             suffixes=("_a", "_b"))
            groups = [((country, setting), part) for (country, setting), part in
                      joined.groupby(["country", "setting"], sort=True)]
            groups += [(("all", setting), part) for setting, part in
                       joined.groupby("setting", sort=True)]
            for (country, setting), part in groups:
                clusters = part["country"].astype(str) + "/" + part["question_id"].astype(str)
                for name, column in DIFFERENCE_METRICS.items():
                    pair = part[[f"{column}_a", f"{column}_b"]].dropna()
                    if pair.empty:
                        continue
                    interval = paired_difference_ci(
                        pair[f"{column}_a"], pair[f"{column}_b"], clusters[pair.index],
                        n_resamples=n_resamples, seed=seed)
                    results.append({
                        "split": split, "country": country, "setting": setting,
                        "metric": name, "method_a": first, "method_b": second,
                        "difference": interval.value, "ci_low": interval.low,
                        "ci_high": interval.high, "n_questions": interval.n,
                        "n_instances": len(pair),
                        "lr_a": chosen[first].get("lr"), "lr_b": chosen[second].get("lr"),
                        "multiplier_a": selected_multiplier(chosen[first], country, setting),
                        "multiplier_b": selected_multiplier(chosen[second], country,
                                                            setting)})
    return pd.DataFrame(results)
