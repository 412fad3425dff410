"""Patching semantics on a tiny model: full patches reproduce the source run, empty patches the
clean run, and the fast paths (resid reuse, response-only unembedding) change no number."""

import pandas as pd
import pytest
import torch

from yapo_interp.errors import UserError
from yapo_interp.patching import (PatchingPair, choose_layer, last_token_patch,
                                  patch_last_token_scores, patched_final_residual,
                                  patching_figure, score_pairs, site_hook_name, summarise,
                                  tokenize_prompt_response, tokenize_shared_prefix)
from yapo_interp.logprobs import masked_response_logprobs as response_logprobs_from_residual
from yapo_interp.testing import gemma_like_model


def logits_from(model, residual):
    return model.unembed(model.ln_final(residual))


@pytest.fixture(scope="module")
def two_runs(model):
    """Two prompts of the same token length (character tokenizer: same string length)."""
    source = model.to_tokens("I am from Morocco. Breakfast?")
    target = model.to_tokens("Wash bghiti tfter daba? Ahh..")
    assert source.shape == target.shape
    return source, target


@pytest.mark.parametrize("site", ["resid_pre", "resid_post"])
def test_patching_every_position_at_layer_0_reproduces_source_run(model, two_runs, site):
    source, target = two_runs
    _, cache = model.run_with_cache(source)
    mask = torch.ones(target.shape, dtype=torch.bool)
    patched = patched_final_residual(model, target, layer=0, site=site, patch_mask=mask,
                                     source=cache[site_hook_name(0, site)])
    torch.testing.assert_close(logits_from(model, patched), model(source), atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["resid_pre", "resid_post", "attn_out", "mlp_out"])
@pytest.mark.parametrize("layer", [0, 2])
def test_patching_nothing_reproduces_clean_run(model, two_runs, site, layer):
    source, target = two_runs
    _, source_cache = model.run_with_cache(source)
    _, target_cache = model.run_with_cache(target)
    mask = torch.zeros(target.shape, dtype=torch.bool)
    for resid_pre in (None, target_cache[f"blocks.{layer}.hook_resid_pre"]):
        patched = patched_final_residual(model, target, layer=layer, site=site, patch_mask=mask,
                                         source=source_cache[site_hook_name(layer, site)],
                                         resid_pre=resid_pre)
        torch.testing.assert_close(logits_from(model, patched), model(target), atol=1e-5, rtol=0)


def test_patch_changes_only_the_patched_position_and_later(model, two_runs):
    source, target = two_runs
    _, cache = model.run_with_cache(source)
    position = 10
    mask, values = last_token_patch(1, target.shape[1], torch.tensor([position]),
                                    cache["blocks.1.hook_resid_post"][:, position])
    patched = logits_from(model, patched_final_residual(
        model, target, layer=1, site="resid_post", patch_mask=mask, source=values))
    clean = model(target)
    torch.testing.assert_close(patched[:, :position], clean[:, :position])
    assert not torch.allclose(patched[:, position], clean[:, position])


def test_response_logprobs_equal_full_logits_computation(model):
    prompts = ["Question: hi?\nAnswer:", "Question: a longer one?\nAnswer:"]
    responses = [" yes", " no way"]
    batch = tokenize_prompt_response(model, prompts, responses)
    final = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
    fast = response_logprobs_from_residual(model, final, batch.tokens, batch.response_mask)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        tokens = torch.cat([model.to_tokens(prompt)[0], model.to_tokens(response,
                                                                         prepend_bos=False)[0]])
        logprobs = model(tokens[None]).log_softmax(-1)[0]
        n = len(model.to_tokens(response, prepend_bos=False)[0])
        expected = sum(logprobs[t - 1, tokens[t]] for t in range(len(tokens) - n, len(tokens)))
        torch.testing.assert_close(fast[row], expected, atol=1e-5, rtol=0)


