"""Sweeps on Ray: a grid of trainings with their validation and test evaluations, and the
learning rate and steering strength λ each method gets from them (issue 13).

**Why sweep.** One shared learning rate is not a fair comparison of BiPO and YaPO: AdamW moves
every coordinate of ``v`` by roughly ``lr`` per step, BiPO has ``d_model`` coordinates and YaPO
``d_sae`` of them (each a unit-norm decoder row), so at the same ``lr`` YaPO's steps in the
residual stream can be many times larger. Each method is therefore compared at *its own* best
learning rate, chosen by validation loss over several seeds, and at its own λ, chosen on the
validation split (as AxBench does) — never on the test questions, which no trial trains or tunes
on (``data.pairs``' question-level split). ``sae-dense`` (YaPO's parameterisation without the
encoder and ReLU, see ``steering.py``) tells whether a speed difference comes from sparsity or
from the parameterisation.

**A trial** is one ``(method, country, setting, lr, seed)``: ``train.train_steering_vector`` on
the fitting questions (its ``log.jsonl`` has the validation loss per epoch, or every
``--eval-every`` steps, and the perturbation ``‖Φ(h) − h‖`` per step), then log-likelihood MCQ
scoring (``evaluate.evaluate_mcq``) of the vector at every λ of ``--multipliers`` on the
validation questions and on the test questions: accuracy, the correct option's probability and
its log-odds margin (``metrics.answer_probability`` / ``answer_margin``), per form. CAA and SAS
have no learning rate or seed: they get one trial per (country, setting).

**Outputs** in ``--out``:

* ``trials/NAME-HASH/`` — one folder per trial: ``train/`` (the training run), ``instances.parquet``
  (every scored instance), ``result.json`` (written last: the marker of a finished trial; a rerun
  skips trials whose marker holds the same settings) or ``error.txt`` (the traceback of a failed
  one, retried on the next run).
* ``results.parquet`` / ``results.csv`` — the tidy table: one row per trial × split × λ × form
  with every setting of the trial; ``instances.parquet`` — all instance rows (for paired
  differences, ``evaluate.paired_differences``); ``curves.parquet`` — every log record of every
  trial (loss, validation loss, perturbation against step); ``failures.csv``;
  ``figures/loss_vs_perturbation.html`` and ``figures/score_vs_lambda.html`` (``sweep_figures``).
* ``differences.csv`` — every method-minus-method difference of margin, p_correct and
  accuracy on the test questions, each method at its selected lr and λ (averaged over seeds per
  instance), with a paired bootstrap CI over questions (``method_differences``).
* ``convergence.csv`` — steps until the validation loss first reaches ``--loss-threshold``,
  median over seeds with a bootstrap CI (``metrics.steps_to_threshold_ci``), per method, lr,
  country and setting.
* ``selection.json`` — per method, the lr with the lowest mean final validation loss over seeds
  (and countries, settings; at least ``--min-seeds`` seeds, else flagged), then the λ with the
  highest mean validation ``--select-metric`` at that lr: the values a study (``train --lr``,
  ``evaluate --multipliers``) should use; ``read_selection(out)`` returns them.

**Running it.** Trials are Ray tasks (``ray.remote``, one CPU each; torch uses ``--threads``
threads per trial, default 1) on a local Ray instance with ``--workers`` CPUs (default: all), or
on an existing cluster with ``--address``. A progress bar counts finished trials; a trial that
raises is reported on one line, its traceback saved, and the others go on. Each worker process
loads the model once and keeps it for the trials it runs::

    python -m yapo_interp.sweep --quick                    # 12 small trials (see QUICK)
    python -m yapo_interp.sweep --methods bipo yapo sae-dense --countries egypt nepal \\
        --settings localized nonlocalized --lrs 0.01 0.03 0.1 0.3 1 3 --seeds 0 1 2 \\
        --multipliers 0.5 1 2 4 --epochs 20 --out runs/sweep

**On a Slurm cluster** (Ray on Slurm): start a Ray head on the first node and workers on the
others inside one allocation, then point the sweep at the head::

    #!/bin/bash
    #SBATCH --nodes=4 --ntasks-per-node=1 --cpus-per-task=32 --gpus-per-node=0 --time=12:00:00
    nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
    head=${nodes[0]}
    port=6379
    srun --nodes=1 --ntasks=1 -w "$head" \\
        ray start --head --port=$port --num-cpus=$SLURM_CPUS_PER_TASK --block &
    sleep 30
    for node in "${nodes[@]:1}"; do
        srun --nodes=1 --ntasks=1 -w "$node" \\
            ray start --address="$head:$port" --num-cpus=$SLURM_CPUS_PER_TASK --block &
    done
    sleep 30
    python -m yapo_interp.sweep --address "$head:$port" --preset paper --out "$SCRATCH/sweep" ...

Every node needs the same environment (``pip install -e ".[sweep]"``) and ``--out`` on a shared
file system; with GPUs, ``--gpus-per-trial 1`` asks Ray for one per trial and ``--device cuda``
puts the model there.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yapo_interp.cli import run_cli
from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, REJECTED
from yapo_interp.errors import UserError
from yapo_interp.steering import METHODS

MEAN_METHODS = ("caa", "sas")  # no learning rate, no seed: one trial per (country, setting)
RESULT = "result.json"
ERROR = "error.txt"
EVAL_SETTINGS = ("localized", "nonlocalized", "both")
SELECT_METRICS = ("margin", "p_correct", "accuracy")


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial depends on; its hash names the trial folder."""

    method: str
    country: str
    setting: str
    lr: float | None
    seed: int
    epochs: int = 20
    batch_size: int = 4
    warmup_steps: int = 100
    beta: float = 0.1
    eval_every: int = 0
    max_pairs: int | None = None
    rejected: str | None = None  # None: the preset's
    multipliers: tuple[float, ...] = (1.0,)
    max_eval_items: int | None = None  # per split and country
    test_fraction: float = DEFAULT_TEST_FRACTION
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = 0
    data: str | None = None

    @property
    def name(self) -> str:
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.method}-{self.country}-{self.setting}{lr}-s{self.seed}-{digest[:8]}"


