"""``python -m yapo_interp.attribution``: the flags (``build_parser``) and ``main``, which turns
them into an ``AttributionRunConfig``, loads the vectors, prompts and model, and calls
``run_attribution``."""

from __future__ import annotations

import argparse
from pathlib import Path

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.attribution.config import (ATTRIBUTIONS, DEFAULT_METHOD, ENCODE_METHODS,
                                            AttributionConfig, AttributionRunConfig)
from yapo_interp.attribution.inputs import load_inputs
from yapo_interp.attribution.stage import run_attribution
from yapo_interp.cli import add_common_args, check_run_args
from yapo_interp.seeding import set_seed


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``AttributionRunConfig.from_args`` reads them)."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.attribution",
        description="Encode a dense BiPO vector into SAE features and compare it with a YaPO "
                    "vector: top features, overlap, logit lens, top-activating prompts.",
    )
    parser.add_argument("--bipo", required=True, type=Path,
                        help="dense vector (bipo or caa): PATH of PATH.safetensors + PATH.json")
    parser.add_argument("--yapo", required=True, type=Path,
                        help="sparse vector (yapo or sas): PATH of PATH.safetensors + PATH.json")
    parser.add_argument("--attribution", default="effect", choices=ATTRIBUTIONS,
                        help="'effect' (default): each vector's change of the SAE code of the "
                             "prompts' activations, per direction; 'static': BiPO encoded by "
                             "--method against YaPO's v")
    parser.add_argument("--strength", type=float, default=AttributionConfig.strength,
                        help="λ of eq. 2 / 3 for the effect attribution (default: 1)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=ENCODE_METHODS,
                        help="static attribution: how the BiPO vector becomes an SAE code "
                             f"(default: {DEFAULT_METHOD})")
    parser.add_argument("--k", type=int, default=AttributionConfig.k,
                        help="features listed per vector (default: 20)")
    parser.add_argument("--prompts-from", default="cultural",
                        help="prompts for top-activating examples: 'cultural' (shipped set), a "
                             "file (.txt one a line, .jsonl/.csv with a prompt column), or 'none'")
    parser.add_argument("--max-prompts", type=int, default=AttributionConfig.max_prompts,
                        help="at most this many prompts, evenly spaced (default: 400; 0 = all)")
    parser.add_argument("--examples", type=int, default=AttributionConfig.n_examples,
                        help="top-activating examples per feature (default: 5)")
    parser.add_argument("--max-features", type=int, default=None,
                        help="stop the (signed_)nnls fit after this many features (default: fit "
                             "until no feature lowers the error)")
    parser.add_argument("--batch-size", type=int, default=AttributionConfig.batch_size)
    parser.add_argument("--no-feature-pages", action="store_true",
                        help="skip the offline HTML page per listed feature (features/)")
    parser.add_argument("--no-images", action="store_true",
                        help="write HTML figures only (no PNG, which needs kaleido + Chrome)")
    add_common_args(parser, out_default="runs/attribution")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``); 0 when the folder is written."""
    args = build_parser().parse_args(argv)
    config = AttributionRunConfig.from_args(args)
    set_seed(config.seed)
    inputs = load_inputs(config)
    check_run_args(args, layers=[inputs.layer], flag="the vectors' layer")  # before the model load
    model = models.load_model(config.model_name, device=config.device)
    run_attribution(model, config, args.out, inputs=inputs)
    return 0