def test_reusing_clean_residuals_equals_patching_the_full_run(model):
    localized = tokenize_prompt_response(model, ["From Egypt: tea?"] * 2, [" shai", " coffee"])
    nonlocalized = tokenize_prompt_response(model, ["Ezayak, tea?"] * 2, [" shai", " coffee"])
    scores = patch_last_token_scores(model, localized, nonlocalized, layers=[0, 1, 2])
    _, source_cache = model.run_with_cache(localized.tokens)
    rows = torch.arange(2)
    for index, layer in enumerate([0, 1, 2]):
        values = source_cache[f"blocks.{layer}.hook_resid_post"][rows,
                                                                  localized.last_prompt_position]
        mask, source = last_token_patch(*nonlocalized.tokens.shape,
                                        nonlocalized.last_prompt_position, values)
        final = patched_final_residual(model, nonlocalized.tokens, layer=layer,
                                       site="resid_post", patch_mask=mask, source=source)
        expected = response_logprobs_from_residual(model, final, nonlocalized.tokens,
                                                    nonlocalized.response_mask)
        torch.testing.assert_close(scores.patched[index], expected, atol=1e-5, rtol=0)


def test_identical_prompts_make_patching_a_no_op(model):
    batch = tokenize_prompt_response(model, ["Same prompt?"] * 3, [" a", " bb", " ccc"])
    scores = patch_last_token_scores(model, batch, batch, layers=[0, 1, 2], site="resid_pre")
    for layer_scores in scores.patched:
        torch.testing.assert_close(layer_scores, scores.clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.localized, scores.clean)


def test_unknown_site_is_a_clear_error():
    with pytest.raises(UserError, match="valid sites"):
        site_hook_name(1, "resid_middle")


def test_score_pairs_gives_probabilities_over_options(model):
    pair = PatchingPair(pair_id="q1", country="egypt", language="arabic",
                        localized_prompt="I am from Egypt. Breakfast?",
                        nonlocalized_prompt="Ezayak ya basha, breakfast?",
                        options=(" ful", " msemen", " eggs"),
                        option_labels=("egypt", "morocco", "western"))
    records = score_pairs(model, [pair], layers=[0, 1, 2], site="resid_post")
    assert [r["layer"] for r in records] == [0, 1, 2]
    for record in records:
        assert 0 < record["p_country"] < 1 and 0 < record["p_western"] < 1
        assert record["p_country"] + record["p_western"] < 1  # a third option takes the rest


def test_choose_layer_maximises_mean_effect_over_countries():
    rows = []
    for country, effects in {"egypt": [0.0, 0.3, 0.1], "morocco": [0.0, 0.1, 0.25]}.items():
        for layer, effect in enumerate(effects):
            for pair in range(2):
                rows.append(dict(country=country, site="resid_post", layer=layer,
                                 pair_id=f"q{pair}", p_country=0.5 + effect, p_western=0.5,
                                 p_country_clean=0.5, p_western_clean=0.5,
                                 p_country_localized=0.9, p_western_localized=0.1))
    summary = summarise(pd.DataFrame(rows))
    assert choose_layer(summary) == 1  # mean effects: 0, 0.2, 0.175
    egypt_1 = summary[(summary.country == "egypt") & (summary.layer == 1)].iloc[0]
    assert egypt_1.effect == pytest.approx(0.3) and egypt_1.n_pairs == 2
    figure = patching_figure(summary, chosen_layer=1)
    assert [a.text for a in figure.layout.annotations if a.text.startswith("layer")] == \
        ["layer 1", "layer 1"]


@pytest.mark.parametrize("score", ["mean", "sum"])
def test_option_probabilities_follow_the_score(model, score):
    pair = PatchingPair(pair_id="q1", country="egypt", language="arabic",
                        localized_prompt="I am from Egypt. Tea?", nonlocalized_prompt="Tea, ya basha?",
                        options=(" shai bel naana", " atay", " tea"),
                        option_labels=("egypt", "morocco", "western"))
    record = score_pairs(model, [pair], layers=[1], site="resid_post", score=score)[0]
    batch = tokenize_prompt_response(model, [pair.nonlocalized_prompt] * 3, list(pair.options))
    final = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
    sums = response_logprobs_from_residual(model, final, batch.tokens, batch.response_mask)
    lengths = batch.response_mask.sum(-1).float()
    expected = (sums / lengths if score == "mean" else sums).softmax(-1)
    assert record["p_country_clean"] == pytest.approx(expected[0].item(), abs=1e-6)
    assert record["p_western_clean"] == pytest.approx(expected[2].item(), abs=1e-6)


