"""Wall-clock time of one sweep (``yapo_interp.sweep``) with 1 and with 2 Ray workers.

The same grid runs twice, each time into a fresh folder (so no trial is skipped) on a fresh
local Ray instance with ``--workers`` CPUs; each worker loads the model once and then runs trials
one after another, torch with one thread per trial. Printed side by side: workers, trials, wall
seconds, seconds per trial; the last line is ``ratio: N.Nx`` (1-worker time over 2-worker time;
2.0x would be perfect scaling — model loads, Ray start-up and a shared, busy CPU take from it).

    python benchmarks/sweep.py                        # embedded model: 3 methods x 2 seeds, quick
    python benchmarks/sweep.py --model-factory yapo_interp.testing:tiny_sweep_setup \\
        --country usa --data tiny_english.jsonl        # smoke test on the tiny model

(``tiny_english.jsonl``: short questions the tiny model's 256-character context fits, e.g.
``write_items(Path("tiny_english.jsonl"), tiny_items())`` from ``tests/test_sweep.py``.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yapo_interp.sweep import ModelSetup, SweepGrid, run_sweep  # noqa: E402


def time_sweep(grid: SweepGrid, setup: ModelSetup, workers: int) -> tuple[float, int]:
    """Seconds of ``run_sweep`` on a fresh local Ray instance with ``workers`` CPUs, and the
    number of trials that finished."""
    with tempfile.TemporaryDirectory(prefix=f"sweep-bench-{workers}-") as folder:
        started = time.perf_counter()
        result = run_sweep(grid, Path(folder), setup=setup, workers=workers, progress=False,
                           min_seeds=1)
        seconds = time.perf_counter() - started
    if result.failed:
        raise SystemExit(f"{len(result.failed)} trial(s) failed: {result.failed[0]['error']}")
    return seconds, result.ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["bipo", "yapo", "sae-dense"])
    parser.add_argument("--country", default="egypt")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=16)
    parser.add_argument("--max-eval-items", type=int, default=4)
    parser.add_argument("--data", default=None, help="cultural data (default: shipped)")
    parser.add_argument("--model-factory", default=None,
                        help="MODULE:FUNCTION instead of the embedded model (smoke tests)")
    args = parser.parse_args()
    grid = SweepGrid(methods=tuple(args.methods), countries=(args.country,),
                     settings=("localized",), lrs=(args.lr,), seeds=tuple(args.seeds),
                     shared=dict(epochs=args.epochs, max_pairs=args.max_pairs,
                                 max_eval_items=args.max_eval_items, data=args.data,
                                 rejected="western"), baseline=False)
    setup = ModelSetup(factory=args.model_factory)
    print(f"{len(grid.trials())} trials: {', '.join(args.methods)} x seeds {args.seeds}, "
          f"{args.epochs} epochs, <= {args.max_pairs} pairs, {args.max_eval_items} items/split")
    timings = {workers: time_sweep(grid, setup, workers) for workers in (1, 2)}
    print(f"{'workers':>8} {'trials':>7} {'wall s':>9} {'s/trial':>9}")
    for workers, (seconds, trials) in timings.items():
        print(f"{workers:>8} {trials:>7} {seconds:>9.1f} {seconds / max(trials, 1):>9.1f}")
    print(f"ratio: {timings[1][0] / timings[2][0]:.2f}x")


if __name__ == "__main__":
    main()
