"""Which preference pairs a run fits and validates on.

Three sources: the cultural questions of one country (``DataSelection``: split by question, the
test questions never reach training, the validation questions are carved from the training ones),
a BiPO behaviour set (``BehaviourSelection(behaviour=...)``: its ``train.csv`` formatted with a
template, validation questions chosen by a hash of the question) or a behaviour CSV
(``BehaviourSelection(csv=...)``: texts used as written, a seeded permutation holds pairs out).

:func:`read_inputs` reads and checks what can be read before the model is loaded (a bad file fails
in seconds); :func:`training_pairs` then makes the pairs, which may need the model (its tokenizer,
or its own greedy answers as the rejected ones).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from yapo_interp import data
from yapo_interp.data import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION
from yapo_interp.data.behaviour import BehaviourSet, load_behaviour, preference_pairs
from yapo_interp.errors import UserError
from yapo_interp.models import cache_root
from yapo_interp.onpolicy import GenerationSettings, generated_rejections

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from yapo_interp.data import CulturalItem, PreferencePair
    from yapo_interp.models import Preset


@dataclass(frozen=True)
class DataSelection:
    """Which cultural questions a run fits on and validates on, and how its pairs look."""

    country: str
    setting: str = "localized"
    rejected: str = "western"
    style: str = "completion"
    response_format: str = "option"
    test_fraction: float = DEFAULT_TEST_FRACTION
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = 0
    max_pairs: int | None = None
    data: str | None = None

    @classmethod
    def for_preset(cls, preset: Preset, country: str, *, rejected: str | None = None,
                   **fields: Any) -> DataSelection:
        """The selection of ``country`` as ``preset`` formats its pairs (prompt style, response
        format) and picks their rejected answers (unless ``rejected``); ``fields`` are the
        others (setting, split, ``max_pairs``, ``data``)."""
        return cls(country=country, rejected=rejected or preset.rejected,
                   style=preset.prompt_style, response_format=preset.response_format, **fields)


@dataclass(frozen=True)
class BehaviourSelection:
    """Pairs of a BiPO behaviour set (``behaviour``: a shipped name or a folder; its
    ``train.csv`` formatted by ``template``, ``validation_fraction`` of its questions held out)
    or of a behaviour CSV (``csv``: texts as written, ``test_fraction`` of the pairs held out);
    exactly one of the two. ``max_pairs`` keeps the first N training pairs."""

    behaviour: str | None = None
    csv: Path | None = None
    template: str = "bipo"
    strict: bool = False  # behaviour set: refuse a malformed row instead of skipping it
    test_fraction: float = DEFAULT_TEST_FRACTION
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = 0
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        if self.csv is not None:
            object.__setattr__(self, "csv", Path(self.csv))
        if (self.behaviour is None) == (self.csv is None):
            raise UserError("give --behaviour or --behaviour-csv, not both" if self.behaviour
                            else "give --behaviour or --behaviour-csv")


Selection = DataSelection | BehaviourSelection


def pairs_hash(pairs: Sequence[PreferencePair]) -> str:
    """A fingerprint of preference pairs (their texts, in order)."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.prompt, pair.chosen, pair.rejected]).encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Cultural questions
# --------------------------------------------------------------------------------------------


def select_items(selection: DataSelection) -> tuple[list, list, dict[str, Any]]:
    """``(fit_items, validation_items, info)`` of a cultural run; ``info`` goes into the vector's
    metadata: the split rule, seed and fractions, and every question id the run used (fit and
    validation), which ``evaluate`` refuses to score the vector on."""
    countries = data.resolve_countries([selection.country])
    items = data.load_cultural(selection.data, countries=countries)
    fit, validation = data.validation_questions(
        items, test_fraction=selection.test_fraction,
        validation_fraction=selection.validation_fraction, seed=selection.split_seed)
    if selection.max_pairs is not None:
        fit = data.limit_pairs_by_question(fit, selection.max_pairs, setting=selection.setting,
                                           rejected=selection.rejected,
                                           seed=selection.split_seed)
    if not fit:
        raise UserError(f"no training questions for {countries[0]} after the split; lower "
                        "--test-fraction / --validation-fraction")
    used = sorted({item.question_id for item in [*fit, *validation]})
    info = {"country": countries[0], "setting": selection.setting,
            "rejected": selection.rejected, "prompt_style": selection.style,
            "response_format": selection.response_format,
            "dataset_hash": data.dataset_hash(items),
            "split": {"rule": data.SPLIT_RULE, "test_fraction": selection.test_fraction,
                      "validation_fraction": selection.validation_fraction,
                      "seed": selection.split_seed},
            "train_question_ids": used}
    return fit, validation, info


def build_pairs(model: HookedTransformer, items: Sequence, selection: DataSelection, *,
                cache_dir: Path | None = None, progress: bool = True) -> list[PreferencePair]:
    """The preference pairs of ``items`` as ``selection`` formats them (generating and caching
    the model's own answers first when ``rejected="generated"``)."""
    generated = None
    if selection.rejected == "generated":
        prompts = [data.pair_prompt(item, form, style=selection.style,
                                    response_format=selection.response_format,
                                    tokenizer=model.tokenizer)[0]
                   for form in data.setting_forms(selection.setting)
                   for item in items if item.has_form(form)]
        settings = GenerationSettings(model=model.cfg.model_name,
                                      first_line_only=selection.style == "completion")
        generated = generated_rejections(
            model, prompts, settings=settings,
            cache_dir=cache_dir or cache_root() / "onpolicy", progress=progress)
    pairs = data.build_preference_pairs(
        items, setting=selection.setting, rejected=selection.rejected, style=selection.style,
        tokenizer=model.tokenizer, response_format=selection.response_format,
        generated=generated)
    if generated is not None and len(pairs) < len(prompts) and progress:
        print(f"[train] {len(prompts) - len(pairs)} of {len(prompts)} prompts give no pair: the "
              "model's own answer was empty or the chosen one", file=sys.stderr)
    return pairs


