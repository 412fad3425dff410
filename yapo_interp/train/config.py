"""Training settings: ``TrainConfig`` (appendix A's defaults; the fast path of the objective as one
``FastPath``), the effective learning-rate ``Schedule`` of a run, and ``training_config``, which
fills from a preset what a caller leaves out (as ``python -m yapo_interp.train`` does)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from yapo_interp.errors import UserError
from yapo_interp.objective import FastPath
from yapo_interp.steering import METHODS, MethodTraits

if TYPE_CHECKING:
    from yapo_interp.models import Preset

FAST_PATH_FLAGS: tuple[str, ...] = tuple(flag.name for flag in fields(FastPath))
MEAN_DIFFERENCE_METHODS = ("caa", "sas")  # one pass over the data, no optimiser


@dataclass(frozen=True)
class TrainConfig(MethodTraits):
    """Training settings: appendix A's defaults, BiPO's where the paper is silent (β).

    ``fast_path`` says which shortcuts the objective takes (``objective.FastPath``; all off = the
    plain computation); its flags also read as attributes (``config.share_prompt``), and
    :meth:`settings` writes them flat, as ``run.json``, vector metadata and checkpoints hold them.
    """

    method: str = "yapo"  # yapo | bipo | sae-dense | caa | sas
    layer: int | None = None  # None: the SAE's layer (yapo/sas), else required
    beta: float = 0.1  # not given in appendix A; BiPO's default
    multiplier: float = 1.0  # λ during training
    lr: float = 5e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    warmup_steps: int = 100
    warmup_ratio: float | None = 0.1  # cap: warm-up ≤ this share of the run (None: no cap)
    max_grad_norm: float | None = None  # clip ‖∇v‖ (authors' code: 1.0); None: no clipping
    gradient_accumulation: int = 1  # micro-batches per optimiser step
    append_eos: bool = False  # EOS token at the end of chosen and rejected responses
    batch_size: int = 4
    epochs: int = 20
    seed: int = 0
    eval_every: int = 0  # steps between eval-loss records; 0 = at the end of every epoch
    fast_path: FastPath = field(default_factory=FastPath)  # see objective.py
    forward_batch_size: int = 8  # sequences per forward when caching activations / CAA / SAS
    l1: float = 0.0  # proximal L1 on v after each step (soft threshold lr·l1); 0 = off
    max_features: int | None = None  # keep the K largest |v| after each step; None = off

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"Unknown method {self.method!r}; use one of {', '.join(METHODS)}.")
        for name in ("batch_size", "epochs", "forward_batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.beta <= 0:
            raise UserError(f"beta must be positive, got {self.beta}.")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}.")
        if self.warmup_steps < 0:
            raise UserError(f"warmup_steps must be 0 or more, got {self.warmup_steps}.")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise UserError(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise UserError(f"max_grad_norm must be positive, got {self.max_grad_norm}.")
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise UserError(f"l1 must be 0 or more, got {self.l1}.")
        if self.max_features is not None and self.max_features < 1:
            raise UserError(f"max_features must be at least 1, got {self.max_features}.")
        if (self.l1 or self.max_features is not None) and self.method not in ("yapo", "sae-dense"):
            raise UserError(f"--l1 and --max-features make an SAE-space v sparse (yapo, sae-dense);"
                            f" {self.method} has none.")

    def __getattr__(self, name: str) -> Any:
        """The fast-path flags as attributes (``config.cache_activations``); reached only for
        names that are not fields."""
        if name in FAST_PATH_FLAGS:
            return getattr(self.fast_path, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def settings(self) -> dict[str, Any]:
        """The settings as saved (``run.json``, vector metadata, checkpoint identity): every field,
        the fast-path flags flat in ``fast_path``'s place."""
        flat: dict[str, Any] = {}
        for name, value in asdict(self).items():
            flat.update(value if name == "fast_path" else {name: value})
        return flat

    @property
    def is_mean_difference(self) -> bool:
        """Computed in one pass (CAA, SAS) instead of trained."""
        return self.method in MEAN_DIFFERENCE_METHODS


def training_config(preset: Preset, *, method: str, layer: int | None = None,
                    lr: float | None = None, max_grad_norm: float | None = None,
                    gradient_accumulation: int | None = None, **settings: Any) -> TrainConfig:
    """A ``TrainConfig`` for ``preset``: the preset fills the layer, learning rate, gradient
    clipping and accumulation when they are ``None``, and always decides ``append_eos``;
    ``settings`` are the other fields."""
    return TrainConfig(
        method=method, layer=layer if layer is not None else preset.layer,
        lr=lr if lr is not None else preset.lr,
        max_grad_norm=max_grad_norm if max_grad_norm is not None else preset.max_grad_norm,
        gradient_accumulation=gradient_accumulation or preset.gradient_accumulation,
        append_eos=preset.append_eos, **settings)


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule a run actually uses (saved in ``run.json``)."""

    total_steps: int  # optimiser steps
    warmup_steps: int  # effective warm-up, after the cap
    requested_warmup_steps: int
    peak_lr: float
    pairs_per_step: int  # batch_size × gradient_accumulation
    kind: str = "cosine with linear warm-up"


def training_schedule(config: TrainConfig, n_pairs: int) -> Schedule:
    """Optimiser steps of a run on ``n_pairs`` and its effective warm-up:
    ``min(warmup_steps, ⌊warmup_ratio × total⌋)``."""
    pairs_per_step = config.batch_size * config.gradient_accumulation
    total = config.epochs * math.ceil(n_pairs / pairs_per_step)
    warmup = config.warmup_steps
    if config.warmup_ratio is not None:
        warmup = min(warmup, math.floor(config.warmup_ratio * total))
    return Schedule(total_steps=total, warmup_steps=warmup,
                    requested_warmup_steps=config.warmup_steps, peak_lr=config.lr,
                    pairs_per_step=pairs_per_step)
