"""Evaluation on the tiny model with hand-made English items: MCQ scoring by log-likelihood and by
\\boxed{k}, steering changes the scores, RCA/PNLG pairing, paper-style tables, the open-ended
judge path, the stability view and the command line end to end."""

import json
import math

import pandas as pd
import pytest
import torch

from yapo_interp.data import CulturalItem, Option, validate_items
from yapo_interp.evaluate import (BASELINE, Condition, EvalConfig, VectorLoader, build_result,
                                  choose, evaluate_mcq, evaluate_open, evaluate_stability,
                                  find_epoch_vectors, gap_metrics, main, make_conditions,
                                  paired_differences, paired_scores, resolve_vector_path,
                                  score_boxed, score_loglik,
                                  select_rows, summarize, table_gap_by_country,
                                  table_gap_by_language, table_scores, write_results)
from yapo_interp.judge import Judge, LocalJudge, Verdict
from yapo_interp.logprobs import response_logprobs
from yapo_interp.steering import vector_from_tensor

COUNTRIES = ("usa", "uk", "australia")
NAMED = {"usa": "America", "uk": "the UK", "australia": "Australia"}
QUESTIONS = [
    ("english-breakfast-01", "breakfast", "What do we eat for breakfast on a Sunday?",
     {"usa": "Pancakes with maple syrup and crispy bacon.",
      "uk": "A fry-up with beans, toast and black pudding.",
      "australia": "Toast with Vegemite and a flat white.",
      "western": "Cereal with milk and a glass of orange juice."}),
    ("english-greetings-01", "greetings", "How do we greet a friend we meet in the street?",
     {"usa": "Hey, how's it going?", "uk": "Alright, mate?", "australia": "G'day, how ya going?",
      "western": "Hello, how are you?"}),
    ("english-sports-01", "sports", "Which sport do we watch with the family on weekends?",
     {"usa": "American football on TV.", "uk": "Football in the Premier League.",
      "australia": "Footy, the AFL.", "western": "Whatever match is on the television."}),
    ("english-weddings-01", "weddings", "What do guests eat at a wedding reception here?",
     {"usa": "A plated dinner and a tiered cake.", "uk": "A wedding breakfast and fruit cake.",
      "australia": "A barbecue-style buffet and pavlova.",
      "western": "A buffet and a white cake."}),
]


def make_items():
    items = []
    for question_id, topic, question, texts in QUESTIONS:
        options = tuple(Option(country, texts[country]) for country in (*COUNTRIES, "western"))
        for index, country in enumerate(COUNTRIES):
            items.append(CulturalItem(
                id=f"{question_id}-{country}", question_id=question_id, language="english",
                country=country, topic=topic,
                localized_prompt=f"I live in {NAMED[country]}. {question}",
                nonlocalized_prompt=f"We are at home this weekend. {question}",
                options=options, answer=index, reference_answer=texts[country]))
    return items


ITEMS = make_items()
FAST = EvalConfig(n_bootstrap=50, batch_size=4)


@pytest.fixture(scope="module")
def dense_vector(model):
    generator = torch.Generator().manual_seed(1)
    return vector_from_tensor("bipo", 1, 3.0 * torch.randn(model.cfg.d_model, generator=generator),
                              model, country="usa", setting="localized", epoch=2)


def test_hand_made_items_are_valid():
    validate_items(ITEMS)


def test_loglik_picks_the_option_with_the_highest_logprob(model):
    items = ITEMS[:3]
    records = score_loglik(model, items, ("localized",), batch_size=2, progress=False)
    assert [record["item_id"] for record in records] == [item.id for item in items]
    for item, record in zip(items, records):
        prompt = f"Question: {item.localized_prompt}\nAnswer:"
        sums, counts = response_logprobs(model, [prompt] * 4,
                                         [" " + option.text for option in item.options])
        assert json.loads(record["option_logprob_sum"]) == pytest.approx(sums.tolist(), abs=1e-3)
        by_mean = int(torch.argmax(sums / counts))
        assert record["prediction"] == by_mean
        assert record["correct_sum"] == float(int(torch.argmax(sums)) == item.answer)
        assert record["score"] == float(by_mean == item.answer)
        assert record["predicted_country"] == item.options[by_mean].country


def test_sum_and_mean_can_disagree():
    sums = torch.tensor([-10.0, -6.0])
    counts = torch.tensor([10, 3])  # per token: -1.0 vs -2.0
    assert choose(sums, counts, "sum") == 1
    assert choose(sums, counts, "mean") == 0


