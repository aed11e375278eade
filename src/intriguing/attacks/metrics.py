"""Distortion measures (paper section 4.1) and decision margins.

- :func:`rms_distortion`: the paper's ``sqrt(sum_i (x'_i - x_i)^2 / n)``, ``n`` values per image
  (784 on MNIST): an RMS per pixel, equal to the per-pixel stddev of a zero-mean perturbation.
- :func:`l2_distance`: ``||x' - x||_2`` per image (``= sqrt(n) * rms_distortion``).
- :func:`success_mask`: targeted ``argmax == target`` / untargeted ``argmax != label`` *by a margin*:
  the winning logit must lead by at least :func:`success_margin` (``SUCCESS_MARGIN`` times the row's
  largest ``|logit|``, at least ``SUCCESS_MARGIN``), so that a success never depends on float
  rounding order, batch composition or the BLAS kernel that computed the logits (issue 16, item 7:
  a stored success with a logit gap of 2.9e-6 was classified correctly when evaluated alone).
- The attack aims ``AIM_FACTOR`` margins past the boundary (``success_mask(..., aim=AIM_FACTOR)``
  while searching), so a point it returns re-verifies with a margin to spare in any batch.
"""

from __future__ import annotations

import numpy as np
import torch

from intriguing.errors import InvalidInputError

#: Minimum logit lead of a success, relative to the row's largest ``|logit|`` (absolute below 1).
#: float32 logits carry a rounding error of a few ulps of their summands (``eps = 1.2e-7``
#: relative), and a different batch or kernel changes the summation order: 1e-4 is ~800 ulps.
SUCCESS_MARGIN = 1e-4
#: The attack accepts a point only when it leads by ``AIM_FACTOR`` margins (see :func:`success_mask`).
AIM_FACTOR = 2.0


#: Rows per chunk of the distortion measures: their float64 work copies stay a few MB however many
#: images there are (whole-array float64 copies of 60000 MNIST images page-fault 750 MB per call).
DISTORTION_CHUNK = 2048


def median(values: torch.Tensor) -> float:
    """The usual median of a non-empty tensor: of an even count, the mean of the two middle values
    (numpy's; ``torch.median`` returns the lower one). Every median the package reports is this."""
    flat = values.detach().reshape(-1).double()
    if flat.numel() == 0:
        raise InvalidInputError("the median of no values is undefined")
    return float(np.median(flat.cpu().numpy()))


def _squared_rows(
    originals: torch.Tensor, adversarials: torch.Tensor, *, mean: bool
) -> torch.Tensor:
    """Per-row ``sum`` (or ``mean``) of ``(adversarials - originals)^2`` in float64, ``(N,)``.

    Chunked over rows; each row is reduced exactly as in one whole-array pass (the same kernel on the
    same contiguous row), so the values do not depend on the chunk size.
    """
    try:
        shape = torch.broadcast_shapes(originals.shape, adversarials.shape)
    except RuntimeError:
        raise InvalidInputError(
            f"originals {tuple(originals.shape)} and adversarials {tuple(adversarials.shape)} "
            "differ in shape; pass one adversarial per original"
        ) from None
    if len(shape) < 2:
        raise InvalidInputError(
            f"distortions need (N, ...) batches, got shape {tuple(shape)}; "
            "add a batch dimension with unsqueeze(0)"
        )
    a, b = originals.expand(shape), adversarials.expand(shape)
    out = torch.empty(shape[0], dtype=torch.float64, device=originals.device)
    for start in range(0, shape[0], DISTORTION_CHUNK):
        rows = slice(start, start + DISTORTION_CHUNK)
        sq = (b[rows] - a[rows]).flatten(1).double().pow_(2)
        out[rows] = sq.mean(1) if mean else sq.sum(1)
    return out


def l2_distance(originals: torch.Tensor, adversarials: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of ``adversarials - originals``; both ``(N, ...)``, returns ``(N,)``."""
    return _squared_rows(originals, adversarials, mean=False).sqrt_().to(originals.dtype)


def rms_distortion(originals: torch.Tensor, adversarials: torch.Tensor) -> torch.Tensor:
    """The paper's distortion ``sqrt(sum (x'-x)^2 / n)`` per example; ``(N, ...)`` -> ``(N,)``."""
    return _squared_rows(originals, adversarials, mean=True).sqrt_().to(originals.dtype)


def best_other(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Largest logit over classes other than ``exclude``; ``(N, K)``, ``(N,)`` -> ``(N,)``."""
    masked = logits.scatter(1, exclude[:, None], float("-inf"))
    return masked.amax(1)


def success_margin(logits: torch.Tensor) -> torch.Tensor:
    """The logit lead a success needs: ``SUCCESS_MARGIN * max(1, max_j |z_j|)``; ``(N, K)`` -> ``(N,)``."""
    return SUCCESS_MARGIN * logits.detach().abs().amax(1).clamp(min=1.0)


def success_lead(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
) -> torch.Tensor:
    """How far each row is past the boundary, in logits: ``(N, K)`` -> ``(N,)``.

    Targeted rows (``targets >= 0``): ``z_t - max_{j != t} z_j``; untargeted rows (``targets`` None
    or ``-1``): ``max_{j != y} z_j - z_y``. Positive means the goal class wins.
    """
    if targets is None:
        targets = torch.full_like(labels, -1)
    untargeted = targets < 0
    goal = torch.where(untargeted, labels, targets)
    own = logits.gather(1, goal[:, None]).squeeze(1)
    other = best_other(logits, goal)
    return torch.where(untargeted, other - own, own - other)


def success_mask(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    aim: float = 1.0,
) -> torch.Tensor:
    """Whether each row of ``logits`` ``(N, K)`` is adversarial; returns ``(N,)`` bool.

    The one success rule of the package. Targeted (``targets`` given, ``-1`` entries mean
    untargeted for that row): the target's logit leads every other logit by at least
    ``aim * success_margin(logits)``. Untargeted: some other class's logit leads the label's by
    that much. ``aim=1`` decides success (re-verification, stored results); the attack searches
    with ``aim=AIM_FACTOR`` so that its points pass ``aim=1`` whatever batch evaluates them.
    """
    return success_lead(logits, labels, targets) >= aim * success_margin(logits)
