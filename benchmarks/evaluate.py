"""Seconds per question and peak memory of MCQ option scoring (the log-likelihood evaluation) on
the embedded model: the plain path against the shared-prompt path, on the same questions.

Both score every option of every test question, in both forms, as ``python -m
yapo_interp.evaluate`` does (``evaluate.score_loglik``):

* ``plain`` — ``share_prompts=False``, the path before issue 15: each option is a separate
  prompt + option sequence through every block.
* ``shared`` — the default: each question's prompt runs once into a frozen key/value cache and
  its options run against it.

The two run chunk by chunk in turn (a busy CPU slows both alike), after a warm-up. Every option
log-prob and every prediction is compared. The last line is ``speedup: N.Nx``.

    python benchmarks/evaluate.py [--countries egypt morocco] [--questions 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import PeakMemory  # noqa: E402
from yapo_interp.data import load_cultural  # noqa: E402
from yapo_interp.data.pairs import split_items  # noqa: E402
from yapo_interp.evaluate import score_loglik  # noqa: E402
from yapo_interp.models import load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--countries", nargs="+", default=["egypt", "morocco"])
    parser.add_argument("--questions", type=int, default=12,
                        help="test items scored (both forms each; default 12)")
    parser.add_argument("--batch-size", type=int, default=8, help="as evaluate's default")
    args = parser.parse_args()
    started = time.time()
    model = load_model("embedded")
    _, test = split_items(load_cultural(countries=args.countries))
    items = test[:args.questions]
    print(f"model: {model.cfg.model_name} (embedded, float32, CPU, {torch.get_num_threads()} "
          f"threads); {len(items)} test questions ({', '.join(args.countries)}), both forms, "
          f"{sum(len(item.options) for item in items) * 2} option scorings; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    score_loglik(model, items[:1], progress=False)  # warm-up
    score_loglik(model, items[:1], progress=False, share_prompts=False)
    seconds, peaks = {"plain": 0.0, "shared": 0.0}, {"plain": 0, "shared": 0}
    records = {"plain": [], "shared": []}
    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        for name, share in (("plain", False), ("shared", True)):
            with PeakMemory() as memory:
                tick = time.perf_counter()
                records[name] += score_loglik(model, chunk, batch_size=args.batch_size,
                                              progress=False, share_prompts=share)
                seconds[name] += time.perf_counter() - tick
            peaks[name] = max(peaks[name], memory.peak - memory.start)

    def logprobs(name):
        return torch.tensor([x for r in records[name] for x in json.loads(r["option_logprob_sum"])])

    gap = (logprobs("shared") - logprobs("plain")).abs().max().item()
    same = all(a["prediction"] == b["prediction"]
               for a, b in zip(records["plain"], records["shared"]))
    print(f"\n{'implementation':<15} {'s/question':>10} {'peak MiB added':>14}")
    for name in seconds:
        print(f"{name:<15} {seconds[name] / len(items):>10.2f} {peaks[name] / 2**20:>14.0f}")
    print(f"max |Δ option log-prob| {gap:.1e} (stored to 4 decimals); identical predictions: "
          f"{same} ({len(records['plain'])} question-forms)")
    print(f"(total benchmark time {time.time() - started:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.1f})")
    print(f"speedup: {seconds['plain'] / seconds['shared']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
