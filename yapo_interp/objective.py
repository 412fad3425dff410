"""The bi-directional preference objective of BiPO (eq. 1) and YaPO (eq. 4): fast and plain.

For a preference triple ``(x, y_w, y_l)`` and a direction ``d ~ U{−1, +1}`` drawn once per
minibatch, the loss is::

    L(v) = −log σ( d·β·[ (log π'(y_w|x) − log π(y_w|x)) − (log π'(y_l|x) − log π(y_l|x)) ] )

averaged over the minibatch, where ``π`` is the unsteered model (the *reference*) and ``π'`` the
model whose layer-``L`` residual stream ``h = A_L(x)`` is steered with ``d·λ·v`` — densely,
``h + d·λ·v`` (BiPO, eq. 1 and 2), through an SAE, ``Φ(h, λ, d, v)`` (YaPO, eq. 3 and 4), or
along SAE decoder rows without encoding, ``h + d·λ·(v @ W_dec)`` (``sae-dense``, the control of
issue 13: YaPO's parameterisation without its sparsity). During
training ``λ = 1``; ``v`` starts at zero, so the first loss is ``log 2``. With ``d = +1`` the loss
pushes the steered model towards ``y_w``, with ``d = −1`` towards ``y_l``.

**β.** Appendix A of the paper does not give β (the "temperature" of algorithm 1); we default to
0.1, the default of BiPO's code (Cao et al., 2024), and every run saves the value it used.

**Computing it plainly** (``plain_logprobs``, what the authors' implementation does): for the
policy, a full forward on ``prompt + y_w`` and on ``prompt + y_l`` with a hook at
``blocks.L.hook_resid_post``; the same two forwards again without the hook for the reference; logits
at every position. **Computing it fast** (``PreferenceObjective``) uses what the objective does not
need to recompute — each shortcut is a flag of ``FastPath`` (and of ``TrainConfig``), and
``tests/test_objective.py`` shows that loss and gradient equal the plain computation for each one
alone and all together:

* ``cache_activations`` — ``A_L(x)`` does not depend on ``v``: the layer-``L`` residual stream of
  every example is computed once, and each step runs only blocks ``L+1 .. N-1``
  (``model(h', start_at_layer=L+1)``).
* ``cache_reference`` — ``π(y|x)`` does not depend on ``v``: computed once per example.
* ``response_only_unembed`` — only the positions that predict response tokens go through
  ``ln_final`` and the unembedding (the 262k-token unembedding dominates Gemma's cost).
* ``batch_chosen_rejected`` — chosen and rejected sequences run as one batch of ``2B`` sequences.
* ``share_prompt`` (needs ``cache_activations``) — chosen and rejected share the prompt: the prompt
  runs once through the upper blocks, filling a key/value cache, and both responses attend to it.
  Right padding keeps positions exact: the rotary positions of the responses are computed from the
  attention mask (TransformerLens's ``get_offset_position_ids``), so each response continues at its
  own prompt's length. Used only where it is exact (absolute or rotary positions; no sliding-window
  attention reaching across padding), else the batch falls back to the unshared computation.

Sequences are right-padded: with causal attention, real tokens never see the padding.

**Perturbation size.** ``PreferenceObjective.perturbation`` measures ``‖Φ(h) − h‖`` averaged over
the tokens of a minibatch (prompt, chosen and rejected tokens, each once) from the cached layer-L
activations the loss uses: one intervention on those tokens, no model forward. Training logs it
per step, so loss can be plotted against how far each method moves the residual stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from yapo_interp.errors import UserError
from yapo_interp.hooks import hook_name_for
from yapo_interp.logprobs import (
    final_logits,
    pad_token_id,
    response_positions,
    right_pad,
    sum_per_row,
    tokenize_prompt,
    tokenize_response,
    unembed_logprobs,
    unembedding_matrix,
    upcast,
)
from yapo_interp.steering import intervention

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from yapo_interp.data import PreferencePair

SteerFn = Callable[[torch.Tensor], torch.Tensor]
RESPONSES = ("chosen", "rejected")


# --------------------------------------------------------------------------------------------
# The loss (pure)
# --------------------------------------------------------------------------------------------


def preference_logits(
    policy_chosen: Float[torch.Tensor, "batch"],
    policy_rejected: Float[torch.Tensor, "batch"],
    reference_chosen: Float[torch.Tensor, "batch"],
    reference_rejected: Float[torch.Tensor, "batch"],
    direction: int,
    beta: float,
) -> Float[torch.Tensor, "batch"]:
    """``d·β·[(log π'(y_w) − log π(y_w)) − (log π'(y_l) − log π(y_l))]`` per example."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    return direction * beta * (chosen_ratio - rejected_ratio)


