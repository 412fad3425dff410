"""The cultural item: one multiple-choice question asked by one country, in two forms (appendix D).

The paper measures the *explicit-implicit localization gap*: the same question is asked

* in a **localized** form that names the country ("I'm from Morocco. It's Friday and ..."), and
* in a **non-localized** form that does not ("It's Friday and ..."), so that the country shows
  only through dialect and situation.

A model that answers the localized form correctly but falls back on a dominant (often Western)
culture for the non-localized form has a gap; PNLG (eq. 5) and RCA (eq. 6) are computed from the
two per-item accuracies ``p_loc`` and ``p_non``. Every question of a language group offers **one
option per country of the group**, each written in that country's dialect, plus a **Western
control** option in the standard register (MSA for Arabic), so that the culturally right answer
differs between countries that share a language: the answer can only be found from culture, not
from translation. The chosen/rejected pairs of the preference objective (eq. 1 and 4) are drawn
from these options (see :mod:`yapo_interp.data.pairs`).

One :class:`CulturalItem` is one row of the dataset, one (question, country) pair::

    {"id": "arabic-breakfast-01-egypt", "question_id": "arabic-breakfast-01",
     "language": "arabic", "country": "egypt", "topic": "breakfast",
     "localized_prompt": "...names Egypt...", "nonlocalized_prompt": "...names no country...",
     "options": [{"country": "egypt", "text": "..."}, ..., {"country": "western", "text": "..."}],
     "answer": 0, "reference_answer": "..."}

Rules checked by :func:`validate_record` (one row) and :func:`check_consistency` (rows together):

* ``language`` is one of the five groups; ``country`` is one of its countries;
* ``options`` holds exactly one option per country of the group, in the canonical order of
  :data:`~yapo_interp.data.countries.LANGUAGE_GROUPS`, then ``"western"``; texts are non-empty
  and mutually distinct; ``answer`` is the index of the row's own country;
* ``localized_prompt`` contains one of the country's name forms
  (:data:`~yapo_interp.data.countries.NAME_FORMS`, case-insensitive substring);
  ``nonlocalized_prompt`` contains none of the name forms of any country of the group;
* ``topic`` is a slug of :data:`TOPICS` (the topics of the paper's table 6);
* all rows of a question share ``language``, ``topic`` and ``options``; a question has exactly one
  row per country of its group; ids are unique.

Items read from the authors' preference-pair layout (:func:`yapo_interp.data.loaders.load_cultural`)
are *partial*: they carry only the asking country's option and the control option, and may lack
one of the two forms (the missing prompt is ``""``); :meth:`CulturalItem.has_form` says which.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from yapo_interp.data.countries import (COUNTRY_LANGUAGE, LANGUAGE_GROUPS, NAME_FORMS, WESTERN,
                                        normalise_country)
from yapo_interp.errors import DatasetError, UserError

Form = Literal["localized", "nonlocalized"]
FORMS: tuple[Form, ...] = get_args(Form)

# Topic slugs: the paper's table 6 (52 topics in 9 categories), merged to one slug per row of the
# table (e.g. "after work (men)" and "(women)" -> after_work).
TOPICS: tuple[str, ...] = (
    "breakfast", "lunch", "dinner", "snacks", "desserts", "fruits", "eating_habits",
    "before_work", "commute", "after_work", "free_time", "household_tasks",
    "parent_child", "grandparents", "siblings", "colleagues",
    "greetings", "nonverbal", "hospitality", "punctuality", "cleanliness",
    "saving", "debt", "financial_discussions", "inheritance",
    "weddings", "wedding_music", "mourning",
    "religious_holidays", "nonreligious_holidays", "gift_giving",
    "childhood_games", "songs_dances", "proverbs", "idioms", "sports",
)

REQUIRED_FIELDS: tuple[str, ...] = (
    "id", "question_id", "language", "country", "topic", "localized_prompt",
    "nonlocalized_prompt", "options", "answer", "reference_answer",
)

SCHEMA_HINT = "see yapo_interp/data/README.md for the row format"


@dataclass(frozen=True)
class Option:
    """One answer option: the country (or ``"western"``) whose answer it is, and its text."""

    country: str
    text: str


@dataclass(frozen=True)
class CulturalItem:
    """One row of the cultural dataset: a question asked by one country, in both forms."""

    id: str
    question_id: str
    language: str
    country: str
    topic: str
    localized_prompt: str
    nonlocalized_prompt: str
    options: tuple[Option, ...]
    answer: int
    reference_answer: str = field(default="")

    def prompt(self, form: Form) -> str:
        """The question in the given form (``"localized"`` or ``"nonlocalized"``)."""
        if form not in FORMS:
            raise UserError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
        text = self.localized_prompt if form == "localized" else self.nonlocalized_prompt
        if not text:
            raise DatasetError(f"item {self.id} has no {form} prompt (read from a source that "
                               f"lacks it); check item.has_form({form!r}) first")
        return text

    def has_form(self, form: Form) -> bool:
        """Whether the item has a prompt in ``form`` (partial items may lack one)."""
        return bool(self.localized_prompt if form == "localized" else self.nonlocalized_prompt)

    @property
    def correct_option(self) -> str:
        """Text of the asking country's own option (the culturally right answer)."""
        return self.options[self.answer].text

    @property
    def western_option(self) -> str:
        """Text of the Western control option."""
        return self.options[self.option_index(WESTERN)].text

    def option_index(self, country: str) -> int:
        """Index in :attr:`options` of ``country``'s option (``"western"`` for the control)."""
        for index, option in enumerate(self.options):
            if option.country == country:
                return index
        raise UserError(f"item {self.id} has no option for {country!r}; it has "
                        f"{', '.join(option.country for option in self.options)}")

    @property
    def option_texts(self) -> list[str]:
        """The options' texts, in order."""
        return [option.text for option in self.options]

    def to_record(self) -> dict[str, Any]:
        """The item as a JSON-ready row of the dataset format."""
        return {
            "id": self.id, "question_id": self.question_id, "language": self.language,
            "country": self.country, "topic": self.topic,
            "localized_prompt": self.localized_prompt,
            "nonlocalized_prompt": self.nonlocalized_prompt,
            "options": [{"country": option.country, "text": option.text}
                        for option in self.options],
            "answer": self.answer, "reference_answer": self.reference_answer,
        }


