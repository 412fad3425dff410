"""The behaviour evaluation as one call: :func:`run_behaviour` takes a complete, frozen
:class:`BehaviourConfig` (the behaviour set, vectors, multipliers, tasks, judge, cost) and writes
the results of ``python -m yapo_interp.behaviour`` into ``out``; the command line is
``BehaviourConfig.from_args`` and this call. A notebook does the same without an argv::

    config = BehaviourConfig(behaviour="power-seeking", vectors=("runs/train/bipo-power",))
    result = run_behaviour(model, config, "runs/behaviour")

Before any model is loaded, :func:`prepare_inputs` reads and checks what can be known without it
(the behaviour's files, the judge, the neutral texts, the vector files), so that a wrong flag
fails in seconds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from yapo_interp.behaviour.judge import make_behaviour_judge
from yapo_interp.behaviour.scoring import (DEFAULT_MULTIPLIERS, METRICS, TASKS,
                                           BehaviourEvalConfig)
from yapo_interp.behaviour.sweep import (evaluate_behaviour, summarize_cost, summarize_sweep,
                                         sweep_conditions)
from yapo_interp.cost import NeutralText, load_neutral_texts, steering_cost
from yapo_interp.data.behaviour import ABItem, BehaviourSet, BehaviourPair, load_behaviour
from yapo_interp.errors import UserError
from yapo_interp.figures import behaviour_sweep_figure, effect_cost_figure
from yapo_interp.io import run_info, write_json, write_table, write_text
from yapo_interp.judge import Judge
from yapo_interp.models import get_preset
from yapo_interp.steering import SteeringVector
from yapo_interp.style import save_figure
from yapo_interp.vectors import VectorLoader, resolve_vector_path

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class BehaviourConfig:
    """Everything a behaviour evaluation reads, one field per flag of ``python -m
    yapo_interp.behaviour`` (but ``--out``, ``--device``, ``--threads`` and ``--seed``, which
    belong to the process; the seed of the bootstrap is ``scoring.seed``): which data (the
    behaviour, at most how many questions, strict reading, test questions also in
    ``train.csv``), which conditions (vectors at multipliers, the SAE of sparse vectors), which
    tasks and how they are scored (``scoring``), by which judge, and the cost on neutral text."""

    behaviour: str                              # a shipped behaviour or a folder
    vectors: tuple[str, ...] = ()               # vector files or training run folders
    multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS
    tasks: tuple[str, ...] = ("ab", "logodds")
    max_items: int | None = None                # questions per file
    strict: bool = False                        # refuse malformed rows
    keep_train_questions: bool = False
    scoring: BehaviourEvalConfig = field(default_factory=BehaviourEvalConfig)
    judge: str = "none"                         # none | local | openai
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = None
    cost: bool = False                          # also the CE increase and KL on neutral text
    cost_texts: Path | None = None              # None: the shipped neutral texts
    cost_max_tokens: int = 128
    sae: str | None = None                      # SAE of sparse vectors, overriding their metadata's
    sae_id: str | None = None
    preset: str = "embedded"
    model: str | None = None                    # None: the preset's

    def __post_init__(self) -> None:
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise UserError(f"unknown task {unknown[0]!r}; use {', '.join(TASKS)}")
        if self.max_items is not None and self.max_items < 1:
            raise UserError(f"--max-items must be at least 1, got {self.max_items}")
        if "open" in self.tasks and self.judge == "none":
            raise UserError("--tasks open needs a judge: --judge local (offline, weaker) or "
                            "--judge openai")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BehaviourConfig:
        """The config of a parsed command line (``build_parser().parse_args(argv)``)."""
        scoring = BehaviourEvalConfig(template=args.template, text_score=args.text_score,
                                      batch_size=args.batch_size,
                                      open_max_new_tokens=args.open_max_new_tokens,
                                      n_bootstrap=args.bootstrap, seed=args.seed)
        return cls(behaviour=args.behaviour, vectors=tuple(args.vectors),
                   multipliers=tuple(args.multipliers), tasks=tuple(args.tasks),
                   max_items=args.max_items, strict=args.strict,
                   keep_train_questions=args.keep_train_questions, scoring=scoring,
                   judge=args.judge, judge_base_url=args.judge_base_url,
                   judge_model=args.judge_model, judge_api_key=args.judge_api_key,
                   cost=args.cost, cost_texts=args.cost_texts,
                   cost_max_tokens=args.cost_max_tokens, sae=args.sae, sae_id=args.sae_id,
                   preset=args.preset, model=args.model)

    @property
    def model_name(self) -> str:
        """The model to evaluate: ``model`` if given, else the preset's."""
        return self.model or get_preset(self.preset).model


