"""Rich consoles that print text as given: user text (a model spec such as ``pm.py:zero``, a path
with ``[brackets]``, a layer name) is never read as rich markup or ``:emoji:`` codes."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def plain_console(**kwargs: Any) -> Console:
    """A :class:`rich.console.Console` (``kwargs`` as there) with markup and emoji codes off, so
    that every string in a table title, cell or caption, a status line or a print appears
    literally. The commands print their tables through it."""
    return Console(markup=False, emoji=False, **kwargs)