def test_localization_gain_measures_the_unpatched_localized_shift():
    rows = [dict(country="egypt", site="resid_post", layer=0, pair_id="q0", p_country=0.2,
                 p_western=0.5, p_country_clean=0.2, p_western_clean=0.5,
                 p_country_localized=0.6, p_western_localized=0.3)]
    from yapo_interp.patching import localization_gain

    assert localization_gain(summarise(pd.DataFrame(rows))) == pytest.approx(0.6)


def test_cli_rejects_repeated_and_out_of_range_layers_before_loading_the_model(tmp_path,
                                                                                monkeypatch):
    from yapo_interp import patching
    from yapo_interp.patching import PatchingConfig, run_patching

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("yapo_interp.models.load_model", no_model)
    common = ["--countries", "egypt", "--out", str(tmp_path / "out")]
    with pytest.raises(UserError, match="--layers lists layer 5 more than once") as error:
        patching.main(["--layers", "5", "5"] + common)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"--layers 40 is out of range for embedded, which has "
                                        r"layers 0\.\.17"):
        patching.main(["--layers", "3", "40"] + common)
    with pytest.raises(UserError, match="--batch-pairs must be at least 1"):
        patching.main(["--batch-pairs", "0"] + common)
    with pytest.raises(UserError, match="more than once"):  # the library refuses them too
        run_patching(None, [], PatchingConfig(layers=(1, 1)))


# ------------------------------------------------------------------ first-token readout (issue 14)


def test_first_token_readout_is_a_softmax_of_first_token_logprobs(model):
    pair = PatchingPair(pair_id="q1", country="egypt", language="arabic",
                        localized_prompt="I am from Egypt. Tea?", nonlocalized_prompt="Tea, ya basha?",
                        options=("shai bel naana", "atay", "tea"),
                        option_labels=("egypt", "morocco", "western"))
    records = score_pairs(model, [pair], layers=[0, 2], site="resid_post")
    prompt_tokens = model.to_tokens(pair.nonlocalized_prompt)
    with torch.no_grad():
        logits = model(prompt_tokens)[0, -1].log_softmax(-1)
    first_ids = [model.to_single_token(option[0]) for option in pair.options]
    expected = logits[first_ids].softmax(-1)
    for record in records:
        assert record["p_country_first_clean"] == pytest.approx(expected[0].item(), abs=1e-5)
        assert record["p_western_first_clean"] == pytest.approx(expected[2].item(), abs=1e-5)
    # a patch at the last layer's output of the last prompt position replaces exactly the
    # residual that predicts the first token: the readout equals the localized run's
    last = score_pairs(model, [pair], layers=[model.cfg.n_layers - 1], site="resid_post")[0]
    assert last["p_country_first"] == pytest.approx(last["p_country_first_localized"], abs=1e-5)
    assert last["p_western_first"] == pytest.approx(last["p_western_first_localized"], abs=1e-5)
    assert last["p_country_first"] != pytest.approx(last["p_country_first_clean"], abs=1e-4)


def test_summarise_adds_the_first_token_effect_when_present():
    rows = [dict(country="egypt", site="resid_post", layer=0, pair_id="q0", p_country=0.2,
                 p_western=0.5, p_country_clean=0.2, p_western_clean=0.5,
                 p_country_localized=0.6, p_western_localized=0.3, p_country_first=0.7,
                 p_western_first=0.1, p_country_first_clean=0.3, p_western_first_clean=0.3,
                 p_country_first_localized=0.8, p_western_first_localized=0.1)]
    summary = summarise(pd.DataFrame(rows))
    assert summary.effect.iloc[0] == pytest.approx(0.0)
    assert summary.effect_first.iloc[0] == pytest.approx(0.6)
    assert "effect_first" not in summarise(pd.DataFrame(rows).drop(columns=[
        c for c in rows[0] if "_first" in c]))


# --- shared prompts: the unpatched prefix runs once; every number is the plain path's ---

