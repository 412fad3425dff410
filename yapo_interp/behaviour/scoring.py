"""Scoring one condition (pure scoring under whatever hooks are active): task (a), the A/B choice
on ``test_infer.csv`` (letters and answer texts), and task (b), the log-odds on ``test.csv``; the
metrics the behaviour evaluation reports and its scoring settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float

from yapo_interp.data.behaviour import (ABItem, BehaviourPair, ab_prompt, behaviour_prompt,
                                        behaviour_response)
from yapo_interp.logprobs import (final_logits, final_residual, pad_token_id, response_logprobs,
                                  right_pad, tokenize_prompt, tokenize_response, upcast)

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

DEFAULT_MULTIPLIERS: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
TASKS: tuple[str, ...] = ("ab", "logodds", "open")
METRICS: dict[str, str] = {  # column -> axis title
    "ab_letter_choice": "A/B: matching letter chosen (fraction)",
    "ab_letter_prob": "A/B: p(matching letter)",
    "ab_text_choice": "A/B: matching answer text preferred (fraction)",
    "log_odds": "log π(matching) − log π(not matching)",
    "judge_score": "open-ended: judge score (1-4)",
}


@dataclass(frozen=True)
class BehaviourEvalConfig:
    """Settings of a behaviour evaluation (printed and saved with the results)."""

    template: str = "bipo"
    text_score: str = "mean"  # A/B on answer texts: "mean" (per token) or "sum" log-probability
    batch_size: int = 8
    open_max_new_tokens: int = 64
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0


def _choice(matching: float, other: float) -> float:
    """1 when the matching side wins, ½ on a tie, 0 otherwise."""
    return 1.0 if matching > other else 0.5 if matching == other else 0.0


def next_token_logprobs(model: HookedTransformer, prompts: Sequence[str],
                        token_ids: Sequence[int], *, batch_size: int = 8
                        ) -> Float[torch.Tensor, "batch n"]:
    """``log π(t | prompt)`` for each of ``token_ids`` after each prompt (BOS prepended), from one
    forward pass per prompt; equal to :func:`yapo_interp.logprobs.response_logprobs` of the
    one-token responses, at half the cost for two letters."""
    ids = [tokenize_prompt(model, prompt) for prompt in prompts]
    result = torch.zeros(len(prompts), len(token_ids))
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            tokens, lengths = right_pad([ids[i] for i in chunk], pad_token_id(model))
            resid = final_residual(model, tokens)
            last = resid[torch.arange(len(chunk), device=resid.device),
                         (lengths - 1).to(resid.device)]
            logprobs = torch.log_softmax(upcast(final_logits(model, last)), dim=-1)
            result[chunk] = logprobs[:, list(token_ids)].cpu().float()
    return result


def letter_logprobs(model: HookedTransformer, prompts: Sequence[str], *, batch_size: int = 8
                    ) -> Float[torch.Tensor, "batch 2"]:
    """``log π("A" | prompt)`` and ``log π("B" | prompt)`` per prompt (one pass per prompt when
    each letter is one token, else scored as responses)."""
    letters = [tokenize_response(model, letter) for letter in ("A", "B")]
    if all(len(ids) == 1 for ids in letters):
        return next_token_logprobs(model, prompts, [int(ids[0]) for ids in letters],
                                   batch_size=batch_size)
    sums, _ = response_logprobs(model, [p for p in prompts for _ in range(2)],
                                ["A", "B"] * len(prompts), batch_size=batch_size)
    return sums.float().reshape(len(prompts), 2)


def score_ab(model: HookedTransformer, items: Sequence[ABItem],
             config: BehaviourEvalConfig = BehaviourEvalConfig()) -> pd.DataFrame:
    """Task (a), one row per item: log-probabilities of the two letters after the A/B prompt and
    of the two answer texts after the question, and which side wins (1 matching, 0 not, ½ tie)."""
    tokenizer = model.tokenizer
    letters = letter_logprobs(model, [ab_prompt(item, template=config.template,
                                                tokenizer=tokenizer) for item in items],
                              batch_size=config.batch_size).reshape(-1)
    prompts, responses = [], []
    for item in items:
        prompt = behaviour_prompt(item.question, template=config.template, tokenizer=tokenizer)
        prompts += [prompt, prompt]
        responses += [behaviour_response(item.matching_text, template=config.template),
                      behaviour_response(item.not_matching_text, template=config.template)]
    sums, counts = response_logprobs(model, prompts, responses, batch_size=config.batch_size)
    per_token = sums / counts.clamp(min=1)
    texts = per_token if config.text_score == "mean" else sums
    records = []
    for index, item in enumerate(items):
        letter_a, letter_b = float(letters[2 * index]), float(letters[2 * index + 1])
        matching, other = (letter_a, letter_b) if item.matching == "A" else (letter_b, letter_a)
        text_matching, text_other = float(texts[2 * index]), float(texts[2 * index + 1])
        records.append({
            "task": "ab", "row": item.row, "question": item.question,
            "matching_letter": item.matching,
            "letter_logprob_matching": matching, "letter_logprob_other": other,
            "ab_letter_choice": _choice(matching, other),
            "ab_letter_prob": 1.0 / (1.0 + math.exp(other - matching)),
            "text_logprob_matching": text_matching, "text_logprob_other": text_other,
            "ab_text_choice": _choice(text_matching, text_other)})
    return pd.DataFrame.from_records(records)


def score_log_odds(model: HookedTransformer, pairs: Sequence[BehaviourPair],
                   config: BehaviourEvalConfig = BehaviourEvalConfig()) -> pd.DataFrame:
    """Task (b), one row per pair: ``log π(matching | x) − log π(not matching | x)`` (summed over
    each answer's tokens, the log-odds of eq. 1's preference)."""
    prompts, responses = [], []
    for pair in pairs:
        prompt = behaviour_prompt(pair.question, template=config.template,
                                  tokenizer=model.tokenizer)
        prompts += [prompt, prompt]
        responses += [behaviour_response(pair.matching, template=config.template),
                      behaviour_response(pair.not_matching, template=config.template)]
    sums, _ = response_logprobs(model, prompts, responses, batch_size=config.batch_size)
    return pd.DataFrame.from_records([
        {"task": "logodds", "row": pair.row, "question": pair.question,
         "logprob_matching": float(sums[2 * i]), "logprob_not_matching": float(sums[2 * i + 1]),
         "log_odds": float(sums[2 * i] - sums[2 * i + 1])}
        for i, pair in enumerate(pairs)])
