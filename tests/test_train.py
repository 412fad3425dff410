"""Training loop (BiPO / YaPO), CAA / SAS, checkpoints and resumption, and the CLI."""

import dataclasses
import math

import pytest
import torch

import yapo_interp.models as models
from yapo_interp.data import PreferencePair
from yapo_interp.errors import UserError
from yapo_interp.io import read_json, read_jsonl
from yapo_interp.steering import SteeringVector
from yapo_interp.testing import tiny_model, tiny_sae
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
    out = tmp_path / "run"
    argv = ["--method", "yapo", "--behaviour-csv", str(csv), "--layer", str(LAYER), "--epochs",
            "2", "--lr", "0.1", "--warmup-steps", "0", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "saved SteeringVector(method='yapo'" in printed and "train loss" in printed
    vector = SteeringVector.load(out / "vector", model=model, sae=sae)
    assert vector.metadata["behaviour_csv"] == str(csv)
    assert vector.metadata["settings"]["epochs"] == 2
    assert main(argv) == 0  # finished: resumes at the end, same vector
    assert torch.equal(SteeringVector.load(out / "vector").vector, vector.vector)
    with pytest.raises(UserError, match="--country"):
        main(["--method", "bipo", "--layer", "1", "--out", str(tmp_path / "x")])
