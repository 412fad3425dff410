"""One look for every figure: a Plotly template, fixed colours per method and per answer kind, and
``save_figure`` which writes HTML always and PNG/SVG when kaleido (and a Chrome) is available."""

from __future__ import annotations

import sys
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from yapo_interp.io import atomic_path

METHOD_COLORS = {
    "baseline": "#7f7f7f",
    "bipo": "#1f77b4",
    "yapo": "#d62728",
    "caa": "#2ca02c",
    "sas": "#9467bd",
}
METHOD_LABELS = {"baseline": "Baseline", "bipo": "BiPO", "yapo": "YaPO (ours)", "caa": "CAA",
                 "sas": "SAS"}
ANSWER_COLORS = {"country": "#d62728", "western": "#1f77b4"}

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.font = dict(family="Helvetica, Arial, sans-serif", size=13)
TEMPLATE.layout.title = dict(x=0.02, xanchor="left", font=dict(size=16))
TEMPLATE.layout.legend = dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right", x=1)
TEMPLATE.layout.margin = dict(l=70, r=30, t=110, b=60)
pio.templates["yapo"] = TEMPLATE

_warned_no_images = False


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method.lower(), "#333333")


def save_figure(fig: go.Figure, path: str | Path, *, image_formats: tuple[str, ...] = ("png",),
                width: int = 1000, height: int = 560) -> list[Path]:
    """Write ``fig`` to ``path`` with suffix .html, plus each image format kaleido can render.

    Returns the files written. Without kaleido or a Chrome, says once how to get images.
    """
    global _warned_no_images
    fig.update_layout(template="yapo")
    stem = Path(path).with_suffix("")
    written = []
    with atomic_path(stem.with_suffix(".html")) as temporary:
        fig.write_html(str(temporary), include_plotlyjs="cdn", full_html=True)
    written.append(stem.with_suffix(".html"))
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
                      "pip install kaleido and apt-get install chromium.", file=sys.stderr)
                _warned_no_images = True
            break
    return written
