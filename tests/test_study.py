"""The study's stage runner: finished stages are skipped on a rerun, changed ones run again."""

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
