"""On-policy rejected answers: the model's own greedy answer as ``y_l``.

The authors' data preparation asks the model to answer every training prompt and uses that
answer as the dispreferred response (columns ``rejected_gemma_2_2b_it_mcq`` and
``..._open_ended`` of their dataset): the vector then learns to move the model *from what it
says* to the culturally right answer, rather than from one fixed alternative.
:func:`generated_rejections` does the same once per (model, prompt, generation settings) and
caches the answers on disk, so BiPO, YaPO and every seed train on the same ``y_l`` and a rerun
generates nothing.

Completion-style prompts (``"Question: …\\nAnswer:"``) are continued until the first line break (a
base model would otherwise go on to invent the next question); chat prompts until EOS or the end
of the model's turn. Both are stored as the response text that follows the prompt (a completion
answer keeps its leading space).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yapo_interp import evaluate  # generate_greedy through the package: tests patch it there
from yapo_interp.io import append_jsonl, read_jsonl, write_json

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

CACHE_FORMAT = 2  # 2: completion answers stop at their first line break


@dataclass(frozen=True)
class GenerationSettings:
    """What decides a generated answer; part of the cache key and saved with the cache."""

    model: str
    max_new_tokens: int = 48
    first_line_only: bool = True  # completion prompts: keep the answer's first line
    decoding: str = "greedy"

    def key(self) -> str:
        """A short hash of the settings (and the cache format): the cache file's name."""
        text = json.dumps({**asdict(self), "format": CACHE_FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def clean_answer(text: str, *, first_line_only: bool) -> str:
    """The stored response: a completion answer cut at its first line break, leading space kept
    (it follows ``"Answer:"``), trailing space removed."""
    if first_line_only:
        stripped = text.lstrip(" ")
        text = text[: len(text) - len(stripped)] + stripped.split("\n", 1)[0]
    return text.rstrip()


def generated_rejections(model: HookedTransformer, prompts: Sequence[str], *,
                         settings: GenerationSettings, cache_dir: Path, batch_size: int = 8,
                         progress: bool = True) -> dict[str, str]:
    """``{prompt: the model's greedy answer}`` for every distinct prompt, generated once and
    cached in ``cache_dir/<settings key>.jsonl`` (append-only, so an interrupted run resumes)."""
    from tqdm.auto import tqdm

    path = Path(cache_dir) / f"{settings.key()}.jsonl"
    known = {record["prompt_sha256"]: record["answer"]
             for record in (read_jsonl(path) if path.is_file() else [])}
    todo = [prompt for prompt in dict.fromkeys(prompts) if _prompt_key(prompt) not in known]
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        settings_path = path.with_suffix(".settings.json")
        if not settings_path.is_file():
            write_json(settings_path, asdict(settings))
    # one-line answers: a row ends at its first line break instead of running to max_new_tokens
    stops = evaluate.newline_token_ids(model) if todo and settings.first_line_only else []
    for start in tqdm(range(0, len(todo), batch_size), desc="on-policy answers",
                      disable=not progress or not todo, unit="batch"):
        batch = todo[start:start + batch_size]
        texts = evaluate.generate_greedy(model, batch, max_new_tokens=settings.max_new_tokens,
                                batch_size=batch_size, extra_stops=stops)
        for prompt, text in zip(batch, texts):
            answer = clean_answer(text, first_line_only=settings.first_line_only)
            known[_prompt_key(prompt)] = answer
            append_jsonl(path, {"prompt_sha256": _prompt_key(prompt), "answer": answer})
    return {prompt: known[_prompt_key(prompt)] for prompt in prompts}
