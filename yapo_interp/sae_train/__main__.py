"""``python -m yapo_interp.sae_train``: the command line of :mod:`yapo_interp.sae_train.cli`."""

from yapo_interp.cli import run_cli
from yapo_interp.sae_train.cli import main

if __name__ == "__main__":
    run_cli(main)
