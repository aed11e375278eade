"""Fewer classes: are adversarial examples harder to find when a classifier has few classes?

Issue #9, item 4, from the critique's open question "if the number of classes is small, will the
problem be less severe?" (``paper/summary-and-critique.txt``, "Thoughts"). The paper (§4.2) attacks
10-class MNIST models only; here the same model families are trained on MNIST tasks with 2, 5 and
10 classes, attacked with the paper's box-constrained L-BFGS (§4.1) and compared.

Tasks (:func:`get_task`) map MNIST digits to task classes: ``"3v8"`` (digit 3 -> 0, digit 8 -> 1,
other digits dropped), ``"0vrest"`` (0 -> 0, every other digit -> 1), ``"0-4"`` (digits 0..4 -> 0..4),
``"all"`` (the 10 digits). Per task four models are trained on the task's training images
(:data:`FAMILIES`): a linear softmax (``softmax``), a sigmoid 100-100 net (``mlp``), a linear probe on
the frozen encoder of the zoo's AE400-10 (``ae-probe``, like the paper's QuocNet car classifier) and a
second sigmoid net with other sizes and seed (``mlp-b``, only a transfer target). Every model has as
many output logits as the task has classes.

Measured per task and attacked family (steps of a resumable graph, :mod:`.graph`):

- ``train/<task>/<family>``: the model (weights in the step's artifact folder) and its test error;
- ``attack/<task>/<family>``: untargeted L-BFGS on the first ``n`` task test images the model
  classifies correctly: the minimum distortion (RMS per pixel); for the linear softmax also the exact
  optimum (:func:`intriguing.attacks.exact_linear_attack`, a certified QP);
- ``transfer/<task>/<family>``: the share of those adversarial examples that the task's other models
  misclassify (counted on the images they classify correctly when clean);
- ``restricted/<task>/<family>`` (tasks with fewer than 10 classes, when ``all`` is run): the 10-class
  model of the same family attacked on the same images, once untargeted and once restricted to the
  digits of the task's other classes. This separates the two ways a task changes the problem: fewer
  alternatives for the attack (10-class model, restricted vs untargeted) and a model trained for the
  task (task model vs 10-class restricted).

Images are float32 ``(N, 1, 28, 28)`` in [0, 1]; distortion is the paper's ``sqrt(sum r^2 / 784)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from intriguing._io import atomic_path, atomic_write_json
from intriguing.errors import IntriguingError, InvalidInputError

if TYPE_CHECKING:
    from intriguing.data import MNIST
    from intriguing.experiments.graph import Backend, Step, StepContext

SCHEMA = "intriguing.classes/1"
NUM_DIGITS = 10
MODEL_FILE = "model.safetensors"
ATTACK_FILE = "attack.safetensors"
DEFAULT_TASKS: tuple[str, ...] = ("3v8", "0vrest", "0-4", "all")
ALL_TASK = "all"
CONFIDENCE = 0.95

# --------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """A classification task on MNIST digits.

    Attributes:
        name: the task's name (``"3v8"``, ``"0vrest"``, ``"0-4"``, ``"all"``, ...).
        groups: ``groups[j]`` are the digits of task class ``j``; digits in no group are dropped.
        class_names: one short name per task class.
        description: one line for reports.
    """

    name: str
    groups: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...]
    description: str

    @property
    def num_classes(self) -> int:
        """K, the number of task classes (>= 2)."""
        return len(self.groups)

    @property
    def digits(self) -> tuple[int, ...]:
        """The digits the task uses, sorted."""
        return tuple(sorted(d for group in self.groups for d in group))

    def mapping(self) -> torch.Tensor:
        """``(10,)`` int64: the task class of each digit, -1 for digits the task drops."""
        table = torch.full((NUM_DIGITS,), -1, dtype=torch.int64)
        for cls, group in enumerate(self.groups):
            table[list(group)] = cls
        return table

    def task_labels(self, digits: torch.Tensor) -> torch.Tensor:
        """Task labels ``(N,)`` of MNIST labels ``digits`` ``(N,)`` (-1 for dropped digits)."""
        return self.mapping()[digits]

    def subset(
        self, images: torch.Tensor, digits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices ``(M,)`` of the images whose digit the task uses, and their task labels ``(M,)``."""
        labels = self.task_labels(digits)
        index = torch.nonzero(labels >= 0).flatten()
        return index, labels[index]

    def other_digits(self, digit: int) -> tuple[int, ...]:
        """Digits of every task class except ``digit``'s: the targets a 10-class model must reach
        for an image of ``digit`` to change its *task* class."""
        own = int(self.mapping()[digit])
        if own < 0:
            raise InvalidInputError(f"digit {digit} is not part of task {self.name!r}")
        return tuple(d for cls, group in enumerate(self.groups) if cls != own for d in group)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (part of step parameters)."""
        return {
            "name": self.name,
            "groups": [list(g) for g in self.groups],
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "description": self.description,
        }


def pair_task(a: int, b: int) -> Task:
    """Digit ``a`` (class 0) against digit ``b`` (class 1)."""
    return Task(f"{a}v{b}", ((a,), (b,)), (str(a), str(b)), f"digit {a} vs digit {b}")


def one_vs_rest_task(d: int) -> Task:
    """Digit ``d`` (class 0) against the nine other digits (class 1)."""
    rest = tuple(x for x in range(NUM_DIGITS) if x != d)
    return Task(f"{d}vrest", ((d,), rest), (str(d), f"not {d}"), f"digit {d} vs the nine others")


def range_task(a: int, b: int) -> Task:
    """Digits ``a..b`` (inclusive), each its own class; ``"0-9"`` is the full MNIST problem."""
    digits = tuple(range(a, b + 1))
    name = ALL_TASK if (a, b) == (0, 9) else f"{a}-{b}"
    return Task(
        name,
        tuple((d,) for d in digits),
        tuple(str(d) for d in digits),
        f"digits {a}-{b} ({len(digits)} classes)" if name != ALL_TASK else "all 10 digits",
    )


#: Named tasks; other names of the forms AvB, Dvrest and A-B are parsed by :func:`get_task`.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (pair_task(3, 8), pair_task(4, 9), one_vs_rest_task(0), range_task(0, 4))
}
TASKS[ALL_TASK] = range_task(0, 9)

_PAIR = re.compile(r"^(\d)v(\d)$")
_REST = re.compile(r"^(\d)vrest$")
_RANGE = re.compile(r"^(\d)-(\d)$")
TASK_HELP = "AvB (e.g. 3v8), Dvrest (e.g. 0vrest), A-B with A < B (e.g. 0-4) or all"


def get_task(name: str) -> Task:
    """The task called ``name``: a key of :data:`TASKS` or a name of the form ``AvB``, ``Dvrest``
    or ``A-B`` (digits).

    Raises:
        InvalidInputError: an unknown or malformed name.
    """
    key = str(name).strip()
    if key in TASKS:
        return TASKS[key]
    if match := _PAIR.match(key):
        a, b = int(match[1]), int(match[2])
        if a != b:
            return pair_task(a, b)
    elif match := _REST.match(key):
        return one_vs_rest_task(int(match[1]))
    elif match := _RANGE.match(key):
        a, b = int(match[1]), int(match[2])
        if a < b:
            return range_task(a, b)
    raise InvalidInputError(f"unknown task {name!r}; use {TASK_HELP}")


def parse_tasks(names: str | Sequence[str]) -> list[Task]:
    """Tasks from a comma-separated string or a list of names, duplicates refused.

    Raises:
        InvalidInputError: no task, an unknown name or a repeated task.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    tasks = [get_task(item) for item in items if str(item).strip()]
    if not tasks:
        raise InvalidInputError(f"no task given; name at least one: {TASK_HELP}")
    seen = [t.name for t in tasks]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"task {repeated[0]!r} is listed twice; name each task once")
    return tasks


