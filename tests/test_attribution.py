"""Feature attribution: dense -> SAE code, code comparison, logit lens, top-activating examples."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from yapo_interp import attribution as attr
from yapo_interp.errors import UserError
from yapo_interp.testing import tiny_model, tiny_sae

scipy_nnls = pytest.importorskip("scipy.optimize").nnls
spearmanr = pytest.importorskip("scipy.stats").spearmanr

D_SAE = 64


@pytest.fixture(scope="module")
def known_sae(model):
    """A tiny SAE whose decoder rows are known unit vectors (random directions, seed 0)."""
    sae = tiny_sae(model, layer=1, d_sae=D_SAE, seed=1)
    rows = torch.randn(D_SAE, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.W_dec.copy_(rows / rows.norm(dim=-1, keepdim=True))
    return sae


# ------------------------------------------------------------------ dense vector -> SAE code


def test_cosine_attributes_a_sum_of_two_rows_to_those_rows(known_sae):
    vector = known_sae.W_dec[5] + known_sae.W_dec[17]
    code = attr.encode_dense(vector, known_sae, "cosine")
    assert set(code.topk(2).indices.tolist()) == {5, 17}


@pytest.mark.parametrize("method", ["nnls", "signed_nnls"])
def test_nnls_attributes_a_sum_of_two_rows_to_exactly_those_rows(known_sae, method):
    vector = known_sae.W_dec[5] + known_sae.W_dec[17]
    code = attr.encode_dense(vector, known_sae, method)
    assert code.shape == (D_SAE,)
    assert set(torch.nonzero(code).flatten().tolist()) == {5, 17}
    torch.testing.assert_close(code[[5, 17]], torch.ones(2), atol=1e-4, rtol=0)


def test_signed_nnls_finds_a_negative_feature_and_nnls_stays_non_negative(known_sae):
    vector = 2.0 * known_sae.W_dec[3] - 0.5 * known_sae.W_dec[40]
    signed = attr.encode_dense(vector, known_sae, "signed_nnls")
    assert set(torch.nonzero(signed).flatten().tolist()) == {3, 40}
    torch.testing.assert_close(signed[[3, 40]], torch.tensor([2.0, -0.5]), atol=1e-4, rtol=0)
    non_negative = attr.encode_dense(vector, known_sae, "nnls")
    assert (non_negative >= 0).all()
    assert non_negative[40] == 0


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("n_atoms", [10, 300])
def test_nnls_reaches_the_same_optimum_as_scipy(signed, n_atoms):
    generator = torch.Generator().manual_seed(3)
    W_dec = torch.randn(n_atoms, 24, generator=generator, dtype=torch.float64)
    vector = torch.randn(24, generator=generator, dtype=torch.float64)
    atoms = torch.cat([W_dec, -W_dec]) if signed else W_dec
    best, best_residual = scipy_nnls(atoms.numpy().T, vector.numpy(), maxiter=10000)
    weights = attr._nnls_fit(vector, atoms, tol=1e-9)
    assert (weights >= 0).all()
    residual = float((vector - weights @ atoms).norm())
    assert residual == pytest.approx(best_residual, abs=1e-6)
    if n_atoms == 10:  # fewer atoms than dimensions: a unique optimum with an active constraint
        assert best_residual > 0.1
        torch.testing.assert_close(weights, torch.from_numpy(best), atol=1e-6, rtol=0)
    code = attr.nnls_code(vector, W_dec, signed=signed, tol=1e-9)
    assert float((vector - code @ W_dec).norm()) == pytest.approx(best_residual, abs=1e-6)


def test_encoder_is_the_shift_of_pre_activations_and_ignores_biases(model, sae):
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    code = attr.encode_dense(vector, sae, "encoder")
    torch.testing.assert_close(code, vector @ sae.W_enc, atol=1e-5, rtol=1e-5)


def test_encoder_offset_respects_the_jumprelu_threshold(model):
    sae = tiny_sae(model, layer=1, d_sae=D_SAE, architecture="jumprelu")
    generator = torch.Generator().manual_seed(2)
    mean = torch.randn(model.cfg.d_model, generator=generator)
    vector = 0.5 * torch.randn(model.cfg.d_model, generator=generator)
    code = attr.encode_dense(vector, sae, "encoder_offset", mean_activation=mean)

    def jumprelu(x):  # written out independently of SAELens
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        return pre * (pre > sae.threshold)

    torch.testing.assert_close(code, jumprelu(mean + vector) - jumprelu(mean), atol=1e-5,
                               rtol=1e-5)
    both_below = (jumprelu(mean + vector) == 0) & (jumprelu(mean) == 0)
    assert both_below.any() and (code[both_below] == 0).all()
    assert (attr.encode_dense(vector, sae, "encoder")[both_below] != 0).any()


def test_encode_dense_rejects_bad_input(model, sae):
    vector = torch.zeros(model.cfg.d_model)
    with pytest.raises(UserError, match="mean_activation"):
        attr.encode_dense(vector, sae, "encoder_offset")
    with pytest.raises(UserError, match="Unknown encoding method"):
        attr.encode_dense(vector, sae, "pca")
    with pytest.raises(UserError, match="d_in=32"):
        attr.encode_dense(torch.zeros(7), sae, "cosine")


def test_fit_quality_is_perfect_for_an_exact_fit(known_sae):
    vector = known_sae.W_dec[5] + known_sae.W_dec[17]
    quality = attr.fit_quality(vector, attr.encode_dense(vector, known_sae), known_sae)
    assert quality["r2"] == pytest.approx(1.0, abs=1e-6)
    assert quality["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert quality["nonzero"] == 2


# ------------------------------------------------------------------ comparing codes


def _code(entries, size=10):
    code = torch.zeros(size)
    for feature, weight in entries.items():
        code[feature] = weight
    return code


def test_top_features_orders_by_absolute_weight_and_skips_zeros():
    code = _code({1: 0.5, 4: -3.0, 7: 1.0})
    assert attr.top_features(code, k=5) == [(4, -3.0), (7, 1.0), (1, 0.5)]
    assert attr.top_features(code, k=2) == [(4, -3.0), (7, 1.0)]


def test_compare_codes_on_hand_made_codes():
    bipo = _code({1: 3.0, 2: 2.0, 3: 1.0, 9: 0.1})
    yapo = _code({2: 5.0, 3: -4.0, 4: 1.0, 8: 0.05})
    comparison = attr.compare_codes(bipo, yapo, k=3)
    assert [f for f, _ in comparison.bipo_top] == [1, 2, 3]
    assert [f for f, _ in comparison.yapo_top] == [2, 3, 4]
    assert comparison.shared == [2, 3]
    assert comparison.only_bipo == [1]
    assert comparison.only_yapo == [4]
    assert comparison.jaccard == pytest.approx(2 / 4)
    assert comparison.sign_agreement == pytest.approx(0.5)  # 2 agrees, 3 does not
    expected_cosine = float(bipo @ yapo / (bipo.norm() * yapo.norm()))
    assert comparison.code_cosine == pytest.approx(expected_cosine, abs=1e-6)
    assert comparison.spearman == pytest.approx(spearmanr(bipo, yapo).statistic, abs=1e-9)
    union = [1, 2, 3, 4]
    assert comparison.spearman_top == pytest.approx(
        spearmanr(bipo[union], yapo[union]).statistic, abs=1e-9)
    assert comparison.decoded_cosine is None
    assert (comparison.bipo_only_nonzero, comparison.yapo_only_nonzero) == (2, 2)  # {1, 9}, {4, 8}


def test_identical_codes_overlap_fully_and_decode_to_the_same_direction(known_sae):
    code = torch.zeros(D_SAE)
    code[[3, 9, 30]] = torch.tensor([1.0, -2.0, 0.5])
    comparison = attr.compare_codes(code, 2.0 * code, k=3, sae=known_sae,
                                    bipo_vector=attr.decoded_direction(code, known_sae))
    assert comparison.jaccard == 1.0
    assert comparison.only_bipo == comparison.only_yapo == []
    assert comparison.code_cosine == pytest.approx(1.0)
    assert comparison.spearman == pytest.approx(1.0)
    assert comparison.decoded_cosine == pytest.approx(1.0, abs=1e-6)
    assert comparison.dense_cosine == pytest.approx(1.0, abs=1e-6)
    opposite = attr.compare_codes(code, -code, k=3, sae=known_sae)
    assert opposite.decoded_cosine == pytest.approx(-1.0, abs=1e-6)
    assert opposite.sign_agreement == 0.0


def test_decoded_direction_is_code_times_w_dec(known_sae):
    code = torch.zeros(D_SAE)
    code[[2, 11]] = torch.tensor([1.5, -1.0])
    expected = 1.5 * known_sae.W_dec[2] - known_sae.W_dec[11]
    torch.testing.assert_close(attr.decoded_direction(code, known_sae), expected)


@pytest.mark.usefixtures("unchecked_shapes")  # the function's own message, not the annotation's
def test_compare_codes_rejects_codes_of_different_saes():
    with pytest.raises(UserError, match="same SAE"):
        attr.compare_codes(torch.zeros(5), torch.zeros(6))


# ------------------------------------------------------------------ explanations


def test_logit_lens_finds_the_token_a_decoder_row_was_built_to_promote():
    model = tiny_model(seed=4)  # own copy: its unembedding is edited below
    sae = tiny_sae(model, layer=1, d_sae=16)
    promoted, suppressed = model.to_single_token("Q"), model.to_single_token("z")
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(5))
    direction = direction - direction.mean()  # survives the final LayerNorm's centring
    direction = direction / direction.norm()
    with torch.no_grad():
        model.ln_final.w.fill_(1.0)
        model.unembed.W_U[:, promoted] += 10.0 * direction
        model.unembed.W_U[:, suppressed] -= 10.0 * direction
        sae.W_dec[7] = direction
    lens = attr.feature_logit_lens(model, sae, [7, 2], k=3)
    assert set(lens) == {7, 2}
    assert lens[7].promoted[0][0] == "Q"
    assert lens[7].suppressed[0][0] == "z"
    assert lens[7].promoted[0][1] > lens[7].promoted[1][1]
    assert len(lens[2].promoted) == len(lens[2].suppressed) == 3


PROMPTS = ["The cat sat on the mat.", "Egypt: koshari and ful!", "zzz", "A longer prompt, "
           "with several words in it.", "I am from Morocco", "42 + 17 = 59", "hello hello"]


def _reference_maxima(model, sae, layer, prompts, features):
    """Each prompt's maximum activation and its position, computed one prompt at a time."""
    values, positions = [], []
    for prompt in prompts:
        tokens = model.to_tokens(prompt)
        _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")
        acts = sae.encode(cache[f"blocks.{layer}.hook_resid_post"])[0, 1:, features]
        value, position = acts.max(dim=0)
        values.append(value)
        positions.append(position + 1)
    return torch.stack(values), torch.stack(positions)