@dataclass(frozen=True)
class SweepGrid:
    """Methods × countries × settings × learning rates × seeds; λ (``multipliers``) is swept at
    evaluation, so every trial scores its vector at each λ without retraining. The remaining
    fields are shared by all trials."""

    methods: tuple[str, ...] = ("bipo", "yapo", "sae-dense")
    countries: tuple[str, ...] = ("egypt",)
    settings: tuple[str, ...] = ("localized",)
    lrs: tuple[float, ...] = (0.5,)
    seeds: tuple[int, ...] = (0, 1, 2)
    shared: dict[str, Any] = field(default_factory=dict)  # TrialSpec fields

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r}; use {', '.join(METHODS)}")
        for name in ("methods", "countries", "settings", "lrs", "seeds"):
            if not getattr(self, name):
                raise UserError(f"the grid needs at least one of {name}")
        if any(lr <= 0 for lr in self.lrs):
            raise UserError(f"learning rates must be positive, got {list(self.lrs)}")
        bad = [setting for setting in self.settings if setting not in EVAL_SETTINGS]
        if bad:
            raise UserError(f"unknown setting {bad[0]!r}; use {', '.join(EVAL_SETTINGS)}")

    def trials(self) -> list[TrialSpec]:
        """Every trial of the grid, in a fixed order (mean-difference methods once per country
        and setting)."""
        trials = []
        for method in self.methods:
            for country in self.countries:
                for setting in self.settings:
                    if method in MEAN_METHODS:
                        trials.append(TrialSpec(method, country, setting, None, 0,
                                                **self.shared))
                        continue
                    for lr in self.lrs:
                        for seed in self.seeds:
                            trials.append(TrialSpec(method, country, setting, float(lr),
                                                    int(seed), **self.shared))
        return trials


# --------------------------------------------------------------------------------------------
# The model a worker runs on
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSetup:
    """How a worker gets its model and SAE: the preset (and ``--model``/``--layer``), or
    ``factory``, ``"module:function"`` returning ``(model, sae, sae_info)`` for a layer (or
    ``None``) — e.g. ``yapo_interp.testing:tiny_sweep_setup`` for tests. Loaded once per worker
    process and kept."""

    preset: str = "embedded"
    model: str | None = None
    layer: int | None = None
    device: str = "cpu"
    factory: str | None = None

    def load(self) -> tuple[Any, Any, dict[str, Any] | None, int]:
        """``(model, sae, sae_info, layer)``, from this process's cache after the first call
        (keyed by the settings' values, so a copy of this setup unpickled for the next task
        finds it)."""
        key = tuple(sorted(asdict(self).items()))
        if key not in _LOADED:
            _LOADED.clear()  # one model per worker process
            _LOADED[key] = self._load()
        return _LOADED[key]

    def _load(self) -> tuple[Any, Any, dict[str, Any] | None, int]:
        from yapo_interp.steering import sae_layer_of

        if self.factory:
            module, _, name = self.factory.partition(":")
            build = getattr(importlib.import_module(module), name)
            model, sae, sae_info = build(self.layer)
            layer = self.layer if self.layer is not None else sae_layer_of(sae)
            return model, sae, sae_info, int(layer)
        from yapo_interp.models import SHIPPED_SAE_DIR, get_preset, load_model, load_sae

        preset = get_preset(self.preset)
        layer = self.layer if self.layer is not None else preset.layer
        model = load_model(self.model or preset.model, device=self.device)
        release, sae_id = preset.sae_for_layer(layer)
        sae = load_sae(release, sae_id, layer=layer, model=model, device=self.device)
        path = SHIPPED_SAE_DIR / f"layer_{layer}" if release == "embedded" else None
        return model, sae, {"release": release, "id": sae_id,
                            "path": str(path) if path else None}, layer


