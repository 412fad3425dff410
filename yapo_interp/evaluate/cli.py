"""The command line: ``python -m yapo_interp.evaluate`` (see :mod:`yapo_interp.evaluate`).

``main`` parses the flags into an :class:`~yapo_interp.evaluate.stage.EvaluateConfig`, checks
what can be checked before the model load, loads the model and calls
:func:`~yapo_interp.evaluate.stage.run_evaluate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from yapo_interp import models
from yapo_interp.cli import add_common_args, check_run_args
from yapo_interp.data import DEFAULT_OPTION_SEED, DEFAULT_TEST_FRACTION, SETTINGS
from yapo_interp.errors import UserError
from yapo_interp.evaluate.conditions import LOGLIK_SCORES, MODES
from yapo_interp.evaluate.stage import EvaluateConfig, prepare_inputs, run_evaluate
from yapo_interp.seeding import set_seed


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.evaluate",
        description="Evaluate the baseline and steering vectors on the cultural benchmark: MCQ "
                    "accuracy, open-ended judge scores, RCA and PNLG, paper-style tables "
                    "(section 4 of the paper).")
    parser.add_argument("--country", "--countries", dest="countries", nargs="+", required=True,
                        help="countries to evaluate (e.g. egypt morocco)")
    parser.add_argument("--vectors", nargs="*", default=[],
                        help="steering vectors (PATH, PATH.safetensors) or training run folders")
    parser.add_argument("--multipliers", nargs="+", type=float, default=[1.0],
                        help="steering multipliers λ to evaluate each vector at (default: 1.0)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unsteered model")
    parser.add_argument("--stability", nargs="*", default=[], metavar="RUN",
                        help="training runs whose every epoch checkpoint (RUN/vectors/epoch_XX) "
                             "is evaluated on the MCQ (figure 5)")
    parser.add_argument("--split", choices=["test", "all"], default="test",
                        help="evaluate on the test split (default) or all items")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="test share of questions, as in training (default: "
                             f"{DEFAULT_TEST_FRACTION})")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the train/test split, as in training (default: 0)")
    parser.add_argument("--dataset", default=None,
                        help="dataset file or folder (default: the shipped cultural set)")
    parser.add_argument("--max-items", type=int, default=None,
                        help="at most N items (questions) per country, for quick runs")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="settings to report (default: localized nonlocalized both)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="MCQ scoring: option log-likelihood (base models) or generated "
                             "\\boxed{k} (instruction models) (default: the preset's; embedded: "
                             "loglik, paper: boxed)")
    parser.add_argument("--score", choices=LOGLIK_SCORES, default="mean",
                        help="loglik: rank options by mean (length-normalised, default) or sum")
    parser.add_argument("--style", choices=["auto", "completion", "chat"], default="auto",
                        help="prompt style (default auto: chat when the tokenizer has a chat "
                             "template and --mode boxed, else completion)")
    parser.add_argument("--shuffle-options", type=int, default=DEFAULT_OPTION_SEED,
                        metavar="SEED",
                        help="boxed: seed of the per-question option order (default "
                             f"{DEFAULT_OPTION_SEED}, the order training's MCQ prompts use)")
    parser.add_argument("--no-shuffle-options", action="store_true",
                        help="boxed: show the options in the dataset's order (each country's "
                             "option then always sits at the same number)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--boxed-max-new-tokens", type=int, default=48)
    parser.add_argument("--open-max-new-tokens", type=int, default=96)
    parser.add_argument("--judge", choices=["none", "local", "openai"], default="none",
                        help="open-ended generation judged by: none (skip the open-ended task), "
                             "local (offline heuristic rubric, weaker), openai (any "
                             "OpenAI-compatible endpoint)")
    parser.add_argument("--judge-base-url", default=None,
                        help="judge API root, e.g. https://api.openai.com/v1 "
                             "(env YAPO_JUDGE_BASE_URL)")
    parser.add_argument("--judge-model", default=None, help="judge model (env YAPO_JUDGE_MODEL)")
    parser.add_argument("--judge-api-key", default=None, help="judge key (env YAPO_JUDGE_API_KEY)")
    parser.add_argument("--judge-cache", type=Path, default=None,
                        help="JSONL cache of judge verdicts (default: OUT/judge_cache.jsonl)")
    parser.add_argument("--judge-timeout", type=float, default=60.0,
                        help="seconds one try of a judge request may wait (default: 60)")
    parser.add_argument("--judge-retries", type=int, default=3)
    parser.add_argument("--judge-deadline", type=float, default=120.0,
                        help="seconds one judge request may take in all, tries and waits "
                             "included (default: 120)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's choice), as in train")
    parser.add_argument("--alpha", type=float, default=1.0, help="α of PNLG (eq. 5, default 1)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for confidence intervals (default: 1000)")
    parser.add_argument("--sae", default=None,
                        help="SAE for sparse vectors (folder or SAELens release), overriding the "
                             "one named in the vectors' metadata")
    parser.add_argument("--sae-id", default=None, help="SAE id within --sae's release")
    add_common_args(parser, out_default="runs/evaluate")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 when done, 3 when the judge left open-ended responses unscored (the
    results are written all the same)."""
    args = build_parser().parse_args(argv)
    config = EvaluateConfig.from_args(args)
    check_run_args(args)  # device, --out writable: before the evaluation, not after it
    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = prepare_inputs(config, args.out)
    set_seed(args.seed)
    name = config.model_name
    print(f"loading {name} ...", file=sys.stderr)
    # looked up on the module, so that tests can replace models.load_model
    model = models.load_model(name, device=args.device)
    result = run_evaluate(model, config, args.out, inputs=inputs)
    if result.unscored:
        print(f"error: {result.unscored}", file=sys.stderr)
        return 3
    return 0