def test_top_activating_examples_are_sorted_and_match_a_direct_computation(model, sae):
    features = [0, 5, 11, 20]
    result = attr.top_activating_examples(model, sae, 1, PROMPTS, features, k=3, batch_size=3)
    values, positions = _reference_maxima(model, sae, 1, PROMPTS, features)
    assert set(result) == set(features)
    listed_any = False
    for column, feature in enumerate(features):
        examples = result[feature]
        activations = [example.activation for example in examples]
        assert activations == sorted(activations, reverse=True)
        expected_order = values[:, column].argsort(descending=True).tolist()
        expected_order = [i for i in expected_order if values[i, column] > 0][:3]
        assert [example.prompt_index for example in examples] == expected_order
        for example in examples:
            listed_any = True
            assert example.activation == pytest.approx(
                float(values[example.prompt_index, column]), abs=1e-5)
            assert example.position == int(positions[example.prompt_index, column])
            assert example.prompt == PROMPTS[example.prompt_index]
            characters = ["<bos>"] + list(example.prompt)
            assert example.token == characters[example.position]
            assert f"[[{example.token}]]" in example.context
    assert listed_any


def test_top_activating_examples_do_not_depend_on_batching(model, sae):
    one = attr.top_activating_examples(model, sae, 1, PROMPTS, [3, 8], k=4, batch_size=1)
    many = attr.top_activating_examples(model, sae, 1, PROMPTS, [3, 8], k=4, batch_size=7)
    for feature in (3, 8):
        assert [(e.prompt_index, e.position) for e in one[feature]] == \
               [(e.prompt_index, e.position) for e in many[feature]]


