"""Hand-computed cases for PNLG (eq. 5), RCA (eq. 6), accuracy and the bootstrap CI, and the
metrics with power (answer probability and margin, paired differences, steps to a threshold)."""

import math

import numpy as np
import pytest

from yapo_interp.metrics import (accuracy, answer_margin, answer_probability, bootstrap_ci,
                                 first_step_below, max_rebound, paired_difference_ci, pnlg,
                                 pnlg_aggregate, pnlg_terms, rca, rca_aggregate,
                                 relative_change, steps_to_threshold_ci)


def test_accuracy_is_the_mean_of_correctness():
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert accuracy([True, False]) == 0.5
    with pytest.raises(ValueError):
        accuracy([])


def test_all_correct_has_no_gap_and_full_rca():
    p_loc, p_non = [1, 1, 1], [1, 1, 1]
    assert pnlg(p_loc, p_non) == 0.0
    assert rca(p_loc, p_non) == pytest.approx(1.0, abs=1e-7)  # 2/(2+eps)
    assert rca(p_loc, p_non) < 1.0  # the eps really is in the denominator


def test_only_localized_correct_gives_maximal_gap_and_zero_rca():
    p_loc, p_non = [1, 1], [0, 0]
    # p̄ = 0.5: (1 - 0) / (0.5 + eps) = 2 per instance
    assert pnlg(p_loc, p_non) == pytest.approx(2.0, rel=1e-6)
    assert pnlg(p_non, p_loc) == pytest.approx(-2.0, rel=1e-6)  # sign follows loc - non
    assert rca(p_loc, p_non) == 0.0


def test_zero_accuracy_is_guarded_by_eps():
    p_loc, p_non = [0, 0, 0], [0, 0, 0]
    assert pnlg(p_loc, p_non) == 0.0
    assert rca(p_loc, p_non) == 0.0
    assert not math.isnan(pnlg_aggregate(0.0, 0.0))
    assert not math.isnan(rca_aggregate(0.0, 0.0))
    with pytest.raises(ValueError):
        pnlg([0], [0], eps=0.0)


def test_eps_value_enters_the_denominator():
    # one instance, p_loc = 1, p_non = 0: p̄ = 0.5
    assert pnlg([1], [0], eps=0.5) == pytest.approx(1.0)  # 1 / (0.5 + 0.5)
    assert rca([1], [1], eps=2.0) == pytest.approx(0.5)  # 2 / (2 + 2)


def test_per_instance_mean_over_mixed_instances():
    p_loc = [1, 1, 0, 0]
    p_non = [1, 0, 1, 0]
    # terms: 0, 2, -2, 0 -> mean 0; rca terms: 1, 0, 0, 0 -> 0.25
    assert pnlg(p_loc, p_non) == pytest.approx(0.0, abs=1e-6)
    assert rca(p_loc, p_non) == pytest.approx(0.25, rel=1e-6)
    np.testing.assert_allclose(pnlg_terms(p_loc, p_non), [0, 2, -2, 0], rtol=1e-6)


@pytest.mark.parametrize("alpha, expected", [(0.0, 0.6), (0.5, 0.6 / math.sqrt(0.5)),
                                             (1.0, 0.6 / 0.5)])
def test_alpha_controls_the_normalisation(alpha, expected):
    # graded (judge) scores: p_loc = 0.8, p_non = 0.2, p̄ = 0.5
    assert pnlg([0.8], [0.2], alpha=alpha) == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_the_raw_gap():
    p_loc, p_non = [1, 0, 1, 1], [0, 0, 1, 0]
    raw_gap = np.mean(np.array(p_loc) - np.array(p_non))
    assert pnlg(p_loc, p_non, alpha=0.0) == pytest.approx(raw_gap, rel=1e-6)


def test_alpha_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        pnlg([1], [0], alpha=2.0)


def test_aggregate_variant_reproduces_the_papers_table_5():
    # Egypt, MCQ baseline: table 1 gives 43.1% localized and 36.0% non-localized;
    # table 5 reports PNLG 0.180 and RCA 39.2%.
    assert pnlg_aggregate(0.431, 0.360) == pytest.approx(0.180, abs=5e-4)
    assert rca_aggregate(0.431, 0.360) == pytest.approx(0.392, abs=5e-4)


def test_aggregate_and_per_instance_differ_as_expected():
    p_loc, p_non = [1, 0], [0, 1]
    # per instance: each pair has one side wrong -> RCA 0; aggregate: both accuracies 0.5 -> 0.5
    assert rca(p_loc, p_non) == 0.0
    assert rca_aggregate(accuracy(p_loc), accuracy(p_non)) == pytest.approx(0.5, rel=1e-6)


def test_unpaired_or_invalid_scores_are_rejected():
    with pytest.raises(ValueError, match="paired"):
        rca([1, 0], [1])
    with pytest.raises(ValueError, match="NaN"):
        pnlg([1, float("nan")], [1, 1])
    with pytest.raises(ValueError, match="negative"):
        rca([-1], [1])


def test_relative_change():
    assert relative_change(0.6, 0.5) == pytest.approx(0.2)
    assert relative_change(0.4, -0.5) == pytest.approx(1.8)
    assert math.isnan(relative_change(0.3, 0.0))


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    correct = rng.random(200) < 0.3
    interval = bootstrap_ci(accuracy, correct, n_resamples=300, seed=3)
    assert interval.low <= interval.value <= interval.high
    assert interval.value == pytest.approx(correct.mean())
    assert 0.0 < interval.high - interval.low < 0.2
    assert bootstrap_ci(accuracy, correct, n_resamples=300, seed=3) == interval


