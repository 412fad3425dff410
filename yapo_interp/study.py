"""The whole study in one command: patching -> layer -> BiPO and YaPO training -> evaluation ->
feature attribution -> figures -> a Markdown report.

Each stage is its stage function (``run_patching``, ``run_train``, ``run_evaluate``,
``run_attribution``, ``figures.regenerate``) called with the stage's config and the model, loaded
once; each config's command line (``config.to_argv()``: ``python -m yapo_interp.patching``,
``.train``, ``.evaluate``, ``.attribution``, ``.figures``) is written to the report, so any stage
can be rerun by hand. A stage that finished with the same command line is skipped when the study
is started again, and training resumes from its last epoch, so an interrupted study continues
where it stopped.

``--quick`` shrinks every stage (fewer patching pairs, a few epochs, at most 32 training pairs
made of whole questions with both forms in proportion, no open-ended judge) so that the study
finishes on a 2-core CPU in about half an hour; the full study uses the paper's settings (20
epochs, 100 warm-up steps). Either way the warm-up is capped at 10 % of each run, the rejected
answers are the model's own greedy answers (``--rejected generated``, as in the authors' code;
generated once and shared by both methods), the eval loss is measured on validation questions
carved from the training questions, and evaluation runs on the test questions of the fixed
question-level split (seed 0), which neither the vectors nor the SAEs saw.

``--selection`` takes a sweep's ``selection.json`` (``python -m yapo_interp.sweep``): each method
then trains at the learning rate the sweep selected on validation questions (recorded in the
plan and in every run's settings); ``--methods`` adds ``sae-dense``, ``caa`` or ``sas`` beside
BiPO and YaPO.

Example::

    python -m yapo_interp.study --countries egypt morocco --quick
    python -m yapo_interp.study --countries egypt nepal --selection runs/sweep \
        --methods bipo yapo sae-dense
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo_interp import figures, models
from yapo_interp.argv import command_line
from yapo_interp.attribution import AttributionConfig, AttributionRunConfig, run_attribution
from yapo_interp.cli import check_run_args, check_sae_available, run_cli
from yapo_interp.data import FORMS, load_cultural, resolve_countries
from yapo_interp.data.pairs import REJECTED
from yapo_interp.errors import UserError
from yapo_interp.evaluate import EvalConfig, EvaluateConfig, run_evaluate
from yapo_interp.io import read_json, run_info, write_json, write_text
from yapo_interp.models import PRESETS, get_preset
from yapo_interp.patching import PatchingConfig, run_patching
from yapo_interp.seeding import set_seed
from yapo_interp.steering import METHODS, SAE_METHODS
from yapo_interp.sweep.gather import read_selection
from yapo_interp.train import DataSelection, TrainRunConfig, run_train, training_config

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

ModelLoader = Callable[[], "HookedTransformer"]
Runs = dict[tuple[str, str, str], Path]  # (country, setting, method) -> training run folder


@dataclass(frozen=True)
class StudyPlan:
    """Sizes of every stage; ``quick()`` is the CPU-friendly variant."""

    countries: tuple[str, ...]
    settings: tuple[str, ...] = FORMS  # one run per form; quick: "both"
    methods: tuple[str, ...] = ("bipo", "yapo")
    patching_pairs: int = 12
    epochs: int = 20
    warmup_steps: int = 100
    max_pairs: int | None = None
    rejected: str = "generated"
    eval_max_items: int | None = None
    judge: str = "local"
    attribution_prompts: int = 400
    preset: str = "embedded"
    layer: int | None = None  # None: from the patching analysis
    seed: int = 0
    device: str = "cpu"
    lrs: tuple[tuple[str, float], ...] = ()  # per-method lr (e.g. a sweep's selection); else preset

    def lr_for(self, method: str) -> float | None:
        """The learning rate ``method`` trains with: from ``lrs``, else None (the preset's)."""
        return dict(self.lrs).get(method)

    @classmethod
    def quick(cls, countries: Sequence[str], **overrides) -> StudyPlan:
        """The CPU-friendly plan: one setting, few patching pairs, epochs and prompts."""
        return cls(countries=tuple(countries), settings=("both",), patching_pairs=6, epochs=4,
                   max_pairs=32, judge="none",
                   attribution_prompts=120, **overrides)


class StageRunner:
    """Runs stages in order, skipping those already finished with the same command line."""

    def __init__(self, out: Path):
        self.out = out
        self.commands: list[str] = []
        self.timings: dict[str, float] = {}

    def run(self, name: str, module: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
        """Stage ``name`` as a command: ``main(argv)`` of ``python -m yapo_interp.MODULE``."""
        argv = [str(a) for a in argv]
        self.call(name, command_line(module, argv), lambda: main(argv))

    def call(self, name: str, command: str, stage: Callable[[], Any]) -> None:
        """Run ``stage()`` as stage ``name`` unless it finished before with the same ``command``
        (its command line, listed in the report). A stage fails by raising or by returning a
        non-zero exit status (as a command's ``main``); a failed stage is not marked done."""
        self.commands.append(command)
        marker = self.out / "stages" / f"{name}.json"
        if marker.is_file() and read_json(marker).get("command") == command:
            print(f"[study] {name}: already done, skipped", file=sys.stderr)
            self.timings[name] = read_json(marker).get("seconds", 0.0)
            return
        print(f"[study] {name}: {command}", file=sys.stderr)
        started = time.time()
        status = stage()
        if isinstance(status, int) and status:
            raise UserError(f"stage {name} failed (exit {status}); rerun the study to retry it")
        self.timings[name] = time.time() - started
        write_json(marker, {"command": command, "seconds": self.timings[name]})


def stage_command(module: str, config: Any, out: Path, device: str | None = None) -> str:
    """The command line of a stage config: ``config.to_argv()``, ``--out`` and ``--device``."""
    return command_line(module, [*config.to_argv(), "--out", out,
                                 *(["--device", device] if device else [])])


def steering_layer(out: Path, plan: StudyPlan) -> int:
    """The layer to steer at: ``plan.layer``, else the patching choice moved to the nearest layer
    that has an SAE (embedded preset: the shipped layers)."""
    if plan.layer is not None:
        return plan.layer
    chosen = read_json(out / "patching" / "chosen_layer.json")
    if plan.preset == "embedded":
        nearest = chosen.get("nearest_shipped_sae_layer")
        if nearest is None:
            raise UserError("No SAE is shipped for the embedded model; give --layer with an SAE.")
        return int(nearest)
    return int(chosen["chosen_layer"])


# --------------------------------------------------------------------------------------------
# The stages' configs
# --------------------------------------------------------------------------------------------


def patching_config(plan: StudyPlan) -> PatchingConfig:
    """Activation patching on ``plan.patching_pairs`` pairs per country, every layer."""
    return PatchingConfig(countries=plan.countries, pairs_per_country=plan.patching_pairs,
                          seed=plan.seed, model=get_preset(plan.preset).model)


def train_config(plan: StudyPlan, method: str, country: str, setting: str,
                 layer: int) -> TrainRunConfig:
    """One training run of the plan: ``method`` on ``country``'s ``setting`` at ``layer``."""
    preset = get_preset(plan.preset)
    return TrainRunConfig(
        training=training_config(preset, method=method, layer=layer, lr=plan.lr_for(method),
                                 epochs=plan.epochs, warmup_steps=plan.warmup_steps,
                                 seed=plan.seed),
        data=DataSelection.for_preset(preset, country, rejected=plan.rejected, setting=setting,
                                      max_pairs=plan.max_pairs),
        preset=plan.preset)


def evaluate_config(plan: StudyPlan, runs: Runs) -> EvaluateConfig:
    """Every trained vector and every epoch of its run, on the test questions."""
    return EvaluateConfig(
        countries=plan.countries, vectors=tuple(str(run / "vector") for run in runs.values()),
        stability=tuple(str(run) for run in runs.values()), max_items=plan.eval_max_items,
        scoring=EvalConfig(mode=get_preset(plan.preset).mcq_mode, style="auto", seed=plan.seed),
        judge=plan.judge, preset=plan.preset)


def attribution_config(plan: StudyPlan, runs: Runs, country: str,
                       setting: str) -> AttributionRunConfig:
    """The BiPO and YaPO vectors of one country and setting, compared in SAE features."""
    return AttributionRunConfig(
        bipo=runs[(country, setting, "bipo")] / "vector",
        yapo=runs[(country, setting, "yapo")] / "vector",
        analysis=AttributionConfig(max_prompts=plan.attribution_prompts), preset=plan.preset,
        device=plan.device, seed=plan.seed)


# --------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------


def run_study(plan: StudyPlan, out: Path) -> Path:
    """Run every stage of ``plan`` into ``out``; return the report's path."""
    out = Path(out)
    runner = StageRunner(out)
    started = time.time()
    load = cache(lambda: models.load_model(get_preset(plan.preset).model, device=plan.device))

    def model() -> HookedTransformer:
        """The study's model (loaded once, when a stage first needs it), after seeding as each
        stage's command does."""
        set_seed(plan.seed)
        return load()

    patching = patching_config(plan)
    runner.call("patching", stage_command("patching", patching, out / "patching", plan.device),
                lambda: run_patching(model(), load_cultural(patching.dataset,
                                                            countries=list(patching.countries)),
                                     patching, out_dir=out / "patching"))
    layer = steering_layer(out, plan)
    runs = train_stages(runner, plan, out, layer, model)
    evaluation = evaluate_config(plan, runs)
    runner.call("evaluate", stage_command("evaluate", evaluation, out / "evaluate", plan.device),
                lambda: 3 if run_evaluate(model(), evaluation, out / "evaluate").unscored else 0)
    if {"bipo", "yapo"} <= set(plan.methods):
        for country in plan.countries:
            for setting in plan.settings:
                folder = out / "attribution" / f"{country}-{setting}"
                config = attribution_config(plan, runs, country, setting)
                runner.call(f"attribution-{country}-{setting}",
                            stage_command("attribution", config, folder),
                            lambda: run_attribution(model(), config, folder))
    runner.commands.append(command_line("figures", [out, "--out", out / "figures"]))
    written = figures.regenerate(out, out / "figures")
    return write_report(out, plan, layer, runner, written, time.time() - started)


def train_stages(runner: StageRunner, plan: StudyPlan, out: Path, layer: int,
                 model: ModelLoader) -> Runs:
    """Train every (method, country, setting) of the plan at ``layer``; the run folders. Dense
    methods first: they need no SAE (a study waiting for one can start)."""
    runs: Runs = {}
    for method in sorted(plan.methods, key=lambda name: name in SAE_METHODS):
        for country in plan.countries:
            for setting in plan.settings:
                run_dir = out / "train" / f"{country}-{setting}" / method
                runs[(country, setting, method)] = run_dir
                config = train_config(plan, method, country, setting, layer)
                runner.call(f"train-{country}-{setting}-{method}",
                            stage_command("train", config, run_dir, plan.device),
                            lambda: run_train(model(), config, run_dir))
    return runs


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else "*(not produced)*"


def write_report(out: Path, plan: StudyPlan, layer: int, runner: StageRunner,
                 figure_files: list[Path], seconds: float) -> Path:
    """A Markdown summary linking the figures, with the tables and the commands that made them."""
    chosen = read_json(out / "patching" / "chosen_layer.json")
    images = {path.stem: path for path in figure_files if path.suffix == ".png"}
    html = {path.stem: path for path in figure_files if path.suffix == ".html"}

    def figure(stem: str, caption: str) -> str:
        if stem in images:
            return f"![{caption}]({images[stem].relative_to(out)})\n\n" \
                   f"[interactive version]({html[stem].relative_to(out)})"
        if stem in html:
            return f"[{caption}]({html[stem].relative_to(out)}) (HTML; install kaleido and a " \
                   "Chrome for PNGs)"
        return f"*({caption}: not produced)*"

    lines = [
        f"# YaPO study: {', '.join(plan.countries)} ({plan.preset} preset"
        f"{', quick' if plan.epochs < 20 else ''})", "",
        f"Finished in {seconds / 60:.1f} min (stages skipped on resume count as 0). "
        f"Settings: `{asdict(plan)}`.", "",
        "## 1. Layer discovery (activation patching, appendix B)", "",
        f"The patching analysis chose layer **{chosen['chosen_layer']}** "
        f"({chosen['rule']}); steering vectors were trained at layer **{layer}**"
        f"{' (nearest layer with a shipped SAE)' if layer != chosen['chosen_layer'] else ''}.", "",
        figure("patching_patching_curves", "Activation patching curves"), "",
        "## 2. Training (BiPO vs YaPO, eq. 1 and 4)", "",
        figure("loss_curves", "Training and validation loss"), "",
        "## 3. Evaluation (section 4)", "",
        "### MCQ accuracy (table 1)", "", _read_text(out / "evaluate" / "table1_mcq.md"), "",
        "### PNLG and RCA by country (table 5)", "",
        _read_text(out / "evaluate" / "table5_gap_by_country.md"), "",
        figure("evaluate_accuracy_epochs", "Accuracy across epochs"), "",
        "## 4. Feature attribution (BiPO encoded into SAE space vs YaPO)", "",
    ]
    for attribution_json in sorted((out / "attribution").glob("*/attribution.json")):
        overlap = read_json(attribution_json).get("overlap", {})
        name = attribution_json.parent.name
        figures_found = [stem for stem in images if stem.startswith(f"attribution_{name}_")]
        numbers = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in overlap.items() if not isinstance(value, (list, dict)))
        lines += [f"**{name}**: {numbers}", ""]
        lines += [figure(stem, stem.replace("_", " ")) for stem in sorted(figures_found)] + [""]
    lines += ["## Commands", "", "Each stage, as run (rerun any by hand):", "", "```bash",
              *runner.commands, "```", "",
              "## Stage timings", "", "| stage | seconds |", "|---|---|",
              *[f"| {name} | {value:.0f} |" for name, value in runner.timings.items()], ""]
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    write_json(out / "study.json", run_info(asdict(plan) | {"layer": layer}))
    return report


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m yapo_interp.study``."""
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.study",
        description="Run the whole study (patching, training, evaluation, attribution, figures) "
                    "on a preset; resumable.")
    parser.add_argument("--countries", nargs="+", default=["egypt", "morocco"])
    parser.add_argument("--quick", action="store_true",
                        help="small settings that finish on a 2-core CPU in under 30 minutes")
    parser.add_argument("--preset", default="embedded", choices=sorted(PRESETS))
    parser.add_argument("--rejected", choices=REJECTED, default=None,
                        help="dispreferred answers for training (default: generated, the model's "
                             "own greedy answer, as in the authors' code)")
    parser.add_argument("--layer", type=int, default=None,
                        help="steer at this layer instead of the patching choice")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="methods to train and evaluate (default: bipo yapo; attribution "
                             "needs both)")
    parser.add_argument("--selection", default=None,
                        help="a sweep's selection.json (or its --out folder): train each method "
                             "at the learning rate the sweep selected on validation")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--judge", choices=("none", "local", "openai"), default=None,
                        help="open-ended judge (default: local; none with --quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the study of the command line; 0 when the report is written."""
    args = build_parser().parse_args(argv)
    countries = tuple(resolve_countries(args.countries))
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    check_run_args(args, layers=[] if args.layer is None else [args.layer])  # before any stage
    if args.layer is not None:
        check_sae_available(get_preset(args.preset).sae_for_layer(args.layer)[0], args.layer)
    overrides = {"preset": args.preset, "layer": args.layer, "seed": args.seed,
                 "device": args.device}
    plan = StudyPlan.quick(countries, **overrides) if args.quick else \
        StudyPlan(countries=countries, **overrides)
    lrs = None
    if args.selection is not None:
        chosen = read_selection(args.selection)
        lrs = tuple(sorted((method, float(values["lr"])) for method, values in chosen.items()
                           if values.get("lr") is not None))
    changes = {key: value for key, value in (("epochs", args.epochs), ("judge", args.judge),
                                             ("rejected", args.rejected), ("lrs", lrs),
                                             ("methods", args.methods and tuple(args.methods)))
               if value is not None}
    if changes:
        plan = StudyPlan(**(asdict(plan) | changes))
    report = run_study(plan, args.out)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
