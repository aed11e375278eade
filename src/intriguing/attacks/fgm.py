"""One-step L2 fast-gradient perturbations: the cheap attack of adversarial training's pool (§4.2).

Not the paper's §4.1 attack (box-constrained L-BFGS, :class:`intriguing.attacks.LBFGS`): a single
gradient step of fixed RMS size, used where many adversarial examples are needed quickly
(:mod:`intriguing.training.adversarial` refills its pool with it when ``attack="fgm"``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fgm_l2(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """One-step L2 fast-gradient perturbations ``(N, ...)`` of ``inputs`` in [0, 1].

    ``x' = clip(x + epsilon * sqrt(D) * g / ||g||_2, 0, 1)`` with ``g`` the gradient of the
    cross-entropy of ``model(x)`` against ``labels`` ``(N,)`` int64 and ``D`` the values per example
    (so the step has RMS ``epsilon`` per coordinate before clipping). Zero gradients give zero steps.
    ``model`` is any module mapping ``inputs`` to logits (a whole network, or the layers above a
    hidden layer); its mode is left as is: call it in eval mode. Returns the perturbed inputs,
    detached, same shape and dtype as ``inputs``.
    """
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    flat = grad.flatten(1)
    norms = flat.norm(dim=1, keepdim=True)
    direction = torch.where(norms > 0, flat / norms.clamp_min(1e-30), torch.zeros_like(flat))
    step = epsilon * math.sqrt(flat.shape[1]) * direction
    return (inputs + step.view_as(inputs)).clamp(0.0, 1.0).detach()
