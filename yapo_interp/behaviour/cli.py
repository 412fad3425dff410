"""The command line: ``python -m yapo_interp.behaviour`` (see :mod:`yapo_interp.behaviour`).

``main`` parses the flags into a :class:`~yapo_interp.behaviour.stage.BehaviourConfig`, checks
what can be checked before the model load, loads the model and calls
:func:`~yapo_interp.behaviour.stage.run_behaviour`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from yapo_interp import models
from yapo_interp.behaviour.scoring import DEFAULT_MULTIPLIERS, TASKS
from yapo_interp.behaviour.stage import BehaviourConfig, prepare_inputs, run_behaviour
from yapo_interp.cli import add_common_args, check_run_args
from yapo_interp.data.behaviour import TEMPLATES
from yapo_interp.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.behaviour``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.behaviour",
        description="Evaluate steering vectors on a BiPO behaviour set over a multiplier sweep: "
                    "A/B choice, log-odds, judged open-ended answers, and (--cost) the "
                    "cross-entropy / KL cost on neutral text.")
    parser.add_argument("--behaviour", required=True, metavar="NAME|FOLDER",
                        help="a shipped behaviour (power-seeking, wealth-seeking) or a folder "
                             "with train.csv, test.csv, test_infer.csv")
    parser.add_argument("--vectors", nargs="*", default=[],
                        help="steering vectors (PATH, PATH.safetensors) or training run folders")
    parser.add_argument("--multipliers", nargs="+", type=float, default=list(DEFAULT_MULTIPLIERS),
                        help="multipliers λ·d (negative: towards not matching; default: "
                             f"{' '.join(f'{m:g}' for m in DEFAULT_MULTIPLIERS)})")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["ab", "logodds"],
                        help="ab (test_infer.csv), logodds (test.csv), open (test.csv, judged; "
                             "needs --judge) (default: ab logodds)")
    parser.add_argument("--template", choices=TEMPLATES, default="bipo",
                        help="prompt template (default bipo: BiPO's Llama-2 [INST] format)")
    parser.add_argument("--text-score", choices=["mean", "sum"], default="mean",
                        help="A/B on answer texts by mean (per token, default) or summed "
                             "log-probability")
    parser.add_argument("--max-items", type=int, default=None,
                        help="at most N questions per file (quick runs)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse malformed rows instead of skipping and reporting them")
    parser.add_argument("--keep-train-questions", action="store_true",
                        help="also score test questions that appear in train.csv (dropped by "
                             "default: a vector trained on the set has seen them)")
    parser.add_argument("--judge", choices=["none", "local", "openai"], default="none",
                        help="judge of the open-ended answers: local (offline word overlap, "
                             "much weaker) or openai (any OpenAI-compatible endpoint)")
    parser.add_argument("--judge-base-url", default=None)
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--judge-api-key", default=None)
    parser.add_argument("--open-max-new-tokens", type=int, default=64)
    parser.add_argument("--cost", action="store_true",
                        help="also measure the CE increase and KL on neutral multilingual text")
    parser.add_argument("--cost-texts", type=Path, default=None,
                        help="neutral text file (JSONL id/language/text or .txt paragraphs; "
                             "default: the shipped one)")
    parser.add_argument("--cost-max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--sae", default=None, help="SAE for sparse vectors (overrides metadata)")
    parser.add_argument("--sae-id", default=None)
    add_common_args(parser, out_default="runs/behaviour")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 when done."""
    args = build_parser().parse_args(argv)
    check_run_args(args)
    if args.threads < 0:
        raise UserError(f"--threads must be 0 or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = BehaviourConfig.from_args(args)
    inputs = prepare_inputs(config, args.out)
    name = config.model_name
    print(f"loading {name} ...", file=sys.stderr)
    # looked up on the module, so that tests can replace models.load_model
    model = models.load_model(name, device=args.device)
    run_behaviour(model, config, args.out, inputs=inputs)
    return 0
