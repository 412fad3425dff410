"""The grid of a sweep: :class:`TrialSpec` (everything one trial depends on) and
:class:`SweepGrid` (methods × countries × settings × learning rates × seeds), and the names the
other modules share (mean-difference methods, evaluation settings, selection metrics, the
marker files of a trial)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, SETTINGS
from yapo_interp.errors import UserError
from yapo_interp.steering import METHODS

MEAN_METHODS = ("caa", "sas")  # no learning rate, no seed: one trial per (country, setting)
BASELINE_METHOD = "baseline"  # the unsteered model: one trial per country, nothing trained
BASELINE_SETTING = "both"  # a baseline trial's setting: it trains on none, it is scored on both
RESULT = "result.json"
ERROR = "error.txt"
EVAL_SETTINGS = SETTINGS  # the training settings a sweep can span (yapo_interp.data)
SELECT_METRICS = ("margin", "p_correct", "accuracy")
SCORED_ONLY = ("multipliers",)  # fields that say what a trained vector is scored at, not how
# it is trained: left out of a trial's name, so a rerun with more λ scores the finished vector


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial depends on; the hash of its training fields names the trial
    folder (λ, ``multipliers``, is scored on the trained vector, not trained)."""

    method: str
    country: str
    setting: str
    lr: float | None
    seed: int
    epochs: int = 20
    batch_size: int = 4
    warmup_steps: int = 100
    beta: float = 0.1
    eval_every: int = 0
    max_pairs: int | None = None
    rejected: str | None = None  # None: the preset's
    multipliers: tuple[float, ...] = (1.0,)
    max_eval_items: int | None = None  # per split and country
    test_fraction: float = DEFAULT_TEST_FRACTION
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    split_seed: int = 0
    data: str | None = None

    def training(self) -> dict[str, Any]:
        """Every field but the :data:`SCORED_ONLY` ones, as JSON values: what the trained
        vector depends on."""
        values = json.loads(json.dumps(asdict(self)))
        return {key: value for key, value in values.items() if key not in SCORED_ONLY}

    @property
    def name(self) -> str:
        """``method-country-setting[-lrLR]-sSEED-HASH``: the trial's folder name (the hash of
        every training field, so a changed setting never reuses a finished vector, and a wider
        λ grid reuses it)."""
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        digest = hashlib.sha256(json.dumps(self.training(), sort_keys=True).encode()).hexdigest()
        return f"{self.method}-{self.country}-{self.setting}{lr}-s{self.seed}-{digest[:8]}"


@dataclass(frozen=True)
class SweepGrid:
    """Methods × countries × settings × learning rates × seeds; λ (``multipliers``) is swept at
    evaluation, so every trial scores its vector at each λ without retraining. The remaining
    fields are shared by all trials."""

    methods: tuple[str, ...] = ("bipo", "yapo", "sae-dense")
    countries: tuple[str, ...] = ("egypt",)
    settings: tuple[str, ...] = ("localized",)
    lrs: tuple[float, ...] = (0.5,)
    seeds: tuple[int, ...] = (0, 1, 2)
    shared: dict[str, Any] = field(default_factory=dict)  # TrialSpec fields
    baseline: bool = True  # one unsteered trial per country (multiplier 0), for tables 1 and 3

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r}; use {', '.join(METHODS)}")
        for name in ("methods", "countries", "settings", "lrs", "seeds"):
            if not getattr(self, name):
                raise UserError(f"the grid needs at least one of {name}")
        if any(lr <= 0 for lr in self.lrs):
            raise UserError(f"learning rates must be positive, got {list(self.lrs)}")
        bad = [setting for setting in self.settings if setting not in EVAL_SETTINGS]
        if bad:
            raise UserError(f"unknown setting {bad[0]!r}; use {', '.join(EVAL_SETTINGS)}")

    def trials(self) -> list[TrialSpec]:
        """Every trial of the grid, in a fixed order that keeps a partial sweep balanced: the
        baselines and mean-difference methods first (cheap; once per country, and setting),
        then seed by seed, learning rate by learning rate, every method — so a sweep stopped
        part-way has whole (seed, lr) slices of all methods, not all of one method."""
        trials = []
        if self.baseline:
            trials += [TrialSpec(BASELINE_METHOD, country, BASELINE_SETTING, None, 0, **self.shared)
                       for country in self.countries]
        trials += [TrialSpec(method, country, setting, None, 0, **self.shared)
                   for method in self.methods if method in MEAN_METHODS
                   for country in self.countries for setting in self.settings]
        trials += [TrialSpec(method, country, setting, float(lr), int(seed), **self.shared)
                   for seed in self.seeds for lr in self.lrs for method in self.methods
                   if method not in MEAN_METHODS
                   for country in self.countries for setting in self.settings]
        return trials
