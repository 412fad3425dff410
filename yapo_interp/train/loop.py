"""The training loop: BiPO / YaPO / sae-dense by preference optimisation, CAA / SAS by averaging.

``train_steering_vector`` is the one entry point. For the preference methods it builds the
objective, a :class:`~yapo_interp.train.checkpoint.TrainState` (restored from the run's checkpoint
when there is one) and a :class:`PreferenceTrainer`, whose ``fit`` reads as algorithm 1: for every
epoch, for every optimiser step, draw ``d``, take the loss, step AdamW, log; evaluate; save the
epoch's vector and checkpoint.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from yapo_interp.errors import UserError
from yapo_interp.io import append_jsonl, run_info, write_json, write_text
from yapo_interp.objective import FastPath, PreferenceObjective, PreparedPair
from yapo_interp.steering import SteeringVector, sae_layer_of, vector_from_tensor
from yapo_interp.train.checkpoint import (LOG, TrainState, load_checkpoint, new_state, restore,
                                          run_identity, save_checkpoint)
from yapo_interp.train.config import TrainConfig, training_schedule
from yapo_interp.train.selection import pairs_hash

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from yapo_interp.data import PreferencePair


@contextmanager
def frozen(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Turn off gradients of every parameter of ``modules``; restore the flags afterwards."""
    saved = [(parameter, parameter.requires_grad)
             for module in modules if module is not None for parameter in module.parameters()]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in saved:
            parameter.requires_grad_(flag)


def resolve_layer(config: TrainConfig, sae: SAE | None) -> int:
    """The layer to steer: ``config.layer``, else the SAE's; checked against the SAE's."""
    sae_layer = sae_layer_of(sae) if sae is not None else None
    if config.uses_sae and sae is None:
        raise UserError(f"--method {config.method} steers in SAE space: give an SAE (the preset's, "
                        "or --sae).")
    layer = config.layer if config.layer is not None else sae_layer
    if layer is None:
        raise UserError("Say which layer to steer (TrainConfig.layer / --layer).")
    if config.uses_sae and sae_layer is not None and sae_layer != layer:
        raise UserError(f"The SAE reads layer {sae_layer} but the vector is for layer {layer}; "
                        "use the SAE trained on that layer.")
    return layer


