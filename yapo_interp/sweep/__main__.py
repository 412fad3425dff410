"""``python -m yapo_interp.sweep``: the command line of :mod:`yapo_interp.sweep.cli`.

Ray pickles the functions and classes of an importable module by reference, so the trial task
and the model setup (:mod:`yapo_interp.sweep.trial`, :mod:`yapo_interp.sweep.model_setup`) reach
a worker as references and a worker keeps its loaded model between trials (those of
``__main__`` would travel by value, each task with a fresh, empty model cache).
"""

from yapo_interp.cli import run_cli
from yapo_interp.sweep.cli import main

if __name__ == "__main__":
    run_cli(main)
