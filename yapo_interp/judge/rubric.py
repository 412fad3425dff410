"""The rubric of figure 4: its four criteria (:data:`RUBRIC`, 0-10 in all), the judge prompt,
what a judge sees for one response (:class:`JudgeRequest`) and what it says
(:class:`Verdict`, or a recorded failure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Criterion:
    """One criterion of the rubric: its key in a verdict, its title in the prompt, its maximum
    score and the key prefixes a judge may write for it."""

    key: str
    title: str
    maximum: int
    aliases: tuple[str, ...]


RUBRIC: tuple[Criterion, ...] = (
    Criterion("language_quality", "Language Quality", 2, ("language", "lang")),
    Criterion("factual_accuracy", "Factual Accuracy", 3, ("fact", "facts", "factual", "accuracy")),
    Criterion("cultural_appropriateness", "Cultural Appropriateness", 3,
              ("cultur", "culture", "cultural")),
    Criterion("content_quality", "Content Quality", 2, ("content",)),
)
MAX_TOTAL = sum(criterion.maximum for criterion in RUBRIC)  # 10

# Figure 4 of the paper, verbatim in content; the last paragraph (how to reply) is ours, since
# the figure does not show one, and any reply format parse_verdict understands is accepted.
JUDGE_PROMPT = """Evaluate this model response (Score 1-10) based on Language Quality, Factual Accuracy, Cultural Appropriateness, and Content Quality.

1) Language Quality (0-2):
- 0: Nonsensical text (made-up words, broken grammar, gibberish)
- 1: Poor language with many errors
- 2: Correct, natural language

2) Factual Accuracy (0-3):
- 0: Fabricated information (fake practices/customs that don't exist)
- 1: Mix of correct and incorrect facts
- 2: Mostly factually correct
- 3: Completely accurate information

3) Cultural Appropriateness (0-3):
- 0: Wrong culture or generic/Western response
- 1: Generic response, not country-specific
- 2: Mostly appropriate for target culture
- 3: Perfect cultural accuracy for specific country

4) Content Quality (0-2):
- 0: Severe issues (excessive repetition, refusal, off-topic)
- 1: Partial answer with problems
- 2: Complete, relevant, well-structured answer

Question: {question}
Expected Answer: {ground_truth}
Model Response ({response_type}): {model_response}

CRITICAL CHECKS
Are cultural practices authentic (not fabricated)? Is content non-repetitive?
Is it culturally specific (not generic)? Does it align with the expected answer?

Reply with only a JSON object with integer scores, for example:
{{"language_quality": 2, "factual_accuracy": 1, "cultural_appropriateness": 2, "content_quality": 1, "total": 6}}"""


class JudgeParseError(ValueError):
    """A judge reply from which the four rubric scores cannot be read (or are off-scale)."""


@dataclass(frozen=True)
class JudgeRequest:
    """What a judge sees for one response. ``language``, ``country`` and ``options`` (pairs of
    (country, option text), the item's MCQ options) are used only by the local judge."""

    question: str
    reference: str
    response: str
    response_type: str = "model response"
    language: str | None = None
    country: str | None = None
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A judge's scores for one response, or a recorded failure (``ok`` False, no scores)."""

    judge: str
    ok: bool
    scores: dict[str, float] | None = None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    attempts: int = 0

    @property
    def total(self) -> float | None:
        """Sum of the four criteria, 0-10 (None for a failure)."""
        return None if self.scores is None else float(sum(self.scores.values()))

    @property
    def normalized(self) -> float | None:
        """The total rescaled to [0, 1], the scale on which PNLG and RCA are computed."""
        total = self.total
        return None if total is None else total / MAX_TOTAL

    def as_record(self) -> dict[str, Any]:
        """The verdict as the flat ``judge_*`` columns of a results row."""
        record = {"judge": self.judge, "judge_ok": self.ok, "judge_total": self.total,
                  "judge_error": self.error, "judge_cached": self.cached,
                  "judge_attempts": self.attempts}
        for criterion in RUBRIC:
            record[f"judge_{criterion.key}"] = (self.scores or {}).get(criterion.key)
        return record


def build_prompt(request: JudgeRequest, template: str = JUDGE_PROMPT) -> str:
    """The prompt a judge reads for ``request``: ``template`` (figure 4's rubric by default)
    filled with the question, the reference answer and the response."""
    return template.format(question=request.question, ground_truth=request.reference,
                           response_type=request.response_type, model_response=request.response)