_LOADED: dict[tuple, tuple[Any, Any, dict[str, Any] | None, int]] = {}


# --------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------


def _summary_rows(frame: Any, split: str) -> list[dict[str, Any]]:
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


def run_trial(spec: TrialSpec, setup: ModelSetup, trial_dir: str | Path, *,
              threads: int = 1) -> dict[str, Any]:
    """Train ``spec``'s vector and score it at every λ on the validation and test questions;
    write ``instances.parquet`` and, last, ``result.json``; return the result."""
    import pandas as pd
    import torch

    from yapo_interp import data
    from yapo_interp.cli import set_seed
    from yapo_interp.evaluate import EvalConfig, check_unseen, evaluate_mcq, make_conditions
    from yapo_interp.io import read_jsonl, write_json, write_table
    from yapo_interp.models import get_preset
    from yapo_interp.objective import PreferenceObjective
    from yapo_interp.train import (DataSelection, TrainConfig, build_pairs, evaluate_loss,
                                   select_items, train_steering_vector)

    started = time.time()
    torch.set_num_threads(max(1, threads))
    trial_dir = Path(trial_dir)
    preset = get_preset(setup.preset)
    model, sae, sae_info, layer = setup.load()
    set_seed(spec.seed)
    selection = DataSelection(
        country=spec.country, setting=spec.setting, rejected=spec.rejected or preset.rejected,
        style=preset.prompt_style, response_format=preset.response_format,
        test_fraction=spec.test_fraction, validation_fraction=spec.validation_fraction,
        split_seed=spec.split_seed, max_pairs=spec.max_pairs, data=spec.data)
    fit_items, validation_items, info = select_items(selection)
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
    records = read_jsonl(trial_dir / "train" / "log.jsonl") if (
        trial_dir / "train" / "log.jsonl").is_file() else []
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

    items = data.load_cultural(spec.data, countries=[info["country"]])
    _, test_items = data.split_items(items, test_fraction=spec.test_fraction,
                                     seed=spec.split_seed)
    conditions = make_conditions([(vector, used_sae, str(trial_dir))], spec.multipliers,
                                 include_baseline=False)
    eval_config = EvalConfig(mode="loglik", style=preset.prompt_style, n_bootstrap=0)
    frames, rows = [], []
    for split, split_items in (("validation", validation_items), ("test", test_items)):
        if spec.max_eval_items is not None:
            split_items = split_items[: spec.max_eval_items]
        if not split_items:
            continue
        if split == "test":  # no test question reached the vector, its tuning or its SAE
            check_unseen(vector, str(trial_dir), split_items, sae=used_sae)
        frame = evaluate_mcq(model, split_items, conditions, eval_config, progress=False)
        frame.insert(0, "split", split)
        frames.append(frame)
        rows += _summary_rows(frame, split)
    trained = {"final_eval_loss": final_loss, "best_eval_loss": best_loss,
               "steps": len(steps), "n_train_pairs": len(train_pairs),
               "n_validation_pairs": len(validation_pairs), "layer": layer,
               "final_perturbation": steps[-1].get("perturbation") if steps else None,
               "vector_norm": float(vector.vector.norm())}
    settings = asdict(spec)
    if frames:
        instances = pd.concat(frames, ignore_index=True)
        for key, value in reversed(list(settings.items())):
            if key not in instances:
                instances.insert(0, key, json.dumps(value) if isinstance(value, tuple) else value)
        write_table(trial_dir / "instances.parquet", instances)
    model_name = model.cfg.model_name
    result = {"spec": settings, "name": spec.name, "status": "ok", "setup": {
                  "preset": setup.preset, "model": model_name, "factory": setup.factory,
                  "device": setup.device}, "trained": trained,
              "rows": rows, "seconds": time.time() - started}
    write_json(trial_dir / RESULT, result)
    return result


def _trial_task(spec: TrialSpec, setup: ModelSetup, trial_dir: str, threads: int
                ) -> dict[str, Any]:
    """The Ray task: ``run_trial``, with the traceback saved beside the trial when it raises."""
    try:
        return run_trial(spec, setup, trial_dir, threads=threads)
    except BaseException:
        Path(trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(trial_dir) / ERROR).write_text(traceback.format_exc(), encoding="utf-8")
        raise


def finished_result(spec: TrialSpec, trial_dir: Path) -> dict[str, Any] | None:
    """The result of a trial that already finished with exactly these settings, else None."""
    marker = trial_dir / RESULT
    if not marker.is_file():
        return None
    try:
        result = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    spec_json = json.loads(json.dumps(asdict(spec)))
    return result if result.get("spec") == spec_json else None


