"""The preference objective (eq. 1 / 4): the fast path equals the plain computation, and
response log-probs (logprobs.py) are scored consistently."""

import math

import pytest
import torch

from yapo_interp.data import PreferencePair
from yapo_interp.errors import UserError
from yapo_interp.logprobs import (
    final_logits,
    response_logprobs,
    tokenize_prompt,
    tokenize_response,
    unembedding_matrix,
)
from yapo_interp.objective import (
    FastPath,
    PreferenceObjective,
    plain_logprobs,
    preference_loss,
)
from yapo_interp.steering import vector_from_tensor, steer
from yapo_interp.testing import gemma_like_model, tiny_sae

LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [
    PreferencePair("Hello there, how", " are you", " is it going"),
    PreferencePair("Q: 2+2?", " 4", " five!!"),
    PreferencePair("The capital of France is, as everyone knows,", " Paris", " Rome, obviously"),
    PreferencePair("x", " yes", " no"),
]
FLAGS = ["cache_activations", "cache_reference", "response_only_unembed",
         "batch_chosen_rejected", "share_prompt"]


def one_flag(flag):
    """Only `flag` on (share_prompt needs cache_activations, so that one comes with it)."""
    return FastPath(**{name: name == flag or (flag, name) == ("share_prompt", "cache_activations")
                       for name in FLAGS})


FAST_PATHS = {f"only_{flag}": one_flag(flag) for flag in FLAGS}
FAST_PATHS["all_on"] = FastPath()
FAST_PATHS["all_but_share_prompt"] = FastPath(share_prompt=False)


@pytest.fixture(scope="module")
def gemma_like():
    return gemma_like_model()


def plain_loss_and_grad(model, layer, sae, v, direction, beta=0.1):
    objective = PreferenceObjective(model, layer, sae=sae, fast_path=FastPath.plain())
    prepared = objective.prepare(PAIRS)
    result = plain_logprobs(model, prepared, layer, objective.steer_fn(v, direction))
    loss = preference_loss(result["policy_chosen"], result["policy_rejected"],
                           result["reference_chosen"], result["reference_rejected"],
                           direction, beta)
    (grad,) = torch.autograd.grad(loss, v)
    return loss.detach(), grad


def fast_loss_and_grad(model, layer, sae, v, direction, fast_path, batch_size=8):
    objective = PreferenceObjective(model, layer, sae=sae, fast_path=fast_path)
    prepared = objective.prepare(PAIRS, batch_size=batch_size)
    loss = objective.loss(prepared, v, direction)
    (grad,) = torch.autograd.grad(loss, v)
    return loss.detach(), grad


def random_v(width, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(width, generator=generator)).to(dtype).requires_grad_()


# ----------------------------------------------------------------------------- the loss itself


def test_loss_is_log_two_when_policy_equals_reference():
    logprobs = torch.tensor([-3.0, -7.5])
    for direction in (1, -1):
        loss = preference_loss(logprobs, logprobs - 1, logprobs, logprobs - 1, direction, 0.1)
        assert math.isclose(float(loss), math.log(2), rel_tol=1e-6)


def test_loss_formula_and_direction():
    policy_chosen, policy_rejected = torch.tensor([-2.0]), torch.tensor([-5.0])
    reference_chosen, reference_rejected = torch.tensor([-3.0]), torch.tensor([-4.0])
    margin = ((-2.0 - -3.0) - (-5.0 - -4.0))  # = 2: the steered model prefers chosen more
    for direction in (1, -1):
        loss = preference_loss(policy_chosen, policy_rejected, reference_chosen,
                               reference_rejected, direction, 0.5)
        expected = -math.log(1 / (1 + math.exp(-direction * 0.5 * margin)))
        assert math.isclose(float(loss), expected, rel_tol=1e-6)
    # d = +1 rewards preferring chosen, d = -1 penalises it
    assert float(preference_loss(policy_chosen, policy_rejected, reference_chosen,
                                 reference_rejected, 1, 0.5)) < math.log(2)


# ----------------------------------------------------------------------------- fast == plain