def test_steering_changes_the_scores_and_zero_multiplier_does_not(model, dense_vector):
    conditions = make_conditions([(dense_vector, None, "v")], [0.0, 1.0])
    items = [item for item in ITEMS if item.country in ("usa", "uk")][:4]
    frame = evaluate_mcq(model, items, conditions, FAST, progress=False)
    usa = frame[frame["country"] == "usa"]
    logprobs = {label: group.sort_values(["item_id", "form"])["option_logprob_sum"].tolist()
                for label, group in usa.groupby("condition")}
    baseline, zero, steered = (logprobs[c.label] for c in conditions)
    assert zero == baseline
    assert steered != baseline
    # a country's vector is evaluated on its own country's items only
    assert set(frame[frame["condition"] == conditions[2].label]["country"]) == {"usa"}
    assert set(frame[frame["condition"] == "Baseline"]["country"]) == {"usa", "uk"}


def test_sparse_steering_through_the_sae(model, sae):
    zero = vector_from_tensor("yapo", 1, torch.zeros(sae.cfg.d_sae), model, sae=sae, country="uk")
    strong = vector_from_tensor("yapo", 1, 5.0 * torch.ones(sae.cfg.d_sae), model, sae=sae,
                                country="uk")
    conditions = [BASELINE] + make_conditions([(zero, sae, "zero"), (strong, sae, "strong")],
                                              include_baseline=False)
    items = [item for item in ITEMS if item.country == "uk"]
    frame = evaluate_mcq(model, items, conditions, FAST, progress=False)
    by = {label: group["option_logprob_sum"].tolist()
          for label, group in frame.groupby("condition")}
    labels = [c.label for c in conditions]
    assert len(set(labels)) == 3  # made unique
    assert by[labels[1]] == by[labels[0]]  # residual correction: zero vector changes nothing
    assert by[labels[2]] != by[labels[0]]
    assert all(not hook_point.fwd_hooks for hook_point in model.hook_dict.values())


def test_boxed_answers_are_mapped_back_and_unparsed_counted(model):
    items = ITEMS[:4]
    replies = iter(["The answer is \\boxed{1}.", "hmm", "\\boxed{9}", "\\boxed{2}"] * 4)
    records = score_boxed(model, items, ("localized",), style="completion", shuffle_seed=3,
                          progress=False, generate=lambda prompts: [next(replies) for _ in prompts])
    assert [r["parsed"] for r in records] == [True, False, False, True]
    first, second, third, fourth = records
    assert first["prediction"] == json.loads(first["option_order"])[0]
    assert fourth["prediction"] == json.loads(fourth["option_order"])[1]
    assert second["score"] == third["score"] == 0.0 and second["prediction"] is None
    frame = pd.DataFrame(records).assign(condition="Baseline", column="Baseline",
                                         method="baseline", multiplier=None, train_setting=None,
                                         epoch=None, vector=None)
    scores, _ = summarize(frame, EvalConfig(settings=("localized",), n_bootstrap=20))
    assert scores["unparsed"].sum() == 2 and scores["n"].sum() == 4


def test_boxed_with_real_generation_counts_unparseable_answers(model):
    config = EvalConfig(mode="boxed", style="completion", settings=("nonlocalized",),
                        boxed_max_new_tokens=4, batch_size=3, n_bootstrap=20)
    short = [CulturalItem(f"q{i}-usa", f"q{i}", "english", "usa", "breakfast", "USA. Food?",
                          "Food?", (Option("usa", "Eggs."), Option("western", "Toast.")), 0,
                          "Eggs.") for i in range(3)]
    frame = evaluate_mcq(model, short, [BASELINE], config, progress=False)
    scores, gaps = summarize(frame, config)
    assert len(frame) == 3 and frame["generation"].map(len).gt(0).all()
    # a random tiny model never writes \boxed{k}: every answer is unparsed and counted as wrong
    assert scores["unparsed"].sum() == 3 and (frame["score"] == 0).all()
    assert gaps.empty  # one form only: no pairs


def instance_frame(scores_by_condition, country="usa", language="english"):
    """Instance rows from {(label, column, method, train_setting): (p_loc list, p_non list)}."""
    rows = []
    for (label, column, method, trained), (p_loc, p_non) in scores_by_condition.items():
        for form, values in (("localized", p_loc), ("nonlocalized", p_non)):
            for index, value in enumerate(values):
                rows.append({"condition": label, "column": column, "method": method,
                             "multiplier": 1.0, "train_setting": trained, "epoch": None,
                             "vector": None, "language": language, "country": country,
                             "question_id": f"q{index}", "item_id": f"q{index}-{country}",
                             "form": form, "score": value, "parsed": True})
    return pd.DataFrame(rows)


