"""Evaluation metrics of section 3.1 of the YaPO paper: accuracy, PNLG and RCA, with bootstrap CIs.

Every cultural question is asked twice: a *localized* prompt ``x_loc`` that names the country
("I'm from Egypt, ...") and its *non-localized* twin ``x_nonloc`` that carries only dialect and
situation cues. For a model π and the culturally correct answer ``y*`` the paper defines the
per-instance correctness scores (Definition 1)

    p_loc = S_π(x_loc, y*),        p_non = S_π(x_nonloc, y*),

where ``S_π`` is 1/0 accuracy for multiple-choice questions and a judge score for open-ended
generation (this toolkit rescales the judge's 0-10 total to [0, 1] before using it here). With
``p̄ = (p_loc + p_non) / 2``:

* **PNLG** — performance-normalized localization gap, eq. (5):
  "PNLG_α(π) = E_{(x_loc, x_nonloc, y*) ~ D} [ (p_loc − p_non) / (p̄^α + ε) ], with ε > 0
  arbitrarily small for numerical stability and α ∈ [0, 1] controlling the strength of the
  normalization."
  α = 0 is the raw gap, α = 1 (the paper's default) divides by the mean performance, so that a weak
  model cannot look "gap-free" merely because both accuracies are near zero. Lower is better.
* **RCA** — robust cultural accuracy, eq. (6): "the harmonic mean of localized and non-localized
  accuracies: RCA(π) = E [ 2·p_loc·p_non / (p_loc + p_non + ε) ]". Higher is better.

Two ways to take the expectation, both provided:

* per instance (``pnlg``, ``rca``): the definitions as written — the ratio is computed for every
  localized/non-localized pair of the same question and country, then averaged. With 0/1 MCQ
  scores an instance contributes to RCA only when *both* forms are answered correctly, and to
  PNLG ±2 when exactly one is.
* on aggregate accuracies (``pnlg_aggregate``, ``rca_aggregate``): the same formula applied once to
  the mean localized and mean non-localized scores. This is what the paper's tables 3 and 5 report:
  e.g. Egypt, MCQ baseline, localized 43.1% and non-localized 36.0% (table 1) give
  (0.431 − 0.360) / 0.3955 = 0.180 = PNLG and 2·0.431·0.360 / 0.791 = 39.2% = RCA (table 5).

``bootstrap_ci`` resamples instances (pairs stay together) to put a percentile confidence interval
on any of these statistics. All functions are pure: arrays in, floats out, no I/O.

**Metrics with power** (issue 13). 0/1 accuracy on a few dozen questions cannot tell two methods
apart; graded per-instance scores and paired comparisons can:

* ``answer_probability`` — the probability of the correct option under a softmax over the
  options' scores (mean per-token log-probs): ``p* = exp(s*) / Σ_j exp(s_j)``.
* ``answer_margin`` — the log-odds margin of the correct option over the best other option,
  ``s* − max_{j≠*} s_j`` (= ``log p*/p_best-other`` under that softmax); positive iff correct.
* ``paired_difference_ci`` — ``mean(a) − mean(b)`` for two methods scored on the *same*
  instances, with a paired bootstrap CI that resamples questions (clusters: both forms of a
  question and both methods' scores move together), so the between-question variance that both
  methods share cancels.
* ``first_step_below`` / ``steps_to_threshold_ci`` — how many steps a run needs until its
  validation loss first reaches a threshold, and the median over seeds with a bootstrap CI over
  seeds (a seed that never gets there counts as infinitely slow, so the CI can be unbounded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from numpy.typing import ArrayLike  # what np.asarray takes: lists, arrays, pandas columns
from scipy import stats
Scores = Float[np.ndarray, "batch"]

DEFAULT_EPS = 1e-8


def _scores(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN: drop failed instances before computing metrics")
    if (array < 0).any():
        raise ValueError(f"{name} contains negative scores; S_π(x, y*) must be >= 0")
    return array


def _pair(p_loc: ArrayLike, p_non: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    loc, non = _scores(p_loc, "p_loc"), _scores(p_non, "p_non")
    if loc.shape != non.shape:
        raise ValueError(f"p_loc has {loc.size} instances but p_non has {non.size}: they must be "
                         "paired (same question and country, one localized and one non-localized)")
    if loc.size == 0:
        raise ValueError("no instances: cannot average over an empty set")
    return loc, non


def accuracy(correct: ArrayLike) -> float:
    """Mean of per-instance 0/1 correctness (or of any per-instance score)."""
    scores = _scores(correct, "correct")
    if scores.size == 0:
        raise ValueError("no instances: accuracy of an empty set is undefined")
    return float(scores.mean())


def pnlg_terms(p_loc: ArrayLike, p_non: ArrayLike, alpha: float = 1.0,
               eps: float = DEFAULT_EPS) -> Scores:
    """Per-instance PNLG terms ``(p_loc − p_non) / (p̄^α + ε)`` of eq. (5) (``0**0`` is 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1], the range eq. (5) allows")
    if eps <= 0:
        raise ValueError(f"eps={eps} must be > 0 (it guards against division by zero)")
    loc, non = _pair(p_loc, p_non)
    mean = (loc + non) / 2.0
    return (loc - non) / (np.power(mean, alpha) + eps)