def test_mean_activation_is_the_mean_over_non_bos_positions(model):
    prompts = ["abc", "hello world"]
    mean = attr.mean_activation(model, 1, prompts, batch_size=2)
    rows = []
    for prompt in prompts:
        _, cache = model.run_with_cache(model.to_tokens(prompt))
        rows.append(cache["blocks.1.hook_resid_post"][0, 1:])
    torch.testing.assert_close(mean, torch.cat(rows).mean(0), atol=1e-5, rtol=1e-5)


def test_neuronpedia_url_only_when_the_sae_has_an_id(model):
    sae = tiny_sae(model, layer=1, d_sae=8)
    assert attr.neuronpedia_url(sae, 3) is None
    sae.cfg.metadata.neuronpedia_id = "gemma-2-2b/15-gemmascope-res-65k"
    assert attr.neuronpedia_url(sae, 3) == \
        "https://www.neuronpedia.org/gemma-2-2b/15-gemmascope-res-65k/3"


# ------------------------------------------------------------------ the whole analysis


def test_attribute_and_write_report(model, known_sae, tmp_path):
    bipo_vector = known_sae.W_dec[5] + 0.5 * known_sae.W_dec[17]
    yapo_vector = torch.zeros(D_SAE)
    yapo_vector[[5, 30]] = torch.tensor([2.0, -1.0])
    config = attr.AttributionConfig(attribution="static", k=3, n_tokens=4, n_examples=2,
                                    batch_size=4)
    report = attr.attribute(model, known_sae, 1, bipo_vector, yapo_vector, PROMPTS, config)
    assert report.comparison.shared == [5]
    assert report.comparison.only_bipo == [17]
    assert report.comparison.only_yapo == [30]
    assert set(report.features["feature"]) == {5, 17, 30}
    assert report.bipo_fit["r2"] == pytest.approx(1.0, abs=1e-6)
    assert (report.examples["feature"].isin([5, 17, 30])).all()
    written = attr.write_report(report, tmp_path, {"config": config}, image_formats=())
    names = {path.name for path in written}
    assert {"top_features.csv", "top_examples.csv", "top_features_bipo.html",
            "top_features_yapo.html", "top_weights.html", "attribution.json"} <= names
    table = pd.read_csv(tmp_path / "top_features.csv")
    assert dict(zip(table["feature"], table["status"])) == {5: "shared", 17: "only_bipo",
                                                           30: "only_yapo"}
    result = json.loads((tmp_path / "attribution.json").read_text())
    assert result["overlap"]["jaccard"] == pytest.approx(1 / 3)
    assert result["settings"]["config"]["k"] == 3
    assert "BiPO" in (tmp_path / "top_weights.html").read_text()
    assert "Jaccard" in attr.format_overlap(report)