# --------------------------------------------------------------------------------------------
# CAA and SAS: mean differences
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def mean_difference_vector(
    model: HookedTransformer,
    pairs: Sequence[PreferencePair],
    layer: int,
    *,
    sae: SAE | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """CAA (``sae=None``: in the residual stream) or SAS (in SAE code space): the mean over pairs
    of the response-averaged activation of ``prompt + chosen`` minus that of
    ``prompt + rejected``."""
    fast = FastPath(cache_activations=True, cache_reference=False, share_prompt=False)
    objective = PreferenceObjective(model, layer, fast_path=fast)
    prepared = objective.prepare(pairs, batch_size=batch_size, progress=progress)
    differences = []
    for pair in prepared:
        means = []
        for resid in (pair.resid_chosen, pair.resid_rejected):
            activations = sae.encode(resid.to(sae.W_dec.device)) if sae is not None else resid
            means.append(activations.mean(0))
        differences.append(means[0] - means[1])
    return torch.stack(differences).mean(0).float().cpu()


# --------------------------------------------------------------------------------------------
# BiPO and YaPO: preference optimisation
# --------------------------------------------------------------------------------------------


def evaluate_loss(objective: PreferenceObjective, prepared: Sequence, v: torch.Tensor,
                  batch_size: int) -> dict[str, float]:
    """Mean loss on held-out pairs for d = +1, d = −1, and their average (eq. 1's expectation)."""
    totals = {1: 0.0, -1: 0.0}
    with torch.no_grad():
        for start in range(0, len(prepared), batch_size):
            batch = prepared[start : start + batch_size]
            for direction in totals:
                totals[direction] += float(objective.loss(batch, v, direction)) * len(batch)
    plus, minus = totals[1] / len(prepared), totals[-1] / len(prepared)
    return {"eval_loss": (plus + minus) / 2, "eval_loss_plus": plus, "eval_loss_minus": minus}


def project_sparse(
    v: Float[torch.Tensor, "d_sae"], *, threshold: float = 0.0, max_features: int | None = None
) -> Float[torch.Tensor, "d_sae"]:
    """Soft-threshold ``v`` by ``threshold`` (the proximal step of an L1 penalty), then keep its
    ``max_features`` entries of largest magnitude (ties: the lower index), zeroing the rest."""
    v = v.detach()
    if threshold > 0:
        v = torch.sign(v) * (v.abs() - threshold).clamp_min(0.0)
    if max_features is not None and max_features < v.numel():
        keep = torch.zeros_like(v, dtype=torch.bool)
        keep[v.abs().topk(max_features, sorted=False).indices] = True
        v = torch.where(keep, v, torch.zeros_like(v))
    return v


def draw_direction(generator: torch.Generator) -> int:
    """``d ~ U{−1, +1}``, one per micro-batch."""
    return 1 if int(torch.randint(2, (1,), generator=generator)) else -1


class PreferenceTrainer:
    """Runs the optimiser steps of one preference run on prepared pairs (``objective.prepare``):
    ``fit(state)`` trains from ``state`` to the last epoch, logging every step and evaluation to
    ``out/log.jsonl`` and calling ``on_epoch(state)`` after each epoch (which saves the epoch's
    vector and the checkpoint)."""

    def __init__(self, objective: PreferenceObjective, config: TrainConfig,
                 train_data: Sequence[PreparedPair], eval_data: Sequence[PreparedPair], *,
                 out: Path | None = None, on_epoch: Callable[[TrainState], None] | None = None,
                 progress_bar: Any = None) -> None:
        self.objective, self.config = objective, config
        self.train_data, self.eval_data = train_data, eval_data
        self.out, self.on_epoch, self.bar = out, on_epoch, progress_bar

    def fit(self, state: TrainState) -> TrainState:
        """Algorithm 1 from ``state.epoch + 1`` to ``config.epochs``."""
        config = self.config
        for epoch in range(state.epoch + 1, config.epochs + 1):
            for micro_batches in self.epoch_batches(state):
                record = self.step(state, micro_batches)
                self.log(state, {"step": state.step, "epoch": epoch, **record})
                if config.eval_every and state.step % config.eval_every == 0:
                    self.evaluate(state, epoch)
            if not config.eval_every:
                self.evaluate(state, epoch)
            state.epoch = epoch
            if self.on_epoch is not None:
                self.on_epoch(state)
        return state

    def epoch_batches(self, state: TrainState) -> Iterator[list[list[PreparedPair]]]:
        """An epoch's optimiser steps: a fresh permutation of the pairs in micro-batches of
        ``batch_size``, ``gradient_accumulation`` micro-batches a step."""
        config = self.config
        order = torch.randperm(len(self.train_data), generator=state.generator)
        batches = order.split(config.batch_size)
        for first in range(0, len(batches), config.gradient_accumulation):
            yield [[self.train_data[i] for i in indices.tolist()]
                   for indices in batches[first : first + config.gradient_accumulation]]

    def step(self, state: TrainState, micro_batches: list[list[PreparedPair]]) -> dict[str, Any]:
        """One optimiser step: a direction and a backward pass per micro-batch (gradients
        accumulated, weighted by size), clipping, AdamW, the sparse projection, the schedule.
        Returns the step's log record (without step and epoch)."""
        config, objective, v = self.config, self.objective, state.v
        n_step = sum(len(batch) for batch in micro_batches)
        lr = state.scheduler.get_last_lr()[0]  # the rate this step uses
        state.optimizer.zero_grad()
        loss_total, directions, perturbation = 0.0, [], 0.0
        for batch in micro_batches:
            direction = draw_direction(state.generator)
            loss = objective.loss(batch, v, direction)
            (loss * (len(batch) / n_step)).backward()
            loss_total += loss.item() * len(batch) / n_step
            directions.append(direction)
            moved = objective.perturbation(batch, v, direction)  # no forward: cached h
            perturbation = None if moved is None or perturbation is None else (
                perturbation + moved * len(batch) / n_step)
        grad_norm = float(v.grad.norm())
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([v], config.max_grad_norm)
        state.optimizer.step()
        if config.l1 or config.max_features is not None:
            with torch.no_grad():
                v.copy_(project_sparse(v, threshold=lr * config.l1,
                                       max_features=config.max_features))
        state.scheduler.step()
        state.step += 1
        return {"train_loss": loss_total,
                "direction": directions[0] if len(directions) == 1 else directions,
                "lr": lr, "grad_norm": grad_norm, "perturbation": perturbation,
                "nonzero": int((v != 0).sum())}

    def evaluate(self, state: TrainState, epoch: int) -> None:
        """The validation loss of the current ``v`` (both directions), logged."""
        if self.eval_data and self.out is not None:
            self.log(state, {"step": state.step, "epoch": epoch, **evaluate_loss(
                self.objective, self.eval_data, state.v, self.config.forward_batch_size)})

    def log(self, state: TrainState, record: dict[str, Any]) -> None:
        """Append ``record`` to the log, take its losses into ``state``, move the progress bar."""
        state.record(record)
        if self.out is not None:
            append_jsonl(self.out / LOG, record)
        if self.bar is not None and "train_loss" in record:
            direction = record["direction"]
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                                 d=direction if isinstance(direction, int) else direction[0])


