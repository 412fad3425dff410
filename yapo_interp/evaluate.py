"""Evaluating steering vectors on the cultural benchmark: MCQ accuracy, judged open-ended answers,
RCA and PNLG, and the paper's tables (section 4, tables 1, 2, 3 and 5, figure 5).

**What is measured.** Every test question is asked in a *localized* form (it names the country)
and a *non-localized* form (dialect and situation only). The paper reports three settings:
``localized``, ``nonlocalized`` and ``both`` (the two sets of prompts together, the "mixed"
setting), for the unsteered model (baseline) and the model steered by each vector (eq. 2,
dense: ``h + λ·v``; eq. 3, sparse: ``Dec(ReLU(Enc(h) + λ·v)) + (h − Dec(Enc(h)))``; applied with
:func:`yapo_interp.steering.steer` at every position).

**Multiple-choice questions** (section 4.1), two ways:

* ``mode="loglik"`` — rank the options by their log-likelihood after the question,
  ``log π(option | prompt)`` from :func:`yapo_interp.logprobs.response_logprobs` (the same quantity
  the preference objective of eq. 1 and 4 trains), summed over the option's tokens (``sum``) or
  divided by their number (``mean``, length-normalised: options are written in different
  dialects and have different lengths). Works for base models such as the embedded Gemma 3 270M.
  All options of a batch of questions are scored in batched forward passes.
* ``mode="boxed"`` — show the numbered options and ask for ``\\boxed{k}`` (the paper's footnote 1,
  for instruction models); generate greedily and parse the last ``\\boxed{k}``. An answer that
  cannot be parsed counts as *wrong* and is counted in ``unparsed`` — never silently dropped.

**Open-ended generation** (section 4.2): the model answers the question freely (greedy); a judge
(:mod:`yapo_interp.judge`) grades it against the reference answer with the rubric of figure 4
(0-10). Judge failures are excluded from the means and counted in ``unscored``.

**Metrics** (section 3.1, :mod:`yapo_interp.metrics`): per instance, ``p_loc`` and ``p_non`` are
the scores (0/1 for MCQ, judge total / 10 for open-ended) of the two forms of the same
(question, country); ``PNLG_α = E[(p_loc − p_non)/(p̄^α + ε)]`` (eq. 5) and
``RCA = E[2·p_loc·p_non/(p_loc + p_non + ε)]`` (eq. 6), averaged over pairs ("per instance"), and
the same formulas on the mean accuracies ("aggregate"), which is what the paper's tables report.
Every accuracy and metric comes with a bootstrap confidence interval over instances.

**Metrics with power** (issue 13): log-likelihood MCQ rows also carry ``p_correct`` (the correct
option's probability under a softmax over the options' mean log-probs) and ``margin`` (its
log-odds margin over the best other option); ``scores`` averages them with CIs, and
``paired_differences`` gives every condition-minus-condition difference of a metric on the same
instances with a paired bootstrap CI over questions (``differences.csv``).

**Tables.** ``table_scores`` gives tables 1 (MCQ) and 2 (open-ended): rows language/country with a
per-language average, columns setting × method with the difference to the baseline;
``table_gap_by_country`` table 5 (PNLG with relative change, RCA with the difference in points)
and ``table_gap_by_language`` table 3 (means over countries, then over languages; relative
changes). A column is a method at a multiplier (``YaPO``, ``YaPO ×2``); when several vectors of
a method were evaluated for a country, the cell of setting ``s`` uses the one trained on ``s``
(else on ``both``, else any), the latest epoch first — as in the paper, where each setting is
steered by the vector trained for it. ``stability`` evaluates every epoch checkpoint of
training runs (``RUN/vectors/epoch_XX``), the paper's figure 5.

Command line (results and settings go to ``--out``)::

    python -m yapo_interp.evaluate --country egypt \\
        --vectors runs/train/egypt-bipo runs/train/egypt-yapo --multipliers 1 2 --judge local

A steering vector is evaluated on the items of its own country (``metadata["country"]``) only;
the baseline on all. A vector path is a saved vector (``PATH``, ``PATH.safetensors`` or
``PATH.json``) or a training run folder (its last epoch is used).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Float, Int

from yapo_interp.cli import (add_common_args, check_run_args, model_name, preset_from_args,
                             run_cli, set_seed)
from yapo_interp.data.pairs import DEFAULT_OPTION_SEED, DEFAULT_TEST_FRACTION
from yapo_interp.errors import UserError
from yapo_interp.metrics import (DEFAULT_EPS, accuracy, answer_margin, answer_probability,
                                 bootstrap_ci, paired_difference_ci, pnlg, pnlg_aggregate, rca,
                                 rca_aggregate, relative_change)

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from yapo_interp.data import CulturalItem
    from yapo_interp.judge import Judge
    from yapo_interp.steering import SteeringVector

SETTINGS: tuple[str, ...] = ("localized", "nonlocalized", "both")
FORMS: tuple[str, ...] = ("localized", "nonlocalized")
MODES: tuple[str, ...] = ("loglik", "boxed")
LOGLIK_SCORES: tuple[str, ...] = ("mean", "sum")
METHOD_ORDER = ("baseline", "bipo", "yapo", "caa", "sas")
SETTING_TITLES = {"localized": "Localized", "nonlocalized": "Non-localized", "both": "Both"}
TASK_TITLES = {"mcq": "MCQ", "open": "Open"}


@dataclass(frozen=True)
class EvalConfig:
    """How an evaluation runs; saved with its results.

    The paper generates up to 2048 new tokens; the defaults here are shorter so that a CPU run
    finishes (a ``\\boxed{k}`` answer needs a few tokens, a 2-3 sentence answer about 100).
    """

    mode: str = "loglik"                  # "loglik" or "boxed"
    settings: tuple[str, ...] = SETTINGS  # which of localized / nonlocalized / both to report
    style: str = "completion"             # prompt style: "completion" (base) or "chat"
    loglik_score: str = "mean"            # "mean" (length-normalised) or "sum"
    batch_size: int = 8                   # sequences per forward pass / generation batch
    boxed_max_new_tokens: int = 48
    # boxed: the displayed option order, shuffled per question (shared by its two forms) so that
    # the correct answer's position varies; None keeps the dataset's order (a digit bias then
    # reads as cultural accuracy: in the shipped data each country's option sits at one place)
    shuffle_options_seed: int | None = DEFAULT_OPTION_SEED
    open_max_new_tokens: int = 96
    alpha: float = 1.0                    # PNLG_α, eq. 5
    eps: float = DEFAULT_EPS              # ε of eq. 5 and 6
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown MCQ mode {self.mode!r}; use loglik or boxed")
        if self.loglik_score not in LOGLIK_SCORES:
            raise UserError(f"unknown loglik score {self.loglik_score!r}; use mean or sum")
        unknown = [setting for setting in self.settings if setting not in SETTINGS]
        if unknown or not self.settings:
            raise UserError(f"unknown setting(s) {unknown}; use {', '.join(SETTINGS)}")
        if self.batch_size < 1:
            raise UserError("batch size must be at least 1")

    @property
    def forms(self) -> tuple[str, ...]:
        """The prompt forms that must be scored to report ``settings``."""
        wanted = set()
        for setting in self.settings:
            wanted.update(FORMS if setting == "both" else (setting,))
        return tuple(form for form in FORMS if form in wanted)


# --------------------------------------------------------------------------------------------
# Conditions: the baseline and steered models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One way of running the model: unsteered (no vectors), or steered by ``vectors`` at
    ``multipliers`` (λ of eq. 2/3). ``column`` names the table column (method and multiplier),
    ``label`` is unique among the conditions of an evaluation."""

    label: str
    method: str = "baseline"
    vectors: tuple[Any, ...] = ()
    multipliers: tuple[float, ...] = ()
    saes: Mapping[int, Any] | None = None
    country: str | None = None
    train_setting: str | None = None
    epoch: int | None = None
    source: str | None = None
    column: str = "Baseline"

    @property
    def is_baseline(self) -> bool:
        return not self.vectors

    @property
    def multiplier(self) -> float | None:
        return self.multipliers[0] if len(self.multipliers) == 1 else None

    def applies_to(self, item: CulturalItem) -> bool:
        """A country's vector is evaluated on that country's items only."""
        return self.country is None or item.country == self.country

    @contextlib.contextmanager
    def active(self, model: HookedTransformer) -> Iterator[HookedTransformer]:
        """A context in which ``model`` runs as this condition (hooks removed on exit)."""
        if self.is_baseline:
            yield model
            return
        from yapo_interp.steering import steer

        with steer(model, list(self.vectors), multipliers=list(self.multipliers),
                   saes=dict(self.saes) if self.saes else None):
            yield model

    def describe(self) -> dict[str, Any]:
        return {"condition": self.label, "column": self.column, "method": self.method,
                "multiplier": self.multiplier, "train_setting": self.train_setting,
                "epoch": self.epoch, "vector": self.source}