def test_pairs_and_gap_metrics_by_hand():
    frame = instance_frame({("Baseline", "Baseline", "baseline", None):
                            ([1, 1, 0, 0], [1, 0, 1, 0])})
    pairs = paired_scores(frame)
    assert list(pairs["p_loc"]) == [1, 1, 0, 0] and list(pairs["p_non"]) == [1, 0, 1, 0]
    cell = gap_metrics(frame[frame.form == "localized"], frame[frame.form == "nonlocalized"],
                       FAST)
    assert cell["acc_loc"] == cell["acc_non"] == 0.5
    assert cell["rca"] == pytest.approx(0.5, rel=1e-6)  # aggregate: harmonic mean of 0.5, 0.5
    assert cell["rca_instance"] == pytest.approx(0.25, rel=1e-6)  # only q0 has both right
    assert cell["pnlg"] == pytest.approx(0.0) and cell["pnlg_instance"] == pytest.approx(0.0)
    assert cell["n_pairs"] == 4
    assert cell["rca_instance_low"] <= 0.25 <= cell["rca_instance_high"]


def test_judge_failures_break_pairs_but_are_not_scores():
    frame = instance_frame({("Baseline", "Baseline", "baseline", None):
                            ([0.8, float("nan")], [0.4, 0.6])})
    pairs = paired_scores(frame)
    assert len(pairs) == 1
    scores, _ = summarize(frame, FAST)
    localized = scores[scores.setting == "localized"].iloc[0]
    assert localized["score"] == pytest.approx(0.8) and localized["unscored"] == 1


def table_frame():
    return pd.concat([
        instance_frame({
            ("Baseline", "Baseline", "baseline", None): ([1, 0, 0, 0], [0, 0, 0, 0]),
            ("BiPO [both]", "BiPO", "bipo", "both"): ([1, 1, 0, 0], [1, 0, 0, 0]),
            ("YaPO [localized]", "YaPO", "yapo", "localized"): ([1, 1, 1, 0], [0, 0, 0, 0]),
            ("YaPO [nonlocalized]", "YaPO", "yapo", "nonlocalized"): ([0, 0, 0, 0], [1, 1, 1, 1]),
        }, country="usa"),
        instance_frame({("Baseline", "Baseline", "baseline", None): ([1, 1, 0, 0], [1, 0, 0, 0])},
                       country="uk"),
    ], ignore_index=True)


def test_cells_use_the_vector_trained_for_the_setting():
    frame = table_frame()
    localized = select_rows(frame, "YaPO", "usa", "localized")
    assert set(localized["condition"]) == {"YaPO [localized]"}
    nonlocalized = select_rows(frame, "YaPO", "usa", "nonlocalized")
    assert set(nonlocalized["condition"]) == {"YaPO [nonlocalized]"}
    both = select_rows(frame, "BiPO", "usa", "both")
    assert len(both) == 8  # both forms


def test_table_1_layout_and_deltas():
    numbers, display = table_scores(table_frame(), FAST, task="mcq")
    usa = numbers[numbers.country == "usa"].iloc[0]
    assert usa["localized/Baseline"] == pytest.approx(25.0)
    assert usa["localized/YaPO"] == pytest.approx(75.0)
    assert usa["localized/YaPO Δ"] == pytest.approx(50.0)
    assert usa["nonlocalized/YaPO"] == pytest.approx(100.0)  # the nonlocalized-trained vector
    assert usa["both/BiPO"] == pytest.approx(37.5)
    average = numbers[numbers.country == "Average"].iloc[0]
    # uk has no steered vector: every column of the Average row covers usa only, so the baseline
    # and the steered columns average the same countries (before: baseline over usa and uk)
    assert average["localized/Baseline"] == pytest.approx(25.0)
    assert average["localized/YaPO"] == pytest.approx(75.0)
    assert average["localized/YaPO Δ"] == pytest.approx(50.0)
    assert display.iloc[-1]["Country"] == "Average (1 of 2 countries: those with every column)"
    assert math.isnan(numbers[numbers.country == "uk"].iloc[0]["localized/YaPO"])
    assert list(numbers.country) == ["usa", "uk", "Average"]  # the paper's country order
    row = display[display.Country == "USA"].iloc[0]
    assert row["Localized · YaPO"] == "75.0% (+50.0%)"
    assert row["Localized · Baseline"] == "25.0%"


