"""Universality as a curve: attack success rate as a function of the distortion budget.

The paper (section 4.2) says "we always manage to generate" adversarial examples for every model;
Neocleous and Schizas object that this universality "has not been universally proven yet". A
robustness curve turns the statement into a measurement: for a model and ``N`` attacked examples
with per-example minimum distortions ``d_i`` (the paper's RMS per pixel), the success rate at budget
``b`` is

    S(b) = #{i : attack i succeeded and d_i <= b} / N,

the empirical CDF of the minimum distortion, with failed attacks counted as never succeeding (so
``S`` tops out at the success rate, not at 1).

The L-BFGS distortion is an *upper bound* on each example's true minimum distortion (the attack is a
local search; the exact minimum could only be smaller), so the measured curve is a *lower bound* on
the success rate attainable at each budget by any attack of that distortion.

Every rate comes with an exact Clopper-Pearson interval (binomial over the ``N`` examples);
:func:`budget_for_rate` inverts the curve (the smallest budget reaching a given rate).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch

from intriguing._io import finite_or_none
from intriguing.analysis.rarity import clopper_pearson
from intriguing.attacks.metrics import median
from intriguing.errors import InvalidInputError


def _check(distortion: torch.Tensor, success: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(N,)`` distortions (finite and >= 0 where successful) and ``(N,)`` success flags."""
    if not isinstance(distortion, torch.Tensor) or not isinstance(success, torch.Tensor):
        raise InvalidInputError("distortion and success must be torch tensors")
    if distortion.ndim != 1 or success.shape != distortion.shape:
        raise InvalidInputError(
            f"distortion and success must both have shape (N,), got {tuple(distortion.shape)} "
            f"and {tuple(success.shape)}"
        )
    if distortion.numel() == 0:
        raise InvalidInputError("no attacked examples: the curve needs at least one")
    ok = _flags(success, "success")
    # compare in the distortions' own precision: a float32 0.1 is within a budget of 0.1
    d = distortion if distortion.is_floating_point() else distortion.double()
    if bool(torch.isnan(d[ok]).any()) or bool((d[ok] < 0).any()) or bool(torch.isinf(d[ok]).any()):
        raise InvalidInputError(
            "successful examples need finite distortions >= 0 (found NaN/inf/negative)"
        )
    return torch.where(ok, d, torch.inf), ok


def _flags(values: object, name: str) -> torch.Tensor:
    """``values`` as a bool tensor: a bool tensor, or a numeric one holding only 0 and 1."""
    if not isinstance(values, torch.Tensor):
        raise InvalidInputError(
            f"{name} must be a bool torch tensor of shape (N,), got {type(values).__name__}"
        )
    if values.dtype == torch.bool:
        return values
    if values.is_complex() or not bool(((values == 0) | (values == 1)).all()):
        raise InvalidInputError(
            f"{name} must be a bool tensor (or hold only 0 and 1), got {values.dtype} with other "
            "values; pass e.g. result.success"
        )
    return values.bool()


def _check_rate(rate: object) -> float:
    """A rate in ``(0, 1]`` (a real number, not a string or a bool)."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise InvalidInputError(f"rate must be a number in (0, 1], got {rate!r}")
    if not 0.0 < float(rate) <= 1.0:
        raise InvalidInputError(f"rate must be in (0, 1], got {rate}")
    return float(rate)


def _check_budgets(eps: object) -> torch.Tensor:
    """Budgets as a ``(E,)`` float64 tensor: finite numbers >= 0, at least one."""
    if isinstance(eps, (str, bytes)):
        raise InvalidInputError(f"budgets must be numbers >= 0, got the string {eps!r}")
    try:
        b = torch.as_tensor(eps, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputError(
            f"budgets must be a sequence of numbers >= 0, got {type(eps).__name__}"
        ) from None
    if b.numel() == 0 or not bool(torch.isfinite(b).all()) or bool((b < 0).any()):
        raise InvalidInputError("budgets must be finite numbers >= 0 (at least one)")
    return b


def _check_confidence(confidence: object) -> None:
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0.0 < float(confidence) < 1.0
    ):
        raise InvalidInputError(f"confidence must be a number in (0, 1), got {confidence!r}")


def robustness_curve(
    distortion: torch.Tensor, success: torch.Tensor, budgets: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Success rate ``(B,)`` float64 at each budget: ``mean(success & distortion <= b)``.

    Args:
        distortion: ``(N,)`` per-example minimum distortions (ignored where the attack failed).
        success: ``(N,)`` bool.
        budgets: ``B`` budgets in the same unit as ``distortion``.
    """
    d, _ = _check(distortion, success)
    b = _check_budgets(budgets).to(d.dtype)
    ordered = torch.sort(d).values
    counts = torch.searchsorted(ordered, b, right=True)
    return counts.double() / d.numel()


