"""A whole patching run: its config (with its command line), resumable scoring of every
pair, and the files it writes."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.argv import flag, switch
from yapo_interp.cli import model_name
from yapo_interp.data import resolve_countries
from yapo_interp.errors import UserError
from yapo_interp.figures import patching_figure
from yapo_interp.io import append_jsonl, read_json, read_jsonl, run_info, write_json, write_table
from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, split_items
from yapo_interp.models import check_layer
from yapo_interp.style import save_figure
from yapo_interp.patching.analysis import (choose_layer, localization_gain, patching_pairs,
                                           score_pairs, summarise)



# --------------------------------------------------------------------------------------------
# From dataset items to a tidy table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchingConfig:
    """Settings of a patching run (saved with its results)."""

    countries: tuple[str, ...] = ("egypt", "morocco")
    layers: tuple[int, ...] | None = None  # None: every layer
    site: str = "resid_post"
    pairs_per_country: int = 12
    batch_pairs: int = 4
    prompt_style: str = "completion"
    score: str = "mean"  # option score: mean (length-normalised) or sum of token log-probs
    dataset: str | None = None  # None: the shipped cultural set
    seed: int = 0
    model: str = "embedded"
    share_prompts: bool = True  # each prompt's unpatched prefix runs once (same numbers, faster)
    # choosing the layer is tuning: only training questions of this split are patched
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PatchingConfig:
        """The config of a parsed command line (``build_parser().parse_args(argv)``): the
        countries resolved, the model ``--model`` or the preset's."""
        return cls(countries=tuple(resolve_countries(args.countries)),
                   layers=tuple(args.layers) if args.layers else None, site=args.site,
                   pairs_per_country=args.pairs, batch_pairs=args.batch_pairs, score=args.score,
                   dataset=args.dataset, seed=args.seed, model=model_name(args),
                   share_prompts=args.share_prompts, test_fraction=args.test_fraction,
                   split_seed=args.split_seed)

    def to_argv(self) -> list[str]:
        """The arguments (without ``--out`` and ``--device``) that give this config back through
        ``from_args``; a ``UserError`` for a ``prompt_style`` other than completion, which no
        flag sets."""
        if self.prompt_style != "completion":
            raise UserError(f"no command line gives prompt_style={self.prompt_style!r} (python -m "
                            "yapo_interp.patching uses completion prompts)")
        return ["--countries", *self.countries, *flag("--layers", self.layers), "--site",
                self.site, "--pairs", str(self.pairs_per_country), "--batch-pairs",
                str(self.batch_pairs), "--score", self.score, *flag("--dataset", self.dataset),
                "--seed", str(self.seed), "--model", self.model,
                *switch("--no-shared-prompts", not self.share_prompts),
                "--test-fraction", str(self.test_fraction), "--split-seed", str(self.split_seed)]



# --------------------------------------------------------------------------------------------
# Whole run (resumable) and CLI
# --------------------------------------------------------------------------------------------


@dataclass
class PatchingResult:
    table: pd.DataFrame
    summary: pd.DataFrame
    chosen_layer: int
    files: dict[str, Path] = field(default_factory=dict)


def run_patching(model, items, config: PatchingConfig, out_dir: Path | None = None,
                 progress: bool = True) -> PatchingResult:
    """Patch ``config.pairs_per_country`` pairs per country at every layer; save as it goes.

    With ``out_dir``, finished batches are appended to ``partial.jsonl`` so that an interrupted run
    started again with the same settings continues where it stopped.
    """
    layers = list(config.layers) if config.layers is not None else list(range(model.cfg.n_layers))
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise UserError(f"layers lists {', '.join(map(str, repeated))} more than once; give "
                        "each layer once (duplicates would be patched twice).")
    for layer in layers:
        check_layer(model, layer)
    training, _ = split_items(items, test_fraction=config.test_fraction, seed=config.split_seed)
    pairs = patching_pairs(training, config.countries, config.pairs_per_country, config.seed,
                           config.prompt_style, model.tokenizer)
    records: list[dict] = []
    partial = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        partial = out_dir / "partial.jsonl"
        settings_path = out_dir / "partial_settings.json"
        settings = asdict(config) | {"layers": layers}
        if partial.exists() and settings_path.exists() and read_json(settings_path) == \
                json_roundtrip(settings):
            records = read_jsonl(partial)
        else:
            partial.unlink(missing_ok=True)
            write_json(settings_path, settings)
    done = {(r["country"], r["pair_id"]) for r in records}
    todo = [pair for pair in pairs if (pair.country, pair.pair_id) not in done]
    batches = [todo[i: i + config.batch_pairs] for i in range(0, len(todo), config.batch_pairs)]
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="patching pairs",
              unit="pair", disable=not progress) as bar:
        for batch in batches:
            new = score_pairs(model, batch, layers, config.site, config.score,
                              config.share_prompts)
            records += new
            if partial is not None:
                for record in new:
                    append_jsonl(partial, record)
            bar.update(len(batch))
    table = pd.DataFrame(records).sort_values(["country", "pair_id", "layer"], ignore_index=True)
    summary = summarise(table)
    chosen = choose_layer(summary)
    result = PatchingResult(table, summary, chosen)
    if out_dir is not None:
        result.files = save_patching(result, config, layers, out_dir)
        partial.unlink(missing_ok=True)
    return result


def json_roundtrip(value):
    """``value`` through JSON and back: plain lists, dicts, numbers and strings."""
    import json

    return json.loads(json.dumps(value))


def save_patching(result: PatchingResult, config: PatchingConfig, layers: list[int],
                  out_dir: Path) -> dict[str, Path]:
    """Write the patching table (CSV and parquet), its summary, ``chosen_layer.json`` (the rule,
    the effect per layer, the nearest shipped SAE layer, run info) and the figure into ``out_dir``."""
    files = {
        "table": write_table(out_dir / "patching.csv", result.table),
        "table_parquet": write_table(out_dir / "patching.parquet", result.table),
        "summary": write_table(out_dir / "patching_summary.csv", result.summary),
    }
    effect = result.summary.groupby("layer")["effect"].mean()
    shipped = models.shipped_sae_layers() if config.model == "embedded" else []
    nearest = min(shipped, key=lambda layer: (abs(layer - result.chosen_layer), layer)) \
        if shipped else None
    files["chosen_layer"] = write_json(out_dir / "chosen_layer.json", {
        "chosen_layer": result.chosen_layer,
        "rule": "argmax over layers of the mean (over countries and pairs) of "
                "(p_country - p_western) patched minus the same in the clean non-localized run",
        "effect_by_layer": {int(layer): float(value) for layer, value in effect.items()},
        **({"effect_first_by_layer": {
            int(layer): float(value)
            for layer, value in result.summary.groupby("layer")["effect_first"].mean().items()}}
           if "effect_first" in result.summary else {}),
        "nearest_shipped_sae_layer": nearest,
        "localization_gain": localization_gain(result.summary),
        **run_info(asdict(config) | {"layers": layers}),
    })
    figure_paths = save_figure(patching_figure(result.summary, result.chosen_layer),
                               out_dir / "patching_curves", width=460 * len(config.countries) + 100,
                               height=560)
    files["figure"] = figure_paths[0]
    return files
