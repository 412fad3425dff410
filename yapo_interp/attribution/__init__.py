"""Feature attribution: which SAE features a steering vector uses, and where BiPO and YaPO disagree.

The paper's limitations section (section 7) proposes this analysis: "encoding BiPO's dense steering
vector and computing the difference with YaPO's steering vector, and looking at the features
misalignment". The two vectors live in different spaces:

* BiPO (eq. 1-2) learns ``v ∈ R^{d_model}`` and adds it to the residual stream: ``h' = h + d·λ·v``.
* YaPO (eq. 3-4) learns ``v ∈ R^{d_sae}`` and adds it to the SAE code:
  ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``. Wherever the steered code stays positive,
  the change of the residual stream is exactly ``d·λ·v @ W_dec``: YaPO's ``v`` is a vector of
  *decoder coefficients*, and ``decoded_direction(v, sae) = v @ W_dec`` is its dense direction.

**Attribution by effect (the default, ``--attribution effect``).** Reading a vector's entries is
not reading what it does. Through the ReLU of eq. 3 a negative entry of YaPO's ``v`` acts only on
a feature that is already active, so ``d = +1`` and ``d = −1`` move different features; and a bare
dense vector is out of distribution for an SAE, which decomposes it poorly (Mayne et al. 2024). So
each vector is run on real activations ``h`` (the dataset prompts' tokens at the layer, BOS left
out) and ``effect_codes`` measures, for each direction ``d``:

* the change of the SAE code, ``E_h[Enc(Φ(h)) − Enc(h)]``, with ``Φ`` the vector's intervention
  (eq. 2 for BiPO, eq. 3 for YaPO) — the same quantity for both methods, so they compare directly;
* for YaPO, the gated code ``E_h[ReLU(Enc(h) + d·λ·v) − Enc(h)]``: what eq. 3 writes into the
  code before decoding (zero on a feature that the ReLU keeps off, whatever ``v`` says there);
* the decoded share: per feature, ``(effect_f · W_dec[f]) · Δ / ‖Δ‖²`` with ``Δ = E_h[Φ(h) − h]``,
  and overall the R² of ``Φ(h) − h`` by the decoded code change, on the means (``Δ`` by
  ``effect @ W_dec``) and token by token (``Dec(Enc Φ(h)) − Dec(Enc h)``; this one goes below 0
  when the SAE's reconstruction error moves more than the vector does).

BiPO and YaPO are compared on these effect codes per direction (``compare_codes``: top features,
Jaccard, cosines), and ``r2_by_k`` says how many features it takes to explain the mean shift ``Δ``.

**Static encodings (``--attribution static``).** The earlier reading: YaPO's ``v`` as it is, and
the BiPO vector written as a code in the same SAE basis (``encode_dense``, ``--method``):

``"signed_nnls"`` (default)
    A sparse least-squares fit of the dense vector by decoder rows, ``min_c ‖c @ W_dec − v‖²``,
    solved as non-negative least squares (Lawson–Hanson, the algorithm of ``scipy.optimize.nnls``)
    over the doubled dictionary ``[W_dec; −W_dec]``, so each feature can be pushed up or down. The result is in the
    same units as YaPO's ``v`` (decoder coefficients), is sparse (an active-set NNLS solution has at
    most ``d_model`` non-zeros, and in practice far fewer for a vector made of few features), and,
    like YaPO's ``v``, signed: YaPO learns negative entries to switch features off, and a
    non-negative fit would have to imitate "less of feature g" with unrelated features pointing the
    other way. That is why it is the default.
``"nnls"``
    The same fit restricted to ``c ≥ 0`` (the issue's "non-negative sparse least squares").
``"cosine"``
    ``cos(v, W_dec[f])`` for every feature: projection onto each decoder direction. Cheap and
    model-free, but not a decomposition: in an overcomplete dictionary, features correlated with
    the true ones score high too, and the numbers are not coefficients.
``"encoder"``
    The SAE encoder applied to ``v`` as a direction: the change of the encoder's pre-activations
    when ``v`` is added to any input, ``(x + v − b_dec) W_enc + b_enc − [(x − b_dec) W_enc + b_enc]
    = v W_enc`` (biases cancel). This is exactly how much BiPO's vector moves each feature's
    pre-activation, but it ignores thresholds and is dense.
``"encoder_offset"``
    ``Enc(m + v) − Enc(m)`` with ``m`` the mean activation at the layer over the dataset prompts:
    the change in the *active* code at a typical activation, respecting the encoder's bias,
    ReLU / JumpReLU threshold or top-k (needs ``mean_activation``).

``compare_codes`` then lists the top-k features of each code by absolute weight, their overlap
(Jaccard of the top-k sets, cosine of the full codes, Spearman rank correlation), the features only
one method uses, and the dense cosine between the two decoded directions. Each listed feature is
explained offline by the tokens its decoder direction promotes and suppresses through the
unembedding (logit lens: ``W_dec[f]`` through the final norm's gain, then ``W_U``), by the dataset
prompts and positions that activate it most (``top_activating_examples``), and by a Neuronpedia URL
when the SAE carries a Neuronpedia id (never fetched).

Command line (tables and figures in ``--out``)::

    python -m yapo_interp.attribution --bipo runs/train/bipo-egypt-localized-L9/vector \
        --yapo runs/train/yapo-egypt-localized-L9/vector --preset embedded --k 20

(``vector`` is the last epoch; ``vectors/epoch_NN`` any other.) The SAE is the one named in the
YaPO vector's metadata (else the preset's SAE at the vector's layer); a vector that does not fit
the model or the SAE (width, layer, SAE fingerprint) is refused with the reason. ``--strength``
sets λ of the effect attribution, ``--attribution static --method M`` the static reading.
Written: ``top_features.csv`` (the tabulated direction: weights, ranks, logit lens, top example;
in effect mode also ``yapo_v``, ``yapo_gated`` and the decoded shares), ``effect_features.csv``
(top features per direction and method), ``r2_by_k.csv``, ``top_examples.csv``,
``attribution.json``, the HTML figures and ``features/`` (a page per listed feature,
``yapo_interp.feature_pages``).

The package, by concern: ``config`` (settings: ``AttributionConfig``, ``AttributionRunConfig``),
``encode`` (dense vector -> code, R²(k)), ``compare`` (two codes), ``effect`` (effect codes),
``activations`` (running the model over prompts), ``explain`` (logit lens, top examples,
Neuronpedia links), ``analysis`` (``attribute``), ``tables`` (tables and the printed summary),
``save`` (``write_report``; the figures are drawn by ``yapo_interp.figures``), ``prompts`` and
``inputs`` (data selection, vector and SAE loading), ``stage`` (``run_attribution``) and ``cli``.
"""