def budget_for_rate(distortion: torch.Tensor, success: torch.Tensor, rate: float) -> float:
    """The smallest budget ``b`` with ``S(b) >= rate``; ``inf`` when the attack never gets there."""
    rate = _check_rate(rate)
    d, _ = _check(distortion, success)
    k = math.ceil(rate * d.numel() - 1e-9)
    return float(torch.sort(d).values[k - 1])


def curve_summary(
    distortion: torch.Tensor,
    success: torch.Tensor,
    budgets: Sequence[float],
    *,
    rates: Sequence[float] = (0.5, 0.9, 0.99, 1.0),
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The curve on ``budgets`` with Clopper-Pearson bands, and the budgets reaching ``rates``.

    Returns a JSON-ready dict: ``n``, ``successes``, ``budgets``, ``rate``, ``ci_low``, ``ci_high``,
    ``budget_for`` (``{"0.5": b, ...}``, ``None`` for unreachable rates), ``mean_distortion``
    (successes only, as Table 1).
    """
    d, ok = _check(distortion, success)
    n = d.numel()
    curve = robustness_curve(distortion, success, budgets)
    counts = [round(float(r) * n) for r in curve]
    cis = [clopper_pearson(k, n, confidence) for k in counts]
    reach = {f"{r:g}": budget_for_rate(distortion, success, r) for r in rates}
    return {
        "n": n,
        "successes": int(ok.sum()),
        "success_rate": float(ok.double().mean()),
        "mean_distortion": float(d[ok].double().mean()) if bool(ok.any()) else None,
        "budgets": [float(b) for b in budgets],
        "rate": [float(r) for r in curve],
        "ci_low": [c[0] for c in cis],
        "ci_high": [c[1] for c in cis],
        "budget_for": {k: finite_or_none(v) for k, v in reach.items()},
        "confidence": confidence,
    }


Norm = Literal["l2", "rms"]
NORMS: tuple[str, ...] = get_args(Norm)


def robust_accuracy(
    correct: torch.Tensor,
    distortion: torch.Tensor,
    success: torch.Tensor,
    eps: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Robust accuracy ``(E,)`` float64 at every budget at once (foolbox's ``epsilons=[...]``).

    Example ``i`` counts as robust at ``eps`` when it is classified correctly and the minimum-norm
    attack did not fool it within ``eps``: ``correct_i and not (success_i and d_i <= eps)``. Clean
    errors are never robust. As the attack's distortion only bounds the true minimum from above,
    this is an *upper* bound on the robust accuracy against every attack of that norm.

    Args:
        correct: ``(N,)`` bool, the model's clean prediction equals the label.
        distortion: ``(N,)`` minimum distortion found (ignored where ``success`` is False).
        success: ``(N,)`` bool; only examples that are correct can succeed.
        eps: ``E`` budgets >= 0 in the unit of ``distortion``.
    """
    correct = _flags(correct, "correct")
    success = _flags(success, "success")
    if correct.shape != success.shape:
        raise InvalidInputError("correct must be a bool tensor of the same shape (N,) as success")
    b = _check_budgets(eps)
    fooled_rate = robustness_curve(distortion, success & correct, b)
    return correct.double().mean() - fooled_rate


def robust_accuracy_summary(
    correct: torch.Tensor,
    distortion: torch.Tensor,
    success: torch.Tensor,
    eps: Sequence[float],
    *,
    norm: str,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """JSON-ready robust accuracy at ``eps`` with Clopper-Pearson intervals over the ``N`` examples.

    Keys: ``n``, ``norm``, ``clean_accuracy``, ``eps``, ``robust_accuracy``, ``ci_low``, ``ci_high``,
    ``attacked`` (correct examples), ``fooled``, ``median_distortion`` (successes), ``confidence``.
    """
    if norm not in NORMS:
        raise InvalidInputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    correct = _flags(correct, "correct")
    success = _flags(success, "success")
    _check_confidence(confidence)
    n = int(correct.numel())
    accuracy = robust_accuracy(correct, distortion, success, eps)
    counts = [round(float(a) * n) for a in accuracy]
    cis = [clopper_pearson(k, n, confidence) for k in counts]
    fooled = success.bool() & correct.bool()
    return {
        "n": n,
        "norm": norm,
        "clean_accuracy": float(correct.double().mean()),
        "eps": [float(e) for e in eps],
        "robust_accuracy": [float(a) for a in accuracy],
        "ci_low": [c[0] for c in cis],
        "ci_high": [c[1] for c in cis],
        "attacked": int(correct.sum()),
        "fooled": int(fooled.sum()),
        "median_distortion": median(distortion[fooled]) if bool(fooled.any()) else None,
        "confidence": confidence,
        "bound": "upper bound on the robust accuracy (the attack's distortion bounds the minimum from above)",
    }


def model_robust_accuracy(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: Sequence[float],
    *,
    norm: str = "l2",
    attack: Any = None,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], Any]:
    """Robust accuracy of ``model`` at every budget of ``eps`` from one minimum-norm attack.

    The correctly classified examples of ``images`` ``(N, C, H, W)`` in [0, 1] are attacked once
    (untargeted box-constrained L-BFGS, §4.1, unless ``attack`` is given); each success is
    re-verified by a fresh forward pass before it counts. ``norm``: ``l2`` (Euclidean norm of the
    perturbation in [0, 1] pixel space) or ``rms`` (the paper's distortion, ``l2 / sqrt(pixels)``).
    Returns ``(summary as in robust_accuracy_summary, AttackResult of the correct examples)``.
    """
    from intriguing.attacks import LBFGS
    from intriguing.attacks.checks import (
        check_images,
        check_labels,
        check_logits,
        check_output_type,
    )
    from intriguing.attacks.metrics import success_mask
    from intriguing.models.user import model_device, model_input
    from intriguing.training.trainer import predict_logits

    if norm not in NORMS:
        raise InvalidInputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if attack is not None and not callable(attack):
        raise InvalidInputError(
            f"attack must be an attack object such as LBFGS(...), got {type(attack).__name__}"
        )
    _check_budgets(eps)
    _check_confidence(confidence)
    images = check_images(images)
    n = len(images)
    labels = check_labels(labels, n).cpu()
    device = model_device(model)
    with torch.no_grad():
        outputs = [
            check_output_type(model(model_input(model, images[i : i + 512]))).cpu()
            for i in range(0, n, 512)
        ]
    clean_logits = torch.cat(outputs)
    check_logits(clean_logits, n)
    check_labels(labels, n, num_classes=int(clean_logits.shape[1]))
    correct = clean_logits.argmax(1) == labels
    distortion = torch.zeros(n, dtype=torch.float64)
    success = torch.zeros(n, dtype=torch.bool)
    result = None
    index = correct.nonzero().squeeze(1)
    if len(index):
        attacker = attack if attack is not None else LBFGS(mode="untargeted")
        result = attacker(model, images[index].to(device), labels[index].to(device))
        logits = predict_logits(model, result.adversarial).cpu()  # re-verified: the one rule
        fooled = success_mask(logits, labels[index], None)
        d = result.l2 if norm == "l2" else result.distortion
        distortion[index] = d.detach().cpu().double()
        success[index] = result.success.cpu().bool() & fooled
    summary = robust_accuracy_summary(
        correct, distortion, success, eps, norm=norm, confidence=confidence
    )
    return summary, result
