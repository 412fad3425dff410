"""Train, ship and evaluate the sparse autoencoders of the embedded model (Gemma 3 270M).

YaPO (section 2 of the paper) steers a model in the latent space of a sparse autoencoder at the
steering layer ``L``. With ``h = A_L(x)`` the residual stream after block ``L``
(``blocks.L.hook_resid_post``), the SAE is an encoder/decoder pair

    Enc(h) = TopK(W_encᵀ (h − b_dec) + b_enc),        Dec(z) = W_decᵀ z + b_dec,

trained so that ``Dec(Enc(h)) ≈ h`` with at most ``k`` active latents per token. The sparse
steering of equation 3, ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``, adds the learned
vector ``v ∈ R^{d_sae}`` to ``Enc(h)`` and decodes; the second term puts back what the SAE could
not reconstruct, so steering with ``v = 0`` leaves the model unchanged whatever the SAE's error.
What the SAE's quality buys is *meaning*: the better ``Dec(Enc(h))`` explains ``h`` with few
latents, the more each coordinate of ``v`` is one recognisable feature (section 4's attribution).

The paper uses Gemma Scope's JumpReLU SAEs for Gemma-2-2B; none exist offline for Gemma 3 270M, so
this module trains them with SAELens' own classes (``TopKTrainingSAE`` and ``SAETrainer``):

1. **Corpus** (:mod:`yapo_interp.corpus`): multilingual text in the paper's five languages.
2. **Activations**: one forward pass per batch to the highest requested layer caches
   ``blocks.L.hook_resid_post`` for *every* requested layer at once, on disk (bf16 memory maps),
   resumable. The BOS position is excluded: Gemma 3's residual norm there is 10–15x that of the
   other positions (measured: ≈69k vs ≈5k at layer 7) and would dominate the reconstruction loss.
3. **Training**: TopK SAEs (Gao et al. 2024) with SAELens' AuxK loss against dead latents and
   activation-norm scaling (folded into the weights at the end). TopK fixes ``L0 = k`` on every
   token, in and out of distribution, and reaches a good explained variance in few steps — what a
   two-core CPU budget needs. ``--architecture batchtopk`` trains SAELens' BatchTopK instead,
   saved as a JumpReLU SAE (the class of Gemma Scope).
4. **Shipping**: the inference SAE (``TopKSAE``) is stored with ``SAE.save_model`` in bfloat16
   under ``yapo_interp/saes/layer_L/``; ``load_sae("embedded", layer=L)`` loads it in float32.
5. **Evaluation** (``--evaluate``): on held-out corpus text and on the held-out half of the
   cultural prompts, per layer, excluding BOS:

   * ``L0`` — mean number of non-zero latents per token;
   * explained variance ``1 − Σ‖h − ĥ‖² / Σ‖h − h̄‖²`` (sums over tokens, ``h̄`` their mean);
   * CE-loss recovered ``(CE_zero − CE_sae) / (CE_zero − CE_clean)``, where ``CE_sae`` splices
     ``ĥ`` into the forward pass at layer ``L`` and ``CE_zero`` replaces ``h`` by zero (BOS kept);
   * dead fraction — latents that never fire on the held-out corpus tokens.

Run ``python -m yapo_interp.sae_train --layers 7 9 11`` to rebuild everything (resumable; work
files under ``--work``), and ``python -m yapo_interp.sae_train --evaluate`` to print the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int

from yapo_interp.cli import add_common_args, run_cli, set_seed
from yapo_interp.corpus import (
    CULTURAL_SPLIT_RULE, CorpusConfig, Document, build_corpus, cultural_question_ids, load_corpus)
from yapo_interp.errors import UserError
from yapo_interp.io import read_json, write_json, write_text
from yapo_interp.models import SHIPPED_SAE_DIR, check_layer

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

DEFAULT_WORK = Path("/tmp/sae_work")
MODEL_NAME = "gemma-3-270m"


@dataclass(frozen=True)
class SAETrainConfig:
    """Everything that decides the shipped SAEs (saved beside them and in the model card)."""

    layers: tuple[int, ...] = (7, 9, 11)
    architecture: str = "topk"  # "topk" | "batchtopk" (saved as JumpReLU)
    d_sae: int = 4096
    k: int = 64
    context_size: int = 128  # tokens per window, BOS included
    excluded_positions: int = 1  # leading positions left out of training (the BOS)
    # Tokens whose activations are cached (a random subset of the corpus's windows), and SAE
    # training tokens per layer (passes over that cache). Sized for a shared 2-core CPU.
    cache_tokens: int = 250_000
    training_tokens: int = 640_000
    batch_size: int = 512
    lr: float = 5e-4
    lr_warm_up_steps: int = 100
    lr_decay_fraction: float = 0.2  # linear decay to 0 over the last fraction of steps
    dead_feature_window: int = 300  # steps without firing after which AuxK revives a latent
    n_checkpoints: int = 8
    cache_batch: int = 16  # windows per forward pass while caching
    shipped_dtype: str = "bfloat16"
    eval_windows: int = 128  # held-out windows per set for L0 / explained variance / dead
    eval_ce_windows: int = 16  # of those, windows spliced for CE-loss recovered (full logits)
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


# --------------------------------------------------------------------------------------------
# Token windows
# --------------------------------------------------------------------------------------------


def token_windows(documents: list[Document], tokenizer, context_size: int,
                  ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch"]]:
    """Pack documents into windows of ``context_size`` tokens, each starting with BOS.

    Documents of one (source, language) are joined with blank lines and cut into pieces of
    ``context_size − 1`` tokens, so nearly every window is full; the last piece of each group is
    right-padded. Returns the windows and the number of real tokens in each (BOS included).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for document in documents:
        groups.setdefault((document.source, document.language), []).append(document.text)
    body = context_size - 1
    rows, lengths = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for key in sorted(groups):
        ids: list[int] = []
        for text in groups[key]:
            ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        for start in range(0, len(ids), body):
            piece = ids[start:start + body]
            if len(piece) < 8:
                continue
            rows.append([tokenizer.bos_token_id, *piece] + [pad] * (body - len(piece)))
            lengths.append(len(piece) + 1)
    if not rows:
        raise UserError("The corpus produced no token windows; is it empty?")
    return torch.tensor(rows), torch.tensor(lengths)


