"""Untargeted candidates start their c-search at a constant estimated at the clean image (issue 18).

``c_init=None`` (the default) starts each untargeted candidate (a targeted cross-entropy problem
toward a class of the class estimate) at ``ESTIMATE_SCALE * ||grad(z_t - z_y)||^2 / (2 T gap)``;
targeted mode and the other losses keep the fixed ``FIXED_C_INIT``. On an affine model the gradient
and the gap are known in closed form: the oracle here. ``c_init=<number>`` keeps the fixed start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, AttackResult, LBFGSConfig
from intriguing.attacks.lbfgs import (
    ESTIMATE_SCALE,
    FIXED_C_INIT,
    RAY_STEPS,
    estimated_constants,
    linear_geometry,
)
from intriguing.attacks.metrics import AIM_FACTOR, SUCCESS_MARGIN
from intriguing.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def affine(seed: int, dim: int = 16, classes: int = 5) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def test_estimated_constants_by_hand() -> None:
    gap = torch.tensor([2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    norm = torch.tensor([3.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    c0 = estimated_constants(gap, norm, temperature=0.1)
    # 0.04 * 9 / (2 * 0.1 * 2) = 0.9;  0.04 * 1 / (2 * 0.1 * 0.5) = 0.4
    assert ESTIMATE_SCALE == 0.04
    assert c0[0].item() == pytest.approx(0.9, rel=1e-12)
    assert c0[1].item() == pytest.approx(0.4, rel=1e-12)
    assert c0[2].item() == 1e8 and c0[3].item() == 1e-8  # clamped, never 0 or inf
    nan = estimated_constants(torch.tensor([math.nan]).double(), torch.tensor([1.0]).double(), 0.1)
    assert nan.item() == FIXED_C_INIT  # a NaN estimate (NaN logits): the fixed start


def ray_passes(result: AttackResult) -> int:
    """The forward passes of the final move toward the originals (LBFGS._shrink_along_rays)."""
    return RAY_STEPS * int((result.success & (result.distortion > 0)).sum())


def test_untargeted_candidates_start_at_their_estimates_without_extra_passes(
    backward_counter: Callable[[nn.Module], Any],
) -> None:
    model = affine(3, dim=32, classes=8)
    x = torch.rand(10, 32)
    y = model(x).argmax(1)
    counter = backward_counter(model)
    res = LBFGS(progress=False)(counter, x, y)
    assert bool(res.success.all())
    # the class estimate's passes, no more (besides the forward passes of the final move)
    assert int(res.grad_evals.sum()) == counter.rows + ray_passes(res)


@pytest.mark.parametrize("c_init", [5, 5.0])
def test_fixed_start_is_still_available(c_init: float) -> None:
    assert LBFGSConfig(c_init=c_init).c_init == 5.0
    model = affine(4)
    x = torch.rand(6, 16)
    y = model(x).argmax(1)
    res = LBFGS(c_init=c_init, progress=False)(model, x, y)
    assert bool(res.success.all()) and res.settings["c_init"] == 5.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, "5", 1e300, 1e31, 1e-31])
def test_bad_c_init_is_one_clear_error(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="c_init"):
        LBFGSConfig(c_init=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("edge", [1e-30, 1e30])
def test_c_init_at_the_ends_of_its_range_is_accepted(edge: float) -> None:
    assert LBFGSConfig(c_init=edge).c_init == edge


class _TiedTarget(nn.Module):
    """Linear; classes 0 and 1 share their row, 0 wins every tie: class 1 can never be reached."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(784, 10)
        with torch.no_grad():
            self.lin.weight.mul_(5.0)
            self.lin.weight[1] = self.lin.weight[0]
            self.lin.bias[1] = self.lin.bias[0]
            self.lin.bias[:2] += 10.0  # classes 0 and 1 win on every image
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.lin(x.flatten(1))


