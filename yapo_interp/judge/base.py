"""What every judge is (:class:`Judge`: one verdict per request, many with a progress bar) and
the one-line summary of the responses a judge left unscored (:func:`unscored_message`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from yapo_interp.judge.rubric import JudgeRequest, Verdict


class Judge(ABC):
    """Scores open-ended responses with the rubric of figure 4."""

    name: str = "judge"
    weaker: bool = False  # True for judges whose scores are not comparable with an LLM judge's

    @abstractmethod
    def score(self, request: JudgeRequest) -> Verdict:
        """The verdict on one response (a failure is a verdict with ``ok`` False)."""

    def score_many(self, requests: Sequence[JudgeRequest], *, progress: bool = True
                   ) -> list[Verdict]:
        """Verdicts in the order of ``requests``; the progress bar counts the failures."""
        return with_progress(map(self.score, requests), len(requests), self.name, progress)


def with_progress(verdicts: Iterable[Verdict], total: int, name: str, progress: bool
                  ) -> list[Verdict]:
    """``verdicts`` as a list, consumed under a progress bar that counts the failures."""
    results: list[Verdict] = []
    failed = 0
    with tqdm(total=total, desc=f"judging ({name})", disable=not progress) as bar:
        for verdict in verdicts:
            results.append(verdict)
            if not verdict.ok:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    return results


def unscored_message(verdicts: Sequence[Verdict] | Sequence[dict[str, Any]],
                     judge_name: str = "judge") -> str | None:
    """One line saying how many responses the judge failed to score and why (the most common
    error), or ``None`` when every response has a score. ``verdicts`` are ``Verdict`` objects or
    their records (``judge_ok``, ``judge_error``)."""
    records = [v.as_record() if isinstance(v, Verdict) else v for v in verdicts]
    failed = [r for r in records if not r.get("judge_ok")]
    if not failed:
        return None
    errors = Counter(str(r.get("judge_error") or "no reason recorded") for r in failed)
    cause, count = errors.most_common(1)[0]
    more = f", and {len(errors) - 1} other error(s)" if len(errors) > 1 else ""
    return (f"the {judge_name} left {len(failed)} of {len(records)} open-ended responses "
            f"unscored ({count}x: {cause[:200]}{more}); their scores are missing from the "
            "open-ended results. Fix the judge and rerun the same command: verdicts already "
            "given are cached and reused.")
