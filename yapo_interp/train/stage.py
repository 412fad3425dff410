"""The training stage as one call: :func:`run_train` takes a complete, frozen
:class:`TrainRunConfig` (training settings, data selection, SAE, preset) and does what
``python -m yapo_interp.train`` does once the model is loaded; the command line is
``TrainRunConfig.from_args`` and this call, and ``config.to_argv()`` writes the command back.
A notebook does the same without an argv::

    config = TrainRunConfig(training=TrainConfig(method="bipo", layer=9, lr=0.5),
                            data=DataSelection(country="egypt", setting="both"))
    result = run_train(model, config, "runs/train/egypt-bipo")
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo_interp import models
from yapo_interp.argv import flag, switch
from yapo_interp.cli import preset_from_args
from yapo_interp.errors import UserError
from yapo_interp.io import read_jsonl
from yapo_interp.models import SHIPPED_SAE_DIR, check_layer, get_preset
from yapo_interp.steering import SteeringVector
from yapo_interp.train.checkpoint import LOG
from yapo_interp.train.config import FAST_PATH_FLAGS, Schedule, TrainConfig, training_schedule
from yapo_interp.train.flags import build_parser, config_from_args
from yapo_interp.train.loop import train_steering_vector
from yapo_interp.train.selection import (BehaviourSelection, DataSelection, Selection,
                                         TrainInputs, read_inputs, training_pairs)

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class TrainRunConfig:
    """Everything ``python -m yapo_interp.train`` reads but ``--out``, ``--device`` and
    ``--threads`` (which belong to the process): the training settings, the data (cultural
    questions or behaviour pairs), the SAE of the SAE-space methods (``sae``: a release or
    folder, default the preset's at the layer) and the preset (its model unless ``model``)."""

    training: TrainConfig
    data: Selection
    sae: str | None = None
    sae_id: str | None = None
    preset: str = "embedded"
    model: str | None = None

    @property
    def model_name(self) -> str:
        """The model to train on: ``model`` if given, else the preset's."""
        return self.model or get_preset(self.preset).model

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainRunConfig:
        """The run a parsed command line asks for (``flags.build_parser``), the preset filling
        what it leaves out; a one-line ``UserError`` for flags that do not make a run."""
        preset = preset_from_args(args)
        training = config_from_args(args, preset)
        if args.max_pairs is not None and args.max_pairs < 1:
            raise UserError(f"--max-pairs must be at least 1, got {args.max_pairs}")
        split = dict(test_fraction=args.test_fraction,
                     validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                     max_pairs=args.max_pairs)
        if args.behaviour is not None or args.behaviour_csv is not None:
            data: Selection = BehaviourSelection(
                behaviour=args.behaviour, csv=args.behaviour_csv,
                template=args.behaviour_template, strict=args.strict_data, **split)
        elif not args.country:
            raise UserError("Say which country to train for (--country egypt), or give "
                            "--behaviour power-seeking (a BiPO behaviour set) or --behaviour-csv "
                            "FILE.")
        else:
            data = DataSelection.for_preset(
                preset, args.country, rejected=args.rejected, setting=args.setting,
                data=str(args.data) if args.data else None, **split)
        return cls(training=training, data=data, sae=args.sae, sae_id=args.sae_id,
                   preset=args.preset, model=args.model)

    def to_argv(self) -> list[str]:
        """The command-line arguments (without ``--out``, ``--device``, ``--threads``) that give
        this config back through ``from_args``; a ``UserError`` naming the settings no command
        line can give (those the preset decides, or fields without a flag)."""
        argv = [*self._training_argv(), *self._data_argv(), *flag("--sae", self.sae),
                *flag("--sae-id", self.sae_id), "--preset", self.preset,
                *flag("--model", self.model)]
        rebuilt = type(self).from_args(build_parser().parse_args(argv))
        if rebuilt != self:
            wanted, got = _flat(asdict(self)), _flat(asdict(rebuilt))
            differing = sorted(key for key in wanted if wanted[key] != got.get(key))
            raise UserError("no command line gives this training run: "
                            + ", ".join(f"{key}={wanted[key]!r} (the command line gives "
                                        f"{got.get(key)!r})" for key in differing))
        return argv

    def _training_argv(self) -> list[str]:
        training = self.training
        return [
            "--method", training.method, *flag("--layer", training.layer),
            "--epochs", str(training.epochs), "--beta", str(training.beta),
            "--lr", str(training.lr), "--batch-size", str(training.batch_size),
            "--gradient-accumulation", str(training.gradient_accumulation),
            *flag("--max-grad-norm", training.max_grad_norm),
            "--warmup-steps", str(training.warmup_steps),
            "--warmup-ratio", str(1 if training.warmup_ratio is None else training.warmup_ratio),
            "--weight-decay", str(training.weight_decay),
            "--eval-every", str(training.eval_every), "--l1", str(training.l1),
            *flag("--max-features", training.max_features), "--seed", str(training.seed),
            *[argument for name in FAST_PATH_FLAGS
              for argument in switch(f"--no-{name.replace('_', '-')}",
                                     not getattr(training.fast_path, name))]]

    def _data_argv(self) -> list[str]:
        data = self.data
        argv = ["--test-fraction", str(data.test_fraction),
                "--validation-fraction", str(data.validation_fraction),
                "--split-seed", str(data.split_seed), *flag("--max-pairs", data.max_pairs)]
        if isinstance(data, DataSelection):
            return ["--country", data.country, "--setting", data.setting,
                    "--rejected", data.rejected, *flag("--data", data.data), *argv]
        return [*flag("--behaviour", data.behaviour), *flag("--behaviour-csv", data.csv),
                "--behaviour-template", data.template, *switch("--strict-data", data.strict),
                *argv]


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training.lr": 0.5, ...}`` of a nested ``asdict``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class TrainResult:
    """What a training run made and where: the vector (also in ``out/vector``), the pairs it
    saw, its schedule, how long it took, and its last validation loss (``None`` without one)."""

    vector: SteeringVector
    out: Path
    n_train: int
    n_eval: int
    schedule: Schedule
    seconds: float
    validation_loss: float | None


def prepare_inputs(config: TrainRunConfig) -> TrainInputs:
    """Read and check ``config``'s data before the model is loaded (see
    :func:`~yapo_interp.train.selection.read_inputs`)."""
    return read_inputs(config.data)


def run_name(config: TrainRunConfig, inputs: TrainInputs) -> Path:
    """The default output folder: ``runs/train/METHOD-COUNTRY-SETTING-LLAYER``."""
    return (Path("runs/train")
            / f"{config.training.method}-{inputs.label}-{inputs.setting}-L{config.training.layer}")


def load_training_sae(model: HookedTransformer, config: TrainRunConfig
                      ) -> tuple[SAE | None, dict[str, Any] | None]:
    """The SAE of an SAE-space method (``config.sae``, else the preset's at the layer) and where
    it came from (``{release, id, path}``, saved in the vector); ``(None, None)`` for the others."""
    training = config.training
    if not training.uses_sae:
        return None, None
    layer = training.layer
    release, sae_id = ((config.sae, config.sae_id) if config.sae
                       else get_preset(config.preset).sae_for_layer(layer))
    # looked up on the module, so that tests can replace models.load_sae
    sae = models.load_sae(release, sae_id, layer=layer, model=model, device=str(model.cfg.device))
    path = SHIPPED_SAE_DIR / f"layer_{layer}" if release == "embedded" else (
        release if Path(release).expanduser().is_dir() else None)
    return sae, {"release": release, "id": sae_id, "path": str(path) if path else None}


def run_train(model: HookedTransformer, config: TrainRunConfig, out: str | Path, *,
              inputs: TrainInputs | None = None, progress: bool = True) -> TrainResult:
    """Make ``config``'s pairs on ``model``, train (or compute) the vector into ``out`` (log,
    per-epoch vectors, checkpoint, ``run.json``, ``vector``; a rerun resumes) and print a
    summary. ``inputs`` (from :func:`prepare_inputs`, default: read now) is the checked data."""
    out = Path(out)
    inputs = inputs if inputs is not None else prepare_inputs(config)
    training = config.training
    check_layer(model, training.layer)
    train_pairs, eval_pairs, data_info = training_pairs(model, config.data, inputs,
                                                        progress=progress)
    sae, sae_info = load_training_sae(model, config)
    schedule = training_schedule(training, len(train_pairs))
    print(f"[train] {training.method} on {config.model_name}, layer {training.layer}: "
          f"{len(train_pairs)} training pairs, {len(eval_pairs)} validation pairs; "
          f"{schedule.total_steps} steps of {schedule.pairs_per_step} pairs, warm-up "
          f"{schedule.warmup_steps} -> {out}", file=sys.stderr)
    started = time.time()
    vector = train_steering_vector(
        model, train_pairs, eval_pairs, training, sae=sae, out_dir=out, sae_info=sae_info,
        metadata={**data_info, "preset": config.preset}, progress=progress)
    seconds = time.time() - started
    evals = [record["eval_loss"] for record in (read_jsonl(out / LOG) if (out / LOG).is_file()
                                                 else []) if "eval_loss" in record]
    summary = f"[train] saved {vector!r} to {out / 'vector'} ({seconds:.0f} s)"
    if evals:
        summary += f"; validation loss {math.log(2):.4f} at v = 0 -> {evals[-1]:.4f}"
    print(summary)
    return TrainResult(vector=vector, out=out, n_train=len(train_pairs), n_eval=len(eval_pairs),
                       schedule=schedule, seconds=seconds,
                       validation_loss=evals[-1] if evals else None)
