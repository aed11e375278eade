"""``benchmarks/per_example_gap.py``: its per-example figures worked out by hand, and bad arguments
refused with one line and exit code 2 before any model is loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import per_example_gap
from intriguing.attacks import AttackResult


def _result(distortion: list[float], predicted: list[int]) -> AttackResult:
    n = len(distortion)
    zeros = torch.zeros(n)
    return AttackResult(
        adversarial=torch.zeros(n, 1, 2, 2),
        success=torch.ones(n, dtype=torch.bool),
        distortion=torch.tensor(distortion),
        l2=2 * torch.tensor(distortion),
        c=zeros.double(),
        iterations=zeros.long(),
        grad_evals=torch.tensor([10, 30] + [20] * (n - 2)),
        labels=zeros.long(),
        predicted=torch.tensor(predicted),
        targets=torch.full((n,), -1),
        mode="untargeted",
    )


def test_figures_by_hand() -> None:
    """Four 2x2 images at 0; ALMA moves one pixel of each by 2 * RMS (RMS = |r| / 2)."""
    images = torch.zeros(4, 1, 2, 2)
    alma_rms = torch.tensor([0.10, 0.20, 0.30, 0.40])
    alma = torch.zeros(4, 1, 2, 2)
    alma[:, 0, 0, 0] = 2 * alma_rms
    ours = _result([0.10, 0.25, 0.30, 0.50], predicted=[1, 1, 2, 3])
    f = per_example_gap.compare(ours, images, alma, alma_class=torch.tensor([1, 2, 2, 3]))
    # ratios ALMA/ours: 1.0, 0.8, 1.0, 0.8; same class at 0, 2 and 3 (ratios 1.0, 1.0, 0.8)
    assert f["median_alma_over_ours"] == pytest.approx(0.9)
    assert f["median_alma_over_ours_same_class"] == pytest.approx(1.0)
    assert f["same_class"] == 3 and f["alma_closer_by_1pct"] == 2
    assert f["mean_distortion"] == pytest.approx(0.2875)
    assert f["alma_mean_distortion"] == pytest.approx(0.25)
    assert f["grad_evals_per_example"] == pytest.approx(20.0)  # 10, 30, 20, 20


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["Conv", "--n", "0"], "--n"),
        (["Conv", "--settings", "[1]"], "--settings"),
        (["Conv", "--settings", '{"ftol": -1}'], "ftol"),
        (["Conv", "--settings", '{"no_such": 1}'], "no_such"),
        (["Conv", "--json", "/no/such/folder/out.json"], "--json"),
        (["Conv", "--json", "/tmp"], "--json"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        per_example_gap.main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and names in err
