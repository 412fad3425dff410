"""The evaluation stage as one call: :func:`run_evaluate` takes a complete, frozen
:class:`EvaluateConfig` (data selection, vectors, multipliers, scoring, judge) and writes the
results of ``python -m yapo_interp.evaluate`` into ``out``; the command line is
``EvaluateConfig.from_args`` and this call. A notebook does the same without an argv::

    config = EvaluateConfig(countries=("egypt",), vectors=("runs/train/egypt-yapo",))
    result = run_evaluate(model, config, "runs/evaluate")

Before any model is loaded, :func:`prepare_inputs` reads and checks what can be known without it
(the items, the judge, the vector files), so that a wrong flag fails in seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from yapo_interp import judge as judges
from yapo_interp.argv import flag, switch
from yapo_interp.data import (DEFAULT_TEST_FRACTION, CulturalItem, load_cultural,
                              resolve_countries, split_items)
from yapo_interp.errors import UserError
from yapo_interp.evaluate.conditions import EvalConfig, make_conditions
from yapo_interp.evaluate.scoring import evaluate_mcq, evaluate_open, evaluate_stability
from yapo_interp.evaluate.summaries import EvaluationResult, build_result
from yapo_interp.evaluate.tables import format_summary, write_results
from yapo_interp.models import get_preset
from yapo_interp.steering import SteeringVector
from yapo_interp.vectors import VectorLoader, require_epoch_vectors, resolve_vector_path

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything an evaluation run reads, one field per flag of ``python -m
    yapo_interp.evaluate`` (but ``--out``, ``--device`` and ``--threads``, which belong to the
    process): which items (countries, dataset, split, at most how many), which conditions
    (vectors at multipliers, the baseline, stability runs, the SAE of sparse vectors), how they
    are scored (``scoring``; its ``style`` may be ``"auto"``, decided with the model's
    tokenizer) and by which judge. ``from_args`` takes the MCQ mode from the preset when
    ``--mode`` is not given; built by hand, ``scoring`` is what it says (default: loglik)."""

    countries: tuple[str, ...]
    vectors: tuple[str, ...] = ()          # vector files or training run folders
    multipliers: tuple[float, ...] = (1.0,)
    baseline: bool = True                  # also the unsteered model
    stability: tuple[str, ...] = ()        # runs whose every epoch is scored (figure 5)
    split: str = "test"                    # "test" (the training split's test questions) or "all"
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    dataset: str | None = None             # None: the shipped cultural set
    max_items: int | None = None           # per country
    scoring: EvalConfig = field(default_factory=EvalConfig)
    judge: str = "none"                    # none | local | openai
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = None
    judge_cache: Path | None = None        # None: OUT/judge_cache.jsonl
    judge_timeout: float = 60.0
    judge_retries: int = 3
    judge_deadline: float = 120.0
    sae: str | None = None                 # SAE of sparse vectors, overriding their metadata's
    sae_id: str | None = None
    preset: str = "embedded"
    model: str | None = None               # None: the preset's

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvaluateConfig:
        """The config of a parsed command line (``build_parser().parse_args(argv)``)."""
        scoring = EvalConfig(mode=args.mode or get_preset(args.preset).mcq_mode,
                             settings=tuple(args.settings), style=args.style,
                             loglik_score=args.score, batch_size=args.batch_size,
                             boxed_max_new_tokens=args.boxed_max_new_tokens,
                             shuffle_options_seed=None if args.no_shuffle_options
                             else args.shuffle_options,
                             open_max_new_tokens=args.open_max_new_tokens, alpha=args.alpha,
                             n_bootstrap=args.bootstrap, seed=args.seed)
        return cls(countries=tuple(args.countries), vectors=tuple(args.vectors),
                   multipliers=tuple(args.multipliers), baseline=not args.no_baseline,
                   stability=tuple(args.stability), split=args.split,
                   test_fraction=args.test_fraction, split_seed=args.split_seed,
                   dataset=args.dataset, max_items=args.max_items, scoring=scoring,
                   judge=args.judge, judge_base_url=args.judge_base_url,
                   judge_model=args.judge_model, judge_api_key=args.judge_api_key,
                   judge_cache=args.judge_cache, judge_timeout=args.judge_timeout,
                   judge_retries=args.judge_retries, judge_deadline=args.judge_deadline,
                   sae=args.sae, sae_id=args.sae_id, preset=args.preset, model=args.model)

    @property
    def model_name(self) -> str:
        """The model to evaluate: ``model`` if given, else the preset's."""
        return self.model or get_preset(self.preset).model

    def to_argv(self) -> list[str]:
        """The arguments (without ``--out``, ``--device`` and ``--threads``) that give this config
        back through ``from_args``. The judge's API key is never written (give it by
        ``YAPO_JUDGE_API_KEY``); a ``UserError`` for scoring settings that no flag sets."""
        scoring = self.scoring
        unset = [name for name in ("eps", "confidence")
                 if getattr(scoring, name) != getattr(EvalConfig, name)]
        if unset:
            raise UserError(f"no command line gives scoring {', '.join(unset)} other than the "
                            "default")
        shuffle = (["--no-shuffle-options"] if scoring.shuffle_options_seed is None
                   else ["--shuffle-options", str(scoring.shuffle_options_seed)])
        return ["--country", *self.countries, *flag("--vectors", self.vectors),
                *flag("--multipliers", self.multipliers),
                *switch("--no-baseline", not self.baseline), *flag("--stability", self.stability),
                "--split", self.split, "--test-fraction", str(self.test_fraction),
                "--split-seed", str(self.split_seed), *flag("--dataset", self.dataset),
                *flag("--max-items", self.max_items), "--settings", *scoring.settings,
                "--mode", scoring.mode, "--score", scoring.loglik_score, "--style", scoring.style,
                *shuffle, "--batch-size", str(scoring.batch_size),
                "--boxed-max-new-tokens", str(scoring.boxed_max_new_tokens),
                "--open-max-new-tokens", str(scoring.open_max_new_tokens),
                "--alpha", str(scoring.alpha), "--bootstrap", str(scoring.n_bootstrap),
                "--seed", str(scoring.seed), "--judge", self.judge,
                *flag("--judge-base-url", self.judge_base_url),
                *flag("--judge-model", self.judge_model), *flag("--judge-cache", self.judge_cache),
                "--judge-timeout", str(self.judge_timeout),
                "--judge-retries", str(self.judge_retries),
                "--judge-deadline", str(self.judge_deadline), *flag("--sae", self.sae),
                *flag("--sae-id", self.sae_id), "--preset", self.preset,
                *flag("--model", self.model)]


