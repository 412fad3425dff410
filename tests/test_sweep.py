"""The sweep on Ray: a 2×2 grid on the tiny model in a local Ray instance, finished trials
skipped on a rerun, a raising trial reported while the others finish, the tidy table; and the
lr / λ selection on planted tables (validation only)."""

import dataclasses
import json
import math
import socket

import pandas as pd
import pytest

from yapo_interp.errors import UserError
from yapo_interp.data import CulturalItem, Option, is_test_question, is_validation_question
from yapo_interp.figures import at_selection, lr_sensitivity_figure, sweep_figures
from yapo_interp.sweep import (MEAN_METHODS, ModelSetup, SweepGrid, TrialSpec, main,
                               method_differences, read_selection, run_sweep,
                               select_settings)
from yapo_interp.sweep.gather import describe_lambda, unhelpful_steering

COUNTRIES = ("usa", "uk", "australia")
SETUP = ModelSetup(factory="yapo_interp.testing:tiny_sweep_setup")


def tiny_items(n_questions=14):
    """Short English questions (the tiny model has a 256-character context)."""
    items = []
    topics = ("breakfast", "lunch", "dinner", "snacks", "desserts", "fruits", "sports")
    for number in range(n_questions):
        topic = topics[number % len(topics)]
        question_id = f"english-{topic}-{number:02d}"
        texts = {"usa": f"pie {number}", "uk": f"tea {number}", "australia": f"avo {number}",
                 "western": f"bread {number}"}
        options = tuple(Option(country, texts[country]) for country in (*COUNTRIES, "western"))
        for index, country in enumerate(COUNTRIES):
            items.append(CulturalItem(
                id=f"{question_id}-{country}", question_id=question_id, language="english",
                country=country, topic=topic, localized_prompt=f"In {country}, dish {number}?",
                nonlocalized_prompt=f"At home, dish {number}?", options=options, answer=index,
                reference_answer=texts[country]))
    return items


def write_items(path, items):
    with path.open("w") as handle:
        for item in items:
            handle.write(json.dumps({
                "id": item.id, "question_id": item.question_id, "language": item.language,
                "country": item.country, "topic": item.topic,
                "localized_prompt": item.localized_prompt,
                "nonlocalized_prompt": item.nonlocalized_prompt,
                "options": [{"country": o.country, "text": o.text} for o in item.options],
                "answer": item.answer, "reference_answer": item.reference_answer}) + "\n")
    return path


@pytest.fixture(scope="module")
def ray_session():
    """One lean local Ray instance for the module."""
    import ray  # a dev dependency (pyproject: dev and sweep extras)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    items = tiny_items()
    ids = {item.question_id for item in items}
    # the split gives this country fitting, validation and test questions
    assert any(is_test_question(q) for q in ids) and any(is_validation_question(q) for q in ids)
    return write_items(tmp_path_factory.mktemp("data") / "english.jsonl", items)


def grid(data_file, **changes):
    shared = dict(epochs=2, batch_size=2, warmup_steps=0, beta=1.0, multipliers=(0.5, 1.0),
                  rejected="western", data=str(data_file))
    values = dict(methods=("bipo", "sae-dense"), countries=("usa",), settings=("localized",),
                  lrs=(0.05, 0.5), seeds=(0,), shared=shared, baseline=False)
    return SweepGrid(**{**values, **changes})


