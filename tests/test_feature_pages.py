"""Offline feature pages: statistics match a direct computation; pages are escaped and offline."""

import re

import pytest
import torch

from yapo_interp import attribution as attr
from yapo_interp import feature_pages as pages
from yapo_interp.errors import UserError

PROMPTS = ["The cat sat on the mat.", "Egypt: koshari and ful!", "zzz", "<b>bold</b> & co",
           "I am from Morocco", "42 + 17 = 59", "hello hello"]
FEATURES = [3, 10, 41]


@pytest.fixture(scope="module")
def stats(model, sae):
    return pages.feature_statistics(model, sae, 1, PROMPTS, FEATURES, n_contexts=3, before=4,
                                    after=2, batch_size=3)


def _direct_codes(model, sae, prompt):
    _, cache = model.run_with_cache(model.to_tokens(prompt))
    return sae.encode(cache["blocks.1.hook_resid_post"][0])  # [pos, d_sae]


def test_statistics_match_a_direct_computation(model, sae, stats):
    codes = [_direct_codes(model, sae, prompt) for prompt in PROMPTS]
    assert set(stats) == set(FEATURES)
    for feature in FEATURES:
        values = torch.cat([code[1:, feature] for code in codes])  # BOS left out
        feature_stats = stats[feature]
        assert feature_stats.n_tokens == values.numel()
        torch.testing.assert_close(torch.tensor(feature_stats.activations),
                                   values[values != 0], atol=1e-5, rtol=1e-5)
        maxima = torch.stack([code[1:, feature].max() for code in codes])
        expected = [int(i) for i in maxima.argsort(descending=True)[:3] if maxima[i] > 0]
        assert [c.prompt_index for c in feature_stats.contexts] == expected
        for context in feature_stats.contexts:
            prompt_codes = codes[context.prompt_index][:, feature]
            assert context.position == int(prompt_codes[1:].argmax()) + 1
            assert context.activation == pytest.approx(float(prompt_codes.max()), abs=1e-5)
            assert len(context.tokens) == len(context.activations) <= 4 + 1 + 2
            assert context.tokens[context.peak] == \
                model.to_str_tokens(PROMPTS[context.prompt_index])[context.position]


def test_page_shades_the_contexts_escapes_tokens_and_loads_nothing_online(stats):
    feature = max(FEATURES, key=lambda f: len(stats[f].contexts))
    logits = attr.FeatureLogits(feature, promoted=[("<tag>", 1.5)], suppressed=[("x", -2.0)])
    page = pages.feature_page_html(stats[feature], logits=logits, weights={"YaPO v": -0.25},
                                   neuronpedia="https://www.neuronpedia.org/model/sae/3")
    assert re.findall(r'<script[^>]*src="([^"]+)"', page) == ["plotly.min.js"]
    assert "<tag>" not in page and "&lt;tag&gt;" in page
    assert "YaPO v: -0.25" in page and 'href="https://www.neuronpedia.org/model/sae/3"' in page
    assert page.count('class="peak"') == len(stats[feature].contexts)
    top = stats[feature].contexts[0]
    assert 'style="background: rgba(214, 39, 40, 1.000)"' in page  # the strongest token
    assert f'title="{top.activation:.3g}"' in page
    assert "Plotly.newPlot" in page  # the histogram


def test_a_token_with_html_in_a_context_is_escaped(model, sae):
    strongest = pages.feature_statistics(model, sae, 1, ["<b>"], range(64), n_contexts=1)
    fired = [s for s in strongest.values() if s.contexts]
    assert fired
    page = pages.feature_page_html(fired[0])
    assert ">&lt;<" in page and "<b>" not in page.split("<body>")[1]


def test_write_feature_pages_writes_an_offline_folder(stats, tmp_path):
    written = pages.write_feature_pages(stats, tmp_path / "features",
                                        weights={3: {"BiPO": 0.5}}, links={3: ""})
    names = sorted(path.name for path in written)
    assert names == sorted([f"feature_{f}.html" for f in FEATURES] + ["index.html",
                                                                       "plotly.min.js"])
    index = (tmp_path / "features" / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'href="([^"]+)"', index) == [f"feature_{f}.html" for f in FEATURES]
    assert "BiPO +0.5" in index
    assert "neuronpedia" not in (tmp_path / "features" / "feature_3.html").read_text()


def test_feature_indices_are_checked(model, sae):
    with pytest.raises(UserError, match="0..63"):
        pages.feature_statistics(model, sae, 1, PROMPTS, [64])


def test_attribution_writes_the_pages_of_the_listed_features(model, sae, tmp_path):
    yapo_vector = torch.zeros(64)
    yapo_vector[[5, 30]] = torch.tensor([2.0, -1.0])
    config = attr.AttributionConfig(k=2, n_tokens=3, n_examples=2, batch_size=4)
    report = attr.attribute(model, sae, 1, sae.W_dec[5].clone(), yapo_vector, PROMPTS, config)
    listed = {f for c in report.by_direction.values() for f, _ in c.bipo_top + c.yapo_top}
    assert set(report.feature_stats) == listed
    attr.write_report(report, tmp_path, {}, image_formats=())
    written = {path.name for path in (tmp_path / "features").iterdir()}
    assert {f"feature_{f}.html" for f in listed} | {"index.html", "plotly.min.js"} == written
    page = (tmp_path / "features" / f"feature_{sorted(listed)[0]}.html").read_text()
    assert "YaPO effect d=+1" in page
    skipped = attr.attribute(model, sae, 1, sae.W_dec[5].clone(), yapo_vector, PROMPTS,
                             attr.AttributionConfig(k=2, feature_pages=False))
    assert skipped.feature_stats == {}
