"""Atomic file writing and run metadata: results are never lost or half-written.

Every writer goes through a temporary file in the destination folder followed by ``os.replace``,
which is atomic on POSIX: a reader (or a resumed run) sees the old file or the new one, never a
truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yapo_interp.errors import DatasetError, UserError
from yapo_interp.version import __version__


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.chmod(temporary_path, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically (dataclasses, paths, numpy and torch
    values converted); returns the path."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def read_text(path: str | Path) -> str:
    """A text file's content, decoded as UTF-8 with a leading byte-order mark removed (Excel
    writes one in "CSV UTF-8" exports; left in, it would glue itself to the first column name).

    Bytes that are not UTF-8 raise a one-line ``UserError``
    ``FILE:LINE: not UTF-8 (save it as UTF-8)``, LINE being the first line that holds one.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        line = data.count(b"\n", 0, start + error.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (save it as UTF-8)") from None


def read_json(path: str | Path) -> Any:
    """A JSON file's content (read by :func:`read_text`)."""
    return json.loads(read_text(path))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a line (logs): a crash loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        handle.flush()


def read_jsonl_lines(path: str | Path, *, cut_last_line: bool = False) -> list[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSONL file: the one JSONL parser.

    A line that is not JSON raises a one-line ``DatasetError`` ``FILE:LINE: not valid JSON (MESSAGE
    at column N); ...``; with ``cut_last_line`` a bad *last* non-blank line is dropped instead (a log whose writer crashed mid-line, see :func:`append_jsonl`). The text
    is read by :func:`read_text` (UTF-8, a leading BOM removed) and split at ``\\n``, ``\\r\\n``
    and ``\\r`` only: ``str.splitlines`` would also split inside a JSON string holding U+2028."""
    lines = read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(numbered):
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            if cut_last_line and index == len(numbered) - 1:
                break
            raise DatasetError(f"{path}:{number}: not valid JSON ({error.msg} at column "
                               f"{error.colno}); each line must be one JSON object") from None
    return records


def read_jsonl(path: str | Path) -> list[Any]:
    """Read a JSONL log (written by :func:`append_jsonl`), ignoring a final line cut short by a
    crash; any other line that is not JSON is a ``DatasetError``."""
    return [record for _, record in read_jsonl_lines(path, cut_last_line=True)]


def write_table(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV or parquet (by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        if path.suffix == ".parquet":
            frame.to_parquet(temporary, index=False)
        elif path.suffix == ".md":
            temporary.write_text(frame.to_markdown(index=False), encoding="utf-8")
        else:
            frame.to_csv(temporary, index=False)
    return path


def run_info(settings: Any) -> dict[str, Any]:
    """What is saved beside every result: the settings, versions and time that produced it."""
    import torch

    return {
        "settings": settings,
        "yapo_interp": __version__,
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