def test_sweep_runs_a_grid_skips_finished_trials_and_survives_a_failing_one(
        tmp_path, ray_session, data_file):
    out = tmp_path / "sweep"
    first = run_sweep(grid(data_file), out, setup=SETUP, progress=False, min_seeds=1)
    assert (first.ran, first.skipped, first.failed) == (4, 0, [])
    table = pd.read_parquet(out / "results.parquet")
    assert len(pd.read_csv(out / "results.csv")) == len(table) == len(first.table)
    assert table["trial"].nunique() == 4
    assert set(zip(table["method"], table["lr"])) == {
        (method, lr) for method in ("bipo", "sae-dense") for lr in (0.05, 0.5)}
    assert set(table["split"]) == {"validation", "test"}
    assert set(table["multiplier"]) == {0.5, 1.0}
    assert set(table["eval_setting"]) == {"localized", "nonlocalized", "both"}
    assert set(table["model"]) == {"tiny-test-model"} and set(table["layer"]) == {1}
    for column in ("epochs", "batch_size", "seed", "country", "setting", "rejected", "data",
                   "accuracy", "p_correct", "margin", "final_eval_loss", "steps",
                   "final_perturbation", "steps_to_threshold"):
        assert table[column].notna().all(), column
    assert (table["steps"] > 0).all() and (table["final_perturbation"] > 0).all()
    # the test split's instances are test questions, the validation ones are not
    instances = pd.read_parquet(out / "instances.parquet")
    for split, group in instances.groupby("split"):
        assert {is_test_question(q) for q in group["question_id"]} == {split == "test"}
    curves = pd.read_parquet(out / "curves.parquet")
    assert {"train_loss", "eval_loss", "perturbation"} <= set(curves)
    # selection: the lr of lowest mean validation loss, per method, saved
    saved = json.loads((out / "selection.json").read_text())
    for method in ("bipo", "sae-dense"):
        trials = table[table["method"] == method].drop_duplicates("trial")
        best = trials.loc[trials["final_eval_loss"].idxmin(), "lr"]
        assert saved["methods"][method]["lr"] == best
        assert saved["methods"][method]["multiplier"] in (0.5, 1.0)

    differences = pd.read_csv(out / "differences.csv")
    assert {"bipo", "sae-dense"} == set(differences["method_a"]) | set(differences["method_b"])
    assert set(differences["metric"]) == {"margin", "p_correct", "accuracy"}
    assert (differences["ci_low"] <= differences["ci_high"]).all()

    assert (out / "figures" / "loss_vs_perturbation.html").is_file()
    assert (out / "figures" / "score_vs_lambda.html").is_file()
    markers = {path: path.stat().st_mtime_ns for path in out.glob("trials/*/result.json")}
    assert len(markers) == 4
    second = run_sweep(grid(data_file), out, setup=SETUP, progress=False, min_seeds=1)
    assert (second.ran, second.skipped, second.failed) == (0, 4, [])
    assert {path: path.stat().st_mtime_ns for path in markers} == markers
    pd.testing.assert_frame_equal(second.table, first.table)

    # a country the data lacks: its trial raises; the new usa trial still finishes
    third = run_sweep(grid(data_file, methods=("bipo",), lrs=(0.05,), seeds=(1,),
                           countries=("usa", "egypt")), out, setup=SETUP, progress=False,
                      min_seeds=1)
    assert (third.ran, third.skipped, len(third.failed)) == (1, 0, 1)
    failure = third.failed[0]
    assert failure["country"] == "egypt" and "UserError" in failure["error"]
    failed_dir = out / "trials" / failure["name"]
    assert (failed_dir / "error.txt").is_file() and not (failed_dir / "result.json").exists()
    assert set(third.table["country"]) == {"usa"} and set(third.table["seed"]) == {1}
    assert pd.read_csv(out / "failures.csv")["country"].tolist() == ["egypt"]


def test_cli_quick_flags_and_checks(tmp_path):
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        main(["--epochs", "0", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="unknown method 'dpo'"):
        SweepGrid(methods=("dpo",))
    trials = SweepGrid(methods=("bipo", "caa"), lrs=(0.1, 1.0), seeds=(0, 1)).trials()
    # the baseline and CAA: one trial each (no lr, no seed), first
    assert [t.method for t in trials[:2]] == ["baseline", "caa"] and len(trials) == 6
    assert trials[0].lr is None and trials[0].setting == "both"
    assert len({t.name for t in trials}) == 6
    assert len(SweepGrid(methods=("bipo",), baseline=False).trials()) == 3
    assert TrialSpec("bipo", "egypt", "localized", 0.1, 0).name != TrialSpec(
        "bipo", "egypt", "localized", 0.1, 0, epochs=3).name  # every setting in the name hash



def test_an_address_without_a_ray_cluster_is_a_one_line_error():
    from yapo_interp.sweep import stage

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match=f"--address 127.0.0.1:{port}: no Ray cluster answers "
                                        f"there .*ray start --head --port {port}"):
        stage.connect_ray(f"127.0.0.1:{port}")  # at once, not after ray.init's minutes


def test_a_cluster_that_refuses_the_token_names_the_settings_it_needs(monkeypatch):
    from yapo_interp.sweep import stage

    def refused(address):
        try:
            raise stage.ray.exceptions.AuthenticationError("InvalidAuthToken: token missing")
        except Exception as error:
            raise ConnectionError(f"Failed to connect to Ray cluster at {address}") from error

    def unreachable(address):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    with socket.socket() as head:  # something answers at the address
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.setattr(stage.ray, "init", refused)
        with pytest.raises(UserError, match="refused this process's token; set "
                                            "RAY_AUTH_MODE=token"):
            stage.connect_ray(address)
        monkeypatch.setattr(stage.ray, "init", unreachable)
        with pytest.raises(UserError, match=f"cannot connect .*ray status --address {address}"):
            stage.connect_ray(address)


def planted_table():
    """Two methods × two lrs × three seeds; validation and test rows at two λ. The test rows
    favour the other λ, so a selection that read them would pick it."""
    rows = []
    for method, best_lr in (("bipo", 0.1), ("sae-dense", 1.0)):
        for lr in (0.1, 1.0):
            for seed in (0, 1, 2):
                loss = (0.2 if lr == best_lr else 0.5) + 0.01 * seed
                for split in ("validation", "test"):
                    for multiplier in (1.0, 2.0):
                        good = (multiplier == 2.0) == (split == "validation")
                        rows.append({"trial": f"{method}-{lr}-{seed}", "method": method,
                                     "lr": lr, "seed": seed, "setting": "localized",
                                     "eval_setting": "localized", "split": split,
                                     "multiplier": multiplier, "final_eval_loss": loss,
                                     "margin": 1.0 if good else -1.0,
                                     "p_correct": 0.5, "accuracy": 0.5})
    return pd.DataFrame(rows)


