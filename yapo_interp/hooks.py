"""TransformerLens hook names, spelled in one place.

TransformerLens names an activation ``blocks.{layer}.hook_{site}``; the toolkit builds such names
only with TransformerLens's ``get_act_name`` (:func:`act_name`, :func:`hook_name_for`) and reads
the layer back out of one only with SAELens's ``extract_layer_from_tlens_hook_name``
(:func:`hook_layer`, :func:`sae_layer`: an SAE records its hook name, not its layer).

Both libraries are imported at the first call rather than with this module: importing either takes
seconds, and every caller holds a model or an SAE, so by then they are loaded anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sae_lens import SAE


def act_name(site: str, layer: int) -> str:
    """The hook name of activation ``site`` (``"resid_post"``, ``"resid_pre"``, ``"attn_out"``,
    ``"mlp_out"``, ...) of block ``layer``: ``blocks.{layer}.hook_{site}``."""
    from transformer_lens.utilities import get_act_name  # local: see the module docstring

    return get_act_name(site, layer)


def hook_name_for(layer: int) -> str:
    """The residual stream after block ``layer`` (``blocks.{layer}.hook_resid_post``): where every
    steering vector and every SAE of this toolkit acts."""
    return act_name("resid_post", layer)


def hook_layer(hook_name: str | None) -> int | None:
    """The layer of a hook name (``blocks.9.hook_resid_post`` -> 9); ``None`` when it names none."""
    if not hook_name:
        return None
    from sae_lens.util import extract_layer_from_tlens_hook_name  # local: see the module docstring

    return extract_layer_from_tlens_hook_name(hook_name)


def sae_layer(sae: SAE) -> int | None:
    """The layer an SAE was trained on, read from the hook name in its metadata (``None`` when the
    SAE records no hook name, or one without a layer)."""
    return hook_layer(sae.cfg.metadata.hook_name if sae.cfg.metadata else None)
