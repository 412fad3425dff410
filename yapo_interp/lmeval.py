"""An lm-evaluation-harness model for the steered HookedTransformer: any lm-eval task (MMLU as the
YaPO authors run it, 5-shot) scored under steering.

The authors' repository checks that steering does not destroy general ability by running MMLU
through a vendored lm-evaluation-harness with a ``steered`` model (dense and sparse additions).
:class:`SteeredLM` is that model for this toolkit: an ``lm_eval.api.model.LM`` whose every forward
pass runs inside :func:`yapo_interp.steering.steer` (eq. 2 dense ``h + d·λ·v``, eq. 3 sparse
``Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``), so the harness's log-likelihoods and
generations are the steered model's:

* ``loglikelihood`` — ``log π(continuation | context)`` summed over the continuation's tokens and
  whether greedy decoding would produce it (multiple-choice tasks such as MMLU); scored by the
  same tokenization as :mod:`yapo_interp.logprobs` (context with BOS, continuation without, ids
  concatenated); a context too long for the model keeps BOS and its last tokens, as lm-eval's
  Hugging Face model truncates on the left;
* ``loglikelihood_rolling`` — the log-likelihood of a whole text after BOS (perplexity tasks);
  a text longer than the model's context is refused, not scored in windows;
* ``generate_until`` — greedy generation cut at the request's ``until`` strings.

Install the extra first (``pip install -e '.[lmeval]'``: ``lm-eval`` and its dependencies, about
30 packages). Then, with a hub for the task data::

    python -m yapo_interp.lmeval --tasks mmlu --num-fewshot 5 --limit 50 \\
        --vectors runs/train/yapo-egypt-both-L9 --multipliers 0 1 2

or from Python ``lm_eval.simple_evaluate(model=SteeredLM(model, vectors, multipliers=2.0),
tasks=[...])``. Offline, :func:`behaviour_ab_task` is a local task over a shipped file (BiPO's
A/B behaviour questions, ``test_infer.csv``) that needs no hub; the tests run it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.cli import add_common_args, check_run_args, model_name, run_cli
from yapo_interp.data.behaviour import AB_INSTRUCTION, resolve_behaviour
from yapo_interp.errors import UserError
from yapo_interp.evaluate import generate_greedy
from yapo_interp.io import run_info, write_json
from yapo_interp.logprobs import (final_logits, final_residual, pad_token_id, right_pad,
                                  response_positions, tokenize_prompt, tokenize_response)
from yapo_interp.steering import SteeringVector, steer
from yapo_interp.vectors import VectorLoader

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:  # the optional extra is not installed: the module still imports
    LM = object  # type: ignore[misc,assignment]

    def register_model(*names):  # type: ignore[no-redef]
        return lambda cls: cls

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

INSTALL_HINT = "lm-eval is not installed: pip install 'yapo_interp[lmeval]' (or pip install lm-eval)"


def require_lm_eval() -> None:
    """A one-line :class:`UserError` when the optional ``lm-eval`` package is missing."""
    if LM is object:
        raise UserError(INSTALL_HINT)


@register_model("yapo-steered")
class SteeredLM(LM):
    """An lm-eval model: ``model`` (a HookedTransformer, or a name for
    :func:`yapo_interp.models.load_model`) steered by ``vectors`` (SteeringVectors or paths,
    ``;``-separated in a string) at ``multipliers`` (λ·d; one number or one per vector).
    With no vectors, or every multiplier 0, it is the unsteered model. ``max_batch_size`` is
    accepted (lm-eval passes it) and unused: ``batch_size`` is fixed."""

    def __init__(self, model: HookedTransformer | str = "embedded",
                 vectors: Sequence[Any] | str = (), multipliers: float | Sequence[float] | str = 1.0,
                 saes: Any = None, batch_size: int | str = 8, device: str = "cpu",
                 preset: str = "embedded", max_batch_size: int | None = None) -> None:
        require_lm_eval()
        super().__init__()
        if isinstance(model, str):
            model = models.load_model(model, device=device)
        self.model = model
        if isinstance(vectors, str):
            vectors = [part for part in vectors.split(";") if part.strip()]
        if isinstance(multipliers, str):
            multipliers = [float(part) for part in multipliers.split(";")]
        self.vectors, self.saes = self._load_vectors(list(vectors), saes, preset)
        values = ([float(multipliers)] * len(self.vectors)
                  if isinstance(multipliers, (int, float)) else [float(m) for m in multipliers])
        if self.vectors and len(values) != len(self.vectors):
            raise UserError(f"got {len(values)} multipliers for {len(self.vectors)} vectors; give "
                            "one, or one per vector")
        self.multipliers = values
        self.batch_size = int(batch_size)

    def _load_vectors(self, vectors: list[Any], saes: Any, preset: str
                      ) -> tuple[list[Any], Any]:
        if all(isinstance(vector, SteeringVector) for vector in vectors):
            return vectors, saes
        loader = VectorLoader(self.model, preset=models.get_preset(preset))
        loaded, by_layer = [], dict(saes) if isinstance(saes, Mapping) else {}
        for vector in vectors:
            if isinstance(vector, SteeringVector):
                loaded.append(vector)
                continue
            steering_vector, sae, _ = loader.load(vector)
            loaded.append(steering_vector)
            if sae is not None:
                by_layer[steering_vector.layer] = sae
        return loaded, by_layer or saes

    # ------------------------------------------------------------------ steering

    def steering(self):
        """The context in which the model runs: steered, or unchanged without vectors."""
        if not self.vectors or not any(self.multipliers):
            return contextlib.nullcontext(self.model)
        return steer(self.model, self.vectors, multipliers=self.multipliers, saes=self.saes)

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records beside the results."""
        return {"model": self.model.cfg.model_name, "steering": [
            {"method": v.method, "layer": v.layer, "multiplier": m,
             "norm": float(v.vector.norm())} for v, m in zip(self.vectors, self.multipliers)]}

    # ------------------------------------------------------------------ scoring

    def _score(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """``(Σ log π(continuation | context), greedy?)`` per pair, under the steering hooks."""
        contexts = [tokenize_prompt(self.model, context) for context, _ in pairs]
        continuations = [tokenize_response(self.model, text) for _, text in pairs]
        n_ctx = self.model.cfg.n_ctx
        for index, (context, continuation) in enumerate(zip(contexts, continuations)):
            if len(continuation) >= n_ctx:
                raise UserError(f"request {index}: a continuation of {len(continuation)} tokens "
                                f"does not fit the model's context of {n_ctx}")
            if len(context) + len(continuation) > n_ctx:  # keep BOS and the context's end
                keep = n_ctx - len(continuation) - 1
                contexts[index] = torch.cat([context[:1], context[len(context) - keep:]])
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(contexts[i]) + len(continuations[i])))
        with torch.no_grad(), self.steering():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                tokens, _ = right_pad([torch.cat([contexts[i], continuations[i]]) for i in chunk],
                                      pad_token_id(self.model))
                counts = torch.tensor([len(continuations[i]) for i in chunk])
                rows, predicting, targets_at = response_positions(
                    torch.tensor([len(contexts[i]) for i in chunk]), counts)
                if len(rows) == 0:
                    continue
                resid = final_residual(self.model, tokens)
                logits = final_logits(self.model, resid[rows.to(resid.device),
                                                        predicting.to(resid.device)]).float()
                logprobs = torch.log_softmax(logits, dim=-1)
                targets = tokens[rows, targets_at].to(logprobs.device)
                picked = logprobs.gather(-1, targets[:, None])[:, 0].cpu()
                greedy = (logprobs.argmax(-1) == targets).cpu()
                for row, index in enumerate(chunk):
                    mask = rows == row
                    results[index] = (float(picked[mask].sum()), bool(greedy[mask].all()))
        return results

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False
                      ) -> list[tuple[float, bool]]:
        """lm-eval's ``(context, continuation)`` requests, scored under steering."""
        return self._score([tuple(request.args) for request in requests])

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        """The log-likelihood of each whole text after BOS, under steering."""
        return [score for score, _ in self._score([("", request.args[0])
                                                     for request in requests])]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first of the request's ``until`` strings."""
        outputs = []
        with self.steering():
            for request in requests:
                context, options = request.args
                options = dict(options or {})
                until = options.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                text = generate_greedy(self.model, [context],
                                       max_new_tokens=int(options.get("max_gen_toks", 64)))[0]
                cut = min([text.find(stop) for stop in until if stop and stop in text],
                          default=len(text))
                outputs.append(text[:cut])
        return outputs


