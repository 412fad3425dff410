"""The whole analysis as a notebook calls it: ``attribute`` attributes both vectors to SAE features
(by effect on the prompts' activations, or by static encoding), compares them and explains the
listed features, into an ``AttributionReport``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float

from yapo_interp.attribution.activations import mean_activation, token_activations
from yapo_interp.attribution.compare import CodeComparison, compare_codes
from yapo_interp.attribution.config import ATTRIBUTIONS, R2_KS, AttributionConfig
from yapo_interp.attribution.effect import EffectCodes, effect_codes
from yapo_interp.attribution.encode import decoded_direction, encode_dense, fit_quality, r2_by_k
from yapo_interp.attribution.explain import (FeatureLogits, feature_logit_lens,
                                             top_activating_examples)
from yapo_interp.attribution.tables import (effect_features_table, examples_table, feature_table,
                                            r2_table)
from yapo_interp.errors import UserError
from yapo_interp.feature_pages import feature_statistics

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@dataclass
class AttributionReport:
    """Everything one attribution run found; ``features`` is one row per listed feature."""

    config: AttributionConfig
    bipo_code: torch.Tensor
    yapo_code: torch.Tensor
    comparison: CodeComparison
    bipo_fit: dict[str, float]
    features: pd.DataFrame
    examples: pd.DataFrame
    logits: dict[int, FeatureLogits] = field(default_factory=dict)
    r2: pd.DataFrame | None = None  # R² by number of features k (``r2_by_k``), per code
    feature_stats: dict = field(default_factory=dict)  # feature -> feature_pages.FeatureStats
    effects: dict[tuple[str, int], EffectCodes] = field(default_factory=dict)  # effect only
    by_direction: dict[int, CodeComparison] = field(default_factory=dict)  # effect only
    effect_features: pd.DataFrame | None = None  # effect only: top features per direction


def attribute(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    bipo_vector: Float[torch.Tensor, "d_model"],
    yapo_vector: Float[torch.Tensor, "d_sae"],
    prompts: Sequence[str] = (),
    config: AttributionConfig = AttributionConfig(),
) -> AttributionReport:
    """Attribute both vectors to SAE features, compare them, explain the listed features.

    With ``config.attribution == "effect"`` (default) the codes are each vector's effect on the
    SAE code of the prompts' activations (``effect_codes``), per direction, and ``prompts`` are
    required. With ``"static"``, the BiPO vector is encoded by ``config.method`` and YaPO's ``v``
    is taken as it is; ``prompts`` then feed the top-activating examples and, for
    ``method="encoder_offset"``, the mean activation (with none, examples are left empty).
    """
    if bipo_vector.shape != (sae.cfg.d_in,):
        raise UserError(f"The BiPO vector has shape {tuple(bipo_vector.shape)}, but the SAE and "
                        f"model have d_model={sae.cfg.d_in}.")
    if yapo_vector.shape != (sae.cfg.d_sae,):
        raise UserError(f"The YaPO vector has shape {tuple(yapo_vector.shape)}, but the SAE has "
                        f"d_sae={sae.cfg.d_sae}: it was trained with another SAE.")
    prompts = list(prompts)
    if config.attribution not in ATTRIBUTIONS:
        raise UserError(f"Unknown attribution {config.attribution!r}; choose one of "
                        f"{', '.join(ATTRIBUTIONS)}.")
    if config.attribution == "effect":
        return _attribute_by_effect(model, sae, layer, bipo_vector, yapo_vector, prompts, config)
    mean = None
    if config.method == "encoder_offset":
        if not prompts:
            raise UserError("method 'encoder_offset' needs dataset prompts for the mean "
                            "activation (--prompts-from cultural or FILE).")
        mean = mean_activation(model, layer, prompts, batch_size=config.batch_size,
                               max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    bipo_code = encode_dense(bipo_vector, sae, config.method, mean_activation=mean,
                             tol=config.nnls_tol, max_features=config.max_features).cpu()
    yapo_code = yapo_vector.detach().float().cpu()
    comparison = compare_codes(bipo_code, yapo_code, config.k, sae=sae, bipo_vector=bipo_vector)
    listed = [f for f, _ in comparison.yapo_top] + [f for f, _ in comparison.bipo_top]
    logits = feature_logit_lens(model, sae, listed, config.n_tokens)
    examples = (top_activating_examples(model, sae, layer, prompts, listed, config.n_examples,
                                        batch_size=config.batch_size,
                                        max_tokens=config.max_tokens, skip_bos=config.skip_bos)
                if prompts else {})
    yapo_direction = decoded_direction(yapo_code, sae)
    r2 = [("bipo", None, k, value, "BiPO vector")
          for k, value in r2_by_k(bipo_vector, sae.W_dec, bipo_code, R2_KS + (sae.cfg.d_sae,))]
    r2 += [("yapo", None, k, value, "v @ W_dec")
           for k, value in r2_by_k(yapo_direction, sae.W_dec, yapo_code, R2_KS + (sae.cfg.d_sae,))]
    return AttributionReport(
        config=config, bipo_code=bipo_code, yapo_code=yapo_code, comparison=comparison,
        bipo_fit=fit_quality(bipo_vector, bipo_code, sae),
        features=feature_table(comparison, bipo_code, yapo_code, logits, examples, sae),
        examples=examples_table(examples), logits=logits, r2=r2_table(r2),
        feature_stats=_feature_stats(model, sae, layer, prompts, listed, config),
    )


def _feature_stats(model: HookedTransformer, sae: SAE, layer: int, prompts: list[str],
                   features: list[int], config: AttributionConfig) -> dict:
    """Statistics for the feature pages, when asked for and there are prompts."""
    if not (config.feature_pages and prompts):
        return {}
    return feature_statistics(model, sae, layer, prompts, features,
                              n_contexts=max(config.n_examples, 8), batch_size=config.batch_size,
                              max_tokens=config.max_tokens, skip_bos=config.skip_bos)


def _attribute_by_effect(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    bipo_vector: Float[torch.Tensor, "d_model"],
    yapo_vector: Float[torch.Tensor, "d_sae"],
    prompts: list[str],
    config: AttributionConfig,
) -> AttributionReport:
    """``attribute`` with codes measured on the prompts' activations (``effect_codes``)."""
    if not prompts:
        raise UserError("Effect attribution runs the vectors on real activations and needs "
                        "dataset prompts (--prompts-from cultural or FILE), or use "
                        "--attribution static.")
    if not config.directions:
        raise UserError("Effect attribution needs at least one direction (+1 or -1).")
    activations = token_activations(model, layer, prompts, batch_size=config.batch_size,
                                    max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    effects = effect_codes(activations, sae, {"bipo": bipo_vector, "yapo": yapo_vector},
                           directions=config.directions, strength=config.strength)
    by_direction = {direction: compare_codes(effects[("bipo", direction)].effect,
                                             effects[("yapo", direction)].effect, config.k,
                                             sae=sae)
                    for direction in config.directions}
    primary = config.directions[0]
    bipo, yapo = effects[("bipo", primary)], effects[("yapo", primary)]
    comparison = compare_codes(bipo.effect, yapo.effect, config.k, sae=sae,
                               bipo_vector=bipo_vector)
    listed = [f for c in by_direction.values() for f, _ in c.yapo_top + c.bipo_top]
    logits = feature_logit_lens(model, sae, listed, config.n_tokens)
    examples = top_activating_examples(model, sae, layer, prompts, listed, config.n_examples,
                                       batch_size=config.batch_size,
                                       max_tokens=config.max_tokens, skip_bos=config.skip_bos)
    features = feature_table(comparison, bipo.effect, yapo.effect, logits, examples, sae)
    features["yapo_v"] = [float(yapo_vector[f]) for f in features["feature"]]
    features["yapo_gated"] = [float(yapo.gated[f]) for f in features["feature"]]
    features["bipo_share"] = [float(bipo.share[f]) for f in features["feature"]]
    features["yapo_share"] = [float(yapo.share[f]) for f in features["feature"]]
    r2 = [(method, direction, k, value, "E[Φ(h) − h]")
          for (method, direction), codes in effects.items()
          for k, value in r2_by_k(codes.mean_shift, sae.W_dec, codes.effect,
                                  R2_KS + (sae.cfg.d_sae,))]
    return AttributionReport(
        config=config, bipo_code=bipo.effect, yapo_code=yapo.effect, comparison=comparison,
        bipo_fit=fit_quality(bipo.mean_shift, bipo.effect, sae),
        features=features, examples=examples_table(examples), logits=logits,
        effects=effects, by_direction=by_direction,
        effect_features=effect_features_table(by_direction, effects, yapo_vector),
        r2=r2_table(r2),
        feature_stats=_feature_stats(model, sae, layer, prompts, listed, config),
    )
