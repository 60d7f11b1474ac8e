"""The report's page: sections of HTML blocks and notes, plotly figures as ``div``s, and the
one HTML file around them (plotly.js inline once, the style sheet ``style.css`` inline)."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

log = logging.getLogger("automl")
TEMPLATE = "plotly_white"


@dataclass
class Section:
    """A part of the report: a heading, HTML blocks (figures, tables) and notes."""

    id: str
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def attempt(self, what: str, build: Callable[[], None]) -> None:
        """Run one part of the section; a failure becomes a note, never a failed report."""
        try:
            build()
        except Exception as exc:  # one plot must not sink the report
            log.debug("report: %s failed", what, exc_info=True)
            self.notes.append(f"Could not draw {what}: {type(exc).__name__}: {first_line(exc)}")


class FigureWriter:
    """Turns plotly figures into HTML ``div``s sharing the one inline copy of plotly.js."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: Any, height: int | None = None) -> str:
        self.count += 1
        fig.update_layout(template=TEMPLATE, margin={"t": 60, "l": 60, "r": 30, "b": 50})
        if height:
            fig.update_layout(height=height)
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{self.count}",
                           config={"displaylogo": False, "responsive": True})


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def esc(value: Any) -> str:
    """``value`` as text, escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 6) -> str:
    """A table cell's text: floats to ``digits`` significant digits, None and NaN empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def note(text: str) -> str:
    """A highlighted note paragraph."""
    return f'<p class="note">{esc(text)}</p>'


def render_html(title: str, subtitle: str, sections: list[Section], footer: str) -> str:
    """The page: plotly.js and the style sheet inline in the head, then the sections."""
    from plotly.offline import get_plotlyjs

    css = files(__package__).joinpath("style.css").read_text(encoding="utf-8")
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        intro = f"<p>{esc(s.intro)}</p>" if s.intro else ""
        notes = "".join(note(n) for n in s.notes)
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{intro}{notes}'
                     f'{"".join(s.blocks)}</section>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{css}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
            f'<main>{"".join(parts)}</main><footer>{esc(footer)}</footer></body></html>\n')
