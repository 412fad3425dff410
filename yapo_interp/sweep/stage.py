"""Running a sweep: every unfinished trial of the grid as a Ray task, then the tidy table, the
selection, the differences and the figures (:func:`run_sweep`). A notebook runs a sweep
without an argv::

    config = SweepConfig(grid=SweepGrid(methods=("bipo", "yapo"), lrs=(0.1, 1.0)))
    result = run_sweep(config, "runs/sweep")
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from yapo_interp.errors import UserError
from yapo_interp.figures import sweep_figures
from yapo_interp.io import run_info, write_json, write_table
from yapo_interp.style import save_figure
from yapo_interp.sweep.config import SweepConfig
from yapo_interp.sweep.gather import gather, method_differences, select_settings
from yapo_interp.sweep.grid import ERROR, SweepGrid
from yapo_interp.sweep.report import write_report
from yapo_interp.sweep.trial import finished_result, trained_result, trial_task

try:  # an optional dependency: pip install -e ".[sweep]"
    import ray
except ImportError:  # pragma: no cover - the test environment has it
    ray = None


@dataclass
class SweepResult:
    """What ``run_sweep`` did: counts, the tidy table and the files written."""

    ran: int
    skipped: int
    rescored: int  # of those that ran: finished vectors scored at the λ they lacked
    failed: list[dict[str, Any]]
    table: pd.DataFrame
    selection: dict[str, Any]
    files: dict[str, Path]


def _first_line(error: BaseException) -> str:
    """The exception a Ray task raised, in one line: its type and the last line of its text."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def connect_ray(address: str, *, timeout: float = 5.0) -> None:
    """Connect to the Ray cluster at ``address``, or say in one line why not.

    A ``host:port`` that nothing answers is caught before ``ray.init``, which would wait on it
    for minutes; a cluster that refuses this process's token (Ray starts clusters with token
    authentication once a token exists) gets the settings it needs."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as error:
            raise UserError(f"--address {address}: no Ray cluster answers there "
                            f"({error.strerror or error}); start one with `ray start --head "
                            f"--port {port}`, or pass the address `ray status` prints on its "
                            "head") from None
    try:
        ray.init(address=address)
    except ConnectionError as error:
        causes, cause = [], error
        while cause is not None:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        if any(isinstance(cause, ray.exceptions.AuthenticationError)
               or "auth" in str(cause).lower() for cause in causes):
            raise UserError(f"--address {address}: the Ray cluster refused this process's "
                            "token; set RAY_AUTH_MODE=token and make the cluster's token "
                            "readable here (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or "
                            "RAY_AUTH_TOKEN)") from None
        raise UserError(f"--address {address}: cannot connect to the Ray cluster "
                        f"({_first_line(error)}); check it with `ray status --address "
                        f"{address}`") from None


def run_sweep(config: SweepConfig | SweepGrid, out: str | Path, *, progress: bool = True,
              run_trials: bool = True, **options: Any) -> SweepResult:
    """Run every unfinished trial of ``config.grid`` as a Ray task, then gather and select.

    ``config`` is a :class:`~yapo_interp.sweep.config.SweepConfig`, or a grid with the other
    fields of the config as keywords (``run_sweep(grid, out, setup=..., workers=2)``). Uses the
    running Ray instance if there is one (``ray.init`` was called), else connects to
    ``config.address``, else starts a local one with ``config.workers`` CPUs (default: all) and
    shuts it down afterwards. A trial that raises is reported and left unfinished (rerun next
    time). A trial that finished at other λ is not retrained: its vector is scored at the λ
    it lacks. ``run_trials=False`` runs nothing: it gathers, selects and reports the trials of
    the grid that already finished (a sweep part-way, or redrawn)."""
    if isinstance(config, SweepGrid):
        config = SweepConfig(grid=config, **options)
    elif options:
        raise TypeError(f"run_sweep: {', '.join(options)} given with a SweepConfig (set them "
                        "in the config)")
    out = Path(out)
    trials = config.grid.trials()
    todo, skipped = [], 0
    for spec in trials:
        if finished_result(spec, out / "trials" / spec.name) is None:
            todo.append(spec)
        else:
            skipped += 1
    if not run_trials:
        todo = []
    rescoring = {spec.name for spec in todo
                 if trained_result(spec, out / "trials" / spec.name) is not None}
    failed: list[dict[str, Any]] = []
    if todo:
        if ray is None:
            raise UserError("python -m yapo_interp.sweep runs its trials on Ray: pip install -e "
                            "\".[sweep]\"")
        started_here = not ray.is_initialized()
        if started_here:
            if config.address:
                connect_ray(config.address)
            else:
                # "local": its own instance even where a `ray start` cluster runs (which a
                # bare ray.init would join, and refuse num_cpus for)
                ray.init(address="local", num_cpus=config.workers or os.cpu_count(),
                         include_dashboard=False)
        try:
            task = ray.remote(num_cpus=1, num_gpus=config.gpus_per_trial, max_retries=0)(trial_task)
            pending = {task.remote(spec, config.setup, str(out / "trials" / spec.name),
                                   config.threads): spec
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
    table, files = gather(out, trials, failed=failed, loss_threshold=config.loss_threshold)
    files["sweep"] = write_json(out / "sweep.json", {
        **run_info(asdict(config)), "trials": len(trials),
        "finished": int(table["trial"].nunique()) if not table.empty else 0})
    selection = select_settings(table, metric=config.select_metric,
                                min_seeds=config.min_seeds)
    files["selection"] = write_json(out / "selection.json", selection)
    instances = pd.read_parquet(files["instances"]) if "instances" in files else None
    curves = pd.read_parquet(files["curves"]) if "curves" in files else None
    differences = None
    if instances is not None:
        differences = method_differences(instances, selection)
        if not differences.empty:
            files["differences"] = write_table(out / "differences.csv", differences)
    if not table.empty:
        for name, figure in sweep_figures(curves, table, selection).items():
            files[name] = save_figure(figure, out / "figures" / f"{name}.html",
                                      image_formats=config.image_formats)[0]
        files.update(write_report(out, table, curves, instances, selection, differences,
                                  image_formats=config.image_formats))
    failed_names = {item["name"] for item in failed}
    return SweepResult(ran=len(todo) - len(failed), skipped=skipped,
                       rescored=len(rescoring - failed_names), failed=failed,
                       table=table, selection=selection, files=files)