def test_attribute_rejects_vectors_of_the_wrong_width(model, sae):
    with pytest.raises(UserError, match="d_sae=64"):
        attr.attribute(model, sae, 1, torch.zeros(32), torch.zeros(10))
    with pytest.raises(UserError, match="d_model=32"):
        attr.attribute(model, sae, 1, torch.zeros(31), torch.zeros(64))


def test_load_prompts_from_files(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert attr.load_prompts(str(tmp_path / "p.txt")) == ["one", "two"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"question": "b"}\n')
    assert attr.load_prompts(str(tmp_path / "p.jsonl")) == ["a", "b"]
    pd.DataFrame({"question": ["x", "y", "z"]}).to_csv(tmp_path / "p.csv", index=False)
    assert attr.load_prompts(str(tmp_path / "p.csv"), limit=2) == ["x", "y"]
    assert attr.load_prompts("none") == []
    with pytest.raises(UserError, match="no such file"):
        attr.load_prompts(str(tmp_path / "missing.txt"))
    assert np.all([isinstance(p, str) for p in attr._spread(list("abcdefgh"), 3)])


def test_nnls_max_features_keeps_the_strongest_features(known_sae):
    vector = 2.0 * known_sae.W_dec[3] + known_sae.W_dec[9] + 0.1 * known_sae.W_dec[20]
    full = attr.encode_dense(vector, known_sae, "signed_nnls")
    assert set(torch.nonzero(full).flatten().tolist()) == {3, 9, 20}
    capped = attr.encode_dense(vector, known_sae, "signed_nnls", max_features=2)
    assert set(torch.nonzero(capped).flatten().tolist()) == {3, 9}


# ------------------------------------------------------------------ command line


@pytest.fixture()
def saved_vectors(model, known_sae, tmp_path):
    steering = pytest.importorskip("yapo_interp.steering")
    sae_dir = tmp_path / "sae"
    known_sae.save_model(str(sae_dir))
    bipo = steering.vector_from_tensor("bipo", 1, known_sae.W_dec[5] + known_sae.W_dec[17], model,
                                       country="egypt", epoch=1)
    code = torch.zeros(D_SAE)
    code[[5, 30]] = torch.tensor([2.0, -1.0])
    yapo = steering.vector_from_tensor("yapo", 1, code, model, sae=known_sae,
                                       sae_info={"path": str(sae_dir)}, country="egypt", epoch=1)
    bipo.save(tmp_path / "bipo")
    yapo.save(tmp_path / "yapo")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS))
    return tmp_path, steering


