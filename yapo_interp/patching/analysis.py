"""From dataset items to option probabilities per pair and layer, their summary over pairs,
and the layer rule (the localization effect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from yapo_interp.data import format_prompt, format_response
from yapo_interp.data.countries import WESTERN
from yapo_interp.errors import UserError
from yapo_interp.patching.core import (patch_last_token_scores, tokenize_prompt_response,
                                       tokenize_shared_prefix)



@dataclass(frozen=True)
class PatchingPair:
    """A question asked by one country in both forms, with the options to score."""

    pair_id: str
    country: str
    language: str
    localized_prompt: str
    nonlocalized_prompt: str
    options: tuple[str, ...]
    option_labels: tuple[str, ...]  # country key of each option, or "western"

    @property
    def country_index(self) -> int:
        """Index of the asking country's option."""
        return self.option_labels.index(self.country)

    @property
    def western_index(self) -> int:
        """Index of the Western control option."""
        return self.option_labels.index(WESTERN)


def patching_pairs(items, countries: Sequence[str], pairs_per_country: int, seed: int,
                   prompt_style: str = "completion", tokenizer=None) -> list[PatchingPair]:
    """Pick ``pairs_per_country`` items per country (deterministically by ``seed``)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for country in countries:
        own = sorted((item for item in items if item.country == country), key=lambda i: i.id)
        if not own:
            raise UserError(f"The dataset has no items for {country!r}.")
        chosen = rng.permutation(len(own))[:pairs_per_country]
        for index in sorted(chosen):
            item = own[index]
            pairs.append(PatchingPair(
                pair_id=item.question_id,
                country=country,
                language=item.language,
                localized_prompt=format_prompt(item.localized_prompt, style=prompt_style,
                                               tokenizer=tokenizer),
                nonlocalized_prompt=format_prompt(item.nonlocalized_prompt, style=prompt_style,
                                                  tokenizer=tokenizer),
                options=tuple(format_response(option.text, style=prompt_style)
                              for option in item.options),
                option_labels=tuple(option.country for option in item.options),
            ))
    return pairs


def score_pairs(model, pairs: Sequence[PatchingPair], layers: Sequence[int], site: str,
                score: str = "mean", share_prompts: bool = True) -> list[dict]:
    """Patch a batch of pairs at every layer; one record per (pair, layer) with option probs.

    ``score="mean"`` turns each option's mean token log-prob into probabilities over the options
    (length-normalised, so a long dialect answer is not penalised for its length); ``"sum"`` uses
    the summed log-prob, the probability of generating the whole option.
    """
    if score not in ("mean", "sum"):
        raise UserError(f"Unknown option score {score!r}; use 'mean' or 'sum'.")
    localized_prompts, nonlocalized_prompts, responses = [], [], []
    for pair in pairs:
        localized_prompts += [pair.localized_prompt] * len(pair.options)
        nonlocalized_prompts += [pair.nonlocalized_prompt] * len(pair.options)
        responses += list(pair.options)
    tokenize = tokenize_shared_prefix if share_prompts else tokenize_prompt_response
    nonlocalized = tokenize(model, nonlocalized_prompts, responses)
    scores = patch_last_token_scores(model, tokenize(model, localized_prompts, responses),
                                     nonlocalized, layers=layers, site=site)
    lengths = nonlocalized.response_mask.sum(-1).to(scores.clean.dtype)
    divisor = lengths if score == "mean" else torch.ones_like(lengths)
    records, start = [], 0
    for pair in pairs:
        span = slice(start, start + len(pair.options))
        start += len(pair.options)
        clean = (scores.clean[span] / divisor[span]).softmax(-1)
        localized = (scores.localized[span] / divisor[span]).softmax(-1)
        clean_first = scores.clean_first[span].softmax(-1)
        localized_first = scores.localized_first[span].softmax(-1)
        for layer, layer_scores, layer_first in zip(layers, scores.patched[:, span],
                                                    scores.patched_first[:, span]):
            probs = (layer_scores / divisor[span]).softmax(-1)
            first = layer_first.softmax(-1)
            records.append({
                "country": pair.country, "language": pair.language, "pair_id": pair.pair_id,
                "layer": layer, "site": site,
                "p_country": probs[pair.country_index].item(),
                "p_western": probs[pair.western_index].item(),
                "logp_country": layer_scores[pair.country_index].item(),
                "logp_western": layer_scores[pair.western_index].item(),
                "p_country_clean": clean[pair.country_index].item(),
                "p_western_clean": clean[pair.western_index].item(),
                "p_country_localized": localized[pair.country_index].item(),
                "p_western_localized": localized[pair.western_index].item(),
                "p_country_first": first[pair.country_index].item(),
                "p_western_first": first[pair.western_index].item(),
                "p_country_first_clean": clean_first[pair.country_index].item(),
                "p_western_first_clean": clean_first[pair.western_index].item(),
                "p_country_first_localized": localized_first[pair.country_index].item(),
                "p_western_first_localized": localized_first[pair.western_index].item(),
                "n_options": len(pair.options),
            })
    return records


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per country and layer: mean probabilities, a 95% normal band over pairs, and the
    localization effect ``(p_country - p_western) - (clean p_country - clean p_western)``; with
    the first-token columns, the same on the first-token readout (``effect_first``)."""
    table = table.assign(
        effect=(table.p_country - table.p_western)
        - (table.p_country_clean - table.p_western_clean))
    has_first = "p_country_first" in table
    if has_first:
        table = table.assign(effect_first=(table.p_country_first - table.p_western_first)
                             - (table.p_country_first_clean - table.p_western_first_clean))
    first_columns = dict(
        p_country_first=("p_country_first", "mean"), p_western_first=("p_western_first", "mean"),
        p_country_first_clean=("p_country_first_clean", "mean"),
        p_western_first_clean=("p_western_first_clean", "mean"),
        effect_first=("effect_first", "mean"), effect_first_sd=("effect_first", "std"),
    ) if has_first else {}
    grouped = table.groupby(["country", "site", "layer"])
    summary = grouped.agg(
        n_pairs=("pair_id", "nunique"),
        p_country=("p_country", "mean"), p_country_sd=("p_country", "std"),
        p_western=("p_western", "mean"), p_western_sd=("p_western", "std"),
        p_country_clean=("p_country_clean", "mean"), p_western_clean=("p_western_clean", "mean"),
        p_country_localized=("p_country_localized", "mean"),
        p_western_localized=("p_western_localized", "mean"),
        effect=("effect", "mean"), effect_sd=("effect", "std"), **first_columns,
    ).reset_index()
    for name in ("p_country", "p_western", "effect") + (("effect_first",) if has_first else ()):
        half_width = 1.96 * summary[f"{name}_sd"].fillna(0) / np.sqrt(summary.n_pairs)
        summary[f"{name}_low"] = summary[name] - half_width
        summary[f"{name}_high"] = summary[name] + half_width
    return summary


def localization_gain(summary: pd.DataFrame) -> float:
    """How much the localized prompt itself (no patching) moves the answer towards the country:
    mean over countries of ``(p_country - p_western)`` localized minus the same clean. When this
    is near zero the model ignores the country's name, and no layer can carry a signal."""
    per_country = summary.groupby("country").first()
    gain = (per_country.p_country_localized - per_country.p_western_localized) - (
        per_country.p_country_clean - per_country.p_western_clean)
    return float(gain.mean())


def choose_layer(summary: pd.DataFrame) -> int:
    """The layer with the largest localization effect averaged over countries (ties: earliest)."""
    by_layer = summary.groupby("layer")["effect"].mean().sort_index()
    return int(by_layer.idxmax())