# --------------------------------------------------------------------------- name forms


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def find_name_forms(text: str, countries: Iterable[str]) -> list[tuple[str, str]]:
    """``(country, form)`` for every name form of ``countries`` found in ``text``
    (case-insensitive, Unicode-normalised substring match, as the row format specifies)."""
    folded = _fold(text)
    return [(country, form) for country in countries for form in NAME_FORMS.get(country, ())
            if _fold(form) in folded]


def names_country(text: str, country: str) -> bool:
    """Whether ``text`` names ``country`` by one of its name forms."""
    return bool(find_name_forms(text, [country]))


# --------------------------------------------------------------------------- user input


def resolve_countries(names: Iterable[str]) -> list[str]:
    """Canonical country keys for names typed by a user (``"Egypt"``, ``"KSA"``, ``"levant"``).

    A language group name (``"arabic"``) expands to its countries and ``"all"`` to every country.
    Order is kept and duplicates are dropped. Raises :class:`UserError` listing the valid names.
    """
    resolved: list[str] = []
    for name in names:
        key = normalise_country(name)
        if key == "all":
            found = [c for group in LANGUAGE_GROUPS.values() for c in group]
        elif key in LANGUAGE_GROUPS:
            found = list(LANGUAGE_GROUPS[key])
        elif key in COUNTRY_LANGUAGE:
            found = [key]
        else:
            valid = "; ".join(f"{language}: {', '.join(countries)}"
                              for language, countries in LANGUAGE_GROUPS.items())
            raise UserError(f"unknown country {name!r}; use a country key ({valid}), a language "
                            f"group name ({', '.join(LANGUAGE_GROUPS)}) or 'all'")
        resolved.extend(country for country in found if country not in resolved)
    return resolved


def resolve_languages(names: Iterable[str]) -> list[str]:
    """Canonical language group keys (``"Arabic"`` -> ``"arabic"``); UserError on unknown ones."""
    resolved: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key not in LANGUAGE_GROUPS:
            raise UserError(f"unknown language group {name!r}; use one of "
                            f"{', '.join(LANGUAGE_GROUPS)}")
        if key not in resolved:
            resolved.append(key)
    return resolved


def expected_option_countries(language: str) -> tuple[str, ...]:
    """The option order of a question of ``language``: its countries, then ``"western"``."""
    return (*LANGUAGE_GROUPS[language], WESTERN)


# --------------------------------------------------------------------------- one row


