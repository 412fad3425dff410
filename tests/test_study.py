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
