"""``benchmarks/fused_step.py``: the torch step forced and restored, its table worked out by hand,
and bad arguments refused with one line and exit code 2 before any model is loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fused_step
from intriguing.attacks import BoxLBFGS


def test_torch_step_is_forced_inside_and_restored_after_an_error() -> None:
    assert BoxLBFGS(2, 3).fused
    with pytest.raises(RuntimeError), fused_step.torch_step():
        assert not BoxLBFGS(2, 3).fused
        raise RuntimeError("inside")
    assert BoxLBFGS(2, 3).fused


def test_table_rows() -> None:
    side = {"mean_distortion": 0.021, "success_rate": 1.0, "grad_evals_per_example": 34.25}
    report = {
        "models": {
            "softmax1": {
                "n": 500,
                "examples_per_s": {"fused": [1800.4, 1500.6], "torch": [900.0, 850.0]},
                "median_speed_ratio": 1.9,
                "fused": side,
                "torch": {**side, "mean_distortion": 0.0210004},
            }
        }
    }
    assert fused_step.table(report).splitlines()[2] == (
        "| softmax1 | 500 | 1800, 1501 | 900, 850 | 1.90 | 0.02100 / 0.02100 | 34.2 / 34.2 |"
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["softmax1", "--n", "0"], "--n"),
        (["softmax1", "--rounds", "0"], "--rounds"),
        ([","], "model"),
        (["softmax1", "--json", "/no/such/folder/out.json"], "--json"),
        (["softmax1", "--json", "/tmp"], "--json"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        fused_step.main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and names in err


def test_unknown_model_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        fused_step.main(["no-such-model", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no-such-model" in err
