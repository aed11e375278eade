"""The benchmark's budget view (issue 18): passes counted by the model wrapper, not the attack.

``benchmarks/budget.py``'s ``BudgetTracker`` must count exactly the model passes an attack makes,
per example, whatever order the attack evaluates its rows in, and the best distortion within a
budget must be a success seen within that many passes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from budget import BudgetTracker

pytestmark = pytest.mark.usefixtures("one_thread")


def test_passes_match_the_attacks_own_count() -> None:
    """Our attack's gradient evaluations (incl. the K-pass class estimate) + 2 plain predictions,
    + 1 for the first image and 2 for the last: the base class's checks run the first alone once
    and the last alone twice (the second time to refuse a random forward)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6)).eval()
    # far-apart originals (disjoint blocks of 9 bright pixels): rows are attributed unambiguously
    x = 0.1 * torch.rand(7, 64)
    for i in range(7):
        x[i, 9 * i : 9 * i + 9] = 0.9
    x = x.view(7, 1, 8, 8)
    y = model(x).argmax(1)
    tracker = BudgetTracker(model, x, y)
    result = LBFGS(progress=False)(tracker, x, y)
    assert tracker.unattributed == 0
    probe = torch.zeros(7, dtype=torch.long)
    probe[0], probe[-1] = 1, 2
    assert torch.equal(tracker.passes, result.grad_evals + 2 + probe)
    final = tracker.curve((10_000,))[0]
    assert final["success_rate"] == 1.0
    # the best tracked success is at most what the attack returned (it returned a tracked point)
    best = torch.tensor(final["best"], dtype=torch.float64)
    assert bool((best <= result.distortion.double() * (1 + 1e-6)).all())


def test_curve_counts_passes_per_example_and_in_order() -> None:
    """A hand-made 'attack': example 0 is fooled at its 3rd pass, example 1 never."""
    model = nn.Linear(6, 2, bias=False).eval()
    with torch.no_grad():  # class 0 reads pixel 0, class 1 pixel 1
        model.weight.copy_(torch.eye(2, 6))
    originals = torch.tensor([[0.9, 0.1, 0, 0, 0, 0], [0, 0.2, 1, 1, 1, 1]])
    labels = torch.tensor([0, 1])
    tracker = BudgetTracker(model, originals, labels)
    with torch.no_grad():
        tracker(originals)  # pass 1 for both
        tracker(originals + torch.tensor([0, 0.05, 0, 0, 0, 0]))  # pass 2: still correct
        tracker(torch.tensor([[0.45, 0.55, 0, 0, 0, 0]]))  # example 0's pass 3: fooled
    assert tracker.passes.tolist() == [3, 2]
    curve = {row["budget"]: row for row in tracker.curve((2, 3))}
    assert curve[2]["success_rate"] == 0.0 and curve[2]["mean_distortion"] is None
    assert curve[3]["success_rate"] == 0.5
    expected = math.sqrt(2 * 0.45**2 / 6)  # RMS over the 6 pixels
    assert curve[3]["mean_distortion"] == pytest.approx(expected, rel=1e-6)


def test_extra_backward_passes_are_counted() -> None:
    """A Jacobian by K backward passes through one forward costs K passes."""
    model = nn.Linear(3, 4).eval()
    x = torch.rand(2, 3)
    tracker = BudgetTracker(model, x, model(x).argmax(1))
    xi = x.clone().requires_grad_(True)
    z = tracker(xi)
    for k in range(4):
        torch.autograd.grad(z[:, k].sum(), xi, retain_graph=k < 3)
    assert tracker.passes.tolist() == [4, 4]
