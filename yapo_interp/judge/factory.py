"""Choosing a judge by name, as the ``--judge`` flag does (:func:`make_judge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yapo_interp.errors import UserError
from yapo_interp.judge.base import Judge
from yapo_interp.judge.endpoint import OpenAIJudge
from yapo_interp.judge.local import LocalJudge


def make_judge(kind: str, *, base_url: str | None = None, model: str | None = None,
               api_key: str | None = None, cache_path: str | Path | None = None,
               **kwargs: Any) -> Judge | None:
    """``"none"`` -> None, ``"local"`` -> LocalJudge, ``"openai"`` -> OpenAIJudge (flags/env)."""
    if kind == "none":
        return None
    if kind == "local":
        return LocalJudge()
    if kind == "openai":
        return OpenAIJudge.from_env(base_url, model, api_key, cache_path=cache_path, **kwargs)
    raise UserError(f"Unknown judge {kind!r}: use none, local or openai.")
