"""The final move of each success toward its original along the segment between them (issue 18).

On an affine two-class model the logit lead is linear along the segment, so the nearest success on
it is known in closed form: the oracle here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.attacks.base import RawAttack
from intriguing.attacks.lbfgs import RAY_SPAN, RAY_STEPS
from intriguing.attacks.metrics import AIM_FACTOR, SUCCESS_MARGIN

pytestmark = pytest.mark.usefixtures("one_thread")


def two_class_model() -> nn.Module:
    """``z_0 = 0``, ``z_1 = 0.5 (x_0 - 0.5)``: class 1 wins when ``x_0 > 0.5``; ``|z| < 1``."""
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 0] = 0.5
        model.bias[1] = -0.25
    return nn.Sequential(nn.Flatten(), model).eval()


def raw_for(adversarial: torch.Tensor) -> RawAttack:
    n = adversarial.shape[0]
    return RawAttack(
        adversarial=adversarial.clone(),
        claimed=torch.ones(n, dtype=torch.bool),
        c=torch.ones(n, dtype=torch.float64),
        iterations=torch.zeros(n, dtype=torch.long),
        grad_evals=torch.zeros(n, dtype=torch.long),
        targets=torch.full((n,), -1),
    )


def test_a_success_moves_to_the_nearest_success_on_its_segment() -> None:
    x = torch.tensor([[0.40, 0.2, 0.3, 0.4], [0.45, 0.5, 0.5, 0.5], [0.30, 0.1, 0.1, 0.1]])
    adv = x.clone()
    adv[:, 0] = torch.tensor([0.5014, 0.60, 0.50041])
    adv[2, 1] = 0.2  # a second coordinate moves too: the segment, not one axis
    y = torch.zeros(3, dtype=torch.long)
    raw = raw_for(adv)
    LBFGS(progress=False)._shrink_along_rays(two_class_model(), x, y, raw)
    # the lead 0.5 (x_0 - 0.5) must reach AIM_FACTOR * SUCCESS_MARGIN (|z| < 1): x_0 >= 0.5 + 4e-4
    edge = 0.5 + 2.0 * AIM_FACTOR * SUCCESS_MARGIN
    t_edge = (edge - x[:, 0].double()) / (adv[:, 0] - x[:, 0]).double()
    t = ((raw.adversarial - x)[:, 0] / (adv - x)[:, 0]).double()
    resolution = RAY_SPAN / 2**RAY_STEPS
    # row 0: the edge lies inside the span (t = 0.9967); row 1: below it (t = 0.8), so the point
    # stops at the span's end; row 2: past the edge only by less than the resolution
    assert 1.0 - RAY_SPAN < float(t_edge[0]) < 1.0 and float(t_edge[1]) < 1.0 - RAY_SPAN
    assert float(t_edge[0]) <= float(t[0]) <= float(t_edge[0]) + resolution + 1e-6
    assert float(t[1]) == pytest.approx(1.0 - RAY_SPAN + resolution, abs=1e-6)
    assert torch.equal(raw.adversarial[2], adv[2])  # nothing nearer on the grid: unchanged
    assert bool((raw.adversarial[:, 0] >= edge - 1e-7).all())  # still successes, with the aim
    assert torch.allclose(raw.adversarial[:, 1:] - x[:, 1:], (adv - x)[:, 1:] * t[:, None].float())
    assert torch.equal(raw.grad_evals, torch.full((3,), RAY_STEPS))


def test_failures_and_unperturbed_images_are_left_alone() -> None:
    x = torch.tensor([[0.40, 0.2, 0.3, 0.4], [0.60, 0.5, 0.5, 0.5]])
    adv = torch.tensor([[0.45, 0.2, 0.3, 0.4], [0.60, 0.5, 0.5, 0.5]])  # a failure; a clean success
    raw = raw_for(adv)
    raw.claimed[0] = False
    LBFGS(progress=False)._shrink_along_rays(two_class_model(), x, torch.zeros(2).long(), raw)
    assert torch.equal(raw.adversarial, adv)
    assert int(raw.grad_evals.sum()) == 0


def test_the_attack_never_returns_a_farther_point(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 4)).eval()
    x = torch.rand(12, 16)
    y = model(x).argmax(1)
    for mode in ("untargeted", "targeted"):
        attack = LBFGS(mode=mode, progress=False)
        shrunk = attack(model, x, y)
        monkeypatch.setattr("intriguing.attacks.lbfgs.RAY_STEPS", 0)
        plain = attack(model, x, y)
        monkeypatch.undo()
        assert bool(shrunk.success.all()) and bool(plain.success.all())
        assert bool((shrunk.distortion <= plain.distortion).all())
        assert torch.equal(shrunk.grad_evals, plain.grad_evals + RAY_STEPS)