# ------------------------------------------------------------------------------------ families


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


# -------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ClassesConfig:
    """Settings of one run (all stored in results.json).

    Attributes:
        tasks: task names (see :func:`get_task`).
        families: model families (see :data:`FAMILIES`).
        n: test images attacked per task and family (the first ``n`` the model gets right).
        updates: Adam minibatch updates per model, the same for every task (epochs =
            ``ceil(updates * batch_size / task training images)``): a small task gets more epochs,
            not fewer steps.
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
    dataset: str = "mnist"
    bootstrap: int = 2000
    attack: Mapping[str, Any] = field(default_factory=lambda: {"threads": 1})
    encoder: str = "AE400-10"

    def __post_init__(self) -> None:
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


# ------------------------------------------------------------------------------------- encoder

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
class Bench:
    """Per-process state shared by the steps: the data, the encoder and loaded models.

    Pickled (for a Ray task) as where its data comes from, never with its tensors: each process
    rebuilds one :class:`Bench` per setting (:func:`_bench_in_this_process`) and keeps it.
    """

    dataset: str
    data_dir: str | os.PathLike[str] | None
    config: ClassesConfig
    encoder_loader: EncoderLoader = load_encoder
    _data: MNIST | None = None
    _encoder: tuple[dict[str, torch.Tensor], str] | None = None
    _models: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def data(self) -> MNIST:
        if self._data is None:
            from intriguing.data import load_mnist

            self._data = load_mnist(self.data_dir, dataset=self.dataset)
        return self._data

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        data_dir = (
            None if self.data_dir is None else str(Path(self.data_dir).expanduser().resolve())
        )
        return _bench_in_this_process, (self.dataset, data_dir, self.config, self.encoder_loader)

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


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Argmax predictions ``(N,)`` int64 of ``model`` on ``images`` ``(N, 1, 28, 28)``."""
    if images.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([model(images[i : i + chunk]).argmax(1) for i in range(0, len(images), chunk)])


