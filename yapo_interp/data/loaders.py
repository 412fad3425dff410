"""Reading cultural items and behaviour pairs from files, with errors that name the file and row.

Three sources are read:

1. **This project's row format** (:mod:`yapo_interp.data.schema`), as JSONL (one object per line;
   the shipped files ``yapo_interp/data/cultural/<language>.jsonl``), JSON (a list of objects),
   CSV/TSV (``options`` as a JSON cell, or one ``option_<country>`` column per country plus
   ``option_western``) or parquet. Every row is validated; a bad row raises
   :class:`~yapo_interp.errors.DatasetError` ``"{file}:{line}: {problem}; {fix}"`` (for parquet
   and JSON lists the position is ``row N``, counted from 1). No valid row is ever dropped.

2. **The authors' preference-pair layout** (the paper's data as published on a model hub as
   ``MBZUAI-Paris/Deep-Culture-Lense``, read from a local copy — nothing is downloaded): a folder
   with one sub-folder or file per country config (``Egypt/train.parquet``, ``egypt.jsonl``,
   ``data/arabic_egypt/test-00000-of-00001.parquet``, ...), rows with the columns

   * ``prompt`` (also accepted: ``question``, ``input``),
   * ``chosen`` (``matching``), ``rejected`` (``not_matching``),
   * ``localization_status`` (``localisation_status``, ``localization``, ``is_localized``,
     ``form``, ``setting``) whose value says the form: ``localized`` / ``localised`` /
     ``explicit`` / ``true`` / ``1`` for the localized form and ``non_localized`` /
     ``non-localized`` / ``nonlocalized`` / ``not_localized`` / ``unlocalized`` / ``implicit`` /
     ``false`` / ``0`` for the other (case, spaces and hyphens ignored);
   * optionally ``country`` (else the country is read from the config's folder or file name,
     e.g. ``KSA``, ``Saudi_Arabia``, ``arabic-egypt``), ``topic`` (``category``),
     ``question_id`` (``qid``) and ``reference_answer`` (``ground_truth``).

   Each row becomes a *partial* :class:`~yapo_interp.data.schema.CulturalItem` whose options are
   the asking country's (``chosen``) and a control option (``rejected``, stored under the key
   ``"western"``), so ``build_preference_pairs(items, setting=..., rejected="western",
   style="raw")`` gives back exactly the authors' pairs. A localized and a non-localized row of
   the same country with the same ``chosen`` and ``rejected`` answers are taken to be the two
   forms of one question (paired in file order) and become one item; the ``question_id`` is the
   given one or derived from the country and ``chosen`` text, so :func:`split_items` keeps all
   rows with the same answer on one side. Prompts are kept as written (no name-form checks).

3. **BiPO behaviour CSVs** (``question, matching, not_matching``; also ``answer_matching_behavior``
   / ``answer_not_matching_behavior``), read by :func:`load_behaviour_csv` into
   :class:`~yapo_interp.data.PreferencePair` (prompt = question, chosen = matching,
   rejected = not_matching).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yapo_interp.data.countries import COUNTRY_LANGUAGE, LANGUAGE_GROUPS, WESTERN, normalise_country
from yapo_interp.data.pairs import PreferencePair
from yapo_interp.data.schema import (CulturalItem, Located, Option, check_consistency,
                                     expected_option_countries, resolve_countries,
                                     resolve_languages, validate_record)
from yapo_interp.errors import DatasetError, UserError
from yapo_interp.io import read_jsonl_lines, read_text

CULTURAL_DIR = Path(__file__).resolve().parent / "cultural"
BEHAVIOUR_DIR = Path(__file__).resolve().parent / "behaviours"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_METADATA_NAMES = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}

# Column names accepted for the authors' layout (first found wins), compared case-insensitively.
AUTHOR_COLUMNS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "question", "input"),
    "chosen": ("chosen", "matching"),
    "rejected": ("rejected", "not_matching"),
    "status": ("localization_status", "localisation_status", "localization", "localisation",
               "is_localized", "is_localised", "form", "setting"),
    "country": ("country", "config"),
    "topic": ("topic", "category"),
    "question_id": ("question_id", "qid"),
    "reference_answer": ("reference_answer", "ground_truth"),
}
AuthorRow = tuple[Path, "int | str", dict]  # (file, line or row, record) of the authors' layout

_LOCALIZED = {"localized", "localised", "local", "loc", "explicit", "true", "1", "yes"}
_NONLOCALIZED = {"nonlocalized", "nonlocalised", "notlocalized", "notlocalised", "unlocalized",
                 "unlocalised", "nonloc", "implicit", "false", "0", "no"}


# --------------------------------------------------------------------------- raw records


def _read_records(path: Path, *, strict_json: bool = True) -> Iterator[tuple[int | str, dict]]:
    """``(position, record)`` for each row of a JSONL / JSON / CSV / TSV / parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for number, record in read_jsonl_lines(path):  # BOM and encoding handled
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: a row must be a JSON object, got "
                                   f"{type(record).__name__}")
            yield number, record
    elif suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(data, list):
            if strict_json:
                raise DatasetError(f"{path}: a JSON dataset file must hold a list of row objects "
                                   f"(or use JSONL, one object per line)")
            return
        for number, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:row {number}: a row must be a JSON object")
            yield f"row {number}", record
    elif suffix in (".csv", ".tsv"):
        with io.StringIO(read_text(path), newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            start = reader.line_num + 1
            for record in reader:
                if None in record:
                    raise DatasetError(f"{path}:{start}: more cells than header columns; quote "
                                       f"cells that contain the delimiter")
                if any(value is None for value in record.values()):
                    raise DatasetError(f"{path}:{start}: fewer cells than header columns")
                yield start, dict(record)
                start = reader.line_num + 1
    elif suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("__index")])
        for number, record in enumerate(frame.to_dict(orient="records"), start=1):
            yield f"row {number}", record
    else:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                           f"{', '.join(DATA_SUFFIXES)}")


