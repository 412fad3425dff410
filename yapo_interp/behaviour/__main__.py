"""``python -m yapo_interp.behaviour``: the command line of :mod:`yapo_interp.behaviour.cli`."""

from yapo_interp.behaviour.cli import main
from yapo_interp.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
