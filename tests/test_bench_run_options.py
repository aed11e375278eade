"""``benchmarks/run.py`` refuses the attack benchmark's options when it would run the other
scripts too (they ignored them: ``--out`` still wrote into benchmarks/results/); the small
benchmark scripts answer ``--help``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import class_choice
import run as bench_run
import threads


@pytest.mark.parametrize("option", [["--out", "x.json"], ["--models", "softmax1"], ["--n", "5"]])
def test_attack_options_need_only_attack(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        bench_run.parse_args(["--quick", *option])
    assert stop.value.code == 2
    assert f"{option[0]} set(s) the attack benchmark only" in capsys.readouterr().err
    assert bench_run.parse_args(["--quick", "--only", "attack", *option]).quick


@pytest.mark.parametrize("script", [class_choice, threads])
def test_small_scripts_answer_help(script: object, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` was an IndexError traceback (``argv[1]``)."""
    with pytest.raises(SystemExit) as stop:
        script.main(["--help"])  # type: ignore[attr-defined]
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out