BASELINE = Condition(label="Baseline")


def method_label(method: str) -> str:
    from yapo_interp.style import METHOD_LABELS

    return METHOD_LABELS.get(method, method).replace(" (ours)", "")


def column_name(method: str, multiplier: float) -> str:
    suffix = "" if multiplier == 1.0 else f" ×{multiplier:g}"
    return method_label(method) + suffix


def steered_condition(vector: SteeringVector, multiplier: float = 1.0, *, sae: SAE | None = None,
                      source: str | None = None, label: str | None = None) -> Condition:
    """A condition steering with one vector at one multiplier (its SAE for sparse vectors)."""
    meta = vector.metadata or {}
    epoch = meta.get("epoch")
    column = column_name(vector.method, multiplier)
    if label is None:
        parts = [column]
        if meta.get("setting"):
            parts.append(f"[{meta['setting']}]")
        if epoch is not None:
            parts.append(f"e{epoch}")
        label = " ".join(parts)
    return Condition(
        label=label, method=vector.method, vectors=(vector,), multipliers=(float(multiplier),),
        saes={vector.layer: sae} if (sae is not None and vector.uses_sae) else None,
        country=meta.get("country"), train_setting=meta.get("setting"),
        epoch=int(epoch) if epoch is not None else None, source=source, column=column)


def make_conditions(vectors: Sequence[tuple[SteeringVector, SAE | None, str | None]],
                    multipliers: Sequence[float] = (1.0,), *, include_baseline: bool = True
                    ) -> list[Condition]:
    """The baseline, then every (vector, multiplier) pair; labels made unique."""
    conditions = [BASELINE] if include_baseline else []
    for vector, sae, source in vectors:
        for multiplier in multipliers:
            conditions.append(steered_condition(vector, multiplier, sae=sae, source=source))
    return distinct_labels(conditions)


def distinct_labels(conditions: Sequence[Condition]) -> list[Condition]:
    """Conditions whose labels collide (two vectors of one method, setting and epoch) get what
    tells them apart: their country when that differs, else the part of their paths that differs
    (the run folder), else a number."""
    groups: dict[str, list[int]] = {}
    for index, condition in enumerate(conditions):
        groups.setdefault(condition.label, []).append(index)
    unique = list(conditions)
    for label, indices in groups.items():
        if len(indices) < 2:
            continue
        members = [conditions[index] for index in indices]
        countries = [member.country for member in members]
        if all(countries) and len(set(countries)) == len(countries):
            tags = [_display_country(country) for country in countries]
        else:
            tags = _differing_parts([member.source or "" for member in members])
        if len(set(tags)) < len(tags):
            tags = [str(number) for number in range(1, len(members) + 1)]
        for index, member, tag in zip(indices, members, tags):
            unique[index] = replace(member, label=f"{label} ({tag})")
    return unique


def _differing_parts(sources: Sequence[str]) -> list[str]:
    """For each path, its components where the paths differ, e.g. runs/egypt/bipo/vector and
    runs/morocco/bipo/vector -> egypt, morocco."""
    parts = [Path(source).parts for source in sources]
    length = max(len(p) for p in parts)
    padded = [("",) * (length - len(p)) + tuple(p) for p in parts]
    differing = [i for i in range(length) if len({p[i] for p in padded}) > 1]
    return ["/".join(p[i] for i in differing if p[i]) or "?" for p in padded]


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
                    style: str = "completion", batch_size: int = 8
                    ) -> tuple[list[Float[torch.Tensor, "option"]],
                               list[Int[torch.Tensor, "option"]]]:
    """``log π(option | question)`` summed over each option's tokens, and the token counts, for
    every option of every item (under whatever hooks are active on ``model``)."""
    from yapo_interp.data import format_prompt, format_response
    from yapo_interp.logprobs import response_logprobs

    prompts, responses = [], []
    for item in items:
        prompt = format_prompt(item.prompt(form), style=style, tokenizer=model.tokenizer)
        for option in item.options:
            prompts.append(prompt)
            responses.append(format_response(option.text, style=style))
    totals, counts = response_logprobs(model, prompts, responses, batch_size=batch_size)
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
                 desc: str = "MCQ") -> list[dict[str, Any]]:
    """One record per (item, form): option log-probabilities and the predictions by sum and by
    mean; ``score`` (0/1) is the prediction ``score`` selects; ``p_correct`` and ``margin`` are
    the graded scores of the correct option from the mean log-probs (``metrics.answer_probability``
    and ``metrics.answer_margin``; NaN for an item with a single option)."""
    from tqdm.auto import tqdm

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
                                           batch_size=batch_size)
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
    from yapo_interp.logprobs import cached_unembedding

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
    from tqdm.auto import tqdm

    from yapo_interp.data import mcq_prompt, parse_boxed_answer

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
    from tqdm.auto import tqdm

    from yapo_interp.data import format_prompt
    from yapo_interp.judge import JudgeRequest

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
# Summaries: accuracy per setting, RCA and PNLG per condition and country
# --------------------------------------------------------------------------------------------


def setting_rows(frame: pd.DataFrame, setting: str) -> pd.DataFrame:
    return frame if setting == "both" else frame[frame["form"] == setting]


