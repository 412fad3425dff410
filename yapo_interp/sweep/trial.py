"""One trial of a sweep: train a ``(method, country, setting, lr, seed)`` vector on the fitting
questions and score it at every λ on the validation and test questions (:func:`run_trial`);
:func:`trial_task` is the Ray task around it, :func:`finished_result` what a rerun skips and
:func:`trained_result` what it scores at new λ without retraining."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from yapo_interp import data
from yapo_interp.evaluate import (BASELINE, EvalConfig, check_unseen, evaluate_mcq,
                                  make_conditions)
from yapo_interp.io import read_jsonl, write_json, write_table
from yapo_interp.models import Preset, get_preset
from yapo_interp.objective import PreferenceObjective
from yapo_interp.seeding import set_seed
from yapo_interp.steering import SteeringVector
from yapo_interp.sweep.grid import (BASELINE_METHOD, ERROR, EVAL_SETTINGS, RESULT, SCORED_ONLY,
                                    TrialSpec)
from yapo_interp.sweep.model_setup import ModelSetup
from yapo_interp.train import (DataSelection, TrainConfig, build_pairs, evaluate_loss,
                               select_items, train_steering_vector)


def _summary_rows(frame: pd.DataFrame, split: str) -> list[dict[str, Any]]:
    """Mean accuracy, p_correct and margin per λ and form (and both forms) of one split."""
    rows = []
    for multiplier, group in frame.groupby("multiplier", sort=True):
        for setting in EVAL_SETTINGS:
            part = group if setting == "both" else group[group["form"] == setting]
            if part.empty:
                continue
            rows.append({"split": split, "multiplier": float(multiplier),
                         "eval_setting": setting, "n": len(part),
                         "n_questions": int(part["question_id"].nunique()),
                         "accuracy": float(part["score"].mean()),
                         "p_correct": float(part["p_correct"].mean()),
                         "margin": float(part["margin"].mean())})
    return rows


def _train(spec: TrialSpec, preset: Preset, model: Any, sae: Any,
           sae_info: dict[str, Any] | None, layer: int, selection: DataSelection,
           fit_items: list, validation_items: list, info: dict[str, Any], trial_dir: Path
           ) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``spec``'s vector: ``(vector, the SAE it uses or None, what training measured)``."""
    train_pairs = build_pairs(model, fit_items, selection, progress=False)
    validation_pairs = build_pairs(model, validation_items, selection, progress=False)
    config = TrainConfig(
        method=spec.method, layer=layer, beta=spec.beta, lr=spec.lr or TrainConfig.lr,
        batch_size=spec.batch_size, epochs=spec.epochs, warmup_steps=spec.warmup_steps,
        seed=spec.seed, eval_every=spec.eval_every, max_grad_norm=preset.max_grad_norm,
        gradient_accumulation=preset.gradient_accumulation, append_eos=preset.append_eos)
    used_sae = sae if config.uses_sae else None
    vector = train_steering_vector(model, train_pairs, validation_pairs, config, sae=used_sae,
                                   out_dir=trial_dir / "train", metadata=info,
                                   sae_info=sae_info, progress=False)
    log = trial_dir / "train" / "log.jsonl"
    records = read_jsonl(log) if log.is_file() else []
    evals = [record for record in records if "eval_loss" in record]
    steps = [record for record in records if "train_loss" in record]
    if evals:
        final_loss, best_loss = evals[-1]["eval_loss"], min(r["eval_loss"] for r in evals)
    elif validation_pairs:  # CAA / SAS: their vector's validation loss at λ = 1
        objective = PreferenceObjective(model, layer, sae=used_sae, beta=spec.beta,
                                        method=spec.method)
        prepared = objective.prepare(validation_pairs)
        final_loss = best_loss = evaluate_loss(objective, prepared,
                                               vector.vector.to(model.cfg.device),
                                               spec.batch_size)["eval_loss"]
    else:
        final_loss = best_loss = float("nan")
    trained = {"final_eval_loss": final_loss, "best_eval_loss": best_loss,
               "steps": len(steps), "n_train_pairs": len(train_pairs),
               "n_validation_pairs": len(validation_pairs), "layer": layer,
               "final_perturbation": steps[-1].get("perturbation") if steps else None,
               "vector_norm": float(vector.vector.norm())}
    return vector, used_sae, trained


def _load_trained(trial_dir: Path, model: Any, sae: Any) -> tuple[SteeringVector, Any]:
    """The vector a finished trial saved, and the SAE it steers through (or None)."""
    vector = SteeringVector.load(trial_dir / "train" / "vector", model=model)
    if not vector.uses_sae:
        return vector, None
    vector.check_fits(model=model, sae=sae, source=str(trial_dir))
    return vector, sae


def _merged(previous: dict[str, Any], spec: TrialSpec, rows: list[dict[str, Any]]
            ) -> tuple[TrialSpec, list[dict[str, Any]]]:
    """A finished trial's λ and summary rows with those of ``spec``'s new λ added: the spec
    of every λ scored so far, and the rows in a fresh trial's order (split, then λ)."""
    scored = tuple(previous["spec"]["multipliers"])
    merged = replace(spec, multipliers=tuple(sorted({*scored, *spec.multipliers})))
    order = {split: index for index, split in enumerate(("validation", "test"))}
    rows = sorted([*previous["rows"], *rows],
                  key=lambda row: (order[row["split"]], row["multiplier"]))
    return merged, rows