def _rel(ctx: StepContext, path: Path) -> str:
    return path.relative_to(ctx.store.root).as_posix()


# ---------------------------------------------------------------------------------------- steps


def train_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Train one family on one task's training images; store the weights; measure test error."""
    from safetensors.torch import save_file

    from intriguing.training import train
    from intriguing.training.checkpoint import seeded

    p = ctx.params
    task, family = get_task(str(p["task"]["name"])), str(p["family"])
    _, images, labels = bench.task_split(task, "train")
    config = train_config(family, int(labels.shape[0]), bench.config)
    encoder = bench.encoder()[0] if family == "ae-probe" else None
    with seeded(config.seed):
        model = build_task_model(family, task.num_classes, encoder)
    metrics = train(model, images, labels, config, description=f"{task.name}/{family}")
    path = ctx.artifact_dir() / MODEL_FILE
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    _, test_images, test_labels = bench.task_split(task, "test")
    test_error = float((predict(model, test_images) != test_labels).double().mean())
    bench._models[_rel(ctx, path)] = model.eval()
    return {
        "task": task.name,
        "family": family,
        "num_classes": task.num_classes,
        "n_train": int(labels.shape[0]),
        "n_test": int(test_labels.shape[0]),
        "train_error": metrics.train_error,
        "test_error": test_error,
        "epochs": config.epochs,
        "steps": metrics.steps,
        "wall_time_s": metrics.wall_time_s,
        "cpu_time_s": metrics.cpu_time_s,
        "train_config": config.to_dict(),
        "artifact": _rel(ctx, path),
    }


def _attack(settings: Mapping[str, Any], **extra: Any) -> Any:
    from intriguing.attacks import LBFGS

    return LBFGS(**{**dict(settings), **extra})