def paired_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """``p_loc`` and ``p_non`` side by side, one row per (question_id, country) that has both
    forms scored (NaN scores, i.e. judge failures, break a pair)."""
    keys = ["question_id", "country"]
    loc = frame[frame["form"] == "localized"].set_index(keys)["score"].rename("p_loc")
    non = frame[frame["form"] == "nonlocalized"].set_index(keys)["score"].rename("p_non")
    for side in (loc, non):
        if side.index.duplicated().any():
            raise ValueError("several scores for the same (question_id, country, form): pass the "
                             "rows of one condition")
    return pd.concat([loc, non], axis=1, join="inner").dropna().reset_index()


def _interval(statistic: Callable[..., float], *arrays: Any, config: EvalConfig
              ) -> tuple[float, float, float]:
    interval = bootstrap_ci(statistic, *arrays, n_resamples=config.n_bootstrap,
                            confidence=config.confidence, seed=config.seed)
    return interval.value, interval.low, interval.high


def gap_metrics(loc_rows: pd.DataFrame, non_rows: pd.DataFrame, config: EvalConfig
                ) -> dict[str, float]:
    """PNLG and RCA from the localized and non-localized instance rows: aggregate (on the mean
    scores, as the paper's tables) and per instance (pairs by question and country), with CIs."""
    nan = float("nan")
    loc_scores = loc_rows["score"].dropna().to_numpy(dtype=float)
    non_scores = non_rows["score"].dropna().to_numpy(dtype=float)
    result = {"acc_loc": nan, "acc_non": nan, "pnlg": nan, "rca": nan, "pnlg_instance": nan,
              "pnlg_instance_low": nan, "pnlg_instance_high": nan, "rca_instance": nan,
              "rca_instance_low": nan, "rca_instance_high": nan, "n_pairs": 0}
    if len(loc_scores) and len(non_scores):
        acc_loc, acc_non = accuracy(loc_scores), accuracy(non_scores)
        result.update(acc_loc=acc_loc, acc_non=acc_non,
                      pnlg=pnlg_aggregate(acc_loc, acc_non, config.alpha, config.eps),
                      rca=rca_aggregate(acc_loc, acc_non, config.eps))
    pairs = paired_scores(pd.concat([loc_rows, non_rows]))
    if len(pairs):
        p_loc, p_non = pairs["p_loc"].to_numpy(float), pairs["p_non"].to_numpy(float)
        value, low, high = _interval(lambda a, b: pnlg(a, b, config.alpha, config.eps),
                                     p_loc, p_non, config=config)
        result.update(pnlg_instance=value, pnlg_instance_low=low, pnlg_instance_high=high)
        value, low, high = _interval(lambda a, b: rca(a, b, config.eps), p_loc, p_non,
                                     config=config)
        result.update(rca_instance=value, rca_instance_low=low, rca_instance_high=high,
                      n_pairs=len(pairs))
    return result


CONDITION_COLUMNS = ["condition", "column", "method", "multiplier", "train_setting", "epoch",
                     "vector"]
POWER_METRICS = ("p_correct", "margin")


def _mean(values: Any) -> float:
    return float(values.mean())


