"""Scoring responses: summed log-probabilities log π(y | x), the one way the toolkit scores text.

Both the training objective (eq. 1 and 4 of the paper compare log π(y_w|x) and log π(y_l|x) under
the steered and the unsteered model) and the evaluation (MCQ options are ranked by their
log-likelihood) need the same quantity::

    log π(y | x) = Σ_j log softmax(logits[P + j - 1])[y_j]      j = 0 .. len(y) - 1

where ``P`` is the number of prompt tokens. Two details decide whether two implementations agree:

* **Tokenization.** The prompt is tokenized *with* BOS, the response *without* BOS, and the two id
  lists are concatenated. Tokenizing ``prompt + response`` as one string would let the tokenizer
  merge characters across the boundary, so the "response tokens" would depend on the prompt.
* **Padding.** Sequences of a batch are *right*-padded. With causal attention a real token never
  attends to a later position, so trailing padding cannot change any log-probability we read (the
  tests check padded against unpadded).

Only the positions that predict response tokens go through the final norm and the unembedding
(``ln_final`` + ``W_U``): with Gemma's 262k-token vocabulary the unembedding of every position
dominates the cost of a forward pass. ``response_logprobs`` runs the model with whatever hooks are
active, so inside ``steer(...)`` it scores under the steered model.

**Shared prompts.** An MCQ question scores 4-5 options after one prompt, and patching scores each
option after the same prompt at every layer. Causal attention means the prompt's keys and values do
not depend on what follows, so they are computed once per distinct prompt and reused by every row
that continues it (TransformerLens' ``TransformerLensKeyValueCache``, frozen). A batch is split at
the prompt's *last* token (``SharedPrefixBatch``): the *prefix* (the prompt without its last token,
once per prompt, left-padded) runs once and fills the cache; the *suffix* (the last prompt token,
then the response, right-padded) runs per row against it. Left-padding the prefixes keeps every
row's real tokens contiguous, so relative positions, rotary angles (TransformerLens derives them
from the attention mask) and sliding windows are those of the unpadded sequence: the numbers equal
the plain computation's (``tests/test_logprobs.py``, float64 to 1e-10 on a Gemma-like model with
sliding windows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache


def tokenize_prompt(model: HookedTransformer, prompt: str) -> Int[torch.Tensor, "pos"]:
    """Token ids of ``prompt`` with BOS prepended."""
    return model.to_tokens(prompt, prepend_bos=True, truncate=False)[0].cpu()


def tokenize_response(model: HookedTransformer, response: str) -> Int[torch.Tensor, "pos"]:
    """Token ids of ``response`` without BOS (to be appended to a prompt's ids)."""
    if response == "":
        return torch.zeros(0, dtype=torch.long)
    return model.to_tokens(response, prepend_bos=False, truncate=False)[0].cpu()


def pad_token_id(model: HookedTransformer) -> int:
    """The id right padding uses: the tokenizer's pad token, else 0 (padded positions are masked,
    so any id does)."""
    tokenizer = model.tokenizer
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return 0


def right_pad(
    sequences: Sequence[torch.Tensor], pad_value: float | int = 0
) -> tuple[torch.Tensor, Int[torch.Tensor, "batch"]]:
    """Stack 1-D (or [pos, ...]) tensors of different lengths into one right-padded tensor."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    first = sequences[0]
    padded = torch.full((len(sequences), width, *first.shape[1:]), pad_value, dtype=first.dtype,
                        device=first.device)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    return padded, lengths


def response_positions(
    prompt_lengths: Int[torch.Tensor, "batch"], response_lengths: Int[torch.Tensor, "batch"]
) -> tuple[Int[torch.Tensor, "n"], Int[torch.Tensor, "n"], Int[torch.Tensor, "n"]]:
    """For every response token of a batch of ``prompt + response`` sequences: its row, the
    position whose logits predict it (``P + j - 1``), and its own position (``P + j``)."""
    rows, predicting = [], []
    for row, (prompt_length, response_length) in enumerate(
        zip(prompt_lengths.tolist(), response_lengths.tolist())
    ):
        rows.append(torch.full((response_length,), row, dtype=torch.long))
        predicting.append(torch.arange(prompt_length - 1, prompt_length - 1 + response_length))
    rows_flat = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    predicting_flat = torch.cat(predicting) if predicting else torch.zeros(0, dtype=torch.long)
    return rows_flat, predicting_flat, predicting_flat + 1


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32 before a log-softmax; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def unembedding_matrix(model: HookedTransformer) -> Float[torch.Tensor, "d_vocab d_model"]:
    """``W_U`` transposed to ``[d_vocab, d_model]`` and made contiguous, once.

    In this layout (the one ``nn.Linear`` and Hugging Face's ``lm_head`` use) the unembedding
    matmul runs about 1.6x faster on a CPU than with ``W_U``'s ``[d_model, d_vocab]``.
    TransformerLens 3.9's ``Unembed.forward`` makes this copy on *every* call (671 MB for Gemma's
    262k-token vocabulary); callers that unembed repeatedly make it once and pass it around.
    """
    return model.unembed.W_U.detach().T.contiguous()


@contextmanager
def cached_unembedding(model: HookedTransformer) -> Iterator[None]:
    """Within the block, ``model.unembed`` uses one precomputed ``unembedding_matrix`` instead of
    copying ``W_U`` on every call: the same ``F.linear`` on the same values, so the logits are
    bit-identical (``tests/test_logprobs.py``), but generation no longer copies 671 MB per new
    token (it was two thirds of a generation step on Gemma 3 270M). The module's own
    ``forward`` is restored on exit, also after an exception; hook points are called as before.
    """
    unembed = model.unembed
    matrix = unembedding_matrix(model)

    def forward(residual: torch.Tensor) -> torch.Tensor:
        residual = unembed.hook_in(residual)
        return unembed.hook_out(F.linear(residual, matrix, unembed.b_U))

    unembed.forward = forward
    try:
        yield
    finally:
        del unembed.forward  # back to the class's method


def final_logits(
    model: HookedTransformer,
    resid_final: Float[torch.Tensor, "*batch d_model"],
    unembedding: Float[torch.Tensor, "d_vocab d_model"] | None = None,
) -> Float[torch.Tensor, "*batch d_vocab"]:
    """``ln_final`` + unembedding + logit soft-cap, as ``HookedTransformer.forward`` ends; any
    leading axes (``[batch, pos, d_model]`` or a gathered ``[n, d_model]``).

    The unembedding is ``h @ W_U + b_U`` with the ``unembed.hook_in`` / ``hook_out`` hook points
    called as the module would, computed with ``unembedding`` (from ``unembedding_matrix``) when
    given, else directly with ``W_U`` (no copy). The result is the module's.
    """
    from transformer_lens.utilities import apply_softcap

    residual = resid_final
    if model.cfg.normalization_type is not None:
        residual = model.ln_final(residual)
    unembed = model.unembed
    residual = unembed.hook_in(residual)
    if unembedding is not None:
        logits = F.linear(residual, unembedding, unembed.b_U)
    else:
        flat = torch.addmm(unembed.b_U, residual.reshape(-1, residual.shape[-1]), unembed.W_U)
        logits = flat.reshape(*residual.shape[:-1], flat.shape[-1])
    return apply_softcap(unembed.hook_out(logits), model.cfg.output_logits_soft_cap)


UNEMBED_CHUNK = 256  # rows unembedded at once without gradient (bounds the logits' memory)


def unembed_logprobs(
    model: HookedTransformer,
    resid_final: Float[torch.Tensor, "n d_model"],
    targets: Int[torch.Tensor, "n"],
    unembedding: Float[torch.Tensor, "d_vocab d_model"] | None = None,
    *,
    chunk: int | None = UNEMBED_CHUNK,
) -> Float[torch.Tensor, "n"]:
    """log softmax(unembed(ln_final(h)))[target] for a set of final residual vectors.

    This is exactly what ``HookedTransformer.forward`` does after its last block (final norm,
    unembedding, logit soft-capping), applied only to the positions we need. Without gradient,
    rows go ``chunk`` at a time, so the ``[rows, d_vocab]`` logits never exceed ``chunk`` rows
    (256 rows of Gemma's 262k-token vocabulary: 256 MiB); each row's number is unchanged.
    """
    if chunk is not None and len(resid_final) > chunk and not torch.is_grad_enabled():
        return torch.cat([unembed_logprobs(model, resid_final[start:start + chunk],
                                           targets[start:start + chunk], unembedding, chunk=None)
                          for start in range(0, len(resid_final), chunk)])
    logits = final_logits(model, resid_final, unembedding)
    # cross-entropy = −log softmax(logits)[target], fused: its backward never materialises the
    # one-hot gather gradient over the vocabulary.
    return -F.cross_entropy(upcast(logits), targets.to(logits.device), reduction="none")


def sum_per_row(values: Float[torch.Tensor, "n"], rows: Int[torch.Tensor, "n"],
                n_rows: int) -> Float[torch.Tensor, "batch"]:
    """Sum ``values`` into ``n_rows`` buckets by ``rows`` (differentiable)."""
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(
        0, rows.to(values.device), values
    )


def final_residual(model: HookedTransformer, tokens: Int[torch.Tensor, "batch pos"]
                   ) -> Float[torch.Tensor, "batch pos d_model"]:
    """Run every block (with the active hooks) on right-padded tokens; stop before ``ln_final``."""
    return model(tokens.to(model.cfg.device), padding_side="right",
                 stop_at_layer=model.cfg.n_layers)


def masked_response_logprobs(
    model: HookedTransformer,
    final_residual: Float[torch.Tensor, "batch pos d_model"],
    tokens: Int[torch.Tensor, "batch pos"],
    response_mask: Bool[torch.Tensor, "batch pos"],
    unembedding: Float[torch.Tensor, "d_vocab d_model"] | None = None,
) -> Float[torch.Tensor, "batch"]:
    """Summed log-prob of the tokens where ``response_mask`` is True, each read from the residual
    one position before it: only those positions go through ``unembed_logprobs``."""
    predicting = torch.zeros_like(response_mask)
    predicting[:, :-1] = response_mask[:, 1:]
    rows, positions = predicting.nonzero(as_tuple=True)
    token_logprobs = unembed_logprobs(model, final_residual[rows, positions],
                                      tokens[rows, positions + 1], unembedding)
    return sum_per_row(token_logprobs, rows, tokens.shape[0])


# --------------------------------------------------------------------------------------------
# Shared prompts: each distinct prompt runs once, its keys and values serve all its responses
# --------------------------------------------------------------------------------------------


@dataclass
class SharedPrefixBatch:
    """``prompt + response`` rows split at the prompt's last token.

    ``prefix_tokens`` holds each distinct prompt without its last token, once, left-padded
    (``prefix_mask`` 0 at padding); row ``r`` continues prefix ``prompt_index[r]`` with its
    *suffix*: the prompt's last token, then the response, right-padded (``suffix_mask``). Column 0
    of every suffix is its prompt's last token, so a patch of "the last prompt position" is a
    patch of suffix column 0 for every row.
    """

    prefix_tokens: Int[torch.Tensor, "prompt prefix_pos"]
    prefix_mask: Int[torch.Tensor, "prompt prefix_pos"]
    prompt_index: Int[torch.Tensor, "row"]
    suffix_tokens: Int[torch.Tensor, "row suffix_pos"]
    suffix_mask: Int[torch.Tensor, "row suffix_pos"]

    @property
    def response_mask(self) -> Bool[torch.Tensor, "row suffix_pos"]:
        """True at response tokens (suffix columns 1 .. length - 1)."""
        mask = self.suffix_mask.bool().clone()
        mask[:, 0] = False
        return mask

    @property
    def attention_mask(self) -> Int[torch.Tensor, "row prefix_pos_plus_suffix_pos"]:
        """Each row's mask over its prefix and its suffix, as the cached forward pass sees it."""
        return torch.cat([self.prefix_mask[self.prompt_index], self.suffix_mask], dim=1)

    @property
    def n_rows(self) -> int:
        """The number of (prompt, response) rows."""
        return self.suffix_tokens.shape[0]


def shared_prefix_batch(model: HookedTransformer, prompt_ids: Sequence[torch.Tensor],
                        response_ids: Sequence[torch.Tensor]) -> SharedPrefixBatch:
    """Split token-id rows (prompt with BOS, response without) into a ``SharedPrefixBatch``;
    identical prompts share one prefix. Every prompt needs at least one token."""
    pad = pad_token_id(model)
    index_of: dict[tuple[int, ...], int] = {}
    prompt_index = []
    for ids in prompt_ids:
        prompt_index.append(index_of.setdefault(tuple(ids.tolist()), len(index_of)))
    prefixes = [torch.tensor(key[:-1], dtype=torch.long) for key in index_of]
    width = max(len(prefix) for prefix in prefixes)
    prefix_tokens = torch.full((len(prefixes), width), pad, dtype=torch.long)
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        if len(prefix):
            prefix_tokens[row, width - len(prefix):] = prefix
            prefix_mask[row, width - len(prefix):] = 1
    suffixes = [torch.cat([prompt[-1:], response])
                for prompt, response in zip(prompt_ids, response_ids, strict=True)]
    suffix_tokens, lengths = right_pad(suffixes, pad)
    suffix_mask = (torch.arange(suffix_tokens.shape[1]) < lengths[:, None]).long()
    device = model.cfg.device
    return SharedPrefixBatch(prefix_tokens.to(device), prefix_mask.to(device),
                             torch.tensor(prompt_index, device=device), suffix_tokens.to(device),
                             suffix_mask.to(device))


def prefix_kv_cache(model: HookedTransformer, batch: SharedPrefixBatch
                    ) -> TransformerLensKeyValueCache:
    """Run every prefix once (with the active hooks) and return a frozen key/value cache with one
    row per suffix row: ``model(suffix, past_kv_cache=cache, attention_mask=...)`` then computes
    what the full ``prefix + suffix`` sequence would at the suffix positions."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    n_prompts = batch.prefix_tokens.shape[0]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, n_prompts)
    if batch.prefix_tokens.shape[1] > 0:
        model(batch.prefix_tokens, attention_mask=batch.prefix_mask, past_kv_cache=cache,
              stop_at_layer=model.cfg.n_layers)
    rows = batch.prompt_index
    for entry in cache.entries:
        entry.past_keys = entry.past_keys[rows.to(entry.past_keys.device)]
        entry.past_values = entry.past_values[rows.to(entry.past_values.device)]
    cache.previous_attention_mask = batch.prefix_mask[rows].to(
        cache.previous_attention_mask.device)
    cache.freeze()
    return cache


def suffix_final_residual(model: HookedTransformer, batch: SharedPrefixBatch,
                          cache: TransformerLensKeyValueCache | None = None
                          ) -> Float[torch.Tensor, "row suffix_pos d_model"]:
    """The residual stream after the last block at every suffix position (``cache`` from
    ``prefix_kv_cache``; made here when not given)."""
    cache = prefix_kv_cache(model, batch) if cache is None else cache
    return model(batch.suffix_tokens, attention_mask=batch.suffix_mask, past_kv_cache=cache,
                 stop_at_layer=model.cfg.n_layers)


def response_logprobs(
    model: HookedTransformer,
    prompts: list[str],
    responses: list[str],
    *,
    batch_size: int = 8,
    share_prompts: bool = True,
) -> tuple[Float[torch.Tensor, "batch"], Int[torch.Tensor, "batch"]]:
    """Summed log π(response | prompt) over the response tokens, and the number of those tokens.

    The prompt is tokenized with BOS, the response without BOS and appended (no merges across the
    boundary). Runs under whatever hooks are active on ``model`` (so inside ``steer(...)`` it scores
    the steered model); no gradient. Sequences are batched by length to limit padding; results
    come back in input order. An empty response scores 0 with 0 tokens.

    With ``share_prompts`` (default) each distinct prompt of a batch runs once and its keys and
    values serve every response that follows it (``SharedPrefixBatch``); a batch then holds
    ``batch_size`` distinct prompts with all their responses. The numbers are the plain
    computation's (``share_prompts=False``), as tested.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    prompt_ids = [tokenize_prompt(model, prompt) for prompt in prompts]
    response_ids = [tokenize_response(model, response) for response in responses]
    totals = torch.zeros(len(prompts), dtype=torch.promote_types(model.cfg.dtype, torch.float32))
    counts = torch.tensor([len(ids) for ids in response_ids], dtype=torch.long)
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]) + len(response_ids[i]))
    pad = pad_token_id(model)
    # transposing W_U once pays for itself beyond a few hundred scored tokens
    unembedding = unembedding_matrix(model) if int(counts.sum()) >= 256 else None
    if share_prompts:
        _shared_prompt_totals(model, prompt_ids, response_ids, order, batch_size, unembedding,
                              totals)
        return totals, counts
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            sequences = [torch.cat([prompt_ids[i], response_ids[i]]) for i in chunk]
            tokens, _ = right_pad(sequences, pad)
            prompt_lengths = torch.tensor([len(prompt_ids[i]) for i in chunk])
            rows, predicting, target_positions = response_positions(prompt_lengths, counts[chunk])
            if len(rows) == 0:
                continue
            resid = final_residual(model, tokens)
            token_logprobs = unembed_logprobs(
                model, resid[rows.to(resid.device), predicting.to(resid.device)],
                tokens[rows, target_positions], unembedding,
            )
            totals[chunk] = sum_per_row(token_logprobs, rows, len(chunk)).cpu().to(totals.dtype)
    return totals, counts


def _shared_prompt_totals(model: HookedTransformer, prompt_ids: Sequence[torch.Tensor],
                          response_ids: Sequence[torch.Tensor], order: Sequence[int],
                          batch_size: int, unembedding: torch.Tensor | None,
                          totals: torch.Tensor) -> None:
    """``response_logprobs``' shared-prompt path: fills ``totals`` in place, ``batch_size``
    distinct prompts (with all their non-empty responses) per forward pass."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in order:
        if len(response_ids[i]):
            groups.setdefault(tuple(prompt_ids[i].tolist()), []).append(i)
    chunks = list(groups.values())
    with torch.no_grad():
        for start in range(0, len(chunks), max(1, batch_size)):
            rows = [i for chunk in chunks[start:start + max(1, batch_size)] for i in chunk]
            batch = shared_prefix_batch(model, [prompt_ids[i] for i in rows],
                                        [response_ids[i] for i in rows])
            resid = suffix_final_residual(model, batch)
            sums = masked_response_logprobs(model, resid, batch.suffix_tokens,
                                            batch.response_mask, unembedding)
            totals[rows] = sums.cpu().to(totals.dtype)