from yapo_interp.attribution.activations import mean_activation, token_activations
from yapo_interp.attribution.analysis import AttributionReport, attribute
from yapo_interp.attribution.cli import build_parser, main
from yapo_interp.attribution.compare import CodeComparison, compare_codes, spearman, top_features
from yapo_interp.attribution.config import (ATTRIBUTIONS, DEFAULT_METHOD, ENCODE_METHODS,
                                            NEURONPEDIA_URL, R2_KS, AttributionConfig,
                                            AttributionRunConfig)
from yapo_interp.attribution.effect import EffectCodes, effect_codes
from yapo_interp.attribution.encode import (_nnls_fit, cosine_code, decoded_direction,
                                            encode_dense, fit_quality, nnls_code, r2_by_k)
from yapo_interp.attribution.explain import (ActivatingExample, FeatureLogits,
                                             feature_logit_lens, logit_lens, neuronpedia_id,
                                             neuronpedia_url, top_activating_examples)
from yapo_interp.attribution.inputs import AttributionInputs, load_inputs
from yapo_interp.attribution.prompts import _spread, load_prompts
from yapo_interp.attribution.save import write_report
from yapo_interp.attribution.stage import AttributionResult, run_attribution
from yapo_interp.attribution.tables import (effect_features_table, examples_table, feature_table,
                                            format_overlap, r2_table)
from yapo_interp.figures import (pd_isna, r2_by_k_figure, top_features_table_figure,
                                 top_weights_figure)

__all__ = [
    "ATTRIBUTIONS", "DEFAULT_METHOD", "ENCODE_METHODS", "NEURONPEDIA_URL", "R2_KS",
    "ActivatingExample", "AttributionConfig", "AttributionInputs", "AttributionReport",
    "AttributionResult", "AttributionRunConfig", "CodeComparison", "EffectCodes",
    "FeatureLogits", "attribute", "build_parser", "compare_codes", "cosine_code",
    "decoded_direction", "effect_codes", "effect_features_table", "encode_dense",
    "examples_table", "feature_logit_lens", "feature_table", "fit_quality", "format_overlap",
    "load_inputs", "load_prompts", "logit_lens", "main", "mean_activation", "neuronpedia_id",
    "neuronpedia_url", "nnls_code", "pd_isna", "r2_by_k", "r2_by_k_figure", "r2_table",
    "run_attribution", "spearman", "token_activations", "top_activating_examples",
    "top_features", "top_features_table_figure", "top_weights_figure",
    "write_report",
]
# _nnls_fit and _spread (private) are imported above for the tests, which reach them from here.
