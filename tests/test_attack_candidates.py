"""Untargeted class choice by DeepFool's linearised distance (issue 18).

The untargeted attack solves targeted problems toward the ``candidates`` classes nearest by the
estimate ``(z_y - z_k) / ||grad z_y - grad z_k||``. On an affine model that estimate is the exact
distance to each class's hyperplane (without the box), which is the oracle here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.attacks.exact_linear import exact_linear_attack
from intriguing.attacks.lbfgs import (
    ESTIMATE_CLASSES,
    _distances,
    _nearest_first,
    estimated_classes,
    linear_distances,
    linear_geometry,
)
from intriguing.attacks.metrics import AIM_FACTOR, SUCCESS_MARGIN
from intriguing.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(seed: int, dim: int = 16, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def test_estimate_is_the_exact_hyperplane_distance_on_an_affine_model() -> None:
    model = linear_model(0)
    x = torch.rand(7, 16)
    y = model(x).argmax(1)
    est = linear_distances(model, x, y)
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    z = x.double() @ w.T + b
    for i in range(7):
        for k in range(5):
            if k == int(y[i]):
                assert est[i, k] == float("inf")
                continue
            exact = (z[i, y[i]] - z[i, k]) / (w[y[i]] - w[k]).norm()
            assert float(est[i, k]) == pytest.approx(float(exact), rel=1e-5, abs=1e-6)


def test_untargeted_default_reaches_the_nearest_class_on_an_affine_model() -> None:
    """Far from the box faces the nearest hyperplane is the optimum: the attack must land there."""
    model = linear_model(1, dim=64, classes=6)
    with torch.no_grad():
        model[1].weight.mul_(20.0)  # steep: the boundaries are close, the box stays inactive
    x = torch.full((12, 64), 0.5) + 0.05 * torch.rand(12, 64)
    y = model(x).argmax(1)
    res = LBFGS(progress=False)(model, x, y)
    oracle = exact_linear_attack(model, x, y, progress=False)
    assert bool(res.success.all())
    nearest = linear_distances(model, x, y).argmin(1)
    assert torch.equal(res.predicted, nearest)
    gap = res.distortion.double() / oracle.distortion - 1.0
    assert float(gap.max()) < 0.01 and float(gap.min()) > -1e-4


def test_candidates_zero_is_the_untargeted_loss_search() -> None:
    model = linear_model(2)
    x = torch.rand(5, 16)
    y = model(x).argmax(1)
    res = LBFGS(candidates=0, progress=False)(model, x, y)
    assert bool(res.success.all())
    assert res.settings["candidates"] == 0


def test_more_candidates_never_hurt_and_cost_counts_the_estimate() -> None:
    model = linear_model(3, dim=32, classes=8)
    x = torch.rand(10, 32)
    y = model(x).argmax(1)
    one = LBFGS(candidates=1, progress=False)(model, x, y)
    three = LBFGS(candidates=3, candidate_ratio=10.0, progress=False)(model, x, y)
    assert bool(one.success.all()) and bool(three.success.all())
    # three candidates include the first: never worse beyond float noise
    assert bool((three.distortion <= one.distortion * (1 + 1e-3) + 1e-6).all())
    assert bool((one.grad_evals >= 8 + 1).all())  # K = 8 passes of the estimate, then the search


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"candidates": -1}, "candidates"), ({"candidate_ratio": 0.5}, "candidate_ratio")],
)
def test_bad_candidate_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        LBFGS(**kwargs)  # type: ignore[arg-type]


def box_blocked_model() -> nn.Module:
    """3 pixels, label 0 (logit 0) at x = 0.5. Class 1's hyperplane x_0 = 1.01 is the nearest by
    the estimate (0.51 away) but outside the box; class 2's x_1 + x_2 = 1.9 is 0.636 away (1.25x the
    nearest: beyond ``candidate_ratio`` 1.2, so not a candidate) and inside the box, reached at
    r = (0, 0.45, 0.45)."""
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.0, -101.0, -1.9]))
    return model.eval()


def test_an_example_whose_candidates_all_fail_tries_the_other_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the only candidate (class 1) cannot be reached inside the box, and the example was
    reported as a failure although class 2 is reachable; now the other classes are attacked."""
    model, x, y = box_blocked_model(), torch.full((2, 3), 0.5), torch.zeros(2, dtype=torch.long)
    est = linear_distances(model, x, y)
    assert float(est[0, 2] / est[0, 1]) > 1.2  # class 2 is not a candidate
    result = LBFGS(progress=False)(model, x, y)
    assert bool(result.success.all())
    assert torch.equal(model(result.adversarial).argmax(1), torch.tensor([2, 2]))
    # exact minimum-norm successes toward class 2: the lead x_1 + x_2 - 1.9 must reach the success
    # margin (1e-4 * max|z| = 1e-4 * |z_1| = 0.0051); the attack aims for AIM_FACTOR margins
    margin = SUCCESS_MARGIN * 51.0
    least, aimed = ((0.9 + k * margin) / 2 * 2**0.5 for k in (1.0, AIM_FACTOR))
    l2 = (result.adversarial - x).norm(dim=1)
    assert bool((l2 >= least * (1 - 1e-6)).all()) and bool((l2 <= aimed * 1.01).all())
    monkeypatch.setattr("intriguing.attacks.lbfgs.FALLBACK_CLASSES", 0)
    assert not bool(LBFGS(progress=False)(model, x, y).success.any())  # the mechanism above


