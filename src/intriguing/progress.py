"""Terminal output: one rich console on stderr for progress bars and log lines together.

- :func:`console`: the console every bar and log line goes through, so a log line printed while a
  bar is live lands above the bar, never glued onto it;
- :func:`make_progress` / :func:`track`: bars with counts, elapsed time and an ETA; a finished bar
  says why it stopped (:func:`finish`: "converged at 107/500"; "done"; "stopped at 3/10");
- :func:`log`: one log line on stderr;
- :func:`percent`: the one way a fraction is printed as a percentage.

Bars are shown only when stderr is a terminal, not under pytest and not with
``INTRIGUING_NO_PROGRESS=1``; log lines are always printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")
STATUS = "status"  # the task field a finished bar shows instead of its ETA

_CONSOLE: list[Console] = []


def console() -> Console:
    """The one console on stderr (it writes to whatever ``sys.stderr`` is at the time)."""
    if not _CONSOLE:
        _CONSOLE.append(Console(stderr=True, highlight=False))
    return _CONSOLE[0]


def progress_enabled() -> bool:
    """Whether bars are shown: stderr is a terminal, not under pytest, no INTRIGUING_NO_PROGRESS."""
    if os.environ.get("INTRIGUING_NO_PROGRESS", "") not in ("", "0"):
        return False
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    return console().is_terminal


def log(line: str) -> None:
    """Print one log line on stderr (above any live bar); no markup, no highlighting."""
    console().print(line, markup=False, highlight=False, soft_wrap=True)


def percent(fraction: float | None) -> str:
    """``fraction`` (0.0746) as a percentage: ``"7.46%"`` (two decimals); ``"-"`` for None."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


class _EtaOrStatus(ProgressColumn):
    """``eta 0:00:12`` while a task runs; its status ("done", "converged at 107/500") once set."""

    def __init__(self) -> None:
        super().__init__()
        self._eta = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        status = task.fields.get(STATUS)
        if status:
            return Text(str(status), style="green")
        return Text.assemble("eta ", self._eta.render(task))


class Bars(Progress):
    """A rich :class:`~rich.progress.Progress` whose tasks say why they stopped when it closes.

    A task left without a status by :func:`finish` gets ``"done"`` when complete, else
    ``"stopped at N/M"`` (an interrupted or early-ending loop), so no finished bar shows an ETA.
    """

    def stop(self) -> None:
        for task in self.tasks:
            if not task.fields.get(STATUS):
                task.fields[STATUS] = _default_status(task)
        self.refresh()
        super().stop()


def _default_status(task: Task) -> str:
    if task.total is None or task.completed >= task.total:
        return "done"
    return f"stopped at {task.completed:.0f}/{task.total:.0f}"


def make_progress(*, enabled: bool | None = None) -> Bars:
    """Bars with a label, a bar, ``N/M``, elapsed time and an ETA (or the status), on :func:`console`.

    ``enabled``: None shows them when :func:`progress_enabled`; False never.
    """
    show = progress_enabled() if enabled is None else enabled and progress_enabled()
    return Bars(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _EtaOrStatus(),
        console=console(),
        disable=not show,
    )


def finish(bar: Progress, task: TaskID, status: str) -> None:
    """Say why ``task`` stopped (shown instead of its ETA), e.g. ``"converged at 107/500"``."""
    bar.update(task, status=status)


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