def _where(file: str, line: int | str) -> str:
    return f"{file}:{line}"


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN (CSV gaps)
        raise DatasetError(f"{where}: field {key!r} is missing; every row needs "
                           f"{', '.join(REQUIRED_FIELDS)} ({SCHEMA_HINT})")
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r} must be a string, got "
                           f"{type(value).__name__} {value!r}")
    if not value.strip():
        raise DatasetError(f"{where}: field {key!r} is empty; write the text or remove the row")
    return value.strip()


def _options(raw: Any, language: str, where: str) -> tuple[Option, ...]:
    expected = expected_option_countries(language)
    if isinstance(raw, str):  # CSV cell holding JSON
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: field 'options' is not valid JSON ({error}); write a "
                               f"list of {{\"country\": ..., \"text\": ...}} objects") from None
    if hasattr(raw, "tolist"):  # numpy array from parquet
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise DatasetError(f"{where}: field 'options' must be a list of "
                           f"{{\"country\": ..., \"text\": ...}} objects, got {type(raw).__name__}")
    options: list[Option] = []
    for position, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) - {"country", "text"} or \
                not isinstance(entry.get("country"), str) or not isinstance(entry.get("text"), str):
            raise DatasetError(f"{where}: option {position} must be an object with string fields "
                               f"'country' and 'text' only, got {entry!r}")
        country = entry["country"].strip()
        if country != WESTERN and country not in COUNTRY_LANGUAGE:
            raise DatasetError(f"{where}: option {position} has unknown country {country!r}; "
                               f"options of a {language} question are for "
                               f"{', '.join(expected)}")
        if not entry["text"].strip():
            raise DatasetError(f"{where}: option {position} ({country}) has empty text")
        options.append(Option(country, entry["text"].strip()))
    countries = [option.country for option in options]
    missing = [country for country in expected if country not in countries]
    if missing:
        raise DatasetError(f"{where}: options lack {', '.join(missing)}; a {language} question "
                           f"needs one option each for {', '.join(expected)} in that order")
    extra = [country for country in countries if country not in expected]
    if extra or len(countries) != len(expected):
        duplicated = sorted({c for c in countries if countries.count(c) > 1})
        problem = (f"options for countries outside the {language} group: {', '.join(extra)}"
                   if extra else f"more than one option for {', '.join(duplicated)}")
        raise DatasetError(f"{where}: {problem}; give exactly one option each for "
                           f"{', '.join(expected)}")
    if tuple(countries) != expected:
        raise DatasetError(f"{where}: options are in the order {', '.join(countries)}; write them "
                           f"in the canonical order {', '.join(expected)}")
    folded = [_fold(option.text) for option in options]
    for index, text in enumerate(folded):
        if text in folded[:index]:
            other = folded.index(text)
            raise DatasetError(f"{where}: options {other} ({countries[other]}) and {index} "
                               f"({countries[index]}) have the same text; options must be "
                               f"mutually distinct")
    return tuple(options)


def validate_record(record: dict[str, Any], *, file: str = "<data>",
                    line: int | str = "?") -> CulturalItem:
    """Check one row of the dataset format and return it as a :class:`CulturalItem`.

    Raises :class:`DatasetError` with the message ``"{file}:{line}: {problem}; {fix}"``.
    """
    where = _where(file, line)
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS))
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(unknown)}; the row format has "
                           f"{', '.join(REQUIRED_FIELDS)} ({SCHEMA_HINT})")
    item_id = _text(record, "id", where)
    where = f"{where}: row {item_id}"
    language = _text(record, "language", where)
    if language not in LANGUAGE_GROUPS:
        raise DatasetError(f"{where}: unknown language {language!r}; use one of "
                           f"{', '.join(LANGUAGE_GROUPS)}")
    country = _text(record, "country", where)
    group = LANGUAGE_GROUPS[language]
    if country not in group:
        hint = (f" (it belongs to the {COUNTRY_LANGUAGE[country]} group)"
                if country in COUNTRY_LANGUAGE else
                f" (did you mean {normalise_country(country)!r}?)"
                if normalise_country(country) in group else "")
        raise DatasetError(f"{where}: unknown country {country!r} for language {language}{hint}; "
                           f"use one of {', '.join(group)}")
    topic = _text(record, "topic", where)
    if topic not in TOPICS:
        raise DatasetError(f"{where}: unknown topic {topic!r}; use one of the paper's table 6 "
                           f"slugs: {', '.join(TOPICS)}")
    question_id = _text(record, "question_id", where)
    localized = _text(record, "localized_prompt", where)
    nonlocalized = _text(record, "nonlocalized_prompt", where)
    if not names_country(localized, country):
        raise DatasetError(f"{where}: localized_prompt does not name the country; include one of "
                           f"{', '.join(repr(f) for f in NAME_FORMS[country])}")
    leaks = find_name_forms(nonlocalized, group)
    if leaks:
        named = ", ".join(f"{form!r} ({named_country})" for named_country, form in leaks)
        raise DatasetError(f"{where}: nonlocalized_prompt names a country: {named}; rephrase so "
                           f"that only dialect and situation show the country")
    if "options" not in record or record["options"] is None:
        raise DatasetError(f"{where}: field 'options' is missing; give one option each for "
                           f"{', '.join(expected_option_countries(language))}")
    options = _options(record["options"], language, where)
    answer = record.get("answer")
    if isinstance(answer, float) and answer.is_integer():  # CSV/parquet may widen ints
        answer = int(answer)
    if hasattr(answer, "item"):
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise DatasetError(f"{where}: field 'answer' must be an integer option index, got "
                           f"{answer!r}")
    if not 0 <= answer < len(options):
        raise DatasetError(f"{where}: answer index {answer} is out of range for "
                           f"{len(options)} options (0..{len(options) - 1})")
    if options[answer].country != country:
        raise DatasetError(f"{where}: answer {answer} points at the {options[answer].country} "
                           f"option, but the row's country is {country}; set answer to "
                           f"{[o.country for o in options].index(country)}")
    reference = _text(record, "reference_answer", where)
    return CulturalItem(id=item_id, question_id=question_id, language=language, country=country,
                        topic=topic, localized_prompt=localized, nonlocalized_prompt=nonlocalized,
                        options=options, answer=answer, reference_answer=reference)