def test_table_5_and_3_values():
    frame = table_frame()
    result = build_result(frame, None, FAST)
    numbers, display = table_gap_by_country(result.gaps_long)
    usa = numbers[(numbers.country == "usa") & (numbers.task == "mcq")].iloc[0]
    # baseline: loc 0.25, non 0 -> PNLG 0.25/0.125 = 2, RCA 0
    assert usa["PNLG/Baseline"] == pytest.approx(2.0, rel=1e-6)
    assert usa["RCA/Baseline"] == pytest.approx(0.0)
    # BiPO (trained on both, used for both forms): loc 0.5, non 0.25
    assert usa["PNLG/BiPO"] == pytest.approx(0.25 / 0.375, rel=1e-6)
    assert usa["RCA/BiPO"] == pytest.approx(100 * 2 * 0.5 * 0.25 / 0.75, rel=1e-6)
    # PNLG is signed: its change is absolute, not relative
    assert usa["PNLG/BiPO Δ"] == pytest.approx(0.25 / 0.375 - 2, rel=1e-6)
    assert "PNLG/BiPO rel" not in numbers
    assert usa["RCA/BiPO Δ"] == pytest.approx(usa["RCA/BiPO"])
    # YaPO: localized cell from the localized vector (0.75), non-localized from the other (1.0)
    assert usa["PNLG/YaPO"] == pytest.approx(-0.25 / 0.875, rel=1e-6)
    assert display.iloc[0]["PNLG ↓ · BiPO"] == "0.667 (−1.333)"
    instance_numbers, _ = table_gap_by_country(result.gaps_long, variant="instance")
    usa_instance = instance_numbers[instance_numbers.country == "usa"].iloc[0]
    assert usa_instance["RCA/BiPO"] == pytest.approx(25.0, rel=1e-6)  # only q0 right in both
    by_language, _ = table_gap_by_language(result.gaps_long)
    english = by_language[by_language.language == "english"].iloc[0]
    # uk has no vectors: the language mean covers usa only in every column (before: the baseline
    # averaged usa and uk, 16.7, against steered columns of usa alone, the "↑292%")
    assert english["RCA/mcq/Baseline"] == pytest.approx(0.0)
    assert english["RCA/mcq/BiPO"] == pytest.approx(usa["RCA/BiPO"], rel=1e-6)
    assert english["PNLG/mcq/BiPO Δ"] == pytest.approx(usa["PNLG/BiPO Δ"], rel=1e-6)
    overall = by_language[by_language.language == "overall"].iloc[0]
    assert overall["RCA/mcq/Baseline"] == pytest.approx(english["RCA/mcq/Baseline"])


class FailingJudge(Judge):
    name = "always-fails"

    def score(self, request):
        return Verdict(self.name, False, error="malformed reply", attempts=3)


def test_open_ended_with_local_and_failing_judges(model, dense_vector):
    items = [item for item in ITEMS if item.country == "usa"][:2]
    config = EvalConfig(open_max_new_tokens=6, n_bootstrap=20, batch_size=2)
    conditions = make_conditions([(dense_vector, None, "v")])
    frame = evaluate_open(model, items, conditions, LocalJudge(), config, progress=False)
    assert len(frame) == 2 * 2 * 2  # conditions x items x forms
    assert frame["score"].between(0, 1).all() and frame["judge_ok"].all()
    assert (frame["judge_total"] == frame["score"] * 10).all()
    failed = evaluate_open(model, items, [BASELINE], FailingJudge(), config, progress=False)
    assert failed["score"].isna().all() and not failed["judge_ok"].any()
    scores, gaps = summarize(failed, config)
    assert (scores["unscored"] == scores["n"]).all() and scores["score"].isna().all()
    assert gaps.iloc[0]["n_pairs"] == 0


def test_stability_over_epoch_checkpoints(model, tmp_path):
    run = tmp_path / "usa-bipo"
    generator = torch.Generator().manual_seed(0)
    for epoch in (1, 2, 10):
        vector = vector_from_tensor("bipo", 1, epoch * torch.randn(model.cfg.d_model,
                                                                   generator=generator),
                                    model, country="usa", setting="localized", epoch=epoch)
        vector.save(run / "vectors" / f"epoch_{epoch:02d}")  # the layout train.py writes
    assert [epoch for epoch, _ in find_epoch_vectors(run)] == [1, 2, 10]
    assert resolve_vector_path(run) == run / "vectors" / "epoch_10"  # last epoch ...
    vector.save(run / "vector")
    assert resolve_vector_path(run) == run / "vector"  # ... unless the final vector is there
    items = [item for item in ITEMS if item.country == "usa"]
    stability = evaluate_stability(model, items, [run], VectorLoader(model), FAST,
                                   progress=False)
    steered = stability[stability.method == "bipo"]
    assert sorted(steered["epoch"].unique()) == [1, 2, 10]
    assert set(steered["setting"]) == {"localized", "nonlocalized", "both"}
    assert len(stability[stability.method == "baseline"]) == 3
    assert steered["accuracy"].between(0, 1).all()


def test_write_results_writes_tables_and_settings(model, dense_vector, tmp_path):
    conditions = make_conditions([(dense_vector, None, "v")])
    mcq = evaluate_mcq(model, ITEMS, conditions, FAST, progress=False)
    result = build_result(mcq, None, FAST)
    files = write_results(result, tmp_path, FAST, {"countries": list(COUNTRIES)})
    for name in ("mcq_instances", "scores", "gaps", "table1_mcq", "table1_mcq_md",
                 "table3_gap_by_language", "table5_gap_by_country", "settings"):
        assert files[name].is_file(), name
    assert "BiPO" in (tmp_path / "table1_mcq.md").read_text()
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["settings"]["config"]["n_bootstrap"] == 50
    assert settings["settings"]["countries"] == list(COUNTRIES)


