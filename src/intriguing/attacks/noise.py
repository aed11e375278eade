"""The paper's baselines (sections 4.2, Tables 2 and 4): Gaussian noise and amplified perturbations.

- :func:`gaussian_noise`: ``clip(x + N(0, stddev^2), 0, 1)``; the clipping lowers the achieved
  per-pixel RMS below ``stddev`` on MNIST (many pixels sit at 0 or 1), so the achieved value is
  reported.
- :func:`amplify`: rescale each perturbation ``x' - x`` so that its per-pixel RMS (the paper's
  distortion, equal to the per-pixel stddev of a zero-mean perturbation) equals ``stddev``, then clip
  to [0, 1]; clipping can only lower the RMS, so the achieved value is reported too.

Both take ``clip=False`` to leave the result unclipped (values outside [0, 1], achieved RMS equal to
the requested one up to sampling): the paper does not say whether its noise rows were clipped, and on
MNIST the two readings give very different errors (docs/reproduce.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from intriguing.attacks.checks import check_images
from intriguing.attacks.metrics import rms_distortion
from intriguing.errors import InvalidInputError


@dataclass
class Perturbed:
    """Images ``(N, ...)`` (in [0, 1] unless made with ``clip=False``) and their achieved RMS
    distortion ``(N,)`` from the originals."""

    images: torch.Tensor
    distortion: torch.Tensor


def _check_stddev(stddev: float) -> float:
    value = float(stddev)
    if not value >= 0.0 or value == float("inf"):
        raise InvalidInputError(f"stddev must be a finite number >= 0, got {stddev}")
    return value


def gaussian_noise(
    images: torch.Tensor,
    stddev: float,
    *,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Perturbed:
    """Add i.i.d. Gaussian noise of standard deviation ``stddev`` and clip to [0, 1].

    Args:
        images: ``(N, ...)`` floats in [0, 1].
        stddev: per-pixel noise standard deviation (the paper uses 0.1, 0.3, 0.06, 1).
        generator: a seeded ``torch.Generator`` on the images' device for reproducible noise.
        clip: clip the noisy images to [0, 1] (``False``: leave them unclipped).
    """
    check_images(images)
    sigma = _check_stddev(stddev)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    noisy = noise.mul_(sigma).add_(images)  # images + sigma * noise, without two more full copies
    if clip:
        noisy.clamp_(0.0, 1.0)
    return Perturbed(noisy, rms_distortion(images, noisy))


def amplify(
    originals: torch.Tensor, adversarials: torch.Tensor, stddev: float, *, clip: bool = True
) -> Perturbed:
    """Rescale ``adversarials - originals`` to per-pixel RMS ``stddev``, then clip to [0, 1].

    Args:
        originals, adversarials: ``(N, ...)`` floats in [0, 1] of the same shape.
        stddev: the target per-pixel RMS (the paper amplifies to 0.1).
        clip: clip the amplified images to [0, 1] (``False``: leave them unclipped).

    Raises:
        InvalidInputError: shapes differ, inputs are invalid, or a perturbation is zero (it has no
            direction to amplify).
    """
    check_images(originals, name="originals")
    check_images(adversarials, name="adversarials")
    if originals.shape != adversarials.shape:
        raise InvalidInputError(
            f"originals {tuple(originals.shape)} and adversarials {tuple(adversarials.shape)} differ in shape"
        )
    sigma = _check_stddev(stddev)
    delta = adversarials - originals
    rms = rms_distortion(originals, adversarials)
    if bool((rms == 0).any()):
        raise InvalidInputError(
            f"{int((rms == 0).sum())} perturbation(s) are zero and cannot be amplified; drop them first"
        )
    scale = (sigma / rms).view(-1, *([1] * (delta.ndim - 1)))
    amplified = delta.mul_(scale).add_(originals)  # originals + delta * scale, in delta's memory
    if clip:
        amplified.clamp_(0.0, 1.0)
    return Perturbed(amplified, rms_distortion(originals, amplified))
