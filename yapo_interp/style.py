"""One look for every figure: a Plotly template, fixed colours per method and per answer kind, and
``save_figure`` which writes HTML always and PNG/SVG when kaleido (and a Chrome) is available.

Every HTML figure works offline (``write_html``): by default the figures of a folder share one
``plotly.min.js`` written beside them and loaded by a relative ``<script src>``; with
``plotlyjs="embed"`` each file carries the whole plotly.js source (about 4.8 MB) and can be sent on
its own. Nothing is loaded from a CDN, so the figures open on a machine without internet.

The template's font list names Noto families for Arabic and Devanagari after the Latin ones, so
the PNG tables show Egyptian, Moroccan and Nepali text instead of empty boxes when the Debian font
package ``fonts-noto-core`` is installed (``apt-get install chromium fonts-noto-core`` beside
``pip install kaleido``); browsers use the same list for the HTML figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from yapo_interp.errors import UserError
from yapo_interp.io import atomic_path

METHOD_COLORS = {
    "baseline": "#7f7f7f",
    "bipo": "#1f77b4",
    "yapo": "#d62728",
    "caa": "#2ca02c",
    "sas": "#9467bd",
    "sae-dense": "#ff7f0e",
}
METHOD_LABELS = {"baseline": "Baseline", "bipo": "BiPO", "yapo": "YaPO (ours)", "caa": "CAA",
                 "sas": "SAS", "sae-dense": "SAE-dense"}
ANSWER_COLORS = {"country": "#d62728", "western": "#1f77b4"}

PNG_FONT_PACKAGE = "fonts-noto-core"  # Debian package with the Arabic and Devanagari Noto fonts
# Latin text keeps Helvetica / Arial; a glyph those lack (Arabic, Devanagari) falls through the
# list to the first family that has it.
FONT_FAMILY = ("Helvetica, Arial, Noto Sans, Noto Sans Arabic, Noto Naskh Arabic, "
               "Noto Sans Devanagari, sans-serif")
PLOTLY_JS = "plotly.min.js"  # written once beside the HTML figures of a folder
PLOTLYJS_MODES = ("directory", "embed")

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.font = dict(family=FONT_FAMILY, size=13)
TEMPLATE.layout.title = dict(x=0.02, xanchor="left", font=dict(size=16))
TEMPLATE.layout.legend = dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right", x=1)
TEMPLATE.layout.margin = dict(l=70, r=30, t=110, b=60)
pio.templates["yapo"] = TEMPLATE

_warned_no_images = False


def method_color(method: str) -> str:
    """The fixed colour of a method (dark grey for one without)."""
    return METHOD_COLORS.get(method.lower(), "#333333")


def write_plotlyjs(folder: str | Path) -> Path:
    """Write the plotly.js source bundled with the plotly package to ``folder/plotly.min.js``
    (unless that file already holds exactly it); return its path."""
    from plotly.offline import get_plotlyjs

    target = Path(folder) / PLOTLY_JS
    source = get_plotlyjs().encode("utf-8")
    if not (target.is_file() and target.stat().st_size == len(source)
            and target.read_bytes() == source):
        with atomic_path(target) as temporary:
            temporary.write_bytes(source)
    return target


def write_html(fig: go.Figure, path: str | Path, *, plotlyjs: str = "directory") -> Path:
    """Write ``fig`` as a full HTML page at ``path`` (suffix .html) that opens offline.

    ``plotlyjs="directory"`` writes ``plotly.min.js`` once beside the page and loads it by a
    relative path (keep the two together when copying); ``"embed"`` puts the plotly.js source in
    the page itself. Returns the page's path.
    """
    if plotlyjs not in PLOTLYJS_MODES:
        raise UserError(f"plotlyjs must be one of {', '.join(PLOTLYJS_MODES)} (got {plotlyjs!r}).")
    target = Path(path).with_suffix(".html")
    include: str | bool = True
    if plotlyjs == "directory":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_plotlyjs(target.parent)
        include = PLOTLY_JS
    html = fig.to_html(include_plotlyjs=include, full_html=True)
    with atomic_path(target) as temporary:
        temporary.write_text(html, encoding="utf-8")
    return target


def save_figure(fig: go.Figure, path: str | Path, *, image_formats: tuple[str, ...] = ("png",),
                width: int | None = None, height: int | None = None,
                plotlyjs: str = "directory") -> list[Path]:
    """Write ``fig`` to ``path`` with suffix .html (offline, see ``write_html``), plus each image
    format kaleido can render, at ``width`` × ``height`` (default: the size the figure's layout
    asks for, else 1000 × 560 — a figure with a row per group is as tall as its rows).

    Returns the files written. Without kaleido or a Chrome, says once how to get images.
    """
    global _warned_no_images
    fig.update_layout(template="yapo")
    width = width or fig.layout.width or 1000
    height = height or fig.layout.height or 560
    stem = Path(path).with_suffix("")
    written = [write_html(fig, stem.with_suffix(".html"), plotlyjs=plotlyjs)]
    for image_format in image_formats:
        target = stem.with_suffix(f".{image_format}")
        try:
            with atomic_path(target) as temporary:
                fig.write_image(str(temporary), format=image_format, width=width, height=height,
                                scale=2 if image_format == "png" else 1)
            written.append(target)
        except Exception as error:  # kaleido missing, or no Chrome for kaleido 1.x
            if not _warned_no_images:
                print(f"[yapo_interp] wrote HTML only ({type(error).__name__}). For PNG/SVG: "
                      "pip install kaleido and apt-get install chromium "
                      f"{PNG_FONT_PACKAGE}.", file=sys.stderr)
                _warned_no_images = True
            break
    return written