def test_cli_writes_tables_and_prints_the_overlap(model, saved_vectors, monkeypatch, capsys):
    folder, _ = saved_vectors
    monkeypatch.setattr("yapo_interp.models.load_model", lambda *args, **kwargs: model)
    code = attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "yapo.json"),
                      "--attribution", "static",
                      "--k", "3", "--prompts-from", str(folder / "prompts.txt"),
                      "--out", str(folder / "out"), "--no-images"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Jaccard" in printed and "only YaPO: [30]" in printed
    for name in ("top_features.csv", "top_examples.csv", "top_features_bipo.html",
                 "top_features_yapo.html", "top_weights.html", "attribution.json"):
        assert (folder / "out" / name).is_file(), name
    result = json.loads((folder / "out" / "attribution.json").read_text())
    assert result["shared"] == [5] and result["settings"]["n_prompts"] == len(PROMPTS)


def test_cli_rejects_vectors_that_do_not_fit(model, saved_vectors, monkeypatch):
    folder, steering = saved_vectors
    monkeypatch.setattr("yapo_interp.models.load_model", lambda *args, **kwargs: model)
    common = ["--prompts-from", "none", "--out", str(folder / "out")]
    with pytest.raises(UserError, match="sparse yapo vector"):
        attr.main(["--bipo", str(folder / "yapo"), "--yapo", str(folder / "yapo")] + common)
    wide = steering.SteeringVector.load(folder / "yapo")
    wide.vector = torch.zeros(D_SAE + 1)
    wide.save(folder / "wide")
    with pytest.raises(UserError, match="d_sae=65"):
        attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "wide")] + common)
    other_model = steering.SteeringVector("bipo", 1, torch.zeros(48))
    other_model.save(folder / "other")
    with pytest.raises(UserError, match="d_model=48"):
        attr.main(["--bipo", str(folder / "other"), "--yapo", str(folder / "yapo")] + common)