# --------------------------------------------------------------------------------------------
# Running the grid on Ray
# --------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What ``run_sweep`` did: counts, the tidy table and the files written."""

    ran: int
    skipped: int
    failed: list[dict[str, Any]]
    table: Any  # pandas DataFrame
    selection: dict[str, Any]
    files: dict[str, Path]


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def run_sweep(grid: SweepGrid, out: str | Path, *, setup: ModelSetup = ModelSetup(),
              workers: int | None = None, address: str | None = None, threads: int = 1,
              gpus_per_trial: float = 0, loss_threshold: float = 0.1,
              select_metric: str = "margin", min_seeds: int = 3,
              progress: bool = True) -> SweepResult:
    """Run every unfinished trial of ``grid`` as a Ray task, then gather and select.

    Uses the running Ray instance if there is one (``ray.init`` was called), else connects to
    ``address``, else starts a local one with ``workers`` CPUs (default: all) and shuts it down
    afterwards. A trial that raises is reported and left unfinished (rerun next time)."""
    out = Path(out)
    trials = grid.trials()
    todo, skipped = [], 0
    for spec in trials:
        if finished_result(spec, out / "trials" / spec.name) is None:
            todo.append(spec)
        else:
            skipped += 1
    failed: list[dict[str, Any]] = []
    if todo:
        import ray
        from tqdm.auto import tqdm

        started_here = not ray.is_initialized()
        if started_here:
            if address:
                ray.init(address=address)
            else:
                ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False)
        try:
            task = ray.remote(num_cpus=1, num_gpus=gpus_per_trial, max_retries=0)(_trial_task)
            pending = {task.remote(spec, setup, str(out / "trials" / spec.name), threads): spec
                       for spec in todo}
            waiting = list(pending)
            with tqdm(total=len(trials), initial=skipped, desc="trials", unit="trial",
                      disable=not progress) as bar:
                while waiting:
                    ready, waiting = ray.wait(waiting, num_returns=1)
                    spec = pending[ready[0]]
                    try:
                        ray.get(ready[0])
                    except Exception as error:  # RayTaskError: the trial raised
                        reason = _first_line(error)
                        failed.append({**asdict(spec), "name": spec.name, "error": reason})
                        print(f"[sweep] trial {spec.name} failed: {reason} (traceback in "
                              f"{out / 'trials' / spec.name / ERROR})", file=sys.stderr)
                    bar.update(1)
        finally:
            if started_here:
                ray.shutdown()
    table, files = gather(out, trials, failed=failed, loss_threshold=loss_threshold)
    selection = select_settings(table, metric=select_metric, min_seeds=min_seeds)
    from yapo_interp.io import write_json

    files["selection"] = write_json(out / "selection.json", selection)
    if "instances" in files:
        import pandas as pd

        from yapo_interp.io import write_table

        differences = method_differences(pd.read_parquet(files["instances"]), selection)
        if not differences.empty:
            files["differences"] = write_table(out / "differences.csv", differences)
    if not table.empty:
        import pandas as pd

        from yapo_interp.style import save_figure

        curves = pd.read_parquet(files["curves"]) if "curves" in files else None
        for name, figure in sweep_figures(curves, table, selection).items():
            files[name] = save_figure(figure, out / "figures" / f"{name}.html",
                                      image_formats=())[0]
    return SweepResult(ran=len(todo) - len(failed), skipped=skipped, failed=failed,
                       table=table, selection=selection, files=files)


# --------------------------------------------------------------------------------------------
# Gathering and selecting
# --------------------------------------------------------------------------------------------


