"""Behaviour steering evaluation (section 4.4 of the paper, BiPO's protocol): how far a vector
moves a behaviour as its multiplier grows, and what that costs.

Section 4.4 of the YaPO paper claims the method carries over to BiPO's alignment behaviours
(power-seeking, wealth-seeking, ...). BiPO (Cao et al., 2024) evaluates a behaviour vector by
sweeping the steering multiplier ``λ·d`` (eq. 2 dense, eq. 3 sparse; ``d = ±1`` the direction)
and reading off three scores on the behaviour's test files
(:mod:`yapo_interp.data.behaviour`):

(a) **A/B choice** on ``test_infer.csv``: the question is shown with both answers as ``(A)`` /
    ``(B)`` choices and the prompt ends with ``" ("``; the model "chooses" the letter with the
    higher probability (``ab_letter_choice``; ``ab_letter_prob`` is the mean of
    ``p(matching letter) / (p(A) + p(B))``, the smoother number CAA and BiPO plot). The same
    choice is also made on the two answer *texts* after the bare question
    (``ab_text_choice``: higher mean log-probability per token, or summed with
    ``text_score="sum"``). Each is the fraction of questions on which the answer showing the
    behaviour wins (ties count one half).
(b) **Log-odds** on ``test.csv``:
    ``log π(matching | x) − log π(not matching | x)``, summed over each answer's tokens — the
    quantity the preference objective of eq. 1 / eq. 4 pushes up — averaged over questions.
(c) **Open-ended answers** to ``test.csv`` questions (greedy, ``open_max_new_tokens``), rated by
    a judge on BiPO's 1-4 behaviour scale (1: clearly rejects the behaviour, 4: clearly shows
    it): any OpenAI-compatible endpoint with :data:`BEHAVIOUR_RUBRIC`, or the offline
    :class:`LocalBehaviourJudge`, which only compares word overlap with the two reference answers
    and is **much weaker** (labelled so in every output).

Every score comes with a 95% bootstrap interval over questions and, for each multiplier, the
difference to ``λ = 0`` with a *paired* bootstrap interval (the same questions resampled for
both). ``λ = 0`` is the unsteered model for every method (one shared baseline). Test questions
that also appear in ``train.csv`` (one in BiPO's power-seeking set) are dropped unless
``--keep-train-questions``. With ``--cost``
the general-ability cost of each condition is measured as well (:mod:`yapo_interp.cost`:
cross-entropy increase and KL to the unsteered model on neutral multilingual text), and a second
figure plots effect against cost.

    python -m yapo_interp.behaviour --behaviour power-seeking \\
        --vectors runs/train/bipo-power-seeking runs/train/yapo-power-seeking --cost

Outputs in ``--out``: ``items.csv`` (one row per condition and question and task),
``summary.csv`` / ``summary.md`` (scores with CIs per method and multiplier), ``cost.csv`` /
``cost_summary.csv`` (with ``--cost``), ``behaviour_sweep.html`` (score against multiplier per
method, BiPO's figure), ``effect_vs_cost.html`` and ``run.json``. Any vector can be evaluated on
any behaviour — a cultural vector on power-seeking answers the paper's cross-domain question.

From Python, the same run is ``run_behaviour(model, BehaviourConfig(behaviour="power-seeking",
vectors=(...,)), out)``. The package's modules, by concern: ``scoring`` (tasks a and b, the
metrics, :class:`BehaviourEvalConfig`), ``judge`` (task c: BiPO's 1-4 rubric, the offline
judge), ``sweep`` (the conditions of the multiplier sweep and its summaries), ``stage``
(:class:`BehaviourConfig`, :func:`run_behaviour`, the files written) and ``cli`` (the flags and
``main``); the figures are :func:`yapo_interp.figures.behaviour_sweep_figure` and
:func:`yapo_interp.figures.effect_cost_figure`.
"""

from yapo_interp.behaviour.cli import build_parser, main
from yapo_interp.behaviour.judge import (BEHAVIOUR_DESCRIPTIONS, BEHAVIOUR_RUBRIC,
                                         LocalBehaviourJudge, behaviour_description,
                                         behaviour_request, make_behaviour_judge,
                                         parse_behaviour_score, score_open)
from yapo_interp.behaviour.scoring import (DEFAULT_MULTIPLIERS, METRICS, TASKS,
                                           BehaviourEvalConfig, letter_logprobs,
                                           next_token_logprobs, score_ab, score_log_odds)
from yapo_interp.behaviour.stage import (BehaviourConfig, BehaviourInputs, BehaviourResult,
                                         prepare_inputs, run_behaviour, write_outputs)
from yapo_interp.behaviour.sweep import (evaluate_behaviour, summarize_cost, summarize_sweep,
                                         sweep_conditions)

__all__ = [
    "BEHAVIOUR_DESCRIPTIONS", "BEHAVIOUR_RUBRIC", "DEFAULT_MULTIPLIERS", "METRICS", "TASKS",
    "BehaviourConfig", "BehaviourEvalConfig", "BehaviourInputs", "BehaviourResult",
    "LocalBehaviourJudge", "behaviour_description", "behaviour_request", "build_parser",
    "evaluate_behaviour", "letter_logprobs", "main", "make_behaviour_judge",
    "next_token_logprobs", "parse_behaviour_score", "prepare_inputs", "run_behaviour",
    "score_ab", "score_log_odds", "score_open", "summarize_cost", "summarize_sweep",
    "sweep_conditions", "write_outputs",
]
