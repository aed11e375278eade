"""Distortion measures (paper section 4.1) and decision margins.

- :func:`rms_distortion`: the paper's ``sqrt(sum_i (x'_i - x_i)^2 / n)``, ``n`` values per image
  (784 on MNIST): an RMS per pixel, equal to the per-pixel stddev of a zero-mean perturbation.
- :func:`l2_distance`: ``||x' - x||_2`` per image (``= sqrt(n) * rms_distortion``).
- :func:`success_mask`: targeted ``argmax == target`` / untargeted ``argmax != label``, with ties
  counted as failures so that a success never depends on float rounding order.
"""

from __future__ import annotations

import torch


def l2_distance(originals: torch.Tensor, adversarials: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of ``adversarials - originals``; both ``(N, ...)``, returns ``(N,)``."""
    diff = (adversarials - originals).flatten(1)
    return diff.double().pow(2).sum(1).sqrt().to(originals.dtype)


def rms_distortion(originals: torch.Tensor, adversarials: torch.Tensor) -> torch.Tensor:
    """The paper's distortion ``sqrt(sum (x'-x)^2 / n)`` per example; ``(N, ...)`` -> ``(N,)``."""
    diff = (adversarials - originals).flatten(1)
    return diff.double().pow(2).mean(1).sqrt().to(originals.dtype)


def best_other(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Largest logit over classes other than ``exclude``; ``(N, K)``, ``(N,)`` -> ``(N,)``."""
    masked = logits.scatter(1, exclude[:, None], float("-inf"))
    return masked.amax(1)


def success_mask(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
) -> torch.Tensor:
    """Whether each row of ``logits`` ``(N, K)`` is adversarial; returns ``(N,)`` bool.

    Targeted (``targets`` given, ``-1`` entries mean untargeted for that row): the target's logit is
    strictly larger than every other logit. Untargeted: some other class's logit is strictly larger
    than the label's.
    """
    if targets is None:
        targets = torch.full_like(labels, -1)
    untargeted = targets < 0
    goal = torch.where(untargeted, labels, targets)
    own = logits.gather(1, goal[:, None]).squeeze(1)
    other = best_other(logits, goal)
    return torch.where(untargeted, other > own, own > other)
