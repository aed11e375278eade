"""Model families trained per task: linear softmax, sigmoid MLPs, a probe on AE400-10's encoder (§4.2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from intriguing.errors import InvalidInputError


@dataclass(frozen=True)
class Family:
    """A model family trained on every task.

    Attributes:
        name: ``"softmax"``, ``"mlp"``, ``"ae-probe"`` or ``"mlp-b"``.
        description: one line for reports.
        hidden: the sigmoid net's two hidden sizes (None: no hidden layers).
        weight_decay: per-layer lambdas (the zoo's: softmax1, N100-100-10, AE400-10's softmax).
        lr: Adam's peak learning rate.
        seed_offset: added to the run's seed for this family's initialisation and minibatches.
        attacked: whether its adversarial examples are made (``mlp-b`` is only a transfer target).
    """

    name: str
    description: str
    hidden: tuple[int, int] | None
    weight_decay: Mapping[str, float]
    lr: float
    seed_offset: int = 0
    attacked: bool = True


def _families() -> dict[str, Family]:
    from intriguing.models.zoo import MLP_DECAY

    families = (
        Family(
            "softmax",
            "linear softmax on the pixels, lambda 1e-4 (softmax1's)",
            None,
            {"out": 1e-4},
            1e-2,
        ),
        Family(
            "mlp",
            "sigmoid 100-100 net, lambda 1e-5/1e-5/1e-6 (N100-100-10's)",
            (100, 100),
            dict(MLP_DECAY),
            3e-3,
        ),
        Family(
            "ae-probe",
            "softmax probe on the frozen AE400-10 encoder, lambda 1e-6",
            None,
            {"out": 1e-6},
            1e-2,
        ),
        Family(
            "mlp-b",
            "sigmoid 123-456 net, other seed (transfer target only)",
            (123, 456),
            dict(MLP_DECAY),
            3e-3,
            seed_offset=1,
            attacked=False,
        ),
    )
    return {f.name: f for f in families}


FAMILIES: dict[str, Family] = _families()
DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def check_families(names: Sequence[str]) -> tuple[str, ...]:
    """Validate family names (order kept).

    Raises:
        InvalidInputError: an unknown or repeated name, or no attacked family.
    """
    out: list[str] = []
    for name in names:
        if name not in FAMILIES:
            raise InvalidInputError(
                f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}"
            )
        if name in out:
            raise InvalidInputError(f"model family {name!r} is listed twice")
        out.append(name)
    if not any(FAMILIES[n].attacked for n in out):
        raise InvalidInputError("choose at least one attacked family (softmax, mlp or ae-probe)")
    return tuple(out)


def build_task_model(
    family: str, num_classes: int, encoder: Mapping[str, torch.Tensor] | None = None
) -> nn.Sequential:
    """A zoo architecture (:mod:`intriguing.models.architectures`) with ``num_classes`` logits.

    The zoo factories end in ``out = Linear(h, 10)``; it is replaced by ``Linear(h, num_classes)``.
    ``ae-probe`` copies ``encoder`` (the AE400-10 ``fc1`` state dict) into ``fc1``. Images
    ``(N, 1, 28, 28)`` in [0, 1] -> logits ``(N, num_classes)``. Weights are drawn from the global
    torch RNG: seed it first.

    Raises:
        InvalidInputError: unknown family, fewer than 2 classes, or ``ae-probe`` without an encoder.
    """
    from intriguing.models.architectures import autoencoder_softmax, linear_softmax, sigmoid_mlp

    spec = FAMILIES.get(family)
    if spec is None:
        raise InvalidInputError(
            f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}"
        )
    if num_classes < 2:
        raise InvalidInputError(f"a task needs at least 2 classes, got {num_classes}")
    if family == "ae-probe":
        if encoder is None:
            raise InvalidInputError("the ae-probe family needs the AE400-10 encoder weights")
        model = autoencoder_softmax(int(encoder["weight"].shape[0]))
        fc1 = model.fc1
        if not isinstance(fc1, nn.Linear):
            raise TypeError("autoencoder_softmax has an nn.Linear encoder called 'fc1'")
        fc1.load_state_dict(dict(encoder))
    elif spec.hidden is not None:
        model = sigmoid_mlp(*spec.hidden)
    else:
        model = linear_softmax()
    out = model.out
    if not isinstance(out, nn.Linear):
        raise TypeError("zoo architectures end in an nn.Linear called 'out'")
    model.out = nn.Linear(out.in_features, num_classes)
    return model
