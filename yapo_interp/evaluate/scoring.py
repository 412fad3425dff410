"""Scoring the conditions: multiple-choice questions by option log-likelihood or by a generated
``\\boxed{k}``, greedy generation, open-ended answers graded by a judge, and every epoch of a
training run (figure 5). Each returns instance rows, one per condition, item and form."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from yapo_interp.data import (FORMS, CulturalItem, format_prompt, format_response, mcq_prompt,
                              parse_boxed_answer)
from yapo_interp.errors import UserError
from yapo_interp.evaluate.conditions import (BASELINE, Condition, EvalConfig, column_name,
                                             steered_condition)
from yapo_interp.evaluate.summaries import summarize
from yapo_interp.judge import Judge, JudgeRequest
from yapo_interp.logprobs import cached_unembedding, response_logprobs
from yapo_interp.metrics import answer_margin, answer_probability
from yapo_interp.seeding import set_seed
from yapo_interp.vectors import VectorLoader, require_epoch_vectors

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


# --------------------------------------------------------------------------------------------
# MCQ scoring
# --------------------------------------------------------------------------------------------


def _instance(item: CulturalItem, form: str) -> dict[str, Any]:
    return {"language": item.language, "country": item.country, "question_id": item.question_id,
            "item_id": item.id, "topic": item.topic, "form": form, "answer": item.answer,
            "n_options": len(item.options)}


def _pairs(items: Sequence[CulturalItem], forms: Sequence[str]) -> list[tuple[Any, str]]:
    """(item, form) for every form an item has (items read from partial sources may lack one)."""
    return [(item, form) for item in items for form in forms if item.has_form(form)]


def option_logprobs(model: HookedTransformer, items: Sequence[CulturalItem], form: str, *,
                    style: str = "completion", batch_size: int = 8, share_prompts: bool = True
                    ) -> tuple[list[Float[torch.Tensor, "option"]],
                               list[Int[torch.Tensor, "option"]]]:
    """``log π(option | question)`` summed over each option's tokens, and the token counts, for
    every option of every item (under whatever hooks are active on ``model``). With
    ``share_prompts`` each question's prompt runs once for all its options (same numbers)."""
    prompts, responses = [], []
    for item in items:
        prompt = format_prompt(item.prompt(form), style=style, tokenizer=model.tokenizer)
        for option in item.options:
            prompts.append(prompt)
            responses.append(format_response(option.text, style=style))
    totals, counts = response_logprobs(model, prompts, responses, batch_size=batch_size,
                                       share_prompts=share_prompts)
    sums, lengths, start = [], [], 0
    for item in items:
        stop = start + len(item.options)
        sums.append(totals[start:stop])
        lengths.append(counts[start:stop])
        start = stop
    return sums, lengths


def choose(sums: Float[torch.Tensor, "option"], counts: Int[torch.Tensor, "option"],
           score: str = "mean") -> int:
    """The option with the highest summed (``sum``) or per-token (``mean``) log-probability."""
    values = sums / counts.clamp(min=1) if score == "mean" else sums
    return int(torch.argmax(values))


def score_loglik(model: HookedTransformer, items: Sequence[CulturalItem],
                 forms: Sequence[str] = FORMS, *, style: str = "completion",
                 score: str = "mean", batch_size: int = 8, progress: bool = True,
                 desc: str = "MCQ", share_prompts: bool = True) -> list[dict[str, Any]]:
    """One record per (item, form): option log-probabilities and the predictions by sum and by
    mean; ``score`` (0/1) is the prediction ``score`` selects; ``p_correct`` and ``margin`` are
    the graded scores of the correct option from the mean log-probs (``metrics.answer_probability``
    and ``metrics.answer_margin``; NaN for an item with a single option)."""
    pairs = _pairs(items, forms)
    records = []
    chunk = max(1, batch_size)
    for start in tqdm(range(0, len(pairs), chunk), desc=desc, disable=not progress,
                      unit="batch"):
        block = pairs[start:start + chunk]
        for form in FORMS:
            block_items = [item for item, item_form in block if item_form == form]
            if not block_items:
                continue
            sums, counts = option_logprobs(model, block_items, form, style=style,
                                           batch_size=batch_size, share_prompts=share_prompts)
            for item, option_sums, option_counts in zip(block_items, sums, counts):
                by_sum = choose(option_sums, option_counts, "sum")
                by_mean = choose(option_sums, option_counts, "mean")
                predicted = by_mean if score == "mean" else by_sum
                means = (option_sums / option_counts.clamp(min=1)).tolist()
                graded = len(means) >= 2
                records.append({
                    **_instance(item, form),
                    "prediction": predicted,
                    "predicted_country": item.options[predicted].country,
                    "score": float(predicted == item.answer),
                    "correct_sum": float(by_sum == item.answer),
                    "correct_mean": float(by_mean == item.answer),
                    "p_correct": answer_probability(means, item.answer) if graded
                    else float("nan"),
                    "margin": answer_margin(means, item.answer) if graded else float("nan"),
                    "parsed": True,
                    "option_logprob_sum": json.dumps([round(float(x), 4) for x in option_sums]),
                    "option_tokens": json.dumps([int(x) for x in option_counts]),
                })
    order = {(item.id, form): index for index, (item, form) in enumerate(pairs)}
    return sorted(records, key=lambda record: order[(record["item_id"], record["form"])])