def test_cli_end_to_end_on_the_tiny_model(model, sae, tmp_path, monkeypatch, capsys):
    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in ITEMS))
    sae_dir = tmp_path / "sae"
    sae.save_model(str(sae_dir))
    dense = vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model), model, country="usa",
                               setting="both", epoch=1)
    dense.save(tmp_path / "bipo")
    sparse = vector_from_tensor("yapo", 1, torch.rand(sae.cfg.d_sae), model, sae=sae,
                                sae_info={"path": str(sae_dir)}, country="usa", setting="both",
                                epoch=1)
    sparse.save(tmp_path / "yapo")
    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    out = tmp_path / "out"
    code = main(["--country", "usa", "uk", "--dataset", str(dataset), "--split", "all",
                 "--max-items", "2", "--vectors", str(tmp_path / "bipo.safetensors"),
                 str(tmp_path / "yapo"), "--multipliers", "1", "2", "--judge", "local",
                 "--open-max-new-tokens", "4", "--bootstrap", "20", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "RCA" in printed and "PNLG" in printed and "weaker" in printed
    table = pd.read_csv(out / "table1_mcq.csv")
    assert {"localized/Baseline", "localized/BiPO", "localized/YaPO ×2",
            "both/YaPO Δ"} <= set(table.columns)
    assert (out / "table2_open.md").is_file() and (out / "table5_gap_by_country.md").is_file()
    instances = pd.read_csv(out / "mcq_instances.csv")
    assert len(instances) == 2 * 2 * 2 + 4 * 2 * 2  # baseline: 2 countries; 4 steered: usa
    settings = json.loads((out / "settings.json").read_text())["settings"]
    assert settings["judge_weaker"] and settings["multipliers"] == [1.0, 2.0]


def test_cli_rejects_a_vector_for_another_country(model, tmp_path, monkeypatch):
    from yapo_interp.errors import UserError

    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in ITEMS))
    vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model), model,
                       country="australia").save(tmp_path / "v")
    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    with pytest.raises(UserError, match="australia"):
        main(["--country", "usa", "--dataset", str(dataset), "--vectors", str(tmp_path / "v"),
              "--out", str(tmp_path / "out")])


def test_condition_removes_hooks_after_an_exception(model, dense_vector):
    condition = make_conditions([(dense_vector, None, "v")], include_baseline=False)[0]
    assert isinstance(condition, Condition)
    with pytest.raises(RuntimeError):
        with condition.active(model):
            assert any(hook_point.fwd_hooks for hook_point in model.hook_dict.values())
            raise RuntimeError("boom")
    assert all(not hook_point.fwd_hooks for hook_point in model.hook_dict.values())


# ------------------------------------------------------------------ protocol (issue 12)