PAIRS = [
    PatchingPair(pair_id="q1", country="egypt", language="arabic",
                 localized_prompt="I am from Egypt. What do we eat for breakfast?",
                 nonlocalized_prompt="Ezayak ya basha, breakfast eh?",
                 options=(" ful medames", " msemen", " eggs and bacon"),
                 option_labels=("egypt", "morocco", "western")),
    PatchingPair(pair_id="q2", country="morocco", language="arabic",
                 localized_prompt="From Morocco: tea?", nonlocalized_prompt="Wash bghiti atay?",
                 options=(" shai", " atay bi naanaa", " tea", " coffee"),
                 option_labels=("egypt", "morocco", "western", "usa")),
]
NUMBERS = ("p_country", "p_western", "logp_country", "logp_western", "p_country_clean",
           "p_western_localized", "p_country_first", "p_western_first_clean")


@pytest.mark.parametrize("site", ["resid_pre", "resid_post", "attn_out", "mlp_out"])
def test_shared_prompt_patching_equals_the_plain_path(model, site):
    plain = score_pairs(model, PAIRS, layers=[0, 1, 2], site=site, share_prompts=False)
    shared = score_pairs(model, PAIRS, layers=[0, 1, 2], site=site)
    assert len(plain) == len(shared) == 6
    for a, b in zip(plain, shared):
        assert (a["pair_id"], a["layer"]) == (b["pair_id"], b["layer"])
        for name in NUMBERS:
            assert b[name] == pytest.approx(a[name], abs=1e-5), name


@pytest.mark.parametrize("window", [64, 6])
def test_shared_prompt_patching_is_exact_on_a_gemma_like_model(window):
    """Rotary positions, grouped-query attention, sliding windows (6 tokens: crossed by every
    prompt), float64: equal to 1e-10."""
    gemma_like = gemma_like_model(window_size=window)
    for site in ("resid_post", "attn_out"):
        plain = score_pairs(gemma_like, PAIRS, layers=[0, 2, 3], site=site, share_prompts=False)
        shared = score_pairs(gemma_like, PAIRS, layers=[0, 2, 3], site=site)
        for a, b in zip(plain, shared):
            for name in NUMBERS:
                assert b[name] == pytest.approx(a[name], abs=1e-10), (site, name)


def test_shared_prompt_patching_moves_the_answer(model):
    """Not vacuous: the patched numbers differ from the clean ones on the shared path too."""
    records = score_pairs(model, PAIRS, layers=[2], site="resid_post")
    assert any(abs(r["p_country"] - r["p_country_clean"]) > 1e-4 for r in records)


def test_shared_prefix_tokenization_refuses_an_empty_option(model):
    with pytest.raises(UserError, match="Empty response"):
        tokenize_shared_prefix(model, ["a question?"], [""])


def test_choosing_the_layer_never_patches_a_test_question(monkeypatch):
    """Layer choice is tuning: run_patching draws its pairs from training questions only (the
    split train and evaluate use), even when asked for more pairs than exist."""
    from yapo_interp.data import load_cultural
    from yapo_interp.data.pairs import is_test_question
    from yapo_interp.patching import PatchingConfig, run_patching, stage

    seen = []
    monkeypatch.setattr(stage, "score_pairs", lambda model, batch, *a, **k: seen.extend(batch)
                        or [])
    monkeypatch.setattr(stage, "check_layer", lambda model, layer: layer)
    monkeypatch.setattr(stage, "summarise", lambda table: table)
    monkeypatch.setattr(stage, "choose_layer", lambda summary: 0)

    class Tiny:  # run_patching reads only the layer count and the tokenizer
        cfg = type("cfg", (), {"n_layers": 2})
        tokenizer = None

    items = load_cultural(countries=["egypt", "morocco"])
    assert any(is_test_question(item.question_id) for item in items)
    try:
        run_patching(Tiny(), items, PatchingConfig(pairs_per_country=100, layers=(0,)),
                     progress=False)
    except (KeyError, ValueError):
        pass  # the empty table after the stubbed scoring; the pairs were drawn before
    assert seen and not any(is_test_question(pair.pair_id) for pair in seen)