def stop_token_ids(model: HookedTransformer) -> list[int]:
    """EOS and, for chat models, the end-of-turn token."""
    tokenizer = model.tokenizer
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for token in ("<end_of_turn>", "<|eot_id|>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.append(token_id)
    return sorted(set(ids))


def newline_token_ids(model: HookedTransformer) -> list[int]:
    """Ids of every vocabulary token that contains a line break (a stop for one-line answers)."""
    tokenizer = model.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [index for index, token in enumerate(tokens) if token and "\n" in token]


def generate_greedy(model: HookedTransformer, prompts: Sequence[str], *, max_new_tokens: int,
                    batch_size: int = 8, extra_stops: Sequence[int] = ()) -> list[str]:
    """Greedy continuations of ``prompts`` (BOS prepended, as ``response_logprobs`` scores them),
    batched with left padding; decoded without special tokens, cut at the first stop token.
    ``extra_stops`` (e.g. :func:`newline_token_ids`) also end a row; that token is kept in the
    text, so the caller can cut inside it."""
    stops = stop_token_ids(model)
    every_stop = sorted(set(stops) | set(extra_stops))
    with cached_unembedding(model):  # no 671 MB copy of W_U per new token; same logits
        return _generate_batches(model, prompts, max_new_tokens, batch_size, stops, every_stop)


def _generate_batches(model: HookedTransformer, prompts: Sequence[str], max_new_tokens: int,
                      batch_size: int, stops: list[int], every_stop: list[int]) -> list[str]:
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        tokens = model.to_tokens(batch, prepend_bos=True, padding_side="left")
        generated = model.generate(batch if len(batch) > 1 else batch[0],
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   stop_at_eos=bool(every_stop), eos_token_id=every_stop or None,
                                   prepend_bos=True, padding_side="left", verbose=False,
                                   return_type="tokens")
        for row in generated[:, tokens.shape[1]:].tolist():
            cut = next((index for index, token in enumerate(row) if token in every_stop),
                       len(row))
            if cut < len(row) and row[cut] not in stops:
                cut += 1  # an extra stop (a line break) stays in the text
            outputs.append(model.tokenizer.decode(row[:cut], skip_special_tokens=True))
    return outputs


def score_boxed(model: HookedTransformer, items: Sequence[CulturalItem],
                forms: Sequence[str] = FORMS, *, style: str = "chat", max_new_tokens: int = 48,
                shuffle_seed: int | None = None, batch_size: int = 8, progress: bool = True,
                desc: str = "MCQ (boxed)",
                generate: Callable[[list[str]], list[str]] | None = None) -> list[dict[str, Any]]:
    """One record per (item, form): the generation, the parsed ``\\boxed{k}`` answer mapped back
    to the dataset's option order, and ``score`` (0/1; an unparsed answer scores 0 and has
    ``parsed`` False). ``generate`` replaces greedy generation (tests, other samplers)."""
    if generate is None:
        def generate(prompts: list[str]) -> list[str]:
            return generate_greedy(model, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size)

    pairs = _pairs(items, forms)
    records = []
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=not progress,
                      unit="batch"):
        block = pairs[start:start + batch_size]
        shown = [mcq_prompt(item, form, style=style, tokenizer=model.tokenizer, seed=shuffle_seed)
                 for item, form in block]
        texts = generate([prompt for prompt, _ in shown])
        for (item, form), (_, order), text in zip(block, shown, texts):
            position = parse_boxed_answer(text, len(item.options))
            predicted = order[position] if position is not None else None
            records.append({
                **_instance(item, form),
                "answer_position": order.index(item.answer) + 1,
                "predicted_position": position + 1 if position is not None else None,
                "prediction": predicted,
                "predicted_country": item.options[predicted].country if predicted is not None
                else None,
                "score": float(predicted == item.answer) if predicted is not None else 0.0,
                "parsed": position is not None,
                "option_order": json.dumps(order),
                "generation": text,
            })
    return records