def test_selection_uses_validation_loss_for_lr_and_validation_metric_for_lambda(tmp_path):
    selection = select_settings(planted_table(), metric="margin", min_seeds=3)
    assert selection["methods"]["bipo"]["lr"] == 0.1
    assert selection["methods"]["sae-dense"]["lr"] == 1.0
    for chosen in selection["methods"].values():
        assert chosen["multiplier"] == 2.0 and chosen["n_seeds"] == 3 and "note" not in chosen
        assert chosen["validation_loss"] == pytest.approx(0.21)
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    assert read_selection(tmp_path) == {"bipo": {"lr": 0.1, "multiplier": 2.0},
                                        "sae-dense": {"lr": 1.0, "multiplier": 2.0}}
    with pytest.raises(UserError, match="not a sweep selection"):
        read_selection(tmp_path / "missing.json")
    few = select_settings(planted_table()[lambda t: t["seed"] == 0], min_seeds=3)
    assert "only 1 seed" in few["methods"]["bipo"]["note"]
    assert few["methods"]["bipo"]["lr"] == 0.1  # no lr has 3 seeds: all compete
    assert MEAN_METHODS == ("caa", "sas") and not math.isnan(
        selection["methods"]["bipo"]["validation_margin"])


def test_selection_prefers_lrs_confirmed_on_min_seeds():
    """A screen-then-confirm sweep: bipo's lr 1 has only seed 0, whose loss (0.15) beats the
    three-seed mean at lr 0.1 (0.21); the confirmed lr is chosen all the same."""
    table = planted_table()
    table = table[(table["method"] == "bipo") & ((table["lr"] == 0.1) | (table["seed"] == 0))]
    table = table.assign(final_eval_loss=table["final_eval_loss"].where(table["lr"] == 0.1, 0.15))
    chosen = select_settings(table, min_seeds=3)["methods"]["bipo"]
    assert chosen["lr"] == 0.1 and chosen["n_seeds"] == 3 and "note" not in chosen
    assert chosen["n_seeds_by_lr"] == {"0.1": 3, "1": 1}
    assert chosen["validation_loss_by_lr"]["1"] == pytest.approx(0.15)
    assert select_settings(table, min_seeds=1)["methods"]["bipo"]["lr"] == 1.0


def test_learning_rates_are_compared_on_the_groups_they_share():
    """lr 3 ran on Egypt (loss 0.30) and on the harder Nepal (0.50); lr 1 on Egypt alone
    (0.35). Pooled, lr 3's 0.40 would lose to lr 1; on Egypt, the group both ran on, it wins."""
    rows = [{"trial": f"bipo-{country}-{lr}-{seed}", "method": "bipo", "lr": lr, "seed": seed,
             "country": country, "setting": "localized", "eval_setting": "localized",
             "split": "validation", "multiplier": 1.0, "margin": 0.0,
             "final_eval_loss": loss + 0.01 * seed}
            for lr, country, loss in ((3.0, "egypt", 0.30), (3.0, "nepal", 0.50),
                                      (1.0, "egypt", 0.35))
            for seed in (0, 1, 2)]
    chosen = select_settings(pd.DataFrame(rows), min_seeds=3)["methods"]["bipo"]
    assert chosen["lr"] == 3.0 and chosen["lr_compared_on"] == ["egypt/localized"]
    assert chosen["validation_loss_by_lr"] == pytest.approx({"1": 0.36, "3": 0.31})
    assert chosen["n_seeds_by_lr"] == {"1": 3, "3": 3}
    disjoint = select_settings(pd.DataFrame(rows[3:]).assign(
        country=lambda t: t["country"].where(t["lr"] == 3.0, "morocco")), min_seeds=3)
    assert disjoint["methods"]["bipo"]["lr_compared_on"] == ["morocco/localized",
                                                             "nepal/localized"]


def test_selection_says_where_no_lambda_beats_the_unsteered_model():
    """On Nepal's validation questions the unsteered model (margin 1.0) beats BiPO's best λ
    (0.8) but not YaPO's (1.2); on Egypt both beat it. A test row that would flip Egypt's verdict
    is not read."""
    def row(method, country, split, multiplier, margin, eval_setting="localized"):
        return {"trial": f"{method}-{country}", "method": method, "lr": None if
                method == "baseline" else 1.0, "seed": 0, "country": country,
                "setting": "both" if method == "baseline" else "localized",
                "eval_setting": eval_setting, "split": split, "multiplier": multiplier,
                "final_eval_loss": 0.3, "margin": margin}
    rows = [row("baseline", "egypt", "validation", 0.0, -1.0),
            row("baseline", "egypt", "test", 0.0, 9.0),
            row("baseline", "egypt", "validation", 0.0, 9.0, eval_setting="both"),  # own group
            row("baseline", "nepal", "validation", 0.0, 1.0)]
    for method, nepal_best in (("bipo", 0.8), ("yapo", 1.2)):
        rows += [row(method, "egypt", "validation", 1.0, 0.5),
                 row(method, "nepal", "validation", 1.0, nepal_best),
                 row(method, "nepal", "validation", 2.0, nepal_best - 0.5)]
    selection = select_settings(pd.DataFrame(rows), min_seeds=1)
    assert selection["methods"]["baseline"]["validation_margin_by_group"] == {
        "egypt/both": 9.0, "egypt/localized": -1.0, "nepal/localized": 1.0}
    assert unhelpful_steering(selection) == {"bipo": {"nepal/localized": (0.8, 1.0)},
                                             "yapo": {}}
    del selection["methods"]["baseline"]
    assert unhelpful_steering(selection) == {"bipo": {}, "yapo": {}}