def test_examples_that_succeed_pay_nothing_for_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every example succeeds with its candidates: the attack is the same with or without the
    fallback, evaluations included."""
    model = linear_model(3)
    x = torch.rand(6, 16)
    y = model(x).argmax(1)
    with_fallback = LBFGS(progress=False)(model, x, y)
    monkeypatch.setattr("intriguing.attacks.lbfgs.FALLBACK_CLASSES", 0)
    without = LBFGS(progress=False)(model, x, y)
    assert bool(with_fallback.success.all())
    assert torch.equal(with_fallback.adversarial, without.adversarial)
    assert torch.equal(with_fallback.grad_evals, without.grad_evals)


class _Once(torch.autograd.Function):
    """Identity whose backward runs once per forward, as a torch.compile'd model's (its compiled
    backward frees its buffers and refuses ``retain_graph``)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.used = False  # type: ignore[attr-defined]
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        if ctx.used:  # type: ignore[attr-defined]
            raise RuntimeError("this backward cannot be retained")
        ctx.used = True  # type: ignore[attr-defined]
        return grad


class OnceBackward(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_Once.apply(x))


def test_a_model_whose_backward_cannot_be_retained_is_estimated_class_by_class() -> None:
    """The class estimate backpropagates once per class through one forward (retain_graph); a
    model that refuses that (torch.compile donates its buffers) gets one forward per class and the
    same estimate, instead of a RuntimeError."""
    model = linear_model(4, classes=6)
    x = torch.rand(5, 16)
    y = model(x).argmax(1)
    once = OnceBackward(model).eval()
    with pytest.raises(RuntimeError, match="cannot be retained"):
        z = once(x.requires_grad_(True))
        torch.autograd.grad(z[:, 0].sum(), x, retain_graph=True)
        torch.autograd.grad(z[:, 1].sum(), x)
    x = x.detach()
    assert torch.equal(linear_distances(once, x, y), linear_distances(model, x, y))
    result = LBFGS(progress=False)(once, x, y)
    assert bool(result.success.all())
    assert torch.allclose(result.distortion, LBFGS(progress=False)(model, x, y).distortion)


def test_estimated_classes_are_the_largest_logits_but_the_label() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 4.0, 6.0, 4.5, 0.0]])
    labels = torch.tensor([1, 2])
    assert estimated_classes(logits, labels, 2).tolist() == [[3, 2], [0, 3]]
    assert estimated_classes(logits, labels, 10).tolist() == [[3, 2, 0, 4], [0, 3, 1, 4]]


def test_the_estimate_looks_at_the_classes_asked_for_only(
    backward_counter: Callable[[nn.Module], Any],
) -> None:
    """Norms at the given classes equal the affine model's ``||w_y - w_k||``; every other class,
    the label included, is NaN, and its distance is ``inf``. One backward pass per class asked."""
    model = backward_counter(linear_model(5, classes=8))
    x = torch.rand(4, 16)
    y = model(x).argmax(1)
    classes = estimated_classes(model(x), y, 3)
    model.passes = 0
    gap, norm = linear_geometry(model, x, y, classes)
    assert model.passes == 3
    w = model.model[1].weight.detach().double()
    for i in range(4):
        for k in range(8):
            if k in classes[i].tolist():
                expected = float((w[y[i]] - w[k]).norm())
                assert float(norm[i, k]) == pytest.approx(expected, rel=1e-5)
            else:
                assert torch.isnan(norm[i, k])
    near = _distances(gap, norm, y)
    assert bool(torch.isinf(near[torch.isnan(norm)]).all())


def test_the_fallback_order_puts_classes_left_out_after_the_estimate_by_logit() -> None:
    gap = torch.tensor([[0.0, 3.0, 1.0, 2.0, 0.5]], dtype=torch.float64)  # label 0
    norm = torch.tensor([[math.nan, math.nan, 4.0, 1.0, math.nan]], dtype=torch.float64)
    near, order = _nearest_first(gap, norm, torch.tensor([0]))
    # estimated: class 2 (0.25 away), class 3 (2.0); then class 4 (gap 0.5), class 1 (gap 3)
    assert order.tolist() == [[2, 3, 4, 1]]
    assert near[0, :2].tolist() == [0.25, 2.0] and bool(torch.isinf(near[0, 2:]).all())


