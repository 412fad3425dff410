"""Figures that open offline (plotly.js beside or inside the page) and fonts for Arabic/Devanagari."""

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from yapo_interp import style
from yapo_interp.errors import UserError

ARABIC, DEVANAGARI = "مصر أم الدنيا", "नेपाल हिमालयको देश"


def _figure() -> go.Figure:
    return go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))


def _script_sources(html: str) -> list[str]:
    return re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)


def test_embedded_html_contains_the_plotlyjs_source_and_no_cdn(tmp_path):
    page = style.write_html(_figure(), tmp_path / "bars", plotlyjs="embed")
    html = page.read_text(encoding="utf-8")
    assert page.name == "bars.html"
    assert get_plotlyjs() in html
    assert _script_sources(html) == []  # nothing loaded from elsewhere
    assert "cdn." not in html.replace(get_plotlyjs(), "")
    assert not (tmp_path / style.PLOTLY_JS).exists()


def test_directory_html_loads_one_shared_plotlyjs_beside_the_pages(tmp_path):
    first = style.write_html(_figure(), tmp_path / "one.html")
    second = style.write_html(_figure(), tmp_path / "two.html")
    for page in (first, second):
        html = page.read_text(encoding="utf-8")
        assert _script_sources(html) == [style.PLOTLY_JS]  # relative: the folder can move
        assert "cdn." not in html
        assert len(html) < 100_000  # the library is not copied into every page
    library = tmp_path / style.PLOTLY_JS
    assert library.read_text(encoding="utf-8") == get_plotlyjs()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one.html", style.PLOTLY_JS,
                                                                "two.html"]


def test_a_damaged_plotlyjs_beside_the_figures_is_rewritten(tmp_path):
    (tmp_path / style.PLOTLY_JS).write_text("truncated")
    style.write_html(_figure(), tmp_path / "fig")
    assert (tmp_path / style.PLOTLY_JS).read_text(encoding="utf-8") == get_plotlyjs()


def test_save_figure_writes_offline_html_by_default(tmp_path):
    written = style.save_figure(_figure(), tmp_path / "sub" / "fig", image_formats=())
    assert written == [tmp_path / "sub" / "fig.html"]
    assert _script_sources(written[0].read_text(encoding="utf-8")) == [style.PLOTLY_JS]
    assert (tmp_path / "sub" / style.PLOTLY_JS).is_file()


def test_images_are_rendered_at_the_size_the_layout_asks_for(tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr(go.Figure, "write_image", lambda self, path, **options: sizes.append(
        (options["width"], options["height"])) or Path(path).write_bytes(b"png"))
    tall = _figure().update_layout(width=1100, height=1420)  # a row per group
    style.save_figure(tall, tmp_path / "tall", image_formats=("png",))
    style.save_figure(_figure(), tmp_path / "plain", image_formats=("png",))
    style.save_figure(tall, tmp_path / "asked", image_formats=("png",), width=800, height=600)
    assert sizes == [(1100, 1420), (1000, 560), (800, 600)]


def test_write_html_rejects_an_unknown_mode(tmp_path):
    with pytest.raises(UserError, match="directory, embed"):
        style.write_html(_figure(), tmp_path / "fig", plotlyjs="cdn")


def test_a_table_with_arabic_and_devanagari_names_fonts_that_cover_them(tmp_path):
    table = go.Figure(go.Table(header=dict(values=["country", "text"]),
                               cells=dict(values=[["Egypt", "Nepal"], [ARABIC, DEVANAGARI]])))
    page = style.write_html(table.update_layout(template="yapo"), tmp_path / "table")
    html = page.read_text(encoding="utf-8")
    for text in (ARABIC, DEVANAGARI):  # in the figure's JSON, as \\u escapes
        assert json.dumps(text) in html
    families = [name.strip() for name in style.FONT_FAMILY.split(",")]
    # Latin first, then a family with Arabic glyphs and one with Devanagari glyphs (both from the
    # Debian package fonts-noto-core), and a generic fallback last.
    assert families[:2] == ["Helvetica", "Arial"] and families[-1] == "sans-serif"
    assert any("Arabic" in name for name in families)
    assert "Noto Sans Devanagari" in families
    assert style.PNG_FONT_PACKAGE == "fonts-noto-core"
    assert table.layout.template.layout.font.family == style.FONT_FAMILY
    assert style.FONT_FAMILY in html  # the browser (and kaleido's Chrome) gets the same list
