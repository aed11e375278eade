"""Terminal output (src/intriguing/progress.py): one console, finished bars say why, one way to print %."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from intriguing import progress


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Route the shared console to a fake 100-column terminal and allow bars (as outside pytest)."""
    out = io.StringIO()
    fake = Console(file=out, force_terminal=True, width=100, highlight=False, color_system=None)
    monkeypatch.setattr(progress, "_CONSOLE", [fake])
    return out


def _as_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside pytest, no INTRIGUING_NO_PROGRESS (pytest sets its variable again for each call)."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("INTRIGUING_NO_PROGRESS", raising=False)


def _final_lines(raw: str) -> list[str]:
    """The lines a terminal shows at the end: each line's text after its last carriage return."""
    plain = raw.replace("\x1b[2K", "").replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    return [line.rsplit("\r", 1)[-1].rstrip() for line in plain.split("\n") if line.strip()]


def test_a_log_line_never_lands_on_a_live_bar(
    terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_a_user(monkeypatch)
    with progress.make_progress() as bar:
        task = bar.add_task("training", total=10)
        bar.advance(task, 4)
        bar.refresh()
        progress.log("iteration 4: loss 0.5")
        bar.advance(task, 6)
    lines = _final_lines(terminal.getvalue())
    assert "iteration 4: loss 0.5" in lines  # a line of its own, not glued after a bar
    assert lines[-1].startswith("training") and lines[-1].endswith("10/10 0:00:00 done")


def test_a_bar_that_converged_says_so_instead_of_an_eta(
    terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_a_user(monkeypatch)
    with progress.make_progress() as bar:
        task = bar.add_task("softmax1 (L-BFGS)", total=500)
        bar.update(task, completed=107)
        progress.finish(bar, task, "converged at 107/500")
    last = _final_lines(terminal.getvalue())[-1]
    assert last.endswith("107/500 0:00:00 converged at 107/500")
    assert "eta" not in last


def test_a_bar_left_early_says_where_it_stopped(
    terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_a_user(monkeypatch)
    with progress.make_progress() as bar:
        task = bar.add_task("steps", total=10)
        bar.advance(task, 3)
    assert _final_lines(terminal.getvalue())[-1].endswith("stopped at 3/10")


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress, "_CONSOLE", [Console(file=out, force_terminal=False)])
    _as_a_user(monkeypatch)
    assert not progress.progress_enabled()
    assert list(progress.track(range(3), description="piped")) == [0, 1, 2]
    progress.log("a log line still goes out")
    assert out.getvalue() == "a log line still goes out\n"


def test_bars_off_under_pytest_and_on_request(
    terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_a_user(monkeypatch)
    assert progress.progress_enabled()
    assert not progress.make_progress(enabled=False).live.is_started
    monkeypatch.setenv("INTRIGUING_NO_PROGRESS", "1")
    assert not progress.progress_enabled()
    monkeypatch.delenv("INTRIGUING_NO_PROGRESS")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "x")
    assert not progress.progress_enabled()


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0.0746, "7.46%"),
        (0.0018, "0.18%"),
        (1.0, "100.00%"),
        (0.037147479510167614, "3.71%"),
        (None, "-"),
    ],
)
def test_percent_is_one_format(fraction: float | None, text: str) -> None:
    assert progress.percent(fraction) == text
