"""The shipped SAEs of the embedded model load offline and work on its real activations; the
training pipeline (corpus helpers, activation cache, SAELens training, shipping, metrics) is
checked on tiny in-process models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from yapo_interp import corpus
from yapo_interp.models import SHIPPED_SAE_DIR, ModelLoadError, load_sae, shipped_sae_layers
from yapo_interp.sae_train import (SAETrainConfig, cache_activations, ce_loss_recovered,
                                   load_cached, reconstruction_stats, ship_sae, shuffled_batches,
                                   token_windows, train_layer, valid_mask)

SHIPPED = shipped_sae_layers()


# --------------------------------------------------------------------------------------------
# The shipped SAEs
# --------------------------------------------------------------------------------------------


def test_at_least_three_middle_layers_are_shipped_within_the_size_budget():
    assert len(SHIPPED) >= 3
    assert all(5 <= layer <= 13 for layer in SHIPPED)
    # every layer the patching analysis is likely to pick (6..12) has an SAE within one layer
    assert all(min(abs(layer - shipped) for shipped in SHIPPED) <= 1 for layer in range(6, 13))
    total = sum(path.stat().st_size for path in SHIPPED_SAE_DIR.rglob("*.safetensors"))
    assert total <= 40 * 2**20


@pytest.mark.parametrize("layer", SHIPPED)
def test_shipped_sae_loads_offline_with_the_right_shape_and_hook(layer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sae = load_sae("embedded", layer=layer)
    assert sae.cfg.d_in == 640
    assert sae.cfg.metadata.hook_name == f"blocks.{layer}.hook_resid_post"
    assert sae.W_enc.dtype == torch.float32  # stored in bf16, loaded as float32
    with safe_open(str(SHIPPED_SAE_DIR / f"layer_{layer}" / "sae_weights.safetensors"),
                   "pt") as handle:
        assert handle.get_tensor("W_dec").dtype in (torch.bfloat16, torch.float16)
    cfg = json.loads((SHIPPED_SAE_DIR / f"layer_{layer}" / "cfg.json").read_text())
    assert cfg["metadata"]["yapo_interp"]["excluded"].startswith("BOS")


def test_unshipped_layer_error_lists_the_shipped_layers():
    with pytest.raises(ModelLoadError, match=str(SHIPPED)):
        load_sae("embedded", layer=17)


@pytest.fixture(scope="module")
def gemma():
    from yapo_interp import load_model

    return load_model("embedded")


def test_forward_and_backward_through_shipped_saes_on_real_activations(gemma):
    prompt = ("In Morocco, guests are welcomed with mint tea. En México se come mole en las "
              "fiestas. Em Portugal, o bacalhau é tradicional. في مصر يأكل الناس الكشري. "
              "भारत में दिवाली रोशनी का त्योहार है।")
    tokens = gemma.to_tokens(prompt)
    names = [f"blocks.{layer}.hook_resid_post" for layer in SHIPPED]
    with torch.no_grad():
        _, cache = gemma.run_with_cache(tokens, names_filter=names,
                                        stop_at_layer=max(SHIPPED) + 1)
    for layer in SHIPPED:
        sae = load_sae("embedded", layer=layer, model=gemma)
        h = cache[f"blocks.{layer}.hook_resid_post"][0, 1:]  # BOS excluded, as in training
        codes = sae.encode(h)
        reconstruction = sae.decode(codes)
        l0 = (codes != 0).sum(-1).float().mean().item()
        explained = 1 - (h - reconstruction).pow(2).sum() / (h - h.mean(0)).pow(2).sum()
        assert 10 <= l0 <= 150
        assert explained > 0.6, f"layer {layer}: explained variance {explained:.3f}"
        # YaPO's sparse steering (eq. 3): gradients reach a latent-space vector v and the input
        v = torch.zeros(sae.cfg.d_sae, requires_grad=True)
        h_in = h.clone().requires_grad_(True)
        steered = sae.decode(torch.relu(sae.encode(h_in) + v)) + (h_in - sae.decode(sae.encode(h_in)))
        steered.pow(2).mean().backward()
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
        assert h_in.grad is not None and torch.isfinite(h_in.grad).all()
        assert all(parameter.grad is None for parameter in sae.parameters())  # frozen


# --------------------------------------------------------------------------------------------
# Pipeline pieces on tiny models
# --------------------------------------------------------------------------------------------


def test_token_windows_start_with_bos_and_mask_excludes_it(model):
    documents = [corpus.Document("abc " * 40, "english", "x"),
                 corpus.Document("hola " * 30, "spanish", "y")]
    windows, lengths = token_windows(documents, model.tokenizer, context_size=32)
    assert (windows[:, 0] == model.tokenizer.bos_token_id).all()
    assert (lengths <= 32).all() and (lengths > 8).all()
    mask = valid_mask(lengths, 32, excluded_positions=1)
    assert not mask[:, 0].any()
    assert int(mask.sum()) == int((lengths - 1).sum())


def test_activation_cache_matches_run_with_cache_and_resumes(model, tmp_path):
    tokens = torch.randint(4, 90, (6, 16))
    tokens[:, 0] = model.tokenizer.bos_token_id
    lengths = torch.tensor([16, 16, 10, 16, 12, 16])
    rows = cache_activations(model, tokens, lengths, (0, 2), tmp_path, batch_size=4,
                             excluded_positions=1)
    _, cache = model.run_with_cache(tokens)
    mask = valid_mask(lengths, 16, 1)
    for layer in (0, 2):
        expected = cache[f"blocks.{layer}.hook_resid_post"][mask]
        cached = load_cached(tmp_path, layer).float()
        assert cached.shape == (rows, model.cfg.d_model)
        torch.testing.assert_close(cached, expected, rtol=1e-2, atol=1e-2)
    # an interrupted run (progress at the first batch) resumes and gives the same rows
    before = load_cached(tmp_path, 2).clone()
    progress = json.loads((tmp_path / "progress.json").read_text())
    progress["windows_done"] = 4
    (tmp_path / "progress.json").write_text(json.dumps(progress))
    cache_activations(model, tokens, lengths, (0, 2), tmp_path, batch_size=4, excluded_positions=1)
    assert torch.equal(load_cached(tmp_path, 2), before)


def test_shuffled_batches_skip_reproduces_the_same_stream():
    activations = torch.randn(100, 4).to(torch.bfloat16)
    full = shuffled_batches(activations, 8, seed=3)
    stream = [next(full) for _ in range(20)]
    resumed = shuffled_batches(activations, 8, seed=3, skip=13)
    assert all(torch.equal(next(resumed), stream[i]) for i in range(13, 20))


def test_sae_training_and_shipping_round_trip(tmp_path):
    torch.manual_seed(0)
    d_in = 16
    directions = torch.randn(48, d_in)
    codes = torch.relu(torch.randn(6000, 48)) * (torch.rand(6000, 48) < 0.08)
    activations = (codes @ directions + 50.0).to(torch.bfloat16)  # large offset, like Gemma
    config = SAETrainConfig(layers=(1,), d_sae=64, k=6, training_tokens=30_000, batch_size=256,
                            lr=3e-3, lr_warm_up_steps=10, dead_feature_window=20,
                            n_checkpoints=2)
    sae = train_layer(config, 1, activations, tmp_path / "ckpt", log=lambda *_: None)
    assert sae.cfg.normalize_activations == "none"  # the scaling was folded into the weights
    trained = reconstruction_stats(sae.eval(), activations)
    assert trained["explained_variance"] > 0.7
    assert trained["l0"] <= 6
    shipped = ship_sae(sae, tmp_path / "layer_1", "bfloat16", {"note": "test"})
    assert type(shipped).__name__ == "TopKSAE"
    with safe_open(str(tmp_path / "layer_1" / "sae_weights.safetensors"), "pt") as handle:
        assert handle.get_tensor("W_enc").dtype == torch.bfloat16
    reloaded = load_sae(str(tmp_path / "layer_1"))
    assert reloaded.W_enc.dtype == torch.float32
    stats = reconstruction_stats(reloaded, activations)
    assert stats["explained_variance"] == pytest.approx(trained["explained_variance"], abs=0.02)
    assert reloaded.cfg.metadata.yapo_interp == {"note": "test"}


class _Identity:
    def encode(self, h):
        return h

    def decode(self, z):
        return z


class _Zero(_Identity):
    def decode(self, z):
        return torch.zeros_like(z)


def test_ce_loss_recovered_is_one_for_a_perfect_sae_and_zero_for_ablation(model):
    tokens = torch.randint(4, 90, (3, 12))
    tokens[:, 0] = model.tokenizer.bos_token_id
    lengths = torch.tensor([12, 9, 12])
    results = ce_loss_recovered(model, {0: _Identity(), 1: _Zero()}, tokens, lengths,
                                batch_size=2)
    assert results[0]["ce_sae"] == pytest.approx(results[0]["ce_clean"], abs=1e-5)
    assert results[0]["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert results[1]["ce_sae"] == pytest.approx(results[1]["ce_zero"], abs=1e-5)
    assert results[1]["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-4)


def test_reconstruction_stats_of_identity_and_constant():
    activations = torch.randn(500, 8) * 3 + 1
    identity = _Identity()
    identity.cfg = type("Cfg", (), {"d_sae": 8})()
    stats = reconstruction_stats(identity, activations)
    assert stats["explained_variance"] == pytest.approx(1.0)
    assert stats["dead_fraction"] == 0.0


def _reconstruction_stats_before(sae, activations, batch_size=4096):
    """reconstruction_stats as it was before it used sae_lens.evals (two passes, float64)."""
    total, d_in = activations.shape
    mean = activations.double().sum(0) / total
    squared_error = torch.zeros(d_in, dtype=torch.float64)
    variance = torch.zeros(d_in, dtype=torch.float64)
    active, fired = 0, torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            h = activations[start:start + batch_size].float()
            codes = sae.encode(h)
            squared_error += (h - sae.decode(codes)).double().pow(2).sum(0)
            variance += (h.double() - mean).pow(2).sum(0)
            active += int((codes != 0).sum())
            fired += (codes != 0).sum(0)
    top = int(variance.argmax())
    rest = torch.arange(d_in) != top
    return {"tokens": total, "l0": active / total,
            "explained_variance": 1 - (squared_error.sum() / variance.sum()).item(),
            "top_variance_dim": top,
            "top_variance_dim_share": (variance[top] / variance.sum()).item(),
            "explained_variance_without_top_dim":
                1 - (squared_error[rest].sum() / variance[rest].sum()).item(),
            "dead_fraction": (fired == 0).float().mean().item(), "fired": fired}


def test_reconstruction_stats_through_sae_lens_evals_give_the_numbers_of_before(sae):
    generator = torch.Generator().manual_seed(0)
    d_in = sae.cfg.d_in
    activations = torch.randn(5000, d_in, generator=generator) + 50.0  # a large mean, like Gemma
    activations[:, 3] *= 20  # one coordinate with most of the variance (Gemma's 163)
    now = reconstruction_stats(sae, activations, batch_size=1024)
    before = _reconstruction_stats_before(sae, activations, batch_size=1024)
    assert now.keys() == before.keys()
    assert torch.equal(now.pop("fired"), before.pop("fired"))
    for key, value in before.items():
        assert now[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    assert now["top_variance_dim"] == 3 and 0.5 < now["top_variance_dim_share"] < 1


# --------------------------------------------------------------------------------------------
# Corpus helpers
# --------------------------------------------------------------------------------------------


def test_language_filters_and_message_cleaning():
    assert corpus.looks_like("في مصر يأكل الناس الكشري", "arabic")
    assert not corpus.looks_like("Open the file", "arabic")
    assert corpus.looks_like("भारत में दिवाली रोशनी का त्योहार है", "hindi")
    assert not corpus.looks_like("भारत में दिवाली", "spanish")
    assert corpus.clean_message("Copy %s to %d _files {name}") == "Copy to files"


def test_cultural_split_keeps_a_question_on_one_side(tmp_path):
    rows = [{"question_id": f"q{i // 2}", "language": "arabic" if i % 2 else "spanish",
             "prompt": f"pregunta número {i} sobre comida", "options": ["uno dos", "tres cuatro"]}
            for i in range(40)]
    (tmp_path / "demo.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    train, heldout = corpus.cultural_documents(tmp_path)
    assert len(train) + len(heldout) == 40 and train and heldout
    side = {}
    for flag, documents in ((False, train), (True, heldout)):
        for document in documents:
            number = int(document.text.split()[2])
            assert side.setdefault(number // 2, flag) == flag
    assert {d.language for d in train + heldout} == {"arabic", "spanish"}


def test_libreoffice_help_drops_untranslated_paragraphs(tmp_path):
    (tmp_path / "en-US" / "text").mkdir(parents=True)
    (tmp_path / "es" / "text").mkdir(parents=True)
    english = "<p>Choose the colour of the selected object.</p><p>Shows the recently used colours.</p>"
    spanish = ("<p>Elija el color del objeto seleccionado ahora.</p>"
               "<p>Shows the recently used colours.</p>")
    (tmp_path / "en-US" / "text" / "a.html").write_text(english)
    (tmp_path / "es" / "text" / "a.html").write_text(spanish)
    documents = corpus.libreoffice_help_documents(tmp_path, "spanish")
    assert [d.text for d in documents] == ["Elija el color del objeto seleccionado ahora."]


def test_command_evaluates_after_training_with_its_own_config_and_model(tmp_path, monkeypatch,
                                                                       model):
    """``main`` calls the pipeline's functions: the evaluation after training gets the config
    and the model that trained (no second command line, no second model load)."""
    from yapo_interp import models
    from yapo_interp.sae_train import cli

    calls = []
    monkeypatch.setattr(models, "load_model",
                        lambda name, device="cpu": calls.append(("load", name)) or model)
    monkeypatch.setattr(cli, "build_corpus", lambda config, work: calls.append(("corpus", work)))
    monkeypatch.setattr(cli, "run_sae_training", lambda used, config, **options: calls.append(
        ("train", used, config, options["stage"])))
    monkeypatch.setattr(cli, "run_sae_evaluation", lambda used, config, **options: calls.append(
        ("evaluate", used, config, options["out"])))
    common = ["--layers", "2", "1", "--work", str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main(common + ["--lr", "0.001", "--seed", "3", "--architecture", "batchtopk"]) == 0
    assert [call[0] for call in calls] == ["corpus", "load", "train", "evaluate"]
    trained, evaluated = calls[2], calls[3]
    assert evaluated[1] is model and evaluated[2] == trained[2]
    assert (trained[2].layers, trained[2].lr, trained[2].seed, trained[2].architecture) == (
        (1, 2), 0.001, 3, "batchtopk")
    assert evaluated[3] == tmp_path / "out"
    calls.clear()
    assert cli.main(common + ["--stage", "cache"]) == 0
    assert [call[0] for call in calls] == ["corpus", "load", "train"]
    calls.clear()
    assert cli.main(common + ["--evaluate"]) == 0
    assert [call[0] for call in calls] == ["load", "evaluate"]
