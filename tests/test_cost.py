"""Tests for yapo_interp.cost: CE and KL to the unsteered model on neutral text."""

from __future__ import annotations

import pytest
import torch

from yapo_interp.cost import load_neutral_texts, sequence_costs, steering_cost
from yapo_interp.errors import DatasetError
from yapo_interp.evaluate import BASELINE, steered_condition
from yapo_interp.steering import vector_from_tensor

pytestmark = pytest.mark.usefixtures("one_thread")


def english(n: int = 2):
    return load_neutral_texts(languages=["english"])[:n]


def test_shipped_neutral_text_covers_the_five_languages():
    texts = load_neutral_texts()
    assert {text.language for text in texts} == {"english", "spanish", "portuguese", "arabic",
                                                 "hindi"}
    assert all(len(text.text) > 300 for text in texts)


def test_cost_is_exactly_zero_at_multiplier_zero_and_positive_otherwise(model, sae):
    dense = vector_from_tensor("bipo", 1, 3 * torch.randn(model.cfg.d_model,
                                                          generator=torch.Generator().manual_seed(0)),
                               model)
    sparse = vector_from_tensor("yapo", 1, torch.rand(sae.cfg.d_sae), model, sae=sae)
    conditions = [BASELINE, steered_condition(dense, 0.0), steered_condition(dense, 2.0),
                  steered_condition(sparse, 2.0, sae=sae)]
    cost = steering_cost(model, english(), conditions, max_tokens=40, batch_size=2)
    assert len(cost) == 4 * 2
    zero = cost[cost["condition"].isin(["Baseline", conditions[1].label])]
    # dense hooks with λ = 0 add exactly nothing: bit-identical log-probs, so exactly 0
    assert (zero["ce_increase"] == 0).all() and (zero["kl"] == 0).all()
    steered = cost[cost["multiplier"] == 2.0]
    assert (steered["kl"] > 1e-4).all() and (steered["ce"] != steered["ce_base"]).all()
    assert (cost["n_tokens"] == 39).all()


def test_sequence_costs_match_a_direct_computation_and_ignore_padding():
    generator = torch.Generator().manual_seed(1)
    base = torch.log_softmax(torch.randn(2, 5, 7, generator=generator), -1)
    steered = torch.log_softmax(torch.randn(2, 5, 7, generator=generator), -1)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [1, 6, 2, 0, 0]])
    lengths = torch.tensor([5, 3])
    costs = sequence_costs(base, steered, tokens, lengths)
    # the second row has 2 predicting positions (0 and 1); padding positions must not count
    expected_ce = -(steered[1, 0, 6] + steered[1, 1, 2]) / 2
    kl = lambda j: (base[1, j].exp() * (base[1, j] - steered[1, j])).sum()  # noqa: E731
    assert costs["ce"][1] == pytest.approx(float(expected_ce), abs=1e-6)
    assert costs["kl"][1] == pytest.approx(float((kl(0) + kl(1)) / 2), abs=1e-6)
    assert costs["ce_base"][0] == pytest.approx(
        float(-sum(base[0, j, tokens[0, j + 1]] for j in range(4)) / 4), abs=1e-6)


def test_a_plain_text_file_is_read_by_paragraph_and_bad_jsonl_names_the_line(tmp_path):
    text_file = tmp_path / "mine.txt"
    text_file.write_text("First paragraph.\n\nSecond one.\n")
    assert [t.text for t in load_neutral_texts(text_file)] == ["First paragraph.", "Second one."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2"):
        load_neutral_texts(bad)
