"""Command lines written back from configs: each stage config's ``to_argv()`` is built from
``flag`` and ``switch``, and ``command_line`` makes the shell line a report shows."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any


def flag(name: str, value: Any) -> list[str]:
    """The argv of option ``name`` with ``value``: ``[name, str(value)]``, ``[name, *values]``
    for a list or tuple (``[]`` when empty), ``[]`` for ``None`` (the option left out)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [name, *map(str, value)] if value else []
    return [name, str(value)]


def switch(name: str, on: bool) -> list[str]:
    """``[name]`` when ``on`` (a flag without a value), else ``[]``."""
    return [name] if on else []


def command_line(module: str, argv: Sequence[Any]) -> str:
    """``python -m yapo_interp.MODULE ARGV...``, each argument quoted for a POSIX shell."""
    return f"python -m yapo_interp.{module} " + shlex.join(str(arg) for arg in argv)
