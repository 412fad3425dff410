"""``python -m yapo_interp.attribution``: see ``yapo_interp.attribution.cli``."""

from yapo_interp.attribution.cli import main
from yapo_interp.cli import run_cli

run_cli(main)