# --------------------------------------------------------------------------------------------
# Behaviour sets and CSVs
# --------------------------------------------------------------------------------------------


def behaviour_pairs(path: Path, *, test_fraction: float, seed: int
                    ) -> tuple[list, list, dict[str, Any]]:
    """Training and held-out pairs of a behaviour CSV (split by a seeded permutation)."""
    pairs = list(data.load_behaviour_csv(path))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(pairs) * test_fraction))
    test = [pairs[i] for i in order[:n_test].tolist()]
    train = [pairs[i] for i in order[n_test:].tolist()]
    return train, test, {"behaviour_csv": str(path), "dataset_hash": pairs_hash(pairs),
                         "country": None, "setting": None}


def behaviour_set_pairs(behaviour: Any, *, template: str, tokenizer: Any,
                        validation_fraction: float, seed: int
                        ) -> tuple[list, list, dict[str, Any]]:
    """Fitting and validation pairs of a BiPO behaviour set's ``train.csv`` (``behaviour`` from
    :func:`yapo_interp.data.behaviour.load_behaviour`), formatted with ``template``. The
    validation questions are chosen by a hash of the question text and ``seed``; ``test.csv`` and
    ``test_infer.csv`` are left for ``python -m yapo_interp.behaviour``."""

    def held_out(question: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{question}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction

    fit = [pair for pair in behaviour.train if not held_out(pair.question)]
    validation = [pair for pair in behaviour.train if held_out(pair.question)]
    if not fit:
        raise UserError(f"no training questions left in {behaviour.folder}/train.csv after the "
                        f"validation split; lower --validation-fraction")
    train_pairs = preference_pairs(fit, template=template, tokenizer=tokenizer)
    eval_pairs = preference_pairs(validation, template=template, tokenizer=tokenizer)
    report = behaviour.reports["train"]
    info = {"behaviour": behaviour.name, "behaviour_folder": str(behaviour.folder),
            "behaviour_template": template, "country": None, "setting": None,
            "dataset_hash": pairs_hash(train_pairs + eval_pairs),
            "skipped_rows": report.skipped,
            "split": {"rule": "sha256(seed:question) < validation_fraction",
                      "validation_fraction": validation_fraction, "seed": seed}}
    return train_pairs, eval_pairs, info


# --------------------------------------------------------------------------------------------
# Any selection: read before the model, pairs after
# --------------------------------------------------------------------------------------------


@dataclass
class TrainInputs:
    """What a selection reads before the model is loaded, checked: the cultural fit and
    validation items, the behaviour set, or the CSV's pairs; ``info`` is the vector metadata known
    so far (a behaviour set's comes with its pairs)."""

    info: dict[str, Any] = field(default_factory=dict)
    fit_items: list[CulturalItem] = field(default_factory=list)
    validation_items: list[CulturalItem] = field(default_factory=list)
    behaviour: BehaviourSet | None = None
    pairs: tuple[list[PreferencePair], list[PreferencePair]] | None = None

    @property
    def label(self) -> str:
        """What the run trains for, in a folder name: the country, the behaviour, the CSV."""
        if self.behaviour is not None:
            return self.behaviour.name
        return self.info.get("country") or Path(str(self.info.get("behaviour_csv"))).stem

    @property
    def setting(self) -> str:
        """The prompt setting in a folder name (``bipo-set`` / ``csv`` for behaviour data)."""
        if self.info.get("setting"):
            return self.info["setting"]
        return "bipo-set" if self.behaviour is not None else "csv"


def read_inputs(selection: Selection, *, progress: bool = True) -> TrainInputs:
    """Read and check ``selection``'s data before any model is loaded (a missing or malformed
    file fails now); a behaviour set's report is printed."""
    if isinstance(selection, DataSelection):
        fit, validation, info = select_items(selection)
        return TrainInputs(info=info, fit_items=fit, validation_items=validation)
    if selection.behaviour is not None:
        behaviour = load_behaviour(selection.behaviour, strict=selection.strict,
                                   files=("train",))
        if progress:
            print(f"[train] {behaviour.reports['train'].summary()}", file=sys.stderr)
        return TrainInputs(behaviour=behaviour)
    train, held_out, info = behaviour_pairs(selection.csv, test_fraction=selection.test_fraction,
                                            seed=selection.split_seed)
    return TrainInputs(info=info, pairs=(train[: selection.max_pairs], held_out))


def training_pairs(model: HookedTransformer, selection: Selection, inputs: TrainInputs, *,
                   progress: bool = True) -> tuple[list, list, dict[str, Any]]:
    """``(train_pairs, eval_pairs, info)`` of ``selection`` on ``model``, from ``inputs``
    (:func:`read_inputs`)."""
    if isinstance(selection, DataSelection):
        return (build_pairs(model, inputs.fit_items, selection, progress=progress),
                build_pairs(model, inputs.validation_items, selection, progress=False),
                inputs.info)
    if inputs.behaviour is not None:
        train, held_out, info = behaviour_set_pairs(
            inputs.behaviour, template=selection.template, tokenizer=model.tokenizer,
            validation_fraction=selection.validation_fraction, seed=selection.split_seed)
        return train[: selection.max_pairs], held_out, info
    train, held_out = inputs.pairs
    return train, held_out, inputs.info
