"""Training recipes: what the paper's §4.2 models were trained with, as data.

The zoo (:mod:`intriguing.models.registry`) attaches a recipe to every architecture, so it lives here,
below training/ (which re-exports it as :mod:`intriguing.training.config`).

A :class:`TrainConfig` fully describes one training run (optimizer, iterations, learning rate,
per-layer weight decays, the sparse-autoencoder pre-training of AE400-10, seed). It is stored in the
JSON sidecar of every checkpoint and is part of the checkpoint's cache key.

Weight decay (paper §4.2: "quadratic weight decay on the connection weights: lambda * sum w_i^2 / k
added to the total loss, where k is the number of units in the layer"). The objective minimised is::

    mean_over_batch(cross_entropy(logits, labels)) + sum_layers lambda_l * sum(W_l ** 2) / k_l

on connection weights only (biases are not decayed). ``decay_divisor`` chooses k:

- ``"2"`` (default): k = 2, the classic ``lambda/2 * ||W||^2``. With the MEAN cross-entropy this is
  the reading that reproduces Table 1's linear models (softmax1/2/3: 7.4/9.4/21.7% test error against
  the paper's 7.4/9.4/20%); see docs/zoo.md for the measurements behind the choice.
- ``"units"``: k = number of output units of the layer (10 for a softmax layer): softmax3 then only
  reaches ~14.6% test error, far from the paper's 20%.
- ``"1"``: k = 1 (plain ``lambda * ||W||^2``): softmax3 reaches ~26.6%, also too far.
A summed (not averaged) cross-entropy makes every lambda of Table 1 negligible (60000x weaker).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from intriguing.errors import InvalidInputError

Optimizer = Literal["lbfgs", "adam", "sgd"]
Schedule = Literal["constant", "onecycle", "cosine"]
DecayDivisor = Literal["2", "units", "1"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
DECAY_DIVISORS: tuple[str, ...] = get_args(DecayDivisor)


@dataclass(frozen=True)
class SparseAutoencoderConfig:
    """Unsupervised pre-training of one sigmoid layer as a sparse autoencoder (AE400-10, §4.2).

    The layer ``layer`` (an ``nn.Linear`` followed by a sigmoid) is trained as the encoder of
    ``x -> sigmoid(W x + b) -> sigmoid(W' h + b')`` on the training images (labels unused) with the
    loss ``mean_over_batch(sum_pixels (x_hat - x)^2) / 2 + beta * sum_j KL(rho || rho_hat_j)
    + lambda/2 * (||W||^2 + ||W'||^2)`` (the UFLDL sparse autoencoder; rho_hat_j is the mean
    activation of hidden unit j over the minibatch). Afterwards the layer is frozen (not fine-tuned).

    Attributes:
        layer: name of the encoder ``nn.Linear`` in the model's ``nn.Sequential``.
        sparsity: target mean activation rho of each hidden unit, in (0, 1).
        sparsity_weight: beta, weight of the KL sparsity penalty.
        weight_decay: lambda of the encoder/decoder weight decay.
        epochs: passes over the training images (Adam).
        lr: Adam learning rate (one-cycle schedule).
        batch_size: minibatch size.
    """

    layer: str = "fc1"
    sparsity: float = 0.1
    sparsity_weight: float = 3.0
    weight_decay: float = 3e-3
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise InvalidInputError(f"sparsity must be in (0, 1), got {self.sparsity}")
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_positive("lr", self.lr)
        _check_non_negative("sparsity_weight", self.sparsity_weight)
        _check_non_negative("weight_decay", self.weight_decay)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in each checkpoint sidecar).

    Attributes:
        optimizer: ``"lbfgs"`` (full-batch ``torch.optim.LBFGS`` with strong-Wolfe line search, the
            paper's "L-BFGS until convergence"), ``"adam"`` or ``"sgd"`` (minibatch, momentum 0.9).
        iterations: L-BFGS only: maximum number of L-BFGS iterations (it stops earlier when the
            gradient or loss change falls below the tolerances).
        epochs: minibatch optimizers only: passes over the training set.
        lr: learning rate (L-BFGS: initial step scale, 1.0 is standard; Adam/SGD: peak rate).
        batch_size: minibatch size (ignored by L-BFGS).
        schedule: learning-rate schedule of the minibatch optimizers.
        weight_decay: ``{layer name: lambda}`` for the connection weights of those layers; layers
            not listed get no decay. Biases are never decayed.
        decay_divisor: the k in ``lambda * sum(W^2) / k`` (see the module docstring).
        history_size: L-BFGS memory.
        tolerance_grad: L-BFGS stops when the largest absolute gradient entry is below this.
        tolerance_change: L-BFGS stops when the loss or step changes less than this.
        frozen: names of layers whose parameters are not trained (after any pre-training).
        pretrain: optional unsupervised pre-training of one layer (AE400-10).
        seed: seed of the weight initialisation, minibatch order and dropout.
    """

    optimizer: Optimizer = "lbfgs"
    iterations: int = 500
    epochs: int = 10
    lr: float = 1.0
    batch_size: int = 128
    schedule: Schedule = "onecycle"
    weight_decay: dict[str, float] = field(default_factory=dict)
    decay_divisor: DecayDivisor = "2"
    history_size: int = 20
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-10
    frozen: tuple[str, ...] = ()
    pretrain: SparseAutoencoderConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("decay_divisor", self.decay_divisor, DECAY_DIVISORS)
        for name in ("iterations", "epochs", "batch_size", "history_size", "lr"):
            _check_positive(name, getattr(self, name))
        for layer, lam in self.weight_decay.items():
            _check_non_negative(f"weight_decay[{layer!r}]", lam)
        object.__setattr__(self, "frozen", tuple(self.frozen))
        object.__setattr__(self, "weight_decay", dict(self.weight_decay))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (e.g. ``config.replace(seed=1)``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_dict`` inverts it)."""
        data = dataclasses.asdict(self)
        data["frozen"] = list(self.frozen)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config written by :meth:`to_dict`.

        Raises:
            InvalidInputError: unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInputError(
                f"unknown TrainConfig fields {unknown}; expected some of {sorted(names)}"
            )
        values = dict(data)
        if values.get("pretrain") is not None:
            values["pretrain"] = SparseAutoencoderConfig(**values["pretrain"])
        if "frozen" in values:
            values["frozen"] = tuple(values["frozen"])
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise InvalidInputError(f"{name} must be positive, got {value}")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value}")
