"""Offline feature pages: one HTML page per SAE feature that a steering vector uses.

Attribution (``yapo_interp.attribution``) names the features a BiPO or YaPO vector moves; a
reader then needs to see what each feature *is*. A page here shows, for one feature of the SAE at
the steered layer:

* the dataset contexts where it fires most, each token shaded by the feature's activation there
  (hover for the value), the strongest token framed;
* a histogram of its non-zero activations over all prompt tokens, and how often it fires;
* the tokens its decoder direction promotes and suppresses through the unembedding (logit lens,
  ``attribution.feature_logit_lens``);
* the vectors' weights on it, and its Neuronpedia link when the SAE has a Neuronpedia id (the
  link only: nothing is fetched).

Pages are plain HTML with the histogram drawn by the plotly.js written once beside them
(``style.write_plotlyjs``), so a folder of pages opens offline.

Why not ``sae-dashboard`` (PyPI), which draws richer pages of this kind: its release 0.8.0 pins
``transformer-lens<3``, ``transformers<4.57``, ``jaxtyping<0.3`` and ``safetensors<0.5``, below the
versions this toolkit runs on (TransformerLens 3 for Gemma 3), so installing it would downgrade
the stack; installed without its dependencies it does run on the tiny test model, but its pages
load plotly and d3 from CDNs and stay blank offline, and it folds the decoder norms into the SAE it
is given (mutating it). The statistics here come from the same single pass over the prompts as
the rest of the attribution.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yapo_interp.errors import UserError
from yapo_interp.figures.attribution import histogram_html
from yapo_interp.io import write_text
from yapo_interp.style import FONT_FAMILY, PLOTLY_JS, write_plotlyjs

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from yapo_interp.attribution.explain import FeatureLogits


@dataclass(frozen=True)
class FeatureContext:
    """A window of one prompt around the position where a feature fires most in it."""

    prompt_index: int
    position: int  # token position of the maximum in the prompt (BOS is 0)
    tokens: list[str]  # the window's tokens
    activations: list[float]  # the feature's activation at each of them
    peak: int  # index of the maximum within the window

    @property
    def activation(self) -> float:
        """The feature's activation at its strongest token of the window."""
        return self.activations[self.peak]


@dataclass(frozen=True)
class FeatureStats:
    """What one feature does on the prompts: how often and how strongly it fires, and where."""

    feature: int
    n_tokens: int  # tokens seen (BOS excluded unless asked)
    activations: list[float]  # its non-zero activations, in token order
    contexts: list[FeatureContext]  # strongest first, one per prompt

    @property
    def firing_rate(self) -> float:
        """Share of the tokens seen on which the feature fires (NaN when none were seen)."""
        return len(self.activations) / self.n_tokens if self.n_tokens else float("nan")


def feature_statistics(
    model: HookedTransformer,
    sae: SAE,
    layer: int,
    prompts: Sequence[str],
    features: Sequence[int],
    *,
    n_contexts: int = 8,
    before: int = 12,
    after: int = 4,
    batch_size: int = 8,
    max_tokens: int = 256,
    skip_bos: bool = True,
) -> dict[int, FeatureStats]:
    """``FeatureStats`` of each feature over the prompts, in one pass of the model to ``layer``.

    A prompt's context is centred on the feature's maximum in it, ``before`` tokens before and
    ``after`` after; the ``n_contexts`` prompts with the largest maxima are kept (only those where
    the feature fires).
    """
    # local: yapo_interp.attribution imports this module at its top (a cycle through its __init__)
    from yapo_interp.attribution.activations import _layer_activations, _token_strings, _tokenize

    features = list(dict.fromkeys(int(f) for f in features))
    if any(not 0 <= f < sae.cfg.d_sae for f in features):
        raise UserError(f"Feature indices must lie in 0..{sae.cfg.d_sae - 1} (got {features}).")
    if not features or not prompts:
        return {}
    index = torch.tensor(features, dtype=torch.long)
    first = 1 if skip_bos else 0
    token_lists = _tokenize(model, prompts, max_tokens)
    values: list[list[torch.Tensor]] = [[] for _ in features]
    per_prompt: list[torch.Tensor] = []  # [length, n_features] activations of each prompt
    n_tokens = 0
    for _, resid, lengths in _layer_activations(model, layer, token_lists, batch_size,
                                                "feature pages"):
        with torch.no_grad():
            acts = sae.encode(resid.to(sae.W_dec.device, sae.W_dec.dtype))
        acts = acts[..., index.to(acts.device)].float().cpu()
        for row, length in enumerate(lengths):
            prompt_acts = acts[row, :length].clone()
            prompt_acts[:first] = 0.0
            per_prompt.append(prompt_acts)
            n_tokens += max(length - first, 0)
            for column in range(len(features)):
                column_values = prompt_acts[first:, column]
                values[column].append(column_values[column_values != 0])
    result = {}
    for column, feature in enumerate(features):
        maxima = torch.tensor([float(prompt[:, column].max()) if len(prompt) else 0.0
                               for prompt in per_prompt])
        contexts = []
        for prompt_index in maxima.argsort(descending=True)[:n_contexts].tolist():
            prompt_acts = per_prompt[prompt_index][:, column]
            if not float(prompt_acts.max()) > 0:
                break
            position = int(prompt_acts.argmax())
            start, stop = max(first, position - before), min(len(prompt_acts), position + after + 1)
            strings = _token_strings(model, token_lists[prompt_index][start:stop].tolist())
            contexts.append(FeatureContext(prompt_index, position, strings,
                                           prompt_acts[start:stop].tolist(), position - start))
        result[feature] = FeatureStats(feature, n_tokens, torch.cat(values[column]).tolist(),
                                       contexts)
    return result


