"""``python -m yapo_interp.patching``: flags -> ``PatchingConfig`` -> ``run_patching``."""

from __future__ import annotations

import argparse
import sys


from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.cli import add_common_args, check_run_args
from yapo_interp.data import load_cultural, resolve_countries
from yapo_interp.errors import UserError
from yapo_interp.seeding import set_seed
from yapo_interp.patching.analysis import localization_gain
from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION
from yapo_interp.patching.core import SITES
from yapo_interp.patching.stage import PatchingConfig, run_patching



def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.patching``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.patching",
        description="Choose the steering layer by patching localized into non-localized runs "
                    "(paper appendix B).")
    parser.add_argument("--countries", nargs="+", default=["egypt", "morocco"],
                        help="countries to analyse (default: egypt morocco)")
    parser.add_argument("--layers", nargs="+", type=int, default=None,
                        help="layers to patch (default: all)")
    parser.add_argument("--site", choices=sorted(SITES), default="resid_post",
                        help="activation to patch (default: resid_post)")
    parser.add_argument("--pairs", type=int, default=12,
                        help="localized/non-localized pairs per country (default: 12)")
    parser.add_argument("--batch-pairs", type=int, default=4,
                        help="pairs per forward batch (default: 4)")
    parser.add_argument("--score", choices=("mean", "sum"), default="mean",
                        help="option score: mean token log-prob (length-normalised, default) or "
                             "summed log-prob")
    parser.add_argument("--dataset", default=None,
                        help="dataset file or folder (default: the shipped cultural set)")
    parser.add_argument("--no-shared-prompts", dest="share_prompts", action="store_false",
                        help="run every prompt + option row in full at every layer (the plain "
                             "reference computation; same numbers, slower)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="share of questions held out as test (default 0.25); choosing the "
                             "layer is tuning, so only training questions are patched")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the question-level split (default 0, as train/evaluate)")
    add_common_args(parser, out_default="runs/patching")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Patch localized into non-localized runs at every layer, choose the steering layer and write
    the results into ``--out`` (resumable)."""
    args = build_parser().parse_args(argv)
    countries = resolve_countries(args.countries)
    if args.pairs < 1:
        raise UserError("--pairs must be at least 1.")
    if args.batch_pairs < 1:
        raise UserError("--batch-pairs must be at least 1.")
    check_run_args(args, layers=args.layers or (), flag="--layers")  # before the model load
    config = PatchingConfig.from_args(args)
    items = load_cultural(args.dataset, countries=countries)
    set_seed(args.seed)
    print(f"loading {config.model} ...", file=sys.stderr)
    model = models.load_model(config.model, device=args.device)
    result = run_patching(model, items, config, out_dir=args.out)
    effect = result.summary.groupby("layer")["effect"].mean()
    print(f"chosen layer: {result.chosen_layer} "
          f"(localization effect {effect[result.chosen_layer]:+.3f}; rule in chosen_layer.json)")
    if "effect_first" in result.summary:
        first = result.summary.groupby("layer")["effect_first"].mean()
        print(f"first-token readout: effect {first[result.chosen_layer]:+.3f} at layer "
              f"{result.chosen_layer}, largest {first.max():+.3f} at layer {int(first.idxmax())}")
    gain = localization_gain(result.summary)
    if gain <= max(0.01, 2 * float(effect.abs().max())):
        print(f"note: the localized prompt itself moves (p_country - p_western) by only {gain:+.3f} "
              "over the non-localized one, so this model barely uses the country's name here and "
              "the layer choice is weakly determined.")
    for name, path in result.files.items():
        print(f"  {name:14s} {path}")
    return 0
