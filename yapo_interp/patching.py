"""Layer discovery by activation patching (appendix B of the YaPO paper).

Which layer should a steering vector act on? The paper answers with *activation patching*: take
a question in two forms — *localized*, which names the country ("I am from Morocco, ...") and
*non-localized*, which only speaks the country's dialect — and ask where in the network the
difference between them lives. Run the non-localized prompt, but at layer ``j`` overwrite the
residual stream at its last token with the localized prompt's last-token residual
``h^{(j)}_{t}(x_localized)``. If the model's answer moves from the Western default towards the
country's answer, layer ``j`` carries the country signal at that position. Sweeping ``j`` gives an
*activation patching curve* (paper figure 3); the paper picks layer 15 of Gemma-2-2B from it.

Because attention is causal, the patch leaves every earlier position untouched, and nothing below
layer ``j`` changes either. So the clean run's residual stream *entering* block ``j`` is reused, and
each patched run only executes blocks ``j..N`` (``start_at_layer``): about half the cost of a full
forward pass per layer, with identical results (tested).

The answer is scored as in the rest of the toolkit: each option of the question (one per country of
the language group plus the Western control) is appended to the prompt as a completion, its
log-probability is computed from logits at the option's positions only, and a softmax over the
options' mean token log-probs (``--score mean``, length-normalised; ``sum`` is available) gives
``p_country`` and ``p_western`` — the probability, among the question's options, of the asking
country's answer and of the Western one.

Beside this option-level score, the *first-token readout* (issue 14) scores each option by the
log-probability of its first token alone, predicted at the last prompt position, again as a softmax
over the options (``p_country_first``, ``p_western_first``, ``effect_first``). A single-position
patch at a late layer reaches that prediction directly, while later option tokens also attend to
unpatched positions; options that share their first token tie on this readout.

Layer rule: for each layer ``j`` the *localization effect* is the mean over pairs of
``(p_country - p_western)`` after patching minus the same quantity in the clean non-localized run.
The chosen layer maximises the effect averaged over the requested countries (ties: earliest layer).

Patch sites: ``resid_pre`` / ``resid_post`` (the residual stream entering / leaving block ``j``),
``attn_out`` and ``mlp_out`` (the outputs of block ``j``'s attention and MLP).

Example::

    python -m yapo_interp.patching --countries egypt morocco
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.argv import flag, switch
from yapo_interp.cli import add_common_args, check_run_args, model_name, run_cli
from yapo_interp.data import format_prompt, format_response, load_cultural, resolve_countries
from yapo_interp.data.countries import WESTERN
from yapo_interp.errors import UserError
from yapo_interp.hooks import act_name
from yapo_interp.figures import patching_figure
from yapo_interp.io import append_jsonl, read_json, read_jsonl, run_info, write_json, write_table
from yapo_interp.logprobs import (SharedPrefixBatch, masked_response_logprobs, pad_token_id,
                                  prefix_kv_cache, right_pad, shared_prefix_batch,
                                  tokenize_prompt, tokenize_response, unembed_logprobs,
                                  unembedding_matrix)
from yapo_interp.models import check_layer
from yapo_interp.seeding import set_seed
from yapo_interp.style import save_figure

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
    for prompt, response in zip(prompts, responses, strict=True):
        if not tokenize_response(model, response).numel():
            raise UserError(f"Empty response for prompt {prompt[:60]!r}: every option needs text.")
    return shared_prefix_batch(model, [tokenize_prompt(model, prompt) for prompt in prompts],
                               [tokenize_response(model, response) for response in responses])


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


# --------------------------------------------------------------------------------------------
# From dataset items to a tidy table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchingConfig:
    """Settings of a patching run (saved with its results)."""

    countries: tuple[str, ...] = ("egypt", "morocco")
    layers: tuple[int, ...] | None = None  # None: every layer
    site: str = "resid_post"
    pairs_per_country: int = 12
    batch_pairs: int = 4
    prompt_style: str = "completion"
    score: str = "mean"  # option score: mean (length-normalised) or sum of token log-probs
    dataset: str | None = None  # None: the shipped cultural set
    seed: int = 0
    model: str = "embedded"
    share_prompts: bool = True  # each prompt's unpatched prefix runs once (same numbers, faster)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PatchingConfig:
        """The config of a parsed command line (``build_parser().parse_args(argv)``): the
        countries resolved, the model ``--model`` or the preset's."""
        return cls(countries=tuple(resolve_countries(args.countries)),
                   layers=tuple(args.layers) if args.layers else None, site=args.site,
                   pairs_per_country=args.pairs, batch_pairs=args.batch_pairs, score=args.score,
                   dataset=args.dataset, seed=args.seed, model=model_name(args),
                   share_prompts=args.share_prompts)

    def to_argv(self) -> list[str]:
        """The arguments (without ``--out`` and ``--device``) that give this config back through
        ``from_args``; a ``UserError`` for a ``prompt_style`` other than completion, which no
        flag sets."""
        if self.prompt_style != "completion":
            raise UserError(f"no command line gives prompt_style={self.prompt_style!r} (python -m "
                            "yapo_interp.patching uses completion prompts)")
        return ["--countries", *self.countries, *flag("--layers", self.layers), "--site",
                self.site, "--pairs", str(self.pairs_per_country), "--batch-pairs",
                str(self.batch_pairs), "--score", self.score, *flag("--dataset", self.dataset),
                "--seed", str(self.seed), "--model", self.model,
                *switch("--no-shared-prompts", not self.share_prompts)]


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