# --------------------------------------------------------------------------------------------
# Pages (pure: statistics in, HTML text out)
# --------------------------------------------------------------------------------------------


def _token_html(token: str, activation: float, scale: float, peak: bool) -> str:
    shown = html.escape(token.replace("\n", "↵"))
    alpha = min(max(activation / scale, 0.0), 1.0) if scale > 0 else 0.0
    frame = ' class="peak"' if peak else ""
    return (f'<span{frame} style="background: rgba(214, 39, 40, {alpha:.3f})" '
            f'title="{activation:.3g}">{shown}</span>')


def context_html(context: FeatureContext, scale: float) -> str:
    """One context as HTML: each token shaded by ``activation / scale`` (red), the peak framed."""
    return "".join(_token_html(token, value, scale, index == context.peak)
                   for index, (token, value) in enumerate(zip(context.tokens,
                                                              context.activations)))


def feature_page_html(
    stats: FeatureStats,
    *,
    logits: FeatureLogits | None = None,
    weights: Mapping[str, float] | None = None,
    neuronpedia: str | None = None,
    title: str = "",
    plotlyjs: str = "plotly.min.js",
) -> str:
    """The page of one feature (module docstring); ``plotlyjs`` is the script's relative path."""
    feature = stats.feature
    scale = max((context.activation for context in stats.contexts), default=0.0)
    rate = stats.firing_rate
    facts = [f"fires on {len(stats.activations)} of {stats.n_tokens} tokens"
             + (f" ({rate:.2%})" if not math.isnan(rate) else "")]
    if stats.activations:
        facts.append(f"max activation {max(stats.activations):.3g}, mean when firing "
                     f"{sum(stats.activations) / len(stats.activations):.3g}")
    for name, value in (weights or {}).items():
        facts.append(f"{html.escape(name)}: {value:+.4g}")
    if neuronpedia:
        facts.append(f'<a href="{html.escape(neuronpedia)}">Neuronpedia page</a> (online)')
    rows = "".join(
        f"<tr><td>{context.activation:.3g}</td><td>#{context.prompt_index}, token "
        f"{context.position}</td><td class=\"context\">{context_html(context, scale)}</td></tr>"
        for context in stats.contexts) or '<tr><td colspan="3">never fires on these prompts</td></tr>'
    lens = ""
    if logits is not None:
        def cells(pairs):
            return "".join(f"<tr><td class=\"context\">{html.escape(repr(token)[1:-1])}</td>"
                           f"<td>{value:+.3g}</td></tr>" for token, value in pairs)

        lens = ("<h2>Logit lens of its decoder direction</h2><div class=\"lens\">"
                f"<table><tr><th>promotes</th><th></th></tr>{cells(logits.promoted)}</table>"
                f"<table><tr><th>suppresses</th><th></th></tr>{cells(logits.suppressed)}</table>"
                "</div>")
    heading = html.escape(title or f"Feature {feature}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>
<script src="{html.escape(plotlyjs)}"></script>
<style>
body {{ font-family: {FONT_FAMILY}; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
.context {{ font-family: monospace, {FONT_FAMILY}; white-space: pre-wrap; }}
.peak {{ outline: 2px solid #222; }}
.lens {{ display: flex; gap: 32px; }}
</style></head><body>
<p><a href="index.html">all features</a></p>
<h1>{heading}</h1>
<p>{" · ".join(facts)}</p>
<h2>Top activating contexts</h2>
<table><tr><th>activation</th><th>prompt</th><th>context (shade: activation, framed: peak)</th></tr>
{rows}</table>
<h2>Activation histogram</h2>
{histogram_html(stats) if stats.activations else "<p>no non-zero activation</p>"}
{lens}
</body></html>
"""


def index_html(rows: Sequence[tuple[int, str, str]], title: str) -> str:
    """A list of feature pages: (feature, link, one-line description) per row."""
    items = "".join(f'<li><a href="{html.escape(link)}">feature {feature}</a> — '
                    f"{html.escape(text)}</li>" for feature, link, text in rows)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<ul>{items}</ul></body></html>\n")


def page_name(feature: int) -> str:
    """The file name of feature ``feature``'s page."""
    return f"feature_{int(feature)}.html"


def write_feature_pages(
    stats: Mapping[int, FeatureStats],
    out_dir: str | Path,
    *,
    logits: Mapping[int, FeatureLogits] | None = None,
    weights: Mapping[int, Mapping[str, float]] | None = None,
    links: Mapping[int, str] | None = None,
    title: str = "SAE features",
) -> list[Path]:
    """Write one page per feature, ``index.html`` and ``plotly.min.js`` into ``out_dir``;
    ``links`` are the features' Neuronpedia URLs (``attribution.neuronpedia_url``), if any."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_plotlyjs(out_dir)]
    rows = []
    for feature, feature_stats in stats.items():
        page = write_text(out_dir / page_name(feature), feature_page_html(
            feature_stats, logits=(logits or {}).get(feature),
            weights=(weights or {}).get(feature),
            neuronpedia=(links or {}).get(feature) or None,
            title=f"{title}: feature {feature}", plotlyjs=PLOTLY_JS))
        written.append(page)
        lens = (logits or {}).get(feature)
        described = ", ".join(f"{name} {value:+.3g}"
                              for name, value in ((weights or {}).get(feature) or {}).items())
        if lens is not None:
            described += " · promotes " + " ".join(repr(t)[1:-1] for t, _ in lens.promoted[:5])
        rows.append((feature, page.name, described))
    written.append(write_text(out_dir / "index.html", index_html(rows, title)))
    return written