def test_bootstrap_keeps_pairs_together():
    # p_non is always equal to p_loc: any resample that kept pairs has RCA == accuracy-ish and
    # PNLG exactly 0; resampling the two arrays independently would give non-zero gaps.
    p = (np.arange(50) % 2).astype(float)
    interval = bootstrap_ci(pnlg, p, p, n_resamples=200)
    assert interval.low == interval.high == 0.0


def test_bootstrap_of_constant_scores_has_zero_width():
    interval = bootstrap_ci(accuracy, [1, 1, 1, 1], n_resamples=100)
    assert (interval.low, interval.value, interval.high) == (1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- metrics with power


def test_answer_probability_and_margin_by_hand():
    scores = np.log([0.5, 0.3, 0.2])  # mean log-probs that happen to be a distribution
    assert answer_probability(scores, 0) == pytest.approx(0.5)
    assert answer_probability(scores, 2) == pytest.approx(0.2)
    assert answer_margin(scores, 0) == pytest.approx(math.log(0.5 / 0.3))  # > 0: correct
    assert answer_margin(scores, 2) == pytest.approx(math.log(0.2 / 0.5))  # < 0: wrong
    # softmax, not normalisation: shifting every score changes nothing
    assert answer_probability(scores - 40.0, 1) == pytest.approx(0.3)
    assert answer_margin([-1.0, -1.0], 1) == 0.0
    with pytest.raises(ValueError, match="outside"):
        answer_margin(scores, 3)
    with pytest.raises(ValueError, match="two options"):
        answer_probability([-1.0], 0)


def test_paired_difference_ci_cancels_shared_question_difficulty():
    """Planted: questions differ wildly in difficulty (shared by both methods), method A beats B
    by exactly 0.1 on every instance. The paired CI is tight around 0.1; two unpaired CIs of the
    means would overlap heavily."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 3.0, size=40)
    questions = np.repeat(np.arange(40), 2)  # two forms per question
    b = difficulty[questions] + rng.normal(0, 0.01, size=80)
    a = b + 0.1
    paired = paired_difference_ci(a, b, questions, n_resamples=500)
    assert paired.value == pytest.approx(0.1) and paired.n == 40
    assert 0.09 < paired.low <= paired.value <= paired.high < 0.11
    alone_a, alone_b = bootstrap_ci(np.mean, a), bootstrap_ci(np.mean, b)
    assert alone_a.low < alone_b.high  # unpaired: no power to see the difference
    # no difference at all: the CI covers 0; the sign follows a − b
    noise = rng.normal(0, 1, size=80)
    null = paired_difference_ci(noise, noise[::-1].copy(), questions, n_resamples=500)
    assert null.low < 0 < null.high
    assert paired_difference_ci(b, a, questions).value == pytest.approx(-0.1)


def test_paired_difference_ci_resamples_whole_questions():
    """A question with many instances weighs by its instances, and resampling is by question:
    one question means no resampling uncertainty (a single cluster)."""
    a, b = [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]
    assert paired_difference_ci(a, b, ["q1", "q1", "q2"]).value == pytest.approx(2 / 3)
    one = paired_difference_ci(a, b, ["q", "q", "q"])
    assert (one.low, one.high, one.n) == (one.value, one.value, 1)
    with pytest.raises(ValueError, match="pair them"):
        paired_difference_ci([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="groups has"):
        paired_difference_ci([1.0, 2.0], [1.0, 2.0], ["q"])


def test_max_rebound_is_the_worst_rise_above_the_best_so_far():
    """A spike before the global minimum counts: 0.3 → 0.8 is a rise of 0.5, larger than the
    0.05 rise after the minimum 0.1; a monotone run has none; step order, not list order."""
    steps, losses = [6, 12, 18, 24, 30, 36], [0.6, 0.3, 0.8, 0.1, 0.15, 0.12]
    assert max_rebound(steps, losses) == pytest.approx(0.5)
    assert max_rebound(steps[::-1], losses[::-1]) == pytest.approx(0.5)
    assert max_rebound([1, 2, 3], [0.7, 0.4, 0.2]) == 0.0
    assert math.isnan(max_rebound([], []))
    with pytest.raises(ValueError, match="2 steps but 1 losses"):
        max_rebound([1, 2], [0.5])


def test_steps_to_threshold_per_run_and_over_seeds():
    steps, losses = [10, 20, 30, 40], [0.6, 0.35, 0.2, 0.25]
    assert first_step_below(steps, losses, 0.3) == 30
    assert first_step_below(steps[::-1], losses[::-1], 0.36) == 20  # order does not matter
    assert first_step_below(steps, losses, 0.1) == math.inf
    fast = steps_to_threshold_ci([30, 40, 30, 50, 40], n_resamples=300)
    assert fast.value == 40 and 30 <= fast.low <= fast.value <= fast.high <= 50 and fast.n == 5
    slow = steps_to_threshold_ci([300, math.inf, math.inf], n_resamples=300)
    assert slow.value == math.inf and slow.low == 300 and slow.high == math.inf
    single = steps_to_threshold_ci([12.0])
    assert single.value == 12.0 and math.isnan(single.low) and math.isnan(single.high)
    with pytest.raises(ValueError, match="NaN"):
        steps_to_threshold_ci([1.0, float("nan")])
