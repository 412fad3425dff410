"""The quality of the SAEs on held-out text and held-out cultural prompts: L0, explained variance
(SAELens' ``ExplainedVarianceCalculator``), CE-loss recovered and dead latents."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from sae_lens.evals import ExplainedVarianceCalculator
from tqdm.auto import tqdm

from yapo_interp.corpus import load_corpus
from yapo_interp.hooks import hook_name_for
from yapo_interp.sae_train.activations import (cache_activations, load_cached, token_windows,
                                               valid_mask)
from yapo_interp.sae_train.config import SAETrainConfig

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def reconstruction_stats(sae: SAE, activations: Float[torch.Tensor, "batch d_model"],
                         batch_size: int = 4096) -> dict[str, float]:
    """L0, explained variance and per-latent firing counts of ``sae`` on ``activations``.

    The explained variance is SAELens's ``sae_lens.evals.ExplainedVarianceCalculator``
    (``1 − E‖h − ĥ‖² / (E‖h‖² − ‖E h‖²)``, the module docstring's formula), fed float64 tensors:
    it sums each batch in the dtype it is given, and in float32 the difference of two large
    numbers loses digits on a residual stream with a large mean (Gemma's). L0 (non-zero latents
    per token) and the firing counts are counted here: ``sae_lens.evals`` computes them only inside
    ``get_sparsity_and_variance_metrics``, which runs the model through an ``ActivationsStore``,
    while these activations are cached already.
    """
    total, d_in = activations.shape
    sums = torch.zeros(d_in, dtype=torch.float64)
    squares = torch.zeros(d_in, dtype=torch.float64)
    for start in range(0, total, batch_size):
        h = activations[start:start + batch_size].double()
        sums += h.sum(0)
        squares += h.pow(2).sum(0)
    variance = squares - sums.pow(2) / total  # Σ(h − h̄)² per coordinate
    # Gemma's residual has one coordinate (163 here) carrying a large share of the variance at
    # some layers; the figure without the highest-variance coordinate shows the rest is learned.
    top = int(variance.argmax())
    rest = torch.ones(d_in, dtype=torch.bool)
    rest[top] = False
    explained, explained_rest = ExplainedVarianceCalculator(), ExplainedVarianceCalculator()
    active = 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            h = activations[start:start + batch_size].float()
            codes = sae.encode(h)
            reconstruction = sae.decode(codes).double()
            explained.add_batch(reconstruction, h.double())
            explained_rest.add_batch(reconstruction[:, rest], h.double()[:, rest])
            active += int((codes != 0).sum())
            fired += (codes != 0).sum(0)
    return {"tokens": total, "l0": active / total,
            "explained_variance": explained.compute(),
            "top_variance_dim": top,
            "top_variance_dim_share": (variance[top] / variance.sum()).item(),
            "explained_variance_without_top_dim": explained_rest.compute(),
            "dead_fraction": (fired == 0).float().mean().item(), "fired": fired}


def _next_token_loss(logits: Float[torch.Tensor, "batch pos d_vocab"],
                     windows: Int[torch.Tensor, "batch pos"], mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy at positions whose *next* token is in ``mask``."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    targets = windows[:, 1:]
    losses = -log_probs.gather(-1, targets[..., None])[..., 0]
    keep = mask[:, 1:]
    return losses[keep].sum().item(), int(keep.sum())


def ce_loss_recovered(model: HookedTransformer, saes: dict[int, SAE],
                      windows: Int[torch.Tensor, "batch pos"], lengths: Int[torch.Tensor, "batch"],
                      *, excluded_positions: int = 1, batch_size: int = 8) -> dict[int, dict]:
    """Clean, SAE-spliced and zero-ablated next-token loss per layer, and the fraction of the
    loss gap recovered. The clean residual at each layer is taken once; the spliced and ablated
    runs restart from layer L+1 (``start_at_layer``), so only the blocks above L are re-run.

    Not ``sae_lens.evals.get_recons_loss`` (its ``ce_loss_score`` is the same ratio), because
    its terms differ: its zero ablation replaces the activations at *every* position, BOS
    included (here BOS and the first ``excluded_positions`` keep theirs, as in training), its
    mask is by token id rather than by position, and its losses are averaged over every position
    of the batch, padding included (here only where the predicted token is real: the windows
    are right-padded to different lengths)."""
    mask = valid_mask(lengths, windows.shape[1], excluded_positions)
    # the loss is taken where the predicted token is real (the BOS row itself is never a target)
    target_mask = valid_mask(lengths, windows.shape[1], 1)
    layers = sorted(saes)
    sums = {"clean": 0.0, **{(layer, kind): 0.0 for layer in layers for kind in ("sae", "zero")}}
    count = 0
    names = {hook_name_for(layer) for layer in layers}
    for start in tqdm(range(0, len(windows), batch_size), desc="CE loss", unit="batch"):
        batch = windows[start:start + batch_size]
        batch_mask = mask[start:start + batch_size]
        batch_targets = target_mask[start:start + batch_size]
        with torch.no_grad():
            logits, cache = model.run_with_cache(batch, names_filter=lambda name: name in names)
            loss, n = _next_token_loss(logits, batch, batch_targets)
            sums["clean"] += loss
            count += n
            del logits
            for layer in layers:
                h = cache[hook_name_for(layer)]
                spliced = torch.where(batch_mask[..., None], saes[layer].decode(
                    saes[layer].encode(h)).to(h.dtype), h)
                ablated = torch.where(batch_mask[..., None], torch.zeros_like(h), h)
                for kind, resid in (("sae", spliced), ("zero", ablated)):
                    logits = model(resid, start_at_layer=layer + 1, tokens=batch)
                    sums[(layer, kind)] += _next_token_loss(logits, batch, batch_targets)[0]
                    del logits
    clean = sums["clean"] / count
    results = {}
    for layer in layers:
        spliced = sums[(layer, "sae")] / count
        zero = sums[(layer, "zero")] / count
        results[layer] = {"ce_clean": clean, "ce_sae": spliced, "ce_zero": zero,
                          "ce_loss_recovered": (zero - spliced) / (zero - clean),
                          "ce_tokens": count}
    return results


def evaluation_sets(config: SAETrainConfig, work: Path, tokenizer) -> dict[str, tuple]:
    """The held-out corpus text and the held-out cultural prompts, as token windows."""
    heldout = load_corpus(work / "corpus", heldout=True)
    sets = {
        "heldout_corpus": [d for d in heldout if d.source != "cultural"],
        "cultural_prompts": [d for d in heldout if d.source == "cultural"],
    }
    windows = {}
    for name, documents in sets.items():
        if documents:
            windows[name] = token_windows(documents, tokenizer, config.context_size)
    return windows


def _spread(n: int, k: int) -> torch.Tensor:
    """``k`` evenly spaced indices out of ``n`` (all when ``k >= n``)."""
    if k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def evaluate_saes(model: HookedTransformer, saes: dict[int, SAE], config: SAETrainConfig,
                  work: Path) -> dict[str, dict[int, dict]]:
    """Quality figures per evaluation set and layer (see the module docstring)."""
    results: dict[str, dict[int, dict]] = {}
    layers = tuple(sorted(saes))
    for name, (windows, lengths) in evaluation_sets(config, work, model.tokenizer).items():
        subset = _spread(len(windows), config.eval_windows)
        windows, lengths = windows[subset], lengths[subset]
        folder = work / "activations" / name
        cache_activations(model, windows, lengths, layers, folder, batch_size=config.cache_batch,
                          excluded_positions=config.excluded_positions, desc=f"caching {name}")
        chosen = _spread(len(windows), config.eval_ce_windows)
        ce = ce_loss_recovered(model, saes, windows[chosen], lengths[chosen],
                               excluded_positions=config.excluded_positions)
        results[name] = {}
        for layer in layers:
            stats = reconstruction_stats(saes[layer], load_cached(folder, layer))
            stats.pop("fired")
            results[name][layer] = {**stats, **ce[layer]}
    return results


def format_results(results: dict[str, dict[int, dict]]) -> str:
    """The quality figures as a Markdown table (what ``--evaluate`` prints)."""
    lines = ["| set | layer | tokens | L0 | explained variance | EV without top dim (share) | "
             "CE clean | CE with SAE | CE zero-ablated | CE-loss recovered | dead fraction |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_layer in results.items():
        for layer, row in sorted(per_layer.items()):
            lines.append(
                f"| {name} | {layer} | {row['tokens']} | {row['l0']:.1f} | "
                f"{row['explained_variance']:.3f} | "
                f"{row['explained_variance_without_top_dim']:.3f} (dim "
                f"{row['top_variance_dim']}: {row['top_variance_dim_share']:.2f}) | "
                f"{row['ce_clean']:.3f} | {row['ce_sae']:.3f} | "
                f"{row['ce_zero']:.3f} | {row['ce_loss_recovered']:.3f} | "
                f"{row['dead_fraction']:.3f} |")
    return "\n".join(lines)
