"""Model and SAE loading: the offline embedded path, its cache, and the errors users see."""

import os
import pytest
import torch

import yapo_interp.models as models
from yapo_interp import ModelLoadError, load_model, load_sae
from yapo_interp.testing import tiny_sae


def _fake_cache(folder):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    (folder / "config.json").write_text("{}")
    models.write_manifest(folder, source="test")


def test_intact_cache_is_accepted(tmp_path):
    _fake_cache(tmp_path / "m")
    assert models._cache_problem(tmp_path / "m") is None


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: (f / "yapo_manifest.json").unlink(), "no manifest"),
        (lambda f: (f / "model.safetensors").write_bytes(b"weights" * 50), "wrong size"),
        (lambda f: (f / "model.safetensors").write_bytes(b"weightz" * 100), "corrupted"),
        (lambda f: _rewrite_keeping_time(f / "model.safetensors", b"weightz" * 100),
         "corrupted (fingerprint mismatch)"),
        (lambda f: (f / "config.json").unlink(), "missing config.json"),
    ],
)
def test_damaged_cache_is_detected(tmp_path, damage, expected):
    _fake_cache(tmp_path / "m")
    damage(tmp_path / "m")
    assert expected in models._cache_problem(tmp_path / "m")


def _rewrite_keeping_time(path, data):
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_fast_check_reads_samples_and_hashes_only_when_something_looks_wrong(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    big = folder / "model.safetensors"
    block = models.FINGERPRINT_BLOCK_BYTES
    big.write_bytes(bytes(range(256)) * (block * 40 // 256))  # 40 blocks: sampled, not read whole
    models.write_manifest(folder, source="test")
    hashed = []
    monkeypatch.setattr(models, "_sha256", lambda path, real=models._sha256:
                        hashed.append(path.name) or real(path))
    assert models._cache_problem(folder) is None and hashed == []  # normal path: no full hash
    # a byte changed between the sampled blocks, time kept: only a verifying load sees it
    data = bytearray(big.read_bytes())
    stride = (len(data) - block) // (models.FINGERPRINT_BLOCKS - 1)
    data[block + (stride - block) // 2] ^= 0xFF
    _rewrite_keeping_time(big, bytes(data))
    assert models._cache_problem(folder) is None
    assert "sha256 mismatch" in models._cache_problem(folder, verify=True)
    monkeypatch.setenv(models.VERIFY_ENV, "1")
    assert "sha256 mismatch" in models._cache_problem(folder)
    monkeypatch.delenv(models.VERIFY_ENV)
    # the same bytes with a new time: checked by the full hash (here: still corrupted)
    os.utime(big, ns=(0, 12345))
    hashed.clear()
    assert "sha256 mismatch" in models._cache_problem(folder) and hashed == ["model.safetensors"]


def test_damaged_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    folder = models.embedded_model_dir()
    _fake_cache(folder)
    (folder / "model.safetensors").write_bytes(b"half-writ")
    rebuilt = []

    def fake_convert(target):
        import shutil

        shutil.rmtree(target)
        _fake_cache(target)
        rebuilt.append(target)

    monkeypatch.setattr(models, "convert_embedded", fake_convert)
    assert models.ensure_embedded_model() == folder
    assert rebuilt == [folder]
    assert models.ensure_embedded_model() == folder  # intact now: no second conversion
    assert rebuilt == [folder]


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert models.embedded_model_dir() == tmp_path / "elsewhere" / "gemma-3-270m"


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelLoadError, match="Unknown model 'gemma-2-2bb'.*gemma-2-2b"):
        load_model("gemma-2-2bb")


def test_hub_only_model_offline_points_to_embedded_preset():
    with pytest.raises(ModelLoadError, match="embedded"):
        load_model("gpt2")


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ModelLoadError, match="embedded, paper"):
        models.get_preset("gemma")


def test_paper_base_preset_keeps_the_literal_reading_of_the_paper():
    """The former ``paper`` preset, kept by name (``paper`` is now the authors' recipe: see
    tests/test_train.py::test_paper_preset_is_the_authors_recipe)."""
    preset = models.get_preset("paper-base")
    assert (preset.model, preset.layer) == ("gemma-2-2b", 15)
    assert preset.sae_release == "gemma-scope-2b-pt-res-canonical"
    assert preset.sae_id == "layer_15/width_65k/canonical"
    assert preset.hook_name == "blocks.15.hook_resid_post"
    assert preset.sae_for_layer(12)[1] == "layer_12/width_65k/canonical"


def test_layer_out_of_range(model):
    assert models.check_layer(model, 2) == 2
    with pytest.raises(ModelLoadError, match="layers 0..2"):
        models.check_layer(model, 3)
    with pytest.raises(ModelLoadError, match="out of range"):
        models.check_layer(model, -1)


def test_sae_width_must_match_model(model):
    from yapo_interp.testing import tiny_model

    wider = tiny_model(d_model=48)
    with pytest.raises(ModelLoadError, match="d_in=48.*d_model=32"):
        models.check_sae_fits(tiny_sae(wider), model)


def test_local_sae_folder_round_trip(tmp_path, model, sae):
    sae.save_model(tmp_path / "sae")
    loaded = load_sae(str(tmp_path / "sae"), model=model)
    x = torch.randn(4, model.cfg.d_model)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    assert models.sae_layer(loaded) == 1
    assert not any(parameter.requires_grad for parameter in loaded.parameters())


def test_not_an_sae_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no cfg.json"):
        load_sae(str(tmp_path))


def test_release_without_id_is_explained():
    with pytest.raises(ModelLoadError, match="also give the SAE id"):
        load_sae("gemma-scope-2b-pt-res-canonical")


def test_embedded_sae_needs_a_shipped_layer():
    shipped = models.shipped_sae_layers()
    with pytest.raises(ModelLoadError, match="shipped|train one"):
        load_sae("embedded", layer=999)
    if shipped:
        with pytest.raises(ModelLoadError, match=str(shipped[0])):
            load_sae("embedded", layer=999)


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded")


def test_embedded_model_matches_transformers(embedded):
    """The offline path end to end: TransformerLens log-probs equal the HF model's to float32
    precision (1e-4 absolute, plus 1e-5 relative for the large negative log-probs of rare
    tokens, where summation order alone moves the 7th digit: seen 1.03e-4 at a log-prob of −37
    with transformers 5.24)."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(models.embedded_model_dir()),
                                                    dtype=torch.float32).eval()
    prompts = ["The capital of Egypt is", "Mi abuela siempre prepara", "أنا من المغرب، وفي الصباح",
               "मेरे परिवार में हम सुबह"]
    for prompt in prompts:
        tokens = embedded.to_tokens(prompt)
        with torch.no_grad():
            ours = embedded(tokens).log_softmax(-1)
            theirs = hf_model(tokens).logits.log_softmax(-1)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)
    assert embedded.cfg.n_layers == 18 and embedded.cfg.d_model == 640


def test_reuse_loaded_models_loads_once(monkeypatch):
    loads = []
    monkeypatch.setattr(models, "_load_model", lambda name, **kw: loads.append(name) or object())
    with models.reuse_loaded_models():
        first, second = load_model("x"), load_model("x")
        other = load_model("y")
    assert first is second and other is not first and loads == ["x", "y"]
    load_model("x")  # outside the block: loaded again
    assert loads == ["x", "y", "x"]


def test_a_passed_full_check_is_recorded_for_the_fast_path(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    folder = models.embedded_model_dir()
    _fake_cache(folder)
    os.utime(folder / "model.safetensors", ns=(0, 12345))  # e.g. a copied cache: time changed
    hashed = []
    monkeypatch.setattr(models, "_sha256", lambda path, real=models._sha256:
                        hashed.append(path.name) or real(path))
    assert models.ensure_embedded_model() == folder and hashed == ["model.safetensors"]
    hashed.clear()
    assert models.ensure_embedded_model() == folder and hashed == []  # fast path now
