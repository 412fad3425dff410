"""From instance rows to numbers: accuracy per setting with bootstrap CIs, RCA and PNLG per
condition and country (aggregate and per instance), paired differences between conditions, and
the :class:`EvaluationResult` that holds them all."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from yapo_interp.data import FORMS
from yapo_interp.data.countries import LANGUAGE_GROUPS
from yapo_interp.evaluate.conditions import METHOD_ORDER, EvalConfig
from yapo_interp.metrics import (accuracy, bootstrap_ci, paired_difference_ci, pnlg,
                                 pnlg_aggregate, rca, rca_aggregate)


# --------------------------------------------------------------------------------------------
# Summaries: accuracy per setting, RCA and PNLG per condition and country
# --------------------------------------------------------------------------------------------


def setting_rows(frame: pd.DataFrame, setting: str) -> pd.DataFrame:
    """The instance rows a setting reports: one form, or both for ``both``."""
    return frame if setting == "both" else frame[frame["form"] == setting]


def paired_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """``p_loc`` and ``p_non`` side by side, one row per (question_id, country) that has both
    forms scored (NaN scores, i.e. judge failures, break a pair)."""
    keys = ["question_id", "country"]
    loc = frame[frame["form"] == "localized"].set_index(keys)["score"].rename("p_loc")
    non = frame[frame["form"] == "nonlocalized"].set_index(keys)["score"].rename("p_non")
    for side in (loc, non):
        if side.index.duplicated().any():
            raise ValueError("several scores for the same (question_id, country, form): pass the "
                             "rows of one condition")
    return pd.concat([loc, non], axis=1, join="inner").dropna().reset_index()


def _interval(statistic: Callable[..., float], *arrays: Any, config: EvalConfig
              ) -> tuple[float, float, float]:
    interval = bootstrap_ci(statistic, *arrays, n_resamples=config.n_bootstrap,
                            confidence=config.confidence, seed=config.seed)
    return interval.value, interval.low, interval.high


def gap_metrics(loc_rows: pd.DataFrame, non_rows: pd.DataFrame, config: EvalConfig
                ) -> dict[str, float]:
    """PNLG and RCA from the localized and non-localized instance rows: aggregate (on the mean
    scores, as the paper's tables) and per instance (pairs by question and country), with CIs."""
    nan = float("nan")
    loc_scores = loc_rows["score"].dropna().to_numpy(dtype=float)
    non_scores = non_rows["score"].dropna().to_numpy(dtype=float)
    result = {"acc_loc": nan, "acc_non": nan, "pnlg": nan, "rca": nan, "pnlg_instance": nan,
              "pnlg_instance_low": nan, "pnlg_instance_high": nan, "rca_instance": nan,
              "rca_instance_low": nan, "rca_instance_high": nan, "n_pairs": 0}
    if len(loc_scores) and len(non_scores):
        acc_loc, acc_non = accuracy(loc_scores), accuracy(non_scores)
        result.update(acc_loc=acc_loc, acc_non=acc_non,
                      pnlg=pnlg_aggregate(acc_loc, acc_non, config.alpha, config.eps),
                      rca=rca_aggregate(acc_loc, acc_non, config.eps))
    pairs = paired_scores(pd.concat([loc_rows, non_rows]))
    if len(pairs):
        p_loc, p_non = pairs["p_loc"].to_numpy(float), pairs["p_non"].to_numpy(float)
        value, low, high = _interval(lambda a, b: pnlg(a, b, config.alpha, config.eps),
                                     p_loc, p_non, config=config)
        result.update(pnlg_instance=value, pnlg_instance_low=low, pnlg_instance_high=high)
        value, low, high = _interval(lambda a, b: rca(a, b, config.eps), p_loc, p_non,
                                     config=config)
        result.update(rca_instance=value, rca_instance_low=low, rca_instance_high=high,
                      n_pairs=len(pairs))
    return result


CONDITION_COLUMNS = ["condition", "column", "method", "multiplier", "train_setting", "epoch",
                     "vector"]
POWER_METRICS = ("p_correct", "margin")


def _mean(values: Any) -> float:
    return float(values.mean())


def paired_differences(frame: pd.DataFrame, metrics: Sequence[str] = ("margin", "p_correct",
                                                                      "score"),
                       config: EvalConfig = EvalConfig()) -> pd.DataFrame:
    """Every condition-minus-condition difference of each metric, per country and setting, on
    the instances both conditions scored (same item and form), with a paired bootstrap CI that
    resamples questions (``metrics.paired_difference_ci``). One row per (country, setting,
    metric, condition_a, condition_b): ``difference`` = mean(a) − mean(b), ``ci_low``,
    ``ci_high``, ``n_questions``, ``n_instances``."""
    rows = []
    keys = ["item_id", "form"]
    for (language, country), group in frame.groupby(["language", "country"], sort=False):
        conditions = list(dict.fromkeys(group["condition"]))
        for setting in config.settings:
            in_setting = setting_rows(group, setting)
            for metric in metrics:
                if metric not in in_setting:
                    continue
                for index, first in enumerate(conditions):
                    for second in conditions[index + 1:]:
                        a = in_setting[in_setting["condition"] == first]
                        b = in_setting[in_setting["condition"] == second]
                        joined = a[keys + ["question_id", metric]].merge(
                            b[keys + [metric]], on=keys, suffixes=("_a", "_b")).dropna()
                        if joined.empty:
                            continue
                        interval = paired_difference_ci(
                            joined[f"{metric}_a"], joined[f"{metric}_b"],
                            joined["question_id"].astype(str), n_resamples=config.n_bootstrap,
                            confidence=config.confidence, seed=config.seed)
                        rows.append({"language": language, "country": country,
                                     "setting": setting, "metric": metric,
                                     "condition_a": first, "condition_b": second,
                                     "difference": interval.value, "ci_low": interval.low,
                                     "ci_high": interval.high, "n_questions": interval.n,
                                     "n_instances": len(joined)})
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, config: EvalConfig = EvalConfig()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, gaps)`` per condition and country.

    ``scores``: one row per setting with the mean score (accuracy, or judge total / 10), its
    bootstrap CI, ``n``, ``unscored`` (judge failures, excluded) and ``unparsed`` (boxed answers
    without ``\\boxed{k}``, scored as wrong); for loglik also the accuracy by ``sum`` and by
    ``mean``. ``gaps``: PNLG and RCA (aggregate and per instance) of the condition.
    """
    score_rows, gap_rows = [], []
    for keys, group in frame.groupby(["condition", "language", "country"], sort=False):
        condition, language, country = keys
        described = group.iloc[0][CONDITION_COLUMNS].to_dict()
        for setting in config.settings:
            rows = setting_rows(group, setting)
            scores = rows["score"].dropna().to_numpy(dtype=float)
            record = {**described, "language": language, "country": country,
                      "setting": setting, "n": len(rows),
                      "unscored": int(rows["score"].isna().sum()),
                      "unparsed": int((~rows["parsed"].astype(bool)).sum())
                      if "parsed" in rows else 0}
            if len(scores):
                value, low, high = _interval(accuracy, scores, config=config)
            else:
                value = low = high = float("nan")
            record.update(score=value, ci_low=low, ci_high=high)
            for variant in ("sum", "mean"):
                column = f"correct_{variant}"
                if column in rows and len(rows):
                    record[f"accuracy_{variant}"] = float(rows[column].mean())
            for metric in POWER_METRICS:  # graded scores (log-likelihood MCQ)
                values = rows[metric].dropna().to_numpy(dtype=float) if metric in rows else []
                if len(values):
                    value, low, high = _interval(_mean, values, config=config)
                    record.update({metric: value, f"{metric}_low": low, f"{metric}_high": high})
            score_rows.append(record)
        if set(FORMS) <= set(config.forms):
            gap_rows.append({**described, "language": language, "country": country,
                             **gap_metrics(group[group["form"] == "localized"],
                                           group[group["form"] == "nonlocalized"], config)})
    return pd.DataFrame(score_rows), pd.DataFrame(gap_rows)


# --------------------------------------------------------------------------------------------
# Which condition fills a table cell; RCA and PNLG per country
# --------------------------------------------------------------------------------------------


def column_order(frame: pd.DataFrame) -> list[str]:
    """The table columns (method at multiplier) in the paper's order: baseline, BiPO, YaPO,
    CAA, SAS, other methods; lower multipliers first."""
    described = frame[["column", "method", "multiplier"]].drop_duplicates("column")

    def key(row: pd.Series) -> tuple:
        method = row["method"]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        multiplier = row["multiplier"] if pd.notna(row["multiplier"]) else 0.0
        return rank, method, multiplier

    return [row["column"] for _, row in sorted(described.iterrows(), key=lambda pair: key(
        pair[1]))]


def select_rows(frame: pd.DataFrame, column: str, country: str, setting: str) -> pd.DataFrame:
    """Instance rows of the condition that fills the cell (``column``, ``country``, ``setting``):
    among the conditions of that column evaluated on the country, the one trained on ``setting``
    (else on ``both``, else any), latest epoch first; only the forms of ``setting``."""
    rows = frame[(frame["column"] == column) & (frame["country"] == country)]
    if rows.empty:
        return rows
    candidates = rows[["condition", "train_setting", "epoch"]].drop_duplicates("condition")

    def preference(row: pd.Series) -> tuple:
        trained = row["train_setting"]
        rank = 0 if trained == setting else 1 if trained == "both" else 2
        epoch = row["epoch"] if pd.notna(row["epoch"]) else -1
        return rank, -epoch

    best = min(candidates.itertuples(index=False),
               key=lambda row: preference(pd.Series(row._asdict())))
    return setting_rows(rows[rows["condition"] == best.condition], setting)


def countries_in_order(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (language, country) pairs of ``frame`` in the paper's order, unknown ones last."""
    present = set(map(tuple, frame[["language", "country"]].drop_duplicates().to_numpy()))
    ordered = [(language, country) for language, countries in LANGUAGE_GROUPS.items()
               for country in countries if (language, country) in present]
    return ordered + sorted(present - set(ordered))