# --------------------------------------------------------------------------------------------
# Whole run (resumable) and CLI
# --------------------------------------------------------------------------------------------


@dataclass
class PatchingResult:
    table: pd.DataFrame
    summary: pd.DataFrame
    chosen_layer: int
    files: dict[str, Path] = field(default_factory=dict)


def run_patching(model, items, config: PatchingConfig, out_dir: Path | None = None,
                 progress: bool = True) -> PatchingResult:
    """Patch ``config.pairs_per_country`` pairs per country at every layer; save as it goes.

    With ``out_dir``, finished batches are appended to ``partial.jsonl`` so that an interrupted run
    started again with the same settings continues where it stopped.
    """
    layers = list(config.layers) if config.layers is not None else list(range(model.cfg.n_layers))
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise UserError(f"layers lists {', '.join(map(str, repeated))} more than once; give "
                        "each layer once (duplicates would be patched twice).")
    for layer in layers:
        check_layer(model, layer)
    pairs = patching_pairs(items, config.countries, config.pairs_per_country, config.seed,
                           config.prompt_style, model.tokenizer)
    records: list[dict] = []
    partial = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        partial = out_dir / "partial.jsonl"
        settings_path = out_dir / "partial_settings.json"
        settings = asdict(config) | {"layers": layers}
        if partial.exists() and settings_path.exists() and read_json(settings_path) == \
                json_roundtrip(settings):
            records = read_jsonl(partial)
        else:
            partial.unlink(missing_ok=True)
            write_json(settings_path, settings)
    done = {(r["country"], r["pair_id"]) for r in records}
    todo = [pair for pair in pairs if (pair.country, pair.pair_id) not in done]
    batches = [todo[i: i + config.batch_pairs] for i in range(0, len(todo), config.batch_pairs)]
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="patching pairs",
              unit="pair", disable=not progress) as bar:
        for batch in batches:
            new = score_pairs(model, batch, layers, config.site, config.score,
                              config.share_prompts)
            records += new
            if partial is not None:
                for record in new:
                    append_jsonl(partial, record)
            bar.update(len(batch))
    table = pd.DataFrame(records).sort_values(["country", "pair_id", "layer"], ignore_index=True)
    summary = summarise(table)
    chosen = choose_layer(summary)
    result = PatchingResult(table, summary, chosen)
    if out_dir is not None:
        result.files = save_patching(result, config, layers, out_dir)
        partial.unlink(missing_ok=True)
    return result


def json_roundtrip(value):
    """``value`` through JSON and back: plain lists, dicts, numbers and strings."""
    import json

    return json.loads(json.dumps(value))


