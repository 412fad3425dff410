"""The multiplier sweep: every task under the unsteered model (``λ = 0``) and every vector at
every multiplier, and its summaries (bootstrap intervals over questions, paired differences to
``λ = 0``; the cost on neutral text per method and multiplier)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from yapo_interp.behaviour.judge import score_open
from yapo_interp.behaviour.scoring import (DEFAULT_MULTIPLIERS, METRICS, BehaviourEvalConfig,
                                           score_ab, score_log_odds)
from yapo_interp.data.behaviour import ABItem, BehaviourPair
from yapo_interp.errors import UserError
from yapo_interp.evaluate import BASELINE, distinct_labels, steered_condition
from yapo_interp.judge import Judge
from yapo_interp.metrics import bootstrap_ci

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def sweep_conditions(vectors: Sequence[tuple[Any, Any, str | None]],
                     multipliers: Sequence[float] = DEFAULT_MULTIPLIERS) -> list:
    """The unsteered model (``λ = 0``, shared by every method) and every vector at every non-zero
    multiplier, as :class:`yapo_interp.evaluate.Condition` objects."""
    conditions = [BASELINE]
    for vector, sae, source in vectors:
        for multiplier in multipliers:
            if multiplier != 0:
                condition = steered_condition(vector, multiplier, sae=sae, source=source,
                                              label=f"{vector.method} x{multiplier:g}")
                conditions.append(condition)
    return distinct_labels(conditions)


def evaluate_behaviour(model: HookedTransformer, conditions: Sequence, *,
                       items: Sequence[ABItem] = (), pairs: Sequence[BehaviourPair] = (),
                       judge: Judge | None = None,
                       config: BehaviourEvalConfig = BehaviourEvalConfig()) -> pd.DataFrame:
    """Every task that has data (A/B on ``items``, log-odds on ``pairs``, open-ended on
    ``pairs`` when a ``judge`` is given) under every condition: one long frame with the
    condition's ``describe()`` fields on each row (``multiplier`` 0 for the baseline)."""
    frames = []
    for condition in conditions:
        with condition.active(model):
            parts = []
            if items:
                parts.append(score_ab(model, items, config))
            if pairs:
                parts.append(score_log_odds(model, pairs, config))
            if pairs and judge is not None:
                parts.append(score_open(model, pairs, judge, config))
        described = condition.describe()
        described["multiplier"] = 0.0 if condition.is_baseline else described["multiplier"]
        for part in parts:
            frames.append(part.assign(**described))
    if not frames:
        raise UserError("nothing to score: no A/B items and no test pairs (every test question "
                        "dropped? see --keep-train-questions)")
    return pd.concat(frames, ignore_index=True)


def _methods(frame: pd.DataFrame) -> list[str]:
    """The steered methods of ``frame``, in order of appearance (the baseline left out)."""
    return [method for method in dict.fromkeys(frame["method"]) if method != "baseline"]


def summarize_sweep(frame: pd.DataFrame, config: BehaviourEvalConfig = BehaviourEvalConfig()
                    ) -> pd.DataFrame:
    """Per metric, method and multiplier: the mean with a bootstrap CI over questions, and the
    difference to ``λ = 0`` with a paired bootstrap CI. The baseline rows are repeated under
    every method (at multiplier 0) so each method's curve passes through it."""
    methods = _methods(frame) or ["baseline"]
    records = []
    for metric in METRICS:
        if metric not in frame:
            continue
        rows = frame[frame[metric].notna()]
        baseline = rows[rows["method"] == "baseline"].set_index("row")[metric]
        for method in methods:
            subset = rows[(rows["method"] == method) | (rows["method"] == "baseline")]
            for multiplier, group in subset.groupby("multiplier", sort=True):
                group = group[(group["method"] == method) | (multiplier == 0)]
                values = group.set_index("row")[metric]
                interval = bootstrap_ci(np.mean, values.to_numpy(float),
                                        n_resamples=config.n_bootstrap,
                                        confidence=config.confidence, seed=config.seed)
                record = {"metric": metric, "method": method, "multiplier": float(multiplier),
                          "value": interval.value, "low": interval.low, "high": interval.high,
                          "n": interval.n}
                shared = values.index.intersection(baseline.index)
                if len(shared):
                    delta = bootstrap_ci(lambda a, b: float(np.mean(a - b)),
                                         values.loc[shared].to_numpy(float),
                                         baseline.loc[shared].to_numpy(float),
                                         n_resamples=config.n_bootstrap,
                                         confidence=config.confidence, seed=config.seed)
                    record.update(delta=delta.value, delta_low=delta.low, delta_high=delta.high)
                if metric == "judge_score":
                    record["unscored"] = int(frame[(frame["task"] == "open")
                                                   & (frame["method"] == group["method"].iloc[0])
                                                   & (frame["multiplier"] == multiplier)
                                                   ]["judge_ok"].eq(False).sum())
                records.append(record)
    return pd.DataFrame.from_records(records)


def summarize_cost(cost: pd.DataFrame) -> pd.DataFrame:
    """Per method and multiplier: mean CE increase, KL and the perplexity ratio
    ``exp(mean ΔCE)`` over the neutral texts (baseline rows repeated under every method)."""
    cost = cost.assign(multiplier=cost["multiplier"].fillna(0.0))
    methods = _methods(cost) or ["baseline"]
    records = []
    for method in methods:
        subset = cost[(cost["method"] == method) | (cost["method"] == "baseline")]
        for multiplier, group in subset.groupby("multiplier", sort=True):
            records.append({"method": method, "multiplier": float(multiplier),
                            "ce": group["ce"].mean(), "ce_base": group["ce_base"].mean(),
                            "ce_increase": group["ce_increase"].mean(),
                            "perplexity_ratio": math.exp(group["ce_increase"].mean()),
                            "kl": group["kl"].mean(), "n_texts": len(group)})
    return pd.DataFrame.from_records(records)