def valid_mask(lengths: Int[torch.Tensor, "batch"], context_size: int,
               excluded_positions: int) -> torch.Tensor:
    """Boolean [batch, pos]: real tokens past the excluded leading positions."""
    positions = torch.arange(context_size)[None, :]
    return (positions < lengths[:, None]) & (positions >= excluded_positions)


# --------------------------------------------------------------------------------------------
# Activation cache: every layer from one forward pass, on disk, resumable
# --------------------------------------------------------------------------------------------


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def cache_activations(model: HookedTransformer, windows: Int[torch.Tensor, "batch pos"],
                      lengths: Int[torch.Tensor, "batch"], layers: tuple[int, ...], folder: Path,
                      *, batch_size: int, excluded_positions: int, desc: str = "caching") -> int:
    """Write the residual stream after each of ``layers`` for every valid token of ``windows``
    to ``folder/layer_L.bf16`` (rows of d_model bfloat16, as uint16) and return the row count.

    One forward pass, stopped after the highest layer, serves all layers. Progress is recorded
    in ``folder/progress.json`` after each batch, so an interrupted run resumes where it stopped.
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    mask = valid_mask(lengths, windows.shape[1], excluded_positions)
    n_rows = int(mask.sum())
    d_model = model.cfg.d_model
    progress_path = folder / "progress.json"
    progress = read_json(progress_path) if progress_path.is_file() else {}
    expected = {"n_windows": len(windows), "n_rows": n_rows, "layers": list(layers)}
    if progress.get("plan") != expected:
        progress = {"plan": expected, "windows_done": 0}
    maps = {
        layer: np.lib.format.open_memmap(
            folder / f"layer_{layer}.npy", mode="r+" if progress["windows_done"] else "w+",
            dtype=np.uint16, shape=(n_rows, d_model))
        for layer in layers
    }
    names = {hook_name(layer) for layer in layers}
    row = int(mask[: progress["windows_done"]].sum())
    bar = tqdm(total=len(windows), initial=progress["windows_done"], desc=desc, unit="window")
    for start in range(progress["windows_done"], len(windows), batch_size):
        batch = windows[start:start + batch_size]
        batch_mask = mask[start:start + batch_size]
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in names,
                                            stop_at_layer=max(layers) + 1)
        count = int(batch_mask.sum())
        for layer in layers:
            rows = cache[hook_name(layer)][batch_mask].to(torch.bfloat16)
            maps[layer][row:row + count] = rows.view(torch.uint16).numpy()
        row += count
        for array in maps.values():
            array.flush()
        progress["windows_done"] = start + len(batch)
        write_json(progress_path, progress)
        bar.update(len(batch))
    bar.close()
    return n_rows


def load_cached(folder: Path, layer: int) -> Float[torch.Tensor, "batch d_model"]:
    """The cached activations of ``layer`` as a bfloat16 tensor (in memory)."""
    path = folder / f"layer_{layer}.npy"
    progress_path = folder / "progress.json"
    if not path.is_file() or not progress_path.is_file():
        raise UserError(f"No cached activations for layer {layer} in {folder}; run the cache "
                        "stage first (python -m yapo_interp.sae_train --stage cache).")
    progress = read_json(progress_path)
    if progress["windows_done"] < progress["plan"]["n_windows"]:
        raise UserError(f"The activation cache in {folder} is incomplete; run the cache stage "
                        "again to finish it.")
    array = np.load(path, mmap_mode="r")
    return torch.from_numpy(np.array(array)).view(torch.bfloat16)  # a writable copy in memory


def shuffled_batches(activations: Float[torch.Tensor, "batch d_model"], batch_size: int,
                     seed: int, skip: int = 0) -> Iterator[Float[torch.Tensor, "batch d_model"]]:
    """Endless float32 batches, a fresh permutation per pass; ``skip`` batches are dropped
    first (so a resumed run sees the same stream as an uninterrupted one)."""
    n = len(activations)
    per_pass = n // batch_size
    step = 0
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(n, generator=generator)
        for index in range(per_pass):
            if step >= skip:
                rows = order[index * batch_size:(index + 1) * batch_size]
                yield activations[rows].float()
            step += 1
        epoch += 1


# --------------------------------------------------------------------------------------------
# Training with SAELens
# --------------------------------------------------------------------------------------------


def make_training_sae(config: SAETrainConfig, layer: int, d_in: int):
    """A fresh SAELens training SAE for ``layer`` (TopK, or BatchTopK)."""
    from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, TopKTrainingSAE,
                          TopKTrainingSAEConfig)
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(
        model_name=MODEL_NAME, hook_name=hook_name(layer), hook_head_index=None,
        context_size=config.context_size, prepend_bos=True,
        exclude_special_tokens=True, dataset_path="yapo_interp.corpus (offline, multilingual)",
    )
    common = dict(d_in=d_in, d_sae=config.d_sae, k=config.k, dtype="float32", device="cpu",
                  normalize_activations="expected_average_only_in", metadata=metadata)
    if config.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**common))
    if config.architecture == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common))
    raise UserError(f"Unknown architecture {config.architecture!r}: use topk or batchtopk.")


def _latest_checkpoint(folder: Path) -> Path | None:
    candidates = [path for path in folder.glob("*") if path.is_dir() and path.name.isdigit()
                  and (path / "trainer_state.pt").is_file()]
    return max(candidates, key=lambda path: int(path.name)) if candidates else None


def train_layer(config: SAETrainConfig, layer: int, activations: Float[torch.Tensor, "batch d_model"],
                folder: Path, *, log=print):
    """Train one SAE on cached activations with SAELens' ``SAETrainer`` and return it.

    Checkpoints (weights + optimizer + scheduler + activation scaler) go to ``folder``; a
    rerun resumes from the latest one. The returned training SAE has the activation scaling
    folded into its weights, so it reads raw residual vectors.
    """
    from safetensors.torch import load_file
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(config.seed + layer)
    sae = make_training_sae(config, layer, activations.shape[1])
    steps = config.training_tokens // config.batch_size
    decay = int(steps * config.lr_decay_fraction)
    trainer_config = SAETrainerConfig(
        total_training_samples=steps * config.batch_size,
        train_batch_size_samples=config.batch_size, lr=config.lr, lr_end=0.0,
        lr_scheduler_name="constant", lr_warm_up_steps=config.lr_warm_up_steps,
        lr_decay_steps=decay, device="cpu", dead_feature_window=config.dead_feature_window,
        feature_sampling_window=max(1, steps // 4), n_checkpoints=config.n_checkpoints,
        checkpoint_path=str(folder), n_batches_for_norm_estimate=100,
    )
    checkpoint = _latest_checkpoint(folder)
    skip = 0
    if checkpoint is not None:
        state = read_json(checkpoint / "resume.json")
        skip = state["batches_drawn"]
    drawn = {"count": skip}

    def provider() -> Iterator[torch.Tensor]:
        for batch in shuffled_batches(activations, config.batch_size, config.seed + layer, skip):
            drawn["count"] += 1
            yield batch

    def remember(checkpoint_path: Path | None) -> None:
        if checkpoint_path is not None:
            write_json(checkpoint_path / "resume.json", {"batches_drawn": drawn["count"]})

    trainer = SAETrainer(trainer_config, sae, provider(), save_checkpoint_fn=remember)
    if checkpoint is None:
        # SAELens scales inputs so their mean norm is sqrt(d_in) ("expected_average_only_in");
        # the factor is estimated here, on a fixed sample, so that b_dec can start at the mean
        # scaled activation: Gemma's residual has a few huge, nearly constant coordinates that a
        # zero-initialised b_dec would spend hundreds of steps learning.
        generator = torch.Generator().manual_seed(config.seed + layer)
        sample = activations[torch.randperm(len(activations), generator=generator)[:100_000]]
        sample = sample.float()
        scale = activations.shape[1] ** 0.5 / sample.norm(dim=-1).mean().item()
        trainer.activation_scaler.scaling_factor = scale
        with torch.no_grad():
            sae.b_dec.copy_((sample * scale).mean(0))
    else:
        sae.load_state_dict(load_file(str(checkpoint / "sae_weights.safetensors")))
        trainer.load_trainer_state(checkpoint)
        trainer.checkpoint_thresholds = [threshold for threshold in trainer.checkpoint_thresholds
                                         if threshold > trainer.n_training_samples]
        log(f"[train] layer {layer}: resuming from {checkpoint.name} tokens")
    start = time.time()
    sae = trainer.fit()
    log(f"[train] layer {layer}: {trainer.n_training_samples} tokens in "
        f"{time.time() - start:.0f} s; SAELens L0 {sae.cfg.metadata.l0:.1f}, "
        f"dead {sae.cfg.metadata.num_dead_features}")
    return sae


def ship_sae(training_sae, folder: Path, dtype: str, info: dict) -> SAE:
    """Save the inference version of ``training_sae`` to ``folder`` in ``dtype`` (SAELens
    format: cfg.json + sae_weights.safetensors) and return it reloaded in float32."""
    from sae_lens import SAE

    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    training_sae.save_inference_model(str(staging / "float32"))
    inference = SAE.load_from_disk(staging / "float32", dtype="float32")
    inference = inference.to(getattr(torch, dtype))
    # The weights are stored in ``dtype``; the config asks for float32, so every loader
    # (``SAE.load_from_disk(folder)`` included) hands back a float32 SAE.
    inference.cfg.dtype = "float32"
    inference.cfg.metadata.yapo_interp = info
    inference.save_model(str(staging / "shipped"))
    if folder.exists():
        shutil.rmtree(folder)
    (staging / "shipped").rename(folder)
    shutil.rmtree(staging, ignore_errors=True)
    return SAE.load_from_disk(folder, dtype="float32")


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
    from sae_lens.evals import ExplainedVarianceCalculator

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
    from tqdm.auto import tqdm

    mask = valid_mask(lengths, windows.shape[1], excluded_positions)
    # the loss is taken where the predicted token is real (the BOS row itself is never a target)
    target_mask = valid_mask(lengths, windows.shape[1], 1)
    layers = sorted(saes)
    sums = {"clean": 0.0, **{(layer, kind): 0.0 for layer in layers for kind in ("sae", "zero")}}
    count = 0
    names = {hook_name(layer) for layer in layers}
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
                h = cache[hook_name(layer)]
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _config_from_args(args: argparse.Namespace) -> SAETrainConfig:
    return SAETrainConfig(
        layers=tuple(sorted(set(args.layers))), architecture=args.architecture,
        d_sae=args.d_sae, k=args.k, cache_tokens=args.cache_tokens,
        training_tokens=args.training_tokens,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
    )


def _load_embedded(args: argparse.Namespace):
    from yapo_interp.cli import model_name
    from yapo_interp.models import load_model

    name = model_name(args)
    if name != "embedded":
        raise UserError("sae_train trains SAEs for the embedded model only; drop --model or "
                        "use --model embedded.")
    return load_model(name, device=args.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.sae_train",
        description="Build the multilingual corpus, cache residual activations, train SAELens "
                    "SAEs for the embedded model, ship them, and report their quality.")
    parser.add_argument("--layers", type=int, nargs="+", default=list(SAETrainConfig.layers),
                        help="layers whose blocks.L.hook_resid_post gets an SAE (default 7 9 11)")
    parser.add_argument("--stage", choices=["corpus", "cache", "train", "all"], default="all",
                        help="stop after this stage (default: all, then evaluate)")
    parser.add_argument("--evaluate", action="store_true",
                        help="only evaluate the SAEs in --saes and print the quality figures")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help=f"folder for the corpus, activation caches, checkpoints "
                             f"(default {DEFAULT_WORK})")
    parser.add_argument("--saes", type=Path, default=SHIPPED_SAE_DIR,
                        help="where the shipped SAEs are written / read (default: the package)")
    parser.add_argument("--architecture", choices=["topk", "batchtopk"],
                        default=SAETrainConfig.architecture)
    parser.add_argument("--d-sae", type=int, default=SAETrainConfig.d_sae)
    parser.add_argument("--k", type=int, default=SAETrainConfig.k)
    parser.add_argument("--cache-tokens", type=int, default=SAETrainConfig.cache_tokens,
                        help="corpus tokens whose activations are cached for training")
    parser.add_argument("--training-tokens", type=int, default=SAETrainConfig.training_tokens,
                        help="training tokens per layer (passes over the cache x its size)")
    parser.add_argument("--batch-size", type=int, default=SAETrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=SAETrainConfig.lr)
    add_common_args(parser, out_default="runs/sae_train")
    args = parser.parse_args(argv)
    set_seed(args.seed)
    config = _config_from_args(args)
    work: Path = args.work

    if args.evaluate:
        from yapo_interp.models import load_sae

        model = _load_embedded(args)
        for layer in config.layers:
            check_layer(model, layer)
        if not (work / "corpus" / "manifest.json").is_file():
            print(f"[sae_train] no corpus in {work}: building it first (resumable)")
            build_corpus(config.corpus, work)
        saes = {}
        for layer in config.layers:
            saes[layer] = (load_sae("embedded", layer=layer, model=model)
                           if args.saes == SHIPPED_SAE_DIR
                           else load_sae(str(args.saes / f"layer_{layer}"), model=model))
        results = evaluate_saes(model, saes, config, work)
        table = format_results(results)
        print(table)
        write_json(args.out / "sae_quality.json", {"results": results, "config": config})
        write_text(args.out / "sae_quality.md", table + "\n")
        return 0

    build_corpus(config.corpus, work)
    if args.stage == "corpus":
        return 0
    model = _load_embedded(args)
    for layer in config.layers:
        check_layer(model, layer)
    documents = load_corpus(work / "corpus", heldout=False)
    windows, lengths = token_windows(documents, model.tokenizer, config.context_size)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(config.seed))
    order = order[: math.ceil(config.cache_tokens / (config.context_size - 1))]
    acts_folder = work / "activations" / "train"
    n_rows = cache_activations(model, windows[order], lengths[order], config.layers, acts_folder,
                               batch_size=config.cache_batch,
                               excluded_positions=config.excluded_positions)
    print(f"[sae_train] {n_rows} training tokens cached for layers {list(config.layers)}")
    if args.stage == "cache":
        return 0
    manifest = read_json(work / "corpus" / "manifest.json")
    settings = json.loads(json.dumps(asdict(config), default=str))
    for layer in config.layers:
        done_path = work / f"checkpoints_layer_{layer}" / "done.json"
        if (done_path.is_file() and read_json(done_path) == settings
                and (args.saes / f"layer_{layer}" / "cfg.json").is_file()):
            print(f"[sae_train] layer {layer}: already trained and shipped with these settings")
            continue
        activations = load_cached(acts_folder, layer)
        training_sae = train_layer(config, layer, activations, work / f"checkpoints_layer_{layer}")
        info = {
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
        shipped = ship_sae(training_sae, args.saes / f"layer_{layer}", config.shipped_dtype,
                           json.loads(json.dumps(info, default=str)))
        sample = activations[:: max(1, len(activations) // 50_000)]
        full = reconstruction_stats(training_sae.eval(), sample)["explained_variance"]
        stored = reconstruction_stats(shipped, sample)["explained_variance"]
        print(f"[sae_train] layer {layer}: shipped to {args.saes / f'layer_{layer}'}; explained "
              f"variance on training tokens {full:.4f} (float32) vs {stored:.4f} "
              f"({config.shipped_dtype} as shipped)")
        write_json(done_path, settings)
        del activations
    if args.stage == "train":
        return 0
    return main(["--evaluate", "--layers", *map(str, config.layers), "--work", str(work),
                 "--saes", str(args.saes), "--out", str(args.out), "--k", str(config.k),
                 "--d-sae", str(config.d_sae)])


if __name__ == "__main__":
    run_cli(main)