def fit_preference_vector(
    model: HookedTransformer, pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair], config: TrainConfig, layer: int, *,
    sae: SAE | None, out: Path | None, run_json: dict[str, Any],
    save_epoch: Callable[[torch.Tensor, int], None], progress: bool,
) -> torch.Tensor:
    """BiPO / YaPO / sae-dense: ``v`` after ``config.epochs`` epochs, resumed from ``out``'s
    checkpoint when it holds one of this run. A fresh run writes ``run_json`` (with the
    effective schedule) as ``out/run.json`` and starts ``out/log.jsonl``."""
    objective = PreferenceObjective(model, layer, sae=sae if config.uses_sae else None,
                                    beta=config.beta, multiplier=config.multiplier,
                                    fast_path=config.fast_path, append_eos=config.append_eos,
                                    method=config.method)
    width = sae.cfg.d_sae if config.uses_sae else model.cfg.d_model
    schedule = training_schedule(config, len(pairs))
    if schedule.warmup_steps >= schedule.total_steps:
        warnings.warn(f"warm-up ({schedule.warmup_steps} steps) covers the whole run "
                      f"({schedule.total_steps} steps): the learning rate never reaches its peak. "
                      "Lower --warmup-steps or keep the default --warmup-ratio.", stacklevel=3)
    state = new_state(config, schedule, width, model.cfg.device)
    identity = run_identity(config, pairs, eval_pairs, layer, width)
    checkpoint = load_checkpoint(out, identity)
    if checkpoint is not None:
        restore(state, checkpoint, out)
        if progress:
            print(f"[train] resuming {out} after epoch {state.epoch} (step {state.step})",
                  file=sys.stderr)
    elif out is not None:
        write_text(out / LOG, "")
        write_json(out / "run.json", run_info({**run_json, "schedule": asdict(schedule)}))

    def on_epoch(state: TrainState) -> None:
        if out is not None:
            save_epoch(state.v, state.epoch)
            save_checkpoint(out, state, identity)

    with frozen(model, sae):
        finished = state.epoch >= config.epochs
        train_data = [] if finished else objective.prepare(
            pairs, batch_size=config.forward_batch_size, progress=progress)
        eval_data = [] if finished else objective.prepare(
            eval_pairs, batch_size=config.forward_batch_size)
        with tqdm(total=schedule.total_steps, initial=state.step,
                  desc=f"{config.method} L{layer}", disable=not progress) as bar:
            trainer = PreferenceTrainer(objective, config, train_data, eval_data, out=out,
                                        on_epoch=on_epoch, progress_bar=bar)
            trainer.fit(state)
    return state.v


def train_steering_vector(
    model: HookedTransformer,
    pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair],
    config: TrainConfig,
    *,
    sae: SAE | None = None,
    out_dir: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    sae_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> SteeringVector:
    """Train (BiPO, YaPO, sae-dense) or compute (CAA, SAS) a steering vector on ``pairs``.

    With ``out_dir``, logs, per-epoch vectors and a resumable checkpoint are written there, and a
    run interrupted after an epoch resumes where it stopped. ``metadata`` (country, setting,
    dataset_hash, ...) is stored in the vector; ``sae_info`` ({release, id, path}) says where the
    SAE came from.
    """
    if not pairs:
        raise UserError("No training pairs: check the country, setting and data path.")
    layer = resolve_layer(config, sae)
    out = Path(out_dir) if out_dir is not None else None
    extra = {"settings": config.settings(), "dataset_hash": pairs_hash(pairs), **(metadata or {})}

    def make_vector(tensor: torch.Tensor, epoch: int | None) -> SteeringVector:
        return vector_from_tensor(config.method, layer, tensor, model, sae=sae, sae_info=sae_info,
                                  epoch=epoch, **extra)

    if config.is_mean_difference:
        with frozen(model, sae):
            tensor = mean_difference_vector(model, pairs, layer,
                                            sae=sae if config.method == "sas" else None,
                                            batch_size=config.forward_batch_size,
                                            progress=progress)
        vector = make_vector(tensor, None)
    else:
        tensor = fit_preference_vector(
            model, pairs, eval_pairs, config, layer, sae=sae, out=out, progress=progress,
            run_json={**extra, "layer": layer, "n_train": len(pairs), "n_eval": len(eval_pairs)},
            save_epoch=lambda v, epoch: make_vector(v, epoch).save(
                out / "vectors" / f"epoch_{epoch:02d}"))
        vector = make_vector(tensor, config.epochs)
    if out is not None:
        vector.save(out / "vector")
    return vector
