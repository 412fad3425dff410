"""The command line: ``python -m yapo_interp.figures RUN_DIR`` (see :mod:`yapo_interp.figures`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from yapo_interp.figures.regenerate import regenerate


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.figures``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.figures",
        description="Regenerate every figure of a run from its saved results.")
    parser.add_argument("run_dir", type=Path, help="output folder of a run or study")
    parser.add_argument("--out", type=Path, default=Path("figures"),
                        help="where to write the figures (default: figures/)")
    parser.add_argument("--formats", nargs="*", default=["png"], choices=["png", "svg", "pdf"],
                        help="image formats besides HTML, when kaleido is installed (default: png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Regenerate the figures of the run named in ``argv`` and list the files written."""
    args = build_parser().parse_args(argv)
    written = regenerate(args.run_dir, args.out, tuple(args.formats))
    html = [path for path in written if path.suffix == ".html"]
    print(f"wrote {len(html)} figures ({len(written)} files) to {args.out}")
    for path in written:
        print(f"  {path}")
    return 0

