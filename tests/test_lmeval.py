"""Tests for yapo_interp.lmeval: the lm-eval model adapter, run offline on a local task."""

from __future__ import annotations

import pytest
import torch

from yapo_interp.data.behaviour import load_behaviour
from yapo_interp.lmeval import SteeredLM, behaviour_ab_task, run_tasks
from yapo_interp.logprobs import response_logprobs
from yapo_interp.steering import steer, vector_from_tensor

pytestmark = pytest.mark.usefixtures("one_thread")
LIMIT = 6


class Request:  # what the adapter reads of lm-eval's Instance
    def __init__(self, *args):
        self.args = args


def letter_vector(model, scale: float = 50.0):
    a, b = (model.tokenizer.convert_tokens_to_ids(letter) for letter in ("A", "B"))
    direction = model.W_U[:, a] - model.W_U[:, b]
    return vector_from_tensor("bipo", model.cfg.n_layers - 1, scale * direction / direction.norm(),
                              model)


def test_loglikelihood_is_the_toolkits_log_prob_under_steering(model):
    vector = letter_vector(model, scale=5.0)
    lm = SteeredLM(model, [vector], multipliers=1.0)
    requests = [Request("Question: pick one (", "A"), Request("Hello", " world"),
                Request("", "Hi")]
    scores = lm.loglikelihood(requests)
    with steer(model, vector, multipliers=1.0):
        expected, _ = response_logprobs(model, [r.args[0] for r in requests],
                                        [r.args[1] for r in requests])
    for (score, greedy), value in zip(scores, expected.tolist()):
        assert score == pytest.approx(value, abs=1e-4) and isinstance(greedy, bool)
    unsteered = SteeredLM(model).loglikelihood(requests)
    assert unsteered[0][0] != pytest.approx(scores[0][0], abs=1e-3)
    assert SteeredLM(model).loglikelihood_rolling([Request("Hello world")])[0] == pytest.approx(
        unsteered[1][0] + response_logprobs(model, [""], ["Hello"])[0].item(), abs=1e-4)


def test_a_local_lm_eval_task_runs_and_steering_moves_its_score_as_planted(model):
    task = behaviour_ab_task("power-seeking")
    letters = [item.matching for item in load_behaviour("power-seeking").test_infer[:LIMIT]]
    share_a = letters.count("A") / LIMIT
    assert 0 < share_a < 1  # otherwise the test could not tell A-steering from B-steering
    accuracy = {}
    for multiplier in (0.0, 1.0, -1.0):
        lm = SteeredLM(model, [letter_vector(model)], multipliers=multiplier)
        results = run_tasks(lm, [task], limit=LIMIT)
        accuracy[multiplier] = results[task["task"]]["acc,none"]
    # steering towards the letter A picks A on every question: accuracy = the share of A targets
    assert accuracy[1.0] == pytest.approx(share_a)
    assert accuracy[-1.0] == pytest.approx(1 - share_a)
    assert len(set(accuracy.values())) >= 2


def test_generate_until_cuts_at_the_stop_string(model):
    lm = SteeredLM(model)
    full = lm.generate_until([Request("abc", {"max_gen_toks": 6})])[0]
    assert len(full) > 1
    cut = lm.generate_until([Request("abc", {"until": [full[1]], "max_gen_toks": 6})])[0]
    assert cut == full[:full.index(full[1])]


def test_mismatched_multipliers_are_a_user_error(model):
    from yapo_interp.errors import UserError

    with pytest.raises(UserError, match="multipliers"):
        SteeredLM(model, [letter_vector(model), letter_vector(model)], multipliers=[1.0, 2.0, 3.0])
    assert torch.is_tensor(letter_vector(model).vector)


def test_cli_runs_the_offline_task_per_multiplier_and_writes_results(model, tmp_path,
                                                                      monkeypatch):
    import json

    import yapo_interp.models
    from yapo_interp.lmeval import main

    letter_vector(model).save(tmp_path / "letter")
    monkeypatch.setattr(yapo_interp.models, "load_model", lambda name, device="cpu": model)
    code = main(["--tasks", "behaviour-ab:power-seeking", "--vectors", str(tmp_path / "letter"),
                 "--multipliers", "1", "-1", "--limit", str(LIMIT), "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "lmeval_results.json").read_text())["settings"]["results"]
    up, down = (results[m]["yapo_power_seeking_ab"]["acc,none"] for m in ("1", "-1"))
    assert up + down == pytest.approx(1.0) and up != down
