"""The offline heuristic judge (:class:`LocalJudge`), **much weaker than an LLM judge**: the four
criteria from the script of the response's letters, repeated trigrams, word overlap with the
reference answer and with the options of the asking and the other countries."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from yapo_interp.data.scripts import letter_script
from yapo_interp.judge.base import Judge
from yapo_interp.judge.rubric import JudgeRequest, Verdict

LANGUAGE_SCRIPTS = {"english": "latin", "spanish": "latin", "portuguese": "latin",
                    "arabic": "arabic", "hindi": "devanagari"}
REFUSALS = ("i cannot", "i can't", "i'm sorry", "i am sorry", "as an ai", "lo siento",
            "desculpe", "عذرا", "عذراً", "माफ़ कीजिए")


def script_share(text: str, script: str) -> float:
    """Share of the letters of ``text`` (marks included) written in ``script``."""
    letters = [c for c in text if c.isalpha() or unicodedata.category(c).startswith("M")]
    if not letters:
        return 0.0
    return sum(letter_script(c) == script for c in letters) / len(letters)


def dominant_script(text: str) -> str:
    """The script (latin, arabic or devanagari) most of ``text``'s letters are written in."""
    shares = {script: script_share(text, script) for script in ("latin", "arabic", "devanagari")}
    return max(shares, key=shares.get)


def content_words(text: str) -> list[str]:
    """Lower-cased words of three characters or more (a crude stop-word filter)."""
    return [word for word in re.findall(r"\w+", text.lower()) if len(word) >= 3
            and not word.isdigit()]


def overlap(response: str, target: str) -> float:
    """Share of the target's distinct content words that the response contains."""
    target_words = set(content_words(target))
    if not target_words:
        return 0.0
    return len(target_words & set(content_words(response))) / len(target_words)


@dataclass
class LocalJudge(Judge):
    """Offline rubric scores from surface heuristics: **weaker than an LLM judge** (see module
    docstring); its verdicts carry the judge name ``local-heuristic`` so they are never mistaken
    for an LLM judge's."""

    name: str = "local-heuristic (weaker than an LLM judge)"
    weaker: bool = True
    thresholds: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "script": (0.4, 0.8),           # language 1 / 2
        "distinct": (0.5, 0.8),         # content 1 / 2 (share of distinct word trigrams)
        "reference": (0.08, 0.2, 0.35),  # facts 1 / 2 / 3 (reference words recalled)
        "culture": (0.3,),              # culture 3 when the own option is recalled this well
    })

    def score(self, request: JudgeRequest) -> Verdict:
        """The four rubric scores of ``request.response`` from surface heuristics (module
        docstring of :mod:`yapo_interp.judge`)."""
        response = request.response.strip()
        words = re.findall(r"\w+", response.lower())
        script = LANGUAGE_SCRIPTS.get(request.language or "") or dominant_script(
            request.reference)
        refusal = any(marker in response.lower() for marker in REFUSALS)

        share = script_share(response, script)
        low, high = self.thresholds["script"]
        language = 0 if len(words) == 0 else 2 if share >= high and len(words) >= 3 else (
            1 if share >= low else 0)

        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        distinct = len(set(trigrams)) / len(trigrams) if trigrams else (
            len(set(words)) / len(words) if words else 0.0)
        low, high = self.thresholds["distinct"]
        if len(words) < 3 or refusal or distinct < low:
            content = 0
        else:
            content = 2 if distinct >= high and len(words) >= 8 else 1

        recall = overlap(response, request.reference)
        facts = sum(recall >= cut for cut in self.thresholds["reference"])

        options = dict(request.options)
        if not content_words(response):
            culture = 0  # nothing to judge
        elif request.country and request.country in options:
            own = max(overlap(response, options[request.country]), recall)
            other = max((overlap(response, text) for country, text in options.items()
                         if country != request.country), default=0.0)
            if other > own:
                culture = 0  # closer to another country's or the Western answer
            elif own == 0:
                culture = 1  # generic: close to no country's answer
            else:
                culture = 3 if own >= self.thresholds["culture"][0] else 2
        else:  # without the options, specificity cannot be checked: at most "mostly"
            culture = 2 if recall >= self.thresholds["culture"][0] else 1 if recall > 0 else 0

        scores = {"language_quality": float(language), "factual_accuracy": float(facts),
                  "cultural_appropriateness": float(culture), "content_quality": float(content)}
        return Verdict(self.name, True, scores=scores, attempts=1)
