"""``python -m yapo_interp.evaluate``: the command line of :mod:`yapo_interp.evaluate.cli`."""

from yapo_interp.cli import run_cli
from yapo_interp.evaluate.cli import main

if __name__ == "__main__":
    run_cli(main)