@pytest.mark.parametrize("countries", [["usa"], ["usa", "uk"], ["uk", "australia", "usa"]])
def test_cli_refuses_to_score_a_vector_on_a_question_it_was_trained_on(model, tmp_path,
                                                                     monkeypatch, countries):
    from yapo_interp.errors import UserError

    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in ITEMS))
    trained_on = [ITEMS[0].question_id]
    vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model), model, country="usa",
                       train_question_ids=trained_on,
                       split={"seed": 0, "test_fraction": 0.25}).save(tmp_path / "v")
    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    with pytest.raises(UserError, match=f"saw 1 of the evaluated questions.*{trained_on[0]}"):
        main(["--country", *countries, "--dataset", str(dataset), "--split", "all",
              "--vectors", str(tmp_path / "v"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_check_unseen_counts_the_saes_corpus(model, sae):
    from types import SimpleNamespace

    from yapo_interp.errors import UserError
    from yapo_interp.evaluate import check_unseen

    vector = vector_from_tensor("yapo", 1, torch.rand(sae.cfg.d_sae), model, sae=sae,
                                train_question_ids=[])
    fake_sae = SimpleNamespace(cfg=SimpleNamespace(metadata=SimpleNamespace(
        yapo_interp={"cultural_question_ids": [ITEMS[-1].question_id]})))
    unseen = [item for item in ITEMS if item.question_id != ITEMS[-1].question_id]
    check_unseen(vector, "v", unseen, sae=fake_sae)  # questions the SAE never saw: fine
    with pytest.raises(UserError, match="SAE's corpus"):
        check_unseen(vector, "v", ITEMS, sae=fake_sae)


def test_boxed_answer_positions_vary_by_default_and_are_reported(model):
    seen_positions = set()
    config = EvalConfig(mode="boxed", style="completion", settings=("localized",),
                        n_bootstrap=20)
    assert config.shuffle_options_seed is not None  # shuffled unless asked otherwise
    always_one = lambda prompts: ["\\boxed{1}" for _ in prompts]  # noqa: E731
    records = score_boxed(model, ITEMS, ("localized", "nonlocalized"), style="completion",
                          shuffle_seed=config.shuffle_options_seed, progress=False,
                          generate=always_one)
    for record in records:
        seen_positions.add((record["country"], record["answer_position"]))
    for country in COUNTRIES:  # each country's answer is not always at the same number
        assert len({p for c, p in seen_positions if c == country}) > 1, country
    by_form = {}
    for record in records:  # one permutation per question, shared by its two forms
        by_form.setdefault(record["item_id"], set()).add(record["option_order"])
    assert all(len(orders) == 1 for orders in by_form.values())
    frame = pd.DataFrame(records).assign(condition="Baseline", column="Baseline",
                                         method="baseline", multiplier=None, train_setting=None,
                                         epoch=None, vector=None)
    from yapo_interp.evaluate import accuracy_by_position

    table = accuracy_by_position(frame)
    # a model that always answers 1 is right exactly when the answer sits at 1
    assert table.set_index("position")["accuracy"].to_dict()[1] == 1.0
    assert (table[table["position"] != 1]["accuracy"] == 0).all()
    assert table.set_index("position")["answered_share"].to_dict()[1] == 1.0
    # unshuffled, the shipped layout puts every country's option at one fixed number
    fixed = score_boxed(model, ITEMS, ("localized",), style="completion", shuffle_seed=None,
                        progress=False, generate=always_one)
    for country in COUNTRIES:
        assert len({r["answer_position"] for r in fixed if r["country"] == country}) == 1


# ----------------------------------------------------------------------------- hostile input


def test_two_vectors_of_one_method_are_labelled_by_country_or_run(model):
    def bipo(country):
        return vector_from_tensor("bipo", 1, torch.zeros(model.cfg.d_model), model,
                                  country=country, setting="both", epoch=4)

    by_country = make_conditions([(bipo("usa"), None, "runs/usa/bipo/vector"),
                                  (bipo("uk"), None, "runs/uk/bipo/vector")])
    assert [c.label for c in by_country] == ["Baseline", "BiPO [both] e4 (USA)",
                                             "BiPO [both] e4 (UK)"]
    by_run = make_conditions([(bipo("usa"), None, "runs/seed0/bipo/vector"),
                              (bipo("usa"), None, "runs/seed1/bipo/vector")],
                             include_baseline=False)
    assert [c.label for c in by_run] == ["BiPO [both] e4 (seed0)", "BiPO [both] e4 (seed1)"]


def _cli_dataset(tmp_path):
    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in ITEMS))
    return dataset


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded")


def test_cli_checks_out_and_device_before_loading_the_model(tmp_path, monkeypatch):
    from yapo_interp.errors import UserError

    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", _no_model)
    common = ["--country", "usa", "--dataset", str(_cli_dataset(tmp_path))]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=rf"--out {blocker}/out: {blocker} is a file, not a "
                                        r"folder; choose another --out"):
        main(common + ["--out", str(blocker / "out")])
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: CUDA is not available on this "
                                            "machine.*use --device cpu"):
            main(common + ["--device", "cuda", "--out", str(tmp_path / "out")])
    with pytest.raises(UserError, match="--threads must be 0"):
        main(common + ["--threads", "-1", "--out", str(tmp_path / "out")])


def test_cli_exits_non_zero_with_the_cause_when_open_ended_scores_are_missing(
        model, tmp_path, monkeypatch, capsys):
    import yapo_interp.judge
    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    monkeypatch.setattr(yapo_interp.judge, "make_judge", lambda *args, **kwargs: FailingJudge())
    out = tmp_path / "out"
    code = main(["--country", "usa", "--dataset", str(_cli_dataset(tmp_path)), "--split", "all",
                 "--max-items", "1", "--judge", "openai", "--open-max-new-tokens", "2",
                 "--bootstrap", "10", "--threads", "1", "--out", str(out)])
    assert code == 3
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("error: the always-fails left 2 of 2 open-ended responses unscored (2x: "
                     "malformed reply); their scores are missing from the open-ended results. "
                     "Fix the judge and rerun the same command: verdicts already given are "
                     "cached and reused.")
    assert (out / "open_instances.csv").is_file()  # the results are written all the same


def test_cli_refuses_a_vector_whose_sidecar_was_edited_before_loading_the_model(
        model, tmp_path, monkeypatch):
    from yapo_interp.errors import UserError

    import yapo_interp.models

    vector_from_tensor("bipo", 2, torch.randn(model.cfg.d_model), model,
                       country="usa").save(tmp_path / "v")
    header = json.loads((tmp_path / "v.json").read_text())
    header["layer"] = 1  # the sidecar edited by hand; the tensor file still says 2
    (tmp_path / "v.json").write_text(json.dumps(header))
    monkeypatch.setattr(yapo_interp.models, "load_model", _no_model)
    with pytest.raises(UserError, match="the .json says layer 1, the .safetensors header says 2"):
        main(["--country", "usa", "--dataset", str(_cli_dataset(tmp_path)), "--vectors",
              str(tmp_path / "v"), "--out", str(tmp_path / "out")])


