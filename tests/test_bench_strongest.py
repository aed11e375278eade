"""``benchmarks/bench_strongest.py``'s budget rule, counted at full precision (issue 18).

A session counted the budget view's points by eye from the four-digit table and got 21 of 25 where
the JSON gives 19; the rendered table now ends with the count. The figures below are worked out by
hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_strongest
from bench_strongest import OURS, budget_losses


def curve(*points: tuple[int, float | None, float]) -> dict[str, Any]:
    return {
        "curve": [{"budget": b, "mean_distortion": d, "success_rate": s} for b, d, s in points],
        "passes_mean": 50.0,
    }


BUDGET = {
    "mlp": {
        OURS: curve((25, 0.0300, 1.0), (50, 0.0290, 1.0)),
        # lower at 25 by 1e-6 (a four-digit table shows a tie), higher at 50
        "DDN": curve((25, 0.029999, 1.0), (50, 0.0295, 1.0)),
        # lower still at 25, but fools fewer: not counted
        "FAB": curve((25, 0.0200, 0.9), (50, 0.0200, 0.9)),
    },
    "cnn": {
        OURS: curve((25, 0.0600, 0.9), (50, 0.0500, 1.0)),
        "ALMA": curve((25, None, 0.0), (50, 0.0499, 1.0)),  # fools none at 25
    },
}


def test_budget_losses_by_hand() -> None:
    points, losses = budget_losses(BUDGET)
    assert points == 4
    assert losses == [("mlp", 25, "DDN", 0.0300, 0.029999), ("cnn", 50, "ALMA", 0.0500, 0.0499)]


def test_the_rendered_budget_view_ends_with_the_count() -> None:
    lines = bench_strongest._budget_verdict(BUDGET)
    assert lines[0].endswith("ours holds at 2 of 4 points.")
    assert lines[1] == "- lost: mlp at 25 passes, ours 0.030000 against DDN 0.029999"
    assert bench_strongest._budget_verdict({}) == []