def attack_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Untargeted L-BFGS (§4.1) on the first ``n`` task test images the model gets right.

    Stores the :class:`~intriguing.attacks.AttackResult`; the JSON holds per image the test-set
    index, task label, distortion and success; for the linear softmax also the exact optimum.
    """
    from intriguing.attacks import exact_linear_attack

    p = ctx.params
    task = get_task(str(p["task"]["name"]))
    train_result = ctx.deps[str(p["train"])]
    model = bench.model(ctx.store.root, train_result)
    index, images, labels = bench.task_split(task, "test")
    right = predict(model, images) == labels
    correct = torch.nonzero(right).flatten()[: int(p["n"])]
    x, y = images[correct], labels[correct]
    result = _attack(p["attack"], mode="untargeted")(model, x, y)
    path = ctx.artifact_dir() / ATTACK_FILE
    result.save(path)
    out: dict[str, Any] = {
        "task": task.name,
        "family": train_result["family"],
        "n_task_test": int(labels.shape[0]),
        "n_correct": int(right.sum()),
        "indices": index[correct].tolist(),
        "labels": y.tolist(),
        "distortion": [float(v) for v in result.distortion.tolist()],
        "success": [bool(v) for v in result.success.tolist()],
        "grad_evals": [int(v) for v in result.grad_evals.tolist()],
        "elapsed_s": result.elapsed_s,
        "artifact": _rel(ctx, path),
        "exact": None,
    }
    if p.get("exact") and len(y):
        exact = exact_linear_attack(model, x, y, progress=False)
        out["exact"] = [float(v) if math.isfinite(v) else None for v in exact.distortion.tolist()]
    return out


def transfer_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Share of a source model's adversarial examples misclassified by the task's other models.

    ``rate[target]`` counts the successful adversarial examples whose original ``target``
    classifies correctly (so a clean mistake is not counted as transfer); ``clean_error[target]``
    is ``target``'s error on the attacked originals.
    """
    from intriguing.attacks import AttackResult

    p = ctx.params
    source = ctx.deps[str(p["attack_key"])]
    stored = AttackResult.load(ctx.store.root / source["artifact"])
    images, _ = bench.data.split("test")
    originals = images[torch.tensor(source["indices"], dtype=torch.int64)]
    labels, success = stored.labels, stored.success.bool()
    rows: dict[str, Any] = {}
    for target, key in dict(p["targets"]).items():
        model = bench.model(ctx.store.root, ctx.deps[key])
        clean_ok = predict(model, originals) == labels
        fooled = predict(model, stored.adversarial) != labels
        counted = success & clean_ok
        rows[target] = {
            "n": int(counted.sum()),
            "fooled": int((fooled & counted).sum()),
            "clean_error": float((~clean_ok).double().mean()) if len(labels) else None,
        }
    return {"task": source["task"], "source": source["family"], "targets": rows}


def restricted_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """The 10-class model of the same family on the task's attacked images (see module docs).

    For the images the 10-class model classifies correctly: ``untargeted`` is its minimum
    distortion to any other digit, ``restricted`` its minimum over targets among the digits of the
    task's other classes (one targeted L-BFGS problem per allowed digit, the smallest success kept),
    ``task`` the task model's distortion on the same image; for the linear softmax also the exact
    optima. Only images where all three attacks succeed are paired.
    """
    from intriguing.attacks import exact_linear_attack

    p = ctx.params
    task = get_task(str(p["task"]["name"]))
    source = ctx.deps[str(p["attack_key"])]
    model = bench.model(ctx.store.root, ctx.deps[str(p["train_all"])])
    images, digits = bench.data.split("test")
    index = torch.tensor(source["indices"], dtype=torch.int64)
    x, d = images[index], digits[index]
    keep = torch.nonzero(predict(model, x) == d).flatten()
    x, d = x[keep], d[keep]
    out: dict[str, Any] = {"task": task.name, "family": source["family"], "n_kept": len(keep)}
    if len(keep) == 0:
        return {**out, "kept": [], "task_distortion": [], "untargeted": [], "restricted": []}
    untargeted = _attack(p["attack"], mode="untargeted")(model, x, d)
    owners = [i for i, digit in enumerate(d.tolist()) for _ in task.other_digits(digit)]
    goals = [t for digit in d.tolist() for t in task.other_digits(digit)]
    owner = torch.tensor(owners, dtype=torch.int64)
    targeted = _attack(p["attack"], mode="targeted")(
        model, x[owner], d[owner], targets=torch.tensor(goals, dtype=torch.int64)
    )
    restricted = _min_per_owner(targeted.distortion, targeted.success, owner, len(keep))
    task_dist = [source["distortion"][i] if source["success"][i] else None for i in keep.tolist()]
    out.update(
        kept=keep.tolist(),
        task_distortion=task_dist,
        untargeted=[
            float(v) if s else None
            for v, s in zip(
                untargeted.distortion.tolist(), untargeted.success.tolist(), strict=True
            )
        ],
        restricted=restricted,
        targeted_problems=len(goals),
    )
    if p.get("exact"):
        exact = exact_linear_attack(model, x, d, progress=False)
        per_target = exact.per_target_distortion
        if per_target is None:  # untargeted runs always fill it
            raise IntriguingError("the exact oracle returned no per-target distortions")
        allowed = torch.zeros_like(per_target, dtype=torch.bool)
        allowed[owner, torch.tensor(goals, dtype=torch.int64)] = True
        masked = torch.where(allowed, per_target, torch.full_like(per_target, math.inf))
        out["exact_untargeted"] = [_finite(v) for v in exact.distortion.tolist()]
        out["exact_restricted"] = [_finite(v) for v in masked.amin(1).tolist()]
        out["exact_task"] = [source["exact"][i] for i in keep.tolist()] if source["exact"] else None
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _min_per_owner(
    distortion: torch.Tensor, success: torch.Tensor, owner: torch.Tensor, n: int
) -> list[float | None]:
    """Per image, the smallest distortion over its successful targeted problems (None: none)."""
    values = torch.where(
        success.bool(), distortion.double(), torch.full_like(distortion.double(), math.inf)
    )
    best = torch.full((n,), math.inf, dtype=torch.float64).scatter_reduce(
        0, owner, values, reduce="amin"
    )
    return [_finite(v) for v in best.tolist()]