def _columns(record: dict) -> dict[str, str]:
    """Lower-cased stripped column name -> original name."""
    return {str(key).strip().lower(): key for key in record}


def _find_column(columns: dict[str, str], role: str) -> str | None:
    for name in AUTHOR_COLUMNS[role]:
        if name in columns:
            return columns[name]
    return None


def _kind(record: dict) -> str:
    columns = _columns(record)
    if "options" in columns or "localized_prompt" in columns or \
            any(name.startswith("option_") for name in columns):
        return "items"
    if {"question", "matching", "not_matching"} <= set(columns) and \
            not any(name in columns for name in AUTHOR_COLUMNS["status"]):
        return "behaviour"
    if all(_find_column(columns, role) for role in ("prompt", "chosen", "rejected", "status")):
        return "authors"
    return "unknown"


# --------------------------------------------------------------------------- the row format


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _coerce_table_record(record: dict) -> dict:
    """CSV/parquet cells -> the JSON row format: ``option_<country>`` columns -> ``options``,
    ``answer`` "2" -> 2. Anything else is left for :func:`validate_record` to judge."""
    record = {str(key).strip(): value for key, value in record.items()}
    option_columns = [key for key in record if key.startswith("option_")]
    if option_columns:
        if "options" in record:
            raise DatasetError("both an 'options' column and option_<country> columns; keep one")
        language = record.get("language")
        order = (expected_option_countries(language) if language in LANGUAGE_GROUPS else
                 [key[len("option_"):] for key in option_columns])
        listed = [key[len("option_"):] for key in option_columns]
        order = [c for c in order if c in listed] + [c for c in listed if c not in order]
        texts = {key[len("option_"):]: record.pop(key) for key in option_columns}
        record["options"] = [{"country": c, "text": texts[c]} for c in order
                             if not _is_missing(texts[c]) and str(texts[c]).strip()]
    answer = record.get("answer")
    if isinstance(answer, str) and re.fullmatch(r"\s*-?\d+\s*", answer):
        record["answer"] = int(answer)
    return record


# --------------------------------------------------------------------------- authors' layout