@dataclass
class EvaluationInputs:
    """What an evaluation reads before the model is loaded, each checked: the countries (names
    resolved), the items to evaluate, the judge (reachable) and the vectors' base paths (their
    files readable and consistent)."""

    countries: list[str]
    items: list[CulturalItem]
    judge: judges.Judge | None
    vector_paths: list[Path]


def select_items(items: Sequence[CulturalItem], *, split: str, test_fraction: float,
                 split_seed: int, max_items: int | None) -> list[CulturalItem]:
    """The items to evaluate: the test split (``split="test"``, the split training uses) or all,
    then at most ``max_items`` per country."""
    if split == "test":
        _, items = split_items(items, test_fraction=test_fraction, seed=split_seed)
    if max_items is not None:
        if max_items < 1:
            raise UserError("--max-items must be at least 1")
        kept: dict[str, int] = {}
        limited = []
        for item in items:
            if kept.get(item.country, 0) < max_items:
                kept[item.country] = kept.get(item.country, 0) + 1
                limited.append(item)
        items = limited
    if not items:
        raise UserError("no items left to evaluate after the split; use --split all or a "
                        "larger dataset")
    return list(items)


def seen_questions(vector: SteeringVector, sae: SAE | None = None) -> dict[str, set[str]]:
    """Cultural question ids that shaped ``vector``: those it was fitted or validated on (its
    metadata's ``train_question_ids``) and, for a sparse vector, those whose text trained its
    SAE (the SAE config's ``metadata.yapo_interp.cultural_question_ids``)."""
    seen = {"training": set((vector.metadata or {}).get("train_question_ids") or [])}
    info = getattr(getattr(sae, "cfg", None), "metadata", None) if sae is not None else None
    yapo_info = getattr(info, "yapo_interp", None) if info is not None else None
    if isinstance(yapo_info, Mapping) and yapo_info.get("cultural_question_ids"):
        seen["its SAE's corpus"] = set(yapo_info["cultural_question_ids"])
    return seen


def check_unseen(vector: SteeringVector, source: str, items: Sequence[CulturalItem], *,
                 sae: SAE | None = None) -> None:
    """Refuse (one line) to score ``vector`` on a question that reached its training, its
    tuning or its SAE's corpus."""
    evaluated = {item.question_id for item in items}
    for where, questions in seen_questions(vector, sae).items():
        overlap = sorted(evaluated & questions)
        if overlap:
            split = (vector.metadata or {}).get("split") or {}
            hint = (f"evaluate with the split it was trained with (--split test --split-seed "
                    f"{split.get('seed', 0)} --test-fraction "
                    f"{split.get('test_fraction', DEFAULT_TEST_FRACTION)})" if split
                    else "evaluate on --split test with the default split")
            raise UserError(f"{source} saw {len(overlap)} of the evaluated questions in "
                            f"{where} (e.g. {', '.join(overlap[:3])}); {hint}")


