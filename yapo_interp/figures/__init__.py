"""Paper-style figures, regenerated from a run's saved results alone (no model, no recomputation),
and every Plotly figure the stages draw.

``python -m yapo_interp.figures RUN_DIR`` walks ``RUN_DIR`` for the files the other commands write
and draws, into ``figures/`` (or ``--out``), HTML always and PNG/SVG when kaleido can render:

* ``patching_summary.csv`` (``yapo_interp.patching``) -> activation patching curves (paper fig. 3);
* training folders with ``log.jsonl`` + ``run.json`` (``yapo_interp.train``) -> train and eval loss
  of YaPO vs BiPO per country and setting (fig. 2);
* ``stability.csv`` (``yapo_interp.evaluate --stability``) -> accuracy across epochs (fig. 5);
* ``table*.csv`` (``yapo_interp.evaluate``) -> the results tables as Plotly tables (tables 1-5);
* ``top_features.csv`` (``yapo_interp.attribution``) -> top-feature tables and the top-weights bars;
* ``r2_by_k.csv`` (``yapo_interp.attribution``) -> R² of each vector by its top-k SAE features.

The stages draw their figures with the functions here when they run: the patching curves
(``patching_figure``), the attribution's (``top_features_table_figure``, ``top_weights_figure``,
``r2_by_k_figure``, the feature pages' ``histogram_html``), the sweep's (``sweep_figures``) and
the behaviour evaluation's (``behaviour_sweep_figure``, ``effect_cost_figure``).

Every figure uses the shared template and the fixed method colours of ``yapo_interp.style``.
The package's modules, by what they draw: ``training`` (loss curves, accuracy across epochs,
results tables), ``patching``, ``attribution``, ``sweep``, ``behaviour``; ``regenerate`` (a run's
figures from its files) and ``cli`` (the flags and ``main``).
"""

from yapo_interp.figures.attribution import (histogram_html, pd_isna, r2_by_k_figure,
                                             top_features_table_figure, top_weights_figure)
from yapo_interp.figures.behaviour import behaviour_sweep_figure, effect_cost_figure
from yapo_interp.figures.cli import build_parser, main
from yapo_interp.figures.patching import patching_figure
from yapo_interp.figures.regenerate import regenerate
from yapo_interp.figures.sweep import (at_selection, loss_curves_figure, lr_sensitivity_figure,
                                       seed_scores_figure, selected_multiplier,
                                       selection_groups, sweep_figures)
from yapo_interp.figures.training import (TABLE_TITLES, TrainingRun, accuracy_epochs_figure,
                                          find_training_runs, loss_figure, table_figure)

__all__ = [
    "TABLE_TITLES", "TrainingRun", "accuracy_epochs_figure", "at_selection",
    "behaviour_sweep_figure", "build_parser", "effect_cost_figure", "find_training_runs",
    "histogram_html", "loss_curves_figure", "loss_figure", "lr_sensitivity_figure", "main",
    "patching_figure", "pd_isna", "r2_by_k_figure", "regenerate", "seed_scores_figure",
    "selected_multiplier", "selection_groups", "sweep_figures", "table_figure",
    "top_features_table_figure", "top_weights_figure",
]
