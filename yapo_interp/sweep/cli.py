"""The command line: ``python -m yapo_interp.sweep`` (see :mod:`yapo_interp.sweep`).

``main`` parses the flags into a :class:`~yapo_interp.sweep.config.SweepConfig`, checks what can
be checked before any worker loads the model (device, ``--out``, the layer and its SAE, the
countries and data) and calls :func:`~yapo_interp.sweep.stage.run_sweep`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yapo_interp.cli import check_device, check_layers, check_sae_available, check_writable
from yapo_interp.data import load_cultural, resolve_countries
from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, REJECTED
from yapo_interp.errors import UserError
from yapo_interp.models import PRESETS, get_preset
from yapo_interp.steering import METHODS
from yapo_interp.sweep.config import QUICK, SweepConfig
from yapo_interp.sweep.gather import describe_lambda
from yapo_interp.sweep.grid import BASELINE_METHOD, EVAL_SETTINGS, SELECT_METRICS
from yapo_interp.sweep.stage import run_sweep


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.sweep``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.sweep",
        description="A grid of steering-vector trainings and their validation/test evaluations "
                    "on Ray; per-method lr and λ selection on the validation split.")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                      help="default: bipo yapo sae-dense")
    grid.add_argument("--countries", nargs="+", default=None, help="default: egypt")
    grid.add_argument("--settings", nargs="+", choices=EVAL_SETTINGS, default=None,
                      help="training prompt settings (default: localized)")
    grid.add_argument("--lrs", nargs="+", type=float, default=None,
                      help="learning rates (default: the preset's)")
    grid.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    grid.add_argument("--multipliers", nargs="+", type=float, default=None,
                      help="λ values scored on validation and test (default: 1)")
    grid.add_argument("--no-baseline", action="store_true",
                      help="skip the unsteered model's trial per country (tables 1 and 3 "
                           "and the differences against it need it)")
    shared = parser.add_argument_group("every trial")
    shared.add_argument("--epochs", type=int, default=None, help="default: 20")
    shared.add_argument("--batch-size", type=int, default=4)
    shared.add_argument("--warmup-steps", type=int, default=100)
    shared.add_argument("--beta", type=float, default=0.1)
    shared.add_argument("--eval-every", type=int, default=0,
                        help="validation loss every N steps (default 0: after every epoch)")
    shared.add_argument("--max-pairs", type=int, default=None,
                        help="training pairs per trial, whole questions (quick runs)")
    shared.add_argument("--max-eval-items", type=int, default=None,
                        help="items scored per split (quick runs)")
    shared.add_argument("--rejected", choices=REJECTED, default=None,
                        help="dispreferred responses (default: the preset's)")
    shared.add_argument("--data", type=Path, default=None,
                        help="cultural dataset file/folder (default: the shipped data)")
    shared.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    shared.add_argument("--validation-fraction", type=float,
                        default=DEFAULT_VALIDATION_FRACTION)
    shared.add_argument("--split-seed", type=int, default=0)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="embedded")
    model.add_argument("--model", default=None, help="override the preset's model")
    model.add_argument("--layer", type=int, default=None, help="default: the preset's")
    model.add_argument("--device", default="cpu")
    model.add_argument("--model-factory", default=None,
                       help="MODULE:FUNCTION returning (model, sae, sae_info) for a layer, "
                            "instead of the preset (tests: yapo_interp.testing:tiny_sweep_setup)")
    run = parser.add_argument_group("running")
    run.add_argument("--workers", type=int, default=None,
                     help="CPUs of the local Ray instance = trials at once (default: all)")
    run.add_argument("--address", default=None,
                     help="an existing Ray cluster (e.g. HEAD:6379; see the Slurm recipe)")
    run.add_argument("--threads", type=int, default=1, help="torch threads per trial (1)")
    run.add_argument("--gpus-per-trial", type=float, default=0)
    run.add_argument("--loss-threshold", type=float, default=0.1,
                     help="validation loss for steps-to-threshold (default 0.1, figure 2)")
    run.add_argument("--select-metric", choices=SELECT_METRICS, default="margin",
                     help="validation metric that picks λ (default: margin)")
    run.add_argument("--min-seeds", type=int, default=3,
                     help="the lr is chosen among lrs run with at least this many seeds when "
                          "any are (screen every lr on one seed, confirm the pick on more)")
    run.add_argument("--quick", action="store_true",
                     help="a small grid for a CPU: " + ", ".join(
                         f"{key}={value}" for key, value in QUICK.items()))
    run.add_argument("--report-only", action="store_true",
                     help="run no trial: gather, select and report the grid's finished ones")
    run.add_argument("--png", action="store_true",
                     help="the report's figures as PNG too (needs kaleido and a Chrome)")
    run.add_argument("--out", type=Path, default=Path("runs/sweep"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 when every trial finished, 1 when some failed (reported, rerun
    next time)."""
    args = build_parser().parse_args(argv)
    if args.preset not in PRESETS:
        raise UserError(f"--preset {args.preset!r}: use one of {', '.join(sorted(PRESETS))}")
    config = SweepConfig.from_args(args)
    grid = config.grid
    check_device(args.device)
    check_writable(args.out)
    if not args.model_factory:  # the layer and its SAE, before any worker loads the model
        preset = get_preset(args.preset)
        layer = args.layer if args.layer is not None else preset.layer
        check_layers(args.model or preset.model, [layer])
        check_sae_available(preset.sae_for_layer(layer)[0], layer)
    resolve_countries(list(grid.countries))  # unknown names fail here, before Ray starts
    load_cultural(args.data, countries=list(grid.countries))
    trials = grid.trials()
    print(f"[sweep] {len(trials)} trials -> {args.out}", file=sys.stderr)
    result = run_sweep(config, args.out, run_trials=not args.report_only)
    pending = len(trials) - result.ran - result.skipped - len(result.failed)
    rescored = f" ({result.rescored} scored at new λ, not retrained)" if result.rescored else ""
    print(f"[sweep] {result.ran} ran{rescored}, {result.skipped} skipped (finished before), "
          + (f"{pending} not run (--report-only), " if pending else "")
          + f"{len(result.failed)} failed; table {result.files['results']}, selection "
          f"{result.files['selection']}"
          + (f", report {result.files['report']}" if "report" in result.files else ""))
    for method, chosen in result.selection["methods"].items():
        if method == BASELINE_METHOD:
            continue
        print(f"[sweep] {method}: lr {chosen.get('lr')}, {describe_lambda(chosen)}"
              + (f" ({chosen['note']})" if "note" in chosen else ""))
    return 1 if result.failed else 0

