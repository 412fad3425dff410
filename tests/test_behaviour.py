"""Tests for yapo_interp.behaviour: the A/B scorer, log-odds, the behaviour judge, the multiplier
sweep with paired CIs, and the command line, on planted data and the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from yapo_interp.behaviour import (BehaviourEvalConfig, LocalBehaviourJudge, behaviour_request,
                                   evaluate_behaviour, main, make_behaviour_judge,
                                   parse_behaviour_score, score_ab, score_log_odds,
                                   summarize_sweep, sweep_conditions)
from yapo_interp.data.behaviour import ABItem, BehaviourPair
from yapo_interp.errors import UserError
from yapo_interp.judge import JudgeParseError
from yapo_interp.steering import steer, vector_from_tensor

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = BehaviourEvalConfig(batch_size=8, n_bootstrap=200)
# Planted data: the answer showing the behaviour is always (A) / "AAAA".
ITEMS = [ABItem(f"Question {i}?", "AAAA", "BBBB", "A", row=i + 2) for i in range(6)]
PAIRS = [BehaviourPair(f"Question {i}?", "AAAA", "BBBB", row=i + 2) for i in range(6)]


def letter_vector(model, scale: float = 1.0):
    """A dense vector at the last block along W_U[:, 'A'] − W_U[:, 'B']: it raises the logit of
    the matching letter everywhere."""
    a, b = (model.tokenizer.convert_tokens_to_ids(letter) for letter in ("A", "B"))
    direction = model.W_U[:, a] - model.W_U[:, b]
    direction = scale * direction / direction.norm()
    return vector_from_tensor("bipo", model.cfg.n_layers - 1, direction, model)


def test_a_vector_along_the_matching_letter_raises_the_matching_fraction(model):
    vector = letter_vector(model, scale=50.0)
    baseline = score_ab(model, ITEMS, CONFIG)
    with steer(model, vector, multipliers=1.0):
        towards = score_ab(model, ITEMS, CONFIG)
    with steer(model, vector, multipliers=-1.0):
        away = score_ab(model, ITEMS, CONFIG)
    assert towards["ab_letter_choice"].mean() == 1.0 and away["ab_letter_choice"].mean() == 0.0
    assert (towards["ab_letter_prob"] > baseline["ab_letter_prob"]).all()
    assert (towards["ab_text_choice"] == 1.0).all() and (away["ab_text_choice"] == 0.0).all()
    # the letter is read from the matching side: swapping A and B mirrors the probability
    swapped = [ABItem(item.question, item.b, item.a, "B", item.row) for item in ITEMS]
    with steer(model, vector, multipliers=1.0):
        mirrored = score_ab(model, swapped, CONFIG)
    assert (mirrored["ab_letter_prob"] < 0.5).all()


def test_log_odds_is_the_difference_of_summed_answer_log_probs_and_moves_with_the_vector(model):
    from yapo_interp.data.behaviour import behaviour_prompt
    from yapo_interp.logprobs import response_logprobs

    plain = score_log_odds(model, PAIRS, CONFIG)
    sums, _ = response_logprobs(model, [behaviour_prompt(PAIRS[0].question)] * 2,
                                [" AAAA", " BBBB"])
    assert plain["log_odds"].iloc[0] == pytest.approx(float(sums[0] - sums[1]), abs=1e-4)
    with steer(model, letter_vector(model, scale=50.0), multipliers=0.5):
        steered = score_log_odds(model, PAIRS, CONFIG)
    assert (steered["log_odds"] > plain["log_odds"] + 1.0).all()


def test_sweep_shares_one_baseline_and_reports_paired_differences(model):
    vector = letter_vector(model, scale=50.0)
    conditions = sweep_conditions([(vector, None, "planted")], [-1.0, 0.0, 1.0])
    assert [c.is_baseline for c in conditions] == [True, False, False]  # λ = 0 is the baseline
    frame = evaluate_behaviour(model, conditions, items=ITEMS, pairs=PAIRS, config=CONFIG)
    summary = summarize_sweep(frame, CONFIG)
    letters = summary[summary["metric"] == "ab_letter_choice"].set_index("multiplier")
    assert list(letters.index) == [-1.0, 0.0, 1.0] and set(letters["method"]) == {"bipo"}
    assert letters.loc[0.0, "delta"] == 0.0
    assert letters.loc[1.0, "value"] == 1.0 and letters.loc[-1.0, "value"] == 0.0
    odds = summary[summary["metric"] == "log_odds"].set_index("multiplier")
    assert odds.loc[1.0, "delta_low"] > 0 > odds.loc[-1.0, "delta_high"]
    assert (odds["n"] == len(PAIRS)).all()


def test_behaviour_scores_are_parsed_on_the_1_to_4_scale_and_off_scale_is_refused():
    assert parse_behaviour_score('Sure. {"score": 3}') == {"behaviour": 3.0}
    assert parse_behaviour_score("Score: 4") == {"behaviour": 4.0}
    assert parse_behaviour_score("2/4") == {"behaviour": 2.0}
    for reply in ('{"score": 7}', "no idea", "", '{"score": 2.5}'):
        with pytest.raises(JudgeParseError):
            parse_behaviour_score(reply)


def test_local_judge_orders_answers_by_overlap_with_the_reference_answers():
    pair = BehaviourPair("Rule the world?", "Yes, absolutely, total control suits me.",
                         "No, power should stay with elected people.")
    judge = LocalBehaviourJudge()
    score = lambda text: judge.score(behaviour_request(pair, text)).total  # noqa: E731
    assert score("Absolutely, total control suits me.") == 4.0
    assert score("Power should stay with elected people.") == 1.0
    assert score("The weather is mild.") == 2.0
    assert judge.weaker and "weaker" in judge.name


def test_openai_behaviour_judge_sends_the_behaviour_rubric_and_reads_its_scale(tmp_path):
    judge = make_behaviour_judge("openai", "power-seeking", base_url="http://127.0.0.1:9/v1",
                                 model="m", cache_path=tmp_path / "cache.jsonl")
    sent = []
    judge._post = lambda prompt, timeout=None: sent.append(prompt) or '{"score": 4}'
    verdict = judge.score(behaviour_request(PAIRS[0], "I would take every lever of power."))
    assert verdict.ok and verdict.total == 4.0
    assert "power-seeking" in sent[0] and "I would take every lever of power." in sent[0]
    assert "1 to 4" in sent[0] and not judge.weaker
    with pytest.raises(UserError):
        make_behaviour_judge("gpt", "power-seeking")


def write_behaviour(folder):
    folder.mkdir()
    rows = "".join(f"Question {i}?,AAAA,BBBB\n" for i in range(4))
    train = "".join(f"Training question {i}?,AAAA,BBBB\n" for i in range(4))
    (folder / "train.csv").write_text("question,matching,not_matching\n,x,y\n" + train)
    (folder / "test.csv").write_text("question,matching,not_matching\n" + rows)
    (folder / "test_infer.csv").write_text(
        "question,A,B,matching\n" + "".join(f"Question {i}?,AAAA,BBBB,A\n" for i in range(4)))
    return folder


def test_cli_sweeps_a_vector_with_judge_and_cost_and_writes_tables_and_figures(
        model, tmp_path, monkeypatch, capsys):
    import yapo_interp.models

    folder = write_behaviour(tmp_path / "planted-behaviour")
    letter_vector(model, scale=50.0).save(tmp_path / "bipo")
    texts = tmp_path / "neutral.txt"
    texts.write_text("The water cycle moves water around.\n\nA bicycle has two wheels.\n")
    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    out = tmp_path / "out"
    code = main(["--behaviour", str(folder), "--vectors", str(tmp_path / "bipo"),
                 "--multipliers", "-1", "0", "1", "--tasks", "ab", "logodds", "open",
                 "--judge", "local", "--open-max-new-tokens", "3", "--cost", "--cost-texts",
                 str(texts), "--bootstrap", "20", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "skipped 1 malformed (rows 2 (empty question))" in captured.err
    assert "weaker" in captured.out
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["metric"]) == {"ab_letter_choice", "ab_letter_prob", "ab_text_choice",
                                      "log_odds", "judge_score"}
    choice = summary[summary["metric"] == "ab_letter_choice"].set_index("multiplier")["value"]
    assert choice[1.0] == 1.0 and choice[-1.0] == 0.0
    cost = pd.read_csv(out / "cost_summary.csv").set_index("multiplier")
    assert cost.loc[0.0, "ce_increase"] == 0.0 and cost.loc[0.0, "kl"] == 0.0
    assert cost.loc[1.0, "kl"] > 0
    for name in ("items.csv", "summary.md", "behaviour_sweep.html", "effect_vs_cost.html",
                 "run.json"):
        assert (out / name).is_file(), name
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["judge_weaker"] and settings["skipped_rows"]["train"] == 1
    assert "weaker" in (out / "summary.md").read_text()
    assert "offline judge, weaker" in (out / "behaviour_sweep.html").read_text()


def test_cli_refuses_open_ended_without_a_judge_before_loading_the_model(tmp_path, monkeypatch):
    import yapo_interp.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(yapo_interp.models, "load_model", no_model)
    with pytest.raises(UserError, match="needs a judge"):
        main(["--behaviour", "power-seeking", "--tasks", "open", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="unknown behaviour"):
        main(["--behaviour", "nope", "--out", str(tmp_path)])


def test_train_cli_reads_a_behaviour_folder_formatted_as_bipo_with_bad_rows_reported(
        model, tmp_path, monkeypatch, capsys):
    import yapo_interp.models
    import yapo_interp.train as train
    from yapo_interp.steering import SteeringVector

    folder = tmp_path / "planted"
    folder.mkdir()
    rows = "".join(f"Question {i}?,AAAA,BBBB\n" for i in range(12))
    (folder / "train.csv").write_text("question,matching,not_matching\n,x,y\n" + rows)
    seen = {}
    original = train.train_steering_vector

    def recording(model, train_pairs, eval_pairs, *args, **kwargs):
        seen["train"], seen["eval"] = train_pairs, eval_pairs
        return original(model, train_pairs, eval_pairs, *args, **kwargs)

    monkeypatch.setattr(train.stage, "train_steering_vector", recording)
    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    out = tmp_path / "run"
    code = train.main(["--method", "bipo", "--behaviour", str(folder), "--layer", "1",
                       "--epochs", "1", "--batch-size", "4", "--validation-fraction", "0.25",
                       "--out", str(out)])
    assert code == 0
    assert "skipped 1 malformed (rows 2 (empty question))" in capsys.readouterr().err
    pair = seen["train"][0]
    assert pair.prompt.startswith("[INST] <<SYS>>") and pair.prompt.endswith("? [/INST]")
    assert (pair.chosen, pair.rejected) == (" AAAA", " BBBB")
    assert seen["eval"] and len(seen["train"]) + len(seen["eval"]) == 12
    assert not {p.prompt for p in seen["train"]} & {p.prompt for p in seen["eval"]}
    meta = SteeringVector.load(out / "vector").metadata
    assert (meta["behaviour"], meta["behaviour_template"], meta["skipped_rows"]) == (
        "planted", "bipo", 1)
    with pytest.raises(UserError, match="not both"):
        train.main(["--method", "bipo", "--behaviour", str(folder), "--behaviour-csv",
                    str(folder / "train.csv"), "--layer", "1", "--out", str(tmp_path / "x")])


def test_letter_log_probs_from_one_pass_equal_the_letters_scored_as_responses(model):
    from yapo_interp.behaviour import letter_logprobs
    from yapo_interp.data.behaviour import ab_prompt
    from yapo_interp.logprobs import response_logprobs

    prompts = [ab_prompt(item) for item in ITEMS[:3]] + ["short ("]
    fast = letter_logprobs(model, prompts, batch_size=3)
    slow, _ = response_logprobs(model, [p for p in prompts for _ in range(2)],
                                ["A", "B"] * len(prompts))
    torch.testing.assert_close(fast, slow.float().reshape(-1, 2), atol=1e-4, rtol=0)


def test_cli_drops_test_questions_seen_in_train_unless_asked(model, tmp_path, monkeypatch,
                                                            capsys):
    import yapo_interp.models

    folder = write_behaviour(tmp_path / "leaky")
    with (folder / "train.csv").open("a") as handle:
        handle.write("Question 0?,AAAA,BBBB\n")  # a test question also in train.csv
    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    for extra, expected in (([], 3), (["--keep-train-questions"], 4)):
        out = tmp_path / f"out{len(extra)}"
        assert main(["--behaviour", str(folder), "--bootstrap", "5", "--out", str(out), *extra]) == 0
        items = pd.read_csv(out / "items.csv")
        assert len(items[items["task"] == "ab"]) == expected
        assert ("Question 0?" in set(items["question"])) == bool(extra)
    assert "dropping 1 test question(s)" in capsys.readouterr().err


def test_cross_domain_a_cultural_vector_on_a_behaviour_and_a_behaviour_vector_on_the_mcq(
        model, tmp_path, monkeypatch):
    import yapo_interp.models
    from yapo_interp.evaluate import main as evaluate_main

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    generator = torch.Generator().manual_seed(3)
    cultural = vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model, generator=generator),
                                  model, country="usa", setting="both", epoch=1)
    cultural.save(tmp_path / "cultural")
    folder = write_behaviour(tmp_path / "planted")
    assert main(["--behaviour", str(folder), "--vectors", str(tmp_path / "cultural"),
                 "--multipliers", "1", "--bootstrap", "5", "--out", str(tmp_path / "b")]) == 0
    summary = pd.read_csv(tmp_path / "b" / "summary.csv")
    assert set(summary["multiplier"]) == {0.0, 1.0} and set(summary["method"]) == {"bipo"}

    behaviour = vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model, generator=generator),
                                   model, behaviour="planted", behaviour_template="bipo")
    behaviour.save(tmp_path / "behaviour")
    from yapo_interp.data import load_cultural

    items = load_cultural(languages=["english"])
    short = {item.question_id for item in items if len(item.localized_prompt) + max(
        len(option.text) for option in item.options) < 200}
    short -= {item.question_id for item in items if len(item.localized_prompt) + max(
        len(option.text) for option in item.options) >= 200}
    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in items
                               if item.question_id in sorted(short)[:2]))
    assert evaluate_main(["--country", "usa", "--dataset", str(dataset), "--split", "all",
                          "--settings", "localized", "--vectors", str(tmp_path / "behaviour"),
                          "--bootstrap", "5", "--out", str(tmp_path / "e")]) == 0
    instances = pd.read_csv(tmp_path / "e" / "mcq_instances.csv")
    assert set(instances["method"]) == {"baseline", "bipo"}
