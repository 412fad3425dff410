"""The project's cultural dataset as corpus documents: only the *training* questions of the
canonical steering split (:data:`CULTURAL_SPLIT`), so that no test question of that split
reached an SAE's training text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from yapo_interp.corpus.text import LANGUAGES, Document
from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, SPLIT_RULE, is_test_question

CULTURAL_DIR = Path(__file__).parent.parent / "data" / "cultural"

# The steering split whose test questions the SAE corpus must never contain.
CULTURAL_SPLIT = {"test_fraction": DEFAULT_TEST_FRACTION, "seed": 0}
CULTURAL_SPLIT_RULE = {"rule": SPLIT_RULE, **CULTURAL_SPLIT}


def _strings(value) -> Iterator[str]:
    """Every string in a JSON value, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _record_language(record: dict, path: Path) -> str:
    """The language of a dataset record: its language field, else its file's name, else
    English."""
    for key in ("language", "language_group", "lang", "group"):
        value = str(record.get(key, "")).lower()
        for language in LANGUAGES:
            if value.startswith(language[:2]) and value[:3] == language[:3]:
                return language
    for language in LANGUAGES:
        if language in path.stem.lower():
            return language
    return "english"


def cultural_documents(folder: Path = CULTURAL_DIR) -> tuple[list[Document], list[Document]]:
    """The project's cultural dataset as (training, held-out) documents.

    Whatever the schema, every string of a record is its text (prompts, options, reference
    answer). A record is held out when its question is a test question of
    :data:`CULTURAL_SPLIT` (the steering split's own rule), so both forms and all countries of a
    test question stay out of the SAE's training text.
    """
    train: list[Document] = []
    heldout: list[Document] = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            texts = [text.strip() for text in _strings(record) if len(text.split()) >= 2]
            if not texts:
                continue
            document = Document("\n".join(texts), _record_language(record, path), "cultural")
            (heldout if is_test_question(_question_key(record, texts), **CULTURAL_SPLIT)
             else train).append(document)
    return train, heldout


def _question_key(record: dict, texts: list[str]) -> str:
    """What the split hashes for a record: its question id, else its id, else its first text."""
    return str(record.get("question_id") or record.get("id") or texts[0])


def cultural_question_ids(folder: Path = CULTURAL_DIR) -> list[str]:
    """The question ids whose text :func:`cultural_documents` puts in the training corpus."""
    seen: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("question_id"):
                key = str(record["question_id"])
                if not is_test_question(key, **CULTURAL_SPLIT):
                    seen.add(key)
    return sorted(seen)
