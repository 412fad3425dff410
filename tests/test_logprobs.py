"""logprobs: the cached unembedding gives the module's logits bit for bit and leaves no trace."""

import contextlib

import pytest
import torch

import yapo_interp.logprobs as logprobs
from yapo_interp.evaluate import generate_greedy
from yapo_interp.logprobs import cached_unembedding

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cached_unembedding_gives_identical_logits_and_calls_the_hooks(model):
    tokens = model.to_tokens(["hello there", "a b c"], padding_side="right")
    plain = model(tokens)
    seen = []
    with cached_unembedding(model):
        with model.hooks(fwd_hooks=[("unembed.hook_out", lambda x, hook: seen.append(x.shape))]):
            fast = model(tokens)
    assert torch.equal(plain, fast) and seen == [plain.shape]
    assert "forward" not in vars(model.unembed)  # the module's own forward is back


def test_cached_unembedding_is_removed_after_an_exception(model):
    with pytest.raises(RuntimeError), cached_unembedding(model):
        raise RuntimeError("boom")
    assert "forward" not in vars(model.unembed)


def test_generation_is_the_same_with_and_without_the_cache(model, monkeypatch):
    prompts = ["abc", "hello world", "x"]
    fast = generate_greedy(model, prompts, max_new_tokens=6, batch_size=2)
    monkeypatch.setattr(logprobs, "cached_unembedding", lambda model: contextlib.nullcontext())
    plain = generate_greedy(model, prompts, max_new_tokens=6, batch_size=2)
    assert fast == plain and all(isinstance(text, str) for text in fast)


# --- shared prompts: each distinct prompt runs once; the numbers are the plain computation's ---

PROMPTS = ["Question: tea or coffee?\nAnswer:", "Q: breakfast?\nA:", "Question: tea or coffee?\nAnswer:",
           "Hi", "Q: breakfast?\nA:", "x"]
RESPONSES = [" tea", " ful medames", " coffee with milk", " there", " eggs", ""]


def test_shared_prompts_equal_the_plain_computation(model):
    plain, plain_counts = logprobs.response_logprobs(model, PROMPTS, RESPONSES, batch_size=3,
                                                     share_prompts=False)
    for batch_size in (1, 2, 8):
        shared, counts = logprobs.response_logprobs(model, PROMPTS, RESPONSES,
                                                    batch_size=batch_size)
        torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
        assert torch.equal(counts, plain_counts)
    assert plain[-1] == 0 and plain_counts[-1] == 0  # the empty response


@pytest.mark.parametrize("window", [64, 5])
def test_shared_prompts_are_exact_with_rotary_positions_and_sliding_windows(window):
    """Float64, Gemma-like (rotary, grouped-query, local/global attention): left-padded prefixes
    keep relative positions, so even a 5-token window (crossed by every prompt) gives the plain
    numbers."""
    from yapo_interp.testing import gemma_like_model

    gemma_like = gemma_like_model(window_size=window)
    plain, _ = logprobs.response_logprobs(gemma_like, PROMPTS, RESPONSES, share_prompts=False)
    shared, _ = logprobs.response_logprobs(gemma_like, PROMPTS, RESPONSES, batch_size=2)
    torch.testing.assert_close(shared, plain, atol=1e-10, rtol=0)


def test_shared_prompts_score_under_the_active_hooks(model):
    """A hook on every position (as steering is) acts on the prefix pass and the suffix pass."""
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def shift(resid, hook):
        return resid + direction  # not a constant: LayerNorm would remove that

    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", shift)]):
        plain, _ = logprobs.response_logprobs(model, PROMPTS, RESPONSES, share_prompts=False)
        shared, _ = logprobs.response_logprobs(model, PROMPTS, RESPONSES)
    unhooked, _ = logprobs.response_logprobs(model, PROMPTS, RESPONSES)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
    assert not torch.allclose(shared[:-1], unhooked[:-1], atol=1e-3)


def test_shared_prefix_batch_puts_the_last_prompt_token_in_column_0(model):
    prompt_ids = [logprobs.tokenize_prompt(model, p) for p in ("abc", "de", "abc")]
    response_ids = [logprobs.tokenize_response(model, r) for r in ("x", "yz", "w")]
    batch = logprobs.shared_prefix_batch(model, prompt_ids, response_ids)
    assert batch.prefix_tokens.shape[0] == 2  # "abc" twice: one prefix
    assert batch.prompt_index.tolist() == [0, 1, 0]
    assert batch.suffix_tokens[:, 0].tolist() == [int(ids[-1]) for ids in prompt_ids]
    assert batch.response_mask.sum(-1).tolist() == [1, 2, 1]
    # left-padded prefixes: the shorter prompt's padding comes first
    assert batch.prefix_mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_unembedding_in_chunks_changes_no_number(model):
    resid = torch.randn(37, model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, model.cfg.d_vocab, (37,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = logprobs.unembed_logprobs(model, resid, targets, chunk=None)
        chunked = logprobs.unembed_logprobs(model, resid, targets, chunk=5)
    assert torch.equal(whole, chunked) and whole.shape == (37,)