def evaluate_mcq(model: HookedTransformer, items: Sequence[CulturalItem],
                 conditions: Sequence[Condition], config: EvalConfig = EvalConfig(), *,
                 progress: bool = True) -> pd.DataFrame:
    """Per-instance MCQ results (one row per condition, item and form) for every condition."""
    frames = []
    for condition in conditions:
        chosen = [item for item in items if condition.applies_to(item)]
        if not chosen:
            continue
        set_seed(config.seed)
        with condition.active(model):
            if config.mode == "loglik":
                records = score_loglik(model, chosen, config.forms, style=config.style,
                                       score=config.loglik_score, batch_size=config.batch_size,
                                       progress=progress, desc=f"MCQ {condition.label}")
            else:
                records = score_boxed(model, chosen, config.forms, style=config.style,
                                      max_new_tokens=config.boxed_max_new_tokens,
                                      shuffle_seed=config.shuffle_options_seed,
                                      batch_size=config.batch_size, progress=progress,
                                      desc=f"MCQ {condition.label}")
        frame = pd.DataFrame.from_records(records)
        for key, value in reversed(condition.describe().items()):
            frame.insert(0, key, value)
        frames.append(frame)
    if not frames:
        raise UserError("no items to evaluate: no condition applies to the given items (a "
                        "vector is evaluated on its own country's items only)")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Open-ended generation + judge
# --------------------------------------------------------------------------------------------


def clean_generation(text: str, style: str) -> str:
    """A completion-style base model runs on into a new "Question:" or "Answer:" line; keep the
    first answer only."""
    if style == "completion":
        text = re.split(r"\n\s*(?:Question|Answer)\s*:", text)[0]
    return text.strip()


def evaluate_open(model: HookedTransformer, items: Sequence[CulturalItem],
                  conditions: Sequence[Condition], judge: Judge,
                  config: EvalConfig = EvalConfig(), *, progress: bool = True) -> pd.DataFrame:
    """Per-instance open-ended results: the generation, the judge's four scores, ``judge_total``
    (0-10) and ``score`` = total / 10 (NaN when the judge failed)."""
    frames = []
    for condition in conditions:
        chosen = [item for item in items if condition.applies_to(item)]
        pairs = _pairs(chosen, config.forms)
        if not pairs:
            continue
        set_seed(config.seed)
        prompts = [format_prompt(item.prompt(form), style=config.style, tokenizer=model.tokenizer)
                   for item, form in pairs]
        answers: list[str] = []
        with condition.active(model):
            for start in tqdm(range(0, len(prompts), config.batch_size),
                              desc=f"open-ended {condition.label}", disable=not progress,
                              unit="batch"):
                answers += generate_greedy(model, prompts[start:start + config.batch_size],
                                           max_new_tokens=config.open_max_new_tokens,
                                           batch_size=config.batch_size)
        answers = [clean_generation(answer, config.style) for answer in answers]
        requests = [JudgeRequest(
            question=item.prompt(form), reference=item.reference_answer or item.correct_option,
            response=answer, response_type="localized prompt" if form == "localized"
            else "non-localized prompt", language=item.language, country=item.country,
            options=tuple((option.country, option.text) for option in item.options))
            for (item, form), answer in zip(pairs, answers)]
        verdicts = judge.score_many(requests, progress=progress)
        records = []
        for (item, form), answer, verdict in zip(pairs, answers, verdicts):
            records.append({**_instance(item, form), "generation": answer,
                            "score": verdict.normalized if verdict.ok else float("nan"),
                            **verdict.as_record()})
        frame = pd.DataFrame.from_records(records)
        for key, value in reversed(condition.describe().items()):
            frame.insert(0, key, value)
        frames.append(frame)
    if not frames:
        raise UserError("no items to evaluate for the open-ended task")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Stability across epochs (figure 5)
# --------------------------------------------------------------------------------------------


def evaluate_stability(model: HookedTransformer, items: Sequence[CulturalItem],
                       run_dirs: Sequence[str | Path], loader: VectorLoader,
                       config: EvalConfig = EvalConfig(), *, multiplier: float = 1.0,
                       baseline: pd.DataFrame | None = None, include_baseline: bool = True,
                       progress: bool = True) -> pd.DataFrame:
    """Figure 5: MCQ accuracy of every epoch checkpoint of each run, per setting.

    One row per (method, country, train setting, epoch, setting) with the accuracy and its CI;
    the baseline (``method="baseline"``, no epoch) is included for reference, from ``baseline``
    (instance rows of an earlier ``evaluate_mcq``) when given.
    """
    rows = []
    frames = []
    if include_baseline:
        frames.append(baseline if baseline is not None else
                      evaluate_mcq(model, items, [BASELINE], config, progress=progress))
    for run_dir in run_dirs:
        for epoch, path in require_epoch_vectors(run_dir):
            vector, sae, source = loader.load(path)
            condition = steered_condition(
                vector, multiplier, sae=sae, source=source,
                label=f"{column_name(vector.method, multiplier)} {Path(run_dir).name} e{epoch}")
            condition = replace(condition, epoch=epoch)
            frames.append(evaluate_mcq(model, items, [condition], config, progress=progress))
    for frame in frames:
        scores, _ = summarize(frame, config)
        for _, row in scores.iterrows():
            rows.append({"method": row["method"], "column": row["column"],
                         "country": row["country"], "train_setting": row["train_setting"],
                         "epoch": row["epoch"], "vector": row["vector"],
                         "setting": row["setting"], "accuracy": row["score"],
                         "ci_low": row["ci_low"], "ci_high": row["ci_high"], "n": row["n"]})
    return pd.DataFrame(rows)
