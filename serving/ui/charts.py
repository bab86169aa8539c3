"""Plots as SVG, drawn on the server by pygal: nothing for the browser to download, nothing from the internet.

Each plot is a pure function of its data, so the rendering is memoised: a page shown again with the same
numbers costs a dictionary lookup, not a redraw (pygal takes tens of milliseconds per plot).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pygal
from markupsafe import Markup
from pygal.style import Style

STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#9aa5b1",
    colors=("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"),
    font_family="system-ui, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
)


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...] = ()
    points: tuple[tuple[float, float], ...] = ()  # for XY plots


def _config(title: str, *, x_title: str, y_title: str) -> dict[str, object]:
    return {
        "title": title,
        "x_title": x_title,
        "y_title": y_title,
        "style": STYLE,
        "width": 720,
        "height": 300,
        "explicit_size": True,
        "js": [],  # no tooltip script from the internet; values are in the tables beside each plot
        "disable_xml_declaration": True,
        "legend_at_bottom": True,
        "no_data_text": "no data yet",
        "print_values": False,
        "truncate_legend": 30,
    }


@lru_cache(maxsize=128)
def bars(title: str, *, x_title: str, y_title: str, labels: tuple[str, ...], series: tuple[Series, ...]) -> Markup:
    chart = pygal.Bar(**_config(title, x_title=x_title, y_title=y_title), x_label_rotation=30 if len(labels) > 8 else 0)
    chart.x_labels = list(labels)
    for one in series:
        chart.add(one.name, list(one.values))
    return Markup(chart.render(is_unicode=True))


@lru_cache(maxsize=128)
def stacked_bars(
    title: str, *, x_title: str, y_title: str, labels: tuple[str, ...], series: tuple[Series, ...]
) -> Markup:
    chart = pygal.StackedBar(**_config(title, x_title=x_title, y_title=y_title), range=(0, 100))
    chart.x_labels = list(labels)
    for one in series:
        chart.add(one.name, list(one.values))
    return Markup(chart.render(is_unicode=True))


@lru_cache(maxsize=128)
def lines(title: str, *, x_title: str, y_title: str, labels: tuple[str, ...], series: tuple[Series, ...]) -> Markup:
    chart = pygal.Line(**_config(title, x_title=x_title, y_title=y_title), range=(0, 1), dots_size=4)
    chart.x_labels = list(labels)
    for one in series:
        chart.add(one.name, list(one.values))
    return Markup(chart.render(is_unicode=True))


@lru_cache(maxsize=128)
def curves(title: str, *, x_title: str, y_title: str, series: tuple[Series, ...]) -> Markup:
    chart = pygal.XY(**_config(title, x_title=x_title, y_title=y_title), dots_size=2, show_x_guides=False)
    for one in series:
        chart.add(one.name, list(one.points))
    return Markup(chart.render(is_unicode=True))
