"""``benchmarks/attack_identity.py`` refuses bad reference files and unwritable outputs with one
line and exit code 2, before running any attack."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import attack_identity


@pytest.fixture(autouse=True)
def no_attacks(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(data_dir: str | None) -> None:
        raise AssertionError("the attacks ran before the input was checked")

    monkeypatch.setattr(attack_identity, "run_all", forbidden)


def exit_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        attack_identity.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_missing_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = exit_line(["compare", str(tmp_path / "none.pt")], capsys)
    assert "does not exist" in err and "save" in err


def test_corrupt_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    assert "not a file written by 'save'" in exit_line(["compare", str(bad)], capsys)


def test_reference_of_another_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.pt"
    torch.save([{"adversarial": torch.zeros(1)}], short)
    assert "does not hold this script's 10 runs" in exit_line(["compare", str(short)], capsys)


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "is a directory" in exit_line(["save", str(tmp_path)], capsys)
    missing = tmp_path / "no" / "such" / "ref.pt"
    assert "cannot write" in exit_line(["save", str(missing)], capsys)
