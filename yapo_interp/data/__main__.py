"""Validate cultural dataset files and print their counts (like the paper's table 7).

    python -m yapo_interp.data                      # the shipped set (cultural/*.jsonl)
    python -m yapo_interp.data my_rows.jsonl other/  # files or folders (authors' layout too)
    python -m yapo_interp.data --by-topic --markdown --out counts.md

Every row of every file is validated (see :mod:`yapo_interp.data.schema`); the first problem of
each file is printed as ``error: {file}:{line}: {problem}`` and the command exits with status 2.
The counts are per language, per country and per form (a row counts once for each form it has).

This command loads no model, so it takes none of the common model flags.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from yapo_interp.cli import run_cli
from yapo_interp.data.countries import DISPLAY_NAMES, LANGUAGE_GROUPS
from yapo_interp.data.loaders import CULTURAL_DIR, load_cultural, shipped_files
from yapo_interp.data.schema import FORMS, CulturalItem, resolve_countries, resolve_languages
from yapo_interp.errors import DatasetError, UserError
from yapo_interp.io import write_table, write_text


def count_rows(items: list[CulturalItem]) -> list[dict[str, object]]:
    """Table-7 rows: one per (language, country), a subtotal per language and a total."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in items:
        for form in FORMS:
            if item.has_form(form):
                counts[(item.language, item.country, form)] += 1
    rows: list[dict[str, object]] = []
    grand = Counter()
    for language, countries in LANGUAGE_GROUPS.items():
        subtotal = Counter()
        present = [c for c in countries if any(counts[(language, c, f)] for f in FORMS)]
        if not present:
            continue
        for country in present:
            localized = counts[(language, country, "localized")]
            nonlocalized = counts[(language, country, "nonlocalized")]
            rows.append({"language": language.capitalize(), "country": DISPLAY_NAMES[country],
                         "localized": localized, "nonlocalized": nonlocalized,
                         "total": localized + nonlocalized})
            subtotal.update(localized=localized, nonlocalized=nonlocalized)
        rows.append({"language": language.capitalize(), "country": "Subtotal",
                     **_totals(subtotal)})
        grand.update(subtotal)
    rows.append({"language": "Total", "country": "", **_totals(grand)})
    return rows


def _totals(counter: Counter) -> dict[str, int]:
    return {"localized": counter["localized"], "nonlocalized": counter["nonlocalized"],
            "total": counter["localized"] + counter["nonlocalized"]}


def topic_rows(items: list[CulturalItem]) -> list[dict[str, object]]:
    """Questions per (language, topic)."""
    questions: dict[tuple[str, str], set[str]] = {}
    for item in items:
        questions.setdefault((item.language, item.topic), set()).add(item.question_id)
    return [{"language": language, "topic": topic, "questions": len(ids)}
            for (language, topic), ids in sorted(questions.items())]


def render(rows: list[dict[str, object]], *, markdown: bool = False) -> str:
    """A plain-text (or markdown) table of ``rows``; numbers right-aligned."""
    headers = list(rows[0])
    titles = {"localized": "Localized", "nonlocalized": "Non-localized"}
    names = [titles.get(h, h.capitalize()) for h in headers]
    cells = [[f"{row[h]:,}" if isinstance(row[h], int) else str(row[h]) for h in headers]
             for row in rows]
    widths = [max(len(names[i]), *(len(r[i]) for r in cells)) for i in range(len(headers))]
    numeric = [all(isinstance(row[h], int) for row in rows) for h in headers]

    columns = list(zip(widths, numeric, strict=True))

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, (w, num) in zip(values, columns, strict=True)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    if markdown:
        separator = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2)
                                   for w, num in columns) + "|"
    else:
        separator = "  ".join("-" * w for w in widths)
    return "\n".join([line(names), separator, *(line(r) for r in cells)])


def main(argv: list[str] | None = None) -> int:
    """Validate the dataset files (or the shipped set) and print their counts; 2 when one fails."""
    parser = argparse.ArgumentParser(prog="python -m yapo_interp.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, metavar="FILES",
                        help=f"dataset files or folders (default: the shipped set in "
                             f"{CULTURAL_DIR})")
    parser.add_argument("--languages", nargs="+", default=None, help="count only these groups")
    parser.add_argument("--countries", nargs="+", default=None,
                        help="count only these countries (e.g. egypt KSA levant)")
    parser.add_argument("--by-topic", action="store_true",
                        help="also print the number of questions per language and topic")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the counts table to this .csv / .md / .parquet file")
    args = parser.parse_args(argv)

    paths: list[Path | None] = list(args.paths)
    if not paths:
        if not shipped_files():
            raise UserError(f"no shipped dataset files in {CULTURAL_DIR}; pass dataset files")
        paths = [None]
    items: list[CulturalItem] = []
    seen: dict[str, str] = {}
    failed = 0
    for path in paths:
        label = str(path) if path is not None else str(CULTURAL_DIR)
        try:
            loaded = load_cultural(path)
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        for item in loaded:
            if item.id in seen:
                print(f"error: {label}: duplicate id {item.id!r} (also in {seen[item.id]})",
                      file=sys.stderr)
                failed += 1
                break
            seen[item.id] = label
        else:
            items.extend(loaded)
            print(f"ok: {label}: {len(loaded)} rows, "
                  f"{len({i.question_id for i in loaded})} questions, "
                  f"{len({i.topic for i in loaded})} topics")
    if items and (args.languages or args.countries):
        languages = resolve_languages(args.languages) if args.languages else None
        countries = resolve_countries(args.countries) if args.countries else None
        items = [item for item in items if (not languages or item.language in languages)
                 and (not countries or item.country in countries)]
    if items:
        rows = count_rows(items)
        print()
        print(render(rows, markdown=args.markdown))
        if args.by_topic:
            print()
            print(render(topic_rows(items), markdown=args.markdown))
        if args.out is not None:
            import pandas as pd

            if args.out.suffix == ".md":  # no tabulate needed
                write_text(args.out, render(rows, markdown=True) + "\n")
            else:
                write_table(args.out, pd.DataFrame(rows))
            print(f"\nwrote {args.out}")
    if failed:
        print(f"{failed} of {len(paths)} path(s) failed validation", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