def prepare_inputs(config: EvaluateConfig, out: str | Path) -> EvaluationInputs:
    """Read and check, before the model load, what ``config`` names: the items, the judge (a
    closed port or unknown host fails now), the vector files (damaged or mismatched ones fail
    now) and the stability runs' checkpoints."""
    countries = resolve_countries(config.countries)
    items = load_cultural(config.dataset, countries=countries)
    items = select_items(items, split=config.split, test_fraction=config.test_fraction,
                         split_seed=config.split_seed, max_items=config.max_items)
    # looked up on the module, so that tests can replace judge.make_judge
    judge = judges.make_judge(
        config.judge, base_url=config.judge_base_url, model=config.judge_model,
        api_key=config.judge_api_key,
        cache_path=config.judge_cache or Path(out) / "judge_cache.jsonl",
        **({"timeout": config.judge_timeout, "max_retries": config.judge_retries,
            "deadline": config.judge_deadline} if config.judge == "openai" else {}))
    if hasattr(judge, "check_reachable"):
        judge.check_reachable()  # a closed port or unknown host: now, not after the model load
    vector_paths = [resolve_vector_path(path) for path in config.vectors]  # fail before loading
    for path in vector_paths:  # damaged or mismatched vector files: before the model load
        SteeringVector.load(path)
    for run_dir in config.stability:
        require_epoch_vectors(run_dir)
    return EvaluationInputs(countries=countries, items=items, judge=judge,
                            vector_paths=vector_paths)


def run_evaluate(model: HookedTransformer, config: EvaluateConfig, out: str | Path, *,
                 inputs: EvaluationInputs | None = None) -> EvaluationResult:
    """Evaluate the baseline and every vector of ``config`` on ``model`` and write the results,
    tables and ``settings.json`` into ``out``; print the summary. ``inputs`` (from
    :func:`prepare_inputs`, default: read now) are the checked items, judge and vector paths.
    ``result.unscored`` says when the judge left open-ended responses without a score."""
    out = Path(out)
    inputs = inputs if inputs is not None else prepare_inputs(config, out)
    countries, items, judge = inputs.countries, inputs.items, inputs.judge
    scoring = config.scoring.resolved(model.tokenizer)
    loader = VectorLoader(model, sae_override=config.sae, sae_id=config.sae_id,
                          preset=get_preset(config.preset))
    vectors = [loader.load(path) for path in inputs.vector_paths]
    for vector, sae, source in vectors:
        country = (vector.metadata or {}).get("country")
        if country and country not in countries:
            raise UserError(f"{source} is a vector for {country}, which is not among "
                            f"--country {' '.join(countries)}; add it or drop the vector")
        check_unseen(vector, source, items, sae=sae)
    for run_dir in config.stability:
        for _, path in require_epoch_vectors(run_dir)[:1]:  # every epoch shares the run's metadata
            vector, sae, source = loader.load(path)
            check_unseen(vector, source, items, sae=sae)
    conditions = make_conditions(vectors, config.multipliers, include_baseline=config.baseline)
    if not conditions:
        raise UserError("nothing to evaluate: give --vectors or keep the baseline")
    print(f"evaluating {len(conditions)} condition(s) on {len(items)} items of "
          f"{', '.join(countries)} ({config.split} split; MCQ by {scoring.mode}"
          f"{' ' + scoring.loglik_score if scoring.mode == 'loglik' else ''}, style "
          f"{scoring.style})", file=sys.stderr)
    mcq = evaluate_mcq(model, items, conditions, scoring)
    open_ended = evaluate_open(model, items, conditions, judge, scoring) if judge else None
    stability = None
    if config.stability:
        baseline = mcq[mcq["method"] == "baseline"] if config.baseline else None
        stability = evaluate_stability(model, items, config.stability, loader, scoring,
                                       baseline=baseline, include_baseline=config.baseline)
    result = build_result(mcq, open_ended, scoring, stability)
    settings = {"countries": countries, "vectors": [source for _, _, source in vectors],
                "multipliers": list(config.multipliers), "split": config.split,
                "test_fraction": config.test_fraction, "split_seed": config.split_seed,
                "dataset": config.dataset, "max_items": config.max_items,
                "model": config.model_name, "preset": config.preset,
                "judge": judge.name if judge else None,
                "judge_weaker": bool(judge and judge.weaker),
                "stability_runs": list(config.stability), "n_items": len(items)}
    files = write_results(result, out, scoring, settings)
    print(format_summary(result))
    result.unscored = judges.unscored_message(open_ended.to_dict("records"), judge.name) if (
        open_ended is not None and "judge_ok" in open_ended) else None
    if judge is not None and judge.weaker:
        print("note: open-ended scores come from the offline heuristic judge, which is much "
              "weaker than an LLM judge; do not compare them with the paper's numbers.")
    print(f"wrote {len(files)} files to {out} (tables: table1_mcq.md"
          f"{', table2_open.md' if open_ended is not None else ''}, "
          f"table3_gap_by_language.md, table5_gap_by_country.md)")
    return result
