"""``python -m yapo_interp.patching``."""

from yapo_interp.cli import run_cli
from yapo_interp.patching.cli import main

run_cli(main)
