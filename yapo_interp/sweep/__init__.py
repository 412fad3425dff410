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
have no learning rate or seed: they get one trial per (country, setting); the unsteered model
gets one ``baseline`` trial per country (scored as λ = 0; ``--no-baseline`` skips it). Trials run
baselines and CAA/SAS first, then seed by seed and lr by lr, every method: a sweep stopped
part-way holds whole (seed, lr) slices of all methods, and ``--report-only`` reports them.

**Outputs** in ``--out``:

* ``trials/NAME-HASH/`` — one folder per trial: ``train/`` (the training run), ``instances.parquet``
  (every scored instance), ``result.json`` (written last: the marker of a finished trial; a rerun
  skips trials whose marker holds the same settings) or ``error.txt`` (the traceback of a failed
  one, retried on the next run). λ is not in the hash, which names what a vector was trained
  with: a rerun with a wider ``--multipliers`` grid scores each finished vector at the λ it
  lacks, without retraining, and a report over a narrower grid reads only its own λ.
* ``results.parquet`` / ``results.csv`` — the tidy table: one row per trial × split × λ × form
  with every setting of the trial; ``instances.parquet`` — all instance rows (for paired
  differences, ``evaluate.paired_differences``); ``curves.parquet`` — every log record of every
  trial (loss, validation loss, perturbation against step); ``failures.csv``;
  ``figures/loss_vs_perturbation.html`` and ``figures/score_vs_lambda.html``
  (:func:`yapo_interp.figures.sweep_figures`).
* ``differences.csv`` — every method-minus-method difference of margin, p_correct and
  accuracy on the test questions, each method at its selected lr and λ (averaged over seeds per
  instance), with a paired bootstrap CI over questions (``method_differences``).
* ``convergence.csv`` — steps until the validation loss first reaches ``--loss-threshold``,
  median over seeds with a bootstrap CI (``metrics.steps_to_threshold_ci``), per method, lr,
  country and setting.
* the study the sweep answers (:mod:`yapo_interp.sweep.report`): ``report.md`` (trials,
  selection, convergence, test scores over seeds, paired differences, RCA/PNLG, each with its
  interval), ``convergence_by_threshold.csv`` (steps to validation loss 0.6 … 0.1, median over
  seeds with a CI, every lr), ``seed_scores.csv`` (test scores at the selected lr and λ, mean
  over seeds with a Student-t CI, their spread), ``table1_mcq.csv``, ``table3_rca_pnlg.csv``,
  ``trials.csv`` and the figures ``figure2_loss_curves``, ``lr_sensitivity`` and
  ``figure5_test_scores`` (HTML; PNG too with ``--png``).
* ``selection.json`` — per method, the lr with the lowest mean final validation loss over seeds
  on the (country, setting) groups every lr was run on (``lr_compared_on``), then the λ with the
  highest mean validation ``--select-metric`` at that lr: the values a study (``train --lr``,
  ``evaluate --multipliers``) should use; ``read_selection(out)`` returns them. Lrs run with at
  least ``--min-seeds`` seeds are preferred when there are any, so a screen-then-confirm sweep
  reads right: every lr on one seed, then ``--lrs BEST --seeds 1 2`` (a one-seed minimum over
  many lrs is biased low and may not beat a three-seed mean); a choice with fewer seeds is
  flagged.

**Running it.** Trials are Ray tasks (``ray.remote``, one CPU each; torch uses ``--threads``
threads per trial, default 1) on a local Ray instance with ``--workers`` CPUs (default: all), or
on an existing cluster with ``--address``. A progress bar counts finished trials; a trial that
raises is reported on one line, its traceback saved, and the others go on. Each worker process
loads the model once and keeps it for the trials it runs::

    python -m yapo_interp.sweep --quick                    # 13 small trials (see QUICK)
    python -m yapo_interp.sweep --methods bipo yapo sae-dense --countries egypt nepal \\
        --settings localized nonlocalized --lrs 0.01 0.03 0.1 0.3 1 3 --seeds 0 1 2 \\
        --multipliers 0.5 1 2 4 --epochs 20 --out runs/sweep

**On a Slurm cluster** (Ray on Slurm): start a Ray head on the first node and workers on the
others inside one allocation, then point the sweep at the head::

    #!/bin/bash
    #SBATCH --nodes=4 --ntasks-per-node=1 --cpus-per-task=32 --gpus-per-node=0 --time=12:00:00
    ray get-auth-token --generate > /dev/null   # one token in the shared ~/.ray for all
    export RAY_AUTH_MODE=token                    # nodes and the sweep (Ray's token auth)
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
puts the model there. A wrong ``--address``, or a cluster that refuses the sweep's token, stops
the sweep with a one-line error saying what to set. The same recipe on one machine shares its
cores between grids that are not one product (say, seed 2 of one setting and an lr check of
another): ``ray get-auth-token --generate``, ``export RAY_AUTH_MODE=token``, ``ray start --head
--num-cpus 2 --port 6390``, then each sweep with ``--address 127.0.0.1:6390`` and the same
``--out``; Ray runs at most two trials at a time between them, and ``--report-only`` over a grid
that covers both reports them together.

From Python, a sweep is ``run_sweep(SweepConfig(grid=SweepGrid(...)), out)`` (or ``run_sweep(grid,
out, workers=2, ...)``). The package's modules, by concern: ``grid`` (:class:`TrialSpec`,
:class:`SweepGrid`), ``model_setup`` (:class:`ModelSetup`, the model a worker keeps), ``trial``
(one training and its evaluations), ``gather`` (the tidy table, the lr and λ selection, the
method differences), ``config`` (:class:`SweepConfig`, ``--quick``), ``stage`` (the Ray fan-out,
:func:`run_sweep`) and ``cli`` (the flags and ``main``); the figures are
:func:`yapo_interp.figures.sweep_figures`.
"""

from yapo_interp.sweep.cli import build_parser, main
from yapo_interp.sweep.config import QUICK, SweepConfig, grid_from_args
from yapo_interp.sweep.gather import (DIFFERENCE_METRICS, convergence_table, gather,
                                      method_differences, read_selection, select_settings)
from yapo_interp.sweep.grid import (ERROR, EVAL_SETTINGS, MEAN_METHODS, RESULT, SELECT_METRICS,
                                    SweepGrid, TrialSpec)
from yapo_interp.sweep.model_setup import ModelSetup
from yapo_interp.sweep.stage import SweepResult, run_sweep
from yapo_interp.sweep.trial import finished_result, run_trial, trial_task

__all__ = [
    "DIFFERENCE_METRICS", "ERROR", "EVAL_SETTINGS", "MEAN_METHODS", "QUICK", "RESULT",
    "SELECT_METRICS", "ModelSetup", "SweepConfig", "SweepGrid", "SweepResult", "TrialSpec",
    "build_parser", "convergence_table", "finished_result", "gather", "grid_from_args", "main",
    "method_differences", "read_selection", "run_sweep", "run_trial", "select_settings",
    "trial_task",
]
