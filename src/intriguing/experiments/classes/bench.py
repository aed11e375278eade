"""The per-process workbench the steps share: data, the AE400-10 encoder and loaded task models.

Images are float32 ``(N, 1, 28, 28)`` in [0, 1]; task labels int64 ``(N,)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments.classes.config import ClassesConfig
from intriguing.experiments.classes.families import build_task_model
from intriguing.experiments.classes.tasks import Task
from intriguing.experiments.graph import shipped_as
from intriguing.experiments.steps import LazyData

if TYPE_CHECKING:
    from intriguing.data import MNIST

EncoderLoader = Callable[
    [str, str, "str | os.PathLike[str] | None"], tuple[dict[str, torch.Tensor], str]
]


def load_encoder(
    name: str, dataset: str, data_dir: str | os.PathLike[str] | None
) -> tuple[dict[str, torch.Tensor], str]:
    """``fc1``'s state dict of zoo model ``name`` (trained and cached by ``train_model``) and its
    checkpoint key (so that a retrained encoder invalidates the probes)."""
    from intriguing.training.api import train_model

    trained = train_model(name, dataset=dataset, data_dir=data_dir, seed=0)
    fc1 = getattr(trained.model, "fc1", None)
    if not isinstance(fc1, nn.Linear):
        raise InvalidInputError(f"zoo model {name!r} has no fc1 encoder layer to probe")
    state = {k: v.detach().clone() for k, v in fc1.state_dict().items()}
    return state, str(trained.sidecar.get("key", name))


# ----------------------------------------------------------------------------------- workbench


@dataclass
class Bench(LazyData):
    """Per-process state shared by the steps: the data, the encoder and loaded models.

    Pickled (for a Ray task) as where its data comes from, never with its tensors: each process
    rebuilds one :class:`Bench` per setting (:func:`~intriguing.experiments.graph.process_local`)
    and keeps it.
    """

    dataset: str
    data_dir: str | os.PathLike[str] | None
    config: ClassesConfig
    encoder_loader: EncoderLoader = load_encoder
    _data: MNIST | None = None
    _encoder: tuple[dict[str, torch.Tensor], str] | None = None
    _models: dict[str, nn.Module] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Shipped (to Ray workers) as where its data comes from: see :func:`graph.process_local`."""
        return shipped_as(Bench, self.dataset, self.data_dir, self.config, self.encoder_loader)

    def encoder(self) -> tuple[dict[str, torch.Tensor], str]:
        if self._encoder is None:
            self._encoder = self.encoder_loader(self.config.encoder, self.dataset, self.data_dir)
        return self._encoder

    def task_split(self, task: Task, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(indices into split, images, task labels)`` of the task's images of ``split``."""
        images, digits = self.data.split(split)
        index, labels = task.subset(images, digits)
        if split == "train" and self.config.train_limit is not None:
            index, labels = index[: self.config.train_limit], labels[: self.config.train_limit]
        return index, images[index], labels

    def check_train_limit(self, tasks: Sequence[Task]) -> None:
        """Refuse (one line, before any training) a ``train_limit`` whose first images of a task
        miss some of its classes: the model would learn fewer classes than the task has (a "3v8"
        model that only saw 3s: 49% test error, and 0% fooled as class 8 is out of reach)."""
        limit = self.config.train_limit
        if limit is None:
            return
        for task in tasks:
            _, _, labels = self.task_split(task, "train")
            seen = set(labels.tolist())
            if len(seen) < task.num_classes:
                missing = [task.class_names[c] for c in range(task.num_classes) if c not in seen]
                raise InvalidInputError(
                    f"--train-limit {limit}: the first {limit} training images of task "
                    f"{task.name!r} hold no {', '.join(missing)}; raise --train-limit"
                )

    def model(self, root: Path, train_result: Mapping[str, Any]) -> nn.Module:
        """The trained model of a ``train`` step, loaded from its artifact (eval mode)."""
        key = str(train_result["artifact"])
        if key not in self._models:
            from safetensors.torch import load_file

            family = str(train_result["family"])
            encoder = self.encoder()[0] if family == "ae-probe" else None
            model = build_task_model(family, int(train_result["num_classes"]), encoder)
            try:
                state = load_file(str(root / key))
            except Exception as exc:  # safetensors raises several types for corrupt files
                raise IntriguingError(
                    f"{root / key}: unreadable model weights ({exc}); delete the run folder's "
                    "steps/train entry and rerun"
                ) from None
            model.load_state_dict(state)
            self._models[key] = model.eval()
        return self._models[key]