def _status_form(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "localized" if value else "nonlocalized"
    if hasattr(value, "item"):
        value = value.item()
    key = re.sub(r"[\s_\-]+", "", str(value).strip().lower())
    if key in _LOCALIZED:
        return "localized"
    if key in _NONLOCALIZED:
        return "nonlocalized"
    raise DatasetError(f"{where}: unrecognised localization_status {value!r}; use 'localized' or "
                       f"'non_localized'")


def _country_from_name(name: str) -> str | None:
    """A country key from a config's folder or file name (``KSA``, ``Saudi_Arabia``,
    ``arabic-egypt``), or None."""
    key = normalise_country(name)
    if key in COUNTRY_LANGUAGE:
        return key
    tokens = [token for token in re.split(r"[\s_\-.]+", name.lower()) if token]
    found = set()
    for size in (2, 1):
        for start in range(len(tokens) - size + 1):
            candidate = normalise_country("_".join(tokens[start:start + size]))
            if candidate in COUNTRY_LANGUAGE:
                found.add(candidate)
        if found:
            break
    return found.pop() if len(found) == 1 else None


def _config_country(path: Path, root: Path) -> str | None:
    """The country a file of the authors' layout belongs to, from its path below ``root``."""
    parts = [path.stem]
    for parent in path.parents:
        parts.append(parent.name)
        if parent == root:
            break
    for part in parts:
        country = _country_from_name(part)
        if country:
            return country
    return None


def _short_hash(*texts: str) -> str:
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:10]


def _author_cell(record: dict, role: str, where: str, *, required: bool = True) -> Any:
    """The value of a role's column in an authors' row (stripped text; the status as is)."""
    name = _find_column(_columns(record), role)
    value = None if name is None else record[name]
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        if required:
            raise DatasetError(f"{where}: {AUTHOR_COLUMNS[role][0]!r} is empty or missing")
        return None
    return value if role == "status" else str(value).strip()


def _author_items(rows: list[AuthorRow], root: Path) -> list[Located]:
    """Authors' preference rows (of all files read together) -> partial items (see the module
    docstring): rows of one country with the same answers are grouped over files, so the two
    forms of a question become one item even when they sit in different files."""
    groups: dict[tuple, dict[str, list]] = {}
    for path, position, record in rows:
        where = f"{path}:{position}"
        prompt, chosen, rejected = (_author_cell(record, role, where)
                                    for role in ("prompt", "chosen", "rejected"))
        form = _status_form(_author_cell(record, "status", where), where)
        if chosen == rejected:
            raise DatasetError(f"{where}: chosen and rejected are the same text; a preference "
                               f"pair needs two different answers")
        country_cell = _author_cell(record, "country", where, required=False)
        country = (_country_from_name(country_cell) if country_cell else
                   _config_country(path, root))
        if country is None:
            what = f"country {country_cell!r}" if country_cell else "the country config"
            raise DatasetError(f"{where}: cannot tell {what}; name the config's folder or file "
                               f"after a country ({', '.join(COUNTRY_LANGUAGE)}) or add a "
                               f"'country' column")
        extra = {role: _author_cell(record, role, where, required=False)
                 for role in ("topic", "question_id", "reference_answer")}
        key = (country, extra["question_id"], chosen, rejected)
        group = groups.setdefault(key, {"localized": [], "nonlocalized": [], "extra": extra,
                                        "where": (path, position)})
        group[form].append(prompt)
    located = []
    for (country, question_id, chosen, rejected), group in groups.items():
        extra = group["extra"]
        question_id = question_id or f"{country}-{_short_hash(chosen)}"
        localized, nonlocalized = group["localized"], group["nonlocalized"]
        for index in range(max(len(localized), len(nonlocalized))):
            suffix = f"-{index + 1}" if index else ""
            item = CulturalItem(
                id=f"{question_id}-{_short_hash(chosen, rejected)}{suffix}",
                question_id=question_id, language=COUNTRY_LANGUAGE[country], country=country,
                topic=extra["topic"] or "unknown",
                localized_prompt=localized[index] if index < len(localized) else "",
                nonlocalized_prompt=nonlocalized[index] if index < len(nonlocalized) else "",
                options=(Option(country, chosen), Option(WESTERN, rejected)), answer=0,
                reference_answer=extra["reference_answer"] or chosen,
            )
            located.append(Located(item, str(group["where"][0]), group["where"][1]))
    return located