def preference_loss(
    policy_chosen: Float[torch.Tensor, "batch"],
    policy_rejected: Float[torch.Tensor, "batch"],
    reference_chosen: Float[torch.Tensor, "batch"],
    reference_rejected: Float[torch.Tensor, "batch"],
    direction: int,
    beta: float,
) -> Float[torch.Tensor, ""]:
    """Eq. 1 / eq. 4 for one minibatch: ``mean(−log σ(preference_logits))``."""
    logits = preference_logits(policy_chosen, policy_rejected, reference_chosen,
                               reference_rejected, direction, beta)
    return -F.logsigmoid(logits).mean()


# --------------------------------------------------------------------------------------------
# Examples: tokens, and what is cached about them
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedPair:
    """A tokenized preference pair and, where the fast path caches them, the things that do not
    depend on ``v``: layer-``L`` residuals and reference log-probs."""

    prompt: Int[torch.Tensor, "prompt_pos"]
    chosen: Int[torch.Tensor, "chosen_pos"]
    rejected: Int[torch.Tensor, "rejected_pos"]
    resid_prompt: Float[torch.Tensor, "prompt_pos d_model"] | None = None
    resid_chosen: Float[torch.Tensor, "chosen_pos d_model"] | None = None
    resid_rejected: Float[torch.Tensor, "rejected_pos d_model"] | None = None
    reference_chosen: float | None = None
    reference_rejected: float | None = None

    def response(self, which: str) -> torch.Tensor:
        """The tokens of response ``which`` (``"chosen"`` or ``"rejected"``)."""
        return self.chosen if which == "chosen" else self.rejected

    def response_resid(self, which: str) -> torch.Tensor:
        """The cached layer-``L`` residuals of response ``which`` (``None`` when not cached)."""
        return self.resid_chosen if which == "chosen" else self.resid_rejected

    def sequence(self, which: str) -> torch.Tensor:
        """Prompt and response ``which`` as one token sequence."""
        return torch.cat([self.prompt, self.response(which)])


def tokenize_pairs(model: HookedTransformer, pairs: Sequence[PreferencePair], *,
                   append_eos: bool = False) -> list[PreparedPair]:
    """Prompt with BOS, responses without (as in ``logprobs.response_logprobs``). With
    ``append_eos`` each response ends with the tokenizer's EOS token, as the authors' training
    code appends it: the vector then also learns where the preferred answer stops."""
    eos = torch.zeros(0, dtype=torch.long)
    if append_eos:
        eos_id = getattr(model.tokenizer, "eos_token_id", None)
        if eos_id is None:
            raise UserError("append_eos needs a tokenizer with an EOS token; this model's has "
                            "none. Turn append_eos off.")
        eos = torch.tensor([int(eos_id)], dtype=torch.long)
    prepared = []
    for index, pair in enumerate(pairs):
        for which in RESPONSES:
            if not getattr(pair, which):
                raise UserError(f"Preference pair {index} has an empty {which} response; every "
                                "pair needs a non-empty chosen and rejected text.")
        prepared.append(PreparedPair(
            prompt=tokenize_prompt(model, pair.prompt),
            chosen=torch.cat([tokenize_response(model, pair.chosen), eos]),
            rejected=torch.cat([tokenize_response(model, pair.rejected), eos]),
        ))
    return prepared


def _targets(pairs: Sequence[PreparedPair], which: str):
    """Rows, predicting positions and target ids of every response token of ``prompt + which``
    (positions by ``logprobs.response_positions``, the one definition)."""
    responses = [pair.response(which) for pair in pairs]
    rows, positions, _ = response_positions(torch.tensor([len(pair.prompt) for pair in pairs]),
                                            torch.tensor([len(response) for response in responses]))
    return rows, positions, torch.cat(responses)


def _stack_targets(parts):
    """Concatenate (rows, positions, targets) of several groups, offsetting rows."""
    rows, positions, targets, offset = [], [], [], 0
    for (part_rows, part_positions, part_targets), n_rows in parts:
        rows.append(part_rows + offset)
        positions.append(part_positions)
        targets.append(part_targets)
        offset += n_rows
    return torch.cat(rows), torch.cat(positions), torch.cat(targets)