def rca_terms(p_loc: ArrayLike, p_non: ArrayLike, eps: float = DEFAULT_EPS) -> Scores:
    """Per-instance RCA terms ``2·p_loc·p_non / (p_loc + p_non + ε)`` of eq. (6)."""
    if eps <= 0:
        raise ValueError(f"eps={eps} must be > 0 (it guards against division by zero)")
    loc, non = _pair(p_loc, p_non)
    return 2.0 * loc * non / (loc + non + eps)


def pnlg(p_loc: ArrayLike, p_non: ArrayLike, alpha: float = 1.0, eps: float = DEFAULT_EPS) -> float:
    """Performance-normalized localization gap, eq. (5), averaged over paired instances.

    "PNLG_α(π) = E[(p_loc − p_non) / (p̄^α + ε)]" with p̄ = (p_loc + p_non)/2, α ∈ [0, 1]
    (default 1) and ε > 0 small. Lower is better; negative means the non-localized form scores
    higher.
    """
    return float(pnlg_terms(p_loc, p_non, alpha, eps).mean())


def rca(p_loc: ArrayLike, p_non: ArrayLike, eps: float = DEFAULT_EPS) -> float:
    """Robust cultural accuracy, eq. (6), averaged over paired instances.

    "RCA(π) = E[2·p_loc·p_non / (p_loc + p_non + ε)]": the harmonic mean of the localized and
    non-localized scores of each instance. Higher is better.
    """
    return float(rca_terms(p_loc, p_non, eps).mean())


def pnlg_aggregate(acc_loc: float, acc_non: float, alpha: float = 1.0,
                   eps: float = DEFAULT_EPS) -> float:
    """Eq. (5) applied to mean accuracies (as the paper's tables 3 and 5 report it)."""
    return float(pnlg_terms([acc_loc], [acc_non], alpha, eps)[0])


def rca_aggregate(acc_loc: float, acc_non: float, eps: float = DEFAULT_EPS) -> float:
    """Eq. (6) applied to mean accuracies: the harmonic mean of the two accuracies."""
    return float(rca_terms([acc_loc], [acc_non], eps)[0])


