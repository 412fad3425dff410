"""The activation patching figure (paper figure 3) of :mod:`yapo_interp.patching`'s summary."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from yapo_interp.data.countries import DISPLAY_NAMES
from yapo_interp.style import ANSWER_COLORS


def patching_figure(summary: pd.DataFrame, chosen_layer: int | None = None,
                    title: str | None = None) -> go.Figure:
    """One panel per country: P(country answer) and P(Western answer) across patched layers,
    with 95% bands, the clean and localized levels as dotted lines, and the chosen layer marked."""
    countries = list(dict.fromkeys(summary.country))
    fig = make_subplots(rows=1, cols=len(countries), shared_yaxes=True,
                        subplot_titles=[DISPLAY_NAMES.get(c, c) for c in countries])
    for column, country in enumerate(countries, start=1):
        rows = summary[summary.country == country].sort_values("layer")
        for kind, label in (("country", f"{DISPLAY_NAMES.get(country, country)} answer"),
                            ("western", "Western answer")):
            color = ANSWER_COLORS[kind]
            name = label if kind == "western" else "country-specific answer"
            fig.add_trace(go.Scatter(
                x=list(rows.layer) + list(rows.layer[::-1]),
                y=list(rows[f"p_{kind}_high"]) + list(rows[f"p_{kind}_low"][::-1]),
                fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0),
                hoverinfo="skip", showlegend=False), row=1, col=column)
            fig.add_trace(go.Scatter(
                x=rows.layer, y=rows[f"p_{kind}"], mode="lines+markers", name=name,
                line=dict(color=color, width=2.5), legendgroup=kind, showlegend=column == 1,
                hovertemplate=f"layer %{{x}}<br>{label}: %{{y:.3f}}<extra></extra>"),
                row=1, col=column)
            for level, dash, level_name in (("clean", "dot", "non-localized, unpatched"),
                                            ("localized", "dash", "localized prompt")):
                value = rows[f"p_{kind}_{level}"].iloc[0]
                fig.add_trace(go.Scatter(
                    x=[rows.layer.min(), rows.layer.max()], y=[value, value], mode="lines",
                    line=dict(color=color, dash=dash, width=1.2),
                    name=f"{level_name} ({'country' if kind == 'country' else 'Western'})",
                    legendgroup=f"{kind}-{level}", showlegend=column == 1,
                    hovertemplate=f"{level_name}: {value:.3f}<extra></extra>"), row=1, col=column)
        if chosen_layer is not None:
            fig.add_vline(x=chosen_layer, line=dict(color="#444", dash="dash", width=1),
                          row=1, col=column)
            fig.add_annotation(x=chosen_layer, y=1.0, yref="y domain", text=f"layer {chosen_layer}",
                               showarrow=False, yshift=10, row=1, col=column)
        fig.update_xaxes(title_text="patched layer", dtick=2, row=1, col=column)
    fig.update_yaxes(title_text="probability among the options", rangemode="tozero", row=1, col=1)
    site = summary.site.iloc[0]
    fig.update_layout(
        template="yapo", height=560, width=max(520, 460 * len(countries)),
        title=title or f"Activation patching ({site}, last token): localized into non-localized",
        legend=dict(orientation="h", y=-0.3, yanchor="top", x=0, xanchor="left"),
        margin=dict(b=170))
    return fig