def test_cli_reports_a_damaged_vector_file_in_one_line_before_loading_the_model(
        saved_vectors, monkeypatch):
    folder, _ = saved_vectors

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a damaged vector")

    monkeypatch.setattr("yapo_interp.models.load_model", no_model)
    tensor = folder / "yapo.safetensors"
    tensor.write_bytes(tensor.read_bytes()[:50])  # truncated copy
    with pytest.raises(UserError, match="not a readable safetensors file") as error:
        attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "yapo"),
                   "--prompts-from", "none", "--out", str(folder / "out")])
    assert str(tensor) in str(error.value) and "\n" not in str(error.value)
    (folder / "bipo.json").write_text('{"method": "bipo"')
    with pytest.raises(UserError, match=r"bipo.json: not a readable vector sidecar"):
        attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "yapo"),
                   "--prompts-from", "none", "--out", str(folder / "out")])


# ------------------------------------------------------------------ effect on real activations


@pytest.fixture(scope="module")
def activations(model):
    """Real residual-stream activations of the tiny model at layer 1 (BOS left out)."""
    return torch.cat(list(attr.token_activations(model, 1, PROMPTS, batch_size=3)))


@pytest.fixture(scope="module")
def tied_sae(model):
    """An SAE whose encoder is its (unit-row) decoder transposed, as trained SAEs roughly are."""
    sae = tiny_sae(model, layer=1, d_sae=D_SAE, seed=3)
    rows = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
    return sae


def test_token_activations_are_the_real_tokens_without_bos_or_padding(model, activations):
    expected = sum(model.to_tokens(prompt).shape[1] - 1 for prompt in PROMPTS)
    assert activations.shape == (expected, model.cfg.d_model)
    _, cache = model.run_with_cache(model.to_tokens(PROMPTS[1]))
    torch.testing.assert_close(activations[len(PROMPTS[0]):len(PROMPTS[0]) + len(PROMPTS[1])],
                               cache["blocks.1.hook_resid_post"][0, 1:])


def test_effect_codes_match_a_direct_computation_and_do_not_depend_on_batching(
        sae, activations):
    from yapo_interp.steering import sparse_intervention

    generator = torch.Generator().manual_seed(4)
    dense, sparse = torch.randn(32, generator=generator), torch.randn(64, generator=generator)
    vectors = {"bipo": dense, "yapo": sparse}
    whole = attr.effect_codes([activations], sae, vectors, strength=1.5)
    parts = attr.effect_codes(activations.split(7), sae, vectors, strength=1.5)
    with torch.no_grad():
        codes = sae.encode(activations)
        for direction in (1, -1):
            bipo = sae.encode(activations + direction * 1.5 * dense) - codes
            yapo_steered = sparse_intervention(activations, sparse, sae, direction * 1.5)
            yapo = sae.encode(yapo_steered) - codes
            gated = torch.relu(codes + direction * 1.5 * sparse) - codes
            torch.testing.assert_close(whole[("bipo", direction)].effect, bipo.mean(0))
            torch.testing.assert_close(whole[("yapo", direction)].effect, yapo.mean(0))
            torch.testing.assert_close(whole[("yapo", direction)].gated, gated.mean(0))
            torch.testing.assert_close(whole[("bipo", direction)].mean_shift,
                                       direction * 1.5 * dense)
            assert whole[("bipo", direction)].gated is None
            for key in (("bipo", direction), ("yapo", direction)):
                torch.testing.assert_close(parts[key].effect, whole[key].effect)
                assert parts[key].decoded_r2 == pytest.approx(whole[key].decoded_r2)
                shift = whole[key].mean_shift.double()
                unexplained = shift - whole[key].effect.double() @ sae.W_dec.double()
                assert whole[key].mean_r2 == pytest.approx(
                    1 - float(unexplained @ unexplained / (shift @ shift)), rel=1e-4)
                # the shares add up to the decoded effect projected on the mean shift
                shift = whole[key].mean_shift.double()
                decoded = whole[key].effect.double() @ sae.W_dec.double()
                assert float(whole[key].share.double().sum()) == pytest.approx(
                    float(decoded @ shift / (shift @ shift)), rel=1e-4)
    assert whole[("bipo", 1)].n_tokens == activations.shape[0]