def save_patching(result: PatchingResult, config: PatchingConfig, layers: list[int],
                  out_dir: Path) -> dict[str, Path]:
    """Write the patching table (CSV and parquet), its summary, ``chosen_layer.json`` (the rule,
    the effect per layer, the nearest shipped SAE layer, run info) and the figure into ``out_dir``."""
    files = {
        "table": write_table(out_dir / "patching.csv", result.table),
        "table_parquet": write_table(out_dir / "patching.parquet", result.table),
        "summary": write_table(out_dir / "patching_summary.csv", result.summary),
    }
    effect = result.summary.groupby("layer")["effect"].mean()
    shipped = models.shipped_sae_layers() if config.model == "embedded" else []
    nearest = min(shipped, key=lambda layer: (abs(layer - result.chosen_layer), layer)) \
        if shipped else None
    files["chosen_layer"] = write_json(out_dir / "chosen_layer.json", {
        "chosen_layer": result.chosen_layer,
        "rule": "argmax over layers of the mean (over countries and pairs) of "
                "(p_country - p_western) patched minus the same in the clean non-localized run",
        "effect_by_layer": {int(layer): float(value) for layer, value in effect.items()},
        **({"effect_first_by_layer": {
            int(layer): float(value)
            for layer, value in result.summary.groupby("layer")["effect_first"].mean().items()}}
           if "effect_first" in result.summary else {}),
        "nearest_shipped_sae_layer": nearest,
        "localization_gain": localization_gain(result.summary),
        **run_info(asdict(config) | {"layers": layers}),
    })
    figure_paths = save_figure(patching_figure(result.summary, result.chosen_layer),
                               out_dir / "patching_curves", width=460 * len(config.countries) + 100,
                               height=560)
    files["figure"] = figure_paths[0]
    return files


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.patching``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.patching",
        description="Choose the steering layer by patching localized into non-localized runs "
                    "(paper appendix B).")
    parser.add_argument("--countries", nargs="+", default=["egypt", "morocco"],
                        help="countries to analyse (default: egypt morocco)")
    parser.add_argument("--layers", nargs="+", type=int, default=None,
                        help="layers to patch (default: all)")
    parser.add_argument("--site", choices=sorted(SITES), default="resid_post",
                        help="activation to patch (default: resid_post)")
    parser.add_argument("--pairs", type=int, default=12,
                        help="localized/non-localized pairs per country (default: 12)")
    parser.add_argument("--batch-pairs", type=int, default=4,
                        help="pairs per forward batch (default: 4)")
    parser.add_argument("--score", choices=("mean", "sum"), default="mean",
                        help="option score: mean token log-prob (length-normalised, default) or "
                             "summed log-prob")
    parser.add_argument("--dataset", default=None,
                        help="dataset file or folder (default: the shipped cultural set)")
    parser.add_argument("--no-shared-prompts", dest="share_prompts", action="store_false",
                        help="run every prompt + option row in full at every layer (the plain "
                             "reference computation; same numbers, slower)")
    add_common_args(parser, out_default="runs/patching")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Patch localized into non-localized runs at every layer, choose the steering layer and write
    the results into ``--out`` (resumable)."""
    args = build_parser().parse_args(argv)
    countries = resolve_countries(args.countries)
    if args.pairs < 1:
        raise UserError("--pairs must be at least 1.")
    if args.batch_pairs < 1:
        raise UserError("--batch-pairs must be at least 1.")
    check_run_args(args, layers=args.layers or (), flag="--layers")  # before the model load
    config = PatchingConfig.from_args(args)
    items = load_cultural(args.dataset, countries=countries)
    set_seed(args.seed)
    print(f"loading {config.model} ...", file=sys.stderr)
    model = models.load_model(config.model, device=args.device)
    result = run_patching(model, items, config, out_dir=args.out)
    effect = result.summary.groupby("layer")["effect"].mean()
    print(f"chosen layer: {result.chosen_layer} "
          f"(localization effect {effect[result.chosen_layer]:+.3f}; rule in chosen_layer.json)")
    if "effect_first" in result.summary:
        first = result.summary.groupby("layer")["effect_first"].mean()
        print(f"first-token readout: effect {first[result.chosen_layer]:+.3f} at layer "
              f"{result.chosen_layer}, largest {first.max():+.3f} at layer {int(first.idxmax())}")
    gain = localization_gain(result.summary)
    if gain <= max(0.01, 2 * float(effect.abs().max())):
        print(f"note: the localized prompt itself moves (p_country - p_western) by only {gain:+.3f} "
              "over the non-localized one, so this model barely uses the country's name here and "
              "the layer choice is weakly determined.")
    for name, path in result.files.items():
        print(f"  {name:14s} {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
