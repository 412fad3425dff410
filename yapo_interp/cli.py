"""Flags shared by every command (``--preset``, ``--model``, ``--layer``, ``--device``, ``--seed``,
``--out``) and the code that turns them into a loaded model and SAE."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from yapo_interp.errors import ModelLoadError, UserError
from yapo_interp.models import (EMBEDDED, EMBEDDED_TL_NAME, PRESETS, Preset, get_preset,
                                shipped_sae_layers)
from yapo_interp.seeding import set_seed  # re-exported: commands import it from here too


def add_common_args(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    """Add the flags every command shares (``--preset``, ``--model``, ``--device``, ``--seed``,
    ``--out`` with default ``out_default``) to ``parser``, as one group."""
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
    """The model a command runs on: ``--model`` if given, else its preset's."""
    return getattr(args, "model", None) or get_preset(args.preset).model


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The :class:`~yapo_interp.models.Preset` named by ``--preset``."""
    return get_preset(args.preset)


# --------------------------------------------------------------------------------------------
# Checks that run before any model is loaded: what can be known without the weights
# --------------------------------------------------------------------------------------------


def check_device(device: str, flag: str = "--device") -> str:
    """``device`` if torch can use it on this machine, else a one-line ``UserError`` (checked
    before the model load, which would otherwise fail after it with a torch ``AssertionError``)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {device!r} is not a torch device; use cpu, cuda, cuda:1 or "
                        "mps.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UserError(f"{flag} {device}: CUDA is not available on this machine ({why}); "
                            f"use {flag} cpu.")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"{flag} {device}: this machine has {count} CUDA device(s), "
                            f"cuda:0..cuda:{count - 1}; pick one of them.")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{flag} {device}: Apple MPS is not available on this machine; use "
                            f"{flag} cpu.")
    elif parsed.type != "cpu":
        backend = getattr(torch, parsed.type, None)
        available = getattr(backend, "is_available", None)
        if available is not None and not available():
            raise UserError(f"{flag} {device}: {parsed.type} is not available on this machine; "
                            f"use {flag} cpu.")
    return device


def check_writable(folder: str | Path, flag: str = "--out") -> Path:
    """Raise a one-line ``UserError`` unless files can be written in ``folder`` (which need not
    exist yet: its nearest existing parent must be a folder this user can write in). A temporary
    file is created and removed to find out; nothing else is written."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.is_dir():
        if existing.exists() or existing.is_symlink():
            raise UserError(f"{flag} {folder}: {existing} is a file, not a folder; choose another "
                            f"{flag}.")
        if existing.parent == existing:
            break
        existing = existing.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=".yapo-write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write in {existing} "
                        f"({error.strerror or error}); choose a folder you can write to with "
                        f"{flag}.") from None
    return folder


def known_n_layers(name: str) -> int | None:
    """The number of layers of model ``name`` read from its configuration alone (no weights):
    the embedded model's and TransformerLens's built-in configurations, or a local folder's
    ``config.json``. ``None`` when it cannot be known without loading (the load checks then)."""
    path = Path(name).expanduser()
    if name != EMBEDDED and path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        config = config.get("text_config", config) if isinstance(config, dict) else {}
        for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
            if isinstance(config.get(key), int):
                return config[key]
        return None
    try:
        from transformer_lens.loading_from_pretrained import convert_hf_model_config

        config = convert_hf_model_config(EMBEDDED_TL_NAME if name == EMBEDDED else name)
        return int(config["n_layers"])
    except Exception:  # unknown name, offline hub, ...: the model load reports it
        return None


def check_layers(name: str, layers: Sequence[int], flag: str = "--layer") -> None:
    """Raise a one-line ``UserError`` for a negative, repeated or out-of-range layer of model
    ``name``, from its configuration (see ``known_n_layers``), before the model is loaded."""
    layers = list(layers)
    negative = [layer for layer in layers if layer < 0]
    if negative:
        raise UserError(f"{flag} {negative[0]}: layers are numbered from 0.")
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise UserError(f"{flag} lists layer {', '.join(map(str, repeated))} more than once; "
                        "give each layer once.")
    if not layers:
        return
    n_layers = known_n_layers(name)
    if n_layers is not None:
        outside = [layer for layer in layers if layer >= n_layers]
        if outside:
            raise UserError(f"{flag} {outside[0]} is out of range for {name}, which has layers "
                            f"0..{n_layers - 1}; choose one of them.")


def check_sae_available(release: str | None, layer: int, flag: str = "--layer") -> None:
    """For the embedded SAEs (shipped with the package), a one-line ``UserError`` when none is
    shipped for ``layer``; other releases are checked when they are loaded."""
    if release == EMBEDDED and layer not in shipped_sae_layers():
        shipped = shipped_sae_layers()
        raise UserError(f"{flag} {layer}: no SAE is shipped for layer {layer} of the embedded "
                        f"model (shipped: {', '.join(map(str, shipped)) or 'none'}); choose one "
                        "of those layers, or give --sae with an SAE for this layer.")


def check_run_args(args: argparse.Namespace, *, layers: Sequence[int] = (),
                   flag: str = "--layer") -> None:
    """The checks every command makes before loading a model: ``--device`` usable here,
    ``--out`` writable, ``layers`` (from ``flag``) in the model's range. Each failure is a
    one-line ``UserError`` naming the flag and the fix, within seconds instead of after the
    model load."""
    check_device(args.device)
    check_writable(args.out)
    check_layers(model_name(args), layers, flag=flag)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command's ``main``; user errors print one clear line (no traceback) and exit 2."""
    try:
        sys.exit(main(argv))
    except (UserError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved and the run can be resumed", file=sys.stderr)
        sys.exit(130)