def run_trial(spec: TrialSpec, setup: ModelSetup, trial_dir: str | Path, *,
              threads: int = 1) -> dict[str, Any]:
    """Train ``spec``'s vector and score it at every λ on the validation and test questions
    (a ``baseline`` trial trains nothing and scores the unsteered model, as λ = 0); write
    ``instances.parquet`` and, last, ``result.json``; return the result.

    A trial that finished with the same training fields and other λ is not retrained: its
    saved vector is scored at the λ it lacks, and the scores join the ones it has."""
    started = time.time()
    torch.set_num_threads(max(1, threads))
    trial_dir = Path(trial_dir)
    preset = get_preset(setup.preset)
    model, sae, sae_info, layer = setup.load()
    set_seed(spec.seed)
    is_baseline = spec.method == BASELINE_METHOD
    selection = DataSelection(
        country=spec.country, setting="localized" if is_baseline else spec.setting,
        rejected=spec.rejected or preset.rejected,
        style=preset.prompt_style, response_format=preset.response_format,
        test_fraction=spec.test_fraction, validation_fraction=spec.validation_fraction,
        split_seed=spec.split_seed, max_pairs=spec.max_pairs, data=spec.data)
    fit_items, validation_items, info = select_items(selection)
    previous = None if is_baseline else trained_result(spec, trial_dir)
    if is_baseline:
        vector, used_sae, trained = None, None, {"layer": layer}
        conditions = [BASELINE]
    else:
        multipliers = spec.multipliers
        if previous is None:
            vector, used_sae, trained = _train(spec, preset, model, sae, sae_info, layer,
                                               selection, fit_items, validation_items, info,
                                               trial_dir)
        else:  # trained before: score the λ it lacks
            scored = set(previous["spec"]["multipliers"])
            multipliers = tuple(m for m in spec.multipliers if m not in scored)
            if not multipliers:
                return previous
            vector, used_sae = _load_trained(trial_dir, model, sae)
            trained = previous["trained"]
        conditions = make_conditions([(vector, used_sae, str(trial_dir))], multipliers,
                                     include_baseline=False)

    items = data.load_cultural(spec.data, countries=[info["country"]])
    _, test_items = data.split_items(items, test_fraction=spec.test_fraction,
                                     seed=spec.split_seed)
    eval_config = EvalConfig(mode="loglik", style=preset.prompt_style, n_bootstrap=0)
    frames, rows = [], []
    for split, split_items in (("validation", validation_items), ("test", test_items)):
        if spec.max_eval_items is not None:
            split_items = split_items[: spec.max_eval_items]
        if not split_items:
            continue
        if split == "test" and vector is not None:  # no test question reached the vector,
            check_unseen(vector, str(trial_dir), split_items, sae=used_sae)  # nor its SAE
        frame = evaluate_mcq(model, split_items, conditions, eval_config, progress=False)
        if is_baseline:
            frame["multiplier"] = 0.0
        frame.insert(0, "split", split)
        frames.append(frame)
        rows += _summary_rows(frame, split)
    seconds = time.time() - started
    if previous is not None:
        spec, rows = _merged(previous, spec, rows)
        seconds += previous["seconds"]
    settings = asdict(spec)
    columns = {key: json.dumps(value) if isinstance(value, tuple) else value
               for key, value in settings.items()}
    if frames:
        instances = pd.concat(frames, ignore_index=True)
        for key, value in reversed(list(columns.items())):
            if key not in instances:
                instances.insert(0, key, value)
        scored_before = trial_dir / "instances.parquet"
        if previous is not None and scored_before.is_file():
            # the λ its result.json lists (a run stopped between the two writes left more)
            before = pd.read_parquet(scored_before)
            before = before[before["multiplier"].isin(previous["spec"]["multipliers"])]
            before = before.assign(**{key: columns[key] for key in SCORED_ONLY})
            instances = pd.concat([before, instances], ignore_index=True)
        write_table(trial_dir / "instances.parquet", instances)
    model_name = model.cfg.model_name
    result = {"spec": settings, "name": spec.name, "status": "ok", "setup": {
                  "preset": setup.preset, "model": model_name, "factory": setup.factory,
                  "device": setup.device}, "trained": trained,
              "rows": rows, "seconds": seconds}
    write_json(trial_dir / RESULT, result)
    return result


def trial_task(spec: TrialSpec, setup: ModelSetup, trial_dir: str, threads: int
               ) -> dict[str, Any]:
    """The Ray task: ``run_trial``, with the traceback saved beside the trial when it raises."""
    try:
        return run_trial(spec, setup, trial_dir, threads=threads)
    except BaseException:
        Path(trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(trial_dir) / ERROR).write_text(traceback.format_exc(), encoding="utf-8")
        raise


def trained_result(spec: TrialSpec, trial_dir: Path) -> dict[str, Any] | None:
    """The result of a trial that finished with ``spec``'s training fields (at any λ), else
    None."""
    marker = trial_dir / RESULT
    if not marker.is_file():
        return None
    try:
        result = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stored = result.get("spec")
    if not isinstance(stored, dict) or not all(key in stored for key in SCORED_ONLY):
        return None
    training = {key: value for key, value in stored.items() if key not in SCORED_ONLY}
    return result if training == spec.training() else None


def finished_result(spec: TrialSpec, trial_dir: Path) -> dict[str, Any] | None:
    """The result of a trial that finished with these training fields and every λ of
    ``spec`` scored (a baseline is scored at λ 0 alone), else None."""
    result = trained_result(spec, trial_dir)
    if result is None or spec.method == BASELINE_METHOD:
        return result
    return result if set(spec.multipliers) <= set(result["spec"]["multipliers"]) else None