# --------------------------------------------------------------------------- files and folders


def _read_file(path: Path, *, in_folder: bool = False) -> tuple[list[Located], list[AuthorRow]]:
    """Validated rows of this project's format in one file, or its authors'-layout rows (to be
    turned into items together with those of the other files by :func:`_author_items`)."""
    records = list(_read_records(path, strict_json=not in_folder))
    if not records:
        if in_folder:
            return [], []
        raise DatasetError(f"{path}: the file has no rows")
    kind = _kind(records[0][1])
    if kind == "behaviour":
        raise DatasetError(f"{path}: this is a behaviour CSV (question, matching, not_matching); "
                           f"read it with load_behaviour_csv, not as cultural items")
    if kind == "unknown":
        raise DatasetError(
            f"{path}:{records[0][0]}: unrecognised columns {', '.join(map(str, records[0][1]))}; "
            f"expected this project's row format (id, question_id, language, country, topic, "
            f"localized_prompt, nonlocalized_prompt, options, answer, reference_answer) or the "
            f"authors' layout (prompt, chosen, rejected, localization_status)")
    if kind == "authors":
        for position, record in records:
            if _kind(record) != "authors":
                raise DatasetError(f"{path}:{position}: row lacks prompt/chosen/rejected/"
                                   f"localization_status columns")
        return [], [(path, position, record) for position, record in records]
    located = []
    language_from_name = path.stem.lower() if path.stem.lower() in LANGUAGE_GROUPS else None
    for position, record in records:
        where = f"{path}:{position}"
        if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
            try:
                record = _coerce_table_record(record)
            except DatasetError as error:
                raise DatasetError(f"{where}: {error}") from None
        item = validate_record(record, file=str(path), line=position)
        if language_from_name and item.language != language_from_name:
            raise DatasetError(f"{where}: row {item.id} has language {item.language!r} in a file "
                               f"named {path.name}; move it to {item.language}{path.suffix}")
        located.append(Located(item, str(path), position))
    return located, []


def _data_files(folder: Path) -> list[Path]:
    files = [path for path in folder.rglob("*") if path.is_file()
             and path.suffix.lower() in DATA_SUFFIXES
             and not any(part.startswith(".") for part in path.relative_to(folder).parts)
             and path.name.lower() not in _METADATA_NAMES]
    return sorted(files)


def shipped_files(languages: list[str] | None = None) -> list[Path]:
    """The shipped dataset files that exist (``cultural/<language>.jsonl``), in group order."""
    names = languages or list(LANGUAGE_GROUPS)
    return [CULTURAL_DIR / f"{language}.jsonl" for language in names
            if (CULTURAL_DIR / f"{language}.jsonl").is_file()]


def _check_and_unwrap(located: list[Located], full: list[Located]) -> list[CulturalItem]:
    """Cross-row checks: full rows as a complete set, ids unique over everything."""
    check_consistency(full, complete=True)
    seen: dict[str, Located] = {}
    for entry in located:
        if entry.item.id in seen:
            raise DatasetError(f"{entry.where}: duplicate id {entry.item.id!r} (first at "
                               f"{seen[entry.item.id].where}); ids must be unique")
        seen[entry.item.id] = entry
    return [entry.item for entry in located]


