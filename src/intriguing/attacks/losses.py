"""Per-example attack losses on logits (the ``loss_f`` of the paper's ``c|r| + loss_f(x + r, l)``).

Both losses are functions of a margin ``d`` between the goal class and the best other class:

- targeted (reach class ``t``): ``d = other - z_t``; untargeted (leave the label ``y``): ``d = z_y - other``.
- ``"ce"`` (the paper's cross-entropy): ``other = T logsumexp_{j != goal} (z_j / T)`` and
  ``loss = T softplus(d / T)``. At temperature ``T = 1`` this is exactly ``-log p_t`` (targeted) and
  ``-log(1 - p_y)`` (untargeted: the cross-entropy of "any class but y", bounded below by 0, unlike
  ``+log p_y``, so the penalty problem stays bounded). It is the cross-entropy of the logits divided
  by ``T``, times ``T``: as ``T -> 0`` it tends to the hinge ``max(max_{j != goal} z_j - z_t, 0)``, whose
  gradient points at the nearest competing class rather than a softmax-weighted blend of classes,
  so that the boundary point the c-search finds is closer to the minimum-distortion one; ``T > 0``
  keeps the loss smooth for L-BFGS.
- ``smoothing`` ``S`` (``"ce"`` only; default ``T``): the loss is ``S softplus(d / S)`` of the same
  ``d``. ``T`` decides which competitors count, ``S`` only how smoothly the loss approaches the
  boundary: on the boundary (``d = 0``) the gradient is ``grad(d) / 2`` for every ``S``.
- ``"margin"`` (Carlini-Wagner's hinge on logits): ``other = max_{j != goal} z_j`` and
  ``loss = max(d + kappa, 0)``; ``kappa >= 0`` asks for a margin beyond the decision boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from intriguing.errors import InvalidInputError

LOSSES = ("ce", "margin")


def check_loss(kind: str, kappa: float, temperature: float = 1.0) -> None:
    """Validate a loss name, margin and temperature; raises InvalidInputError."""
    if kind not in LOSSES:
        raise InvalidInputError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if not float(kappa) >= 0.0:
        raise InvalidInputError(f"kappa must be >= 0, got {kappa}")
    if not (0.0 < float(temperature) < float("inf")):
        raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature}")


def attack_loss(
    logits: torch.Tensor,
    goal: torch.Tensor,
    untargeted: torch.Tensor,
    *,
    kind: str = "ce",
    kappa: float = 0.0,
    temperature: float = 1.0,
    lead: torch.Tensor | float = 0.0,
    smoothing: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Per-example loss ``(N,)`` from logits ``(N, K)``.

    Args:
        logits: the model's outputs.
        goal: ``(N,)`` int64, the target (targeted rows) or the true label (untargeted rows).
        untargeted: ``(N,)`` bool, which rows are untargeted.
        kind: ``"ce"`` or ``"margin"``.
        kappa: the hinge's margin (``"margin"`` only).
        temperature: ``T`` of the cross-entropy (``"ce"`` only; 1 is the plain cross-entropy).
        lead: ``(N,)`` or scalar logit lead the attack aims for (the success rule's margin,
            :func:`intriguing.attacks.metrics.success_margin`): the loss is a function of
            ``d + lead``, so the hinge does not go flat before a point counts as a success.
        smoothing: the softplus temperature ``S`` of ``"ce"``, a number or ``(N,)`` per row
            (``None``: ``temperature``).
    """
    own = logits.gather(1, goal[:, None]).squeeze(1)
    masked = logits.scatter(1, goal[:, None], float("-inf"))
    ce = kind == "ce"
    other = temperature * (masked / temperature).logsumexp(1) if ce else masked.amax(1)
    d = torch.where(untargeted, own - other, other - own) + lead
    if kind == "ce":
        soft = temperature if smoothing is None else smoothing
        if isinstance(soft, torch.Tensor):
            soft = soft.to(d.dtype)  # the loss keeps the logits' dtype
        return soft * F.softplus(d / soft)
    return (d + kappa).clamp(min=0.0)