# --------------------------------------------------------------------------- rows together


@dataclass(frozen=True)
class Located:
    """An item with the place it was read from (for error messages)."""

    item: CulturalItem
    file: str
    line: int | str

    @property
    def where(self) -> str:
        """The place, ``FILE:LINE`` (LINE a line or row number), for error messages."""
        return _where(self.file, self.line)


def check_consistency(located: Sequence[Located], *, complete: bool = True) -> None:
    """Checks across rows: unique ids; rows of a question share language, topic and options and
    have distinct countries; with ``complete``, every country of the group has a row.

    Raises :class:`DatasetError` naming the file and line of the offending row.
    """
    seen_ids: dict[str, Located] = {}
    questions: dict[str, list[Located]] = {}
    for entry in located:
        item = entry.item
        if item.id in seen_ids:
            raise DatasetError(f"{entry.where}: duplicate id {item.id!r} (first at "
                               f"{seen_ids[item.id].where}); ids must be unique")
        seen_ids[item.id] = entry
        questions.setdefault(item.question_id, []).append(entry)
    for question_id, rows in questions.items():
        first = rows[0]
        countries: dict[str, Located] = {}
        for entry in rows:
            item = entry.item
            for name in ("language", "topic", "options"):
                if getattr(item, name) != getattr(first.item, name):
                    raise DatasetError(
                        f"{entry.where}: row {item.id} has a different {name} from row "
                        f"{first.item.id} ({first.where}) of the same question {question_id!r}; "
                        f"all rows of a question share language, topic and options")
            if item.country in countries:
                raise DatasetError(f"{entry.where}: question {question_id!r} has two rows for "
                                   f"{item.country} (the other at "
                                   f"{countries[item.country].where}); keep one")
            countries[item.country] = entry
        if complete and first.item.language in LANGUAGE_GROUPS:
            group = LANGUAGE_GROUPS[first.item.language]
            missing = [c for c in group if c not in countries]
            if missing:
                raise DatasetError(f"{first.where}: question {question_id!r} has no row for "
                                   f"{', '.join(missing)}; a question needs one row per country "
                                   f"of its group ({', '.join(group)})")


def validate_items(items: Sequence[CulturalItem], *, source: str = "<items>") -> None:
    """Validate items built in memory (each row, then the rows together)."""
    located = []
    for index, item in enumerate(items):
        validate_record(item.to_record(), file=source, line=index + 1)
        located.append(Located(item, source, index + 1))
    check_consistency(located)


def dataset_hash(items: Iterable[CulturalItem]) -> str:
    """A stable sha256 of the items' content, independent of their order (for the metadata of
    steering vectors: which data a vector was trained on)."""
    records = sorted((item.to_record() for item in items),
                     key=lambda record: (record["id"], json.dumps(record, sort_keys=True)))
    payload = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
