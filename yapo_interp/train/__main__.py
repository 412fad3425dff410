"""``python -m yapo_interp.train``: the command line of :mod:`yapo_interp.train.cli`."""

from yapo_interp.cli import run_cli
from yapo_interp.train.cli import main

if __name__ == "__main__":
    run_cli(main)