# ----------------------------------------------------------------------------- metrics with power


def test_loglik_rows_carry_the_answer_probability_and_margin(model):
    records = score_loglik(model, ITEMS[:3], ("localized",), batch_size=2, progress=False)
    for item, record in zip(ITEMS[:3], records):
        sums = torch.tensor(json.loads(record["option_logprob_sum"]))
        counts = torch.tensor(json.loads(record["option_tokens"]), dtype=torch.float64)
        means = sums.double() / counts
        probabilities = torch.softmax(means, 0)
        assert record["p_correct"] == pytest.approx(float(probabilities[item.answer]), abs=1e-3)
        others = torch.cat([means[:item.answer], means[item.answer + 1:]])
        assert record["margin"] == pytest.approx(float(means[item.answer] - others.max()),
                                                 abs=1e-3)
        assert (record["margin"] > 0) == (record["correct_mean"] == 1.0)


def test_paired_differences_of_two_conditions_on_the_same_instances():
    """Planted: condition A's margin is B's + 0.5 on every instance; B scores on one extra
    instance that A lacks (dropped: only shared instances are compared)."""
    rows = []
    for index, item in enumerate(ITEMS[:6]):
        for form in ("localized", "nonlocalized"):
            base = {"language": "english", "country": item.country, "item_id": item.id,
                    "question_id": item.question_id, "form": form}
            margin = 0.3 * index - (0.2 if form == "nonlocalized" else 0.0)
            rows.append({**base, "condition": "B", "margin": margin, "score": 0.0})
            if index < 5:
                rows.append({**base, "condition": "A", "margin": margin + 0.5, "score": 1.0})
    differences = paired_differences(pd.DataFrame(rows), config=FAST)
    margins = differences[(differences["metric"] == "margin")
                          & (differences["setting"] == "both")]
    assert set(margins["country"]) == {item.country for item in ITEMS[:5]}
    assert (margins["condition_a"] == "B").all() and (margins["condition_b"] == "A").all()
    assert margins["difference"].to_numpy() == pytest.approx(-0.5)
    assert (margins["ci_low"] <= margins["difference"]).all()
    usa = margins[margins["country"] == "usa"].iloc[0]
    assert usa["n_instances"] == 4 and usa["n_questions"] == 2  # ITEMS[0], ITEMS[3]: 2 questions
    assert "p_correct" not in set(differences["metric"])  # absent column: skipped


def test_sae_dense_vectors_load_with_their_sae_and_steer(model, sae, tmp_path, monkeypatch):
    """A sae-dense vector (c in R^{d_sae}) gets its SAE from the loader, like YaPO's, and its
    condition steers the scores; without the SAE it cannot be applied."""
    import yapo_interp.models as models

    loaded = []
    monkeypatch.setattr(models, "load_sae", lambda *args, **kwargs: loaded.append(args) or sae)
    generator = torch.Generator().manual_seed(2)
    vector = vector_from_tensor("sae-dense", 1, 5.0 * torch.randn(sae.cfg.d_sae,
                                                                  generator=generator),
                                model, sae=sae, sae_info={"release": "tiny"}, country="uk")
    vector.save(tmp_path / "c")
    again, its_sae, _ = VectorLoader(model).load(tmp_path / "c")
    assert its_sae is sae and loaded and again.method == "sae-dense"
    conditions = make_conditions([(again, its_sae, "c")])
    items = [item for item in ITEMS if item.country == "uk"][:2]
    frame = evaluate_mcq(model, items, conditions, FAST, progress=False)
    by = {label: group["option_logprob_sum"].tolist()
          for label, group in frame.groupby("condition")}
    assert by[conditions[0].label] != by[conditions[1].label]


def test_cli_checks_stability_runs_against_the_questions_they_saw(model, tmp_path, monkeypatch):
    from yapo_interp.errors import UserError

    dataset = tmp_path / "english.jsonl"
    dataset.write_text("".join(json.dumps(item.to_record()) + "\n" for item in ITEMS))
    run = tmp_path / "run"
    for epoch in (1, 2):
        vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model), model, country="usa",
                           epoch=epoch, train_question_ids=[ITEMS[0].question_id]
                           ).save(run / "vectors" / f"epoch_{epoch:02d}")
    import yapo_interp.models

    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    with pytest.raises(UserError, match="saw 1 of the evaluated questions"):
        main(["--country", "usa", "--dataset", str(dataset), "--split", "all", "--no-baseline",
              "--stability", str(run), "--out", str(tmp_path / "out")])


