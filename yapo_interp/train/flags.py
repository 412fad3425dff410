"""The flags of ``python -m yapo_interp.train`` (``build_parser``) and the ``TrainConfig`` they
give with a preset (``config_from_args``). The fast-path flags are made from the fields of
``objective.FastPath`` (``--no-FLAG`` each, ``--plain`` for all): a new shortcut needs no new
flag here."""

from __future__ import annotations

import argparse
from pathlib import Path

from yapo_interp.cli import add_common_args
from yapo_interp.data import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, REJECTED, SETTINGS
from yapo_interp.models import Preset
from yapo_interp.objective import FastPath
from yapo_interp.steering import METHODS
from yapo_interp.train.config import FAST_PATH_FLAGS, TrainConfig, training_config

DEFAULT_OUT = Path("runs/train/METHOD-COUNTRY-SETTING-LLAYER")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.train`` (``TrainRunConfig.from_args`` reads them)."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.train",
        description="Train a steering vector: YaPO (sparse, eq. 4), BiPO (dense, eq. 1), or the "
                    "CAA / SAS mean-difference baselines.",
    )
    parser.add_argument("--method", choices=METHODS, required=True)
    data = parser.add_argument_group("data")
    data.add_argument("--country", help="country of the cultural dataset, e.g. egypt")
    data.add_argument("--setting", choices=SETTINGS,
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
    for name in FAST_PATH_FLAGS:
        training.add_argument(f"--no-{name.replace('_', '-')}", action="store_true",
                              help="turn off this one speed-up (see objective.py)")
    add_common_args(parser, out_default=str(DEFAULT_OUT))
    return parser


def fast_path_from_args(args: argparse.Namespace) -> FastPath:
    """Every shortcut on but those turned off (``--no-FLAG``; all by ``--plain``)."""
    return FastPath(**{name: not (args.plain or getattr(args, f"no_{name}"))
                       for name in FAST_PATH_FLAGS})


def config_from_args(args: argparse.Namespace, preset: Preset) -> TrainConfig:
    """The ``TrainConfig`` of a command line, the preset filling what the user left out."""
    return training_config(
        preset, method=args.method, layer=args.layer, lr=args.lr,
        max_grad_norm=args.max_grad_norm, gradient_accumulation=args.gradient_accumulation,
        beta=args.beta, batch_size=args.batch_size, epochs=args.epochs,
        warmup_steps=args.warmup_steps,
        warmup_ratio=None if args.warmup_ratio >= 1 else args.warmup_ratio,
        weight_decay=args.weight_decay, seed=args.seed, eval_every=args.eval_every,
        l1=args.l1, max_features=args.max_features, fast_path=fast_path_from_args(args))