@dataclass
class BehaviourInputs:
    """What a behaviour evaluation reads before the model is loaded, each checked: the data set,
    the A/B items and test pairs to score (test questions also in ``train.csv`` dropped unless
    kept), the judge (reachable), the neutral texts of the cost and the vectors' base paths."""

    data: BehaviourSet
    items: list[ABItem]
    pairs: list[BehaviourPair]
    dropped: set[str]
    judge: Judge | None
    texts: list[NeutralText] | None
    vector_paths: list[Path]


@dataclass
class BehaviourResult:
    """What :func:`run_behaviour` computed and wrote: one row per condition, question and task
    (``frame``), the summary with CIs, the cost rows (with ``cost``), the settings saved in
    ``run.json`` and the files written."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    cost: pd.DataFrame | None
    settings: dict[str, Any]
    files: list[Path]


def prepare_inputs(config: BehaviourConfig, out: str | Path) -> BehaviourInputs:
    """Read and check, before the model load, what ``config`` names: the behaviour's files (a
    summary of what was kept goes to stderr), the judge (a closed port fails now), the neutral
    texts and the vector files (damaged ones fail now)."""
    tasks = set(config.tasks)
    files = tuple(name for name, task in (("test_infer", "ab"), ("test", "logodds"))
                  if task in tasks or (name == "test" and "open" in tasks))
    data = load_behaviour(config.behaviour, strict=config.strict, files=("train", *files))
    print(data.summary(), file=sys.stderr)
    seen = set() if config.keep_train_questions else set(data.test_questions_in_train())
    if seen:
        print(f"dropping {len(seen)} test question(s) that also appear in train.csv "
              f"(--keep-train-questions keeps them)", file=sys.stderr)
    items = [item for item in data.test_infer if item.question not in seen][: config.max_items] \
        if "ab" in tasks else []
    pairs = [pair for pair in data.test if pair.question not in seen][: config.max_items] \
        if {"logodds", "open"} & tasks else []
    judge = None
    if "open" in tasks:
        judge = make_behaviour_judge(config.judge, data.name, base_url=config.judge_base_url,
                                     model=config.judge_model, api_key=config.judge_api_key,
                                     cache_path=Path(out) / "judge_cache.jsonl")
        if hasattr(judge, "check_reachable"):
            judge.check_reachable()
    texts = load_neutral_texts(config.cost_texts) if config.cost else None
    vector_paths = [resolve_vector_path(path) for path in config.vectors]
    for path in vector_paths:
        SteeringVector.load(path)  # damaged files: before the model load
    return BehaviourInputs(data=data, items=items, pairs=pairs, dropped=seen, judge=judge,
                           texts=texts, vector_paths=vector_paths)


def write_outputs(out: Path, frame: pd.DataFrame, summary: pd.DataFrame,
                  cost: pd.DataFrame | None, settings: dict[str, Any]) -> list[Path]:
    """Write the tables, figures and ``run.json`` atomically; return the files written."""
    files = [write_table(out / "items.csv", frame), write_table(out / "summary.csv", summary)]
    note = ("\nOpen-ended scores (judge_score) come from the offline word-overlap judge, which is "
            "much weaker than an LLM judge.\n" if settings.get("judge_weaker") else "")
    files.append(write_text(out / "summary.md", summary.to_markdown(index=False,
                                                                     floatfmt=".3f") + "\n" + note))
    title = f"{settings['behaviour']}: score against multiplier"
    files += save_figure(behaviour_sweep_figure(summary, METRICS, title=title,
                                                judge_weaker=bool(settings.get("judge_weaker"))),
                         out / "behaviour_sweep",
                         image_formats=(), width=1400)
    if cost is not None:
        cost_summary = summarize_cost(cost)
        files += [write_table(out / "cost.csv", cost),
                  write_table(out / "cost_summary.csv", cost_summary)]
        metric = "ab_letter_prob" if "ab_letter_prob" in set(summary["metric"]) else "log_odds"
        if metric in set(summary["metric"]):
            files += save_figure(effect_cost_figure(summary, cost_summary, metric=metric,
                                                    metric_title=METRICS[metric],
                                                    title=f"{settings['behaviour']}: effect "
                                                          f"against cost"),
                                 out / "effect_vs_cost", image_formats=())
    files.append(write_json(out / "run.json", run_info(settings)))
    return files


def run_behaviour(model: HookedTransformer, config: BehaviourConfig, out: str | Path, *,
                  inputs: BehaviourInputs | None = None) -> BehaviourResult:
    """Evaluate the unsteered model and every vector of ``config`` at every multiplier on
    ``model``, write the tables, figures and ``run.json`` into ``out`` and print the summary.
    ``inputs`` (from :func:`prepare_inputs`, default: read now) are the checked data, judge,
    neutral texts and vector paths."""
    out = Path(out)
    inputs = inputs if inputs is not None else prepare_inputs(config, out)
    data, items, pairs, judge = inputs.data, inputs.items, inputs.pairs, inputs.judge
    tasks = set(config.tasks)
    loader = VectorLoader(model, sae_override=config.sae, sae_id=config.sae_id,
                          preset=get_preset(config.preset))
    vectors = [loader.load(path) for path in inputs.vector_paths]
    conditions = sweep_conditions(vectors, config.multipliers)
    print(f"evaluating {len(conditions)} condition(s): {len(items)} A/B items, {len(pairs)} "
          f"test pairs{', judged open-ended' if judge else ''}", file=sys.stderr)
    frame = evaluate_behaviour(model, conditions, items=items,
                               pairs=pairs if {"logodds", "open"} & tasks else (),
                               judge=judge, config=config.scoring)
    if "logodds" not in tasks and "log_odds" in frame:
        frame = frame.drop(columns=["log_odds"])
    summary = summarize_sweep(frame, config.scoring)
    cost = None
    if inputs.texts is not None:
        cost = steering_cost(model, inputs.texts, conditions, max_tokens=config.cost_max_tokens,
                             batch_size=max(1, config.scoring.batch_size // 2))
    settings = {"behaviour": data.name, "folder": str(data.folder),
                "vectors": [source for _, _, source in vectors],
                "multipliers": list(config.multipliers), "tasks": list(config.tasks),
                "model": config.model_name, "preset": config.preset,
                "max_items": config.max_items,
                "skipped_rows": {key: report.skipped for key, report in data.reports.items()},
                "test_questions_in_train": len(data.test_questions_in_train()),
                "dropped_train_questions": len(inputs.dropped),
                "judge": judge.name if judge else None,
                "judge_weaker": bool(judge and judge.weaker), "config": asdict(config.scoring)}
    written = write_outputs(out, frame, summary, cost, settings)
    print(summary.to_markdown(index=False, floatfmt=".3f"))
    if cost is not None:
        print(summarize_cost(cost).to_markdown(index=False, floatfmt=".4f"))
    if judge is not None and judge.weaker:
        print("note: open-ended scores come from the offline word-overlap judge, which is much "
              "weaker than an LLM judge.")
    print(f"wrote {len(written)} files to {out}")
    return BehaviourResult(frame=frame, summary=summary, cost=cost, settings=settings,
                           files=written)