def test_lambda_is_chosen_per_country_on_its_own_validation_questions():
    """Egypt's vector is best at λ 2 on validation and Nepal's at λ 1 (the test rows favour the
    other λ): each country is selected, scored and differenced at its own λ."""
    rows = []
    for country, best in (("egypt", 2.0), ("nepal", 1.0)):
        for method in ("bipo", "yapo"):
            for split in ("validation", "test"):
                for multiplier in (1.0, 2.0):
                    for number in range(4):
                        good = (multiplier == best) == (split == "validation")
                        rows.append({
                            "trial": f"{method}-{country}", "method": method, "lr": 1.0,
                            "seed": 0, "country": country, "setting": "localized",
                            "eval_setting": "localized", "split": split,
                            "multiplier": multiplier, "final_eval_loss": 0.3,
                            "item_id": f"q{number}-{country}", "question_id": f"q{number}",
                            "form": "localized", "p_correct": 0.5, "accuracy": 0.5,
                            "score": 0.5, "margin": (1.0 if good else -1.0) + (
                                0.5 if method == "yapo" else 0.0) + 0.1 * number})
    table = pd.DataFrame(rows)
    chosen = select_settings(table, min_seeds=1)["methods"]["bipo"]
    assert chosen["multiplier_by_group"] == {"egypt/localized": 2.0, "nepal/localized": 1.0}
    assert describe_lambda(chosen).endswith("(egypt/localized 2, nepal/localized 1)")
    selection = select_settings(table, min_seeds=1)
    test = at_selection(table[table["split"] == "test"], selection)
    assert set(zip(test["country"], test["multiplier"])) == {("egypt", 2.0), ("nepal", 1.0)}
    assert set(test["margin"].round(6)) <= {-1.0, -0.9, -0.8, -0.7, -0.5, -0.4, -0.3, -0.2}
    differences = method_differences(table, selection, n_resamples=200)
    margin = differences[differences["metric"] == "margin"].set_index("country")
    assert margin.loc["egypt", "difference"] == pytest.approx(-0.5)  # bipo − yapo
    assert margin.loc["egypt", "multiplier_a"] == 2.0
    assert margin.loc["nepal", "multiplier_a"] == 1.0
    assert math.isnan(margin.loc["all", "multiplier_a"])  # the countries chose differently
    one_country = select_settings(table[table["country"] == "egypt"], min_seeds=1)
    assert describe_lambda(one_country["methods"]["bipo"]) == "λ 2.0"


def test_method_differences_at_the_selected_settings_on_test_only():
    """Planted instances: at its selected (lr, λ) method A's margin is B's + 0.3 on every test
    instance (two seeds averaged); other lrs, λs and the validation split carry decoys."""
    rows = []
    for method, lr in (("bipo", 0.1), ("sae-dense", 1.0)):
        for other_lr in (0.1, 1.0):
            for multiplier in (1.0, 2.0):
                for split in ("validation", "test"):
                    for seed in (0, 1):
                        for number in range(6):
                            for form in ("localized", "nonlocalized"):
                                selected = (other_lr, multiplier, split) == (lr, 2.0, "test")
                                base = 0.1 * number + (0.05 if form == "localized" else 0.0)
                                margin = base + (0.3 if method == "sae-dense" else 0.0) + (
                                    0.01 * (seed - 0.5))
                                rows.append({
                                    "split": split, "method": method, "lr": other_lr,
                                    "multiplier": multiplier, "seed": seed, "country": "usa",
                                    "setting": "localized", "item_id": f"q{number}-usa",
                                    "question_id": f"q{number}", "form": form,
                                    "margin": margin if selected else 9.0,
                                    "p_correct": 0.5, "score": 1.0 if selected else 0.0})
    selection = {"methods": {"bipo": {"lr": 0.1, "multiplier": 2.0},
                             "sae-dense": {"lr": 1.0, "multiplier": 2.0}}}
    differences = method_differences(pd.DataFrame(rows), selection, n_resamples=300)
    margin = differences[(differences["metric"] == "margin")
                         & (differences["country"] == "usa")].iloc[0]
    assert (margin["method_a"], margin["method_b"]) == ("bipo", "sae-dense")
    assert margin["difference"] == pytest.approx(-0.3)
    assert margin["ci_low"] == pytest.approx(-0.3) and margin["ci_high"] == pytest.approx(-0.3)
    assert (margin["n_questions"], margin["n_instances"]) == (6, 12)
    accuracy = differences[differences["metric"] == "accuracy"]
    assert (accuracy["difference"] == 0).all()  # decoy rows (score 0) were not used
    assert set(differences["country"]) == {"usa", "all"}


