"""The dataset prompts an attribution runs on (``--prompts-from``, ``--max-prompts``): the shipped
cultural set, a file, or none, cut to an evenly spaced subset."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from yapo_interp.data.loaders import load_cultural
from yapo_interp.errors import UserError
from yapo_interp.io import read_jsonl_lines, read_text


def _spread(items: list[str], limit: int) -> list[str]:
    """At most ``limit`` items, evenly spaced (deterministic), keeping every language/country."""
    if limit <= 0 or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _prompts_from_file(path: Path) -> list[str]:
    """The prompts of a .txt (one a line), .jsonl/.json (prompt or question fields) or
    .csv/.parquet (a prompt or question column) file."""
    if not path.is_file():
        raise UserError(f"--prompts-from {path}: no such file (give 'cultural' or a .txt, .jsonl "
                        "or .csv file).")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        prompts = []
        for number, record in read_jsonl_lines(path):
            keys = [key for key in ("prompt", "question", "localized_prompt",
                                    "nonlocalized_prompt") if isinstance(record, dict)
                    and isinstance(record.get(key), str)]
            if not keys:
                raise UserError(f"{path}, line {number}: no 'prompt' or 'question' field.")
            prompts += [record[key] for key in keys]
        return prompts
    if suffix in (".csv", ".parquet"):
        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(
            io.StringIO(read_text(path)))
        for column in ("prompt", "question"):
            if column in frame.columns:
                return [str(value) for value in frame[column].dropna()]
        raise UserError(f"{path} has no 'prompt' or 'question' column (columns: "
                        f"{', '.join(map(str, frame.columns))}).")
    return [line for line in read_text(path).splitlines() if line.strip()]


def _cultural_prompts() -> list[str]:
    """Both forms (localized, non-localized) of every item of the shipped cultural dataset."""
    prompts: dict[str, None] = {}
    for item in load_cultural():
        for text in (item.localized_prompt, item.nonlocalized_prompt):
            if text:
                prompts[text] = None
    if not prompts:
        raise UserError("The shipped cultural dataset gave no prompts; pass --prompts-from FILE.")
    return list(prompts)


def load_prompts(spec: str | None, limit: int = 0) -> list[str]:
    """Dataset prompts for examples: ``"cultural"`` (shipped set), a file, or none."""
    if not spec or spec == "none":
        return []
    prompts = _cultural_prompts() if spec == "cultural" else _prompts_from_file(Path(spec))
    return _spread(prompts, limit)
