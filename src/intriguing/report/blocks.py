"""The report's document model: a page is a list of blocks, written out as Markdown or HTML.

:mod:`intriguing.report.render` builds the blocks; :func:`intriguing.report.markdown.to_markdown` and
:func:`intriguing.report.html.to_html` write them. Both writers import this module and neither
imports the other's builder, so the two stay free of an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and whether it differs notably from the paper."""

    text: str
    flagged: bool = False


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the page title (HTML ``<h1>``)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph of text; Markdown ``code`` spans are kept."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of cells: ``rows`` each as long as ``header``."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure; ``path`` is relative to the run directory."""

    path: str
    caption: str


@dataclass(frozen=True)
class Alert:
    """A warning shown in a box (e.g. "these numbers are not the paper's dataset")."""

    text: str


Block = Heading | Para | Table | Figure | Alert


def md_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    escape: Callable[[str], str] = md_cell,
) -> list[str]:
    """A GitHub-flavoured Markdown table (header, ``---`` rule, one line per row), cells escaped.

    The one Markdown table writer of the reports (``report/critics.py``, ``report/classes.py``,
    ``report/render.py``, which passes its own ``escape``); every row must have as many cells as
    ``header``.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells, the header {len(header)}")
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return lines


def pct(value: float | None) -> str:
    """A share in [0, 1] as a percentage with one decimal, or more where one would round a share
    below 1 up to 100.0% or a share above 0 down to 0.0% (1 failure in 56054: 99.998%)."""
    if value is None:
        return "-"
    for digits in range(1, 10):
        text = f"{100 * value:.{digits}f}"
        if not (value < 1 and float(text) >= 100) and not (value > 0 and float(text) <= 0):
            break
    return f"{text}%"
