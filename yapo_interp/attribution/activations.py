"""Running the model over dataset prompts: their tokens, the residual stream at a layer in
batches (right-padded, the model stopped after the layer), its mean, and the real tokens' rows
(``token_activations``, the input of the effect attribution)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from yapo_interp.errors import UserError
from yapo_interp.hooks import hook_name_for

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from transformer_lens import HookedTransformer


def _tokenize(model: HookedTransformer, prompts: Sequence[str], max_tokens: int
              ) -> list[torch.Tensor]:
    """Each prompt's tokens (BOS first), cut to ``max_tokens``, on the CPU."""
    return [model.to_tokens(prompt, prepend_bos=True)[0, :max_tokens].cpu() for prompt in prompts]


def _padded(token_lists: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    """The token lists as one ``[batch, pos]`` tensor, right-padded with ``pad_id``."""
    width = max(len(tokens) for tokens in token_lists)
    batch = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        batch[row, : len(tokens)] = tokens
    return batch


def _layer_activations(
    model: HookedTransformer, layer: int, token_lists: list[torch.Tensor], batch_size: int,
    description: str,
):
    """Yield (first prompt index, [batch, pos, d_model] residual stream at layer, lengths)."""
    hook_name = hook_name_for(layer)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer is not None else None
    pad_id = 0 if pad_id is None else pad_id
    starts = range(0, len(token_lists), batch_size)
    for start in tqdm(starts, desc=description, leave=False, disable=len(starts) < 2):
        chunk = token_lists[start:start + batch_size]
        tokens = _padded(chunk, pad_id).to(model.cfg.device)
        with torch.no_grad():
            # right padding: with causal attention the real positions never see the pads
            _, cache = model.run_with_cache(tokens, names_filter=hook_name,
                                            stop_at_layer=layer + 1)
        yield start, cache[hook_name], [len(tokens_) for tokens_ in chunk]


def mean_activation(
    model: HookedTransformer, layer: int, prompts: Sequence[str], *, batch_size: int = 8,
    max_tokens: int = 256, skip_bos: bool = True,
) -> Float[torch.Tensor, "d_model"]:
    """Mean residual stream at ``blocks.{layer}.hook_resid_post`` over the prompts' tokens."""
    if not prompts:
        raise UserError("mean_activation needs at least one prompt.")
    total = torch.zeros(model.cfg.d_model, dtype=torch.float64)
    count = 0
    token_lists = _tokenize(model, prompts, max_tokens)
    first = 1 if skip_bos else 0
    for _, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                "mean activation"):
        for row, length in enumerate(lengths):
            total += resid[row, first:length].double().sum(0).cpu()
            count += max(length - first, 0)
    if count == 0:
        raise UserError("The prompts have no tokens after BOS; give longer prompts.")
    return (total / count).to(model.cfg.dtype)


def token_activations(
    model: HookedTransformer, layer: int, prompts: Sequence[str], *, batch_size: int = 8,
    max_tokens: int = 256, skip_bos: bool = True,
) -> Iterator[Float[torch.Tensor, "token d_model"]]:
    """The residual stream at ``blocks.{layer}.hook_resid_post`` of the prompts' real tokens
    (no padding; BOS left out unless ``skip_bos=False``), one tensor per batch of prompts."""
    first = 1 if skip_bos else 0
    token_lists = _tokenize(model, prompts, max_tokens)
    for _, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                "effect attribution"):
        rows = [resid[row, first:length] for row, length in enumerate(lengths)]
        yield torch.cat(rows) if rows else resid[:0, 0]


def _token_strings(model: HookedTransformer, token_ids: Sequence[int]) -> list[str]:
    """The tokens as strings, one per id."""
    return list(model.to_str_tokens(torch.tensor(list(token_ids), dtype=torch.long)))
