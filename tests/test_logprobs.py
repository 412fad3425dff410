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