def _gap_cell(frame: pd.DataFrame, column: str, country: str, config: EvalConfig
              ) -> dict[str, float]:
    return gap_metrics(select_rows(frame, column, country, "localized"),
                       select_rows(frame, column, country, "nonlocalized"), config)


def gap_by_country(tasks: Mapping[str, pd.DataFrame], config: EvalConfig = EvalConfig()
                   ) -> pd.DataFrame:
    """Long table: PNLG and RCA (aggregate and per instance) per task, country and column."""
    rows = []
    for task, frame in tasks.items():
        if frame is None or frame.empty:
            continue
        for language, country in countries_in_order(frame):
            for column in column_order(frame):
                cell = _gap_cell(frame, column, country, config)
                rows.append({"task": task, "language": language, "country": country,
                             "column": column, **cell})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The result of an evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Everything an evaluation produced (frames) and where it was written (``files``)."""

    mcq: pd.DataFrame
    open: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps_long: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)
    # the judge's one-line account of open-ended responses it left unscored (None: all scored)
    unscored: str | None = None


def accuracy_by_position(mcq: pd.DataFrame) -> pd.DataFrame:
    """Boxed MCQ: per condition and displayed position k of the correct option, the number of
    instances, the accuracy, and how often the model answered k at all. A model that always
    answers one number scores by where the answer sits, not by what it knows; this table shows it.
    Empty for log-likelihood scoring, which has no displayed positions."""
    if mcq.empty or "answer_position" not in mcq:
        return pd.DataFrame()
    rows = []
    for condition, group in mcq.groupby("condition", sort=False):
        described = group.iloc[0][[c for c in CONDITION_COLUMNS if c in group]].to_dict()
        for position in sorted(group["answer_position"].dropna().unique()):
            at = group[group["answer_position"] == position]
            rows.append({**described, "position": int(position), "n": len(at),
                         "accuracy": float(at["score"].mean()),
                         "answered_share": float((group["predicted_position"] == position).mean())})
    return pd.DataFrame(rows)


def build_result(mcq: pd.DataFrame, open_ended: pd.DataFrame | None,
                 config: EvalConfig, stability: pd.DataFrame | None = None) -> EvaluationResult:
    """Summaries (``scores``, ``gaps``) per task and the long RCA/PNLG table of the MCQ
    and open-ended instance rows."""
    scores, gaps = [], []
    for task, frame in (("mcq", mcq), ("open", open_ended)):
        if frame is None or frame.empty:
            continue
        task_scores, task_gaps = summarize(frame, config)
        task_scores.insert(0, "task", task)
        scores.append(task_scores)
        if not task_gaps.empty:
            task_gaps.insert(0, "task", task)
            gaps.append(task_gaps)
    long = gap_by_country({"mcq": mcq, "open": open_ended}, config) if (
        set(FORMS) <= set(config.forms)) else pd.DataFrame()
    return EvaluationResult(mcq=mcq, open=open_ended, stability=stability,
                            scores=pd.concat(scores, ignore_index=True) if scores else
                            pd.DataFrame(),
                            gaps=pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame(),
                            gaps_long=long)
