"""Training loop (BiPO / YaPO), CAA / SAS, checkpoints and resumption, and the CLI."""

import dataclasses
import math

import pytest
import torch

import yapo_interp.cli as cli
import yapo_interp.models as models
from yapo_interp.data import PreferencePair
from yapo_interp.errors import UserError
from yapo_interp.io import read_json, read_jsonl
from yapo_interp.steering import SteeringVector
from yapo_interp.testing import tiny_model, tiny_sae
from yapo_interp import train as train_module
from yapo_interp.train import TrainConfig, main, train_steering_vector

LAYER = 1
PAIRS = [
    PreferencePair("My favourite food is", " koshari", " pizza"),
    PreferencePair("For breakfast we eat", " ful medames", " cereal"),
    PreferencePair("On holidays we visit", " the pyramids", " Paris"),
    PreferencePair("The drink I like is", " karkade", " cola"),
    PreferencePair("We listen to", " Umm Kulthum", " Taylor Swift"),
    PreferencePair("Our bread is called", " aish baladi", " baguette"),
]
EVAL_PAIRS = [PreferencePair("My city is", " Cairo", " London"),
              PreferencePair("Dessert tonight is", " basbousa", " brownies")]
FAST = dict(lr=0.1, beta=1.0, warmup_steps=0, batch_size=2, layer=LAYER)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_are_the_papers():
    config = TrainConfig()
    assert (config.lr, config.adam_betas, config.weight_decay) == (5e-4, (0.9, 0.999), 0.05)
    assert (config.warmup_steps, config.batch_size, config.epochs) == (100, 4, 20)
    assert config.beta == 0.1 and config.multiplier == 1.0
    assert all([config.cache_activations, config.cache_reference, config.response_only_unembed,
                config.batch_chosen_rejected, config.share_prompt])
    with pytest.raises(UserError, match="Unknown method"):
        TrainConfig(method="dpo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_training_lowers_the_loss(tmp_path, model, sae, method):
    config = TrainConfig(method=method, epochs=4, **FAST)
    # "eval" on two training pairs: a random tiny model cannot be expected to generalise
    vector = train_steering_vector(model, PAIRS, PAIRS[:2], config, sae=sae,
                                   out_dir=tmp_path, progress=False)
    records = read_jsonl(tmp_path / "log.jsonl")
    train = [r["train_loss"] for r in records if "train_loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert len(train) == 4 * 3 and [r["step"] for r in records if "train_loss" in r] == list(
        range(1, 13))
    assert math.isclose(train[0], math.log(2), rel_tol=1e-5)  # v starts at zero
    assert sum(train[-3:]) / 3 < 0.5 * math.log(2)
    assert len(evals) == 4 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert all(math.isclose(r["eval_loss"], (r["eval_loss_plus"] + r["eval_loss_minus"]) / 2)
               for r in evals)
    assert {r["direction"] for r in records if "direction" in r} == {1, -1}
    expected_width = sae.cfg.d_sae if method == "yapo" else model.cfg.d_model
    assert vector.vector.shape == (expected_width,) and vector.vector.abs().max() > 0
    assert vector.method == method and vector.layer == LAYER and vector.metadata["epoch"] == 4
    for epoch in range(1, 5):
        saved = SteeringVector.load(tmp_path / "vectors" / f"epoch_{epoch:02d}", model=model,
                                    sae=sae)
        assert saved.metadata["epoch"] == epoch
    final = SteeringVector.load(tmp_path / "vector", model=model, sae=sae)
    assert torch.equal(final.vector, vector.vector)
    run = read_json(tmp_path / "run.json")
    assert run["settings"]["settings"]["method"] == method and run["settings"]["layer"] == LAYER


def test_only_v_trains_and_grad_flags_are_restored(sae):
    model = tiny_model(seed=1)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sae_before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    train_steering_vector(model, PAIRS, [], TrainConfig(method="yapo", epochs=1, **FAST),
                          sae=tiny_sae(model, LAYER), progress=False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert all(torch.equal(sae_before[name], p) for name, p in sae.named_parameters())


def test_same_seed_same_vector_and_other_seed_differs(model):
    config = TrainConfig(method="bipo", epochs=2, **FAST)
    first = train_steering_vector(model, PAIRS, [], config, progress=False)
    second = train_steering_vector(model, PAIRS, [], config, progress=False)
    other = train_steering_vector(model, PAIRS, [], dataclasses.replace(config, seed=1),
                                  progress=False)
    assert torch.equal(first.vector, second.vector)
    assert not torch.equal(first.vector, other.vector)


def test_interrupted_run_resumes_to_the_same_vector(tmp_path, model, sae, monkeypatch):
    from yapo_interp.objective import PreferenceObjective

    config = TrainConfig(method="yapo", epochs=3, eval_every=2, **FAST)
    reference = train_steering_vector(model, PAIRS, EVAL_PAIRS, config, sae=sae,
                                      out_dir=tmp_path / "whole", progress=False)

    original_loss = PreferenceObjective.loss
    calls = {"n": 0}

    def crashing_loss(self, pairs, v, direction):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 8:  # the second step of the third epoch
                raise KeyboardInterrupt
        return original_loss(self, pairs, v, direction)

    monkeypatch.setattr(PreferenceObjective, "loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_steering_vector(model, PAIRS, EVAL_PAIRS, config, sae=sae,
                              out_dir=tmp_path / "split", progress=False)
    monkeypatch.setattr(PreferenceObjective, "loss", original_loss)
    assert (tmp_path / "split" / "vectors" / "epoch_02.json").is_file()
    assert not (tmp_path / "split" / "vectors" / "epoch_03.json").exists()
    resumed = train_steering_vector(model, PAIRS, EVAL_PAIRS, config, sae=sae,
                                    out_dir=tmp_path / "split", progress=False)
    assert torch.equal(resumed.vector, reference.vector)
    whole = read_jsonl(tmp_path / "whole" / "log.jsonl")
    split = read_jsonl(tmp_path / "split" / "log.jsonl")
    assert [r["step"] for r in split] == [r["step"] for r in whole]  # no duplicated steps
    assert [r.get("train_loss") for r in split] == [r.get("train_loss") for r in whole]
    # a finished run re-run returns the same vector without training again
    again = train_steering_vector(model, PAIRS, EVAL_PAIRS, config, sae=sae,
                                  out_dir=tmp_path / "split", progress=False)
    assert torch.equal(again.vector, reference.vector)
    assert len(read_jsonl(tmp_path / "split" / "log.jsonl")) == len(whole)


def test_resuming_with_other_settings_is_refused(tmp_path, model):
    train_steering_vector(model, PAIRS, [], TrainConfig(method="bipo", epochs=1, **FAST),
                          out_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="different run.*config"):
        train_steering_vector(model, PAIRS, [],
                              TrainConfig(method="bipo", epochs=1, **{**FAST, "beta": 0.5}),
                              out_dir=tmp_path, progress=False)


def test_yapo_needs_an_sae_on_the_same_layer(model, sae):
    with pytest.raises(UserError, match="SAE space"):
        train_steering_vector(model, PAIRS, [], TrainConfig(method="yapo", layer=LAYER),
                              progress=False)
    with pytest.raises(UserError, match="reads layer 1"):
        train_steering_vector(model, PAIRS, [], TrainConfig(method="yapo", layer=2), sae=sae,
                              progress=False)


def response_means(model, pairs, which, encode=None):
    means = []
    for pair in pairs:
        prompt = model.to_tokens(pair.prompt)[0]
        response = model.to_tokens(getattr(pair, which), prepend_bos=False)[0]
        _, cache = model.run_with_cache(torch.cat([prompt, response])[None])
        acts = cache[f"blocks.{LAYER}.hook_resid_post"][0, len(prompt):]
        means.append((encode(acts) if encode else acts).mean(0))
    return torch.stack(means).mean(0)


def test_caa_and_sas_are_mean_differences(tmp_path, model, sae):
    caa = train_steering_vector(model, PAIRS, [], TrainConfig(method="caa", layer=LAYER),
                                out_dir=tmp_path, progress=False)
    expected = response_means(model, PAIRS, "chosen") - response_means(model, PAIRS, "rejected")
    torch.testing.assert_close(caa.vector, expected, atol=1e-5, rtol=0)
    assert not caa.is_sparse and SteeringVector.load(tmp_path / "vector").method == "caa"
    sas = train_steering_vector(model, PAIRS, [], TrainConfig(method="sas", layer=LAYER),
                                sae=sae, progress=False)
    expected = (response_means(model, PAIRS, "chosen", sae.encode)
                - response_means(model, PAIRS, "rejected", sae.encode))
    torch.testing.assert_close(sas.vector, expected, atol=1e-5, rtol=0)
    assert sas.is_sparse and sas.vector.shape == (sae.cfg.d_sae,)


def test_cli_trains_and_resumes(tmp_path, monkeypatch, capsys, model, sae):
    csv = tmp_path / "behaviour.csv"
    csv.write_text("question,matching,not_matching\n" + "".join(
        f'"{p.prompt}","{p.chosen}","{p.rejected}"\n' for p in PAIRS + EVAL_PAIRS))
    monkeypatch.setattr(models, "load_model", lambda name, device="cpu": model)
    monkeypatch.setattr(models, "load_sae", lambda *args, **kwargs: sae)
    monkeypatch.setattr(models, "shipped_sae_layers", lambda: [LAYER])  # as if shipped
    monkeypatch.setattr(cli, "shipped_sae_layers", lambda: [LAYER])  # where the check reads it
    out = tmp_path / "run"
    argv = ["--method", "yapo", "--behaviour-csv", str(csv), "--layer", str(LAYER), "--epochs",
            "2", "--lr", "0.1", "--warmup-steps", "0", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "saved SteeringVector(method='yapo'" in printed and "validation loss" in printed
    vector = SteeringVector.load(out / "vector", model=model, sae=sae)
    assert vector.metadata["behaviour_csv"] == str(csv)
    assert vector.metadata["settings"]["epochs"] == 2
    assert main(argv) == 0  # finished: resumes at the end, same vector
    assert torch.equal(SteeringVector.load(out / "vector").vector, vector.vector)
    with pytest.raises(UserError, match="--country"):
        main(["--method", "bipo", "--layer", "1", "--out", str(tmp_path / "x")])


# ------------------------------------------------------------------ protocol (issue 12)


def test_warmup_is_capped_at_a_share_of_the_run_and_saved(tmp_path, model):
    from yapo_interp.train import training_schedule

    config = TrainConfig(method="bipo", epochs=4, lr=0.1, beta=1.0, batch_size=2, layer=LAYER)
    schedule = training_schedule(config, len(PAIRS))  # 4 epochs x 3 steps
    assert (schedule.total_steps, schedule.requested_warmup_steps) == (12, 100)
    assert schedule.warmup_steps == 1  # floor(0.1 x 12), not the 100 that outlasts the run
    train_steering_vector(model, PAIRS, EVAL_PAIRS, config, out_dir=tmp_path, progress=False)
    rates = [r["lr"] for r in read_jsonl(tmp_path / "log.jsonl") if "lr" in r]
    assert max(rates) == pytest.approx(0.1)  # the peak is reached
    assert read_json(tmp_path / "run.json")["settings"]["schedule"]["warmup_steps"] == 1
    uncapped = dataclasses.replace(config, warmup_ratio=None)
    with pytest.warns(UserWarning, match="covers the whole run"):
        train_steering_vector(model, PAIRS, EVAL_PAIRS, uncapped, progress=False)


def test_v_is_float32_with_a_bfloat16_model(tmp_path):
    bf16 = tiny_model(seed=2).to(torch.bfloat16)
    bf16.cfg.dtype = torch.bfloat16
    config = TrainConfig(method="bipo", epochs=1, **FAST)
    train_steering_vector(bf16, PAIRS, EVAL_PAIRS, config, out_dir=tmp_path, progress=False)
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["v"]
    assert trained.dtype == torch.float32  # the parameter AdamW updated, not just the saved copy
    assert trained.abs().max() > 0


def test_accumulation_and_clipping(tmp_path, model):
    config = TrainConfig(method="bipo", epochs=2, gradient_accumulation=3, max_grad_norm=1e-3,
                         **FAST)
    vector = train_steering_vector(model, PAIRS, EVAL_PAIRS, config, out_dir=tmp_path,
                                   progress=False)
    records = [r for r in read_jsonl(tmp_path / "log.jsonl") if "train_loss" in r]
    assert len(records) == 2  # 6 pairs = 3 micro-batches of 2 = one optimiser step per epoch
    assert all(len(r["direction"]) == 3 for r in records)
    assert all(r["grad_norm"] > 1e-3 for r in records)  # clipping had work to do
    # AdamW normalises the step, so clipping shows in the moments, not |v|; the run is finite
    assert torch.isfinite(vector.vector).all()


def test_eos_is_appended_to_responses(model):
    from yapo_interp.objective import tokenize_pairs

    plain = tokenize_pairs(model, PAIRS[:2])
    with_eos = tokenize_pairs(model, PAIRS[:2], append_eos=True)
    eos = model.tokenizer.eos_token_id
    for a, b in zip(plain, with_eos):
        assert torch.equal(b.chosen, torch.cat([a.chosen, torch.tensor([eos])]))
        assert torch.equal(b.rejected, torch.cat([a.rejected, torch.tensor([eos])]))
        assert torch.equal(a.prompt, b.prompt)


def test_paper_preset_is_the_authors_recipe():
    from yapo_interp.models import get_preset

    paper = get_preset("paper")
    assert (paper.model, paper.layer) == ("gemma-2-2b-it", 15)
    assert (paper.sae_release, paper.sae_id) == ("gemma-scope-2b-pt-res",
                                                 "layer_15/width_65k/average_l0_68")
    assert paper.sae_for_layer(13) == ("gemma-scope-2b-pt-res", "layer_13/width_65k/average_l0_75")
    assert (paper.prompt_style, paper.response_format, paper.rejected) == ("chat", "mcq",
                                                                            "generated")
    assert paper.append_eos and paper.max_grad_norm == 1.0
    assert paper.gradient_accumulation * TrainConfig().batch_size == 32
    assert paper.lr == 5e-4 and paper.mcq_mode == "boxed"
    base = get_preset("paper-base")  # the earlier reading, kept under its own name
    assert (base.model, base.sae_release) == ("gemma-2-2b", "gemma-scope-2b-pt-res-canonical")


def test_paper_preset_flags_reach_the_config():
    from yapo_interp.models import get_preset
    from yapo_interp.train import build_parser, config_from_args

    args = build_parser().parse_args(["--method", "yapo", "--country", "egypt",
                                      "--preset", "paper"])
    config = config_from_args(args, get_preset("paper"))
    assert (config.layer, config.lr, config.max_grad_norm, config.gradient_accumulation,
            config.append_eos) == (15, 5e-4, 1.0, 8, True)


def test_rejected_generated_uses_the_models_own_answer_once(tmp_path, model, monkeypatch):
    import yapo_interp.onpolicy as onpolicy
    from yapo_interp.data import load_cultural
    from yapo_interp.train import DataSelection, build_pairs

    items = [i for i in load_cultural() if i.country == "egypt"][:3]
    selection = DataSelection(country="egypt", setting="both", rejected="generated")
    pairs = build_pairs(model, items, selection, cache_dir=tmp_path, progress=False)
    assert 0 < len(pairs) <= 6
    from yapo_interp.evaluate import generate_greedy
    for pair in pairs:
        answer = onpolicy.clean_answer(generate_greedy(model, [pair.prompt], max_new_tokens=48)[0],
                                       first_line_only=True)
        assert pair.rejected == answer and pair.chosen != answer
    cached = list(tmp_path.glob("*.jsonl"))
    assert len(cached) == 1 and len(read_jsonl(cached[0])) == 6
    # a second build (the other method) generates nothing and gets the same pairs
    monkeypatch.setattr("yapo_interp.evaluate.generate_greedy",
                        lambda *a, **k: pytest.fail("regenerated a cached answer"))
    assert build_pairs(model, items, selection, cache_dir=tmp_path, progress=False) == pairs


def test_training_metadata_records_the_questions_it_saw():
    from yapo_interp.data import is_test_question
    from yapo_interp.train import DataSelection, select_items

    fit, validation, info = select_items(DataSelection(country="egypt", setting="both"))
    used = set(info["train_question_ids"])
    assert used == {i.question_id for i in fit + validation}
    assert not any(is_test_question(q, test_fraction=0.25, seed=0) for q in used)
    assert info["split"]["seed"] == 0 and info["split"]["rule"]


@pytest.mark.parametrize("method", ["sae-dense", "bipo"])
def test_sae_dense_trains_and_every_step_logs_its_perturbation(tmp_path, model, sae, method):
    """sae-dense trains like YaPO (c in R^{d_sae}, same objective); each step's record carries
    ‖Φ(h) − h‖ for the v its loss used: 0 at the first step (v = 0), then growing."""
    config = TrainConfig(method=method, epochs=3, **FAST)
    vector = train_steering_vector(model, PAIRS, PAIRS[:2], config, sae=sae, out_dir=tmp_path,
                                   progress=False)
    steps = [r for r in read_jsonl(tmp_path / "log.jsonl") if "train_loss" in r]
    assert len(steps) == 9 and steps[0]["perturbation"] == pytest.approx(0, abs=1e-6)
    assert all(r["perturbation"] > 0 for r in steps[1:])
    assert steps[-1]["perturbation"] > steps[1]["perturbation"]
    assert sum(r["train_loss"] for r in steps[-3:]) / 3 < 0.5 * math.log(2)
    width = sae.cfg.d_sae if method == "sae-dense" else model.cfg.d_model
    assert vector.method == method and vector.vector.shape == (width,)
    loaded = SteeringVector.load(tmp_path / "vector", model=model, sae=sae)
    assert torch.equal(loaded.vector, vector.vector)
    # the first step of epoch 2 uses the vector saved after epoch 1: every token moves by
    # ‖v‖ (bipo) or ‖c @ W_dec‖ (sae-dense), λ = 1
    after_one = SteeringVector.load(tmp_path / "vectors" / "epoch_01").vector
    moved = after_one if method == "bipo" else after_one @ sae.W_dec
    assert steps[3]["perturbation"] == pytest.approx(float(moved.norm()), rel=1e-5)


# ------------------------------------------------------------------ sparse YaPO (issue 14)


def test_project_sparse_soft_thresholds_then_keeps_the_largest():
    v = torch.tensor([3.0, -2.0, 0.5, -0.2, 1.0])
    torch.testing.assert_close(train_module.project_sparse(v, threshold=0.5),
                               torch.tensor([2.5, -1.5, 0.0, 0.0, 0.5]))
    torch.testing.assert_close(train_module.project_sparse(v, max_features=2),
                               torch.tensor([3.0, -2.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(train_module.project_sparse(v, threshold=1.5, max_features=9),
                               torch.tensor([1.5, -0.5, 0.0, 0.0, 0.0]))


def test_max_features_keeps_at_most_k_non_zero_entries(tmp_path, monkeypatch, model, sae):
    csv = tmp_path / "behaviour.csv"
    csv.write_text("question,matching,not_matching\n" + "".join(
        f'"{p.prompt}","{p.chosen}","{p.rejected}"\n' for p in PAIRS + EVAL_PAIRS))
    monkeypatch.setattr(models, "load_model", lambda name, device="cpu": model)
    monkeypatch.setattr(models, "load_sae", lambda *args, **kwargs: sae)
    monkeypatch.setattr(models, "shipped_sae_layers", lambda: [LAYER])  # as if shipped
    monkeypatch.setattr(cli, "shipped_sae_layers", lambda: [LAYER])  # where the check reads it
    out = tmp_path / "run"
    assert main(["--method", "yapo", "--behaviour-csv", str(csv), "--layer", str(LAYER),
                 "--epochs", "2", "--lr", "0.1", "--warmup-steps", "0", "--batch-size", "2",
                 "--max-features", "5", "--out", str(out)]) == 0
    vector = SteeringVector.load(out / "vector", model=model, sae=sae)
    assert 0 < int((vector.vector != 0).sum()) <= 5
    steps = [r for r in read_jsonl(out / "log.jsonl") if "train_loss" in r]
    assert steps and all(0 < r["nonzero"] <= 5 for r in steps)
    assert vector.metadata["settings"]["max_features"] == 5


def test_l1_gives_fewer_non_zero_entries_than_none(model, sae):
    counts = {}
    for l1 in (0.0, 0.5):
        config = TrainConfig(method="yapo", epochs=2, l1=l1, **FAST)
        vector = train_steering_vector(model, PAIRS, [], config, sae=sae, progress=False)
        counts[l1] = int((vector.vector != 0).sum())
    assert counts[0.5] < counts[0.0]
    assert counts[0.5] > 0  # the penalty thins v, it does not erase it


def test_sparse_options_are_checked(model):
    with pytest.raises(UserError, match="l1 must be 0 or more"):
        TrainConfig(method="yapo", l1=-1.0)
    with pytest.raises(UserError, match="max_features must be at least 1"):
        TrainConfig(method="yapo", max_features=0)
    with pytest.raises(UserError, match="bipo has none"):
        TrainConfig(method="bipo", max_features=5)


# ------------------------------------------------------------------ the stage (issue 16)


def test_fast_path_flags_are_written_once_in_fastpath():
    """Each FastPath field is a --no-FLAG of the command and a flat key of the saved settings."""
    from yapo_interp.objective import FastPath
    from yapo_interp.train import build_parser, config_from_args

    names = [field.name for field in dataclasses.fields(FastPath)]
    base = ["--method", "bipo", "--country", "egypt"]
    preset = models.get_preset("embedded")
    for name in names:
        if name == "cache_activations":  # share_prompt needs it: both off together
            continue
        args = build_parser().parse_args(base + [f"--no-{name.replace('_', '-')}"])
        config = config_from_args(args, preset)
        assert config.fast_path == FastPath(**{name: False})
        assert getattr(config, name) is False
    plain = config_from_args(build_parser().parse_args(base + ["--plain"]), preset)
    assert plain.fast_path == FastPath.plain()
    settings = TrainConfig().settings()
    assert "fast_path" not in settings and all(settings[name] is True for name in names)
    assert list(settings)[list(settings).index("eval_every") + 1] == names[0]  # run.json order


def test_run_train_takes_its_data_from_the_config(tmp_path, model):
    from yapo_interp.train import BehaviourSelection, TrainRunConfig, run_train

    csv = tmp_path / "behaviour.csv"
    csv.write_text("question,matching,not_matching\n" + "".join(
        f'"{p.prompt}","{p.chosen}","{p.rejected}"\n' for p in PAIRS + EVAL_PAIRS))
    config = TrainRunConfig(training=TrainConfig(method="bipo", epochs=2, **FAST),
                            data=BehaviourSelection(csv=csv, test_fraction=0.25, max_pairs=5))
    result = run_train(model, config, tmp_path / "run", progress=False)
    assert (result.n_train, result.n_eval) == (5, 2)
    assert result.schedule.total_steps == 2 * 3 and result.validation_loss is not None
    saved = SteeringVector.load(tmp_path / "run" / "vector")
    assert torch.equal(saved.vector, result.vector.vector)
    assert saved.metadata["behaviour_csv"] == str(csv) and saved.metadata["preset"] == "embedded"