# ---------------------------------------------------------------------------------------- graph


def build_steps(config: ClassesConfig, bench: Bench) -> list[Step]:
    """The step graph of a run (train -> attack -> transfer, restricted)."""
    from functools import partial

    from intriguing.experiments.graph import Step

    identity = bench.data.identity
    steps: list[Step] = []
    tasks = [get_task(t) for t in config.tasks]
    attack_settings = {**dict(config.attack), "seed": config.seed}
    has_all = ALL_TASK in config.tasks
    for task in tasks:
        train_keys = {f: f"train/{task.name}/{f}" for f in config.families}
        for family in config.families:
            params: dict[str, Any] = {
                "task": task.to_dict(),
                "family": family,
                "updates": config.updates,
                "batch_size": config.batch_size,
                "train_limit": config.train_limit,
                "seed": config.seed,
                "lr": FAMILIES[family].lr,
                "weight_decay": dict(FAMILIES[family].weight_decay),
                "data": identity,
            }
            if family == "ae-probe":
                params["encoder"] = bench.encoder()[1]
            steps.append(Step(train_keys[family], partial(train_step, bench), params))
        for family in (f for f in config.families if FAMILIES[f].attacked):
            attack_key = f"attack/{task.name}/{family}"
            steps.append(
                Step(
                    attack_key,
                    partial(attack_step, bench),
                    {
                        "task": task.to_dict(),
                        "train": train_keys[family],
                        "n": config.n,
                        "attack": attack_settings,
                        "exact": config.exact and family == "softmax",
                    },
                    deps=(train_keys[family],),
                )
            )
            others = {f: train_keys[f] for f in config.families if f != family}
            if others:
                steps.append(
                    Step(
                        f"transfer/{task.name}/{family}",
                        partial(transfer_step, bench),
                        {"attack_key": attack_key, "targets": others},
                        deps=(attack_key, *others.values()),
                    )
                )
            if config.restricted and has_all and task.name != ALL_TASK:
                train_all = f"train/{ALL_TASK}/{family}"
                steps.append(
                    Step(
                        f"restricted/{task.name}/{family}",
                        partial(restricted_step, bench),
                        {
                            "task": task.to_dict(),
                            "attack_key": attack_key,
                            "train_all": train_all,
                            "attack": attack_settings,
                            "exact": config.exact and family == "softmax",
                        },
                        deps=(attack_key, train_all),
                    )
                )
    return steps


# -------------------------------------------------------------------------------------- summary


