"""The study's stage runner: finished stages are skipped on a rerun, changed ones run again."""

import shlex

import pytest

from yapo_interp.errors import UserError
from yapo_interp.study import StageRunner, StudyPlan


def test_finished_stage_is_skipped_and_changed_stage_reruns(tmp_path):
    calls = []

    def main(argv):
        calls.append(argv)
        return 0

    StageRunner(tmp_path).run("train", "train", main, ["--epochs", 2])
    second = StageRunner(tmp_path)
    second.run("train", "train", main, ["--epochs", 2])
    assert calls == [["--epochs", "2"]]
    assert second.commands == ["python -m yapo_interp.train --epochs 2"]
    StageRunner(tmp_path).run("train", "train", main, ["--epochs", 3])
    assert calls == [["--epochs", "2"], ["--epochs", "3"]]


def test_failed_stage_is_not_marked_done(tmp_path):
    runner = StageRunner(tmp_path)
    with pytest.raises(UserError, match="stage train failed"):
        runner.run("train", "train", lambda argv: 1, [])
    assert not (tmp_path / "stages" / "train.json").exists()


def test_quick_plan_is_smaller_than_the_paper_plan():
    quick, full = StudyPlan.quick(["egypt"]), StudyPlan(countries=("egypt",))
    assert quick.epochs < full.epochs == 20 and full.warmup_steps == 100
    assert quick.patching_pairs < full.patching_pairs and quick.judge == "none"


def test_flags_are_checked_before_the_first_stage(tmp_path, monkeypatch):
    from yapo_interp import study

    def no_stage(*args, **kwargs):
        raise AssertionError("no stage may run")

    monkeypatch.setattr(study, "run_study", no_stage)
    out = ["--out", str(tmp_path / "study")]
    with pytest.raises(UserError, match=r"--layer 40 is out of range for embedded, which has "
                                        r"layers 0\.\.17"):
        study.main(["--quick", "--layer", "40"] + out)
    with pytest.raises(UserError, match="--layer 5: no SAE is shipped for layer 5"):
        study.main(["--quick", "--layer", "5"] + out)
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        study.main(["--quick", "--epochs", "0"] + out)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        study.main(["--quick", "--out", str(tmp_path / "file" / "study")])


def test_runner_calls_a_stage_function_and_skips_it_when_done(tmp_path):
    calls = []
    StageRunner(tmp_path).call("train", "python -m yapo_interp.train --epochs 2",
                               lambda: calls.append(1))
    second = StageRunner(tmp_path)
    second.call("train", "python -m yapo_interp.train --epochs 2", lambda: calls.append(2))
    assert calls == [1] and second.commands == ["python -m yapo_interp.train --epochs 2"]
    with pytest.raises(UserError, match="stage evaluate failed \\(exit 3\\)"):
        second.call("evaluate", "python -m yapo_interp.evaluate", lambda: 3)
    assert not (tmp_path / "stages" / "evaluate.json").exists()


def test_study_calls_the_stages_with_one_model_and_reports_their_command_lines(
        tmp_path, monkeypatch, model, sae):
    """The stages run as functions on one model; each command line in the report is the config
    that ran (parsed back, it is the same config); a rerun skips every stage and loads nothing."""
    from yapo_interp import models, study
    from yapo_interp.train import TrainRunConfig, build_parser

    loads = []
    monkeypatch.setattr(models, "load_model",
                        lambda name, device="cpu", **kwargs: loads.append(name) or model)
    monkeypatch.setattr(models, "load_sae", lambda *args, **kwargs: sae)
    monkeypatch.setattr(study.figures, "regenerate", lambda run_dir, out_dir: [])
    plan = StudyPlan(countries=("egypt",), settings=("both",), methods=("bipo",),
                     patching_pairs=1, epochs=1, max_pairs=4, rejected="western",
                     eval_max_items=2, judge="none", layer=1)
    report = study.run_study(plan, tmp_path)
    assert loads == ["embedded"]
    commands = [line for line in report.read_text().splitlines()
                if line.startswith("python -m yapo_interp.")]
    assert [command.split()[2] for command in commands] == [
        "yapo_interp.patching", "yapo_interp.train", "yapo_interp.evaluate", "yapo_interp.figures"]
    args = build_parser().parse_args(shlex.split(commands[1])[3:])
    assert TrainRunConfig.from_args(args) == study.train_config(plan, "bipo", "egypt", "both", 1)
    assert args.out == tmp_path / "train" / "egypt-both" / "bipo"
    assert (args.out / "vector.json").is_file() and (tmp_path / "evaluate" / "scores.csv").is_file()

    monkeypatch.setattr(study, "run_train", lambda *args, **kwargs: pytest.fail("trained again"))
    study.run_study(plan, tmp_path)
    assert loads == ["embedded"]  # every stage skipped: the model is not even loaded


def test_a_sweep_selection_sets_each_methods_learning_rate(tmp_path, monkeypatch):
    """``--selection`` reads a sweep's selection.json: each method trains at its selected lr (the
    plan records the numbers), methods without one keep the preset's; sae-dense needs an SAE, so
    it is trained after the dense methods."""
    import json

    from yapo_interp import study

    (tmp_path / "selection.json").write_text(json.dumps({"methods": {
        "bipo": {"lr": 0.1, "multiplier": 1.0}, "yapo": {"lr": 2.0, "multiplier": 1.0},
        "baseline": {"lr": None, "multiplier": 0.0}}}))  # the sweep's unsteered trial: no lr
    plans = []
    monkeypatch.setattr(study, "run_study", lambda plan, out: plans.append(plan) or out / "r.md")
    study.main(["--countries", "egypt", "--quick", "--selection", str(tmp_path),
                "--methods", "sae-dense", "bipo", "yapo", "--out", str(tmp_path / "out")])
    plan = plans[0]
    assert plan.lrs == (("bipo", 0.1), ("yapo", 2.0))
    assert plan.methods == ("sae-dense", "bipo", "yapo")
    assert study.train_config(plan, "yapo", "egypt", "both", 11).training.lr == 2.0
    assert study.train_config(plan, "sae-dense", "egypt", "both", 11).training.lr == 0.5  # preset
    with pytest.raises(UserError, match="not a sweep selection"):
        study.main(["--countries", "egypt", "--selection", str(tmp_path / "missing.json"),
                    "--out", str(tmp_path / "out")])
