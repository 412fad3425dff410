"""``python -m yapo_interp.sae_train``: the flags (``build_parser``), the ``SAETrainConfig`` they give
(``config_from_args``) and ``main``, which builds the corpus, loads the embedded model and calls
:func:`~yapo_interp.sae_train.stage.run_sae_training` and
:func:`~yapo_interp.sae_train.stage.run_sae_evaluation`."""

from __future__ import annotations

import argparse
from pathlib import Path

from yapo_interp import models
from yapo_interp.cli import add_common_args, model_name
from yapo_interp.corpus import build_corpus
from yapo_interp.errors import UserError
from yapo_interp.models import SHIPPED_SAE_DIR, check_layer
from yapo_interp.sae_train.config import DEFAULT_WORK, SAETrainConfig
from yapo_interp.sae_train.stage import run_sae_evaluation, run_sae_training
from yapo_interp.seeding import set_seed


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.sae_train``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.sae_train",
        description="Build the multilingual corpus, cache residual activations, train SAELens "
                    "SAEs for the embedded model, ship them, and report their quality.")
    parser.add_argument("--layers", type=int, nargs="+", default=list(SAETrainConfig.layers),
                        help="layers whose blocks.L.hook_resid_post gets an SAE (default 7 9 11)")
    parser.add_argument("--stage", choices=["corpus", "cache", "train", "all"], default="all",
                        help="stop after this stage (default: all, then evaluate)")
    parser.add_argument("--evaluate", action="store_true",
                        help="only evaluate the SAEs in --saes and print the quality figures")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help=f"folder for the corpus, activation caches, checkpoints "
                             f"(default {DEFAULT_WORK})")
    parser.add_argument("--saes", type=Path, default=SHIPPED_SAE_DIR,
                        help="where the shipped SAEs are written / read (default: the package)")
    parser.add_argument("--architecture", choices=["topk", "batchtopk"],
                        default=SAETrainConfig.architecture)
    parser.add_argument("--d-sae", type=int, default=SAETrainConfig.d_sae)
    parser.add_argument("--k", type=int, default=SAETrainConfig.k)
    parser.add_argument("--cache-tokens", type=int, default=SAETrainConfig.cache_tokens,
                        help="corpus tokens whose activations are cached for training")
    parser.add_argument("--training-tokens", type=int, default=SAETrainConfig.training_tokens,
                        help="training tokens per layer (passes over the cache x its size)")
    parser.add_argument("--batch-size", type=int, default=SAETrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=SAETrainConfig.lr)
    add_common_args(parser, out_default="runs/sae_train")
    return parser


def config_from_args(args: argparse.Namespace) -> SAETrainConfig:
    """The ``SAETrainConfig`` of a parsed command line."""
    return SAETrainConfig(
        layers=tuple(sorted(set(args.layers))), architecture=args.architecture,
        d_sae=args.d_sae, k=args.k, cache_tokens=args.cache_tokens,
        training_tokens=args.training_tokens,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
    )


def load_embedded(args: argparse.Namespace, layers: tuple[int, ...]):
    """The embedded model (the only one this command trains SAEs for), checked to have
    ``layers``."""
    name = model_name(args)
    if name != "embedded":
        raise UserError("sae_train trains SAEs for the embedded model only; drop --model or "
                        "use --model embedded.")
    model = models.load_model(name, device=args.device)
    for layer in layers:
        check_layer(model, layer)
    return model


def main(argv: list[str] | None = None) -> int:
    """Run the command: build the corpus, cache, train and ship, evaluate (stopping after
    ``--stage``), or only evaluate (``--evaluate``); 0 when done."""
    args = build_parser().parse_args(argv)
    set_seed(args.seed)
    config = config_from_args(args)
    work: Path = args.work
    if not args.evaluate:
        build_corpus(config.corpus, work)
        if args.stage == "corpus":
            return 0
    model = load_embedded(args, config.layers)
    if not args.evaluate:
        run_sae_training(model, config, work=work, saes=args.saes, stage=args.stage)
        if args.stage != "all":
            return 0
    run_sae_evaluation(model, config, work=work, saes=args.saes, out=args.out)
    return 0
