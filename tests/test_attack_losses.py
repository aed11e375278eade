"""The attack's cross-entropy with a softplus temperature apart from the blend's (issue 18).

``attack_loss(..., temperature=T, smoothing=S)`` is ``S softplus(d / S)`` of the lead
``d = T logsumexp_{j != t}(z_j / T) - z_t`` (targeted). The values below are worked out by hand.
Untargeted mode's candidate problems use ``S = CANDIDATE_SMOOTHING`` on examples whose logits are
not rescaled, and the sharp ``S = T`` on the others; every other problem keeps ``S = T``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.attacks import lbfgs as lbfgs_module
from intriguing.attacks.losses import attack_loss

pytestmark = pytest.mark.usefixtures("one_thread")

LOGITS = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
TARGET = torch.tensor([1])
TARGETED = torch.tensor([False])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_plain_cross_entropy_is_minus_log_p_target() -> None:
    # T = 1: -log p_1 = log(e^2 + e^1 + e^0) - 1
    expected = math.log(math.exp(2) + math.exp(1) + 1) - 1
    loss = attack_loss(LOGITS, TARGET, TARGETED, temperature=1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_smoothing_changes_only_the_softplus() -> None:
    # the blend at T = 0.1: 0.1 * log(e^20 + e^0) = 2 + 0.1 * log1p(e^-20); d = that - 1
    d = 2.0 + 0.1 * math.log1p(math.exp(-20.0)) - 1.0
    sharp = attack_loss(LOGITS, TARGET, TARGETED, temperature=0.1)
    smooth = attack_loss(LOGITS, TARGET, TARGETED, temperature=0.1, smoothing=1.0)
    assert sharp.item() == pytest.approx(0.1 * softplus(d / 0.1), rel=1e-12)
    assert smooth.item() == pytest.approx(softplus(d), rel=1e-12)


def test_smoothing_per_row() -> None:
    logits = LOGITS.repeat(2, 1)
    rows = attack_loss(
        logits,
        TARGET.repeat(2),
        TARGETED.repeat(2),
        temperature=0.1,
        smoothing=torch.tensor([1.0, 0.1], dtype=torch.float64),
    )
    one = attack_loss(LOGITS, TARGET, TARGETED, temperature=0.1, smoothing=1.0)
    sharp = attack_loss(LOGITS, TARGET, TARGETED, temperature=0.1)
    assert rows.tolist() == pytest.approx([one.item(), sharp.item()], rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.1, 1.0, 3.0])
def test_on_the_boundary_the_gradient_is_half_the_leads_whatever_the_smoothing(
    smoothing: float,
) -> None:
    """At ``d = 0`` (two classes tied, the third far below) d loss / d z_t = -1/2 and
    d loss / d z_y = +1/2 for every S: the c-search meets the same boundary points."""
    logits = torch.tensor([[1.0, 1.0, -30.0]], dtype=torch.float64, requires_grad=True)
    loss = attack_loss(logits, TARGET, TARGETED, temperature=0.1, smoothing=smoothing)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert grad[0, 1].item() == pytest.approx(-0.5, abs=1e-9)
    assert grad[0, 0].item() == pytest.approx(0.5, abs=1e-9)


def test_the_margin_loss_ignores_smoothing() -> None:
    hinge = attack_loss(LOGITS, TARGET, TARGETED, kind="margin", smoothing=1.0)
    assert hinge.item() == pytest.approx(1.0)  # max(2 - 1, 0)


def record_smoothing(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``smoothing`` the attack passes to its loss, in call order."""
    seen: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = kwargs.get("smoothing")
        seen.append(value.clone() if isinstance(value, torch.Tensor) else value)
        return attack_loss(*args, **kwargs)

    monkeypatch.setattr(lbfgs_module, "attack_loss", spy)
    return seen


def affine(scale: float) -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def test_candidates_are_smoothed_and_rescaled_examples_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 16)
    usual = affine(40.0)  # largest |logit| between LOGIT_REFERENCE and LOGIT_CEILING
    y = usual(x).argmax(1)
    largest = usual(x).abs().amax(1)
    assert bool(((largest > lbfgs_module.LOGIT_REFERENCE) & (largest < 50.0)).all())
    seen = record_smoothing(monkeypatch)
    result = LBFGS(progress=False)(usual, x, y)
    assert bool(result.success.all())
    assert seen and all(s == lbfgs_module.CANDIDATE_SMOOTHING for s in seen)

    small = affine(0.2)  # rescaled up (logit_scales): the sharp loss, S = T
    seen.clear()
    LBFGS(progress=False)(small, x, small(x).argmax(1))
    rows = [s for s in seen if isinstance(s, torch.Tensor)]
    assert rows and all(bool((s == 0.1).all()) for s in rows)


def test_targeted_mode_and_the_untargeted_loss_keep_the_sharp_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 16)
    model = affine(40.0)
    y = model(x).argmax(1)
    seen = record_smoothing(monkeypatch)
    LBFGS(mode="targeted", target="next", progress=False)(model, x, y)
    LBFGS(candidates=0, progress=False)(model, x, y)
    LBFGS(target="best", progress=False)(model, x, y)
    assert seen and all(s is None for s in seen)


def test_per_row_smoothing_survives_the_split_into_model_calls() -> None:
    """``_evaluate`` runs the model on ``rows`` rows at a time: a per-row ``smoothing`` is split
    with them (a whole-batch tensor against a 2-row chunk would not broadcast)."""
    torch.manual_seed(1)
    model = affine(40.0)
    x = torch.rand(5, 16)
    goal = (model(x).argmax(1) + 1) % 5
    targeted = torch.zeros(5, dtype=torch.bool)
    smoothing = torch.tensor([1.0, 0.1, 1.0, 0.5, 0.1], dtype=torch.float64)
    attack = LBFGS(progress=False)
    whole = attack._evaluate(model, x, (16,), goal, targeted, 0.1, rows=512, smoothing=smoothing)
    parts = attack._evaluate(model, x, (16,), goal, targeted, 0.1, rows=2, smoothing=smoothing)
    for a, b in zip(whole, parts, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    each = [
        attack._evaluate(
            model,
            x[i : i + 1],
            (16,),
            goal[i : i + 1],
            targeted[:1],
            0.1,
            rows=1,
            smoothing=float(smoothing[i]),
        )[1]
        for i in range(5)
    ]
    assert torch.allclose(whole[1], torch.cat(each), rtol=1e-5, atol=1e-6)
