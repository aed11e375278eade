"""The report's document model: a page is a list of blocks, written out as Markdown or HTML.

:mod:`intriguing.report.render` builds the blocks; :func:`intriguing.report.render.to_markdown` and
:func:`intriguing.report.html.to_html` write them. Both writers import this module and neither
imports the other's builder, so the two stay free of an import cycle.
"""

from __future__ import annotations

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