def _logprobs_at(
    model: HookedTransformer,
    resid_final: Float[torch.Tensor, "batch pos d_model"],
    rows: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    response_only: bool,
    unembedding: torch.Tensor | None = None,
) -> Float[torch.Tensor, "n"]:
    """Log-probs of ``targets`` read at (row, position) of the final residual stream."""
    device = resid_final.device
    rows, positions = rows.to(device), positions.to(device)
    if response_only:
        return unembed_logprobs(model, resid_final[rows, positions], targets, unembedding)
    logits = final_logits(model, resid_final, unembedding)  # every position
    logprobs = torch.log_softmax(upcast(logits), dim=-1)
    return logprobs[rows, positions, targets.to(device)]


def _run_upper(model: HookedTransformer, resid: torch.Tensor, layer: int, **kwargs) -> torch.Tensor:
    """Blocks ``layer+1 .. N-1`` on a layer-``layer`` residual stream (no final norm)."""
    return model(resid, start_at_layer=layer + 1, stop_at_layer=model.cfg.n_layers, **kwargs)


def _steer_hooks(layer: int, steer_fn: SteerFn | None):
    if steer_fn is None:
        return []
    return [(hook_name_for(layer), lambda h, hook: steer_fn(h))]


# --------------------------------------------------------------------------------------------
# The plain computation (the reference implementation the fast path is tested against)
# --------------------------------------------------------------------------------------------


def plain_sequence_logprobs(
    model: HookedTransformer,
    prompts: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    layer: int,
    steer_fn: SteerFn | None,
    unembedding: torch.Tensor | None = None,
) -> Float[torch.Tensor, "batch"]:
    """Full forward of ``prompt + response`` (hook at ``blocks.L.hook_resid_post`` when steered),
    logits at every position, log-softmax, summed over the response tokens.

    The logits are ``model(tokens)``'s, computed by ``final_logits`` — with ``unembedding``
    (``unembedding_matrix(model)``) when given, instead of the copy of ``W_U`` TransformerLens
    makes on every call — so a comparison with the fast path measures the objective, not that
    copy."""
    sequences = [torch.cat([prompt, response]) for prompt, response in zip(prompts, responses)]
    tokens, lengths = right_pad(sequences, pad_token_id(model))
    tokens = tokens.to(model.cfg.device)
    with model.hooks(fwd_hooks=_steer_hooks(layer, steer_fn)):
        resid_final = model(tokens, padding_side="right", stop_at_layer=model.cfg.n_layers)
    logprobs = torch.log_softmax(upcast(final_logits(model, resid_final, unembedding)), dim=-1)
    next_token_logprobs = logprobs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    positions = torch.arange(tokens.shape[1] - 1, device=tokens.device)[None]
    starts = torch.tensor([len(prompt) - 1 for prompt in prompts], device=tokens.device)[:, None]
    ends = starts + torch.tensor([len(r) for r in responses], device=tokens.device)[:, None]
    in_response = (positions >= starts) & (positions < ends)
    return (next_token_logprobs * in_response).sum(-1)


def plain_logprobs(
    model: HookedTransformer,
    pairs: Sequence[PreparedPair],
    layer: int,
    steer_fn: SteerFn,
    unembedding: torch.Tensor | None = None,
) -> dict[str, Float[torch.Tensor, "batch"]]:
    """Policy and reference log-probs as the authors' implementation computes them: four full
    forwards per step (policy and reference, on prompt+chosen and prompt+rejected)."""
    prompts = [pair.prompt for pair in pairs]
    result = {}
    for which in RESPONSES:
        responses = [pair.response(which) for pair in pairs]
        result[f"policy_{which}"] = plain_sequence_logprobs(model, prompts, responses, layer,
                                                            steer_fn, unembedding)
        with torch.no_grad():
            result[f"reference_{which}"] = plain_sequence_logprobs(model, prompts, responses,
                                                                   layer, None, unembedding)
    return result