def mean_median_ci(values: Sequence[float], *, resamples: int, seed: int) -> dict[str, Any]:
    """Mean and median of ``values`` with percentile-bootstrap 95% intervals (None when n < 2)."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": int(data.size), "mean": None, "median": None}
    if data.size == 0:
        return {**out, "mean_ci": None, "median_ci": None}
    out["mean"], out["median"] = float(data.mean()), float(np.median(data))
    for name, stat in (("mean", np.mean), ("median", np.median)):
        if data.size < 2 or np.ptp(data) == 0:
            out[f"{name}_ci"] = [out[name], out[name]] if data.size >= 2 else None
            continue
        res = bootstrap(
            (data,),
            stat,
            n_resamples=resamples,
            confidence_level=CONFIDENCE,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        out[f"{name}_ci"] = [
            float(res.confidence_interval.low),
            float(res.confidence_interval.high),
        ]
    return out


def ratio_of_means_ci(
    num: Sequence[float], den: Sequence[float], *, resamples: int, seed: int
) -> dict[str, Any]:
    """``mean(num) / mean(den)`` over paired values with a paired percentile-bootstrap 95% CI."""
    from scipy.stats import bootstrap

    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if a.size == 0 or b.mean() <= 0:
        return {"n": int(a.size), "ratio": None, "ratio_ci": None}
    ratio = float(a.mean() / b.mean())
    if a.size < 2:
        return {"n": int(a.size), "ratio": ratio, "ratio_ci": None}

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(x.mean(axis=axis) / y.mean(axis=axis))

    res = bootstrap(
        (a, b),
        stat,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"n": int(a.size), "ratio": ratio, "ratio_ci": [low, high]}


def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of a proportion ``k / n`` (None when n = 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return [float(ci.low), float(ci.high)]


def summarize(results: Mapping[str, Any], config: ClassesConfig) -> dict[str, Any]:
    """The run's results document (``results.json``) from the step results."""
    rows: list[dict[str, Any]] = []
    stats = {"resamples": config.bootstrap, "seed": config.seed}
    for task_name in config.tasks:
        task = get_task(task_name)
        for family in config.families:
            trained = results[f"train/{task.name}/{family}"]
            row: dict[str, Any] = {
                "task": task.name,
                "num_classes": task.num_classes,
                "family": family,
                "description": FAMILIES[family].description,
                "n_train": trained["n_train"],
                "train_error": trained["train_error"],
                "test_error": trained["test_error"],
                "epochs": trained["epochs"],
                "train_cpu_s": trained["cpu_time_s"],
                "attacked": FAMILIES[family].attacked,
            }
            attack = results.get(f"attack/{task.name}/{family}")
            if attack is not None:
                row.update(_attack_row(attack, stats))
            transfer = results.get(f"transfer/{task.name}/{family}")
            if transfer is not None:
                row["transfer"] = {
                    target: {
                        **t,
                        "rate": t["fooled"] / t["n"] if t["n"] else None,
                        "rate_ci": wilson(t["fooled"], t["n"]),
                    }
                    for target, t in transfer["targets"].items()
                }
            restricted = results.get(f"restricted/{task.name}/{family}")
            if restricted is not None:
                row["restricted"] = _restricted_row(restricted, stats)
            rows.append(row)
    return {
        "schema": SCHEMA,
        "question": "if the number of classes is small, will the problem be less severe?",
        "config": config.to_dict(),
        "tasks": [get_task(t).to_dict() for t in config.tasks],
        "families": {f: FAMILIES[f].description for f in config.families},
        "rows": rows,
    }


def _attack_row(attack: Mapping[str, Any], stats: Mapping[str, int]) -> dict[str, Any]:
    success = attack["success"]
    dist = [d for d, s in zip(attack["distortion"], success, strict=True) if s]
    n = len(success)
    row: dict[str, Any] = {
        "n_task_test": attack["n_task_test"],
        "n_attacked": n,
        "success_rate": sum(success) / n if n else None,
        "distortion": mean_median_ci(dist, **stats),
        "grad_evals_mean": float(np.mean(attack["grad_evals"])) if n else None,
        "attack_s": attack["elapsed_s"],
    }
    if attack.get("exact"):
        exact = [v for v in attack["exact"] if v is not None]
        row["exact"] = mean_median_ci(exact, **stats)
        pairs = [
            (d, e)
            for d, e, s in zip(attack["distortion"], attack["exact"], success, strict=True)
            if s and e
        ]
        row["lbfgs_over_exact"] = (
            float(np.mean([d for d, _ in pairs]) / np.mean([e for _, e in pairs]))
            if pairs
            else None
        )
    return row


