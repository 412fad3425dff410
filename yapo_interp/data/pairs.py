"""Preference pairs for training, and the train/test split.

BiPO (eq. 1) and YaPO (eq. 4) learn a steering vector from pairs ``(x, y_w, y_l)``: after the
prompt ``x`` the steered model should raise the likelihood of the preferred response ``y_w`` over
the dispreferred ``y_l`` (and lower it for the opposite direction ``d = -1``). For the cultural
data, ``x`` is a question asked by a country, ``y_w`` that country's own option, and ``y_l``:

* ``rejected="western"`` (default) — the Western control option: the vector learns
  "this culture rather than the generic Western answer";
* ``rejected="other"`` — one other country's option of the same language group, chosen
  deterministically per question (a stable hash of the question id picks which), so the vector
  must separate neighbouring cultures that share a language;
* ``rejected="all"`` — one pair per other option (every other country, and the Western one).

The setting says which prompt form ``x`` takes: ``"localized"`` (the question names the country),
``"nonlocalized"`` (only dialect and situation cues), or ``"both"`` (the localized pairs followed
by the non-localized pairs: the paper's mixed setting).

The split (:func:`split_items`) is by *question*: both forms and every country of a question go to
the same side, so no test question is seen in training in any form or for any country. It is
stratified by (language, topic): in every stratum the number of test questions is the stratum's
share ``n * test_fraction`` rounded down or up, and the round-ups are spread so that the total
is ``round(N * test_fraction)``. It depends only on the question ids, topics and the seed, not on
the order of the items.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any, Literal

from yapo_interp.data import PreferencePair
from yapo_interp.data.countries import WESTERN
from yapo_interp.data.prompts import Style, format_prompt, format_response
from yapo_interp.data.schema import FORMS, CulturalItem, Form
from yapo_interp.errors import DatasetError, UserError

Setting = Literal["localized", "nonlocalized", "both"]
Rejected = Literal["western", "other", "all"]
SETTINGS: tuple[str, ...] = ("localized", "nonlocalized", "both")
REJECTED: tuple[str, ...] = ("western", "other", "all")


def setting_forms(setting: Setting) -> tuple[Form, ...]:
    """The prompt forms of a setting: ``"both"`` -> ``("localized", "nonlocalized")``."""
    if setting == "both":
        return FORMS
    if setting in FORMS:
        return (setting,)
    raise UserError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def other_country_option(item: CulturalItem) -> int:
    """Index of the one other country's option used by ``rejected="other"``: among the options
    of the group's other countries (not the asking country, not Western), the one picked by a
    stable hash of the question id (so it varies between questions but never between runs)."""
    others = [index for index, option in enumerate(item.options)
              if option.country not in (item.country, WESTERN)]
    if not others:
        raise DatasetError(f"item {item.id} has no other country's option (items from the "
                           f"authors' pair layout carry only chosen and rejected); use "
                           f"rejected='western'")
    return others[_stable_int(f"{item.question_id}:{item.country}") % len(others)]


def rejected_options(item: CulturalItem, rejected: Rejected) -> list[int]:
    """Indices of the options used as ``y_l`` for ``item``."""
    if rejected == "western":
        return [item.option_index(WESTERN)]
    if rejected == "other":
        return [other_country_option(item)]
    if rejected == "all":
        return [index for index in range(len(item.options)) if index != item.answer]
    raise UserError(f"unknown rejected={rejected!r}; use one of {', '.join(REJECTED)}")


def build_preference_pairs(items: Sequence[CulturalItem], *, setting: Setting,
                           rejected: Rejected = "western", style: Style = "completion",
                           tokenizer: Any = None) -> list[PreferencePair]:
    """Pairs ``(prompt, chosen, rejected)`` for the given setting (see the module docstring).

    Prompts are formatted with :func:`~yapo_interp.data.prompts.format_prompt` and responses
    with :func:`~yapo_interp.data.prompts.format_response` in ``style``. Items that lack a form
    (partial items from the authors' layout) give no pair for that form; if no item has a
    needed form, :class:`UserError` is raised.
    """
    forms = setting_forms(setting)
    if rejected not in REJECTED:
        raise UserError(f"unknown rejected={rejected!r}; use one of {', '.join(REJECTED)}")
    pairs: list[PreferencePair] = []
    for form in forms:
        usable = [item for item in items if item.has_form(form)]
        if items and not usable:
            raise UserError(f"none of the {len(items)} items has a {form} prompt; use another "
                            f"setting")
        for item in usable:
            prompt = format_prompt(item.prompt(form), style=style, tokenizer=tokenizer)
            chosen = format_response(item.correct_option, style=style)
            for index in rejected_options(item, rejected):
                pairs.append(PreferencePair(
                    prompt=prompt, chosen=chosen,
                    rejected=format_response(item.options[index].text, style=style)))
    return pairs


def split_items(items: Sequence[CulturalItem], *, test_fraction: float = 0.25,
                seed: int = 0) -> tuple[list[CulturalItem], list[CulturalItem]]:
    """Deterministic ``(train, test)`` split by question, stratified by (language, topic).

    Every item of a question (all its countries, both forms) lands on the same side; the order of
    ``items`` is kept within each side.
    """
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    strata: dict[tuple[str, str], set[str]] = {}
    for item in items:
        strata.setdefault((item.language, item.topic), set()).add(item.question_id)
    total = sum(len(questions) for questions in strata.values())
    target = round(total * test_fraction)
    keys = sorted(strata)
    shares = {key: len(strata[key]) * test_fraction for key in keys}
    counts = {key: math.floor(shares[key]) for key in keys}
    # Largest remainders get the round-ups; ties broken by a seeded order of the strata.
    tie_order = keys[:]
    random.Random(f"{seed}:strata").shuffle(tie_order)
    rank = {key: position for position, key in enumerate(tie_order)}
    by_remainder = sorted(keys, key=lambda key: (-(shares[key] - counts[key]), rank[key]))
    for key in by_remainder[:max(0, target - sum(counts.values()))]:
        counts[key] += 1
    test_questions: set[str] = set()
    for key in keys:
        questions = sorted(strata[key])
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(questions)
        test_questions.update(questions[:counts[key]])
    train = [item for item in items if item.question_id not in test_questions]
    test = [item for item in items if item.question_id in test_questions]
    return train, test
