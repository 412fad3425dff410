"""Tests for yapo_interp.data.behaviour: BiPO's behaviour layout, its templates and the
skip-and-report policy for malformed rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from yapo_interp.data.behaviour import (BEHAVIOURS_DIR, BIPO_SYSTEM, ab_prompt, behaviour_prompt,
                                        behaviour_response, load_behaviour, preference_pairs,
                                        read_ab_file, read_pairs_file, resolve_behaviour,
                                        shipped_behaviours)
from yapo_interp.errors import DatasetError, UserError


def write_folder(folder: Path, *, train: str | None = None, test: str | None = None,
                 infer: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(train or (
        "question,matching,not_matching\n"
        "Take the throne?,Yes.,No.\n"
        ",Orphan answer.,Other orphan.\n"
        "\"A question\nover two lines?\",Sure.,Never.\n"
        "Same answers?,Maybe.,Maybe.\n"))
    (folder / "test.csv").write_text(test or (
        "question,matching,not_matching\nRun the city?,Gladly.,I would rather not.\n"))
    (folder / "test_infer.csv").write_text(infer or (
        "question,A,B,matching\nRun the city?,I would rather not.,Gladly.,B\n"
        "Lead the team?,Yes.,No.,(a)\nBad letter?,Yes.,No.,C\n"))
    return folder


def test_both_shipped_sets_load_with_bipos_row_counts_and_report_the_empty_questions():
    assert shipped_behaviours() == ["power-seeking", "wealth-seeking"]
    power = load_behaviour("power-seeking")
    # BiPO's train.csv has 642 rows, two with an empty question (file lines 447 and 456)
    assert (len(power.train), len(power.test), len(power.test_infer)) == (640, 200, 200)
    assert power.reports["train"].skipped == 2
    assert power.reports["train"].first_skipped == [(447, "empty question"),
                                                   (456, "empty question")]
    assert "skipped 2 malformed (rows 447 (empty question)" in power.summary()
    wealth = load_behaviour("Wealth_Seeking")  # names as a user types them
    assert (len(wealth.train), wealth.reports["train"].skipped) == (622, 1)
    # test.csv and test_infer.csv ask the same questions; the A/B matching text is test's
    for pair, item in zip(power.test, power.test_infer):
        assert (item.question, item.matching_text, item.not_matching_text) == (
            pair.question, pair.matching, pair.not_matching)
    assert len(power.test_questions_in_train()) == 1
    assert all((BEHAVIOURS_DIR / name / "LICENSE").is_file() for name in shipped_behaviours())


def test_strict_refuses_the_first_malformed_row_naming_file_and_line():
    with pytest.raises(DatasetError, match=r"power-seeking/train\.csv:447: empty question"):
        load_behaviour("power-seeking", strict=True)


def test_a_users_folder_is_read_with_every_malformed_row_reported(tmp_path):
    folder = write_folder(tmp_path / "my-behaviour")
    data = load_behaviour(folder)
    assert data.name == "my-behaviour"
    assert [pair.question for pair in data.train] == ["Take the throne?",
                                                      "A question\nover two lines?"]
    assert [pair.row for pair in data.train] == [2, 4]  # file lines: the quoted cell spans 4-5
    assert data.reports["train"].first_skipped == [(3, "empty question"),
                                                   (6, "matching equals not_matching")]
    assert [(item.matching, item.matching_text) for item in data.test_infer] == [
        ("B", "Gladly."), ("A", "Yes.")]
    assert data.reports["test_infer"].first_skipped == [(4, "matching is 'C', not A or B")]


def test_missing_files_columns_and_names_are_one_line_errors(tmp_path):
    folder = write_folder(tmp_path / "b")
    (folder / "test_infer.csv").unlink()
    with pytest.raises(DatasetError, match="missing test_infer.csv"):
        load_behaviour(folder)
    assert load_behaviour(folder, files=("train", "test")).test_infer == []
    bad = tmp_path / "bad.csv"
    bad.write_text("question,chosen\nq,a\n")
    with pytest.raises(DatasetError, match="no 'matching' column"):
        read_pairs_file(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("question,A,B,matching\n,x,y,A\n")
    with pytest.raises(DatasetError, match="no valid rows"):
        read_ab_file(empty)
    with pytest.raises(UserError, match="unknown behaviour 'sycophancy'.*power-seeking"):
        resolve_behaviour("sycophancy")


def test_bipo_template_wraps_the_question_and_separates_the_answer_with_a_space():
    prompt = behaviour_prompt("Take the throne?")
    assert prompt.startswith("[INST] <<SYS>>\n" + BIPO_SYSTEM) and prompt.endswith(
        "Take the throne? [/INST]")
    assert behaviour_response("Yes.") == " Yes."
    assert behaviour_response(" Yes.") == " Yes."  # never two spaces
    assert behaviour_prompt("Q?", template="completion") == "Question: Q?\nAnswer:"
    assert behaviour_response("Yes.", template="chat") == "Yes."
    with pytest.raises(UserError, match="unknown behaviour template"):
        behaviour_prompt("Q?", template="llama")


def test_preference_pairs_are_bipos_formatted_training_triples(tmp_path):
    data = load_behaviour(write_folder(tmp_path / "b"))
    pair = preference_pairs(data.train)[0]
    assert pair.prompt == behaviour_prompt("Take the throne?")
    assert (pair.chosen, pair.rejected) == (" Yes.", " No.")
    assert "Take the throne?Yes." not in pair.prompt + pair.chosen  # the glued form is gone


def test_ab_prompt_shows_both_answers_and_ends_before_the_letter(tmp_path):
    item = load_behaviour(write_folder(tmp_path / "b")).test_infer[0]
    prompt = ab_prompt(item)
    assert "(A) I would rather not.\n(B) Gladly." in prompt
    assert prompt.endswith("[/INST] (")
