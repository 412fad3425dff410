"""What an evaluation runs: its scoring settings (:class:`EvalConfig`) and its conditions, the
unsteered model (:data:`BASELINE`) and the model steered by each vector at each multiplier
(:class:`Condition`), with the labels and table columns that name them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo_interp.data import FORMS, CulturalItem
from yapo_interp.data.countries import DISPLAY_NAMES
from yapo_interp.data.pairs import DEFAULT_OPTION_SEED, SETTINGS
from yapo_interp.errors import UserError
from yapo_interp.metrics import DEFAULT_EPS
from yapo_interp.steering import SteeringVector, steer
from yapo_interp.style import METHOD_LABELS

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

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
    # ("auto": chat for boxed MCQ when the tokenizer has a chat template; see resolved())
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

    def resolved(self, tokenizer: Any) -> EvalConfig:
        """This config with ``style="auto"`` made concrete for ``tokenizer``: ``chat`` when
        ``mode`` is boxed and the tokenizer has a chat template, else ``completion``."""
        if self.style != "auto":
            return self
        has_template = bool(getattr(tokenizer, "chat_template", None))
        return replace(self, style="chat" if (self.mode == "boxed" and has_template)
                       else "completion")


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
        """True for the unsteered model."""
        return not self.vectors

    @property
    def multiplier(self) -> float | None:
        """The multiplier λ when there is one vector, else None."""
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
        with steer(model, list(self.vectors), multipliers=list(self.multipliers),
                   saes=dict(self.saes) if self.saes else None):
            yield model

    def describe(self) -> dict[str, Any]:
        """The columns that name this condition in every results table."""
        return {"condition": self.label, "column": self.column, "method": self.method,
                "multiplier": self.multiplier, "train_setting": self.train_setting,
                "epoch": self.epoch, "vector": self.source}


BASELINE = Condition(label="Baseline")


def method_label(method: str) -> str:
    """A method's name as the tables show it (``yapo`` -> ``YaPO``)."""
    return METHOD_LABELS.get(method, method).replace(" (ours)", "")


def column_name(method: str, multiplier: float) -> str:
    """The table column of a method at a multiplier (``YaPO``, ``YaPO ×2``)."""
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
            tags = [display_country(country) for country in countries]
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


def display_country(country: str) -> str:
    """A country's display name (``usa`` -> ``USA``)."""
    return DISPLAY_NAMES.get(country, country)