# ------------------------------------------------------------ the stage as a function (issue 16)


def test_run_evaluate_from_a_config_writes_what_the_command_writes(model, tmp_path, monkeypatch):
    """``run_evaluate(model, EvaluateConfig(...), out)`` — no argv — gives the same files as
    ``python -m yapo_interp.evaluate`` with the matching flags."""
    import yapo_interp.models
    from yapo_interp.evaluate import EvaluateConfig, build_parser, run_evaluate

    dataset = _cli_dataset(tmp_path)
    vector_from_tensor("bipo", 1, torch.randn(model.cfg.d_model), model, country="usa",
                       setting="both").save(tmp_path / "v")
    argv = ["--country", "usa", "uk", "--dataset", str(dataset), "--split", "all",
            "--max-items", "2", "--vectors", str(tmp_path / "v"), "--multipliers", "1", "2",
            "--bootstrap", "10"]
    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    assert main(argv + ["--out", str(tmp_path / "cli")]) == 0
    config = EvaluateConfig(countries=("usa", "uk"), vectors=(str(tmp_path / "v"),),
                            multipliers=(1.0, 2.0), split="all", dataset=str(dataset),
                            max_items=2, scoring=EvalConfig(style="auto", n_bootstrap=10))
    assert EvaluateConfig.from_args(build_parser().parse_args(argv)) == config
    result = run_evaluate(model, config, tmp_path / "fn")
    assert result.unscored is None and set(result.files) >= {"table1_mcq", "settings"}
    for name in ("mcq_instances.csv", "scores.csv", "table1_mcq.md", "differences.csv"):
        assert (tmp_path / "fn" / name).read_text() == (tmp_path / "cli" / name).read_text()
    written = [json.loads((tmp_path / out / "settings.json").read_text())["settings"]
               for out in ("cli", "fn")]
    for settings in written:
        settings.pop("files")
    assert written[0] == written[1] and written[0]["config"]["style"] == "completion"


def test_the_sae_of_a_vector_is_found_in_one_order(tmp_path):
    """``sae_spec``: --sae, then the SAE folder in the vector's metadata, then its release, then
    the preset's SAE at the vector's layer; with none of them, one line asking for --sae."""
    from types import SimpleNamespace

    from yapo_interp.errors import UserError
    from yapo_interp.models import get_preset
    from yapo_interp.vectors import sae_spec

    folder = tmp_path / "sae"
    folder.mkdir()
    preset = get_preset("paper")

    def vector(**sae):
        return SimpleNamespace(metadata={"sae": sae}, layer=3, method="yapo")

    both = vector(path=str(folder), release="rel", id="x")
    assert sae_spec(both, sae_override="other", sae_id="y", preset=preset) == ("other", "y", 3)
    assert sae_spec(both, preset=preset) == (str(folder), None, None)
    gone = vector(path=str(tmp_path / "gone"), release="rel", id="x")
    assert sae_spec(gone, preset=preset) == ("rel", "x", 3)
    assert sae_spec(vector(path=str(tmp_path / "gone")), preset=preset) == (
        *preset.sae_for_layer(3), 3)
    with pytest.raises(UserError, match="pass --sae"):
        sae_spec(vector())


def test_python_m_yapo_interp_evaluate_still_runs():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "yapo_interp.evaluate", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: python -m yapo_interp.evaluate" in done.stdout


def test_loglik_scoring_with_shared_prompts_equals_the_plain_path(model):
    """Each question's prompt runs once for all its options: every option log-prob, prediction
    and graded score is the plain computation's."""
    from yapo_interp.data import CulturalItem, Option
    from yapo_interp.evaluate import score_loglik

    items = [CulturalItem(
        id=f"q{i}-egypt", question_id=f"q{i}", language="arabic", country="egypt",
        topic="food", localized_prompt=f"I am from Egypt. Question {i}: what is for breakfast?",
        nonlocalized_prompt=f"Ezayak, question {i}: breakfast?",
        options=(Option(country="egypt", text=" ful medames"),
                 Option(country="morocco", text=" msemen"),
                 Option(country="western", text=" eggs and bacon" + "!" * i)), answer=0)
        for i in range(3)]
    plain = score_loglik(model, items, batch_size=2, progress=False, share_prompts=False)
    shared = score_loglik(model, items, batch_size=2, progress=False)
    assert len(plain) == len(shared) == 6
    for a, b in zip(plain, shared):
        assert a["prediction"] == b["prediction"] and a["item_id"] == b["item_id"]
        assert b["margin"] == pytest.approx(a["margin"], abs=1e-5)
        assert b["p_correct"] == pytest.approx(a["p_correct"], abs=1e-5)
        assert json.loads(b["option_logprob_sum"]) == pytest.approx(
            json.loads(a["option_logprob_sum"]), abs=2e-4)  # stored rounded to 4 decimals