# --------------------------------------------------------------------------------------------
# The fast computation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastPath:
    """Which shortcuts ``PreferenceObjective`` takes (all on by default; all off = plain)."""

    cache_activations: bool = True
    cache_reference: bool = True
    response_only_unembed: bool = True
    batch_chosen_rejected: bool = True
    share_prompt: bool = True

    def __post_init__(self) -> None:
        if self.share_prompt and not self.cache_activations:
            raise UserError("share_prompt needs cache_activations: the prompt is shared between "
                            "chosen and rejected above the cached layer. Turn both on, or "
                            "share_prompt off.")

    @classmethod
    def plain(cls) -> FastPath:
        """Every shortcut off: the plain computation the fast paths are tested against."""
        return cls(False, False, False, False, False)


class PreferenceObjective:
    """Eq. 1 (BiPO, ``sae=None``) or eq. 4 (YaPO, with ``sae``) at ``layer``, with the shortcuts
    of ``fast_path``; with ``sae`` and ``method="sae-dense"``, the same loss with the steering
    ``h + d·λ·(v @ W_dec)``.

    ``prepare(pairs)`` tokenizes and caches; ``logprobs(batch, steer_fn)`` returns the four
    log-prob vectors; ``loss(batch, v, direction)`` the minibatch loss (differentiable in ``v``).
    """

    def __init__(self, model: HookedTransformer, layer: int, *, sae: SAE | None = None,
                 beta: float = 0.1, multiplier: float = 1.0,
                 fast_path: FastPath | None = None, append_eos: bool = False,
                 method: str | None = None) -> None:
        self.model = model
        self.method = method
        self.append_eos = append_eos
        self.layer = layer
        self.sae = sae
        self.beta = beta
        self.multiplier = multiplier
        self.fast_path = fast_path or FastPath()
        shortformer = model.cfg.positional_embedding_type == "shortformer"
        if self.fast_path.cache_activations and shortformer:
            raise UserError("cache_activations does not support shortformer positional "
                            "embeddings; turn it off for this model.")
        self._unembedding: torch.Tensor | None = None

    @property
    def unembedding(self) -> torch.Tensor:
        """``W_U`` in the fast ``[d_vocab, d_model]`` layout, made once per objective (the model
        is frozen while it trains; 671 MB for Gemma)."""
        if self._unembedding is None:
            self._unembedding = unembedding_matrix(self.model)
        return self._unembedding

    # -- steering ------------------------------------------------------------------------------

    def steer_fn(self, v: torch.Tensor, direction: int) -> SteerFn:
        """The intervention of ``v`` in ``direction`` (strength ``direction · multiplier``) as a
        function of the layer-``L`` residual ``h``."""
        strength = direction * self.multiplier
        return lambda h: intervention(h, v, strength, self.sae, method=self.method)

    @torch.no_grad()
    def perturbation(self, pairs: Sequence[PreparedPair], v: Float[torch.Tensor, "d"],
                     direction: int) -> float | None:
        """``‖Φ(h) − h‖`` averaged over the minibatch's tokens (prompt, chosen and rejected, each
        once), from the cached layer-L activations; ``None`` when they are not cached.

        Interventions act on each token alone, so the tokens are steered as one flat batch: no
        padding, no model forward."""
        if not pairs or any(pair.resid_prompt is None for pair in pairs):
            return None
        h = torch.cat([part for pair in pairs
                       for part in (pair.resid_prompt, pair.resid_chosen, pair.resid_rejected)])
        h = h.to(self.model.cfg.device)
        steered = self.steer_fn(v.detach(), direction)(h)
        return float((steered.float() - h.float()).norm(dim=-1).mean())

    # -- preparation ---------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, pairs: Sequence[PreferencePair], *, batch_size: int = 8,
                progress: bool = False) -> list[PreparedPair]:
        """Tokenize ``pairs``; cache layer-L residuals and reference log-probs if the fast path
        uses them (one forward per sequence, done once)."""
        prepared = tokenize_pairs(self.model, pairs, append_eos=self.append_eos)
        fast = self.fast_path
        if not (fast.cache_activations or fast.cache_reference):
            return prepared
        from tqdm.auto import tqdm

        starts = range(0, len(prepared), batch_size)
        for start in tqdm(starts, desc="caching activations", disable=not progress):
            chunk = prepared[start : start + batch_size]
            for which in RESPONSES:
                tokens, _ = right_pad([pair.sequence(which) for pair in chunk],
                                      pad_token_id(self.model))
                resid = self.model(tokens.to(self.model.cfg.device), padding_side="right",
                                   stop_at_layer=self.layer + 1)
                if fast.cache_reference:
                    rows, positions, targets = _targets(chunk, which)
                    token_logprobs = unembed_logprobs(
                        self.model, _run_upper(self.model, resid, self.layer)[
                            rows.to(resid.device), positions.to(resid.device)], targets,
                        self.unembedding)
                    totals = sum_per_row(token_logprobs, rows, len(chunk)).cpu()
                for row, pair in enumerate(chunk):
                    if fast.cache_activations:
                        n_prompt, n_response = len(pair.prompt), len(pair.response(which))
                        pair.resid_prompt = resid[row, :n_prompt].cpu().clone()
                        setattr(pair, f"resid_{which}",
                                resid[row, n_prompt : n_prompt + n_response].cpu().clone())
                    if fast.cache_reference:
                        setattr(pair, f"reference_{which}", float(totals[row]))
        return prepared

    # -- log-probs -----------------------------------------------------------------------------

    def logprobs(self, pairs: Sequence[PreparedPair], steer_fn: SteerFn
                 ) -> dict[str, Float[torch.Tensor, "batch"]]:
        """``policy_chosen``, ``policy_rejected``, ``reference_chosen``, ``reference_rejected``."""
        fast = self.fast_path
        policy = self._sequence_logprobs(pairs, steer_fn)
        if fast.cache_reference:
            device = policy["chosen"].device
            reference = {which: torch.tensor([getattr(p, f"reference_{which}") for p in pairs],
                                             dtype=policy[which].dtype, device=device)
                         for which in RESPONSES}
        else:
            with torch.no_grad():
                reference = self._sequence_logprobs(pairs, None)
        return {**{f"policy_{k}": v for k, v in policy.items()},
                **{f"reference_{k}": v for k, v in reference.items()}}

    def loss(self, pairs: Sequence[PreparedPair], v: torch.Tensor, direction: int
             ) -> Float[torch.Tensor, ""]:
        """The minibatch loss of eq. 1 / eq. 4 for direction ``d``."""
        result = self.logprobs(pairs, self.steer_fn(v, direction))
        return preference_loss(result["policy_chosen"], result["policy_rejected"],
                               result["reference_chosen"], result["reference_rejected"],
                               direction, self.beta)

    def _sequence_logprobs(self, pairs: Sequence[PreparedPair], steer_fn: SteerFn | None
                           ) -> dict[str, torch.Tensor]:
        fast = self.fast_path
        if fast.share_prompt and self._can_share_prompt(pairs):
            return self._shared_prompt_logprobs(pairs, steer_fn)
        groups = [RESPONSES] if fast.batch_chosen_rejected else [(which,) for which in RESPONSES]
        result = {}
        for group in groups:
            totals = self._group_logprobs(pairs, group, steer_fn)
            for index, which in enumerate(group):
                result[which] = totals[index * len(pairs) : (index + 1) * len(pairs)]
        return result

    def _group_logprobs(self, pairs: Sequence[PreparedPair], group: Sequence[str],
                        steer_fn: SteerFn | None) -> torch.Tensor:
        """Summed response log-probs of ``prompt + response`` for each response kind in
        ``group``, all in one forward batch (rows: group[0] pairs, then group[1] pairs)."""
        model, fast = self.model, self.fast_path
        parts = [(_targets(pairs, which), len(pairs)) for which in group]
        rows, positions, targets = _stack_targets(parts)
        if fast.cache_activations:
            resid, _ = right_pad([torch.cat([pair.resid_prompt, pair.response_resid(which)])
                                  for which in group for pair in pairs])
            resid = resid.to(model.cfg.device)
            if steer_fn is not None:
                resid = steer_fn(resid)
            resid_final = _run_upper(model, resid, self.layer)
        else:
            tokens, _ = right_pad([pair.sequence(which) for which in group for pair in pairs],
                                  pad_token_id(model))
            tokens = tokens.to(model.cfg.device)
            with model.hooks(fwd_hooks=_steer_hooks(self.layer, steer_fn)):
                resid_final = model(tokens, padding_side="right", stop_at_layer=model.cfg.n_layers)
        token_logprobs = _logprobs_at(model, resid_final, rows, positions, targets,
                                      fast.response_only_unembed, self.unembedding)
        return sum_per_row(token_logprobs, rows, len(group) * len(pairs))

    # -- shared prompt -------------------------------------------------------------------------

    def _can_share_prompt(self, pairs: Sequence[PreparedPair]) -> bool:
        cfg = self.model.cfg
        if cfg.positional_embedding_type not in ("standard", "rotary"):
            return False
        if any(pair.resid_prompt is None for pair in pairs):
            return False
        longest = max(len(p.prompt) for p in pairs) + max(
            max(len(p.chosen), len(p.rejected)) for p in pairs)
        has_local = any(getattr(block.attn, "attn_type", "global") == "local"
                        for block in self.model.blocks[self.layer + 1 :])
        return not (has_local and isinstance(cfg.window_size, int) and longest > cfg.window_size)

    def _shared_prompt_logprobs(self, pairs: Sequence[PreparedPair], steer_fn: SteerFn | None
                                ) -> dict[str, torch.Tensor]:
        """The prompt once through the upper blocks (filling a key/value cache), then the chosen
        and rejected responses against that cache."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        model, fast, layer = self.model, self.fast_path, self.layer
        device = model.cfg.device
        n = len(pairs)
        prompt_lengths = torch.tensor([len(pair.prompt) for pair in pairs])
        resid_prompt, _ = right_pad([pair.resid_prompt for pair in pairs])
        resid_prompt = resid_prompt.to(device)
        if steer_fn is not None:
            resid_prompt = steer_fn(resid_prompt)
        prompt_cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, n)
        prompt_final = _run_upper(model, resid_prompt, layer, past_kv_cache=prompt_cache)
        width = resid_prompt.shape[1]
        prompt_mask = (torch.arange(width)[None] < prompt_lengths[:, None]).long()

        groups = [RESPONSES] if fast.batch_chosen_rejected else [(which,) for which in RESPONSES]
        result = {}
        for group in groups:
            copies = len(group)
            entries = [
                TransformerLensKeyValueCacheEntry(
                    past_keys=entry.past_keys.repeat(copies, 1, 1, 1),
                    past_values=entry.past_values.repeat(copies, 1, 1, 1),
                    frozen=True,
                ) if index > layer else entry
                for index, entry in enumerate(prompt_cache.entries)
            ]
            cache = TransformerLensKeyValueCache(
                entries=entries, previous_attention_mask=prompt_mask.repeat(copies, 1),
                frozen=True)
            resid_responses, response_lengths = right_pad(
                [pair.response_resid(which) for which in group for pair in pairs])
            resid_responses = resid_responses.to(device)
            if steer_fn is not None:
                resid_responses = steer_fn(resid_responses)
            mask = torch.cat([prompt_mask.repeat(copies, 1),
                              torch.ones(copies * n, resid_responses.shape[1], dtype=torch.long)],
                             dim=1).to(device)
            response_final = _run_upper(model, resid_responses, layer, past_kv_cache=cache,
                                        attention_mask=mask)
            # token 0 of each response is predicted by the prompt's last position, token j > 0
            # by response position j - 1
            first_rows = torch.arange(copies * n)
            first_positions = (prompt_lengths - 1).repeat(copies)
            first_targets = torch.stack([pair.response(which)[0]
                                         for which in group for pair in pairs])
            rows = torch.cat([torch.full((int(length) - 1,), row, dtype=torch.long)
                              for row, length in enumerate(response_lengths)])
            positions = torch.cat([torch.arange(int(length) - 1) for length in response_lengths])
            targets = torch.cat([pair.response(which)[1:] for which in group for pair in pairs])
            if fast.response_only_unembed:  # one unembedding for all of them: W_U is read once
                gathered = torch.cat([
                    prompt_final[(first_rows % n).to(device), first_positions.to(device)],
                    response_final[rows.to(device), positions.to(device)]])
                token_logprobs = unembed_logprobs(model, gathered,
                                                  torch.cat([first_targets, targets]),
                                                  self.unembedding)
            else:
                token_logprobs = torch.cat([
                    _logprobs_at(model, prompt_final, first_rows % n, first_positions,
                                 first_targets, False, self.unembedding),
                    _logprobs_at(model, response_final, rows, positions, targets, False,
                                 self.unembedding)])
            totals = sum_per_row(token_logprobs, torch.cat([first_rows, rows]), copies * n)
            for index, which in enumerate(group):
                result[which] = totals[index * n : (index + 1) * n]
        return result
