"""Evaluating steering vectors on the cultural benchmark: MCQ accuracy, judged open-ended answers,
RCA and PNLG, and the paper's tables (section 4, tables 1, 2, 3 and 5, figure 5).

**What is measured.** Every test question is asked in a *localized* form (it names the country)
and a *non-localized* form (dialect and situation only). The paper reports three settings:
``localized``, ``nonlocalized`` and ``both`` (the two sets of prompts together, the "mixed"
setting), for the unsteered model (baseline) and the model steered by each vector (eq. 2,
dense: ``h + λ·v``; eq. 3, sparse: ``Dec(ReLU(Enc(h) + λ·v)) + (h − Dec(Enc(h)))``; applied with
:func:`yapo_interp.steering.steer` at every position).

**Multiple-choice questions** (section 4.1), two ways:

* ``mode="loglik"`` — rank the options by their log-likelihood after the question,
  ``log π(option | prompt)`` from :func:`yapo_interp.logprobs.response_logprobs` (the same quantity
  the preference objective of eq. 1 and 4 trains), summed over the option's tokens (``sum``) or
  divided by their number (``mean``, length-normalised: options are written in different
  dialects and have different lengths). Works for base models such as the embedded Gemma 3 270M.
  All options of a batch of questions are scored in batched forward passes.
* ``mode="boxed"`` — show the numbered options and ask for ``\\boxed{k}`` (the paper's footnote 1,
  for instruction models); generate greedily and parse the last ``\\boxed{k}``. An answer that
  cannot be parsed counts as *wrong* and is counted in ``unparsed`` — never silently dropped.

**Open-ended generation** (section 4.2): the model answers the question freely (greedy); a judge
(:mod:`yapo_interp.judge`) grades it against the reference answer with the rubric of figure 4
(0-10). Judge failures are excluded from the means and counted in ``unscored``.

**Metrics** (section 3.1, :mod:`yapo_interp.metrics`): per instance, ``p_loc`` and ``p_non`` are
the scores (0/1 for MCQ, judge total / 10 for open-ended) of the two forms of the same
(question, country); ``PNLG_α = E[(p_loc − p_non)/(p̄^α + ε)]`` (eq. 5) and
``RCA = E[2·p_loc·p_non/(p_loc + p_non + ε)]`` (eq. 6), averaged over pairs ("per instance"), and
the same formulas on the mean accuracies ("aggregate"), which is what the paper's tables report.
Every accuracy and metric comes with a bootstrap confidence interval over instances.

**Metrics with power** (issue 13): log-likelihood MCQ rows also carry ``p_correct`` (the correct
option's probability under a softmax over the options' mean log-probs) and ``margin`` (its
log-odds margin over the best other option); ``scores`` averages them with CIs, and
``paired_differences`` gives every condition-minus-condition difference of a metric on the same
instances with a paired bootstrap CI over questions (``differences.csv``).

**Tables.** ``table_scores`` gives tables 1 (MCQ) and 2 (open-ended): rows language/country with a
per-language average, columns setting × method with the difference to the baseline;
``table_gap_by_country`` table 5 (PNLG with relative change, RCA with the difference in points)
and ``table_gap_by_language`` table 3 (means over countries, then over languages; relative
changes). A column is a method at a multiplier (``YaPO``, ``YaPO ×2``); when several vectors of
a method were evaluated for a country, the cell of setting ``s`` uses the one trained on ``s``
(else on ``both``, else any), the latest epoch first — as in the paper, where each setting is
steered by the vector trained for it. ``stability`` evaluates every epoch checkpoint of
training runs (``RUN/vectors/epoch_XX``), the paper's figure 5.

Command line (results and settings go to ``--out``)::

    python -m yapo_interp.evaluate --country egypt \\
        --vectors runs/train/egypt-bipo runs/train/egypt-yapo --multipliers 1 2 --judge local

A steering vector is evaluated on the items of its own country (``metadata["country"]``) only;
the baseline on all. A vector path is a saved vector (``PATH``, ``PATH.safetensors`` or
``PATH.json``) or a training run folder (its last epoch is used; :mod:`yapo_interp.vectors`).

From Python, the same run is ``run_evaluate(model, EvaluateConfig(countries=("egypt",),
vectors=(...,)), out)``. The package's modules, by concern: ``conditions`` (:class:`EvalConfig`,
the baseline and steered conditions), ``scoring`` (MCQ, generation, open-ended, stability),
``summaries`` (accuracy, RCA/PNLG, paired differences, :class:`EvaluationResult`), ``tables``
(tables 1/2/3/5, writing the files), ``stage`` (:class:`EvaluateConfig`, :func:`run_evaluate`)
and ``cli`` (the flags and ``main``).
"""

from yapo_interp.data import FORMS
from yapo_interp.data.pairs import SETTINGS
from yapo_interp.evaluate.cli import build_parser, main
from yapo_interp.evaluate.conditions import (BASELINE, LOGLIK_SCORES, METHOD_ORDER, MODES,
                                             SETTING_TITLES, TASK_TITLES, Condition, EvalConfig,
                                             column_name, display_country, distinct_labels,
                                             make_conditions, method_label, steered_condition)
from yapo_interp.evaluate.scoring import (choose, clean_generation, evaluate_mcq, evaluate_open,
                                          evaluate_stability, generate_greedy, newline_token_ids,
                                          option_logprobs, score_boxed, score_loglik,
                                          stop_token_ids)
from yapo_interp.evaluate.stage import (EvaluateConfig, EvaluationInputs, check_unseen,
                                        prepare_inputs, run_evaluate, seen_questions,
                                        select_items)
from yapo_interp.evaluate.summaries import (CONDITION_COLUMNS, POWER_METRICS, EvaluationResult,
                                            accuracy_by_position, build_result, column_order,
                                            countries_in_order, gap_by_country, gap_metrics,
                                            paired_differences, paired_scores, select_rows,
                                            setting_rows, summarize)
from yapo_interp.evaluate.tables import (average_label, format_summary, markdown,
                                         table_gap_by_country, table_gap_by_language,
                                         table_scores, write_results)
from yapo_interp.vectors import (EPOCH_PATTERN, VectorLoader, find_epoch_vectors,
                                 resolve_vector_path)

__all__ = [
    "BASELINE", "CONDITION_COLUMNS", "EPOCH_PATTERN", "FORMS", "LOGLIK_SCORES", "METHOD_ORDER",
    "MODES", "POWER_METRICS", "SETTINGS", "SETTING_TITLES", "TASK_TITLES", "Condition",
    "EvalConfig", "EvaluateConfig", "EvaluationInputs", "EvaluationResult", "VectorLoader",
    "accuracy_by_position", "average_label", "build_parser", "build_result", "check_unseen",
    "choose", "clean_generation", "column_name", "column_order", "countries_in_order",
    "display_country", "distinct_labels", "evaluate_mcq", "evaluate_open", "evaluate_stability",
    "find_epoch_vectors", "format_summary", "gap_by_country", "gap_metrics", "generate_greedy",
    "main", "make_conditions", "markdown", "method_label", "newline_token_ids",
    "option_logprobs", "paired_differences", "paired_scores", "prepare_inputs",
    "resolve_vector_path", "run_evaluate", "score_boxed", "score_loglik", "seen_questions",
    "select_items", "select_rows", "setting_rows", "steered_condition", "stop_token_ids",
    "summarize", "table_gap_by_country", "table_gap_by_language", "table_scores",
    "write_results",
]
