"""``python -m yapo_interp.figures``: the command line of :mod:`yapo_interp.figures.cli`."""

from yapo_interp.cli import run_cli
from yapo_interp.figures.cli import main

if __name__ == "__main__":
    run_cli(main)