def test_negative_yapo_entries_on_never_active_features_get_zero_effect(model, activations):
    sae = tiny_sae(model, layer=1, d_sae=D_SAE, seed=2)
    dead = [11, 23, 42]
    with torch.no_grad():
        sae.b_enc[dead] = -100.0
    assert (sae.encode(activations)[:, dead] == 0).all()  # never active on these tokens
    planted = torch.zeros(D_SAE)
    planted[[2, 7]] = 1.0
    planted[dead] = -5.0  # the largest |v|: a static reading would list them first
    assert {f for f, _ in attr.top_features(planted, 3)} == set(dead)
    effects = attr.effect_codes([activations], sae, {"yapo": planted})
    plus, minus = effects[("yapo", 1)], effects[("yapo", -1)]
    assert (plus.effect[dead] == 0).all() and (plus.gated[dead] == 0).all()
    assert not set(dead) & {f for f, _ in attr.top_features(plus.effect, 5)}
    assert plus.effect.abs().sum() > 0  # the live entries do act
    # d = -1 turns the same entries into +5 on the pre-activation: the features switch on
    # (re-encoding cannot see them: their encoder bias keeps them off, hence the gated code too)
    torch.testing.assert_close(minus.gated[dead], torch.full((3,), 5.0))
    assert not torch.allclose(minus.mean_shift, -plus.mean_shift, atol=1e-3)


def test_effect_of_one_decoder_row_added_to_real_activations_ranks_that_feature_first(
        tied_sae, activations):
    for feature in range(D_SAE):
        row = tied_sae.W_dec[feature].clone()
        effects = attr.effect_codes([activations], tied_sae, {"bipo": row}, directions=(1,),
                                    strength=2.0)
        assert attr.top_features(effects[("bipo", 1)].effect, 1)[0][0] == feature, feature


def test_r2_by_k_is_monotone_and_reaches_one():
    generator = torch.Generator().manual_seed(5)
    W_dec = torch.randn(40, 12, generator=generator, dtype=torch.float64)
    target = torch.randn(12, generator=generator, dtype=torch.float64)
    code = torch.randn(40, generator=generator, dtype=torch.float64)
    code[[3, 9]] = 0.0
    curve = attr.r2_by_k(target, W_dec, code, range(0, 60))
    ks, values = [k for k, _ in curve], [value for _, value in curve]
    assert ks == list(range(0, 39))  # cut at the 38 non-zero features
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0)
    first = int(code.abs().argmax())  # k = 1: the squared cosine with the largest feature's row
    cosine = float(target @ W_dec[first] / (target.norm() * W_dec[first].norm()))
    assert values[1] == pytest.approx(cosine ** 2)


def test_attribute_by_effect_compares_per_direction(model, tied_sae, tmp_path):
    bipo_vector = tied_sae.W_dec[5] + 0.5 * tied_sae.W_dec[17]
    yapo_vector = torch.zeros(D_SAE)
    yapo_vector[[5, 30]] = torch.tensor([2.0, -1.0])
    config = attr.AttributionConfig(k=3, n_tokens=4, n_examples=2, batch_size=4, strength=2.0)
    report = attr.attribute(model, tied_sae, 1, bipo_vector, yapo_vector, PROMPTS, config)
    assert set(report.by_direction) == {1, -1}
    assert report.comparison.bipo_top[0][0] == 5 and report.comparison.yapo_top[0][0] == 5
    torch.testing.assert_close(report.yapo_code, report.effects[("yapo", 1)].effect)
    assert report.features["yapo_v"].tolist() == [float(yapo_vector[f])
                                                  for f in report.features["feature"]]
    assert set(report.effect_features["direction"]) == {1, -1}
    for (method, direction), curve in report.r2.groupby(["method", "direction"]):
        assert curve["r2"].is_monotonic_increasing, (method, direction)
    written = attr.write_report(report, tmp_path, {"config": config}, image_formats=())
    names = {path.name for path in written}
    assert {"effect_features.csv", "r2_by_k.csv", "r2_by_k.html", "top_features.csv"} <= names
    result = json.loads((tmp_path / "attribution.json").read_text())
    assert set(result["by_direction"]) == {"+1", "-1"}
    assert result["effects"]["yapo+1"]["n_tokens"] == report.effects[("yapo", 1)].n_tokens
    assert "Effect on real activations" in attr.format_overlap(report)
    from yapo_interp.figures import regenerate

    drawn = {path.name for path in regenerate(tmp_path, tmp_path / "figures", ())}
    assert {"r2_by_k.html", "top_features_bipo.html", "top_features_yapo.html"} <= drawn
    with pytest.raises(UserError, match="needs dataset prompts"):
        attr.attribute(model, tied_sae, 1, bipo_vector, yapo_vector, [], config)