def relative_change(value: float, baseline: float, eps: float = DEFAULT_EPS) -> float:
    """Relative change ``(value − baseline) / |baseline|`` (the "(↑x%)" of tables 3 and 5).

    NaN when the baseline is 0 (within ``eps``): a change relative to nothing is undefined.
    """
    if abs(baseline) <= eps:
        return float("nan")
    return float((value - baseline) / abs(baseline))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile confidence interval."""

    value: float
    low: float
    high: float
    confidence: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(statistic: Callable[..., float], *arrays: ArrayLike, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of ``statistic(*arrays)``, resampling instances with replacement.

    All ``arrays`` are indexed by the same instances and resampled together, so localized and
    non-localized scores of a pair stay paired: ``bootstrap_ci(rca, p_loc, p_non)``,
    ``bootstrap_ci(accuracy, correct)``, or any ``lambda loc, non: ...``.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array of per-instance scores")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    columns = [np.asarray(array, dtype=np.float64).reshape(-1) for array in arrays]
    n = columns[0].size
    if any(column.size != n for column in columns):
        raise ValueError("all arrays given to bootstrap_ci must have one entry per instance")
    if n == 0:
        raise ValueError("no instances to bootstrap")
    value = float(statistic(*columns))
    if n == 1 or n_resamples < 1:
        return Interval(value, value, value, confidence, n)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_resamples, n))
    samples = np.array([statistic(*(column[rows] for column in columns)) for rows in indices])
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high), confidence, n)


# --------------------------------------------------------------------------------------------
# Metrics with power: graded per-instance scores, paired differences, steps to a threshold
# --------------------------------------------------------------------------------------------


def _option_scores(option_scores: ArrayLike, answer: int) -> np.ndarray:
    scores = np.asarray(option_scores, dtype=np.float64).reshape(-1)
    if scores.size < 2:
        raise ValueError(f"need at least two options, got {scores.size}")
    if not 0 <= answer < scores.size:
        raise ValueError(f"answer index {answer} is outside the {scores.size} options")
    if not np.isfinite(scores).all():
        raise ValueError("option scores must be finite log-probabilities")
    return scores


def answer_probability(option_scores: Sequence[float] | Float[np.ndarray, "option"],
                       answer: int) -> float:
    """Softmax probability of option ``answer`` over ``option_scores`` (mean log-probs)."""
    scores = _option_scores(option_scores, answer)
    shifted = scores - scores.max()
    return float(np.exp(shifted[answer]) / np.exp(shifted).sum())


def answer_margin(option_scores: Sequence[float] | Float[np.ndarray, "option"],
                  answer: int) -> float:
    """Log-odds margin ``s_answer − max_{j≠answer} s_j`` of the correct option over the best
    other one: > 0 when the answer wins, and graded, unlike 0/1 accuracy."""
    scores = _option_scores(option_scores, answer)
    return float(scores[answer] - np.delete(scores, answer).max())


def paired_difference_ci(a: ArrayLike, b: ArrayLike, groups: ArrayLike | None = None,
                         *, n_resamples: int = 2000, confidence: float = 0.95,
                         seed: int = 0) -> Interval:
    """``mean(a) − mean(b)`` with a paired (cluster) bootstrap percentile CI.

    ``a[i]`` and ``b[i]`` are two methods' scores of the same instance ``i``; ``groups[i]`` names
    its question (instances of one question are resampled together; default: each instance its
    own group). Each resample draws questions with replacement and recomputes both means on the
    same draw, so the CI is of the *difference*, not of two independent means. ``n`` is the
    number of questions.
    """
    first = np.asarray(a, dtype=np.float64).reshape(-1)
    second = np.asarray(b, dtype=np.float64).reshape(-1)
    if first.shape != second.shape:
        raise ValueError(f"a has {first.size} instances but b has {second.size}: pair them")
    if first.size == 0:
        raise ValueError("no instances to compare")
    if np.isnan(first).any() or np.isnan(second).any():
        raise ValueError("scores contain NaN: drop failed instances from both methods first")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    labels = np.arange(first.size) if groups is None else np.asarray(groups).reshape(-1)
    if labels.size != first.size:
        raise ValueError(f"groups has {labels.size} entries for {first.size} instances")
    _, cluster = np.unique(labels, return_inverse=True)
    n_groups = int(cluster.max()) + 1
    differences = np.bincount(cluster, weights=first - second, minlength=n_groups)
    sizes = np.bincount(cluster, minlength=n_groups).astype(np.float64)
    value = float(differences.sum() / sizes.sum())
    if n_groups == 1 or n_resamples < 1:
        return Interval(value, value, value, confidence, n_groups)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    samples = differences[draws].sum(1) / sizes[draws].sum(1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high), confidence, n_groups)


def mean_ci_over_seeds(values: ArrayLike, *, confidence: float = 0.95,
                       bounds: tuple[float, float] | None = None) -> Interval:
    """Mean of one number per seed with a Student-t confidence interval (few seeds: a bootstrap
    over 3 values cannot say how wide the spread could be, the t interval can). One seed has no
    interval: its bounds are NaN (not a zero-width interval, which would claim a certainty one
    seed cannot give); NaN entries are dropped. ``bounds``: the range the score can take (an
    accuracy or a probability: ``(0, 1)``); the interval, which on few seeds can reach past it,
    is clipped to it."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no seeds")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    mean = float(values.mean())
    if values.size == 1:
        return Interval(mean, np.nan, np.nan, confidence, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, values.size - 1)
                 * values.std(ddof=1) / np.sqrt(values.size))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, confidence, int(values.size))


