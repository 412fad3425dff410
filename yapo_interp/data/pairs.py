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
* ``rejected="all"`` — one pair per other option (every other country, and the Western one);
* ``rejected="generated"`` — the model's own greedy answer to the prompt (on-policy, as the
  authors' data preparation makes it; ``yapo_interp.onpolicy`` generates and caches it once per
  model and prompt, so every method trains on the same ``y_l``). A pair whose generated answer
  equals the chosen one carries no preference and is dropped.

The western default has a known weakness: the country's dialect option against a
standard-register option can be separated by a "dialect vs standard" direction that does not beat
the other countries' options, which the MCQ needs. ``other``, ``all`` and ``generated`` do not
have it.

Responses come in one of two formats: ``"option"`` (the option's text after the question) or
``"mcq"`` (the authors' MCQ training format: the question with its numbered options and the
``\\boxed{k}`` instruction as the prompt, ``\\boxed{k}`` of the preferred option as ``y_w``; the
options are shown in the same per-question shuffled order as in evaluation).

The setting says which prompt form ``x`` takes: ``"localized"`` (the question names the country),
``"nonlocalized"`` (only dialect and situation cues), or ``"both"`` (the localized pairs followed
by the non-localized pairs: the paper's mixed setting).

The split (:func:`split_items`) is by *question* and is a property of the question, not of the
call: a question is a test question when a seeded hash of its ``question_id`` falls below
``test_fraction`` (:func:`is_test_question`). Both forms and every country of a question go to the
same side, and ``split(subset) == split(all) ∩ subset`` for any subset of items, so ``train``
(one country) and ``evaluate`` (several countries at once) always agree on what is test. Each
language gets ``test_fraction`` of its questions in expectation (a per-question draw, not a
quota: exact per-language counts would make a question's side depend on which other questions
were loaded). A *validation* split for tuning (learning rate, λ, eval loss) is carved the same
way from the training questions only (:func:`validation_questions`), so a test question never
reaches training or tuning. :data:`SPLIT_RULE` names this rule in every saved result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from yapo_interp.data.countries import WESTERN
from yapo_interp.data.prompts import Style, format_prompt, format_response, mcq_prompt
from yapo_interp.data.schema import FORMS, CulturalItem, Form
from yapo_interp.errors import DatasetError, UserError

Setting = Literal["localized", "nonlocalized", "both"]
Rejected = Literal["western", "other", "all", "generated"]
ResponseFormat = Literal["option", "mcq"]
SETTINGS: tuple[str, ...] = get_args(Setting)  # the one list: evaluate, sweep, train import it
REJECTED: tuple[str, ...] = get_args(Rejected)
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
DEFAULT_OPTION_SEED = 0  # the displayed option order of MCQ prompts (shared with evaluate)


@dataclass(frozen=True)
class PreferencePair:
    """One training example of the bi-directional preference objective (eq. 1 and 4):
    the prompt ``x``, the preferred response ``y_w`` (chosen) and the dispreferred ``y_l``."""

    prompt: str
    chosen: str
    rejected: str


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
    """Indices of the options used as ``y_l`` for ``item`` (not for ``"generated"``, whose
    ``y_l`` is not an option)."""
    if rejected == "western":
        return [item.option_index(WESTERN)]
    if rejected == "other":
        return [other_country_option(item)]
    if rejected == "all":
        return [index for index in range(len(item.options)) if index != item.answer]
    raise UserError(f"unknown rejected={rejected!r}; use one of {', '.join(REJECTED)}")


def pair_prompt(item: CulturalItem, form: Form, *, style: Style = "completion",
                response_format: ResponseFormat = "option", tokenizer: Any = None,
                option_seed: int | None = DEFAULT_OPTION_SEED) -> tuple[str, list[int]]:
    """The training prompt of ``item`` in ``form`` and the displayed option order (the identity
    for the ``"option"`` format)."""
    if response_format == "mcq":
        return mcq_prompt(item, form, style=style, tokenizer=tokenizer, seed=option_seed)
    if response_format != "option":
        raise UserError(f"unknown response format {response_format!r}; use one of "
                        f"{', '.join(RESPONSE_FORMATS)}")
    return format_prompt(item.prompt(form), style=style, tokenizer=tokenizer), list(
        range(len(item.options)))


def _option_response(item: CulturalItem, index: int, order: list[int], *, style: Style,
                     response_format: ResponseFormat) -> str:
    if response_format == "mcq":
        return f"\\boxed{{{order.index(index) + 1}}}"
    return format_response(item.options[index].text, style=style)


def build_preference_pairs(items: Sequence[CulturalItem], *, setting: Setting,
                           rejected: Rejected = "western", style: Style = "completion",
                           tokenizer: Any = None, response_format: ResponseFormat = "option",
                           generated: Mapping[str, str] | None = None,
                           option_seed: int | None = DEFAULT_OPTION_SEED) -> list[PreferencePair]:
    """Pairs ``(prompt, chosen, rejected)`` for the given setting (see the module docstring).

    Prompts are formatted with :func:`pair_prompt` and option responses with
    :func:`~yapo_interp.data.prompts.format_response` in ``style`` (or as ``\\boxed{k}``).
    ``rejected="generated"`` needs ``generated``: the model's answer for every prompt (see
    ``yapo_interp.onpolicy``). Items that lack a form (partial items from the authors' layout)
    give no pair for that form; if no item has a needed form, :class:`UserError` is raised.
    """
    forms = setting_forms(setting)
    if rejected not in REJECTED:
        raise UserError(f"unknown rejected={rejected!r}; use one of {', '.join(REJECTED)}")
    if rejected == "generated" and generated is None:
        raise UserError("rejected='generated' needs the model's own answers: build the pairs "
                        "with yapo_interp.onpolicy.generated_rejections (train does this)")
    pairs: list[PreferencePair] = []
    for form in forms:
        usable = [item for item in items if item.has_form(form)]
        if items and not usable:
            raise UserError(f"none of the {len(items)} items has a {form} prompt; use another "
                            f"setting")
        for item in usable:
            prompt, order = pair_prompt(item, form, style=style, response_format=response_format,
                                        tokenizer=tokenizer, option_seed=option_seed)
            chosen = _option_response(item, item.answer, order, style=style,
                                      response_format=response_format)
            if rejected == "generated":
                if prompt not in generated:
                    raise UserError(f"no generated answer for the {form} prompt of {item.id}; "
                                    "regenerate the on-policy answers for these items")
                answers = [generated[prompt]]
            else:
                answers = [_option_response(item, index, order, style=style,
                                            response_format=response_format)
                           for index in rejected_options(item, rejected)]
            pairs.extend(PreferencePair(prompt=prompt, chosen=chosen, rejected=answer)
                         for answer in answers if answer.strip() and answer != chosen)
    return pairs


SPLIT_RULE = "sha256(salt:seed:question_id) < fraction"
DEFAULT_TEST_FRACTION = 0.25
DEFAULT_VALIDATION_FRACTION = 0.2


def _unit_hash(salt: str, seed: int, question_id: str) -> float:
    """A number in [0, 1) fixed by ``(salt, seed, question_id)`` alone."""
    return _stable_int(f"{salt}:{seed}:{question_id}") / 2.0 ** 64


def _check_fraction(name: str, fraction: float, *, allow_zero: bool = False) -> None:
    low_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (low_ok and fraction < 1):
        bound = "0 (inclusive)" if allow_zero else "0"
        raise UserError(f"{name} must be between {bound} and 1 (exclusive), got {fraction}")


def is_test_question(question_id: str, *, test_fraction: float = DEFAULT_TEST_FRACTION,
                     seed: int = 0) -> bool:
    """Whether ``question_id`` is a test question of the split ``(test_fraction, seed)``."""
    return _unit_hash("test", seed, question_id) < test_fraction


def is_validation_question(question_id: str, *, test_fraction: float = DEFAULT_TEST_FRACTION,
                           validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                           seed: int = 0) -> bool:
    """Whether ``question_id`` is a validation question: a training question (never a test one)
    whose second, independent hash falls below ``validation_fraction``."""
    return (not is_test_question(question_id, test_fraction=test_fraction, seed=seed)
            and _unit_hash("validation", seed, question_id) < validation_fraction)


def split_items(items: Sequence[CulturalItem], *, test_fraction: float = DEFAULT_TEST_FRACTION,
                seed: int = 0) -> tuple[list[CulturalItem], list[CulturalItem]]:
    """Deterministic ``(train, test)`` split by question (see the module docstring).

    Every item of a question (all its countries, both forms) lands on the same side; the order of
    ``items`` is kept within each side. ``test_fraction=0`` puts everything in ``train``.
    """
    _check_fraction("test_fraction", test_fraction, allow_zero=True)
    train = [item for item in items
             if not is_test_question(item.question_id, test_fraction=test_fraction, seed=seed)]
    test = [item for item in items
            if is_test_question(item.question_id, test_fraction=test_fraction, seed=seed)]
    return train, test


def validation_questions(items: Sequence[CulturalItem], *,
                         test_fraction: float = DEFAULT_TEST_FRACTION,
                         validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                         seed: int = 0) -> tuple[list[CulturalItem], list[CulturalItem]]:
    """``(fit, validation)``: the training questions of ``split_items`` divided once more, by an
    independent hash, into those that fit a vector and those that tune it. Test questions are in
    neither."""
    _check_fraction("validation_fraction", validation_fraction, allow_zero=True)
    train, _ = split_items(items, test_fraction=test_fraction, seed=seed)
    flags = [is_validation_question(item.question_id, test_fraction=test_fraction,
                                    validation_fraction=validation_fraction, seed=seed)
             for item in train]
    return ([item for item, flag in zip(train, flags) if not flag],
            [item for item, flag in zip(train, flags) if flag])


def limit_pairs_by_question(items: Sequence[CulturalItem], max_pairs: int, *, setting: Setting,
                            rejected: Rejected = "western", seed: int = 0) -> list[CulturalItem]:
    """Whole questions, in a seeded order, until their pairs would exceed ``max_pairs``.

    ``--max-pairs`` keeps complete questions (every form of a kept question, so the two forms of
    the ``both`` setting stay in proportion) instead of the first N pairs, which in ``both`` are
    almost all localized. At least one question is always kept.
    """
    if max_pairs < 1:
        raise UserError(f"max_pairs must be at least 1, got {max_pairs}")
    by_question: dict[str, list[CulturalItem]] = {}
    for item in items:
        by_question.setdefault(item.question_id, []).append(item)
    order = sorted(by_question, key=lambda question: _unit_hash("subset", seed, question))
    kept: set[str] = set()
    total = 0
    for question in order:
        count = sum(len(setting_forms(setting)) * (
            1 if rejected == "generated" else len(rejected_options(item, rejected)))
            for item in by_question[question])
        if kept and total + count > max_pairs:
            break
        kept.add(question)
        total += count
    return [item for item in items if item.question_id in kept]
