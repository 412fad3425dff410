"""Patching as tensor functions: prompt + response batches (whole or with shared prompt
prefixes), a patched forward pass, and the scores of every option clean, localized and patched
at each layer. Pure computation: no files, no CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from yapo_interp.errors import UserError
from yapo_interp.hooks import act_name
from yapo_interp.logprobs import (SharedPrefixBatch, masked_response_logprobs, pad_token_id,
                                  prefix_kv_cache, right_pad, shared_prefix_batch,
                                  tokenize_prompt, tokenize_response, unembed_logprobs,
                                  unembedding_matrix)

SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")  # the sites of hooks.act_name


# --------------------------------------------------------------------------------------------
# Tokens: prompt + candidate responses, right-padded
# --------------------------------------------------------------------------------------------


@dataclass
class PromptResponseBatch:
    """Prompts with responses appended, right-padded; one row per (prompt, response)."""

    tokens: Int[Tensor, "batch pos"]
    response_mask: Bool[Tensor, "batch pos"]  # True at response tokens
    last_prompt_position: Int[Tensor, "batch"]


def tokenize_prompt_response(model, prompts: Sequence[str], responses: Sequence[str]
                             ) -> PromptResponseBatch:
    """Tokenize each prompt with BOS and each response without, and concatenate them
    (``yapo_interp.logprobs``' tokenization, shared with training and evaluation).

    Tokenizing the two parts separately keeps the prompt's tokens identical across its candidate
    responses (no merge across the boundary), so the patched position is the same for all.
    """
    prompt_ids = [tokenize_prompt(model, prompt) for prompt in prompts]
    response_ids = [tokenize_response(model, response) for response in responses]
    for prompt, ids in zip(prompts, response_ids, strict=True):
        if len(ids) == 0:
            raise UserError(f"Empty response for prompt {prompt[:60]!r}: every option needs text.")
    tokens, lengths = right_pad([torch.cat(pair) for pair in zip(prompt_ids, response_ids)],
                                pad_token_id(model))
    prompt_lengths = torch.tensor([len(ids) for ids in prompt_ids])
    positions = torch.arange(tokens.shape[1])
    response_mask = (positions >= prompt_lengths[:, None]) & (positions < lengths[:, None])
    device = model.cfg.device
    return PromptResponseBatch(tokens.to(device), response_mask.to(device),
                               (prompt_lengths - 1).to(device))


def tokenize_shared_prefix(model, prompts: Sequence[str], responses: Sequence[str]
                           ) -> SharedPrefixBatch:
    """``tokenize_prompt_response``'s rows as a ``SharedPrefixBatch``: each distinct prompt once
    (without its last token), each row's suffix = the prompt's last token + the response."""
    response_ids = [tokenize_response(model, response) for response in responses]
    for prompt, ids in zip(prompts, response_ids, strict=True):
        if not ids.numel():
            raise UserError(f"Empty response for prompt {prompt[:60]!r}: every option needs text.")
    return shared_prefix_batch(model, [tokenize_prompt(model, prompt) for prompt in prompts],
                               response_ids)


def first_token_logprobs_from_residual(
    model,
    final_residual: Float[Tensor, "batch pos d_model"],
    tokens: Int[Tensor, "batch pos"],
    last_prompt_position: Int[Tensor, "batch"],
    unembedding: Float[Tensor, "d_vocab d_model"] | None = None,
) -> Float[Tensor, "batch"]:
    """Log-prob of each row's first response token, predicted at its last prompt position."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    return unembed_logprobs(model, final_residual[rows, last_prompt_position],
                            tokens[rows, last_prompt_position + 1], unembedding)


# --------------------------------------------------------------------------------------------
# Patching core (pure tensor functions)
# --------------------------------------------------------------------------------------------


def site_hook_name(layer: int, site: str) -> str:
    """The hook name of ``site`` at ``layer``; a ``UserError`` for a site not in :data:`SITES`."""
    if site not in SITES:
        raise UserError(f"Unknown patch site {site!r}; valid sites: {', '.join(SITES)}.")
    return act_name(site, layer)


