"""The SAE pipeline as calls on a loaded model: :func:`run_sae_training` caches the corpus's
activations and trains and ships an SAE per layer (resumable at every step), and
:func:`run_sae_evaluation` measures the SAEs' quality. ``python -m yapo_interp.sae_train`` builds
the corpus, loads the model and calls them (``cli``)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yapo_interp.corpus import (CULTURAL_SPLIT_RULE, build_corpus, cultural_question_ids,
                                load_corpus)
from yapo_interp.io import read_json, write_json, write_text
from yapo_interp.models import SHIPPED_SAE_DIR, load_sae
from yapo_interp.sae_train.activations import cache_activations, load_cached, token_windows
from yapo_interp.sae_train.config import SAETrainConfig
from yapo_interp.sae_train.quality import evaluate_saes, format_results, reconstruction_stats
from yapo_interp.sae_train.training import ship_sae, train_layer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def cache_training_activations(model: HookedTransformer, config: SAETrainConfig,
                               work: Path) -> tuple[Path, int]:
    """Cache the activations of a seeded random subset of the corpus's training windows
    (``config.cache_tokens`` tokens) for every layer of ``config``; the cache folder and its
    number of rows."""
    documents = load_corpus(work / "corpus", heldout=False)
    windows, lengths = token_windows(documents, model.tokenizer, config.context_size)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(config.seed))
    order = order[: math.ceil(config.cache_tokens / (config.context_size - 1))]
    folder = work / "activations" / "train"
    n_rows = cache_activations(model, windows[order], lengths[order], config.layers, folder,
                               batch_size=config.cache_batch,
                               excluded_positions=config.excluded_positions)
    print(f"[sae_train] {n_rows} training tokens cached for layers {list(config.layers)}")
    return folder, n_rows


def ship_info(config: SAETrainConfig, manifest: dict, n_rows: int) -> dict:
    """What a shipped SAE records about its making (``cfg.json``'s ``metadata.yapo_interp``)."""
    return {
        "trained_by": "python -m yapo_interp.sae_train --layers "
                      + " ".join(map(str, config.layers)),
        "config": {k: v for k, v in asdict(config).items() if k != "corpus"},
        "corpus_config": asdict(config.corpus),
        "corpus_train_tokens": n_rows,
        "corpus_parts": manifest["parts"],
        # the steering split whose test questions this SAE never saw, and the cultural
        # questions it did see: evaluate refuses to score a sparse vector on those
        "cultural_split": CULTURAL_SPLIT_RULE,
        "cultural_question_ids": cultural_question_ids(),
        "excluded": "BOS position (position 0) of every 128-token window",
        "date": time.strftime("%Y-%m-%d"),
    }


def run_sae_training(model: HookedTransformer, config: SAETrainConfig, *, work: Path,
                     saes: Path, stage: str = "all") -> None:
    """Cache the training activations (the corpus must be built in ``work``), then, unless
    ``stage == "cache"``, train an SAE per layer and ship it to ``saes/layer_L``; a layer already
    trained and shipped with the same settings is skipped."""
    acts_folder, n_rows = cache_training_activations(model, config, work)
    if stage == "cache":
        return
    manifest = read_json(work / "corpus" / "manifest.json")
    settings = json.loads(json.dumps(asdict(config), default=str))
    for layer in config.layers:
        done_path = work / f"checkpoints_layer_{layer}" / "done.json"
        if (done_path.is_file() and read_json(done_path) == settings
                and (saes / f"layer_{layer}" / "cfg.json").is_file()):
            print(f"[sae_train] layer {layer}: already trained and shipped with these settings")
            continue
        activations = load_cached(acts_folder, layer)
        training_sae = train_layer(config, layer, activations, work / f"checkpoints_layer_{layer}")
        shipped = ship_sae(training_sae, saes / f"layer_{layer}", config.shipped_dtype,
                           json.loads(json.dumps(ship_info(config, manifest, n_rows),
                                                 default=str)))
        sample = activations[:: max(1, len(activations) // 50_000)]
        full = reconstruction_stats(training_sae.eval(), sample)["explained_variance"]
        stored = reconstruction_stats(shipped, sample)["explained_variance"]
        print(f"[sae_train] layer {layer}: shipped to {saes / f'layer_{layer}'}; explained "
              f"variance on training tokens {full:.4f} (float32) vs {stored:.4f} "
              f"({config.shipped_dtype} as shipped)")
        write_json(done_path, settings)
        del activations


def run_sae_evaluation(model: HookedTransformer, config: SAETrainConfig, *, work: Path,
                       saes: Path, out: Path) -> dict[str, dict[int, dict]]:
    """The quality of the SAEs in ``saes`` (the shipped ones when it is the package's folder) at
    ``config.layers``, on the held-out sets of ``work``'s corpus (built first when missing):
    printed as a table and written to ``out/sae_quality.json`` and ``out/sae_quality.md``."""
    if not (work / "corpus" / "manifest.json").is_file():
        print(f"[sae_train] no corpus in {work}: building it first (resumable)")
        build_corpus(config.corpus, work)
    loaded = {layer: (load_sae("embedded", layer=layer, model=model) if saes == SHIPPED_SAE_DIR
                      else load_sae(str(saes / f"layer_{layer}"), model=model))
              for layer in config.layers}
    results = evaluate_saes(model, loaded, config, work)
    table = format_results(results)
    print(table)
    write_json(out / "sae_quality.json", {"results": results, "config": config})
    write_text(out / "sae_quality.md", table + "\n")
    return results