def load_dataset_file(path: str | Path) -> list[CulturalItem]:
    """Read and validate one dataset file (this project's format or the authors' layout).

    Checks every row, then the rows together (unique ids, shared options per question, one row
    per country of the group). Raises :class:`DatasetError` naming the file, line and problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    full, author_rows = _read_file(path)
    located = full + _author_items(author_rows, path.parent)
    return _check_and_unwrap(located, full)


def load_cultural(path: str | Path | None = None, *, languages: list[str] | None = None,
                  countries: list[str] | None = None) -> list[CulturalItem]:
    """Cultural items from the shipped set (``path=None``), a file, or a folder of files (this
    project's format, the authors' per-country layout, or both), validated together.

    ``languages`` / ``countries`` keep only those groups / countries (names as a user types them:
    ``"Egypt"``, ``"KSA"``, ``"arabic"``); filtering happens after validation, and a filter that
    matches nothing raises :class:`UserError`.
    """
    wanted_languages = resolve_languages(languages) if languages else None
    wanted_countries = resolve_countries(countries) if countries else None
    if path is None:
        needed = wanted_languages
        if wanted_countries:
            from_countries = {COUNTRY_LANGUAGE[c] for c in wanted_countries}
            needed = [lang for lang in (needed or list(LANGUAGE_GROUPS)) if lang in from_countries]
        files, root = shipped_files(needed), CULTURAL_DIR
        if not files:
            raise DatasetError(f"{CULTURAL_DIR}: no shipped dataset files "
                               f"(<language>.jsonl); reinstall the package with its data or pass "
                               f"a path")
    else:
        root = Path(path)
        if root.is_file():
            files, root = [root], root.parent
        elif root.is_dir():
            files = _data_files(root)
            if not files:
                raise DatasetError(f"{root}: no dataset files ({', '.join(DATA_SUFFIXES)}) in "
                                   f"this folder")
        else:
            raise DatasetError(f"{root}: no such file or folder")
    full: list[Located] = []
    author_rows: list[AuthorRow] = []
    for file in files:
        rows, authors = _read_file(file, in_folder=path is not None and Path(path).is_dir())
        full.extend(rows)
        author_rows.extend(authors)
    items = _check_and_unwrap(full + _author_items(author_rows, root), full)
    if not items:
        raise DatasetError(f"{path or CULTURAL_DIR}: no rows found")
    present = sorted({item.country for item in items})
    if wanted_languages:
        items = [item for item in items if item.language in wanted_languages]
    if wanted_countries:
        items = [item for item in items if item.country in wanted_countries]
    if not items:
        raise UserError(f"no items for languages={languages} countries={countries} in "
                        f"{path or CULTURAL_DIR}; it has {', '.join(present)}")
    return items


# --------------------------------------------------------------------------- behaviour CSVs

_BEHAVIOUR_COLUMNS = {
    "question": ("question", "prompt"),
    "matching": ("matching", "answer_matching_behavior", "chosen"),
    "not_matching": ("not_matching", "answer_not_matching_behavior", "rejected"),
}


def load_behaviour_csv(path: str | Path) -> list[PreferencePair]:
    """Preference pairs from a BiPO behaviour CSV (``question, matching, not_matching``).

    ``prompt = question``, ``chosen = matching``, ``rejected = not_matching``, texts kept exactly
    as written (no stripping: BiPO answers such as ``" (A)"`` may start with a space). Extra
    columns are ignored; an empty cell raises :class:`DatasetError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such behaviour CSV")
    pairs = []
    names: dict[str, str] | None = None
    for position, record in _read_records(path):
        if names is None:
            columns = _columns(record)
            names = {}
            for role, accepted in _BEHAVIOUR_COLUMNS.items():
                found = next((columns[name] for name in accepted if name in columns), None)
                if found is None:
                    raise DatasetError(f"{path}: no {role!r} column (found "
                                       f"{', '.join(map(str, record))}); a behaviour CSV has the "
                                       f"columns question, matching, not_matching")
                names[role] = found
        values = {role: record[name] for role, name in names.items()}
        for role, value in values.items():
            if _is_missing(value) or not str(value).strip():
                raise DatasetError(f"{path}:{position}: {role!r} is empty; fill it or remove "
                                   f"the row, or read BiPO's whole folder with --behaviour "
                                   f"(load_behaviour), which skips and reports such rows")
        if values["matching"] == values["not_matching"]:
            raise DatasetError(f"{path}:{position}: matching and not_matching are the same")
        pairs.append(PreferencePair(prompt=str(values["question"]),
                                    chosen=str(values["matching"]),
                                    rejected=str(values["not_matching"])))
    if not pairs:
        raise DatasetError(f"{path}: the file has no rows")
    return pairs
