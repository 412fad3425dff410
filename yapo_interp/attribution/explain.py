"""Explaining features offline: the tokens a feature's decoder direction promotes and suppresses
(logit lens), the dataset prompts that activate it most, and its Neuronpedia link (built, never
fetched)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

from yapo_interp.attribution.activations import _layer_activations, _token_strings, _tokenize
from yapo_interp.attribution.config import NEURONPEDIA_URL

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class FeatureLogits:
    """Tokens a feature's decoder direction promotes / suppresses through the unembedding."""

    feature: int
    promoted: list[tuple[str, float]]  # (token, logit change per unit of the feature)
    suppressed: list[tuple[str, float]]


def _through_final_norm(model: HookedTransformer, directions: torch.Tensor) -> torch.Tensor:
    """A residual direction as the unembedding sees it: centred (LayerNorm) and scaled by the
    final norm's gain. The norm's division by the RMS is a positive scalar per position, so it
    changes no ranking and is left out."""
    norm = getattr(model, "ln_final", None)
    if norm is None:
        return directions
    if "LayerNorm" in type(norm).__name__:
        directions = directions - directions.mean(dim=-1, keepdim=True)
    gain = getattr(norm, "w", None)
    return directions * gain if gain is not None else directions


def logit_lens(
    model: HookedTransformer,
    directions: Float[torch.Tensor, "feature d_model"],
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k and bottom-k tokens of ``directions`` through the final norm's gain and ``W_U``.

    Returns (top values, top token ids, bottom values, bottom token ids), each ``[feature, k]``.
    """
    with torch.no_grad():
        directions = directions.to(model.W_U.device, model.W_U.dtype)
        logits = _through_final_norm(model, directions) @ model.W_U  # [feature, d_vocab]
        k = min(k, logits.shape[-1])
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
    return top.values, top.indices, bottom.values, bottom.indices


def feature_logit_lens(
    model: HookedTransformer, sae: SAE, features: Sequence[int], k: int = 10
) -> dict[int, FeatureLogits]:
    """``FeatureLogits`` for each feature: logit lens of its decoder row ``W_dec[f]``."""
    features = list(dict.fromkeys(int(f) for f in features))
    if not features:
        return {}
    rows = sae.W_dec.detach()[torch.tensor(features, device=sae.W_dec.device)]
    top_values, top_ids, bottom_values, bottom_ids = logit_lens(model, rows, k)
    result = {}
    for row, feature in enumerate(features):
        promoted = _token_strings(model, top_ids[row].tolist())
        suppressed = _token_strings(model, bottom_ids[row].tolist())
        result[feature] = FeatureLogits(
            feature=feature,
            promoted=list(zip(promoted, top_values[row].tolist())),
            suppressed=list(zip(suppressed, bottom_values[row].tolist())),
        )
    return result


@dataclass(frozen=True)
class ActivatingExample:
    """One dataset prompt that activates a feature: its strongest position and the value there."""

    feature: int
    activation: float
    prompt_index: int
    position: int  # token position in the prompt (BOS is position 0)
    token: str
    context: str  # up to 12 tokens before the position and 3 after, the token in [[ ]]
    prompt: str

def top_activating_examples(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    prompts: Sequence[str],
    features: Sequence[int],
    k: int = 5,
    *,
    batch_size: int = 8,
    max_tokens: int = 256,
    skip_bos: bool = True,
) -> dict[int, list[ActivatingExample]]:
    """For each feature, the ``k`` prompts where it fires most, strongest first.

    The model runs only up to ``layer`` (``stop_at_layer``); the SAE encodes
    ``blocks.{layer}.hook_resid_post``; a prompt's score is the feature's maximum over its
    positions (BOS excluded unless ``skip_bos=False``), and the position of that maximum is
    reported. Prompts where the feature never fires (activation 0) are not listed.
    """
    features = list(dict.fromkeys(int(f) for f in features))
    if not features or not prompts:
        return {feature: [] for feature in features}
    feature_index = torch.tensor(features, dtype=torch.long)
    n_prompts = len(prompts)
    best_value = torch.full((n_prompts, len(features)), -math.inf)
    best_position = torch.zeros((n_prompts, len(features)), dtype=torch.long)
    token_lists = _tokenize(model, prompts, max_tokens)
    first = 1 if skip_bos else 0
    for start, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                    "top activations"):
        with torch.no_grad():
            acts = sae.encode(resid.to(sae.W_dec.device, sae.W_dec.dtype))
        acts = acts[..., feature_index.to(acts.device)].float().cpu()  # [batch, pos, n_feat]
        for row, length in enumerate(lengths):
            if length <= first:
                continue
            values, positions = acts[row, first:length].max(dim=0)
            best_value[start + row] = values
            best_position[start + row] = positions + first
    result: dict[int, list[ActivatingExample]] = {}
    for column, feature in enumerate(features):
        order = best_value[:, column].argsort(descending=True)[:k]
        examples = []
        for prompt_index in order.tolist():
            value = float(best_value[prompt_index, column])
            if not value > 0:
                break
            tokens = token_lists[prompt_index]
            position = int(best_position[prompt_index, column])
            strings = _token_strings(model, tokens.tolist())
            before = "".join(strings[max(first, position - 12):position])
            after = "".join(strings[position + 1:position + 4])
            examples.append(ActivatingExample(
                feature=feature, activation=value, prompt_index=prompt_index, position=position,
                token=strings[position], context=f"{before}[[{strings[position]}]]{after}",
                prompt=prompts[prompt_index],
            ))
        result[feature] = examples
    return result


def neuronpedia_id(sae: SAE) -> str | None:
    """The SAE's Neuronpedia id from its metadata (e.g. ``gemma-2-2b/15-gemmascope-res-65k``), if
    it has one."""
    metadata = getattr(sae.cfg, "metadata", None)
    return getattr(metadata, "neuronpedia_id", None) if metadata is not None else None


def neuronpedia_url(sae: SAE, feature: int) -> str | None:
    """The feature's Neuronpedia page when the SAE has a Neuronpedia id (e.g. Gemma Scope); only
    the link is built, nothing is fetched."""
    identifier = neuronpedia_id(sae)
    if not identifier:
        return None
    return NEURONPEDIA_URL.format(neuronpedia_id=identifier, feature=int(feature))