def test_figures_plot_each_method_at_its_selected_lr():
    """Loss against step and against perturbation (mean over the selected lr's trials), and
    margin against λ per split; the other lr's decoy curve is not drawn."""
    curves = pd.DataFrame([
        {"method": method, "lr": lr, "seed": seed, "step": step, "train_loss": 0.7 / step,
         "perturbation": (10.0 if lr == 1.0 else 1.0) * step + seed}
        for method in ("bipo", "sae-dense") for lr in (0.1, 1.0) for seed in (0, 2)
        for step in (1, 2, 3)])
    selection = {"methods": {"bipo": {"lr": 0.1}, "sae-dense": {"lr": 1.0}}}
    figures = sweep_figures(curves, planted_table(), selection)
    traces = {(trace.name, trace.xaxis): trace for trace in figures["loss_vs_perturbation"].data}
    assert list(traces[("BiPO", "x2")].x) == [2.0, 3.0, 4.0]  # 1·step + mean seed 1
    assert list(traces[("SAE-dense", "x2")].x) == [11.0, 21.0, 31.0]
    assert list(traces[("BiPO", "x")].y) == pytest.approx([0.7, 0.35, 0.7 / 3])
    lambdas = {(trace.name, trace.xaxis): trace for trace in figures["score_vs_lambda"].data}
    assert list(lambdas[("BiPO", "x")].y) == [-1.0, 1.0]  # validation: λ = 2 is good
    assert list(lambdas[("BiPO", "x2")].y) == [1.0, -1.0]  # test: the decoy



def test_figures_keep_each_country_and_setting_in_its_own_panel():
    """Egypt's runs stop at step 3, Nepal's at step 2 and lower; Egypt's λ curve rises and
    Nepal's falls. Averaged together, step 3 would jump to Egypt alone and λ would look flat."""
    curves = pd.DataFrame([
        {"method": "bipo", "country": country, "setting": "localized", "lr": 3.0, "seed": seed,
         "step": step, "train_loss": base / step, "perturbation": 10.0 * step}
        for country, base, steps in (("egypt", 0.6, (1, 2, 3)), ("nepal", 0.2, (1, 2)))
        for seed in (0, 1) for step in steps])
    table = pd.DataFrame([
        {"trial": f"bipo-{country}", "method": "bipo", "country": country, "lr": 3.0, "seed": 0,
         "setting": "localized", "eval_setting": "localized", "split": split,
         "multiplier": multiplier, "final_eval_loss": 0.3,
         "margin": multiplier * (1.0 if country == "egypt" else -1.0)}
        for country in ("egypt", "nepal") for split in ("validation", "test")
        for multiplier in (1.0, 2.0)] + [  # the unsteered model: every form, at λ 0
        {"trial": f"baseline-{country}", "method": "baseline", "country": country,
         "setting": "both", "eval_setting": form, "split": split, "multiplier": 0.0,
         "margin": {"egypt": 0.5, "nepal": -0.5}[country] + (form == "localized")}
        for country in ("egypt", "nepal") for split in ("validation", "test")
        for form in ("localized", "nonlocalized")])
    selection = {"methods": {"bipo": {"lr": 3.0, "multiplier": 1.0, "multiplier_by_group": {
        "egypt/localized": 2.0, "nepal/localized": 1.0}}}}
    figures = sweep_figures(curves, table, selection)
    steps = {trace.xaxis: list(trace.y) for trace in figures["loss_vs_perturbation"].data
             if trace.mode == "lines"}
    assert steps == {"x": pytest.approx([0.6, 0.3, 0.2]), "x3": pytest.approx([0.2, 0.1])}
    titles = [a.text for a in figures["loss_vs_perturbation"].layout.annotations]
    assert titles[0] == "egypt · trained localized · loss against step"
    assert titles[2] == "nepal · trained localized · loss against step"
    lines = {trace.xaxis: list(trace.y) for trace in figures["score_vs_lambda"].data
             if trace.mode == "lines+markers"}
    assert lines == {"x": [1.0, 2.0], "x2": [1.0, 2.0], "x3": [-1.0, -2.0], "x4": [-1.0, -2.0]}
    stars = {trace.xaxis: (trace.x[0], trace.y[0]) for trace in figures["score_vs_lambda"].data
             if trace.mode == "markers"}
    assert stars == {"x": (2.0, 2.0), "x3": (1.0, -1.0)}  # each group's own λ, on validation
    unsteered = {trace.xaxis: list(trace.y) for trace in figures["score_vs_lambda"].data
                 if trace.name == "unsteered"}  # its own country, in the form trained on
    assert unsteered == {"x": [1.5, 1.5], "x2": [1.5, 1.5], "x3": [0.5, 0.5], "x4": [0.5, 0.5]}

    trials = pd.DataFrame([  # lr 3 on both countries, lr 1 on Egypt alone
        {"trial": f"bipo-{country}-{lr}-{seed}", "method": "bipo", "country": country,
         "setting": "localized", "lr": lr, "seed": seed,
         "final_eval_loss": {"egypt": 0.3, "nepal": 0.5}[country] + (0.05 if lr == 1.0 else 0)}
        for country, lrs in (("egypt", (1.0, 3.0)), ("nepal", (3.0,))) for lr in lrs
        for seed in (0, 1)])
    figure = lr_sensitivity_figure(trials, {"methods": {"bipo": {"lr": 3.0}}})
    means = {trace.xaxis: dict(zip(trace.x, trace.y)) for trace in figure.data
             if trace.mode == "lines+markers"}
    assert means == {"x": {1.0: pytest.approx(0.35), 3.0: pytest.approx(0.3)},
                     "x2": {3.0: pytest.approx(0.5)}}  # pooled, lr 3 would read 0.4


