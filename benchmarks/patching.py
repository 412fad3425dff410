"""Seconds per pair and peak memory of activation patching on the embedded model: the plain
path, the shared-prompt path, and TransformerLens' own generic patching, on the same pairs.

All three patch the localized prompt's last-token ``resid_post`` into the non-localized run at
every layer and score every option of the question (``python -m yapo_interp.patching``'s
computation, ``p_country`` by mean token log-prob):

* ``plain`` — ``score_pairs(..., share_prompts=False)``, the path before issue 15: per layer,
  blocks ``j..N`` over every prompt + option row (the clean run's residual entering block ``j`` is
  reused), unembedding only at option positions.
* ``shared`` — ``score_pairs(...)`` (the default): each prompt's tokens before the patched one run
  once into a frozen key/value cache; per layer only the patched position and the option tokens
  run blocks ``j..N``.
* ``transformer_lens.patching`` — ``generic_activation_patch`` with ``layer_pos_patch_setter``,
  one pair at a time (its patch position is one column for the whole batch): a full forward pass
  with full logits per layer.

The implementations run batch by batch in turn (so a busy CPU slows all alike); the first batch
of each is preceded by a small warm-up. Every ``p_country`` is compared with the plain path's.
The last line is ``speedup: N.Nx`` (plain s/pair over shared s/pair).

    python benchmarks/patching.py [--pairs 2] [--countries egypt morocco] [--no-tl]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import PeakMemory  # noqa: E402
from yapo_interp.data import load_cultural  # noqa: E402
from yapo_interp.logprobs import masked_response_logprobs  # noqa: E402
from yapo_interp.models import load_model  # noqa: E402
from yapo_interp.patching import (PatchingPair, patching_pairs, score_pairs,  # noqa: E402
                                  site_hook_name, tokenize_prompt_response)

SITE = "resid_post"


def transformer_lens_p_country(model, pair: PatchingPair, layers: list[int]) -> list[float]:
    """``p_country`` after patching at each layer, by ``transformer_lens.patching``."""
    from transformer_lens import patching

    options = list(pair.options)
    source = tokenize_prompt_response(model, [pair.localized_prompt] * len(options), options)
    target = tokenize_prompt_response(model, [pair.nonlocalized_prompt] * len(options), options)
    names = {site_hook_name(layer, SITE) for layer in layers}
    with torch.no_grad():
        _, source_cache = model.run_with_cache(source.tokens, names_filter=lambda n: n in names)
    rows = torch.arange(len(options))
    position = int(target.last_prompt_position[0])  # one prompt: one column for every row
    clean = {}  # the "clean cache" generic patching reads: source values at the target column
    for name in names:
        values = torch.zeros(*target.tokens.shape, model.cfg.d_model)
        values[:, position] = source_cache[name][rows, source.last_prompt_position]
        clean[name] = values
    lengths = target.response_mask.sum(-1).float()

    def p_country(logits):
        logprobs = logits.log_softmax(-1)
        sums = torch.zeros(len(options))
        for row in range(len(options)):
            positions = target.response_mask[row].nonzero().squeeze(-1)
            sums[row] = logprobs[row, positions - 1, target.tokens[row, positions]].sum()
        return (sums / lengths).softmax(-1)[pair.country_index]

    index = pd.DataFrame({"layer": layers, "pos": [position] * len(layers)})
    with torch.no_grad():
        values = patching.generic_activation_patch(
            model, target.tokens, clean, p_country, patch_setter=patching.layer_pos_patch_setter,
            activation_name=SITE, index_df=index)
    return [float(v) for v in values]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="pairs per country (default 2)")
    parser.add_argument("--countries", nargs="+", default=["egypt", "morocco"])
    parser.add_argument("--batch-pairs", type=int, default=4, help="as the CLI's default")
    parser.add_argument("--no-tl", action="store_true", help="skip transformer_lens.patching")
    args = parser.parse_args()
    started = time.time()
    model = load_model("embedded")
    layers = list(range(model.cfg.n_layers))
    items = load_cultural(countries=args.countries)
    pairs = patching_pairs(items, args.countries, args.pairs, seed=0, tokenizer=model.tokenizer)
    print(f"model: {model.cfg.model_name} (embedded, float32, CPU, {torch.get_num_threads()} "
          f"threads); {len(pairs)} pairs ({', '.join(args.countries)}), {len(layers)} layers, "
          f"site {SITE}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    score_pairs(model, pairs[:1], layers[:1], SITE)  # warm-up (allocations, lazy imports)
    score_pairs(model, pairs[:1], layers[:1], SITE, share_prompts=False)
    seconds = {"plain": 0.0, "shared": 0.0, "transformer_lens.patching": 0.0}
    peaks = dict.fromkeys(seconds, 0)
    results: dict[str, list[float]] = {name: [] for name in seconds}
    for start in range(0, len(pairs), args.batch_pairs):
        batch = pairs[start:start + args.batch_pairs]
        for name, share in (("plain", False), ("shared", True)):
            with PeakMemory() as memory:
                tick = time.perf_counter()
                records = score_pairs(model, batch, layers, SITE, share_prompts=share)
                seconds[name] += time.perf_counter() - tick
            peaks[name] = max(peaks[name], memory.peak - memory.start)
            results[name] += [record["p_country"] for record in records]
        if not args.no_tl:
            with PeakMemory() as memory:
                tick = time.perf_counter()
                for pair in batch:
                    results["transformer_lens.patching"] += transformer_lens_p_country(
                        model, pair, layers)
                seconds["transformer_lens.patching"] += time.perf_counter() - tick
            peaks["transformer_lens.patching"] = max(peaks["transformer_lens.patching"],
                                                     memory.peak - memory.start)
    plain = torch.tensor(results["plain"])
    print(f"\n{'implementation':<26} {'s/pair':>7} {'peak MiB added':>14} "
          f"{'max |Δ p_country| vs plain':>27}")
    for name in seconds:
        if not results[name]:
            continue
        gap = (torch.tensor(results[name]) - plain).abs().max().item()
        print(f"{name:<26} {seconds[name] / len(pairs):>7.2f} {peaks[name] / 2**20:>14.0f} "
              f"{gap:>27.1e}")
    print(f"(total benchmark time {time.time() - started:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.1f})")
    if results["transformer_lens.patching"]:
        print(f"shared vs transformer_lens.patching: "
              f"{seconds['transformer_lens.patching'] / seconds['shared']:.1f}x")
    print(f"speedup: {seconds['plain'] / seconds['shared']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