def test_cli_defaults_to_effect_attribution(model, saved_vectors, monkeypatch, capsys):
    folder, _ = saved_vectors
    monkeypatch.setattr("yapo_interp.models.load_model", lambda *args, **kwargs: model)
    code = attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "yapo"),
                      "--k", "3", "--prompts-from", str(folder / "prompts.txt"),
                      "--out", str(folder / "effect"), "--no-images"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "attribution effect" in printed and "d = -1" in printed
    result = json.loads((folder / "effect" / "attribution.json").read_text())
    assert result["settings"]["config"]["attribution"] == "effect"
    assert {"bipo+1", "bipo-1", "yapo+1", "yapo-1"} == set(result["effects"])
    assert (folder / "effect" / "effect_features.csv").is_file()
    with pytest.raises(UserError, match="--strength"):
        attr.main(["--bipo", str(folder / "bipo"), "--yapo", str(folder / "yapo"),
                   "--strength", "0", "--out", str(folder / "effect")])


def test_static_attribution_reports_r2_by_k(model, known_sae):
    bipo_vector = known_sae.W_dec[5] + 0.5 * known_sae.W_dec[17]
    yapo_vector = torch.zeros(D_SAE)
    yapo_vector[[5, 30, 31]] = torch.tensor([2.0, -1.0, 0.1])
    config = attr.AttributionConfig(attribution="static", k=3, feature_pages=False)
    report = attr.attribute(model, known_sae, 1, bipo_vector, yapo_vector, [], config)
    bipo = report.r2[report.r2.method == "bipo"].set_index("k")["r2"]
    assert list(bipo.index) == [1, 2]  # k cut at the code's two non-zero features
    assert bipo[1] < 0.99 and bipo[2] == pytest.approx(1.0, abs=1e-6)
    yapo = report.r2[report.r2.method == "yapo"].set_index("k")["r2"]
    assert list(yapo.index) == [1, 2, 3] and yapo.is_monotonic_increasing
    assert yapo[3] == pytest.approx(1.0, abs=1e-6) and yapo[1] < yapo[2] < 1.0


def test_top_features_table_labels_effects_and_shows_yapo_v(model, tied_sae):
    yapo_vector = torch.zeros(D_SAE)
    yapo_vector[[5, 30]] = torch.tensor([2.0, -1.0])
    config = attr.AttributionConfig(k=2, n_tokens=2, n_examples=1, feature_pages=False)
    report = attr.attribute(model, tied_sae, 1, tied_sae.W_dec[5].clone(), yapo_vector,
                            PROMPTS, config)
    table = attr.top_features_table_figure(report.features, "yapo").data[0]
    headers = list(table.header.values)
    assert "<b>YaPO (ours) effect</b>" in headers and "<b>YaPO v</b>" in headers
    shown_v = table.cells.values[headers.index("<b>YaPO v</b>")]
    ranked = report.features.dropna(subset=["yapo_rank"]).sort_values("yapo_rank")
    assert list(shown_v) == [f"{w:+.3g}" if w else "0" for w in ranked["yapo_v"]]