def patched_final_residual(
    model,
    tokens: Int[Tensor, "batch pos"],
    *,
    layer: int,
    site: str,
    patch_mask: Bool[Tensor, "batch pos"],
    source: Float[Tensor, "batch pos d_model"],
    resid_pre: Float[Tensor, "batch pos d_model"] | None = None,
    past_kv_cache=None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Run ``tokens`` with the activation at ``site`` of ``layer`` overwritten by ``source``
    wherever ``patch_mask`` is True, and return the residual stream after the last block.

    With ``resid_pre`` (the clean run's residual stream entering ``layer``), blocks below ``layer``
    are not recomputed: causal attention and the layer order make their outputs identical. With
    ``past_kv_cache`` (a frozen ``logprobs.prefix_kv_cache``), ``tokens`` are the suffixes of a
    ``SharedPrefixBatch`` (``attention_mask`` their mask) and the prefix is not recomputed either.
    """

    def overwrite(activation, hook):
        return torch.where(patch_mask[..., None], source.to(activation.dtype), activation)

    cached = {}
    if past_kv_cache is not None:
        cached = {"past_kv_cache": past_kv_cache, "attention_mask": attention_mask}
        if resid_pre is not None:  # past start_at_layer the mask covers prefix + suffix
            cached["attention_mask"] = torch.cat(
                [past_kv_cache.previous_attention_mask.to(attention_mask.device), attention_mask],
                dim=1)
    hook = (site_hook_name(layer, site), overwrite)
    with torch.no_grad(), model.hooks(fwd_hooks=[hook]):
        if resid_pre is None:
            return model(tokens, stop_at_layer=model.cfg.n_layers, **cached)
        return model(resid_pre, start_at_layer=layer, stop_at_layer=model.cfg.n_layers,
                     tokens=tokens, **cached)


def last_token_patch(
    batch_size: int, length: int, positions: Int[Tensor, "batch"],
    values: Float[Tensor, "batch d_model"],
) -> tuple[Bool[Tensor, "batch pos"], Float[Tensor, "batch pos d_model"]]:
    """Mask and source tensors that overwrite one position per row (``positions``) by ``values``."""
    mask = torch.zeros(batch_size, length, dtype=torch.bool, device=values.device)
    mask[torch.arange(batch_size), positions] = True
    source = torch.zeros(batch_size, length, values.shape[-1], dtype=values.dtype,
                         device=values.device)
    source[torch.arange(batch_size), positions] = values
    return mask, source


@dataclass
class PatchingScores:
    """Summed option log-probs: clean, fully localized, and patched at each layer."""

    clean: Float[Tensor, "batch"]
    localized: Float[Tensor, "batch"]
    patched: Float[Tensor, "layer batch"]
    layers: list[int]
    # the same for the first response token alone (first-token readout)
    clean_first: Float[Tensor, "batch"] | None = None
    localized_first: Float[Tensor, "batch"] | None = None
    patched_first: Float[Tensor, "layer batch"] | None = None


@dataclass
class _Runnable:
    """What a patching pass runs for one batch kind: the tokens, where the responses and the last
    prompt token are in them, and the forward-pass arguments (prefix cache and mask, if shared)."""

    tokens: Int[Tensor, "batch pos"]
    response_mask: Bool[Tensor, "batch pos"]
    last_prompt_position: Int[Tensor, "batch"]
    kv_cache: object | None = None
    attention_mask: Int[Tensor, "batch pos"] | None = None

    @classmethod
    def of(cls, model, batch: PromptResponseBatch | SharedPrefixBatch) -> _Runnable:
        if isinstance(batch, PromptResponseBatch):
            return cls(batch.tokens, batch.response_mask, batch.last_prompt_position)
        column_0 = torch.zeros(batch.n_rows, dtype=torch.long, device=batch.suffix_tokens.device)
        return cls(batch.suffix_tokens, batch.response_mask, column_0,
                   prefix_kv_cache(model, batch), batch.suffix_mask)

    def run_with_cache(self, model, names: set[str]):
        cached = ({} if self.kv_cache is None
                  else {"past_kv_cache": self.kv_cache, "attention_mask": self.attention_mask})
        return model.run_with_cache(self.tokens, stop_at_layer=model.cfg.n_layers,
                                    names_filter=lambda name: name in names, **cached)


def patch_last_token_scores(
    model,
    localized: PromptResponseBatch | SharedPrefixBatch,
    nonlocalized: PromptResponseBatch | SharedPrefixBatch,
    *,
    layers: Sequence[int],
    site: str = "resid_post",
) -> PatchingScores:
    """Response log-probs of the non-localized rows, clean and with the localized prompt's
    last-token activation at ``site`` patched in at each of ``layers`` (appendix B).

    Row ``i`` of ``localized`` and ``nonlocalized`` must hold the same response. Both batches are
    ``PromptResponseBatch`` (every row runs its whole sequence) or both ``SharedPrefixBatch``
    (each prompt's tokens before the patched one run once; every patched run executes only the
    patched position and the response, from ``layer`` up): the same numbers, as tested.
    """
    if type(localized) is not type(nonlocalized):
        raise TypeError("localized and nonlocalized must be the same kind of batch")
    site_names = {site_hook_name(layer, site) for layer in layers}
    pre_names = {act_name("resid_pre", layer) for layer in layers}
    unembedding = unembedding_matrix(model)  # made once, reused by all 2 + len(layers) scorings
    with torch.no_grad():
        source, target = _Runnable.of(model, localized), _Runnable.of(model, nonlocalized)
        source_final, source_cache = source.run_with_cache(model, site_names)
        target_final, target_cache = target.run_with_cache(model, pre_names)

        def scores(final, run):
            return masked_response_logprobs(model, final, run.tokens, run.response_mask,
                                            unembedding)

        def first(final, run):
            return first_token_logprobs_from_residual(model, final, run.tokens,
                                                      run.last_prompt_position, unembedding)

        rows = torch.arange(source.tokens.shape[0], device=source.tokens.device)
        patched, patched_first = [], []
        for layer in layers:
            values = source_cache[site_hook_name(layer, site)][rows, source.last_prompt_position]
            mask, values_at = last_token_patch(*target.tokens.shape, target.last_prompt_position,
                                               values)
            final = patched_final_residual(
                model, target.tokens, layer=layer, site=site, patch_mask=mask, source=values_at,
                resid_pre=target_cache[act_name("resid_pre", layer)],
                past_kv_cache=target.kv_cache, attention_mask=target.attention_mask)
            patched.append(scores(final, target))
            patched_first.append(first(final, target))
    return PatchingScores(scores(target_final, target), scores(source_final, source),
                          torch.stack(patched), list(layers), first(target_final, target),
                          first(source_final, source), torch.stack(patched_first))
