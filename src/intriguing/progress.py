"""Progress bars for long work (rich), quiet when ``INTRIGUING_NO_PROGRESS=1`` or under pytest."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether progress bars are shown: off under pytest or when INTRIGUING_NO_PROGRESS=1."""
    if os.environ.get("INTRIGUING_NO_PROGRESS", "") not in ("", "0"):
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


def make_progress() -> Progress:
    """A rich progress display with a bar, counts, elapsed time and an ETA (on stderr)."""
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=not progress_enabled(),
    )


def track(
    items: Iterable[T], *, total: int | None = None, description: str = "working"
) -> Iterator[T]:
    """Iterate over ``items`` while showing a progress bar with an ETA."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