@pytest.mark.parametrize("name", list(FAST_PATHS))
@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_fast_path_equals_plain_loss_and_gradient(model, sae, name, method):
    """On the float32 tiny model: loss and dL/dv of each shortcut (alone and together) equal the
    plain computation (full forwards, reference recomputed, logits everywhere) to 1e-5."""
    used_sae = sae if method == "yapo" else None
    v = random_v(sae.cfg.d_sae if used_sae else model.cfg.d_model)
    for direction in (1, -1):
        plain_loss, plain_grad = plain_loss_and_grad(model, LAYER, used_sae, v, direction)
        loss, grad = fast_loss_and_grad(model, LAYER, used_sae, v, direction, FAST_PATHS[name],
                                        batch_size=3)
        assert abs(float(plain_loss) - math.log(2)) > 1e-3  # v != 0: a non-trivial check
        torch.testing.assert_close(loss, plain_loss, atol=1e-5, rtol=0)
        torch.testing.assert_close(grad, plain_grad, atol=1e-5, rtol=1e-4)
        assert grad.abs().max() > 1e-3


@pytest.mark.parametrize("name", ["only_share_prompt", "all_on", "only_cache_activations"])
@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_fast_path_is_exact_on_a_gemma_like_model(gemma_like, name, method):
    """Rotary positions, grouped-query attention and sliding windows (float64): equal to 1e-10."""
    sae = tiny_sae(gemma_like, LAYER, seed=5).to(torch.float64) if method == "yapo" else None
    v = random_v(sae.cfg.d_sae if sae else gemma_like.cfg.d_model, torch.float64)
    plain_loss, plain_grad = plain_loss_and_grad(gemma_like, LAYER, sae, v, 1)
    loss, grad = fast_loss_and_grad(gemma_like, LAYER, sae, v, 1, FAST_PATHS[name])
    torch.testing.assert_close(loss, plain_loss, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, plain_grad, atol=1e-10, rtol=0)


def test_shared_prompt_is_used_where_exact_and_skipped_where_not(monkeypatch):
    calls = []
    original = PreferenceObjective._shared_prompt_logprobs

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreferenceObjective, "_shared_prompt_logprobs", spy)
    for window, expect_shared in ((64, True), (12, False)):
        model = gemma_like_model(window_size=window)
        v = random_v(model.cfg.d_model, torch.float64)
        calls.clear()
        plain_loss, plain_grad = plain_loss_and_grad(model, LAYER, None, v, -1)
        loss, grad = fast_loss_and_grad(model, LAYER, None, v, -1, FastPath())
        assert bool(calls) == expect_shared
        torch.testing.assert_close(loss, plain_loss, atol=1e-10, rtol=0)
        torch.testing.assert_close(grad, plain_grad, atol=1e-10, rtol=0)


def test_padding_does_not_change_logprobs(gemma_like):
    """Right padding is harmless: a batch of different lengths gives the per-example values."""
    v = random_v(gemma_like.cfg.d_model, torch.float64).detach()
    for fast_path in (FastPath(), FastPath(share_prompt=False), FastPath.plain()):
        objective = PreferenceObjective(gemma_like, LAYER, fast_path=fast_path)
        prepared = objective.prepare(PAIRS)
        steer_fn = objective.steer_fn(v, 1)
        batched = objective.logprobs(prepared, steer_fn)
        for index, pair in enumerate(prepared):
            alone = objective.logprobs([pair], steer_fn)
            for key, values in batched.items():
                torch.testing.assert_close(values[index], alone[key][0], atol=1e-10, rtol=0)


def test_cached_reference_equals_response_logprobs(model):
    objective = PreferenceObjective(model, LAYER)
    prepared = objective.prepare(PAIRS, batch_size=2)
    for which in ("chosen", "rejected"):
        scores, counts = response_logprobs(model, [p.prompt for p in PAIRS],
                                           [getattr(p, which) for p in PAIRS])
        cached = torch.tensor([getattr(p, f"reference_{which}") for p in prepared])
        torch.testing.assert_close(scores, cached, atol=1e-5, rtol=0)
        assert counts.tolist() == [len(getattr(p, which)) for p in PAIRS]  # char tokenizer


