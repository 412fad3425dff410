"""Training steering vectors: BiPO and YaPO by preference optimisation, CAA and SAS by averaging.

**BiPO / YaPO** (algorithm 1 of the paper). ``v`` starts at zero; each minibatch of ``B``
preference triples draws one direction ``d ~ U{−1, +1}`` and takes an AdamW step on the loss of
eq. 1 (BiPO, dense ``v ∈ R^{d_model}``) or eq. 4 (YaPO, sparse ``v ∈ R^{d_sae}`` steering through a
frozen SAE); the model and the SAE stay frozen, ``λ = 1``. ``sae-dense`` (issue 13's control)
trains ``c ∈ R^{d_sae}`` with the same objective and SAE, applied as ``h + d·λ·(c @ W_dec)``: YaPO's
parameterisation without the encoder and the ReLU. Defaults are appendix A's: AdamW
(β₁ 0.9, β₂ 0.999, weight decay 0.05), learning rate 5e-4, cosine schedule with 100 warm-up steps,
batch 4, 20 epochs; β = 0.1 (appendix A does not state β; 0.1 is BiPO's default). The warm-up is
capped at ``warmup_ratio`` (10 %) of the run, so a short run reaches its peak learning rate: 100
warm-up steps in a 32-step run would leave the rate at a fraction of the peak throughout. The
effective schedule is saved in ``run.json``. ``v`` is float32 whatever the model's dtype (AdamW
updates of a bf16 ``v`` vanish below bf16 resolution). The ``paper`` preset adds what the
authors' code does beyond appendix A: gradient clipping at 1.0, EOS appended to responses, and a
global batch of 32 (here ``gradient_accumulation`` micro-batches of 4, one ``d`` drawn per
micro-batch as each of their 8 data-parallel ranks draws its own).

**Sparse YaPO** (issue 14, an option): AdamW leaves most of YaPO's ``d_sae`` entries non-zero with
similar magnitudes, which no reader can attribute. ``l1`` adds the penalty ``l1·‖v‖₁`` as a
proximal step: after each AdamW step every entry is shrunk towards zero by ``lr·l1`` and set to
exactly zero when it would cross (soft thresholding), so ``l1`` is in units of an Adam step (an
entry survives while its gradients push it by more than ``l1`` of the step); ``max_features = K``
then keeps the ``K`` entries of largest ``|v|`` and zeroes the rest (a projection onto K-sparse
vectors), so the vector uses at most ``K`` features throughout training (``project_sparse``). Both
apply to the methods whose ``v`` lives in SAE code space (yapo, sae-dense); the step log records the
number of non-zero entries.

The data split is by question (``yapo_interp.data.pairs``): test questions never reach training;
the eval loss is measured on a *validation* split carved from the training questions. The
vector's metadata records every question it was fitted or validated on, and ``evaluate``
refuses to score it on any of them.
The loss is computed by ``objective.PreferenceObjective`` with the fast path on (cached layer-L
activations and reference log-probs, unembedding at response positions only, chosen and rejected
batched with a shared prompt) — proven equal to the plain computation in
``tests/test_objective.py``.

**CAA** (Panickssery et al., 2024) — the mean difference of layer-L activations between chosen and
rejected responses, ``v = mean_i( mean_t h_t(x_i + y_w^i) ) − mean_i( mean_t h_t(x_i + y_l^i) )``
with ``t`` running over the response tokens. **SAS** (Bayat et al., 2025) — the same in SAE code
space, ``Enc(h_t)`` instead of ``h_t``. Both are one pass over the data; they are applied with eq. 2
and eq. 3 like BiPO and YaPO.

Outputs in ``--out``: ``log.jsonl`` (one record per step: ``step, epoch, train_loss, direction,
lr, grad_norm, perturbation, nonzero`` — ``nonzero`` counts v's non-zero entries after the step,
``perturbation`` is ``‖Φ(h) − h‖`` averaged over the minibatch's
tokens with the ``v`` the step's loss used, from the cached activations; eval records: ``step,
epoch, eval_loss, eval_loss_plus, eval_loss_minus`` — eval loss is the
objective's expectation over ``d = ±1`` on held-out pairs), ``vectors/epoch_XX`` (a vector after
each epoch, XX from 01), ``vector`` (the final one), ``checkpoint.pt`` (v, optimizer, scheduler, RNG
state, step; written atomically each epoch) and ``run.json`` (settings and versions). Re-running
the same command resumes from the checkpoint; the same seed gives the same vector.

    python -m yapo_interp.train --method yapo --country egypt --setting localized
    python -m yapo_interp.train --method bipo --behaviour power-seeking --epochs 5
    python -m yapo_interp.train --method bipo --behaviour-csv power_seeking.csv --epochs 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from yapo_interp.cli import (add_common_args, check_run_args, check_sae_available, model_name,
                             preset_from_args, run_cli, set_seed)
from yapo_interp.data.pairs import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
    REJECTED,
)
from yapo_interp.errors import UserError
from yapo_interp.io import append_jsonl, atomic_path, read_jsonl, run_info, write_json, write_text
from yapo_interp.objective import FastPath, PreferenceObjective
from yapo_interp.steering import (
    METHODS,
    SAE_METHODS,
    SPARSE_METHODS,
    SteeringVector,
    sae_layer_of,
    vector_from_tensor,
)

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from yapo_interp.data import PreferencePair
    from yapo_interp.models import Preset

CHECKPOINT = "checkpoint.pt"
DEFAULT_OUT = Path("runs/train/METHOD-COUNTRY-SETTING-LLAYER")
LOG = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings: appendix A's defaults, BiPO's where the paper is silent (β)."""

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
    # fast path (see objective.py); all False = the plain computation
    cache_activations: bool = True
    cache_reference: bool = True
    response_only_unembed: bool = True
    batch_chosen_rejected: bool = True
    share_prompt: bool = True
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
        self.fast_path()  # validates the flag combination

    def fast_path(self) -> FastPath:
        return FastPath(self.cache_activations, self.cache_reference, self.response_only_unembed,
                        self.batch_chosen_rejected, self.share_prompt)

    @property
    def is_sparse(self) -> bool:
        """Steers through the SAE's encoder and ReLU (yapo, sas)."""
        return self.method in SPARSE_METHODS

    @property
    def uses_sae(self) -> bool:
        """``v`` lives in SAE code space and needs the SAE (yapo, sas, sae-dense)."""
        return self.method in SAE_METHODS


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


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