def _restricted_row(r: Mapping[str, Any], stats: Mapping[str, int]) -> dict[str, Any]:
    triples = [
        (t, u, s)
        for t, u, s in zip(r["task_distortion"], r["untargeted"], r["restricted"], strict=True)
        if t is not None and u is not None and s is not None
    ]
    task_d, untargeted, restricted = (
        (list(col) for col in zip(*triples, strict=True)) if triples else ([], [], [])
    )
    out: dict[str, Any] = {
        "n_kept": r["n_kept"],
        "n_paired": len(triples),
        "task_mean": float(np.mean(task_d)) if triples else None,
        "all_untargeted": mean_median_ci(untargeted, **stats),
        "all_restricted": mean_median_ci(restricted, **stats),
        "task_over_restricted": ratio_of_means_ci(task_d, restricted, **stats),
        "restricted_over_untargeted": ratio_of_means_ci(restricted, untargeted, **stats),
    }
    if r.get("exact_restricted") is not None:
        keep = [
            (t, u, s)
            for t, u, s in zip(
                r.get("exact_task") or [None] * r["n_kept"],
                r["exact_untargeted"],
                r["exact_restricted"],
                strict=True,
            )
            if t is not None and u is not None and s is not None
        ]
        if keep:
            t_e, u_e, s_e = (np.asarray(col) for col in zip(*keep, strict=True))
            out["exact"] = {
                "n": len(keep),
                "task_mean": float(t_e.mean()),
                "all_untargeted_mean": float(u_e.mean()),
                "all_restricted_mean": float(s_e.mean()),
            }
    return out


_PROCESS_BENCHES: dict[tuple[Any, ...], Bench] = {}


def _bench_in_this_process(
    dataset: str, data_dir: str | None, config: ClassesConfig, encoder_loader: EncoderLoader
) -> Bench:
    """The :class:`Bench` for these settings in this process (created once, loaded lazily)."""
    settings = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    key = (dataset, data_dir, settings, encoder_loader)
    if key not in _PROCESS_BENCHES:
        _PROCESS_BENCHES[key] = Bench(dataset, data_dir, config, encoder_loader=encoder_loader)
    return _PROCESS_BENCHES[key]


# ------------------------------------------------------------------------------------------ run


def run_classes(
    config: ClassesConfig,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    encoder_loader: EncoderLoader = load_encoder,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment in ``out``; write ``out/results.json`` atomically.

    Returns the results document (:func:`summarize`) with ``timings`` added. ``backend`` runs the
    steps (default: local; ``RayBackend`` for a Ray cluster, with identical results).

    Raises:
        IntriguingError: bad settings, missing data, an unusable ``out``.
    """
    from intriguing.experiments.graph import RunStore, run_graph

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise IntriguingError(f"--out {root} is a file; give a directory")
    start, cpu_start = time.perf_counter(), time.process_time()
    bench = Bench(config.dataset, data_dir, config, encoder_loader=encoder_loader)
    reused: list[str] = []
    results = run_graph(
        build_steps(config, bench),
        RunStore(root),
        description="classes",
        on_step=lambda step, cached: reused.append(step.key) if cached else None,
        backend=backend,
    )
    doc = summarize(results, config)
    store = RunStore(root)
    records = [store.load(key) for key in results]
    doc["timings"] = {
        "steps_wall_time_s": sum(float(r["elapsed_s"]) for r in records if r is not None),
        "wall_time_s": time.perf_counter() - start,
        "cpu_time_s": time.process_time() - cpu_start,
        "torch_threads": torch.get_num_threads(),
        "steps_reused": len(reused),
        "steps_total": len(results),
    }
    atomic_write_json(root / "results.json", doc)
    return doc
