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


# ----------------------------------------------------------------------------- damaged files


def _saved(tmp_path, model, name="vec", layer=2):
    vector = dense_vector(model, layer=layer)
    vector.save(tmp_path / name)
    return vector, tmp_path / f"{name}.json", tmp_path / f"{name}.safetensors"


def _edit_sidecar(json_path, **changes):
    import json

    header = json.loads(json_path.read_text())
    for key, value in changes.items():
        if key in ("model", "hook_name"):
            header["metadata"][key] = value
        else:
            header[key] = value
    json_path.write_text(json.dumps(header))


def _one_line_error(path, match):
    with pytest.raises(UserError, match=match) as error:
        SteeringVector.load(path)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_sidecar_cannot_override_the_tensor_file(tmp_path, model):
    _, json_path, tensor_path = _saved(tmp_path, model, layer=2)
    _edit_sidecar(json_path, layer=1)  # the hand edit of the issue (9 -> 5)
    message = _one_line_error(tmp_path / "vec", "the .json says layer 1, the .safetensors header "
                                                "says 2")
    assert str(json_path) in message and "hook_name is blocks.2.hook_resid_post" in message
    assert "re-copy" in message and "retrain" in message
    _saved(tmp_path, model, layer=2)
    _edit_sidecar(json_path, method="caa")
    _one_line_error(tmp_path / "vec", "method caa, the .safetensors header says bipo")
    _saved(tmp_path, model, layer=2)
    _edit_sidecar(json_path, model="gemma-2-2b")
    _one_line_error(tmp_path / "vec", "model gemma-2-2b, the .safetensors header says "
                                      "tiny-test-model")
    _saved(tmp_path, model, layer=2)
    _edit_sidecar(json_path, shape=[5])
    _one_line_error(tmp_path / "vec", r"shape \[5\], the tensor has \[32\]")


def test_flipped_bit_is_caught_by_the_checksum(tmp_path, model):
    vector, json_path, tensor_path = _saved(tmp_path, model)
    data = bytearray(tensor_path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last float
    tensor_path.write_bytes(bytes(data))
    message = _one_line_error(tensor_path, "checksum mismatch")
    assert str(tensor_path) in message and "damaged" in message


def test_non_finite_entries_are_refused(tmp_path, model):
    from safetensors.torch import save_file

    from yapo_interp.steering import tensor_sha256

    vector, json_path, tensor_path = _saved(tmp_path, model)
    poisoned = vector.vector.clone()
    poisoned[3] = float("nan")
    save_file({"vector": poisoned}, str(tensor_path), metadata={"method": "bipo", "layer": "2"})
    _edit_sidecar(json_path, sha256=tensor_sha256(poisoned))  # consistent files, NaN inside
    message = _one_line_error(tmp_path / "vec", "1 of 32 entries are NaN or infinite")
    assert str(tensor_path) in message
    with pytest.raises(UserError, match="NaN or infinite.*retrain"):
        SteeringVector("bipo", 2, poisoned).save(tmp_path / "never")
    assert not (tmp_path / "never.safetensors").exists()


def test_same_vector_same_bytes_with_sorted_header_metadata(tmp_path, model):
    import json

    from safetensors import safe_open

    vector = dense_vector(model)
    contents = set()
    for index in range(8):
        path = vector.save(tmp_path / f"copy{index}")
        contents.add(path.read_bytes())
    assert len(contents) == 1
    data = contents.pop()
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    keys = list(header["__metadata__"])
    assert keys == sorted(keys) and {"method", "layer", "model"} <= set(keys)
    with safe_open(str(tmp_path / "copy0.safetensors"), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("vector"), vector.vector)


@pytest.mark.parametrize("damage, match", [
    ("truncated tensor", "not a readable safetensors file \\(truncated or damaged"),
    ("empty tensor", "not a readable safetensors file \\(empty"),
    ("foreign tensor", "holds weight but no 'vector'"),
    ("broken json", "not a readable vector sidecar \\(broken JSON"),
    ("incomplete json", "incomplete vector sidecar \\(no layer\\)"),
    ("json list", "not a vector sidecar \\(a JSON list"),
    ("json not utf-8", "not a readable vector sidecar \\(not UTF-8"),
])
def test_damaged_files_give_one_line_errors_naming_the_file(tmp_path, model, damage, match):
    from safetensors.torch import save_file

    _, json_path, tensor_path = _saved(tmp_path, model)
    if damage == "truncated tensor":
        tensor_path.write_bytes(tensor_path.read_bytes()[:-20])
    elif damage == "empty tensor":
        tensor_path.write_bytes(b"")
    elif damage == "foreign tensor":
        save_file({"weight": torch.zeros(2, 2)}, str(tensor_path))
    elif damage == "broken json":
        json_path.write_text(json_path.read_text()[:40])
    elif damage == "incomplete json":
        json_path.write_text('{"format": 2, "method": "bipo"}')
    elif damage == "json list":
        json_path.write_text("[1, 2]")
    else:
        json_path.write_bytes(b'{"method": "bipo\xff"}')
    message = _one_line_error(tmp_path / "vec", match)
    damaged = tensor_path if "tensor" in damage else json_path
    assert str(damaged) in message


def test_vectors_saved_before_checksums_still_load(tmp_path, model):
    import json

    from safetensors.torch import save_file

    vector = torch.randn(model.cfg.d_model)
    save_file({"vector": vector}, str(tmp_path / "old.safetensors"),
              metadata={"method": "bipo", "layer": "1"})
    (tmp_path / "old.json").write_text(json.dumps({
        "format": 1, "method": "bipo", "layer": 1,
        "metadata": {"model": "tiny-test-model", "hook_name": "blocks.1.hook_resid_post"}}))
    loaded = SteeringVector.load(tmp_path / "old", model=model)
    assert torch.equal(loaded.vector, vector) and loaded.layer == 1


# ----------------------------------------------------------------------------- steer(): sae-dense


def test_sae_dense_steers_along_decoder_rows_and_round_trips(tmp_path, model, saes):
    """A sae-dense vector c acts as the dense vector c @ W_dec (no encoder, no ReLU, no b_dec),
    needs its SAE, and saves/loads with the SAE's fingerprint like a YaPO vector."""
    sae = saes["jumprelu"]
    generator = torch.Generator().manual_seed(7)
    codes = torch.randn(sae.cfg.d_sae, generator=generator)
    vector = vector_from_tensor("sae-dense", LAYER, codes, model, sae=sae)
    as_dense = vector_from_tensor("bipo", LAYER, (codes @ sae.W_dec).detach(), model)
    toks = tokens(model)
    for direction in (1, -1):
        with steer(model, vector, multipliers=1.5, direction=direction, saes=sae):
            ours = resid_after(model, toks)
        with steer(model, as_dense, multipliers=1.5, direction=direction):
            expected = resid_after(model, toks)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (ours - resid_after(model, toks)).abs().max() > 0.1
    with pytest.raises(UserError, match="saes=sae"):
        with steer(model, vector):
            pass
    assert vector.uses_sae and not vector.is_sparse
    assert vector.metadata["sae"]["fingerprint"] == sae_fingerprint(sae)
    vector.save(tmp_path / "c")
    loaded = SteeringVector.load(tmp_path / "c", model=model, sae=sae)
    assert loaded.method == "sae-dense" and torch.equal(loaded.vector, vector.vector)
    with pytest.raises(UserError, match="fingerprint"):
        SteeringVector.load(tmp_path / "c", model=model, sae=saes["standard"])
