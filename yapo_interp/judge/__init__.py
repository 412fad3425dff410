"""Judging open-ended answers with the paper's rubric (figure 4): an LLM judge over any
OpenAI-compatible endpoint, and an offline heuristic judge that is clearly weaker.

Section 4.2 of the YaPO paper scores open-ended generations with an external LLM judge that reads
the question, the expected (reference) answer and the model's response, and grades four criteria
(figure 4, "Evaluation prompt"):

====================  =====  ===============================================================
criterion             range  anchors
====================  =====  ===============================================================
Language Quality      0-2    0 nonsensical text · 1 many errors · 2 correct, natural language
Factual Accuracy      0-3    0 fabricated customs · 1 mixed · 2 mostly correct · 3 accurate
Cultural Approp.      0-3    0 wrong culture or generic/Western · 1 generic · 2 mostly
                             appropriate · 3 perfect cultural accuracy for the country
Content Quality       0-2    0 repetition, refusal, off-topic · 1 partial · 2 complete
====================  =====  ===============================================================

The total (0-10) is the score ``S_π(x, y*)`` of Definition 1 in the open-ended setting; the
evaluation divides it by 10 before computing PNLG (eq. 5) and RCA (eq. 6).

* ``OpenAIJudge`` posts the rubric prompt to ``{base_url}/chat/completions`` (OpenAI, vLLM,
  llama.cpp, Ollama, ... — anything speaking that API). Base URL, model and key come from
  arguments or the environment (``YAPO_JUDGE_BASE_URL``, ``YAPO_JUDGE_MODEL``,
  ``YAPO_JUDGE_API_KEY``). Transient failures (timeouts, connection errors, HTTP 429/5xx) and
  malformed replies are retried with exponential back-off, within a total *deadline* per request
  (connecting, waiting and retrying included); a reply that still cannot be parsed is recorded
  as a *failure* (``Verdict.ok`` is False, no score), never as a zero. After several requests in
  a row fail, the judge stops sending (the endpoint is down) and records the rest as failures
  at once; the progress bar counts failures, and ``unscored_message`` words the summary that
  makes ``evaluate`` exit non-zero when open-ended scores are missing. Verdicts are
  cached in a JSONL file keyed by ``sha256(judge model, prompt)``, so re-running an evaluation
  makes no second request for a prompt already judged.
* ``parse_verdict`` reads the four scores from a JSON object (``{"language_quality": 2, ...}``,
  several key spellings accepted) or from lines such as ``Language Quality: 2/2`` or
  ``**Factual Accuracy** (0-3): 3``. Scores are *validated*, not clamped: a value outside its
  range (or written over another denominator, ``8/10``) makes the reply malformed, because a
  judge that answers off-scale has misread the rubric and clamping would hide it.
* ``LocalJudge`` runs offline and is **much weaker than an LLM judge**: it applies the same four
  criteria with surface heuristics — the share of letters in the expected script (language), the
  share of repeated word trigrams (content), word overlap with the reference answer (facts), and
  whether the response is closer to the asking country's option than to the other countries' or
  the Western option (culture). It cannot detect fabricated customs or fluent nonsense; use it for
  smoke tests and relative comparisons on the same data, not as a number to report next to the
  paper's. (A 270M model as judge was considered and rejected: it cannot follow the rubric.)

The package's modules, by concern: ``rubric`` (the criteria, the prompt, :class:`JudgeRequest`,
:class:`Verdict`), ``parse`` (:func:`parse_verdict`), ``base`` (:class:`Judge`,
:func:`unscored_message`), ``endpoint`` (:class:`OpenAIJudge`), ``local`` (:class:`LocalJudge`
and its text heuristics) and ``factory`` (:func:`make_judge`).
"""

from yapo_interp.judge.base import Judge, unscored_message
from yapo_interp.judge.endpoint import (ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, JudgeConfigError,
                                        OpenAIJudge)
from yapo_interp.judge.factory import make_judge
from yapo_interp.judge.local import (LANGUAGE_SCRIPTS, REFUSALS, LocalJudge, content_words,
                                     dominant_script, letter_script, overlap, script_share)
from yapo_interp.judge.parse import parse_verdict
from yapo_interp.judge.rubric import (JUDGE_PROMPT, MAX_TOTAL, RUBRIC, Criterion,
                                      JudgeParseError, JudgeRequest, Verdict, build_prompt)

__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "JUDGE_PROMPT", "LANGUAGE_SCRIPTS", "MAX_TOTAL",
    "REFUSALS", "RUBRIC", "Criterion", "Judge", "JudgeConfigError", "JudgeParseError",
    "JudgeRequest", "LocalJudge", "OpenAIJudge", "Verdict", "build_prompt", "content_words",
    "dominant_script", "letter_script", "make_judge", "overlap", "parse_verdict",
    "script_share", "unscored_message",
]
