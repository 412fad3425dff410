"""The general-ability cost of steering: cross-entropy and KL to the unsteered model on neutral text.

A steering vector is added at every position (eq. 2: ``h + d·λ·v``; eq. 3 for the sparse
methods), so it also acts on text that has nothing to do with the behaviour or culture it was
trained for. How much it damages ordinary language modelling is measured on held-out neutral
text ``t = (t_1 … t_T)`` (``yapo_interp/data/neutral/neutral.jsonl``: the water cycle and the
bicycle, in the five languages of the cultural set; not in the SAE corpus) as

    CE_λ  = −1/(T−1) · Σ_j log π_λ(t_{j+1} | t_{≤j})                       (nats per token)
    ΔCE_λ = CE_λ − CE_0          (the perplexity ratio is exp(ΔCE_λ))
    KL_λ  = 1/(T−1) · Σ_j KL( π_0(· | t_{≤j}) ‖ π_λ(· | t_{≤j}) )

where ``π_0`` is the unsteered model and ``π_λ`` the model steered with multiplier ``λ·d``. At
``λ = 0`` every method is the unsteered model, so ``ΔCE`` and ``KL`` are exactly 0 (the tests
check this, with the hooks on). SteeringControl (effectiveness against entanglement) and
AxBench (steering strength chosen against fluency) motivate reporting this next to the effect;
``yapo_interp.behaviour`` plots one against the other.

The unsteered log-probabilities of a batch are computed once and compared with every
condition's, so a sweep costs one forward pass per condition and batch. The full vocabulary is
needed for the KL (262,144 entries per position for Gemma), so texts are cut at ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from yapo_interp.errors import DatasetError, UserError
from yapo_interp.io import read_jsonl_lines, read_text
from yapo_interp.logprobs import pad_token_id, right_pad

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NEUTRAL_FILE = Path(__file__).resolve().parent / "data" / "neutral" / "neutral.jsonl"


@dataclass(frozen=True)
class NeutralText:
    """One paragraph of neutral text."""

    id: str
    language: str
    text: str


def load_neutral_texts(path: str | Path | None = None, *,
                       languages: Sequence[str] | None = None) -> list[NeutralText]:
    """The shipped neutral paragraphs (``path=None``) or a JSONL file of ``{"id", "language",
    "text"}`` objects (or a plain ``.txt`` file: one paragraph per blank-line-separated block),
    optionally only some languages."""
    path = Path(path) if path is not None else NEUTRAL_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: no such neutral-text file")
    texts = []
    if path.suffix.lower() == ".txt":
        blocks = [block.strip() for block in read_text(path).split("\n\n") if block.strip()]
        texts = [NeutralText(f"{path.stem}-{number}", "unknown", block)
                 for number, block in enumerate(blocks, 1)]
    else:
        for line_number, record in read_jsonl_lines(path):
            try:
                texts.append(NeutralText(str(record["id"]), str(record.get("language", "unknown")),
                                         str(record["text"])))
            except (AttributeError, KeyError, TypeError):
                raise DatasetError(f"{path}:{line_number}: expected a JSON object with 'id' and "
                                   f"'text'") from None
    if languages:
        wanted = {language.lower() for language in languages}
        texts = [text for text in texts if text.language.lower() in wanted]
    if not texts:
        raise DatasetError(f"{path}: no texts{' for ' + ', '.join(languages) if languages else ''}")
    return texts


def token_logprobs(model: HookedTransformer, tokens: Int[torch.Tensor, "batch pos"]
                   ) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Next-token log-probabilities at every position (float32), under the active hooks."""
    with torch.no_grad():
        logits = model(tokens.to(model.cfg.device), padding_side="right")
    return F.log_softmax(logits.float(), dim=-1)


def sequence_costs(
    base: Float[torch.Tensor, "batch pos d_vocab"],
    steered: Float[torch.Tensor, "batch pos d_vocab"],
    tokens: Int[torch.Tensor, "batch pos"],
    lengths: Int[torch.Tensor, "batch"],
) -> dict[str, Float[torch.Tensor, "batch"]]:
    """Per sequence: mean CE of the steered and the unsteered model, and mean
    ``KL(π_0 ‖ π_λ)``, over the positions that predict a real next token."""
    targets = tokens[:, 1:].to(base.device)
    positions = torch.arange(tokens.shape[1] - 1, device=base.device)
    mask = (positions[None, :] < (lengths.to(base.device)[:, None] - 1)).float()
    count = mask.sum(dim=1).clamp(min=1)
    ce_base = -(base[:, :-1].gather(-1, targets[..., None])[..., 0] * mask).sum(1) / count
    ce = -(steered[:, :-1].gather(-1, targets[..., None])[..., 0] * mask).sum(1) / count
    kl_tokens = (base[:, :-1].exp() * (base[:, :-1] - steered[:, :-1])).sum(-1)
    kl = (kl_tokens * mask).sum(1) / count
    return {"ce": ce, "ce_base": ce_base, "kl": kl}


def steering_cost(model: HookedTransformer, texts: Sequence[NeutralText],
                  conditions: Sequence, *, max_tokens: int = 128, batch_size: int = 4
                  ) -> pd.DataFrame:
    """One row per (condition, text): ``ce``, ``ce_base``, ``ce_increase`` (= ce − ce_base) and
    ``kl`` in nats per token, ``n_tokens``, the text's ``language``, and the condition's
    ``describe()`` fields. ``conditions`` are :class:`yapo_interp.evaluate.Condition` objects (a
    baseline one costs exactly 0)."""
    if max_tokens < 2:
        raise UserError(f"--cost-max-tokens must be at least 2, got {max_tokens}")
    ids = [model.to_tokens(text.text, prepend_bos=True, truncate=False)[0, :max_tokens].cpu()
           for text in texts]
    records = []
    for start in range(0, len(texts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(texts))))
        tokens, lengths = right_pad([ids[i] for i in chunk], pad_token_id(model))
        base = token_logprobs(model, tokens)
        for condition in conditions:
            if condition.is_baseline:
                steered = base
            else:
                with condition.active(model):
                    steered = token_logprobs(model, tokens)
            costs = sequence_costs(base, steered, tokens, lengths)
            for row, index in enumerate(chunk):
                ce, ce_base = float(costs["ce"][row]), float(costs["ce_base"][row])
                records.append({**condition.describe(), "text_id": texts[index].id,
                                "language": texts[index].language,
                                "n_tokens": int(lengths[row]) - 1, "ce": ce, "ce_base": ce_base,
                                "ce_increase": ce - ce_base, "kl": float(costs["kl"][row])})
    return pd.DataFrame.from_records(records)


__all__ = ["NEUTRAL_FILE", "NeutralText", "load_neutral_texts", "sequence_costs",
           "steering_cost", "token_logprobs"]
