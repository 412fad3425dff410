"""The state of a preference-optimisation run and its checkpoint: what the next step depends on
(``v``, AdamW, the cosine schedule, the generator of batches and directions, torch's RNG, the
step and epoch) is saved atomically after every epoch to ``OUT/checkpoint.pt`` and restored by a
rerun of the same run, which then continues as if it had never stopped.

A checkpoint carries the run's *identity* (settings, fingerprints of the training and validation
pairs, layer, width of ``v``): a checkpoint of another run is refused, never silently continued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import get_cosine_schedule_with_warmup

from yapo_interp.errors import UserError
from yapo_interp.io import atomic_path, read_jsonl, write_text
from yapo_interp.train.config import Schedule, TrainConfig
from yapo_interp.train.selection import pairs_hash

if TYPE_CHECKING:
    from yapo_interp.data import PreferencePair

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


@dataclass
class TrainState:
    """Everything a training step reads and changes; a checkpoint is this state, saved."""

    v: torch.Tensor  # float32 whatever the model's dtype, requires_grad
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # minibatch order and the direction d of each micro-batch
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    last_train_loss: float | None = None
    last_eval_loss: float | None = None
    best_eval_loss: float | None = None

    def record(self, log_record: dict[str, Any]) -> None:
        """Take the losses of a log record (a step's or an evaluation's) into the state."""
        if "train_loss" in log_record:
            self.last_train_loss = log_record["train_loss"]
        if "eval_loss" in log_record:
            self.last_eval_loss = log_record["eval_loss"]
            self.best_eval_loss = min(log_record["eval_loss"], self.best_eval_loss
                                      if self.best_eval_loss is not None else float("inf"))


def new_state(config: TrainConfig, schedule: Schedule, width: int, device: Any) -> TrainState:
    """``v = 0`` (float32: AdamW updates of a bf16 ``v`` vanish below its resolution), AdamW with
    ``config``'s settings, the cosine schedule with warm-up, a generator seeded by ``config.seed``."""
    v = torch.zeros(width, device=device, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.AdamW([v], lr=config.lr, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, schedule.warmup_steps,
                                                schedule.total_steps)
    return TrainState(v, optimizer, scheduler, torch.Generator().manual_seed(config.seed))


def run_identity(config: TrainConfig, pairs: Sequence[PreferencePair],
                 eval_pairs: Sequence[PreferencePair], layer: int, width: int) -> dict[str, Any]:
    """What makes two runs the same run: a checkpoint resumes only a run of equal identity."""
    settings = config.settings()
    for name, default in (("l1", 0.0), ("max_features", None)):  # later options, off: runs
        if settings[name] == default:  # started before them still resume
            del settings[name]
    return {"config": settings, "train": pairs_hash(pairs), "eval": pairs_hash(eval_pairs),
            "layer": layer, "width": width}


def save_checkpoint(out: Path, state: TrainState, identity: dict[str, Any]) -> None:
    """Write ``state`` to ``out/checkpoint.pt`` atomically (a crash leaves the previous one)."""
    with atomic_path(out / CHECKPOINT) as temporary:
        torch.save({"v": state.v.detach().cpu(), "optimizer": state.optimizer.state_dict(),
                    "scheduler": state.scheduler.state_dict(),
                    "generator": state.generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "epoch": state.epoch, "step": state.step,
                    "identity": identity}, temporary)


def load_checkpoint(out: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``out``, or ``None`` when there is none; a ``UserError`` naming what
    differs when it belongs to another run."""
    if out is None or not (out / CHECKPOINT).is_file():
        return None
    checkpoint = torch.load(out / CHECKPOINT, weights_only=False)
    if checkpoint["identity"] != identity:
        differing = sorted(key for key in identity | checkpoint["identity"]
                           if identity.get(key) != checkpoint["identity"].get(key))
        raise UserError(f"{out} holds a checkpoint of a different run (differs in: "
                        f"{', '.join(differing)}). Use another --out, or delete {out} to "
                        "start over.")
    return checkpoint


def restore(state: TrainState, checkpoint: dict[str, Any], out: Path) -> None:
    """Put ``checkpoint`` into ``state`` (everything the next epoch depends on) and cut
    ``out/log.jsonl`` back to the checkpoint's step, so that no step is logged twice."""
    with torch.no_grad():
        state.v.copy_(checkpoint["v"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.generator.set_state(checkpoint["generator"])
    torch.set_rng_state(checkpoint["torch_rng"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    logged = read_jsonl(out / LOG) if (out / LOG).is_file() else []
    kept = [record for record in logged if record["step"] <= state.step]
    write_text(out / LOG, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    for record in kept:
        state.record(record)
