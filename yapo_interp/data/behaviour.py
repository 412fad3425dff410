"""BiPO's behaviour sets: the ``<behaviour>/{train,test,test_infer}.csv`` layout, read as BiPO
uses it (prompt template, leading-space answers), with a stated policy for malformed rows.

BiPO (Cao et al., NeurIPS 2024) trains and evaluates behaviour steering vectors on sets of
model-written persona questions. Each behaviour is a folder of three files:

==================  ==================================  ===========================================
file                columns                             used for
==================  ==================================  ===========================================
``train.csv``       ``question, matching, not_matching``  the preference pairs of eq. 1 / eq. 4
``test.csv``        ``question, matching, not_matching``  log-odds and open-ended answers (judged)
``test_infer.csv``  ``question, A, B, matching``          the A/B choice (``matching`` is A or B)
==================  ==================================  ===========================================

``matching`` is the answer that shows the behaviour. Two sets ship with this package
(``yapo_interp/data/behaviours/power-seeking`` and ``wealth-seeking``, copied unchanged from BiPO's
public repository under its MIT licence, which sits beside them); :func:`load_behaviour` reads
those by name and any other folder of the same layout by path.

**Formatting.** A bare question glued to its answer ("...accept?Absolutely!") is not what BiPO
trains on: it wraps the question in the chat format of the model it steers (Llama-2-chat) and
puts a space before each answer. :func:`behaviour_prompt` / :func:`behaviour_response` reproduce
that, with four templates:

* ``"bipo"`` (default) — Llama-2's ``[INST] <<SYS>> … <</SYS>> question [/INST]`` with the
  system line ``"You are a helpful, honest and concise assistant."``; answers ``" " + text``.
  (Reconstructed from BiPO's public code as read when this module was written; the code is not
  vendored here.)
* ``"chat"`` — the steered model's own chat template (instruction models); answers as written.
* ``"completion"`` — ``"Question: {q}\\nAnswer:"`` and ``" " + text``, the toolkit's base-model
  format (:mod:`yapo_interp.data.prompts`).
* ``"raw"`` — the question as written and ``" " + text`` (only the separator added).

The A/B format of ``test_infer.csv`` (:func:`ab_prompt`) shows both answers as ``(A)`` / ``(B)``
choices inside the same template and ends the prompt with ``" ("`` so the next token is the letter,
as in CAA's and BiPO's multiple-choice evaluations.

**Malformed rows.** A row with an empty cell, identical answers, or (``test_infer.csv``) a
``matching`` other than ``A``/``B`` is *skipped and reported* by default: the returned
:class:`FileReport` counts them and keeps the first row numbers and reasons (BiPO's own
``train.csv`` files hold such rows: power-seeking lines 447 and 456 and wealth-seeking line 238
have an empty question). With ``strict=True`` the first malformed row raises a
:class:`~yapo_interp.errors.DatasetError` naming the file and row. A missing column or a file
with no valid row always raises. A row is numbered by the file line it starts on (the header is
line 1; a quoted cell may span lines, so row numbers can run ahead of a spreadsheet's).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from yapo_interp.data.pairs import PreferencePair
from yapo_interp.data.prompts import format_prompt
from yapo_interp.errors import DatasetError, UserError
from yapo_interp.io import read_text

BEHAVIOURS_DIR = Path(__file__).resolve().parent / "behaviours"
FILES: tuple[str, ...] = ("train", "test", "test_infer")
PAIR_COLUMNS: tuple[str, ...] = ("question", "matching", "not_matching")
AB_COLUMNS: tuple[str, ...] = ("question", "A", "B", "matching")

Template = Literal["bipo", "chat", "completion", "raw"]
TEMPLATES: tuple[str, ...] = ("bipo", "chat", "completion", "raw")
BIPO_SYSTEM = "You are a helpful, honest and concise assistant."
AB_INSTRUCTION = "Answer with the letter of your choice."
REPORTED_ROWS = 5  # how many malformed row numbers a report keeps


@dataclass(frozen=True)
class BehaviourPair:
    """One row of ``train.csv`` / ``test.csv``: a question, the answer showing the behaviour
    (``matching``) and the one that does not; ``row`` is its line in the file."""

    question: str
    matching: str
    not_matching: str
    row: int = 0


@dataclass(frozen=True)
class ABItem:
    """One row of ``test_infer.csv``: a question with answers ``A`` and ``B``, ``matching`` the
    letter of the one showing the behaviour."""

    question: str
    a: str
    b: str
    matching: str
    row: int = 0

    @property
    def matching_text(self) -> str:
        """The text of the answer that shows the behaviour."""
        return self.a if self.matching == "A" else self.b

    @property
    def not_matching_text(self) -> str:
        """The text of the answer that does not show the behaviour."""
        return self.b if self.matching == "A" else self.a


@dataclass
class FileReport:
    """What reading one file kept and skipped: ``skipped`` rows in all, the first
    :data:`REPORTED_ROWS` of them as ``(row, reason)``."""

    path: str
    kept: int = 0
    skipped: int = 0
    first_skipped: list[tuple[int, str]] = field(default_factory=list)

    def skip(self, row: int, reason: str) -> None:
        """Count row ``row`` as skipped for ``reason`` (remembered among the first reported ones)."""
        self.skipped += 1
        if len(self.first_skipped) < REPORTED_ROWS:
            self.first_skipped.append((row, reason))

    def summary(self) -> str:
        """One line: ``FILE: kept N rows, skipped M malformed (rows 447 (empty question), ...)``."""
        line = f"{self.path}: kept {self.kept} rows"
        if self.skipped:
            rows = ", ".join(f"{row} ({reason})" for row, reason in self.first_skipped)
            more = ", ..." if self.skipped > len(self.first_skipped) else ""
            line += f", skipped {self.skipped} malformed (rows {rows}{more})"
        return line


@dataclass
class BehaviourSet:
    """The three files of one behaviour folder, read and checked."""

    name: str
    folder: Path
    train: list[BehaviourPair]
    test: list[BehaviourPair]
    test_infer: list[ABItem]
    reports: dict[str, FileReport]

    @property
    def skipped(self) -> int:
        """Rows skipped over the three files."""
        return sum(report.skipped for report in self.reports.values())

    def test_questions_in_train(self) -> list[str]:
        """Questions of ``test.csv`` / ``test_infer.csv`` that also appear in ``train.csv``
        (BiPO's power-seeking set has one)."""
        trained = {pair.question for pair in self.train}
        tested = {pair.question for pair in self.test} | {item.question for item in self.test_infer}
        return sorted(trained & tested)

    def summary(self) -> str:
        """The files' reports, one line each, and a note when test questions are in ``train.csv``."""
        lines = [f"behaviour {self.name} ({self.folder}):"]
        lines += [f"  {report.summary()}" for report in self.reports.values()]
        leaked = self.test_questions_in_train()
        if leaked:
            lines.append(f"  note: {len(leaked)} test question(s) also appear in train.csv")
        return "\n".join(lines)


# --------------------------------------------------------------------------- finding a behaviour


def behaviour_key(name: str) -> str:
    """``"Power Seeking"``, ``"power_seeking"`` -> ``"power-seeking"`` (the folder name)."""
    return re.sub(r"[\s_\-]+", "-", name.strip().lower())


def shipped_behaviours() -> list[str]:
    """Names of the behaviour folders shipped with the package."""
    return sorted(path.name for path in BEHAVIOURS_DIR.iterdir()
                  if path.is_dir() and (path / "train.csv").is_file())


def resolve_behaviour(name_or_folder: str | Path) -> Path:
    """The folder of a shipped behaviour (by name) or a user's folder of the same layout."""
    path = Path(name_or_folder).expanduser()
    if path.is_dir():
        return path
    key = behaviour_key(str(name_or_folder))
    shipped = BEHAVIOURS_DIR / key
    if shipped.is_dir() and key:
        return shipped
    if path.is_file():
        raise UserError(f"{path} is a file; give the behaviour's folder (with train.csv, "
                        f"test.csv, test_infer.csv) or a shipped name "
                        f"({', '.join(shipped_behaviours())})")
    raise UserError(f"unknown behaviour {str(name_or_folder)!r}: not a folder and not shipped "
                    f"(shipped: {', '.join(shipped_behaviours())})")


# --------------------------------------------------------------------------- reading files


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The header and ``(line, record)`` of a CSV, lines counted as a spreadsheet shows them."""
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in (reader.fieldnames or [])]
    reader.fieldnames = header
    records, previous_end = [], reader.line_num
    for record in reader:  # a quoted cell may span lines: a row is numbered by its first line
        records.append((previous_end + 1, record))
        previous_end = reader.line_num
    return header, records


def _columns(path: Path, header: list[str], wanted: tuple[str, ...]) -> dict[str, str]:
    lowered = {name.lower(): name for name in header}
    found = {}
    for column in wanted:
        name = lowered.get(column.lower())
        if name is None:
            raise DatasetError(f"{path}: no {column!r} column (found {', '.join(header) or 'none'}"
                               f"); this file needs the columns {', '.join(wanted)}")
        found[column] = name
    return found


def _problem(values: dict[str, Any]) -> str | None:
    for column, value in values.items():
        if value is None or not str(value).strip():
            return f"empty {column}"
    return None


def _read_checked(path: str | Path, columns, strict: bool, make):
    """The shared reading policy of both file kinds: every row's values (by column) go to
    ``make(values, line) -> (record, problem)``; a row with a problem is skipped and reported,
    or, with ``strict``, refused in one line naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    header, records = _rows(path)
    names = _columns(path, header, columns)
    report, kept = FileReport(str(path)), []
    for line, record in records:
        values = {column: record.get(name) for column, name in names.items()}
        row, problem = make(values, line)
        if problem is not None:
            if strict:
                raise DatasetError(f"{path}:{line}: {problem}; fix or remove the row (or read "
                                   f"without --strict to skip it)")
            report.skip(line, problem)
            continue
        kept.append(row)
    report.kept = len(kept)
    if not kept:
        raise DatasetError(f"{path}: no valid rows ({report.summary()})")
    return kept, report


def read_pairs_file(path: str | Path, *, strict: bool = False
                    ) -> tuple[list[BehaviourPair], FileReport]:
    """Rows of a ``question, matching, not_matching`` file and a report of the skipped ones
    (see the module docstring for the policy; ``strict`` raises on the first instead)."""

    def make(values, line):
        problem = _problem(values)
        if problem is None and str(values["matching"]).strip() == str(
                values["not_matching"]).strip():
            problem = "matching equals not_matching"
        return BehaviourPair(str(values["question"]), str(values["matching"]),
                             str(values["not_matching"]), line), problem

    return _read_checked(path, PAIR_COLUMNS, strict, make)


def read_ab_file(path: str | Path, *, strict: bool = False) -> tuple[list[ABItem], FileReport]:
    """Rows of a ``question, A, B, matching`` file (``matching`` is ``A`` or ``B``, case and
    brackets ignored: ``(a)`` reads as ``A``) and a report of the skipped ones."""

    def make(values, line):
        problem = _problem(values)
        letter = re.sub(r"[\s()]", "", str(values["matching"] or "")).upper()
        if problem is None and letter not in ("A", "B"):
            problem = f"matching is {values['matching']!r}, not A or B"
        if problem is None and str(values["A"]).strip() == str(values["B"]).strip():
            problem = "A equals B"
        return ABItem(str(values["question"]), str(values["A"]), str(values["B"]), letter,
                      line), problem

    return _read_checked(path, AB_COLUMNS, strict, make)


def load_behaviour(name_or_folder: str | Path, *, strict: bool = False,
                   files: tuple[str, ...] = FILES) -> BehaviourSet:
    """All files of a behaviour: a shipped name (``"power-seeking"``) or a folder with
    ``train.csv``, ``test.csv`` and ``test_infer.csv``. Files not in ``files`` are not read (their
    lists stay empty); a listed file that is missing raises :class:`DatasetError`."""
    folder = resolve_behaviour(name_or_folder)
    unknown = [name for name in files if name not in FILES]
    if unknown:
        raise UserError(f"unknown behaviour file {unknown[0]!r}; use {', '.join(FILES)}")
    missing = [f"{name}.csv" for name in files if not (folder / f"{name}.csv").is_file()]
    if missing:
        raise DatasetError(f"{folder}: missing {', '.join(missing)}; a behaviour folder holds "
                           f"train.csv, test.csv and test_infer.csv (BiPO's layout)")
    reports: dict[str, FileReport] = {}
    loaded: dict[str, list] = {name: [] for name in FILES}
    for name in files:
        reader = read_ab_file if name == "test_infer" else read_pairs_file
        loaded[name], reports[name] = reader(folder / f"{name}.csv", strict=strict)
    return BehaviourSet(folder.name, folder, loaded["train"], loaded["test"],
                        loaded["test_infer"], reports)


# --------------------------------------------------------------------------- formatting


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise UserError(f"unknown behaviour template {template!r}; use {', '.join(TEMPLATES)}")


def behaviour_prompt(question: str, *, template: Template = "bipo", tokenizer: Any = None) -> str:
    """The prompt BiPO scores answers after (see the module docstring for the templates)."""
    _check_template(template)
    if template == "bipo":
        return f"[INST] <<SYS>>\n{BIPO_SYSTEM}\n<</SYS>>\n\n{question} [/INST]"
    if template == "raw":
        return question
    return format_prompt(question, style=template, tokenizer=tokenizer)


def behaviour_response(answer: str, *, template: Template = "bipo") -> str:
    """An answer as it follows :func:`behaviour_prompt`: with BiPO's leading space, except after
    a chat template (whose generation prompt already ends the turn header)."""
    _check_template(template)
    return answer if template == "chat" else " " + answer.lstrip(" ")


def ab_question(item: ABItem) -> str:
    """The question with its two answers as lettered choices."""
    return f"{item.question}\n\nChoices:\n(A) {item.a}\n(B) {item.b}\n\n{AB_INSTRUCTION}"


def ab_prompt(item: ABItem, *, template: Template = "bipo", tokenizer: Any = None) -> str:
    """The A/B prompt of ``item``, ending in ``" ("`` (``"("`` after a chat template) so that the
    next token is the answer's letter."""
    prompt = behaviour_prompt(ab_question(item), template=template, tokenizer=tokenizer)
    return prompt + ("(" if template == "chat" else " (")


def preference_pairs(pairs: list[BehaviourPair], *, template: Template = "bipo",
                     tokenizer: Any = None) -> list[PreferencePair]:
    """Training pairs of eq. 1 / eq. 4: ``x`` = the formatted question, ``y_w`` the matching and
    ``y_l`` the not-matching answer, each with its separator."""
    return [PreferencePair(prompt=behaviour_prompt(pair.question, template=template,
                                                   tokenizer=tokenizer),
                           chosen=behaviour_response(pair.matching, template=template),
                           rejected=behaviour_response(pair.not_matching, template=template))
            for pair in pairs]


__all__ = [
    "AB_COLUMNS", "AB_INSTRUCTION", "ABItem", "BEHAVIOURS_DIR", "BIPO_SYSTEM", "BehaviourPair",
    "BehaviourSet", "FILES", "FileReport", "PAIR_COLUMNS", "TEMPLATES", "ab_prompt",
    "ab_question", "behaviour_key", "behaviour_prompt", "behaviour_response", "load_behaviour",
    "preference_pairs", "read_ab_file", "read_pairs_file", "resolve_behaviour",
    "shipped_behaviours",
]
