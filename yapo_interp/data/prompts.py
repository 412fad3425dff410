"""Prompt formats: completion prompts for base models, chat templates for instruction models,
and the ``\\boxed{k}`` multiple-choice format the paper evaluates with.

Training (eq. 1 and 4) scores a response ``y`` after a prompt ``x``: ``log π(y | x)``. The prompt
and the response must be cut where the model would continue, so each style has a prompt format
and a matching response format:

* ``"completion"`` (base models, e.g. the embedded Gemma 3 270M): ``"Question: {q}\\nAnswer:"``
  followed by ``" " + answer``, so the answer's first token carries its leading space.
* ``"chat"`` (instruction models, e.g. ``gemma-2-2b-it`` as in the authors' code): the tokenizer's
  chat template with the question as the user turn and the generation prompt added (the model
  turn is open); the response is the answer text itself. A leading BOS token written by the
  template is removed, because TransformerLens prepends BOS itself when it tokenizes a string.
* ``"raw"``: question and answer exactly as given (data that is already formatted, e.g. the
  authors' pairs or BiPO behaviour CSVs).

For MCQ evaluation (section 4.1, footnote 1) the question is followed by its numbered options
and an instruction to answer with ``\\boxed{k}``; :func:`parse_boxed_answer` reads the last
``\\boxed{k}`` of a generation back into a 0-based option index. Options can be shuffled with a
seed; the order is the same for both forms and for every country of a question, so the
localized and non-localized accuracies (``p_loc``, ``p_non`` of eq. 5 and 6) compare like with
like.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any, Literal

from yapo_interp.errors import UserError

if TYPE_CHECKING:
    from yapo_interp.data.schema import CulturalItem, Form

Style = Literal["completion", "chat", "raw"]
STYLES: tuple[str, ...] = ("completion", "chat", "raw")

MCQ_INSTRUCTION = ("Choose the option that fits best. Answer with its number only, written as "
                   "\\boxed{k}.")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise UserError(f"unknown prompt style {style!r}; use 'completion' (base models), 'chat' "
                        f"(instruction models with a chat template) or 'raw'")


def format_prompt(question: str, *, style: Style = "completion", tokenizer: Any = None) -> str:
    """The prompt text for ``question`` in the given style (see the module docstring)."""
    _check_style(style)
    if style == "raw":
        return question
    if style == "completion":
        return f"Question: {question}\nAnswer:"
    if tokenizer is None:
        raise UserError("style='chat' needs the model's tokenizer (tokenizer=model.tokenizer); "
                        "use style='completion' for base models")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat "
                        f"template (a base model?); use style='completion'")
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return text


def format_response(option_text: str, *, style: Style = "completion") -> str:
    """The response text that follows a prompt of the same style (completion: ``" " + text``)."""
    _check_style(style)
    return " " + option_text if style == "completion" else option_text


def mcq_prompt(item: CulturalItem, form: Form, *, style: Style = "chat", tokenizer: Any = None,
               seed: int | None = None,
               instruction: str = MCQ_INSTRUCTION) -> tuple[str, list[int]]:
    """The MCQ prompt of ``item`` in ``form`` and the option order used.

    The question is followed by the options numbered from 1 and by ``instruction``. With
    ``seed=None`` the options keep the dataset's order; with a seed they are shuffled by a
    permutation that depends only on the seed and the question id. Returns ``(prompt, order)``
    where ``order[k]`` is the index in ``item.options`` of the option shown as number ``k + 1``.
    """
    order = list(range(len(item.options)))
    if seed is not None:
        random.Random(f"{seed}:{item.question_id}").shuffle(order)
    lines = [item.prompt(form), ""]
    lines += [f"{number}. {item.options[index].text}" for number, index in enumerate(order, 1)]
    lines += ["", instruction]
    return format_prompt("\n".join(lines), style=style, tokenizer=tokenizer), order


_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text\s*\{\s*)?\(?\s*(\d+)\s*\)?\s*\.?\s*\}?\s*\}")


def parse_boxed_answer(text: str, n_options: int) -> int | None:
    """0-based option index from the last ``\\boxed{k}`` in ``text`` (k counted from 1), or None
    when there is none or k is out of range. Digits of any script are read (``\\boxed{٣}``,
    ``\\boxed{३}``), as are ``\\boxed{ 2 }``, ``\\boxed{(2)}`` and ``\\boxed{\\text{2}}``."""
    matches = _BOXED.findall(text)
    if not matches:
        return None
    number = int(matches[-1])
    return number - 1 if 1 <= number <= n_options else None
