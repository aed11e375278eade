"""Target choosers for targeted attacks (the paper's ``D(x, l)`` needs a label ``l != f(x)``).

- ``random``: uniform over the classes other than the label, from a seeded generator;
- ``next``: ``(label + 1) mod K`` (advertorch's and many papers' convention);
- ``least-likely``: the class with the smallest logit on the clean image;
- ``best``: every class other than the label; the attack keeps the smallest distortion
  (:func:`all_targets` enumerates them).
"""

from __future__ import annotations

import torch

from intriguing.errors import InvalidInputError

TARGET_CHOICES = ("random", "next", "least-likely", "best")


def check_target_choice(choice: str | int) -> str | int:
    """Validate a chooser name or a fixed target class; returns it unchanged."""
    if isinstance(choice, bool) or not isinstance(choice, (str, int)):
        raise InvalidInputError(
            f"target must be one of {', '.join(TARGET_CHOICES)} or a class index"
        )
    if isinstance(choice, str) and choice not in TARGET_CHOICES:
        raise InvalidInputError(
            f"unknown target chooser {choice!r}; choose one of {', '.join(TARGET_CHOICES)} or a class index"
        )
    if isinstance(choice, int) and choice < 0:
        raise InvalidInputError(f"target class must be >= 0, got {choice}")
    return choice


def choose_targets(
    choice: str | int,
    labels: torch.Tensor,
    clean_logits: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One target per example for the choosers ``random``, ``next``, ``least-likely`` or a class.

    Args:
        choice: chooser name or a fixed class index.
        labels: ``(N,)`` int64 true labels.
        clean_logits: ``(N, K)`` logits on the clean images (for ``least-likely``).
        generator: a seeded CPU ``torch.Generator`` for ``random``.

    Returns:
        ``(N,)`` int64 targets, each different from its label.

    Raises:
        InvalidInputError: ``best`` (use :func:`all_targets`), or a fixed class that is out of range
            or equal to some example's label.
    """
    num_classes = int(clean_logits.shape[1])
    if isinstance(choice, int):
        if choice >= num_classes:
            raise InvalidInputError(
                f"target class {choice} is out of range for {num_classes} classes"
            )
        same = int((labels == choice).sum())
        if same:
            raise InvalidInputError(
                f"{same} example(s) already have label {choice}; drop them or use another target"
            )
        return torch.full_like(labels, choice)
    if choice == "next":
        return (labels + 1) % num_classes
    if choice == "random":
        offset = torch.randint(1, num_classes, labels.shape, generator=generator)
        return (labels + offset.to(labels.device)) % num_classes
    if choice == "least-likely":
        masked = clean_logits.detach().scatter(1, labels[:, None], float("inf"))
        return masked.argmin(1)
    raise InvalidInputError(f"target chooser {choice!r} picks no single target; use all_targets")


def all_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Every class except the label: ``(N, K-1)`` int64, row ``i`` in increasing class order."""
    classes = torch.arange(num_classes, device=labels.device).expand(labels.shape[0], -1)
    keep = classes != labels[:, None]
    return classes[keep].view(labels.shape[0], num_classes - 1)
