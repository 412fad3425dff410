"""Tiny in-process models, tokenizers and SAEs for tests, notebooks' smoke runs and examples.

``tiny_model()`` is a 3-layer HookedTransformer with a character-level tokenizer (ASCII), so
every string-based API of the toolkit can be exercised in milliseconds with no download.
``tiny_sae(model, layer)`` is an SAELens SAE with random weights that fits it.
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import torch

from yapo_interp.hooks import hook_name_for

CHARACTERS = string.printable[:-5]  # printable ASCII without \t\n\r\x0b\x0c, plus ' ' kept
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def char_tokenizer():
    """A PreTrainedTokenizerFast mapping each ASCII character to one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + list(CHARACTERS + "\n"))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>",
    )
    tokenizer.padding_side = "right"
    # TransformerLens re-loads tokenizers by path (to toggle BOS), so give it one on disk; one
    # folder per process, so parallel workers (the Ray sweep tests) never read a half-written one.
    folder = Path(tempfile.gettempdir()) / f"yapo_interp_char_tokenizer_{os.getpid()}"
    tokenizer.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def tiny_model(seed: int = 0, n_layers: int = 3, d_model: int = 32):
    """A small random HookedTransformer (LayerNorm, GELU) with a character tokenizer."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = char_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, d_head=8, n_heads=d_model // 8, d_mlp=4 * d_model,
        d_vocab=len(tokenizer), n_ctx=256, act_fn="gelu", normalization_type="LN",
        seed=seed, default_prepend_bos=True, model_name="tiny-test-model",
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def gemma_like_model(window_size: int = 64, dtype=torch.float64, seed: int = 1):
    """A tiny model with Gemma 3's features: rotary positions, RMSNorm, gated MLP, grouped-query
    attention, q/k norms and alternating local (sliding-window) / global attention; float64 by
    default, so fast paths can be compared with the plain computation to 1e-10."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = char_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=4, d_model=32, d_head=8, n_heads=4, n_key_value_heads=2, d_mlp=64,
        d_vocab=len(tokenizer), n_ctx=256, act_fn="gelu_pytorch_tanh", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=8, gated_mlp=True, use_qk_norm=True,
        use_local_attn=True, attn_types=["local", "global", "local", "global"],
        window_size=window_size, seed=seed, default_prepend_bos=True,
        model_name="tiny-gemma-like", original_architecture="Gemma3ForCausalLM", dtype=dtype,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def tiny_sae(model, layer: int = 1, d_sae: int = 64, seed: int = 0, architecture: str = "standard"):
    """A random SAELens SAE on ``blocks.{layer}.hook_resid_post`` of ``model``.

    ``architecture`` is ``"standard"`` (ReLU), ``"jumprelu"`` or ``"topk"``. Biases and the
    JumpReLU threshold are non-zero so that code which ignores them is caught by tests.
    """
    from sae_lens import (JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig,
                          TopKSAE, TopKSAEConfig)
    from sae_lens.saes.sae import SAEMetadata

    generator = torch.Generator().manual_seed(seed)
    d_in = model.cfg.d_model
    metadata = SAEMetadata(hook_name=hook_name_for(layer),
                           model_name=model.cfg.model_name)
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata))
    elif architecture == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata))
    elif architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8, metadata=metadata))
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=generator) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=generator) / d_sae**0.5)
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=generator))
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=generator))
        if architecture == "jumprelu":
            sae.threshold.copy_(0.05 + 0.05 * torch.rand(d_sae, generator=generator))
    sae.eval()
    for parameter in sae.parameters():
        parameter.requires_grad_(False)
    return sae


def tiny_sweep_setup(layer: int | None = None):
    """``(model, sae, sae_info)`` for ``python -m yapo_interp.sweep --model-factory
    yapo_interp.testing:tiny_sweep_setup``: the tiny model and SAE (layer 1 by default), built
    the same in every Ray worker (fixed seeds)."""
    layer = 1 if layer is None else layer
    model = tiny_model()
    return model, tiny_sae(model, layer=layer), {"release": "tiny", "id": None, "path": None}