def paired_differences(frame: pd.DataFrame, metrics: Sequence[str] = ("margin", "p_correct",
                                                                      "score"),
                       config: EvalConfig = EvalConfig()) -> pd.DataFrame:
    """Every condition-minus-condition difference of each metric, per country and setting, on
    the instances both conditions scored (same item and form), with a paired bootstrap CI that
    resamples questions (``metrics.paired_difference_ci``). One row per (country, setting,
    metric, condition_a, condition_b): ``difference`` = mean(a) − mean(b), ``ci_low``,
    ``ci_high``, ``n_questions``, ``n_instances``."""
    rows = []
    keys = ["item_id", "form"]
    for (language, country), group in frame.groupby(["language", "country"], sort=False):
        conditions = list(dict.fromkeys(group["condition"]))
        for setting in config.settings:
            in_setting = setting_rows(group, setting)
            for metric in metrics:
                if metric not in in_setting:
                    continue
                for index, first in enumerate(conditions):
                    for second in conditions[index + 1:]:
                        a = in_setting[in_setting["condition"] == first]
                        b = in_setting[in_setting["condition"] == second]
                        joined = a[keys + ["question_id", metric]].merge(
                            b[keys + [metric]], on=keys, suffixes=("_a", "_b")).dropna()
                        if joined.empty:
                            continue
                        interval = paired_difference_ci(
                            joined[f"{metric}_a"], joined[f"{metric}_b"],
                            joined["question_id"].astype(str), n_resamples=config.n_bootstrap,
                            confidence=config.confidence, seed=config.seed)
                        rows.append({"language": language, "country": country,
                                     "setting": setting, "metric": metric,
                                     "condition_a": first, "condition_b": second,
                                     "difference": interval.value, "ci_low": interval.low,
                                     "ci_high": interval.high, "n_questions": interval.n,
                                     "n_instances": len(joined)})
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, config: EvalConfig = EvalConfig()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, gaps)`` per condition and country.

    ``scores``: one row per setting with the mean score (accuracy, or judge total / 10), its
    bootstrap CI, ``n``, ``unscored`` (judge failures, excluded) and ``unparsed`` (boxed answers
    without ``\\boxed{k}``, scored as wrong); for loglik also the accuracy by ``sum`` and by
    ``mean``. ``gaps``: PNLG and RCA (aggregate and per instance) of the condition.
    """
    score_rows, gap_rows = [], []
    for keys, group in frame.groupby(["condition", "language", "country"], sort=False):
        condition, language, country = keys
        described = group.iloc[0][CONDITION_COLUMNS].to_dict()
        for setting in config.settings:
            rows = setting_rows(group, setting)
            scores = rows["score"].dropna().to_numpy(dtype=float)
            record = {**described, "language": language, "country": country,
                      "setting": setting, "n": len(rows),
                      "unscored": int(rows["score"].isna().sum()),
                      "unparsed": int((~rows["parsed"].astype(bool)).sum())
                      if "parsed" in rows else 0}
            if len(scores):
                value, low, high = _interval(accuracy, scores, config=config)
            else:
                value = low = high = float("nan")
            record.update(score=value, ci_low=low, ci_high=high)
            for variant in ("sum", "mean"):
                column = f"correct_{variant}"
                if column in rows and len(rows):
                    record[f"accuracy_{variant}"] = float(rows[column].mean())
            for metric in POWER_METRICS:  # graded scores (log-likelihood MCQ)
                values = rows[metric].dropna().to_numpy(dtype=float) if metric in rows else []
                if len(values):
                    value, low, high = _interval(_mean, values, config=config)
                    record.update({metric: value, f"{metric}_low": low, f"{metric}_high": high})
            score_rows.append(record)
        if set(FORMS) <= set(config.forms):
            gap_rows.append({**described, "language": language, "country": country,
                             **gap_metrics(group[group["form"] == "localized"],
                                           group[group["form"] == "nonlocalized"], config)})
    return pd.DataFrame(score_rows), pd.DataFrame(gap_rows)


# --------------------------------------------------------------------------------------------
# Paper-style tables
# --------------------------------------------------------------------------------------------


def _column_order(frame: pd.DataFrame) -> list[str]:
    described = frame[["column", "method", "multiplier"]].drop_duplicates("column")

    def key(row: pd.Series) -> tuple:
        method = row["method"]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        multiplier = row["multiplier"] if pd.notna(row["multiplier"]) else 0.0
        return rank, method, multiplier

    return [row["column"] for _, row in sorted(described.iterrows(), key=lambda pair: key(
        pair[1]))]


def select_rows(frame: pd.DataFrame, column: str, country: str, setting: str) -> pd.DataFrame:
    """Instance rows of the condition that fills the cell (``column``, ``country``, ``setting``):
    among the conditions of that column evaluated on the country, the one trained on ``setting``
    (else on ``both``, else any), latest epoch first; only the forms of ``setting``."""
    rows = frame[(frame["column"] == column) & (frame["country"] == country)]
    if rows.empty:
        return rows
    candidates = rows[["condition", "train_setting", "epoch"]].drop_duplicates("condition")

    def preference(row: pd.Series) -> tuple:
        trained = row["train_setting"]
        rank = 0 if trained == setting else 1 if trained == "both" else 2
        epoch = row["epoch"] if pd.notna(row["epoch"]) else -1
        return rank, -epoch

    best = min(candidates.itertuples(index=False),
               key=lambda row: preference(pd.Series(row._asdict())))
    return setting_rows(rows[rows["condition"] == best.condition], setting)


def _mean_score(rows: pd.DataFrame) -> float:
    scores = rows["score"].dropna()
    return float(scores.mean()) if len(scores) else float("nan")


def _fmt_delta(value: float, fmt: Callable[[float], str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f" ({'+' if value >= 0 else '−'}{fmt(abs(value))})"


def _fmt_relative(value: float) -> str:
    if value is None or math.isnan(value):
        return ""
    arrow = "↑" if value > 0 else "↓" if value < 0 else ""
    return f" ({arrow}{abs(value) * 100:.1f}%)"


def _countries_in_order(frame: pd.DataFrame) -> list[tuple[str, str]]:
    from yapo_interp.data.countries import LANGUAGE_GROUPS

    present = set(map(tuple, frame[["language", "country"]].drop_duplicates().to_numpy()))
    ordered = [(language, country) for language, countries in LANGUAGE_GROUPS.items()
               for country in countries if (language, country) in present]
    return ordered + sorted(present - set(ordered))


def _display_country(country: str) -> str:
    from yapo_interp.data.countries import DISPLAY_NAMES

    return DISPLAY_NAMES.get(country, country)


def average_label(covered: int, total: int) -> str:
    """The "Average" row's name: how many of the countries it averages over, when a column lacks
    some (every column of the row is averaged over the same countries, so that the baseline and
    a steered column are compared on equal terms)."""
    if covered == total:
        return "Average"
    return f"Average ({covered} of {total} countries: those with every column)"


def table_scores(frame: pd.DataFrame, config: EvalConfig = EvalConfig(), *, task: str = "mcq"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 1 (``task="mcq"``, accuracy in %) and 2 (``task="open"``, judge score 0-10).

    Returns ``(numbers, display)``: ``numbers`` has one column per (setting, method) and its
    difference to the baseline (``"{setting}/{column}"``, ``"{setting}/{column} Δ"``) on the
    table's scale; ``display`` is the paper's layout as text ("47.7% (+4.6%)"). Rows are
    countries in the paper's order, then one "Average" row per language: the mean over the
    countries that have a value in every column (all of them unless a vector is missing for
    some), so that baseline and steered columns average the same countries.
    """
    scale = 100.0 if task == "mcq" else 10.0
    columns = _column_order(frame)
    baseline = "Baseline" if "Baseline" in columns else None
    rows = []
    for language, country in _countries_in_order(frame):
        row: dict[str, Any] = {"language": language, "country": country}
        for setting in config.settings:
            for column in columns:
                row[f"{setting}/{column}"] = _mean_score(
                    select_rows(frame, column, country, setting)) * scale
        rows.append(row)
    numbers = pd.DataFrame(rows)
    value_columns = [c for c in numbers.columns if "/" in c]
    averaged = []
    average_labels: dict[str, str] = {}
    for language, group in numbers.groupby("language", sort=False):
        averaged.append(group)
        if len(group) > 1:
            # every column averaged over the same countries: those with a value in every column
            covered = group[group[value_columns].notna().all(axis=1)]
            averaged.append(pd.DataFrame([{"language": language, "country": "Average",
                                           **covered[value_columns].mean().to_dict()}]))
            average_labels[language] = average_label(len(covered), len(group))
    numbers = pd.concat(averaged, ignore_index=True)
    if baseline:
        for setting in config.settings:
            for column in columns:
                if column != baseline:
                    numbers[f"{setting}/{column} Δ"] = (numbers[f"{setting}/{column}"]
                                                        - numbers[f"{setting}/{baseline}"])
    ordered = ["language", "country"] + [
        name for setting in config.settings for column in columns
        for name in (f"{setting}/{column}", f"{setting}/{column} Δ") if name in numbers]
    numbers = numbers[ordered]

    def fmt(value: float) -> str:
        if value is None or math.isnan(value):
            return "–"
        return f"{value:.1f}%" if task == "mcq" else f"{value:.2f}"

    display_rows = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize(),
                 "Country": average_labels.get(row["language"], "Average")
                 if row["country"] == "Average" else _display_country(row["country"])}
        for setting in config.settings:
            for column in columns:
                value = row[f"{setting}/{column}"]
                delta = row.get(f"{setting}/{column} Δ")
                text = fmt(value)
                if delta is not None and not (isinstance(delta, float) and math.isnan(delta)):
                    text += _fmt_delta(delta, fmt)
                shown[f"{SETTING_TITLES[setting]} · {column}"] = text
        display_rows.append(shown)
    return numbers, pd.DataFrame(display_rows)


def _gap_cell(frame: pd.DataFrame, column: str, country: str, config: EvalConfig
              ) -> dict[str, float]:
    return gap_metrics(select_rows(frame, column, country, "localized"),
                       select_rows(frame, column, country, "nonlocalized"), config)


def gap_by_country(tasks: Mapping[str, pd.DataFrame], config: EvalConfig = EvalConfig()
                   ) -> pd.DataFrame:
    """Long table: PNLG and RCA (aggregate and per instance) per task, country and column."""
    rows = []
    for task, frame in tasks.items():
        if frame is None or frame.empty:
            continue
        for language, country in _countries_in_order(frame):
            for column in _column_order(frame):
                cell = _gap_cell(frame, column, country, config)
                rows.append({"task": task, "language": language, "country": country,
                             "column": column, **cell})
    return pd.DataFrame(rows)


def _wide_gap(long: pd.DataFrame, variant: str) -> tuple[list[str], pd.DataFrame]:
    suffix = "" if variant == "aggregate" else "_instance"
    columns = list(dict.fromkeys(long["column"]))
    wide = long.pivot_table(index=["task", "language", "country"], columns="column",
                            values=[f"pnlg{suffix}", f"rca{suffix}"], sort=False, dropna=False)
    wide.columns = [f"{'PNLG' if metric.startswith('pnlg') else 'RCA'}/{column}"
                    for metric, column in wide.columns]
    return columns, wide.reset_index()