def test_cli_runs_a_sweep_with_an_injected_model(tmp_path, ray_session, data_file, capsys):
    out = tmp_path / "cli"
    argv = ["--methods", "bipo", "--countries", "usa", "--lrs", "0.1", "--seeds", "0", "1",
            "--epochs", "1", "--batch-size", "2", "--warmup-steps", "0", "--rejected",
            "western", "--data", str(data_file), "--multipliers", "1", "--min-seeds", "1",
            "--model-factory", "yapo_interp.testing:tiny_sweep_setup", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # the two bipo seeds and the unsteered baseline
    assert "3 ran, 0 skipped" in printed and "bipo: lr 0.1, λ 1.0" in printed
    assert "baseline:" not in printed
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["seed"].unique()) == [0, 1] and set(table["epochs"]) == {1}
    assert main(argv) == 0 and "0 ran, 3 skipped" in capsys.readouterr().out


def test_a_worker_keeps_its_model_between_trials(monkeypatch):
    """The cache is keyed by the setup's values: a structurally equal copy (what a Ray task
    unpickles, possibly as another class object) finds the model loaded by the first trial."""
    import dataclasses

    import yapo_interp.sweep.model_setup as sweep  # the module whose _LOADED a worker keeps

    calls = []
    monkeypatch.setattr(sweep, "_LOADED", {})
    monkeypatch.setattr(ModelSetup, "_load", lambda self: calls.append(self) or ("m", "s", None, 1))
    setup = ModelSetup(factory="yapo_interp.testing:tiny_sweep_setup")
    first = setup.load()
    Copy = dataclasses.make_dataclass("ModelSetup", [f.name for f in dataclasses.fields(setup)],
                                      frozen=True)
    assert ModelSetup.load(Copy(**dataclasses.asdict(setup))) is first and len(calls) == 1
    ModelSetup(factory="other:setup").load()  # another model replaces it (one per worker)
    assert len(calls) == 2 and len(sweep._LOADED) == 1


def test_trials_come_seed_by_seed_and_lr_by_lr_so_a_partial_sweep_is_balanced():
    grid = SweepGrid(methods=("bipo", "yapo", "sae-dense"), lrs=(0.1, 1.0), seeds=(0, 1, 2),
                     baseline=False)
    trials = grid.trials()
    assert len(trials) == 18
    for cut in (3, 6, 9, 12):  # any whole (seed, lr) slice holds every method once
        head = trials[:cut]
        for key in {(t.seed, t.lr) for t in head}:
            assert sorted(t.method for t in head if (t.seed, t.lr) == key) == [
                "bipo", "sae-dense", "yapo"]
    assert [(t.seed, t.lr) for t in trials[::3]] == [
        (seed, lr) for seed in (0, 1, 2) for lr in (0.1, 1.0)]