def gather(out: str | Path, trials: Sequence[TrialSpec], *,
           failed: Sequence[dict[str, Any]] = (), loss_threshold: float = 0.1
           ) -> tuple[Any, dict[str, Path]]:
    """One tidy table of the finished trials (a row per trial × split × λ × form, with every
    setting), written as parquet and CSV with the curves, instances, convergence and failures."""
    import pandas as pd

    from yapo_interp.io import read_jsonl, write_table
    from yapo_interp.metrics import first_step_below

    out = Path(out)
    rows, curves, instances = [], [], []
    for spec in trials:
        trial_dir = out / "trials" / spec.name
        result = finished_result(spec, trial_dir)
        if result is None:
            continue
        settings = {**asdict(spec), "multipliers": json.dumps(list(spec.multipliers)),
                    "trial": spec.name}
        log = trial_dir / "train" / "log.jsonl"
        records = read_jsonl(log) if log.is_file() else []
        evals = [r for r in records if "eval_loss" in r]
        reached = first_step_below([r["step"] for r in evals], [r["eval_loss"] for r in evals],
                                   loss_threshold) if evals else math.nan
        trained = {**result.get("setup", {}), **result["trained"],
                   "steps_to_threshold": reached,
                   "loss_threshold": loss_threshold, "seconds": result["seconds"]}
        for row in result["rows"]:
            rows.append({**{k: v for k, v in settings.items() if k != "multipliers"},
                         **row, **trained, "multipliers": settings["multipliers"]})
        curves += [{"trial": spec.name, "method": spec.method, "country": spec.country,
                    "setting": spec.setting, "lr": spec.lr, "seed": spec.seed, **record}
                   for record in records]
        if (trial_dir / "instances.parquet").is_file():
            instances.append(pd.read_parquet(trial_dir / "instances.parquet").assign(
                trial=spec.name))
    table = pd.DataFrame(rows)
    files = {"results": write_table(out / "results.parquet", table),
             "results_csv": write_table(out / "results.csv", table)}
    if curves:
        frame = pd.DataFrame(curves)
        if "direction" in frame:  # an int, or a list with gradient accumulation
            frame["direction"] = frame["direction"].map(json.dumps)
        files["curves"] = write_table(out / "curves.parquet", frame)
    if instances:
        files["instances"] = write_table(out / "instances.parquet",
                                         pd.concat(instances, ignore_index=True))
    failures = pd.DataFrame([{**item, "multipliers": json.dumps(list(item["multipliers"]))}
                             for item in failed])
    files["failures"] = write_table(out / "failures.csv", failures if failed else pd.DataFrame(
        columns=["name", "method", "country", "setting", "lr", "seed", "error"]))
    convergence = convergence_table(table)
    if not convergence.empty:
        files["convergence"] = write_table(out / "convergence.csv", convergence)
    return table, files


def convergence_table(table: Any) -> Any:
    """Steps to the validation-loss threshold per (method, lr, country, setting): the median
    over seeds with a bootstrap CI over seeds (``inf``: never reached)."""
    import pandas as pd

    from yapo_interp.metrics import steps_to_threshold_ci

    if table.empty or "steps_to_threshold" not in table:
        return pd.DataFrame()
    trials = table.drop_duplicates("trial").dropna(subset=["steps_to_threshold"])
    rows = []
    for keys, group in trials.groupby(["method", "lr", "country", "setting"], dropna=False,
                                      sort=True):
        interval = steps_to_threshold_ci(group["steps_to_threshold"].to_numpy(float))
        rows.append({**dict(zip(["method", "lr", "country", "setting"], keys)),
                     "loss_threshold": float(group["loss_threshold"].iloc[0]),
                     "median_steps": interval.value, "ci_low": interval.low,
                     "ci_high": interval.high, "n_seeds": interval.n,
                     "n_reached": int((group["steps_to_threshold"] < math.inf).sum())})
    return pd.DataFrame(rows)


def select_settings(table: Any, *, metric: str = "margin", min_seeds: int = 3
                    ) -> dict[str, Any]:
    """Per method: the lr with the lowest mean final validation loss over its trials (seeds,
    countries, settings), then the λ with the highest mean validation ``metric`` at that lr,
    on the trial's own setting. Only validation data is read: test rows never choose."""
    if metric not in SELECT_METRICS:
        raise UserError(f"unknown selection metric {metric!r}; use {', '.join(SELECT_METRICS)}")
    selection: dict[str, Any] = {"metric": metric, "min_seeds": min_seeds, "methods": {}}
    if table.empty:
        return selection
    for method, rows in table.groupby("method", sort=True):
        trials = rows.drop_duplicates("trial")
        chosen: dict[str, Any] = {}
        at_lr = rows
        if method in MEAN_METHODS:  # nothing to choose: no learning rate
            chosen.update(lr=None, validation_loss=float(trials["final_eval_loss"].mean()))
        else:
            by_lr = trials.groupby("lr").agg(validation_loss=("final_eval_loss", "mean"),
                                             n_seeds=("seed", "nunique"))
            finite = by_lr.dropna(subset=["validation_loss"])
            if not finite.empty:
                lr = float(finite["validation_loss"].idxmin())
                chosen.update(lr=lr, validation_loss=float(finite.loc[lr, "validation_loss"]),
                              n_seeds=int(finite.loc[lr, "n_seeds"]),
                              validation_loss_by_lr={f"{key:g}": float(value) for key, value
                                                     in by_lr["validation_loss"].items()})
                at_lr = rows[rows["lr"] == lr]
        validation = at_lr[(at_lr["split"] == "validation")
                           & (at_lr["eval_setting"] == at_lr["setting"])]
        if not validation.empty:
            by_multiplier = validation.groupby("multiplier")[metric].mean()
            chosen.update(multiplier=float(by_multiplier.idxmax()),
                          **{f"validation_{metric}": float(by_multiplier.max()),
                             f"validation_{metric}_by_multiplier": {
                                 f"{key:g}": float(value) for key, value in
                                 by_multiplier.items()}})
        if method not in MEAN_METHODS and chosen.get("n_seeds", 0) < min_seeds:
            chosen["note"] = (f"only {chosen.get('n_seeds', 0)} seed(s) at the chosen lr; "
                              f"use at least {min_seeds} (--seeds) before relying on it")
        selection["methods"][method] = chosen
    return selection


