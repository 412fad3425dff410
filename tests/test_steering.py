"""Interventions (eq. 2 and 3), the `steer` context manager and SteeringVector save/load."""

import copy

import pytest
import torch

from yapo_interp.errors import UserError
from yapo_interp.steering import (
    SteeringVector,
    dense_intervention,
    sae_fingerprint,
    sparse_intervention,
    steer,
    vector_from_tensor,
)
from yapo_interp.testing import tiny_model, tiny_sae

LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["Hello world, this is a test.", "Short one"]
ARCHITECTURES = ["standard", "jumprelu", "topk"]


@pytest.fixture(scope="module")
def saes(model):
    return {arch: tiny_sae(model, LAYER, architecture=arch, seed=3) for arch in ARCHITECTURES}


def tokens(model):
    return model.to_tokens(TEXTS[0])


def dense_vector(model, scale=1.0, seed=0, layer=LAYER):
    generator = torch.Generator().manual_seed(seed)
    return vector_from_tensor("bipo", layer, scale * torch.randn(model.cfg.d_model,
                                                                  generator=generator), model)


def sparse_vector(model, sae, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return vector_from_tensor("yapo", LAYER, scale * torch.randn(sae.cfg.d_sae,
                                                                  generator=generator),
                              model, sae=sae)


def resid_after(model, toks, layer=LAYER):
    """The residual stream leaving block `layer` (as block layer+1 receives it)."""
    _, cache = model.run_with_cache(toks, names_filter=f"blocks.{layer + 1}.hook_resid_pre")
    return cache[f"blocks.{layer + 1}.hook_resid_pre"]


# ----------------------------------------------------------------------------- pure functions


def test_dense_intervention_adds_scaled_vector():
    h = torch.randn(2, 5, 8)
    v = torch.randn(8)
    assert torch.allclose(dense_intervention(h, v, -2.5), h - 2.5 * v)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_intervention_with_zero_vector_is_identity(model, saes, architecture):
    sae = saes[architecture]
    h = 3 * torch.randn(2, 5, model.cfg.d_model)
    out = sparse_intervention(h, torch.zeros(sae.cfg.d_sae), sae, 1.0)
    # without the residual correction this would be the (lossy) SAE reconstruction
    assert not torch.allclose(sae.decode(sae.encode(h)), h, atol=1e-2)
    torch.testing.assert_close(out, h, atol=1e-5, rtol=0)


def test_sparse_intervention_matches_equation_3_by_hand(model, saes):
    sae = saes["standard"]
    h = torch.randn(3, model.cfg.d_model)
    v = torch.randn(sae.cfg.d_sae)
    codes = torch.relu((h - sae.b_dec) @ sae.W_enc + sae.b_enc)
    expected = (torch.relu(codes - 0.7 * v) @ sae.W_dec + sae.b_dec) + (
        h - (codes @ sae.W_dec + sae.b_dec))
    torch.testing.assert_close(sparse_intervention(h, v, sae, -0.7), expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- steer(): dense


def test_zero_vectors_leave_logits_unchanged(model, saes):
    toks = tokens(model)
    clean = model(toks)
    zero_dense = vector_from_tensor("bipo", LAYER, torch.zeros(model.cfg.d_model), model)
    with steer(model, zero_dense, multipliers=5.0):
        torch.testing.assert_close(model(toks), clean, atol=1e-5, rtol=0)
    for sae in saes.values():
        zero_sparse = vector_from_tensor("yapo", LAYER, torch.zeros(sae.cfg.d_sae), model, sae=sae)
        with steer(model, zero_sparse, multipliers=5.0, saes=sae):
            torch.testing.assert_close(model(toks), clean, atol=1e-4, rtol=0)


def test_direction_flips_the_sign_of_the_dense_effect(model):
    toks = tokens(model)
    vector = dense_vector(model)
    clean = resid_after(model, toks)
    with steer(model, vector, multipliers=2.0, direction=1):
        plus = resid_after(model, toks)
    with steer(model, vector, multipliers=2.0, direction=-1):
        minus = resid_after(model, toks)
    torch.testing.assert_close(plus - clean, 2.0 * vector.vector.expand_as(clean), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(minus - clean, -(plus - clean), atol=1e-5, rtol=0)
    assert (plus - clean).abs().max() > 0.5


def test_steering_changes_logits_and_is_removed_afterwards(model):
    toks = tokens(model)
    clean = model(toks)
    with steer(model, dense_vector(model, scale=3.0), multipliers=1.0):
        steered = model(toks)
    assert (steered - clean).abs().max() > 1e-2
    torch.testing.assert_close(model(toks), clean)
    assert all(not hook_point.fwd_hooks for hook_point in model.hook_dict.values())


def test_hooks_are_removed_after_an_exception(model):
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, dense_vector(model)):
            raise RuntimeError("boom")
    assert all(not hook_point.fwd_hooks for hook_point in model.hook_dict.values())


def test_several_vectors_combine(model):
    toks = tokens(model)
    first, second = dense_vector(model, seed=1), dense_vector(model, seed=2)
    summed = vector_from_tensor("bipo", LAYER, 2 * first.vector - 0.5 * second.vector, model)
    with steer(model, [first, second], multipliers=[2.0, -0.5]):
        together = model(toks)
    with steer(model, summed):
        single = model(toks)
    torch.testing.assert_close(together, single, atol=1e-5, rtol=0)
    # vectors at two layers: both act
    other_layer = dense_vector(model, seed=4, layer=0)
    with steer(model, first):
        only_first = model(toks)
    with steer(model, [first, other_layer]):
        both = model(toks)
    assert (both - only_first).abs().max() > 1e-3


def test_generation_is_steered(model):
    prompt = "Hello"
    kwargs = dict(max_new_tokens=8, do_sample=False, verbose=False)
    clean = model.generate(prompt, **kwargs)
    with steer(model, dense_vector(model, scale=20.0)):
        steered = model.generate(prompt, **kwargs)
    assert steered != clean
    assert model.generate(prompt, **kwargs) == clean


# ----------------------------------------------------------------------------- steer(): sparse


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("direction", [1, -1])
def test_sparse_steering_equals_saelens_error_term_hook(model, saes, architecture, direction):
    """Eq. 3 by `steer` == SAELens add_sae(use_error_term=True) + hook on hook_sae_acts_post
    returning ReLU(acts + d·λ·v)."""
    from sae_lens import HookedSAETransformer

    sae = saes[architecture]
    vector = sparse_vector(model, sae, scale=0.5)
    strength = direction * 1.5
    toks = tokens(model)
    with steer(model, vector, multipliers=1.5, direction=direction, saes=sae):
        ours = model(toks)

    sae_model = HookedSAETransformer(model.cfg, tokenizer=model.tokenizer)
    sae_model.load_state_dict(model.state_dict())
    sae_copy = copy.deepcopy(sae)
    sae_model.add_sae(sae_copy, use_error_term=True)
    hook_name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"

    def add_vector(acts, hook):  # noqa: ARG001
        return torch.relu(acts + strength * vector.vector)

    with sae_model.hooks(fwd_hooks=[(hook_name, add_vector)]):
        theirs = sae_model(toks)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours - model(toks)).abs().max() > 1e-3  # the vector does something


def test_sparse_vector_needs_its_sae(model, saes):
    vector = sparse_vector(model, saes["standard"])
    with pytest.raises(UserError, match="saes=sae"):
        with steer(model, vector):
            pass
    with pytest.raises(UserError, match="fingerprint"):
        with steer(model, vector, saes=saes["jumprelu"]):
            pass
    with pytest.raises(UserError, match="No SAE given for layer 1"):
        with steer(model, vector, saes={0: saes["standard"]}):
            pass


def test_bad_direction_and_multiplier_count(model):
    vector = dense_vector(model)
    with pytest.raises(UserError, match="direction"):
        with steer(model, vector, direction=2):
            pass
    with pytest.raises(UserError, match="multipliers"):
        with steer(model, [vector, vector], multipliers=[1.0, 2.0, 3.0]):
            pass


# ----------------------------------------------------------------------------- SteeringVector


def test_save_load_round_trip(tmp_path, model, saes):
    sae = saes["jumprelu"]
    vector = vector_from_tensor("yapo", LAYER, torch.randn(sae.cfg.d_sae), model, sae=sae,
                                sae_info={"release": "embedded", "path": "/x/layer_1"},
                                epoch=3, country="egypt", setting="localized",
                                dataset_hash="abc", settings={"beta": 0.1})
    written = vector.save(tmp_path / "vec")
    assert written == tmp_path / "vec.safetensors"
    assert (tmp_path / "vec.json").is_file()
    for path in (tmp_path / "vec", tmp_path / "vec.safetensors", tmp_path / "vec.json"):
        loaded = SteeringVector.load(path, model=model, sae=sae)
        assert loaded.method == "yapo" and loaded.layer == LAYER and loaded.is_sparse
        assert torch.equal(loaded.vector, vector.vector)
        meta = loaded.metadata
        assert meta["epoch"] == 3 and meta["country"] == "egypt" and meta["setting"] == "localized"
        assert meta["sae"]["fingerprint"] == sae_fingerprint(sae)
        assert meta["sae"]["release"] == "embedded" and meta["sae"]["d_sae"] == sae.cfg.d_sae
        assert meta["d_model"] == model.cfg.d_model and meta["created"]
    assert not list(tmp_path.glob("*.tmp"))


def test_load_says_what_differs(tmp_path, model, saes):
    sparse = sparse_vector(model, saes["standard"])
    sparse.save(tmp_path / "sparse")
    with pytest.raises(UserError, match="fingerprint"):
        SteeringVector.load(tmp_path / "sparse", sae=saes["topk"])
    other_layer_sae = tiny_sae(model, layer=2, seed=3)
    with pytest.raises(UserError, match="layer 1, the SAE reads layer 2"):
        SteeringVector.load(tmp_path / "sparse", sae=other_layer_sae)
    wide = tiny_sae(model, layer=LAYER, d_sae=128)
    with pytest.raises(UserError, match="d_sae"):
        SteeringVector.load(tmp_path / "sparse", sae=wide)

    dense_vector(model).save(tmp_path / "dense")
    bigger = tiny_model(d_model=48)
    with pytest.raises(UserError, match="d_model") as error:
        SteeringVector.load(tmp_path / "dense", model=bigger)
    assert "model" in str(error.value)
    shallow = tiny_model(n_layers=1)
    shallow.cfg.model_name = "shallow-model"
    with pytest.raises(UserError, match="trained on 'tiny-test-model', given 'shallow-model'"):
        SteeringVector.load(tmp_path / "dense", model=shallow)
    with pytest.raises(UserError, match="missing"):
        SteeringVector.load(tmp_path / "nothing-here")


def test_unknown_method_is_rejected():
    with pytest.raises(UserError, match="Unknown steering method"):
        SteeringVector("dpo", 1, torch.zeros(4))