def test_an_unreachable_target_fails_cleanly_without_nonsense_trial_points(mnist_dir: Path) -> None:
    """The search divides c down to ~1e-21 on a target it cannot reach, where the curvature memory
    gave NaN directions: the model was sent all-NaN images and then blamed for NaN gradients."""
    import warnings

    from intriguing.data import load_mnist

    model = _TiedTarget().eval()
    x = load_mnist(data_dir=mnist_dir).test_images[:5].clone()
    assert bool((model(x).argmax(1) == 0).all())
    model.inputs.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = LBFGS(mode="targeted", progress=False)(
            model, x, torch.zeros(5, dtype=torch.long), targets=torch.ones(5, dtype=torch.long)
        )
    assert not any("NaN" in str(w.message) for w in seen), [str(w.message) for w in seen]
    assert not bool(res.success.any())
    assert all(bool(torch.isfinite(inp).all()) for inp in model.inputs)
    assert float(res.c.min()) >= 1e-30


def test_linear_geometry_is_exact_on_an_affine_model() -> None:
    model = affine(0)
    x = torch.rand(6, 16)
    y = model(x).argmax(1)
    gap, norm = linear_geometry(model, x, y)
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    z = x.double() @ w.T + b
    for i in range(6):
        for k in range(5):
            expected = max(float(z[i, y[i]] - z[i, k]), 0.0)
            assert gap[i, k].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
            if k != int(y[i]):
                assert norm[i, k].item() == pytest.approx(float((w[y[i]] - w[k]).norm()), rel=1e-5)


def candidate_constants(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The nearest class's estimated constant per image, from the closed-form geometry."""
    gap, norm = linear_geometry(model, x, y)
    rows = torch.arange(len(y))
    distance = gap / norm
    distance[rows, y] = math.inf
    nearest = distance.argmin(1)
    aim = AIM_FACTOR * SUCCESS_MARGIN * model(x).detach().abs().amax(1).clamp(min=1.0).double()
    return estimated_constants(gap[rows, nearest] + aim, norm[rows, nearest], temperature=0.1)


def steep_batch(
    seed: int, n: int, dim: int, steepness: float, spread: float
) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """A 6-class affine model with weights scaled by ``steepness`` and ``n`` images near 0.5 (box
    faces far from the nearest boundaries) with their predicted labels."""
    model = affine(seed, dim=dim, classes=6)
    with torch.no_grad():
        model[1].weight.mul_(steepness)
    x = torch.full((n, dim), 0.5) + spread * torch.rand(n, dim)
    return model, x, model(x).argmax(1)


def test_a_one_stage_search_runs_at_the_estimate() -> None:
    """search_steps=1, one candidate: the returned constant is the stage's, the estimate itself."""
    model, x, y = steep_batch(2, n=10, dim=32, steepness=10.0, spread=0.1)
    res = LBFGS(candidates=1, search_steps=1, progress=False)(model, x, y)
    ok = res.success
    assert bool(ok.any())
    assert torch.allclose(res.c[ok], candidate_constants(model, x, y)[ok], rtol=1e-12)
    fixed = LBFGS(candidates=1, search_steps=1, c_init=2.5, progress=False)(model, x, y)
    assert bool((fixed.c[fixed.success] == 2.5).all())


def test_targeted_mode_keeps_the_fixed_start(backward_counter: Callable[[nn.Module], Any]) -> None:
    model, x, y = steep_batch(3, n=8, dim=32, steepness=1.0, spread=0.1)
    t = (y + 1) % 6
    res = LBFGS(mode="targeted", search_steps=1, progress=False)(model, x, y, targets=t)
    assert bool(res.success.any())
    assert bool((res.c[res.success] == FIXED_C_INIT).all())
    counter = backward_counter(model)
    counted = LBFGS(mode="targeted", progress=False)(counter, x, y, targets=t)
    assert int(counted.grad_evals.sum()) == counter.rows + ray_passes(counted)  # no estimate pass


def test_estimated_start_is_near_the_final_constant_on_an_affine_model() -> None:
    """The scale is an empirical median; on an affine model the start must be within 10x."""
    model, x, y = steep_batch(5, n=12, dim=64, steepness=20.0, spread=0.05)
    res = LBFGS(candidates=1, progress=False)(model, x, y)
    ratio = res.c / candidate_constants(model, x, y)
    assert bool(res.success.all())
    assert float(ratio.min()) > 0.1 and float(ratio.max()) < 10.0