def test_share_prompt_needs_cached_activations():
    with pytest.raises(UserError, match="share_prompt needs cache_activations"):
        FastPath(cache_activations=False, share_prompt=True)


def test_empty_response_is_a_user_error(model):
    objective = PreferenceObjective(model, LAYER)
    with pytest.raises(UserError, match="pair 0 has an empty rejected"):
        objective.prepare([PreferencePair("prompt", " yes", "")])


# ----------------------------------------------------------------------------- response_logprobs


def manual_logprob(model, prompt, response):
    ids = torch.cat([tokenize_prompt(model, prompt), tokenize_response(model, response)])
    logprobs = torch.log_softmax(model(ids[None]), -1)[0]
    n_prompt = len(tokenize_prompt(model, prompt))
    return sum(float(logprobs[position - 1, ids[position]])
               for position in range(n_prompt, len(ids)))


def test_response_logprobs_matches_a_direct_computation(model):
    prompts = [p.prompt for p in PAIRS]
    responses = [p.chosen for p in PAIRS]
    scores, counts = response_logprobs(model, prompts, responses, batch_size=3)
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        assert math.isclose(float(scores[index]), manual_logprob(model, prompt, response),
                            abs_tol=1e-4)
    one_by_one = torch.cat([response_logprobs(model, [p], [r], batch_size=1)[0]
                            for p, r in zip(prompts, responses)])
    torch.testing.assert_close(scores, one_by_one, atol=1e-5, rtol=0)
    assert counts.tolist() == [len(r) for r in responses]