def test_mean_ci_over_seeds_is_the_student_t_interval():
    from yapo_interp.metrics import mean_ci_over_seeds

    interval = mean_ci_over_seeds([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3)
    assert interval.value == pytest.approx(2.0)
    assert interval.high - interval.value == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert interval.value - interval.low == pytest.approx(interval.high - interval.value)
    # an accuracy's interval stays within [0, 1], where a t interval on 3 seeds need not
    near_one = [0.8, 1.0, 1.0]
    assert mean_ci_over_seeds(near_one).high > 1.0
    clipped = mean_ci_over_seeds(near_one, bounds=(0.0, 1.0))
    assert clipped.high == 1.0 and clipped.low == mean_ci_over_seeds(near_one).low
    single = mean_ci_over_seeds([0.4, float("nan")])
    assert (single.value, single.n) == (0.4, 1)  # one seed: no interval, not a zero-width one
    assert math.isnan(single.low) and math.isnan(single.high)
    with pytest.raises(ValueError, match="no seeds"):
        mean_ci_over_seeds([])


def planted_curves():
    """Validation losses of two methods × two seeds at their selected lr, and one other lr."""
    rows = []
    losses = {("yapo", 0): [0.6, 0.45, 0.35], ("yapo", 1): [0.55, 0.5, 0.38],
              ("bipo", 0): [0.68, 0.62, 0.55], ("bipo", 1): [0.66, 0.58, 0.5]}
    for (method, seed), values in losses.items():
        for lr in (0.1, 1.0):
            for step, loss in zip((10, 20, 30), values):
                rows.append({"trial": f"{method}-{lr}-{seed}", "method": method, "lr": lr,
                             "seed": seed, "country": "egypt", "setting": "localized",
                             "step": step, "epoch": step // 10,
                             "eval_loss": loss + (0.0 if lr == 1.0 else 0.1)})
    return pd.DataFrame(rows)


def test_convergence_by_threshold_counts_steps_per_seed_and_marks_the_selected_lr():
    from yapo_interp.sweep.report import convergence_by_threshold

    selection = {"methods": {"yapo": {"lr": 1.0}, "bipo": {"lr": 1.0}}}
    table = convergence_by_threshold(planted_curves(), selection, thresholds=(0.5, 0.4))
    at = table.set_index(["method", "lr", "threshold"])
    # yapo at lr 1: 0.5 reached at step 20 (seed 0) and 20 (seed 1); 0.4 at 30 and 30
    assert at.loc[("yapo", 1.0, 0.5), "median_steps"] == 20
    assert at.loc[("yapo", 1.0, 0.4), "median_steps"] == 30
    # bipo at lr 1: 0.5 only by seed 1 (step 30): the median over 2 seeds is "never"
    assert at.loc[("bipo", 1.0, 0.5), "n_reached"] == 1
    assert at.loc[("bipo", 1.0, 0.5), "median_steps"] == math.inf
    assert at.loc[("bipo", 0.1, 0.4), "n_reached"] == 0
    assert set(table.loc[table["selected_lr"], "lr"]) == {1.0}


def test_rca_and_pnlg_per_seed_at_the_selected_settings():
    from yapo_interp.sweep.report import table3_rca_pnlg

    rows = []
    for seed, (loc, non) in enumerate(((1.0, 0.5), (0.5, 0.5))):
        for form, share in (("localized", loc), ("nonlocalized", non)):
            for index in range(4):
                for multiplier in (1.0, 2.0):
                    rows.append({"split": "test", "method": "yapo", "lr": 1.0, "seed": seed,
                                 "multiplier": multiplier, "country": "egypt",
                                 "setting": "localized", "form": form,
                                 "score": float(index < share * 4) if multiplier == 1.0
                                 else 0.0})
    selection = {"methods": {"yapo": {"lr": 1.0, "multiplier": 1.0}}}
    table = table3_rca_pnlg(pd.DataFrame(rows), selection)
    row = table.iloc[0]
    # seed 0: loc 1, non 0.5 -> RCA 2/3, PNLG 0.5/0.75; seed 1: 0.5, 0.5 -> RCA 0.5, PNLG 0
    assert row["n_seeds"] == 2
    assert row["rca"] == pytest.approx((2 / 3 + 0.5) / 2, abs=1e-6)
    assert row["pnlg"] == pytest.approx((0.5 / 0.75) / 2, abs=1e-6)
    assert row["acc_localized"] == pytest.approx(0.75)


def test_a_baseline_trial_and_the_report(tmp_path, ray_session, data_file):
    out = tmp_path / "sweep"
    sweep = grid(data_file, methods=("bipo",), lrs=(0.5,), seeds=(0, 1), baseline=True)
    result = run_sweep(sweep, out, setup=SETUP, progress=False, min_seeds=2)
    assert (result.ran, result.failed) == (3, [])
    table = result.table
    base = table[table["method"] == "baseline"]
    assert set(base["multiplier"]) == {0.0} and set(base["split"]) == {"validation", "test"}
    chosen = result.selection["methods"]["baseline"]
    assert (chosen["lr"], chosen["multiplier"]) == (None, 0.0)
    assert chosen["validation_margin_by_group"]["usa/localized"] == pytest.approx(base[
        (base["split"] == "validation") & (base["eval_setting"] == "localized")]["margin"].mean())
    # every curve row keeps the trial's lr (a log record's scheduled lr is "step_lr")
    curves = pd.read_parquet(out / "curves.parquet")
    assert set(curves["lr"]) == {0.5} and curves["step_lr"].notna().any()
    differences = pd.read_csv(out / "differences.csv")
    against = differences[differences["method_b"] == "baseline"]
    assert set(against["method_a"]) == {"bipo"} and set(against["setting"]) == {"localized"}
    scores = pd.read_csv(out / "seed_scores.csv")
    bipo = scores[(scores["method"] == "bipo") & (scores["eval_setting"] == "both")].iloc[0]
    assert bipo["n_seeds"] == 2 and bipo["margin_ci_low"] <= bipo["margin"] <= bipo[
        "margin_ci_high"]
    assert json.loads(bipo["margin_per_seed"]) == pytest.approx(sorted(
        table[(table["method"] == "bipo") & (table["split"] == "test")
              & (table["eval_setting"] == "both") & (table["multiplier"] == bipo["multiplier"])
              ].sort_values("seed")["margin"]), abs=1e-4)
    assert {"baseline", "bipo"} <= set(pd.read_csv(out / "table1_mcq.csv").columns)
    for name in ("figure2_loss_curves", "lr_sensitivity", "figure5_test_scores"):
        assert (out / "figures" / f"{name}.html").is_file()
    report = (out / "report.md").read_text()
    assert "## Convergence" in report and "bipo" in report and "max_rebound" in report
    trials = pd.read_csv(out / "trials.csv").set_index("trial")
    assert len(trials) == 2 and trials["eval_loss_rebound"].notna().all()
    assert curves.dropna(subset=["eval_loss"]).groupby("trial").size().min() >= 2
    for trial, run in curves.dropna(subset=["eval_loss"]).groupby("trial"):
        losses = run.sort_values("step")["eval_loss"].to_numpy()
        assert trials.loc[trial, "eval_loss_rebound"] == pytest.approx(
            max(loss - min(losses[:index + 1]) for index, loss in enumerate(losses)))
    saved = json.loads((out / "sweep.json").read_text())  # the settings that made it
    assert saved["settings"]["grid"]["seeds"] == [0, 1] and saved["finished"] == 3
    # --report-only: a bigger grid runs nothing new and reports the finished trials
    bigger = grid(data_file, methods=("bipo",), lrs=(0.5,), seeds=(0, 1, 2), baseline=True)
    again = run_sweep(bigger, out, setup=SETUP, progress=False, run_trials=False)
    assert (again.ran, again.skipped) == (0, 3)
    assert not any((out / "trials").glob("bipo-*-s2-*"))


def test_a_wider_lambda_grid_scores_finished_vectors_without_retraining(
        tmp_path, ray_session, data_file):
    def at(multipliers, out):
        base = grid(data_file, methods=("bipo", "sae-dense", "caa"), lrs=(0.5,), baseline=True)
        sweep = dataclasses.replace(base, shared={**base.shared, "multipliers": multipliers})
        return run_sweep(sweep, out, setup=SETUP, progress=False, min_seeds=1), sweep

    def trained_files(out, *, written=False):
        return {path.relative_to(out): (path.read_bytes(), written and path.stat().st_mtime_ns)
                for pattern in ("trials/*/train/log.jsonl", "trials/*/train/vector.safetensors")
                for path in out.glob(pattern)}

    def scores(out):
        frame = pd.read_parquet(out / "instances.parquet").drop(columns="vector")
        return frame.sort_values(["trial", "split", "multiplier", "item_id", "form"],
                                 ignore_index=True)

    narrow_out, fresh_out = tmp_path / "widened", tmp_path / "fresh"
    narrow, narrow_grid = at((1.0,), narrow_out)
    assert (narrow.ran, narrow.rescored, narrow.failed) == (4, 0, [])
    trained, written = trained_files(narrow_out), trained_files(narrow_out, written=True)
    assert len(trained) == 5  # bipo and sae-dense: log and vector; caa: its vector
    widened, wide_grid = at((0.5, 1.0, 2.0), narrow_out)
    # λ is not a training field: the same folders, the vectors scored at the λ they lacked
    assert [spec.name for spec in wide_grid.trials()] == [
        spec.name for spec in narrow_grid.trials()]
    assert (widened.ran, widened.rescored, widened.skipped) == (3, 3, 1)  # the baseline: λ 0
    assert trained_files(narrow_out, written=True) == written  # not rewritten
    for marker in narrow_out.glob("trials/*/result.json"):
        spec = json.loads(marker.read_text())["spec"]
        assert spec["multipliers"] == ([1.0] if spec["method"] == "baseline" else [0.5, 1.0, 2.0])
    # the same numbers as a sweep that scored every λ from the start
    fresh, _ = at((0.5, 1.0, 2.0), fresh_out)
    assert (fresh.ran, fresh.rescored) == (4, 0)
    assert trained_files(fresh_out) == trained
    pd.testing.assert_frame_equal(scores(narrow_out), scores(fresh_out))
    key = ["trial", "split", "multiplier", "eval_setting"]
    pd.testing.assert_frame_equal(
        widened.table.drop(columns="seconds").sort_values(key, ignore_index=True),
        fresh.table.drop(columns="seconds").sort_values(key, ignore_index=True))
    # the narrow grid, reported again, reads only its own λ
    again = run_sweep(narrow_grid, narrow_out, setup=SETUP, progress=False, min_seeds=1,
                      run_trials=False)
    pd.testing.assert_frame_equal(again.table.drop(columns="seconds"),
                                  narrow.table.drop(columns="seconds"))
    assert set(pd.read_parquet(narrow_out / "instances.parquet")["multiplier"]) == {0.0, 1.0}
