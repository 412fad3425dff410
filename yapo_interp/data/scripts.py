"""Which writing system a letter belongs to: the one table the local judge (does an answer use
the question's script?) and the corpus filter (is a document in Arabic or Hindi?) both read."""

from __future__ import annotations

SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    # Arabic, Arabic Supplement, Arabic Presentation Forms-A and -B
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFEFF)),
    "devanagari": ((0x0900, 0x097F),),
    "latin": ((0x0000, 0x007F), (0x00C0, 0x024F)),  # ASCII, Latin-1 letters, Latin Extended-A/B
}


def letter_script(character: str) -> str:
    """'arabic', 'devanagari', 'latin' or 'other' for one character (by code point)."""
    code = ord(character)
    for script, ranges in SCRIPT_RANGES.items():
        if any(low <= code <= high for low, high in ranges):
            return script
    return "other"
