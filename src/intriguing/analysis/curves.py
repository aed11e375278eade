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
from collections.abc import Sequence
from typing import Any

import torch

from intriguing.analysis.rarity import clopper_pearson
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
    ok = success.bool()
    # compare in the distortions' own precision: a float32 0.1 is within a budget of 0.1
    d = distortion if distortion.is_floating_point() else distortion.double()
    if bool(torch.isnan(d[ok]).any()) or bool((d[ok] < 0).any()) or bool(torch.isinf(d[ok]).any()):
        raise InvalidInputError(
            "successful examples need finite distortions >= 0 (found NaN/inf/negative)"
        )
    return torch.where(ok, d, torch.inf), ok


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
    b = torch.as_tensor(budgets, dtype=torch.float64).reshape(-1)
    if bool(torch.isnan(b).any()):
        raise InvalidInputError("budgets contain NaN")
    b = b.to(d.dtype)
    ordered = torch.sort(d).values
    counts = torch.searchsorted(ordered, b, right=True)
    return counts.double() / d.numel()


def budget_for_rate(distortion: torch.Tensor, success: torch.Tensor, rate: float) -> float:
    """The smallest budget ``b`` with ``S(b) >= rate``; ``inf`` when the attack never gets there."""
    if not 0.0 < rate <= 1.0:
        raise InvalidInputError(f"rate must be in (0, 1], got {rate}")
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
        "budget_for": {k: (v if math.isfinite(v) else None) for k, v in reach.items()},
        "confidence": confidence,
    }