def read_selection(path: str | Path) -> dict[str, dict[str, float | None]]:
    """``{method: {"lr": ..., "multiplier": ...}}`` from a sweep's ``selection.json`` (or its
    folder), for a study to train and evaluate each method at its selected values; a missing or
    unreadable file is a one-line ``UserError``."""
    path = Path(path)
    if path.is_dir():
        path = path / "selection.json"
    try:
        selection = json.loads(path.read_text(encoding="utf-8"))
        methods = selection["methods"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a sweep selection ({type(error).__name__}: {error}); run "
                        "python -m yapo_interp.sweep first and pass its --out folder.") from None
    return {method: {"lr": chosen.get("lr"), "multiplier": chosen.get("multiplier")}
            for method, chosen in methods.items()}


DIFFERENCE_METRICS = {"margin": "margin", "p_correct": "p_correct", "accuracy": "score"}


def method_differences(instances: Any, selection: dict[str, Any], *, split: str = "test",
                       n_resamples: int = 2000, seed: int = 0) -> Any:
    """Every method-minus-method difference on ``split`` with each method at its selected lr
    and λ: per instance (item and form) the metric is averaged over seeds, then
    ``metrics.paired_difference_ci`` pairs the two methods on the instances both scored and
    resamples questions. One row per (country — and ``all``, countries pooled —, training
    setting, metric, method pair)."""
    import pandas as pd

    from yapo_interp.metrics import paired_difference_ci

    chosen = selection.get("methods", {})
    keys = ["country", "setting", "item_id", "form"]
    per_method = {}
    for method, picked in chosen.items():
        if "multiplier" not in picked:
            continue
        rows = instances[(instances["split"] == split) & (instances["method"] == method)
                         & (instances["multiplier"] == picked["multiplier"])]
        if picked.get("lr") is not None:
            rows = rows[rows["lr"] == picked["lr"]]
        if not rows.empty:
            per_method[method] = rows.groupby(keys + ["question_id"], as_index=False)[
                list(DIFFERENCE_METRICS.values())].mean()
    results = []
    methods = sorted(per_method)
    for index, first in enumerate(methods):
        for second in methods[index + 1:]:
            joined = per_method[first].merge(per_method[second], on=keys + ["question_id"],
                                             suffixes=("_a", "_b"))
            groups = [((country, setting), part) for (country, setting), part in
                      joined.groupby(["country", "setting"], sort=True)]
            groups += [(("all", setting), part) for setting, part in
                       joined.groupby("setting", sort=True)]
            for (country, setting), part in groups:
                clusters = part["country"].astype(str) + "/" + part["question_id"].astype(str)
                for name, column in DIFFERENCE_METRICS.items():
                    pair = part[[f"{column}_a", f"{column}_b"]].dropna()
                    if pair.empty:
                        continue
                    interval = paired_difference_ci(
                        pair[f"{column}_a"], pair[f"{column}_b"], clusters[pair.index],
                        n_resamples=n_resamples, seed=seed)
                    results.append({
                        "split": split, "country": country, "setting": setting,
                        "metric": name, "method_a": first, "method_b": second,
                        "difference": interval.value, "ci_low": interval.low,
                        "ci_high": interval.high, "n_questions": interval.n,
                        "n_instances": len(pair),
                        "lr_a": chosen[first].get("lr"), "lr_b": chosen[second].get("lr"),
                        "multiplier_a": chosen[first]["multiplier"],
                        "multiplier_b": chosen[second]["multiplier"]})
    return pd.DataFrame(results)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _at_selected_lr(frame: Any, selection: dict[str, Any]) -> Any:
    """Rows of each method at its selected lr (all rows of a method without one)."""
    keep = []
    for method, rows in frame.groupby("method", sort=True):
        lr = selection.get("methods", {}).get(method, {}).get("lr")
        keep.append(rows if lr is None else rows[rows["lr"] == lr])
    return keep