def pairs_hash(pairs: Sequence[PreferencePair]) -> str:
    """A fingerprint of preference pairs (their texts, in order)."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.prompt, pair.chosen, pair.rejected]).encode())
    return digest.hexdigest()[:16]


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


def resolve_layer(config: TrainConfig, sae: SAE | None) -> int:
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


def _load_checkpoint(out_dir: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    if out_dir is None or not (out_dir / CHECKPOINT).is_file():
        return None
    checkpoint = torch.load(out_dir / CHECKPOINT, weights_only=False)
    if checkpoint["identity"] != identity:
        differing = sorted(key for key in identity | checkpoint["identity"]
                           if identity.get(key) != checkpoint["identity"].get(key))
        raise UserError(f"{out_dir} holds a checkpoint of a different run (differs in: "
                        f"{', '.join(differing)}). Use another --out, or delete {out_dir} to "
                        "start over.")
    return checkpoint


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
    """Train (BiPO, YaPO) or compute (CAA, SAS) a steering vector on ``pairs``.

    With ``out_dir``, logs, per-epoch vectors and a resumable checkpoint are written there, and a
    run interrupted after an epoch resumes where it stopped. ``metadata`` (country, setting,
    dataset_hash, ...) is stored in the vector; ``sae_info`` ({release, id, path}) says where the
    SAE came from.
    """
    if not pairs:
        raise UserError("No training pairs: check the country, setting and data path.")
    layer = resolve_layer(config, sae)
    out = Path(out_dir) if out_dir is not None else None
    extra = {"settings": asdict(config), "dataset_hash": pairs_hash(pairs), **(metadata or {})}

    def make_vector(tensor: torch.Tensor, epoch: int | None) -> SteeringVector:
        return vector_from_tensor(config.method, layer, tensor, model, sae=sae, sae_info=sae_info,
                                  epoch=epoch, **extra)

    if config.method in ("caa", "sas"):
        with frozen(model, sae):
            tensor = mean_difference_vector(model, pairs, layer,
                                            sae=sae if config.method == "sas" else None,
                                            batch_size=config.forward_batch_size,
                                            progress=progress)
        vector = make_vector(tensor, None)
        if out is not None:
            vector.save(out / "vector")
        return vector

    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    objective = PreferenceObjective(model, layer, sae=sae if config.uses_sae else None,
                                    beta=config.beta, multiplier=config.multiplier,
                                    fast_path=config.fast_path(), append_eos=config.append_eos,
                                    method=config.method)
    width = sae.cfg.d_sae if config.uses_sae else model.cfg.d_model
    schedule = training_schedule(config, len(pairs))
    total_steps = schedule.total_steps
    if schedule.warmup_steps >= total_steps:
        warnings.warn(f"warm-up ({schedule.warmup_steps} steps) covers the whole run "
                      f"({total_steps} steps): the learning rate never reaches its peak. Lower "
                      "--warmup-steps or keep the default --warmup-ratio.", stacklevel=2)
    # float32 whatever the model's dtype: AdamW updates of a bf16 v vanish below its resolution
    v = torch.zeros(width, device=model.cfg.device, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.AdamW([v], lr=config.lr, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, schedule.warmup_steps, total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    start_epoch, step = 0, 0
    settings = asdict(config)
    for name, default in (("l1", 0.0), ("max_features", None)):  # later options, off: runs
        if settings[name] == default:  # started before them still resume
            del settings[name]
    identity = {"config": settings, "train": pairs_hash(pairs),
                "eval": pairs_hash(eval_pairs), "layer": layer, "width": width}
    checkpoint = _load_checkpoint(out, identity)
    if checkpoint is not None:  # resume: restore everything the next epoch depends on
        with torch.no_grad():
            v.copy_(checkpoint["v"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        logged = read_jsonl(out / LOG) if (out / LOG).is_file() else []
        kept = [record for record in logged if record["step"] <= step]
        write_text(out / LOG, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        if progress:
            print(f"[train] resuming {out} after epoch {start_epoch} (step {step})",
                  file=sys.stderr)
    elif out is not None:
        write_text(out / LOG, "")
        write_json(out / "run.json", run_info({**extra, "layer": layer, "n_train": len(pairs),
                                               "n_eval": len(eval_pairs),
                                               "schedule": asdict(schedule)}))

    with frozen(model, sae):
        finished = start_epoch >= config.epochs
        train_data = [] if finished else objective.prepare(
            pairs, batch_size=config.forward_batch_size, progress=progress)
        eval_data = [] if finished else objective.prepare(
            eval_pairs, batch_size=config.forward_batch_size)
        bar = tqdm(total=total_steps, initial=step, desc=f"{config.method} L{layer}",
                   disable=not progress)

        def log_eval(epoch: int) -> None:
            if eval_data and out is not None:
                append_jsonl(out / LOG, {"step": step, "epoch": epoch, **evaluate_loss(
                    objective, eval_data, v, config.forward_batch_size)})

        for epoch in range(start_epoch + 1, config.epochs + 1):
            batches = torch.randperm(len(pairs), generator=generator).split(config.batch_size)
            for first in range(0, len(batches), config.gradient_accumulation):
                micro_batches = batches[first : first + config.gradient_accumulation]
                n_step = sum(len(indices) for indices in micro_batches)
                lr = scheduler.get_last_lr()[0]  # the rate this step uses
                optimizer.zero_grad()
                loss_total, directions, perturbation = 0.0, [], 0.0
                for indices in micro_batches:  # one d per micro-batch, gradients accumulated
                    direction = 1 if int(torch.randint(2, (1,), generator=generator)) else -1
                    batch = [train_data[i] for i in indices.tolist()]
                    loss = objective.loss(batch, v, direction)
                    (loss * (len(indices) / n_step)).backward()
                    loss_total += loss.item() * len(indices) / n_step
                    directions.append(direction)
                    moved = objective.perturbation(batch, v, direction)  # no forward: cached h
                    perturbation = None if moved is None or perturbation is None else (
                        perturbation + moved * len(indices) / n_step)
                grad_norm = float(v.grad.norm())
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_([v], config.max_grad_norm)
                optimizer.step()
                if config.l1 or config.max_features is not None:
                    with torch.no_grad():
                        v.copy_(project_sparse(v, threshold=lr * config.l1,
                                               max_features=config.max_features))
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_total:.4f}", d=directions[0])
                if out is not None:
                    append_jsonl(out / LOG, {"step": step, "epoch": epoch,
                                             "train_loss": loss_total,
                                             "direction": directions[0] if len(directions) == 1
                                             else directions,
                                             "lr": lr, "grad_norm": grad_norm,
                                             "perturbation": perturbation,
                                             "nonzero": int((v != 0).sum())})
                if config.eval_every and step % config.eval_every == 0:
                    log_eval(epoch)
            if not config.eval_every:
                log_eval(epoch)
            if out is not None:
                make_vector(v, epoch).save(out / "vectors" / f"epoch_{epoch:02d}")
                with atomic_path(out / CHECKPOINT) as temporary:
                    torch.save({"v": v.detach().cpu(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(),
                                "generator": generator.get_state(),
                                "torch_rng": torch.get_rng_state(), "epoch": epoch, "step": step,
                                "identity": identity}, temporary)
        bar.close()
    vector = make_vector(v, config.epochs)
    if out is not None:
        vector.save(out / "vector")
    return vector


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.train",
        description="Train a steering vector: YaPO (sparse, eq. 4), BiPO (dense, eq. 1), or the "
                    "CAA / SAS mean-difference baselines.",
    )
    parser.add_argument("--method", choices=METHODS, required=True)
    data = parser.add_argument_group("data")
    data.add_argument("--country", help="country of the cultural dataset, e.g. egypt")
    data.add_argument("--setting", choices=("localized", "nonlocalized", "both"),
                      default="localized", help="prompt setting (default: localized)")
    data.add_argument("--rejected", choices=REJECTED, default=None,
                      help="dispreferred responses: the Western option, another country's "
                           "option, all other options, or the model's own greedy answer "
                           "(generated, on-policy; cached). Default: the preset's (embedded: "
                           "western, paper: generated)")
    data.add_argument("--data", type=Path, default=None,
                      help="cultural dataset file/folder (default: the shipped data)")
    data.add_argument("--behaviour-csv", type=Path, default=None,
                      help="train on a behaviour CSV (question,matching,not_matching) instead, "
                           "texts used as written")
    data.add_argument("--behaviour", default=None, metavar="NAME|FOLDER",
                      help="train on a BiPO behaviour set instead: power-seeking, "
                           "wealth-seeking, or a folder with train.csv, test.csv, "
                           "test_infer.csv; its train.csv only, formatted as BiPO does "
                           "(--behaviour-template); malformed rows skipped and reported")
    data.add_argument("--behaviour-template", choices=("bipo", "chat", "completion", "raw"),
                      default="bipo",
                      help="prompt template of --behaviour (default bipo: Llama-2 [INST] and "
                           "a leading space before each answer)")
    data.add_argument("--strict-data", action="store_true",
                      help="--behaviour: refuse a malformed row instead of skipping it")
    data.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                      help="share of questions held out as test (by a hash of the question id; "
                           f"default {DEFAULT_TEST_FRACTION}); never trained or tuned on")
    data.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
                      help="share of the training questions kept out of fitting for the eval "
                           f"loss and tuning (default {DEFAULT_VALIDATION_FRACTION})")
    data.add_argument("--split-seed", type=int, default=0,
                      help="seed of the question split (default 0; keep it fixed across "
                           "training seeds so every run has the same test questions)")
    data.add_argument("--max-pairs", type=int, default=None,
                      help="use whole questions (seeded order) up to N training pairs, forms "
                           "in proportion (quick runs)")
    training = parser.add_argument_group("training (defaults: appendix A)")
    training.add_argument("--layer", type=int, default=None,
                          help="steering layer (default: the preset's)")
    training.add_argument("--sae", default=None,
                          help="SAE: an SAELens release or a local folder (default: the preset's)")
    training.add_argument("--sae-id", default=None, help="SAE id within --sae's release")
    training.add_argument("--epochs", type=int, default=defaults.epochs,
                          help=f"passes over the training pairs (default: {defaults.epochs})")
    training.add_argument("--beta", type=float, default=defaults.beta,
                          help=f"β of eq. 1/4; appendix A gives none, BiPO uses {defaults.beta}")
    training.add_argument("--lr", type=float, default=None,
                          help="learning rate (default: the preset's; paper: 5e-4, embedded: "
                               "0.5, see models.Preset.lr)")
    training.add_argument("--batch-size", type=int, default=defaults.batch_size,
                          help=f"pairs per micro-batch; one d each (default: {defaults.batch_size})")
    training.add_argument("--gradient-accumulation", type=int, default=None,
                          help="micro-batches per optimiser step (default: the preset's; paper: 8, "
                               "a global batch of 32 as the authors' 8 ranks × 4)")
    training.add_argument("--max-grad-norm", type=float, default=None,
                          help="clip the gradient norm of v (default: the preset's; paper: 1.0)")
    training.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                          help=f"warm-up steps of the cosine schedule (default: {defaults.warmup_steps}), "
                               "capped by --warmup-ratio")
    training.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio,
                          help="cap the warm-up at this share of the run (default: "
                               f"{defaults.warmup_ratio}; 1 = no cap)")
    training.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                          help=f"AdamW weight decay (default: {defaults.weight_decay})")
    training.add_argument("--eval-every", type=int, default=defaults.eval_every,
                          help="eval loss every N steps (default 0: after every epoch)")
    training.add_argument("--l1", type=float, default=defaults.l1,
                          help="sparse YaPO: L1 penalty on v as a soft threshold of lr·L1 after "
                               "each step (default 0: off)")
    training.add_argument("--max-features", type=int, default=None, metavar="K",
                          help="sparse YaPO: keep only the K largest |v| entries after each step")
    training.add_argument("--threads", type=int, default=0,
                          help="torch CPU threads (default 0: torch's choice); on a CPU shared "
                               "with other jobs, 1 is often several times faster")
    training.add_argument("--plain", action="store_true",
                          help="turn every speed-up off (the plain objective; for comparison)")
    for flag in ("cache-activations", "cache-reference", "response-only-unembed",
                 "batch-chosen-rejected", "share-prompt"):
        training.add_argument(f"--no-{flag}", action="store_true",
                              help="turn off this one speed-up (see objective.py)")
    add_common_args(parser, out_default=str(DEFAULT_OUT))
    return parser


@dataclass(frozen=True)
class DataSelection:
    """Which cultural questions a run fits on and validates on, and how its pairs look."""

    country: str
    setting: str = "localized"
    rejected: str = "western"
    style: str = "completion"
    response_format: str = "option"
    test_fraction: float = DEFAULT_TEST_FRACTION
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = 0
    max_pairs: int | None = None
    data: str | None = None


def select_items(selection: DataSelection) -> tuple[list, list, dict[str, Any]]:
    """``(fit_items, validation_items, info)`` of a cultural run; ``info`` goes into the vector's
    metadata: the split rule, seed and fractions, and every question id the run used (fit and
    validation), which ``evaluate`` refuses to score the vector on."""
    from yapo_interp import data

    countries = data.resolve_countries([selection.country])
    items = data.load_cultural(selection.data, countries=countries)
    fit, validation = data.validation_questions(
        items, test_fraction=selection.test_fraction,
        validation_fraction=selection.validation_fraction, seed=selection.split_seed)
    if selection.max_pairs is not None:
        fit = data.limit_pairs_by_question(fit, selection.max_pairs, setting=selection.setting,
                                           rejected=selection.rejected,
                                           seed=selection.split_seed)
    if not fit:
        raise UserError(f"no training questions for {countries[0]} after the split; lower "
                        "--test-fraction / --validation-fraction")
    used = sorted({item.question_id for item in [*fit, *validation]})
    info = {"country": countries[0], "setting": selection.setting,
            "rejected": selection.rejected, "prompt_style": selection.style,
            "response_format": selection.response_format,
            "dataset_hash": data.dataset_hash(items),
            "split": {"rule": data.SPLIT_RULE, "test_fraction": selection.test_fraction,
                      "validation_fraction": selection.validation_fraction,
                      "seed": selection.split_seed},
            "train_question_ids": used}
    return fit, validation, info


def build_pairs(model: HookedTransformer, items: Sequence, selection: DataSelection, *,
                cache_dir: Path | None = None, progress: bool = True) -> list[PreferencePair]:
    """The preference pairs of ``items`` as ``selection`` formats them (generating and caching
    the model's own answers first when ``rejected="generated"``)."""
    from yapo_interp import data

    generated = None
    if selection.rejected == "generated":
        from yapo_interp.models import cache_root
        from yapo_interp.onpolicy import GenerationSettings, generated_rejections

        prompts = [data.pair_prompt(item, form, style=selection.style,
                                    response_format=selection.response_format,
                                    tokenizer=model.tokenizer)[0]
                   for form in data.setting_forms(selection.setting)
                   for item in items if item.has_form(form)]
        settings = GenerationSettings(model=model.cfg.model_name,
                                      first_line_only=selection.style == "completion")
        generated = generated_rejections(
            model, prompts, settings=settings,
            cache_dir=cache_dir or cache_root() / "onpolicy", progress=progress)
    pairs = data.build_preference_pairs(
        items, setting=selection.setting, rejected=selection.rejected, style=selection.style,
        tokenizer=model.tokenizer, response_format=selection.response_format,
        generated=generated)
    if generated is not None and len(pairs) < len(prompts) and progress:
        print(f"[train] {len(prompts) - len(pairs)} of {len(prompts)} prompts give no pair: the "
              "model's own answer was empty or the chosen one", file=sys.stderr)
    return pairs


def behaviour_pairs(path: Path, *, test_fraction: float, seed: int
                    ) -> tuple[list, list, dict[str, Any]]:
    """Training and held-out pairs of a behaviour CSV (split by a seeded permutation)."""
    from yapo_interp import data

    pairs = list(data.load_behaviour_csv(path))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(pairs) * test_fraction))
    test = [pairs[i] for i in order[:n_test].tolist()]
    train = [pairs[i] for i in order[n_test:].tolist()]
    return train, test, {"behaviour_csv": str(path), "dataset_hash": pairs_hash(pairs),
                         "country": None, "setting": None}