def table_gap_by_country(long: pd.DataFrame, *, variant: str = "aggregate"
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5: PNLG (↓, change to the baseline in absolute terms: PNLG is signed) and RCA (↑,
    in %, difference in points) per language, country and task. ``variant`` is ``aggregate`` (the paper's tables)
    or ``instance`` (eq. 5 and 6 averaged over pairs)."""
    columns, wide = _wide_gap(long, variant)
    task_rank = {task: index for index, task in enumerate(TASK_TITLES)}
    country_rank = {key: index for index, key in enumerate(_countries_in_order(long))}
    wide["_country"] = [country_rank[(language, country)] for language, country
                        in zip(wide["language"], wide["country"])]
    wide["_task"] = wide["task"].map(task_rank)
    wide = wide.sort_values(["_country", "_task"], kind="stable").drop(
        columns=["_country", "_task"])
    for column in columns:
        wide[f"RCA/{column}"] = wide[f"RCA/{column}"] * 100.0
    baseline = "Baseline" if "Baseline" in columns else None
    if baseline:
        for column in columns:
            if column == baseline:
                continue
            # PNLG is signed: a relative change of it cannot be read (-1.2 -> 0 is "+100%"),
            # so the change is shown in absolute terms
            wide[f"PNLG/{column} Δ"] = wide[f"PNLG/{column}"] - wide[f"PNLG/{baseline}"]
            wide[f"RCA/{column} Δ"] = wide[f"RCA/{column}"] - wide[f"RCA/{baseline}"]
    numbers = wide[["language", "country", "task"] + [
        name for metric in ("PNLG", "RCA") for column in columns
        for name in (f"{metric}/{column}", f"{metric}/{column} rel", f"{metric}/{column} Δ")
        if name in wide]].reset_index(drop=True)
    display = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize(),
                 "Country": _display_country(row["country"]),
                 "Task": TASK_TITLES.get(row["task"], row["task"])}
        for column in columns:
            value = row[f"PNLG/{column}"]
            shown[f"PNLG ↓ · {column}"] = ("–" if math.isnan(value) else f"{value:.3f}") + (
                _fmt_delta(row[f"PNLG/{column} Δ"], lambda v: f"{v:.3f}")
                if f"PNLG/{column} Δ" in row else "")
        for column in columns:
            value = row[f"RCA/{column}"]
            shown[f"RCA ↑ · {column}"] = ("–" if math.isnan(value) else f"{value:.1f}%") + (
                _fmt_delta(row[f"RCA/{column} Δ"], lambda v: f"{v:.1f}%")
                if f"RCA/{column} Δ" in row else "")
        display.append(shown)
    return numbers, pd.DataFrame(display)


def table_gap_by_language(long: pd.DataFrame, *, variant: str = "aggregate"
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3: RCA (↑, %) and PNLG (↓) per language (mean over its countries that have every
    column, so that all columns average the same countries) and overall (mean over languages),
    MCQ and open-ended, with the change to the baseline: relative for RCA, absolute for PNLG
    (a signed quantity)."""
    columns, wide = _wide_gap(long, variant)
    metrics = [c for c in wide.columns if "/" in c]
    # every column averaged over the same countries: those with a value for every column
    covered = pd.concat([wide[[f"RCA/{column}", f"PNLG/{column}"]].notna().any(axis=1)
                         for column in columns], axis=1).all(axis=1)
    by_language = wide[covered].groupby(["task", "language"], sort=False)[metrics].mean(
        ).reset_index()
    overall = by_language.groupby("task", sort=False)[metrics].mean().reset_index()
    overall["language"] = "overall"
    table = pd.concat([by_language, overall], ignore_index=True)
    rows = []
    for language in dict.fromkeys(table["language"]):
        row: dict[str, Any] = {"language": language}
        for metric in ("RCA", "PNLG"):
            for task in TASK_TITLES:
                match = table[(table["language"] == language) & (table["task"] == task)]
                for column in columns:
                    value = float(match[f"{metric}/{column}"].iloc[0]) if len(match) else (
                        float("nan"))
                    row[f"{metric}/{task}/{column}"] = value * (100.0 if metric == "RCA" else 1)
        rows.append(row)
    numbers = pd.DataFrame(rows)
    baseline = "Baseline" if "Baseline" in columns else None
    if baseline:
        for metric in ("RCA", "PNLG"):
            for task in TASK_TITLES:
                for column in columns:
                    if column != baseline and f"{metric}/{task}/{column}" in numbers:
                        value = numbers[f"{metric}/{task}/{column}"]
                        base = numbers[f"{metric}/{task}/{baseline}"]
                        if metric == "PNLG":  # signed: the change in absolute terms
                            numbers[f"{metric}/{task}/{column} Δ"] = value - base
                        else:
                            numbers[f"{metric}/{task}/{column} rel"] = [
                                relative_change(v, b) for v, b in zip(value, base)]
    numbers = numbers.dropna(axis=1, how="all")
    display = []
    for _, row in numbers.iterrows():
        shown = {"Language": row["language"].capitalize()}
        for metric, arrow in (("RCA", "↑"), ("PNLG", "↓")):
            for task in TASK_TITLES:
                for column in columns:
                    key = f"{metric}/{task}/{column}"
                    if key not in row:
                        continue
                    value = row[key]
                    text = "–" if math.isnan(value) else (
                        f"{value:.1f}" if metric == "RCA" else f"{value:.3f}")
                    text += _fmt_relative(row[f"{key} rel"]) if f"{key} rel" in row else ""
                    if f"{key} Δ" in row:
                        text += _fmt_delta(row[f"{key} Δ"], lambda v: f"{v:.3f}")
                    shown[f"{metric} {arrow} · {TASK_TITLES[task]} · {column}"] = text
        display.append(shown)
    return numbers, pd.DataFrame(display)


# --------------------------------------------------------------------------------------------
# Loading vectors; stability across epochs (figure 5)
# --------------------------------------------------------------------------------------------

EPOCH_PATTERN = re.compile(r"epoch[_-]?(\d+)", re.IGNORECASE)


def find_epoch_vectors(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, vector path)`` for every checkpoint under ``RUN/vectors`` (or ``RUN``), sorted.

    A checkpoint is a ``.safetensors`` file with its ``.json``; its epoch is read from a path
    component like ``epoch_07`` (or from ``metadata["epoch"]`` when no component names one).
    """
    run_dir = Path(run_dir)
    root = run_dir / "vectors" if (run_dir / "vectors").is_dir() else run_dir
    found = []
    for tensor in sorted(root.rglob("*.safetensors")):
        if not tensor.with_suffix(".json").is_file():
            continue
        epoch = None
        for part in reversed(tensor.relative_to(root).with_suffix("").parts):
            match = EPOCH_PATTERN.search(part)
            if match:
                epoch = int(match.group(1))
                break
        if epoch is None:
            from yapo_interp.steering import read_vector_sidecar

            meta = read_vector_sidecar(tensor.with_suffix(".json"))  # one-line error if broken
            epoch = (meta.get("metadata") or {}).get("epoch")
        if epoch is not None:
            found.append((int(epoch), tensor.with_suffix("")))
    return sorted(found)


def resolve_vector_path(path: str | Path) -> Path:
    """A vector's base path from a vector file (with or without suffix) or a run folder."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    if path.with_name(path.name + ".safetensors").is_file():
        return path
    if path.is_dir():
        if (path / "vector.safetensors").is_file():  # a training run's final vector
            return path / "vector"
        epochs = find_epoch_vectors(path)
        if epochs:
            return epochs[-1][1]
        direct = sorted(path.glob("*.safetensors"))
        if len(direct) == 1:
            return direct[0].with_suffix("")
        if direct:
            raise UserError(f"{path} holds several vectors ({', '.join(p.name for p in direct)}); "
                            "pass one of them")
        raise UserError(f"{path} holds no steering vector (no .safetensors files, no "
                        "vectors/epoch_XX folders)")
    raise UserError(f"no steering vector at {path}: expected {path}.safetensors and "
                    f"{path}.json, or a training run folder")


class VectorLoader:
    """Loads steering vectors and, for sparse ones, the SAE named in their metadata (or the
    override, or the preset's SAE for the vector's layer), each SAE once."""

    def __init__(self, model: HookedTransformer, *, sae_override: str | None = None,
                 sae_id: str | None = None, preset: Any = None):
        self.model = model
        self.sae_override = sae_override
        self.sae_id = sae_id
        self.preset = preset
        self._saes: dict[tuple, Any] = {}

    def _sae(self, vector: SteeringVector) -> SAE:
        from yapo_interp.models import load_sae

        described = (vector.metadata or {}).get("sae") or {}
        if self.sae_override:
            key = (self.sae_override, self.sae_id, vector.layer)
            release, sae_id, layer = self.sae_override, self.sae_id, vector.layer
        elif described.get("path") and Path(described["path"]).is_dir():
            key = (described["path"], None, None)
            release, sae_id, layer = described["path"], None, None
        elif described.get("release"):
            key = (described["release"], described.get("id"), vector.layer)
            release, sae_id, layer = described["release"], described.get("id"), vector.layer
        elif self.preset is not None:
            release, sae_id = self.preset.sae_for_layer(vector.layer)
            key, layer = (release, sae_id, vector.layer), vector.layer
        else:
            raise UserError(f"the {vector.method} vector does not say which SAE it was trained "
                            "with; pass --sae")
        if key not in self._saes:
            self._saes[key] = load_sae(release, sae_id, layer=layer, model=self.model,
                                       device=str(self.model.cfg.device))
        return self._saes[key]

    def load(self, path: str | Path) -> tuple[SteeringVector, SAE | None, str]:
        from yapo_interp.steering import SteeringVector

        base = resolve_vector_path(path)
        vector = SteeringVector.load(base, model=self.model)
        sae = None
        if vector.uses_sae:
            sae = self._sae(vector)
            vector.check_fits(model=self.model, sae=sae, source=str(base))
        return vector, sae, str(base)


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
        checkpoints = find_epoch_vectors(run_dir)
        if not checkpoints:
            raise UserError(f"{run_dir}: no epoch checkpoints (expected "
                            "RUN/vectors/epoch_XX.safetensors)")
        for epoch, path in checkpoints:
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


# --------------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Everything an evaluation produced (frames) and where it was written (``files``)."""

    mcq: pd.DataFrame
    open: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps_long: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)


def accuracy_by_position(mcq: pd.DataFrame) -> pd.DataFrame:
    """Boxed MCQ: per condition and displayed position k of the correct option, the number of
    instances, the accuracy, and how often the model answered k at all. A model that always
    answers one number scores by where the answer sits, not by what it knows; this table shows it.
    Empty for log-likelihood scoring, which has no displayed positions."""
    if mcq.empty or "answer_position" not in mcq:
        return pd.DataFrame()
    rows = []
    for condition, group in mcq.groupby("condition", sort=False):
        described = group.iloc[0][[c for c in CONDITION_COLUMNS if c in group]].to_dict()
        for position in sorted(group["answer_position"].dropna().unique()):
            at = group[group["answer_position"] == position]
            rows.append({**described, "position": int(position), "n": len(at),
                         "accuracy": float(at["score"].mean()),
                         "answered_share": float((group["predicted_position"] == position).mean())})
    return pd.DataFrame(rows)


def build_result(mcq: pd.DataFrame, open_ended: pd.DataFrame | None,
                 config: EvalConfig, stability: pd.DataFrame | None = None) -> EvaluationResult:
    scores, gaps = [], []
    for task, frame in (("mcq", mcq), ("open", open_ended)):
        if frame is None or frame.empty:
            continue
        task_scores, task_gaps = summarize(frame, config)
        task_scores.insert(0, "task", task)
        scores.append(task_scores)
        if not task_gaps.empty:
            task_gaps.insert(0, "task", task)
            gaps.append(task_gaps)
    long = gap_by_country({"mcq": mcq, "open": open_ended}, config) if (
        set(FORMS) <= set(config.forms)) else pd.DataFrame()
    return EvaluationResult(mcq=mcq, open=open_ended, stability=stability,
                            scores=pd.concat(scores, ignore_index=True) if scores else
                            pd.DataFrame(),
                            gaps=pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame(),
                            gaps_long=long)


def write_results(result: EvaluationResult, out: str | Path, config: EvalConfig,
                  settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write instance rows, summaries, tables 1/2/3/5 (CSV numbers + Markdown layout), the
    stability view and ``settings.json`` (``run_info``) into ``out``; all atomically."""
    from yapo_interp.io import run_info, write_json, write_table, write_text

    out = Path(out)
    files: dict[str, Path] = {}

    def table(name: str, numbers: pd.DataFrame, display: pd.DataFrame | None = None) -> None:
        files[name] = write_table(out / f"{name}.csv", numbers)
        if display is not None:  # text cells kept as written ("3.00", not 3)
            files[f"{name}_md"] = write_text(out / f"{name}.md", markdown(display))

    table("mcq_instances", result.mcq)
    if result.open is not None and not result.open.empty:
        table("open_instances", result.open)
    if not result.scores.empty:
        table("scores", result.scores)
    if not result.gaps.empty:
        table("gaps", result.gaps)
    table("table1_mcq", *table_scores(result.mcq, config, task="mcq"))
    if result.open is not None and not result.open.empty:
        table("table2_open", *table_scores(result.open, config, task="open"))
    if not result.gaps_long.empty:
        table("gap_by_country", result.gaps_long)
        table("table5_gap_by_country", *table_gap_by_country(result.gaps_long))
        table("table5_gap_by_country_per_instance",
              *table_gap_by_country(result.gaps_long, variant="instance"))
        table("table3_gap_by_language", *table_gap_by_language(result.gaps_long))
        table("table3_gap_by_language_per_instance",
              *table_gap_by_language(result.gaps_long, variant="instance"))
    if result.stability is not None and not result.stability.empty:
        table("stability", result.stability)
    by_position = accuracy_by_position(result.mcq)
    if not by_position.empty:
        table("mcq_by_position", by_position)
    differences = paired_differences(result.mcq, config=config) if not result.mcq.empty else (
        pd.DataFrame())
    if not differences.empty:
        table("differences", differences)
    files["settings"] = write_json(out / "settings.json", run_info(
        {**settings, "config": asdict(config), "files": {k: str(v) for k, v in files.items()}}))
    result.files = files
    return files


def markdown(display: pd.DataFrame) -> str:
    """A display table as Markdown, its text cells kept verbatim (tabulate would reparse "3.00")."""
    return display.to_markdown(index=False, disable_numparse=True) + "\n"


def format_summary(result: EvaluationResult) -> str:
    """Accuracy per setting with RCA and PNLG, one line per condition and country."""
    lines = []
    for task, frame in result.scores.groupby("task", sort=False):
        unit = "accuracy" if task == "mcq" else "judge score /10"
        lines.append(f"{TASK_TITLES.get(task, task)} ({unit}; 95% bootstrap CI):")
        gaps = result.gaps[result.gaps["task"] == task] if not result.gaps.empty else None
        for (condition, country), group in frame.groupby(["condition", "country"], sort=False):
            parts = []
            for _, row in group.iterrows():
                scale = 100.0 if task == "mcq" else 10.0
                unit_suffix = "%" if task == "mcq" else ""
                text = (f"{row['setting']} {row['score'] * scale:.1f}{unit_suffix} "
                        f"[{row['ci_low'] * scale:.1f}, {row['ci_high'] * scale:.1f}]")
                extra = []
                if row.get("unparsed"):
                    extra.append(f"{row['unparsed']} unparsed")
                if row.get("unscored"):
                    extra.append(f"{row['unscored']} unscored")
                if extra:
                    text += f" ({', '.join(extra)})"
                parts.append(text)
            line = f"  {_display_country(country):12s} {condition:28s} " + "  ".join(parts)
            if gaps is not None and len(gaps):
                match = gaps[(gaps["condition"] == condition) & (gaps["country"] == country)]
                if len(match):
                    gap = match.iloc[0]
                    line += (f"  | RCA {gap['rca'] * 100:.1f}% (per instance "
                             f"{gap['rca_instance'] * 100:.1f}%)  PNLG {gap['pnlg']:.3f} "
                             f"(per instance {gap['pnlg_instance']:.3f})")
            lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yapo_interp.evaluate",
        description="Evaluate the baseline and steering vectors on the cultural benchmark: MCQ "
                    "accuracy, open-ended judge scores, RCA and PNLG, paper-style tables "
                    "(section 4 of the paper).")
    parser.add_argument("--country", "--countries", dest="countries", nargs="+", required=True,
                        help="countries to evaluate (e.g. egypt morocco)")
    parser.add_argument("--vectors", nargs="*", default=[],
                        help="steering vectors (PATH, PATH.safetensors) or training run folders")
    parser.add_argument("--multipliers", nargs="+", type=float, default=[1.0],
                        help="steering multipliers λ to evaluate each vector at (default: 1.0)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unsteered model")
    parser.add_argument("--stability", nargs="*", default=[], metavar="RUN",
                        help="training runs whose every epoch checkpoint (RUN/vectors/epoch_XX) "
                             "is evaluated on the MCQ (figure 5)")
    parser.add_argument("--split", choices=["test", "all"], default="test",
                        help="evaluate on the test split (default) or all items")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="test share of questions, as in training (default: "
                             f"{DEFAULT_TEST_FRACTION})")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the train/test split, as in training (default: 0)")
    parser.add_argument("--dataset", default=None,
                        help="dataset file or folder (default: the shipped cultural set)")
    parser.add_argument("--max-items", type=int, default=None,
                        help="at most N items (questions) per country, for quick runs")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="settings to report (default: localized nonlocalized both)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="MCQ scoring: option log-likelihood (base models) or generated "
                             "\\boxed{k} (instruction models) (default: the preset's; embedded: "
                             "loglik, paper: boxed)")
    parser.add_argument("--score", choices=LOGLIK_SCORES, default="mean",
                        help="loglik: rank options by mean (length-normalised, default) or sum")
    parser.add_argument("--style", choices=["auto", "completion", "chat"], default="auto",
                        help="prompt style (default auto: chat when the tokenizer has a chat "
                             "template and --mode boxed, else completion)")
    parser.add_argument("--shuffle-options", type=int, default=DEFAULT_OPTION_SEED,
                        metavar="SEED",
                        help="boxed: seed of the per-question option order (default "
                             f"{DEFAULT_OPTION_SEED}, the order training's MCQ prompts use)")
    parser.add_argument("--no-shuffle-options", action="store_true",
                        help="boxed: show the options in the dataset's order (each country's "
                             "option then always sits at the same number)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--boxed-max-new-tokens", type=int, default=48)
    parser.add_argument("--open-max-new-tokens", type=int, default=96)
    parser.add_argument("--judge", choices=["none", "local", "openai"], default="none",
                        help="open-ended generation judged by: none (skip the open-ended task), "
                             "local (offline heuristic rubric, weaker), openai (any "
                             "OpenAI-compatible endpoint)")
    parser.add_argument("--judge-base-url", default=None,
                        help="judge API root, e.g. https://api.openai.com/v1 "
                             "(env YAPO_JUDGE_BASE_URL)")
    parser.add_argument("--judge-model", default=None, help="judge model (env YAPO_JUDGE_MODEL)")
    parser.add_argument("--judge-api-key", default=None, help="judge key (env YAPO_JUDGE_API_KEY)")
    parser.add_argument("--judge-cache", type=Path, default=None,
                        help="JSONL cache of judge verdicts (default: OUT/judge_cache.jsonl)")
    parser.add_argument("--judge-timeout", type=float, default=60.0,
                        help="seconds one try of a judge request may wait (default: 60)")
    parser.add_argument("--judge-retries", type=int, default=3)
    parser.add_argument("--judge-deadline", type=float, default=120.0,
                        help="seconds one judge request may take in all, tries and waits "
                             "included (default: 120)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's choice), as in train")
    parser.add_argument("--alpha", type=float, default=1.0, help="α of PNLG (eq. 5, default 1)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for confidence intervals (default: 1000)")
    parser.add_argument("--sae", default=None,
                        help="SAE for sparse vectors (folder or SAELens release), overriding the "
                             "one named in the vectors' metadata")
    parser.add_argument("--sae-id", default=None, help="SAE id within --sae's release")
    add_common_args(parser, out_default="runs/evaluate")
    return parser


def select_items(items: Sequence[CulturalItem], *, split: str, test_fraction: float,
                 split_seed: int, max_items: int | None) -> list[CulturalItem]:
    from yapo_interp.data import split_items

    if split == "test":
        _, items = split_items(items, test_fraction=test_fraction, seed=split_seed)
    if max_items is not None:
        if max_items < 1:
            raise UserError("--max-items must be at least 1")
        kept: dict[str, int] = {}
        limited = []
        for item in items:
            if kept.get(item.country, 0) < max_items:
                kept[item.country] = kept.get(item.country, 0) + 1
                limited.append(item)
        items = limited
    if not items:
        raise UserError("no items left to evaluate after the split; use --split all or a "
                        "larger dataset")
    return list(items)


def seen_questions(vector: SteeringVector, sae: SAE | None = None) -> dict[str, set[str]]:
    """Cultural question ids that shaped ``vector``: those it was fitted or validated on (its
    metadata's ``train_question_ids``) and, for a sparse vector, those whose text trained its
    SAE (the SAE config's ``metadata.yapo_interp.cultural_question_ids``)."""
    seen = {"training": set((vector.metadata or {}).get("train_question_ids") or [])}
    info = getattr(getattr(sae, "cfg", None), "metadata", None) if sae is not None else None
    yapo_info = getattr(info, "yapo_interp", None) if info is not None else None
    if isinstance(yapo_info, Mapping) and yapo_info.get("cultural_question_ids"):
        seen["its SAE's corpus"] = set(yapo_info["cultural_question_ids"])
    return seen


def check_unseen(vector: SteeringVector, source: str, items: Sequence[CulturalItem], *,
                 sae: SAE | None = None) -> None:
    """Refuse (one line) to score ``vector`` on a question that reached its training, its
    tuning or its SAE's corpus."""
    evaluated = {item.question_id for item in items}
    for where, questions in seen_questions(vector, sae).items():
        overlap = sorted(evaluated & questions)
        if overlap:
            split = (vector.metadata or {}).get("split") or {}
            hint = (f"evaluate with the split it was trained with (--split test --split-seed "
                    f"{split.get('seed', 0)} --test-fraction "
                    f"{split.get('test_fraction', DEFAULT_TEST_FRACTION)})" if split
                    else "evaluate on --split test with the default split")
            raise UserError(f"{source} saw {len(overlap)} of the evaluated questions in "
                            f"{where} (e.g. {', '.join(overlap[:3])}); {hint}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from yapo_interp.data import load_cultural, resolve_countries
    from yapo_interp.judge import make_judge, unscored_message
    from yapo_interp.models import load_model

    check_run_args(args)  # device, --out writable: before the evaluation, not after it
    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)

    countries = resolve_countries(args.countries)
    items = load_cultural(args.dataset, countries=countries)
    items = select_items(items, split=args.split, test_fraction=args.test_fraction,
                         split_seed=args.split_seed, max_items=args.max_items)
    judge = make_judge(args.judge, base_url=args.judge_base_url, model=args.judge_model,
                       api_key=args.judge_api_key,
                       cache_path=args.judge_cache or args.out / "judge_cache.jsonl",
                       **({"timeout": args.judge_timeout, "max_retries": args.judge_retries,
                           "deadline": args.judge_deadline} if args.judge == "openai" else {}))
    if hasattr(judge, "check_reachable"):
        judge.check_reachable()  # a closed port or unknown host: now, not after the model load
    vector_paths = [resolve_vector_path(path) for path in args.vectors]  # fail before loading
    from yapo_interp.steering import SteeringVector

    for path in vector_paths:  # damaged or mismatched vector files: before the model load
        SteeringVector.load(path)
    for run_dir in args.stability:
        if not find_epoch_vectors(run_dir):
            raise UserError(f"{run_dir}: no epoch checkpoints (expected "
                            "RUN/vectors/epoch_XX.safetensors)")
    set_seed(args.seed)
    name = model_name(args)
    print(f"loading {name} ...", file=sys.stderr)
    model = load_model(name, device=args.device)
    style = args.style
    mode = args.mode or preset_from_args(args).mcq_mode
    if style == "auto":
        has_template = bool(getattr(model.tokenizer, "chat_template", None))
        style = "chat" if (mode == "boxed" and has_template) else "completion"
    config = EvalConfig(mode=mode, settings=tuple(args.settings), style=style,
                        loglik_score=args.score, batch_size=args.batch_size,
                        boxed_max_new_tokens=args.boxed_max_new_tokens,
                        shuffle_options_seed=None if args.no_shuffle_options
                        else args.shuffle_options,
                        open_max_new_tokens=args.open_max_new_tokens, alpha=args.alpha,
                        n_bootstrap=args.bootstrap, seed=args.seed)
    loader = VectorLoader(model, sae_override=args.sae, sae_id=args.sae_id,
                          preset=preset_from_args(args))
    vectors = [loader.load(path) for path in vector_paths]
    for vector, sae, source in vectors:
        country = (vector.metadata or {}).get("country")
        if country and country not in countries:
            raise UserError(f"{source} is a vector for {country}, which is not among "
                            f"--country {' '.join(countries)}; add it or drop the vector")
        check_unseen(vector, source, items, sae=sae)
    for run_dir in args.stability:
        for _, path in find_epoch_vectors(run_dir)[:1]:  # every epoch shares the run's metadata
            vector, sae, source = loader.load(path)
            check_unseen(vector, source, items, sae=sae)
    conditions = make_conditions(vectors, args.multipliers,
                                 include_baseline=not args.no_baseline)
    if not conditions:
        raise UserError("nothing to evaluate: give --vectors or keep the baseline")
    print(f"evaluating {len(conditions)} condition(s) on {len(items)} items of "
          f"{', '.join(countries)} ({args.split} split; MCQ by {config.mode}"
          f"{' ' + config.loglik_score if config.mode == 'loglik' else ''}, style {style})",
          file=sys.stderr)
    mcq = evaluate_mcq(model, items, conditions, config)
    open_ended = evaluate_open(model, items, conditions, judge, config) if judge else None
    stability = None
    if args.stability:
        baseline = mcq[mcq["method"] == "baseline"] if not args.no_baseline else None
        stability = evaluate_stability(model, items, args.stability, loader, config,
                                       baseline=baseline, include_baseline=not args.no_baseline)
    result = build_result(mcq, open_ended, config, stability)
    settings = {"countries": countries, "vectors": [source for _, _, source in vectors],
                "multipliers": args.multipliers, "split": args.split,
                "test_fraction": args.test_fraction, "split_seed": args.split_seed,
                "dataset": args.dataset, "max_items": args.max_items, "model": name,
                "preset": args.preset, "judge": judge.name if judge else None,
                "judge_weaker": bool(judge and judge.weaker), "stability_runs": args.stability,
                "n_items": len(items)}
    files = write_results(result, args.out, config, settings)
    print(format_summary(result))
    missing = unscored_message(open_ended.to_dict("records"), judge.name) if (
        open_ended is not None and "judge_ok" in open_ended) else None
    if judge is not None and judge.weaker:
        print("note: open-ended scores come from the offline heuristic judge, which is much "
              "weaker than an LLM judge; do not compare them with the paper's numbers.")
    print(f"wrote {len(files)} files to {args.out} (tables: table1_mcq.md"
          f"{', table2_open.md' if open_ended is not None else ''}, "
          f"table3_gap_by_language.md, table5_gap_by_country.md)")
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    run_cli(main)
