"""Reading the four rubric scores from a judge reply (:func:`parse_verdict`): a JSON object
anywhere in the reply, or lines such as ``Language Quality: 2/2``; scores are validated against
their range, never clamped."""

from __future__ import annotations

import json
import re
from typing import Any

from yapo_interp.judge.rubric import RUBRIC, Criterion, JudgeParseError


_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _criterion_for_key(key: str) -> Criterion | None:
    normalized = re.sub(r"[^a-z]+", "_", key.lower()).strip("_")
    if normalized in {"total", "score", "overall", "total_score"}:
        return None
    for criterion in RUBRIC:
        if normalized == criterion.key or normalized.replace("_", "") == criterion.key.replace(
                "_", ""):
            return criterion
    for criterion in RUBRIC:
        if any(normalized.startswith(alias) for alias in criterion.aliases):
            return criterion
    return None


def _value(raw: Any, criterion: Criterion) -> float:
    """A score as a float, checking the range (and the denominator of an 'a/b' string)."""
    if isinstance(raw, bool):
        raise JudgeParseError(f"{criterion.key} is a boolean, not a score")
    if isinstance(raw, dict):  # {"score": 2, "reason": ...}
        for name in ("score", "value", "points"):
            if name in raw:
                return _value(raw[name], criterion)
        raise JudgeParseError(f"{criterion.key} is an object without a 'score'")
    if isinstance(raw, str):
        match = re.fullmatch(rf"\s*{_NUMBER}\s*(?:/\s*(\d+))?\s*(?:points?)?\s*", raw)
        if not match:
            raise JudgeParseError(f"{criterion.key}={raw!r} is not a number")
        if match.group(2) is not None and int(match.group(2)) != criterion.maximum:
            raise JudgeParseError(f"{criterion.key} scored out of {match.group(2)}, but the "
                                  f"rubric's scale is 0-{criterion.maximum}")
        raw = float(match.group(1))
    if not isinstance(raw, (int, float)):
        raise JudgeParseError(f"{criterion.key}={raw!r} is not a number")
    value = float(raw)
    if not 0.0 <= value <= criterion.maximum:
        raise JudgeParseError(f"{criterion.key}={value:g} is outside its range "
                              f"0-{criterion.maximum}")
    return value


def _from_mapping(mapping: dict[str, Any]) -> dict[str, float] | None:
    for wrapper in ("scores", "score", "evaluation", "ratings"):
        if isinstance(mapping.get(wrapper), dict):
            mapping = mapping[wrapper]
            break
    scores: dict[str, float] = {}
    for key, raw in mapping.items():
        criterion = _criterion_for_key(str(key))
        if criterion is not None and criterion.key not in scores:
            scores[criterion.key] = _value(raw, criterion)
    return scores if len(scores) == len(RUBRIC) else None


def _json_candidates(text: str) -> list[Any]:
    candidates = []
    stripped = re.sub(r"```(?:json)?", "", text).strip()
    try:
        candidates.append(json.loads(stripped))
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", stripped):
        try:
            value, _ = decoder.raw_decode(stripped[match.start():])
        except json.JSONDecodeError:
            continue
        candidates.append(value)
    return [candidate for candidate in candidates if isinstance(candidate, dict)]


def _line_pattern(criterion: Criterion) -> re.Pattern:
    first, second = criterion.title.split()
    name = rf"{first[:5]}\w*[\s_]*{second}|{criterion.key.replace('_', '[ _]')}"
    return re.compile(
        rf"(?:{name})[\s*_]*(?:\([^)\n]*\))?[\s*_]*[:=\-–—][\s*_]*{_NUMBER}(?:\s*/\s*(\d+))?",
        re.IGNORECASE,
    )


def _from_lines(text: str) -> dict[str, float] | None:
    scores: dict[str, float] = {}
    for criterion in RUBRIC:
        matches = list(_line_pattern(criterion).finditer(text))
        if not matches:
            return None
        last = matches[-1]  # a judge that restates the rubric gives its scores last
        value = last.group(1) + (f"/{last.group(2)}" if last.group(2) else "")
        scores[criterion.key] = _value(value, criterion)
    return scores


def parse_verdict(text: str | None) -> dict[str, float]:
    """The four rubric scores from a judge reply, or ``JudgeParseError`` saying what is wrong.

    Accepts a JSON object (anywhere in the reply, fenced or not, flat or under ``"scores"``)
    or lines like ``Language Quality: 2/2``. A judge's own ``total`` is ignored; the total is
    recomputed from the parts.
    """
    if text is None or not str(text).strip():
        raise JudgeParseError("empty reply")
    problems = []
    for candidate in _json_candidates(text):
        try:
            scores = _from_mapping(candidate)
        except JudgeParseError as error:
            problems.append(str(error))
            continue
        if scores is not None:
            return scores
    scores = _from_lines(text)
    if scores is not None:
        return scores
    if problems:
        raise JudgeParseError(problems[0])
    missing = ", ".join(criterion.title for criterion in RUBRIC)
    raise JudgeParseError(f"no scores for all of {missing} in the reply: {text[:120]!r}")
