"""The console script prints the package's own warnings on one line (found by a robustness probe:
the zero-gradient ``AttackWarning`` printed Python's two-line form with a source line)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from intriguing.attacks.checks import AttackWarning
from intriguing.cli.main import one_line_warnings


def test_package_warnings_are_one_line_and_others_go_to_the_previous_hook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    passed_on: list[Any] = []
    monkeypatch.setattr(warnings, "showwarning", lambda *args, **kw: passed_on.append(args))
    one_line_warnings()
    hook = warnings.showwarning
    hook(AttackWarning("3 example(s) have a zero gradient\nsecond line"), AttackWarning, "f.py", 1)
    hook(UserWarning("someone else's"), UserWarning, "g.py", 2)
    err = capsys.readouterr().err
    assert err == "Warning: 3 example(s) have a zero gradient\n"
    assert len(passed_on) == 1 and passed_on[0][1] is UserWarning
