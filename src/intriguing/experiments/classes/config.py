"""The settings of one run (:class:`ClassesConfig`) and each family's training recipe."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from intriguing.errors import InvalidInputError
from intriguing.experiments.classes.families import DEFAULT_FAMILIES, FAMILIES, check_families
from intriguing.experiments.classes.tasks import DEFAULT_TASKS, parse_tasks
from intriguing.experiments.specs import Dataset, check_choice


@dataclass(frozen=True)
class ClassesConfig:
    """Settings of one run (all stored in results.json).

    Attributes:
        tasks: task names (see :func:`get_task`).
        families: model families (see :data:`FAMILIES`).
        n: test images attacked per task and family (the first ``n`` the model gets right).
        updates: Adam minibatch updates per model, rounded up to whole epochs of the task (epochs
            = ``ceil(updates * batch_size / task training images)``; each task gets at least
            ``updates``, up to one epoch more): a small task gets more epochs, not fewer steps.
        batch_size: minibatch size.
        train_limit: use only the first ``train_limit`` task training images (None: all).
        restricted: run the 10-class comparison when ``all`` is among the tasks.
        exact: also solve the linear softmax's exact QP on the attacked images.
        seed: seeds models, minibatches and bootstrap.
        dataset: ``"mnist"`` or ``"mnist-5k"``.
        bootstrap: bootstrap resamples of the confidence intervals.
        attack: keyword settings of :class:`intriguing.attacks.LBFGS` (beyond ``mode``).
        encoder: the zoo model whose ``fc1`` the probe uses.
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    families: tuple[str, ...] = DEFAULT_FAMILIES
    n: int = 1000
    updates: int = 4700
    batch_size: int = 128
    train_limit: int | None = None
    restricted: bool = True
    exact: bool = True
    seed: int = 0
    dataset: Dataset = "mnist"
    bootstrap: int = 2000
    attack: Mapping[str, Any] = field(default_factory=lambda: {"threads": 1})
    encoder: str = "AE400-10"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, Dataset)
        object.__setattr__(self, "tasks", tuple(t.name for t in parse_tasks(self.tasks)))
        object.__setattr__(self, "families", check_families(self.families))
        for name in ("n", "updates", "batch_size", "bootstrap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.train_limit is not None and (
            isinstance(self.train_limit, bool) or self.train_limit < 2
        ):
            raise InvalidInputError(f"train_limit must be >= 2 or None, got {self.train_limit!r}")
        object.__setattr__(self, "attack", dict(self.attack))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {
            "tasks": list(self.tasks),
            "families": list(self.families),
            "n": self.n,
            "updates": self.updates,
            "batch_size": self.batch_size,
            "train_limit": self.train_limit,
            "restricted": self.restricted,
            "exact": self.exact,
            "seed": self.seed,
            "dataset": self.dataset,
            "bootstrap": self.bootstrap,
            "attack": dict(self.attack),
            "encoder": self.encoder,
        }


def train_config(family: str, n_train: int, config: ClassesConfig) -> Any:
    """The :class:`intriguing.training.TrainConfig` of ``family`` on a task with ``n_train`` images:
    minibatch Adam, one-cycle schedule, ``ceil(updates * batch / n_train)`` epochs, the zoo's decay."""
    from intriguing.training import TrainConfig

    spec = FAMILIES[family]
    epochs = max(1, math.ceil(config.updates * config.batch_size / n_train))
    return TrainConfig(
        optimizer="adam",
        epochs=epochs,
        lr=spec.lr,
        batch_size=config.batch_size,
        schedule="onecycle",
        weight_decay=dict(spec.weight_decay),
        frozen=("fc1",) if family == "ae-probe" else (),
        seed=config.seed + spec.seed_offset,
    )
