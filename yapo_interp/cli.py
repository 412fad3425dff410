"""Flags shared by every command (``--preset``, ``--model``, ``--layer``, ``--device``, ``--seed``,
``--out``) and the code that turns them into a loaded model and SAE."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from yapo_interp.models import PRESETS, ModelLoadError, Preset, get_preset


def add_common_args(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    group = parser.add_argument_group("model and run")
    group.add_argument("--preset", default="embedded", choices=sorted(PRESETS),
                       help="model + layer + SAE bundle (default: embedded, runs offline)")
    group.add_argument("--model", default=None,
                       help="override the preset's model: 'embedded', a TransformerLens name, "
                            "or a local Hugging Face folder")
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--out", type=Path, default=Path(out_default),
                       help=f"output folder (default: {out_default})")


def model_name(args: argparse.Namespace) -> str:
    return args.model or get_preset(args.preset).model


def preset_from_args(args: argparse.Namespace) -> Preset:
    return get_preset(args.preset)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command's ``main``; user errors print one clear line (no traceback) and exit 2."""
    from yapo_interp.errors import UserError

    try:
        sys.exit(main(argv))
    except (UserError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved and the run can be resumed", file=sys.stderr)
        sys.exit(130)