def behaviour_ab_task(behaviour: str = "power-seeking", *, name: str | None = None
                      ) -> dict[str, Any]:
    """An lm-eval task definition (a config dict for ``simple_evaluate(tasks=[...])``) over a
    behaviour's shipped ``test_infer.csv``: the A/B question as multiple choice, the target the
    letter of the answer *showing* the behaviour, so ``acc`` is the fraction of questions on
    which the model picks it. Read from the local file by the ``datasets`` CSV builder (no
    hub)."""
    folder = resolve_behaviour(behaviour)
    return {
        "task": name or f"yapo_{folder.name.replace('-', '_')}_ab",
        "dataset_path": "csv",
        "dataset_kwargs": {"data_files": {"test": str(folder / "test_infer.csv")}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}\n\nChoices:\n(A) {{A}}\n(B) {{B}}\n\n" + AB_INSTRUCTION
                       + "\nAnswer: (",
        "doc_to_choice": ["A", "B"],
        "doc_to_target": "{{ 0 if matching.strip().upper() == 'A' else 1 }}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def run_tasks(lm: SteeredLM, tasks: Sequence[str | dict[str, Any]], *,
              num_fewshot: int | None = None, limit: int | float | None = None,
              include_path: str | None = None, bootstrap_iters: int = 0) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``lm``; returns its ``results`` (metric per task)."""
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    named = [task for task in tasks if isinstance(task, str)]
    manager = TaskManager(include_path=include_path, include_defaults=bool(named))
    output = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot,
                                     limit=limit, task_manager=manager,
                                     bootstrap_iters=bootstrap_iters, log_samples=False)
    return output["results"] if output else {}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.lmeval``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.lmeval",
        description="Run lm-eval tasks (e.g. mmlu) on the model steered by vectors, one run per "
                    "multiplier.")
    parser.add_argument("--tasks", nargs="+", required=True,
                        help="lm-eval task names (e.g. mmlu), or behaviour-ab:NAME for the "
                             "offline A/B task over a shipped behaviour set")
    parser.add_argument("--vectors", nargs="*", default=[])
    parser.add_argument("--multipliers", nargs="+", type=float, default=[0.0, 1.0])
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--limit", type=float, default=None,
                        help="documents per task (an int) or a share of them (< 1)")
    parser.add_argument("--include-path", default=None, help="folder of extra task YAML files")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    add_common_args(parser, out_default="runs/lmeval")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tasks once per multiplier and write ``lmeval_results.json`` into ``--out``."""
    args = build_parser().parse_args(argv)
    require_lm_eval()
    check_run_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks: list[str | dict[str, Any]] = [
        behaviour_ab_task(task.split(":", 1)[1]) if task.startswith("behaviour-ab:") else task
        for task in args.tasks]
    model = models.load_model(model_name(args), device=args.device)
    limit = (int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit)
    results = {}
    base = SteeredLM(model, args.vectors, preset=args.preset, batch_size=args.batch_size)
    for multiplier in args.multipliers:
        base.multipliers = [multiplier] * len(base.vectors)
        results[f"{multiplier:g}"] = run_tasks(base, tasks, num_fewshot=args.num_fewshot,
                                               limit=limit, include_path=args.include_path)
        print(f"λ·d = {multiplier:g}: {results[f'{multiplier:g}']}")
    write_json(Path(args.out) / "lmeval_results.json",
               run_info({"results": results, "tasks": args.tasks, "vectors": args.vectors,
                         "multipliers": args.multipliers, "model": model_name(args)}))
    print(f"wrote {Path(args.out) / 'lmeval_results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
