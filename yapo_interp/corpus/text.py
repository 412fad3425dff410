"""The corpus's unit, :class:`Document`, and what every source uses on it: the languages, a
stable hash (which documents are held out) and a cheap language filter by script."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from yapo_interp.data.scripts import letter_script

LANGUAGES = ("english", "spanish", "portuguese", "arabic", "hindi")

# The script that identifies a language; a text "is" Arabic/Hindi when most of its letters are.
SCRIPTS = {"arabic": "arabic", "hindi": "devanagari"}  # language -> data.scripts script


@dataclass(frozen=True)
class Document:
    """A piece of text with the language it is in and the source it came from."""

    text: str
    language: str
    source: str



def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same on every run and machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def is_heldout(text: str, every: int) -> bool:
    """Whether ``text`` is one of the documents held out for evaluation (one in ``every``, by
    :func:`stable_hash`)."""
    return stable_hash(text) % every == 0


def script_fraction(text: str, language: str) -> float:
    """Fraction of the letters of ``text`` in ``language``'s script (Arabic/Devanagari)."""
    script = SCRIPTS[language]
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return 0.0
    return sum(letter_script(char) == script for char in letters) / len(letters)


def looks_like(text: str, language: str) -> bool:
    """Cheap language filter: Arabic and Hindi by script; the Latin-script languages by the
    absence of Arabic/Devanagari letters (English fall-backs are removed elsewhere)."""
    if language in SCRIPTS:
        return script_fraction(text, language) > 0.6
    return all(script_fraction(text, other) < 0.1 for other in SCRIPTS)