def test_final_logits_equal_the_models_own(gemma_like):
    tokens = gemma_like.to_tokens(["Hello world", "Hi"], padding_side="right")
    resid = gemma_like(tokens, stop_at_layer=gemma_like.cfg.n_layers, padding_side="right")
    expected = gemma_like(tokens, padding_side="right")
    torch.testing.assert_close(final_logits(gemma_like, resid), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(final_logits(gemma_like, resid, unembedding_matrix(gemma_like)),
                               expected, atol=1e-10, rtol=0)
    flat = final_logits(gemma_like, resid.reshape(-1, resid.shape[-1]))
    torch.testing.assert_close(flat, expected.reshape(flat.shape), atol=1e-10, rtol=0)


def test_response_tokens_are_appended_without_bos(model):
    ids = tokenize_response(model, " yes")
    assert model.tokenizer.bos_token_id not in ids.tolist()
    assert tokenize_prompt(model, "Q")[0] == model.tokenizer.bos_token_id
    scores, counts = response_logprobs(model, ["Q", "Q"], ["", " a"])
    assert counts.tolist() == [0, 2] and float(scores[0]) == 0.0


def test_response_logprobs_runs_under_steering(model):
    vector = vector_from_tensor("bipo", LAYER, 3 * torch.randn(model.cfg.d_model), model)
    clean, _ = response_logprobs(model, ["Hello"], [" world"])
    with steer(model, vector):
        steered, _ = response_logprobs(model, ["Hello"], [" world"])
    assert abs(float(steered - clean)) > 1e-3


# ----------------------------------------------------------------------------- sae-dense, perturbation


def always_on_sae(model, active=8):
    """The tiny SAE with a large encoder bias on features 0..active-1, so their codes are far
    above zero on every token: there ``ReLU(Enc(h) + s·v) = Enc(h) + s·v`` for small ``s·v``."""
    sae = tiny_sae(model, LAYER, seed=3)
    with torch.no_grad():
        sae.b_enc[:active] = 50.0
    return sae


def test_sae_dense_equals_yapo_where_the_relu_is_inactive(model):
    """Planted case: v touches only always-on features (codes > |v| on every token, checked),
    so eq. 3 is ``h + s·(v @ W_dec)`` exactly (Dec is affine) — YaPO's loss is sae-dense's; its
    gradient too on the support of v. Off the support, where the codes sit at 0, they differ."""
    sae, active = always_on_sae(model), 8
    generator = torch.Generator().manual_seed(0)
    v = torch.zeros(sae.cfg.d_sae)
    v[:active] = torch.randn(active, generator=generator)
    v.requires_grad_()
    yapo = PreferenceObjective(model, LAYER, sae=sae, method="yapo")
    dense = PreferenceObjective(model, LAYER, sae=sae, method="sae-dense")
    prepared = yapo.prepare(PAIRS)
    tokens = torch.cat([torch.cat([p.resid_prompt, p.resid_chosen, p.resid_rejected])
                        for p in prepared])
    codes = sae.encode(tokens)
    assert float(codes[:, :active].min()) > float(v.abs().max()) + 1.0  # the planting holds
    assert float((codes[:, active:] == 0).float().mean()) > 0.2  # and the ReLU bites elsewhere
    for direction in (1, -1):
        yapo_loss = yapo.loss(prepared, v, direction)
        dense_loss = dense.loss(prepared, v, direction)
        assert abs(float(yapo_loss) - math.log(2)) > 1e-3  # v moves the model: not trivial
        torch.testing.assert_close(dense_loss, yapo_loss, atol=1e-6, rtol=0)
        (yapo_grad,) = torch.autograd.grad(yapo_loss, v)
        (dense_grad,) = torch.autograd.grad(dense_loss, v)
        torch.testing.assert_close(dense_grad[:active], yapo_grad[:active], atol=1e-6, rtol=1e-5)
        assert (dense_grad[active:] - yapo_grad[active:]).abs().max() > 1e-4
    # negative control: v on features whose codes hit zero, the ReLU acts and the losses differ
    off = torch.zeros(sae.cfg.d_sae)
    off[active:] = torch.randn(sae.cfg.d_sae - active, generator=generator)
    assert abs(float(yapo.loss(prepared, off, 1)) - float(dense.loss(prepared, off, 1))) > 1e-4


def test_sae_dense_fast_path_equals_plain(model, sae):
    v = random_v(sae.cfg.d_sae)
    plain = PreferenceObjective(model, LAYER, sae=sae, method="sae-dense",
                                fast_path=FastPath.plain())
    prepared = plain.prepare(PAIRS)
    result = plain_logprobs(model, prepared, LAYER, plain.steer_fn(v, -1))
    plain_loss = preference_loss(result["policy_chosen"], result["policy_rejected"],
                                 result["reference_chosen"], result["reference_rejected"], -1, 0.1)
    fast = PreferenceObjective(model, LAYER, sae=sae, method="sae-dense")
    loss = fast.loss(fast.prepare(PAIRS), v, -1)
    assert abs(float(loss) - math.log(2)) > 1e-3
    torch.testing.assert_close(loss, plain_loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["bipo", "yapo", "sae-dense"])
def test_perturbation_is_the_mean_token_shift(model, sae, method):
    """‖Φ(h) − h‖ averaged over every prompt, chosen and rejected token, each once."""
    used_sae = None if method == "bipo" else sae
    objective = PreferenceObjective(model, LAYER, sae=used_sae, method=method, multiplier=2.0)
    prepared = objective.prepare(PAIRS[:3])
    v = random_v(sae.cfg.d_sae if used_sae else model.cfg.d_model).detach()
    assert objective.perturbation(prepared, torch.zeros_like(v), 1) == pytest.approx(0, abs=1e-5)
    moved = objective.perturbation(prepared, v, -1)
    if method == "bipo":  # dense: every token moves by |d·λ|·‖v‖
        assert moved == pytest.approx(2.0 * float(v.norm()), rel=1e-5)
    elif method == "sae-dense":
        assert moved == pytest.approx(2.0 * float((v @ sae.W_dec).norm()), rel=1e-5)
    shifts = [float((objective.steer_fn(v, -1)(h) - h).norm(dim=-1).mean()) * len(h)
              for pair in prepared
              for h in (pair.resid_prompt, pair.resid_chosen, pair.resid_rejected)]
    n_tokens = sum(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in prepared)
    assert moved == pytest.approx(sum(shifts) / n_tokens, rel=1e-5) and moved > 1e-2
    plain = PreferenceObjective(model, LAYER, sae=used_sae, method=method,
                                fast_path=FastPath.plain())
    assert plain.perturbation(plain.prepare(PAIRS[:1]), v, 1) is None  # nothing cached