def behaviour_set_pairs(behaviour: Any, *, template: str, tokenizer: Any,
                        validation_fraction: float, seed: int
                        ) -> tuple[list, list, dict[str, Any]]:
    """Fitting and validation pairs of a BiPO behaviour set's ``train.csv`` (``behaviour`` from
    :func:`yapo_interp.data.behaviour.load_behaviour`), formatted with ``template``. The
    validation questions are chosen by a hash of the question text and ``seed``; ``test.csv`` and
    ``test_infer.csv`` are left for ``python -m yapo_interp.behaviour``."""
    from yapo_interp.data.behaviour import preference_pairs

    def held_out(question: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{question}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction

    fit = [pair for pair in behaviour.train if not held_out(pair.question)]
    validation = [pair for pair in behaviour.train if held_out(pair.question)]
    if not fit:
        raise UserError(f"no training questions left in {behaviour.folder}/train.csv after the "
                        f"validation split; lower --validation-fraction")
    train_pairs = preference_pairs(fit, template=template, tokenizer=tokenizer)
    eval_pairs = preference_pairs(validation, template=template, tokenizer=tokenizer)
    report = behaviour.reports["train"]
    info = {"behaviour": behaviour.name, "behaviour_folder": str(behaviour.folder),
            "behaviour_template": template, "country": None, "setting": None,
            "dataset_hash": pairs_hash(train_pairs + eval_pairs),
            "skipped_rows": report.skipped,
            "split": {"rule": "sha256(seed:question) < validation_fraction",
                      "validation_fraction": validation_fraction, "seed": seed}}
    return train_pairs, eval_pairs, info


def config_from_args(args: argparse.Namespace, preset: Preset) -> TrainConfig:
    """The ``TrainConfig`` of a command line, the preset filling what the user left out."""
    flags = {name: not (args.plain or getattr(args, f"no_{name}"))
             for name in ("cache_activations", "cache_reference", "response_only_unembed",
                          "batch_chosen_rejected", "share_prompt")}
    return TrainConfig(
        method=args.method, layer=args.layer if args.layer is not None else preset.layer,
        beta=args.beta, lr=args.lr if args.lr is not None else preset.lr,
        batch_size=args.batch_size, epochs=args.epochs, warmup_steps=args.warmup_steps,
        warmup_ratio=None if args.warmup_ratio >= 1 else args.warmup_ratio,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm is not None
        else preset.max_grad_norm,
        gradient_accumulation=args.gradient_accumulation or preset.gradient_accumulation,
        append_eos=preset.append_eos, weight_decay=args.weight_decay, seed=args.seed,
        eval_every=args.eval_every, l1=args.l1, max_features=args.max_features, **flags)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from yapo_interp.models import SHIPPED_SAE_DIR, check_layer, load_model, load_sae

    set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = preset_from_args(args)
    config = config_from_args(args, preset)
    layer = config.layer
    if args.max_pairs is not None and args.max_pairs < 1:
        raise UserError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    check_run_args(args, layers=[layer])  # device, --out, layer range: before the model load
    if config.uses_sae and not args.sae:
        check_sae_available(preset.sae_for_layer(layer)[0], layer)
    selection = behaviour = None
    if args.behaviour is not None:  # before the model: fail fast on bad data
        from yapo_interp.data.behaviour import load_behaviour

        if args.behaviour_csv is not None:
            raise UserError("give --behaviour or --behaviour-csv, not both")
        behaviour = load_behaviour(args.behaviour, strict=args.strict_data, files=("train",))
        print(f"[train] {behaviour.reports['train'].summary()}", file=sys.stderr)
    elif args.behaviour_csv is not None:  # before the model: fail fast on bad data
        train_pairs, eval_pairs, data_info = behaviour_pairs(
            args.behaviour_csv, test_fraction=args.test_fraction, seed=args.split_seed)
        if args.max_pairs is not None:
            train_pairs = train_pairs[: args.max_pairs]
    elif not args.country:
        raise UserError("Say which country to train for (--country egypt), or give "
                        "--behaviour power-seeking (a BiPO behaviour set) or --behaviour-csv "
                        "FILE.")
    else:
        selection = DataSelection(
            country=args.country, setting=args.setting,
            rejected=args.rejected or preset.rejected, style=preset.prompt_style,
            response_format=preset.response_format, test_fraction=args.test_fraction,
            validation_fraction=args.validation_fraction, split_seed=args.split_seed,
            max_pairs=args.max_pairs, data=str(args.data) if args.data else None)
        fit_items, validation_items, data_info = select_items(selection)
    name = model_name(args)
    model = load_model(name, device=args.device)
    check_layer(model, layer)
    if behaviour is not None:
        train_pairs, eval_pairs, data_info = behaviour_set_pairs(
            behaviour, template=args.behaviour_template, tokenizer=model.tokenizer,
            validation_fraction=args.validation_fraction, seed=args.split_seed)
        if args.max_pairs is not None:
            train_pairs = train_pairs[: args.max_pairs]
    if selection is not None:
        train_pairs = build_pairs(model, fit_items, selection)
        eval_pairs = build_pairs(model, validation_items, selection, progress=False)
    sae, sae_info = None, None
    if config.uses_sae:
        release, sae_id = (args.sae, args.sae_id) if args.sae else preset.sae_for_layer(layer)
        sae = load_sae(release, sae_id, layer=layer, model=model, device=args.device)
        path = SHIPPED_SAE_DIR / f"layer_{layer}" if release == "embedded" else (
            release if Path(release).expanduser().is_dir() else None)
        sae_info = {"release": release, "id": sae_id, "path": str(path) if path else None}
    out = args.out
    if out == DEFAULT_OUT:
        label = (data_info.get("country") or data_info.get("behaviour")
                 or Path(str(data_info.get("behaviour_csv"))).stem)
        setting = data_info.get("setting") or ("bipo-set" if behaviour is not None else "csv")
        out = Path("runs/train") / f"{args.method}-{label}-{setting}-L{layer}"
    schedule = training_schedule(config, len(train_pairs))
    print(f"[train] {args.method} on {name}, layer {layer}: {len(train_pairs)} training pairs, "
          f"{len(eval_pairs)} validation pairs; {schedule.total_steps} steps of "
          f"{schedule.pairs_per_step} pairs, warm-up {schedule.warmup_steps} -> {out}",
          file=sys.stderr)
    started = time.time()
    vector = train_steering_vector(
        model, train_pairs, eval_pairs, config, sae=sae, out_dir=out, sae_info=sae_info,
        metadata={**data_info, "preset": args.preset},
    )
    seconds = time.time() - started
    summary = f"[train] saved {vector!r} to {out / 'vector'} ({seconds:.0f} s)"
    if (out / LOG).is_file():
        records = read_jsonl(out / LOG)
        evals = [r["eval_loss"] for r in records if "eval_loss" in r]
        if evals:
            summary += f"; validation loss {math.log(2):.4f} at v = 0 -> {evals[-1]:.4f}"
    print(summary)
    return 0


if __name__ == "__main__":
    run_cli(main)