def test_many_classes_cost_estimate_classes_passes_and_the_attack_still_succeeds(
    backward_counter: Callable[[nn.Module], Any],
) -> None:
    """A 40-class model: the class estimate backpropagates ESTIMATE_CLASSES times per call, not 40
    (its gradients would also hold (N, K, D) floats), and is counted so in ``grad_evals``."""
    torch.manual_seed(6)
    model = backward_counter(linear_model(6, dim=32, classes=40))
    x = torch.rand(9, 32)
    y = model(x).argmax(1)
    attack = LBFGS(progress=False)
    candidates = attack._candidate_problems(model.model, x, y, model.model(x), rows=512)
    assert bool((candidates[1] == ESTIMATE_CLASSES).all())
    result = attack(model, x, y)
    assert bool(result.success.all())
    oracle = exact_linear_attack(model.model, x, y, progress=False)
    assert torch.equal(result.predicted, oracle.target)  # the nearest class, found
    assert float((result.distortion.double() / oracle.distortion).mean()) < 1.02  # margin aside


def test_a_candidate_beaten_by_another_class_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three candidates per image on an affine model: a candidate whose stage fails farther out
    than another class's success stops searching. The winners are the same as without the rule
    (an affine model's stages are convex problems, solved nearly exactly), with fewer
    evaluations."""
    model = linear_model(7, dim=32, classes=6)
    x = torch.rand(10, 32)
    y = model(x).argmax(1)
    pruned = LBFGS(candidate_ratio=10.0, progress=False)(model, x, y)
    monkeypatch.setattr("intriguing.attacks.lbfgs.PRUNE_BEATEN", False)
    full = LBFGS(candidate_ratio=10.0, progress=False)(model, x, y)
    assert bool(pruned.success.all()) and bool(full.success.all())
    assert torch.equal(pruned.predicted, full.predicted)
    assert torch.allclose(pruned.distortion, full.distortion, rtol=1e-4)
    assert int(pruned.grad_evals.sum()) < int(full.grad_evals.sum())


def test_target_best_searches_every_class_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """``target="best"`` promises the minimum over every class: no candidate is cut short."""
    model = linear_model(8, dim=32, classes=6)
    x = torch.rand(6, 32)
    y = model(x).argmax(1)
    best = LBFGS(target="best", progress=False)(model, x, y)
    monkeypatch.setattr("intriguing.attacks.lbfgs.PRUNE_BEATEN", False)
    unpruned = LBFGS(target="best", progress=False)(model, x, y)
    assert torch.equal(best.grad_evals, unpruned.grad_evals)
    assert torch.equal(best.adversarial, unpruned.adversarial)


def test_the_nearest_candidate_starts_alone(
    monkeypatch: pytest.MonkeyPatch, backward_counter: Callable[[nn.Module], Any]
) -> None:
    """An example's other candidates wait until a stage of its nearest one has ended (or it has
    had its head start): the search's first evaluation has one row per example, and the others
    join later."""
    model = linear_model(9, dim=32, classes=6)
    x = torch.rand(10, 32)
    y = model(x).argmax(1)
    lead = backward_counter(model)
    first = LBFGS(candidate_ratio=10.0, progress=False)(lead, x, y)
    assert lead.search_rows()[0] == 10  # the leads only
    assert max(lead.search_rows()) > 10  # the other candidates did run
    monkeypatch.setattr("intriguing.attacks.lbfgs.LEAD_FIRST", False)
    together = backward_counter(model)
    LBFGS(candidate_ratio=10.0, progress=False)(together, x, y)
    assert together.search_rows()[0] == 30  # every candidate at once
    assert bool(first.success.all())


def test_waiting_candidates_change_no_winner(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an affine model (convex stages) the nearest-first schedule finds the same classes and
    distortions as starting every candidate at once, with a slot pool smaller than the problem
    list (problems wait for slots and for their lead) and images that are already adversarial
    (their lead ends at once)."""
    model = linear_model(10, dim=32, classes=6)
    x = torch.rand(14, 32)
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 6  # already misclassified: one problem, solved at distortion 0
    small_pool = LBFGS(candidate_ratio=10.0, batch_size=4, progress=False)(model, x, y)
    large_pool = LBFGS(candidate_ratio=10.0, progress=False)(model, x, y)
    monkeypatch.setattr("intriguing.attacks.lbfgs.LEAD_FIRST", False)
    together = LBFGS(candidate_ratio=10.0, progress=False)(model, x, y)
    for result in (small_pool, large_pool):
        assert bool(result.success.all())
        assert torch.equal(result.predicted, together.predicted)
        assert torch.allclose(result.distortion, together.distortion, rtol=1e-4, atol=1e-7)
    assert float(small_pool.distortion[:3].abs().max()) == 0.0
