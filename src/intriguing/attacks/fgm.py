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

from intriguing.attacks.checks import (
    attack_dtype,
    check_images,
    check_labels,
    check_nonnegative,
    check_output_type,
    logits_shape_problem,
)
from intriguing.errors import InvalidInputError
from intriguing.models.user import first_line


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

    Raises:
        InvalidInputError: inputs not in [0, 1] (or NaN, empty, not floating), labels not an
            integer tensor ``(N,)`` of the model's classes, epsilon not a finite number >= 0, a
            half-precision model, or a model that fails on the inputs or returns no ``(N, K)``
            logits.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(inputs, name="inputs")
    check_nonnegative("epsilon", epsilon, "the step's RMS size")
    n = int(inputs.shape[0])
    if not isinstance(labels, torch.Tensor):  # before the forward pass: a cheap refusal first
        check_labels(labels, n)
    dtype = attack_dtype(model, inputs.dtype)  # a float64 model takes float64 inputs
    x = inputs.detach().to(dtype).clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            logits = model(x)
        except (InvalidInputError, MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:  # the caller's model can fail in any way: one line
            raise InvalidInputError(
                f"the model fails on the inputs {tuple(inputs.shape)} ({first_line(exc)}); "
                "pass inputs of the shape it takes"
            ) from None
        logits = check_output_type(logits)
        problem = logits_shape_problem(tuple(logits.shape), n)
        if problem is not None:
            raise InvalidInputError(problem)
        labels = check_labels(labels, n, num_classes=int(logits.shape[1])).to(logits.device)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    flat = grad.flatten(1)
    norms = flat.norm(dim=1, keepdim=True)
    direction = torch.where(norms > 0, flat / norms.clamp_min(1e-30), torch.zeros_like(flat))
    step = epsilon * math.sqrt(flat.shape[1]) * direction
    return (inputs + step.view_as(inputs)).clamp(0.0, 1.0).detach().to(inputs.dtype)
