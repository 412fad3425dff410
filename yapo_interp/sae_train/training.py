"""Training one SAE per layer with SAELens' ``SAETrainer`` on cached activations (resumable from its
checkpoints), and shipping its inference SAE in the package's format."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from sae_lens import (SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, TopKTrainingSAE,
                      TopKTrainingSAEConfig)
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.sae_trainer import SAETrainer

from yapo_interp.errors import UserError
from yapo_interp.io import read_json, write_json
from yapo_interp.hooks import hook_name_for
from yapo_interp.sae_train.activations import shuffled_batches
from yapo_interp.sae_train.config import MODEL_NAME, SAETrainConfig


# --------------------------------------------------------------------------------------------
# Training with SAELens
# --------------------------------------------------------------------------------------------


def make_training_sae(config: SAETrainConfig, layer: int, d_in: int):
    """A fresh SAELens training SAE for ``layer`` (TopK, or BatchTopK)."""
    metadata = SAEMetadata(
        model_name=MODEL_NAME, hook_name=hook_name_for(layer), hook_head_index=None,
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
