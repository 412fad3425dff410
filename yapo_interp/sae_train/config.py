"""The settings that decide the shipped SAEs (``SAETrainConfig``) and where the work goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yapo_interp.corpus import CorpusConfig

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