def sweep_figures(curves: Any, table: Any, selection: dict[str, Any]) -> dict[str, Any]:
    """Plotly figures of a sweep, each method at its selected lr, averaged over its trials:
    ``loss_vs_perturbation`` — training loss against step and against the perturbation
    ``‖Φ(h) − h‖`` of the same steps (is a method fast, or does it only move further?);
    ``score_vs_lambda`` — validation and test margin against λ (the λ choice, AxBench-style)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from yapo_interp.style import METHOD_LABELS, method_color

    figures = {}
    if curves is not None and not curves.empty and "perturbation" in curves:
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[
            "loss against step", "loss against perturbation ‖Φ(h) − h‖"])
        for rows in _at_selected_lr(curves.dropna(subset=["train_loss"]), selection):
            if rows.empty:
                continue
            method = rows["method"].iloc[0]
            mean = rows.groupby("step")[["train_loss", "perturbation"]].mean().reset_index()
            style = dict(color=method_color(method), width=1.8)
            label = METHOD_LABELS.get(method, method)
            figure.add_trace(go.Scatter(x=mean["step"], y=mean["train_loss"], mode="lines",
                                        name=label, line=style, legendgroup=method),
                             row=1, col=1)
            figure.add_trace(go.Scatter(x=mean["perturbation"], y=mean["train_loss"],
                                        mode="lines+markers", name=label, line=style,
                                        marker=dict(size=4), legendgroup=method,
                                        showlegend=False), row=1, col=2)
        figure.update_xaxes(title_text="optimiser step", row=1, col=1)
        figure.update_xaxes(title_text="mean ‖Φ(h) − h‖ per token", row=1, col=2)
        figure.update_yaxes(title_text="training loss (mean over trials)", row=1, col=1)
        figure.update_layout(title="Convergence at each method's selected learning rate",
                             height=460, width=1100)
        figures["loss_vs_perturbation"] = figure
    if table is not None and not table.empty:
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                               subplot_titles=["validation (chooses λ)", "test (reported)"])
        own_setting = table[table["eval_setting"] == table["setting"]]
        for rows in _at_selected_lr(own_setting, selection):
            if rows.empty:
                continue
            method = rows["method"].iloc[0]
            for column, split in enumerate(("validation", "test"), start=1):
                mean = rows[rows["split"] == split].groupby("multiplier")["margin"].mean()
                figure.add_trace(go.Scatter(
                    x=mean.index, y=mean.values, mode="lines+markers",
                    name=METHOD_LABELS.get(method, method), legendgroup=method,
                    showlegend=column == 1, line=dict(color=method_color(method), width=1.8)),
                    row=1, col=column)
                figure.update_xaxes(title_text="λ (steering strength)", row=1, col=column)
        figure.update_yaxes(title_text="margin of the correct option (log-odds)", row=1, col=1)
        figure.update_layout(title="Score against λ at each method's selected learning rate",
                             height=460, width=1100)
        figures["score_vs_lambda"] = figure
    return figures


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


# 12 trials. Measured on the embedded model, 1 worker, on a 2-core CPU shared with two other
# jobs: ~200-235 s per trial of this size (about half of it the log-likelihood MCQ scoring), the
# model loaded once per worker; on an idle 2-core machine the 10-minute target is not yet shown.
QUICK = dict(methods=("bipo", "yapo", "sae-dense"), countries=("egypt",),
             settings=("localized",), lrs=(0.1, 1.0), seeds=(0, 1), multipliers=(1.0, 2.0),
             epochs=2, max_pairs=8, max_eval_items=2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.sweep",
        description="A grid of steering-vector trainings and their validation/test evaluations "
                    "on Ray; per-method lr and λ selection on the validation split.")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                      help="default: bipo yapo sae-dense")
    grid.add_argument("--countries", nargs="+", default=None, help="default: egypt")
    grid.add_argument("--settings", nargs="+", choices=EVAL_SETTINGS, default=None,
                      help="training prompt settings (default: localized)")
    grid.add_argument("--lrs", nargs="+", type=float, default=None,
                      help="learning rates (default: the preset's)")
    grid.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    grid.add_argument("--multipliers", nargs="+", type=float, default=None,
                      help="λ values scored on validation and test (default: 1)")
    shared = parser.add_argument_group("every trial")
    shared.add_argument("--epochs", type=int, default=None, help="default: 20")
    shared.add_argument("--batch-size", type=int, default=4)
    shared.add_argument("--warmup-steps", type=int, default=100)
    shared.add_argument("--beta", type=float, default=0.1)
    shared.add_argument("--eval-every", type=int, default=0,
                        help="validation loss every N steps (default 0: after every epoch)")
    shared.add_argument("--max-pairs", type=int, default=None,
                        help="training pairs per trial, whole questions (quick runs)")
    shared.add_argument("--max-eval-items", type=int, default=None,
                        help="items scored per split (quick runs)")
    shared.add_argument("--rejected", choices=REJECTED, default=None,
                        help="dispreferred responses (default: the preset's)")
    shared.add_argument("--data", type=Path, default=None,
                        help="cultural dataset file/folder (default: the shipped data)")
    shared.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    shared.add_argument("--validation-fraction", type=float,
                        default=DEFAULT_VALIDATION_FRACTION)
    shared.add_argument("--split-seed", type=int, default=0)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="embedded")
    model.add_argument("--model", default=None, help="override the preset's model")
    model.add_argument("--layer", type=int, default=None, help="default: the preset's")
    model.add_argument("--device", default="cpu")
    model.add_argument("--model-factory", default=None,
                       help="MODULE:FUNCTION returning (model, sae, sae_info) for a layer, "
                            "instead of the preset (tests: yapo_interp.testing:tiny_sweep_setup)")
    run = parser.add_argument_group("running")
    run.add_argument("--workers", type=int, default=None,
                     help="CPUs of the local Ray instance = trials at once (default: all)")
    run.add_argument("--address", default=None,
                     help="an existing Ray cluster (e.g. HEAD:6379; see the Slurm recipe)")
    run.add_argument("--threads", type=int, default=1, help="torch threads per trial (1)")
    run.add_argument("--gpus-per-trial", type=float, default=0)
    run.add_argument("--loss-threshold", type=float, default=0.1,
                     help="validation loss for steps-to-threshold (default 0.1, figure 2)")
    run.add_argument("--select-metric", choices=SELECT_METRICS, default="margin",
                     help="validation metric that picks λ (default: margin)")
    run.add_argument("--min-seeds", type=int, default=3)
    run.add_argument("--quick", action="store_true",
                     help="a small grid for a CPU: " + ", ".join(
                         f"{key}={value}" for key, value in QUICK.items()))
    run.add_argument("--out", type=Path, default=Path("runs/sweep"))
    return parser


def grid_from_args(args: argparse.Namespace) -> SweepGrid:
    """The grid of a command line: flags, else ``--quick``'s values, else the defaults."""
    from yapo_interp.models import get_preset

    quick = QUICK if args.quick else {}

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return tuple(value) if isinstance(value, list) else (
            value if value is not None else quick.get(name, default))

    for name in ("epochs", "batch_size", "max_pairs", "max_eval_items", "workers", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    shared = dict(epochs=pick("epochs", 20), batch_size=args.batch_size,
                  warmup_steps=args.warmup_steps, beta=args.beta, eval_every=args.eval_every,
                  max_pairs=pick("max_pairs", None), rejected=args.rejected,
                  multipliers=tuple(float(m) for m in pick("multipliers", (1.0,))),
                  max_eval_items=pick("max_eval_items", None),
                  test_fraction=args.test_fraction,
                  validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                  data=str(args.data) if args.data else None)
    return SweepGrid(methods=pick("methods", ("bipo", "yapo", "sae-dense")),
                     countries=pick("countries", ("egypt",)),
                     settings=pick("settings", ("localized",)),
                     lrs=pick("lrs", (get_preset(args.preset).lr,)),
                     seeds=pick("seeds", (0, 1, 2)), shared=shared)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from yapo_interp.cli import check_device, check_layers, check_sae_available, check_writable
    from yapo_interp.data import load_cultural, resolve_countries
    from yapo_interp.models import PRESETS, get_preset

    if args.preset not in PRESETS:
        raise UserError(f"--preset {args.preset!r}: use one of {', '.join(sorted(PRESETS))}")
    grid = grid_from_args(args)
    check_device(args.device)
    check_writable(args.out)
    if not args.model_factory:  # the layer and its SAE, before any worker loads the model
        preset = get_preset(args.preset)
        layer = args.layer if args.layer is not None else preset.layer
        check_layers(args.model or preset.model, [layer])
        check_sae_available(preset.sae_for_layer(layer)[0], layer)
    resolve_countries(list(grid.countries))  # unknown names fail here, before Ray starts
    load_cultural(args.data, countries=list(grid.countries))
    setup = ModelSetup(preset=args.preset, model=args.model, layer=args.layer,
                       device=args.device, factory=args.model_factory)
    trials = grid.trials()
    print(f"[sweep] {len(trials)} trials -> {args.out}", file=sys.stderr)
    result = run_sweep(grid, args.out, setup=setup, workers=args.workers, address=args.address,
                       threads=args.threads, gpus_per_trial=args.gpus_per_trial,
                       loss_threshold=args.loss_threshold, select_metric=args.select_metric,
                       min_seeds=args.min_seeds)
    print(f"[sweep] {result.ran} ran, {result.skipped} skipped (finished before), "
          f"{len(result.failed)} failed; table {result.files['results']}, selection "
          f"{result.files['selection']}")
    for method, chosen in result.selection["methods"].items():
        print(f"[sweep] {method}: lr {chosen.get('lr')}, λ {chosen.get('multiplier')}"
              + (f" ({chosen['note']})" if "note" in chosen else ""))
    return 1 if result.failed else 0


if __name__ == "__main__":
    # run the importable module's main, not this __main__ copy: Ray pickles functions and classes
    # of an importable module by reference, so a worker keeps its loaded model between trials
    # (those of __main__ would travel by value, each task with a fresh, empty model cache)
    from yapo_interp import sweep

    run_cli(sweep.main)