def _run_records(steps: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """One run's ``(steps, losses)`` as float arrays of one length, in step order."""
    step_values = np.asarray(steps, dtype=np.float64).reshape(-1)
    loss_values = np.asarray(losses, dtype=np.float64).reshape(-1)
    if step_values.shape != loss_values.shape:
        raise ValueError(f"{step_values.size} steps but {loss_values.size} losses")
    order = np.argsort(step_values, kind="stable")
    return step_values[order], loss_values[order]


def first_step_below(steps: ArrayLike, losses: ArrayLike, threshold: float) -> float:
    """The first step at which ``losses`` is at or below ``threshold`` (``inf`` if never).

    ``steps`` and ``losses`` are one run's validation-loss records, in any order."""
    step_values, loss_values = _run_records(steps, losses)
    reached = step_values[loss_values <= threshold]
    return float(reached.min()) if reached.size else float("inf")


def max_rebound(steps: ArrayLike, losses: ArrayLike) -> float:
    """The largest rise of a loss above its best value so far, ``max_t (loss_t − min_{s≤t}
    loss_s)``, over one run's records in step order: 0 for a run that never goes back up, the
    height of its worst spike otherwise (a measure of instability, not of the final value)."""
    _, ordered = _run_records(steps, losses)
    if not ordered.size:
        return float("nan")
    return float((ordered - np.minimum.accumulate(ordered)).max())


def steps_to_threshold_ci(steps_per_seed: ArrayLike, *, n_resamples: int = 2000,
                          confidence: float = 0.95, seed: int = 0) -> Interval:
    """Median over seeds of the steps to a threshold (``first_step_below`` of each seed's run),
    with a bootstrap percentile CI over seeds. ``inf`` entries (never reached) count as slower
    than any finite run; the median or a bound is ``inf`` when too many seeds never got there.
    One seed (or ``n_resamples`` 0) has no interval: its bounds are NaN."""
    values = np.asarray(steps_per_seed, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no seeds")
    if np.isnan(values).any():
        raise ValueError("steps contain NaN; use inf for a run that never reached the threshold")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    # "lower"/"higher" order statistics instead of interpolation: inf − inf is not a number
    value = float(np.percentile(values, 50, method="higher"))
    if values.size == 1 or n_resamples < 1:
        return Interval(value, np.nan, np.nan, confidence, int(values.size))
    rng = np.random.default_rng(seed)
    samples = np.percentile(values[rng.integers(0, values.size, (n_resamples, values.size))],
                            50, axis=1, method="higher")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low = float(np.percentile(samples, tail, method="lower"))
    high = float(np.percentile(samples, 100.0 - tail, method="higher"))
    return Interval(value, low, high, confidence, int(values.size))


__all__ = [
    "DEFAULT_EPS", "Interval", "accuracy", "answer_margin", "answer_probability", "bootstrap_ci",
    "first_step_below", "max_rebound", "mean_ci_over_seeds", "paired_difference_ci", "pnlg",
    "pnlg_aggregate", "pnlg_terms", "rca", "rca_aggregate", "rca_terms", "relative_change",
    "steps_to_threshold_ci",
]
