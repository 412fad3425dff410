"""What a sweep runs: :class:`SweepConfig` (the grid, the model setup and how the trials run),
built from a command line by ``SweepConfig.from_args``; ``--quick``'s grid (:data:`QUICK`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from yapo_interp.errors import UserError
from yapo_interp.models import get_preset
from yapo_interp.sweep.grid import SELECT_METRICS, SweepGrid
from yapo_interp.sweep.model_setup import ModelSetup

# 12 small trials and the baseline: the machinery end to end (the grid, the lr and λ
# selection, CIs over two seeds), not a result: one epoch of 8 pairs, 2 training steps.
# Measured on an idle 2-core CPU with 2 workers: 755 s with 2 epochs, 2 λ and no baseline;
# 665 s with 2 epochs, one λ and the baseline; 474 s as it is now (one epoch).
QUICK = dict(methods=("bipo", "yapo", "sae-dense"), countries=("egypt",),
             settings=("localized",), lrs=(0.1, 1.0), seeds=(0, 1), multipliers=(1.0,),
             epochs=1, max_pairs=8, max_eval_items=2)


def grid_from_args(args: argparse.Namespace) -> SweepGrid:
    """The grid of a command line: flags, else ``--quick``'s values, else the defaults."""
    quick = QUICK if args.quick else {}

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return tuple(value) if isinstance(value, list) else (
            value if value is not None else quick.get(name, default))

    for name in ("epochs", "batch_size", "max_pairs", "max_eval_items", "workers", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    shared = dict(epochs=pick("epochs", 20), batch_size=args.batch_size,
                  warmup_steps=args.warmup_steps, beta=args.beta, eval_every=args.eval_every,
                  max_pairs=pick("max_pairs", None), rejected=args.rejected,
                  multipliers=tuple(float(m) for m in pick("multipliers", (1.0,))),
                  max_eval_items=pick("max_eval_items", None),
                  test_fraction=args.test_fraction,
                  validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                  data=str(args.data) if args.data else None)
    return SweepGrid(methods=pick("methods", ("bipo", "yapo", "sae-dense")),
                     countries=pick("countries", ("egypt",)),
                     settings=pick("settings", ("localized",)),
                     lrs=pick("lrs", (get_preset(args.preset).lr,)),
                     seeds=pick("seeds", (0, 1, 2)), shared=shared,
                     baseline=not args.no_baseline)


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep run reads, one field per flag of ``python -m yapo_interp.sweep`` (but
    ``--out``): the grid, how a worker gets its model (``setup``), where and how the trials run
    (a local Ray instance with ``workers`` CPUs, or the cluster at ``address``; ``threads``
    torch threads and ``gpus_per_trial`` GPUs per trial), and how the results are read (steps to
    ``loss_threshold``, λ chosen by ``select_metric``, at least ``min_seeds`` seeds)."""

    grid: SweepGrid
    setup: ModelSetup = field(default_factory=ModelSetup)
    workers: int | None = None       # None: every CPU of the machine
    address: str | None = None       # an existing Ray cluster
    threads: int = 1
    gpus_per_trial: float = 0
    loss_threshold: float = 0.1
    select_metric: str = "margin"
    min_seeds: int = 3
    image_formats: tuple[str, ...] = ()  # ("png",): the report's figures as images too

    def __post_init__(self) -> None:
        if self.select_metric not in SELECT_METRICS:
            raise UserError(f"unknown selection metric {self.select_metric!r}; use "
                            f"{', '.join(SELECT_METRICS)}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SweepConfig:
        """The config of a parsed command line (``build_parser().parse_args(argv)``)."""
        setup = ModelSetup(preset=args.preset, model=args.model, layer=args.layer,
                           device=args.device, factory=args.model_factory)
        return cls(grid=grid_from_args(args), setup=setup, workers=args.workers,
                   address=args.address, threads=args.threads,
                   gpus_per_trial=args.gpus_per_trial, loss_threshold=args.loss_threshold,
                   select_metric=args.select_metric, min_seeds=args.min_seeds,
                   image_formats=("png",) if args.png else ())
