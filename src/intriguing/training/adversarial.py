"""Adversarial training with a pool of adversarial examples (Szegedy et al. 2014, §4.2).

The paper: "we have successfully trained a two layer 100-100-10 non-convolutional neural network
with a test error below 1.2% by keeping a pool of adversarial examples a random subset of which is
continuously replaced by newly generated adversarial examples and which is mixed into the original
training set all the time", against 1.6% with weight decay alone and 1.3% with careful dropout;
"adversarial examples for the higher layers seem to be significantly more useful than those on the
input or lower layers". This module implements that recipe for any model, with the details the paper
leaves open made explicit settings of :class:`PoolConfig`.

Training (:func:`adversarial_train`) is minibatch Adam/SGD on ``mean cross-entropy + weight decay``,
the objective of :mod:`intriguing.training.trainer` (its :func:`decay_terms`, schedules and dropout
RNG are reused), with three optional additions:

- **dropout** on the outputs of named layers during training (forward hooks, so the architecture and
  its ``state_dict`` stay exactly those of the model given: the comparison is on one architecture);
- a **pool** per *layer* named in :attr:`PoolConfig.layers`. ``"input"`` is the image space;
  a hidden layer name (a child of an ``nn.Sequential``, e.g. ``"act1"`` of the zoo's sigmoid nets)
  means the space of that layer's output ``h = below(x)``, in which ``above`` (the layers after it)
  is attacked. Sigmoid outputs lie in [0, 1], so the same box-constrained attack applies to the
  sub-network ``above`` with ``h`` as its "image" ``(N, D)``;
- at every minibatch whose number in the run (from the first, warm-up included) is a multiple of
  ``refresh_every``, after ``warmup_epochs`` clean epochs, each pool receives
  ``round(refresh_fraction * size)`` new examples, made by the refill attack against the *current*
  model from random training images: appended while the pool is not full, then replacing a random
  subset of its entries. Every minibatch of ``B`` clean examples is mixed with ``round(mix * B)``
  pool examples (split evenly across the pools) drawn at random, so the pool is mixed into the
  training set all the time. The loss is the mean cross-entropy over clean and pool examples.

A pool entry is ``(source index, perturbation delta)`` in its layer's space; at use, the example is
``clip(below(x_source) + delta, 0, 1)`` fed to ``above`` with the source's true label, and only
``above`` receives its gradient ("used to train the layers above"). For ``"input"`` this is exactly
the stored adversarial image; for a hidden layer the stored perturbation is applied to the current
representation of its source image.

Refill attacks (:attr:`PoolConfig.attack`):

- ``"lbfgs"``: the paper's box-constrained L-BFGS (:class:`intriguing.attacks.LBFGS`, untargeted,
  no polish) with a modest budget: ``lbfgs_steps`` constants of at most ``lbfgs_iterations``
  iterations each; minimum-distortion examples just across the decision boundary;
- ``"fgm"``: one-step L2 fast gradient: ``delta = epsilon * sqrt(D) * g / ||g||_2`` with ``g`` the
  gradient of the cross-entropy at ``h`` (``epsilon`` is an RMS per coordinate, the paper's
  distortion unit), clipped to [0, 1]. One forward+backward per example.

Resumable: with ``checkpoint`` set, the full training state (weights, optimizer and schedule, the
three random generators, the pools, the history, elapsed times) is written atomically after every
epoch into ONE safetensors file (tensors; the rest as JSON in its metadata, no pickle). A rerun with
the same config continues after the last finished epoch and produces the same numbers as an
uninterrupted run (CPU, same thread count).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from intriguing.attacks.checks import check_images
from intriguing.attacks.fgm import fgm_l2
from intriguing.errors import CheckpointError, InvalidInputError
from intriguing.progress import make_progress
from intriguing.training.checkpoint import (
    load_state,
    optimizer_state,
    optimizer_tensors,
    save_state,
)
from intriguing.training.config import TrainConfig
from intriguing.training.trainer import (
    check_training_data,
    decay_terms,
    dropout_rng,
    error_rate,
    make_scheduler,
    weight_penalty,
)

LogFn = Callable[[str], None]
INPUT = "input"
PoolAttack = Literal["lbfgs", "fgm"]
ATTACKS: tuple[str, ...] = get_args(PoolAttack)
CHECKPOINT_FORMAT = 1
MINIBATCH_OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class PoolConfig:
    """The pool of adversarial examples (paper §4.2) and how it is refilled.

    Attributes:
        layers: where the pool examples live: ``"input"`` (images) and/or names of hidden layers
            (children of an ``nn.Sequential`` whose outputs lie in [0, 1], e.g. sigmoid ``"act1"``);
            one pool per entry.
        size: maximum number of examples per pool.
        refresh_fraction: share of ``size`` regenerated at each refresh, in (0, 1].
        refresh_every: minibatches between refreshes.
        mix: pool examples per clean example in every minibatch (``round(mix * batch_size)``), > 0.
        warmup_epochs: clean epochs before the first refresh (the pool is empty until then).
        attack: ``"lbfgs"`` (the paper's attack, modest budget) or ``"fgm"`` (one-step L2).
        epsilon: ``"fgm"`` only: RMS distortion per coordinate of the step, > 0.
        lbfgs_steps: ``"lbfgs"`` only: constants tried per example (the attack's ``search_steps``).
        lbfgs_iterations: ``"lbfgs"`` only: L-BFGS iterations per constant (``max_iter``).
    """

    layers: tuple[str, ...] = (INPUT,)
    size: int = 5000
    refresh_fraction: float = 0.02
    refresh_every: int = 40
    mix: float = 0.5
    warmup_epochs: int = 1
    attack: PoolAttack = "lbfgs"
    epsilon: float = 0.05
    lbfgs_steps: int = 3
    lbfgs_iterations: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise InvalidInputError(
                f"pool layers must be a non-empty list of distinct names, got {list(self.layers)}"
            )
        if self.attack not in ATTACKS:
            raise InvalidInputError(
                f"pool attack must be one of {', '.join(ATTACKS)}; got {self.attack!r}"
            )
        for name in ("size", "refresh_every", "lbfgs_steps", "lbfgs_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"pool {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise InvalidInputError(
                f"pool warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}"
            )
        if not 0.0 < self.refresh_fraction <= 1.0:
            raise InvalidInputError(
                f"pool refresh_fraction must be in (0, 1], got {self.refresh_fraction}"
            )
        for name in ("mix", "epsilon"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"pool {name} must be a finite number > 0, got {value}")

    @property
    def refresh_count(self) -> int:
        """New examples per pool at each refresh (at least 1)."""
        return max(1, round(self.refresh_fraction * self.size))


@dataclass(frozen=True)
class AdvTrainConfig:
    """Everything that determines an adversarial-training run (stored in every checkpoint).

    Attributes:
        train: the minibatch recipe: ``optimizer`` ("adam" or "sgd"), ``epochs``, ``lr``,
            ``batch_size``, ``schedule``, per-layer ``weight_decay``, ``decay_divisor``, ``seed``
            (seeds minibatch order, dropout and the pool; weight initialisation is the caller's).
        dropout: ``{layer name: p}``: dropout with probability p in [0, 1) on that layer's output
            during training (``"flatten"`` of a zoo model = the input pixels).
        pool: the adversarial pool, or None (plain training: weight decay and/or dropout).
    """

    train: TrainConfig
    dropout: dict[str, float] = field(default_factory=dict)
    pool: PoolConfig | None = None

    def __post_init__(self) -> None:
        if self.train.optimizer not in MINIBATCH_OPTIMIZERS:
            raise InvalidInputError(
                f"adversarial training needs a minibatch optimizer ({', '.join(MINIBATCH_OPTIMIZERS)}); "
                f"got {self.train.optimizer!r}"
            )
        if self.train.pretrain is not None or self.train.frozen:
            raise InvalidInputError(
                "adversarial training does not support pretrain/frozen layers; train those first"
            )
        object.__setattr__(self, "dropout", dict(self.dropout))
        for layer, p in self.dropout.items():
            if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
                raise InvalidInputError(f"dropout[{layer!r}] must be in [0, 1), got {p!r}")

    def replace(self, **changes: Any) -> AdvTrainConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_dict` inverts it)."""
        pool = None
        if self.pool is not None:
            pool = dataclasses.asdict(self.pool)
            pool["layers"] = list(self.pool.layers)
        return {"train": self.train.to_dict(), "dropout": dict(self.dropout), "pool": pool}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdvTrainConfig:
        """Rebuild a config written by :meth:`to_dict`.

        Raises:
            InvalidInputError: unknown keys or invalid values.
        """
        if not isinstance(data, dict) or "train" not in data:
            raise InvalidInputError("an AdvTrainConfig dict needs a 'train' entry")
        unknown = sorted(set(data) - {"train", "dropout", "pool"})
        if unknown:
            raise InvalidInputError(f"unknown AdvTrainConfig fields {unknown}")
        pool = data.get("pool")
        if pool is not None:
            names = {f.name for f in dataclasses.fields(PoolConfig)}
            bad = sorted(set(pool) - names)
            if bad:
                raise InvalidInputError(f"unknown PoolConfig fields {bad}")
            pool = PoolConfig(**{**pool, "layers": tuple(pool.get("layers", (INPUT,)))})
        return cls(
            train=TrainConfig.from_dict(data["train"]),
            dropout=dict(data.get("dropout") or {}),
            pool=pool,
        )


@dataclass
class AdvTrainMetrics:
    """What an adversarial-training run reports.

    Attributes:
        train_error: clean training-set error after training, in [0, 1].
        test_error: test error after training (None without test data).
        wall_time_s, cpu_time_s: summed over every session of the run (resumes included).
        steps: optimizer updates.
        history: per epoch ``{"epoch", "loss", "train_error" (running, clean examples), "test_error",
            "pool_size", "refreshes", "pool_success", "pool_distortion", "time_s", "cpu_s"}``;
            ``pool_success`` / ``pool_distortion``: the refill attack's success rate and mean
            distortion (RMS per coordinate) over that epoch's new examples.
        resumed_from: epochs already done when this call started (0: a fresh run).
    """

    train_error: float
    test_error: float | None
    wall_time_s: float
    cpu_time_s: float
    steps: int
    history: list[dict[str, Any]]
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- model splitting
def split_model(model: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """``(below, above)`` with ``model(x) == above(below(x))`` and ``below`` ending at ``layer``.

    ``layer == "input"``: ``below`` is the identity and ``above`` the whole model (any module).
    Otherwise ``model`` must be an ``nn.Sequential`` with a child named ``layer``; both parts are
    ``nn.Sequential`` views sharing the model's modules (training ``above`` trains the model).

    Raises:
        InvalidInputError: the model is not an ``nn.Sequential``, has no such child, or ``layer`` is
            its last child (nothing above it to train).
    """
    if layer == INPUT:
        return nn.Identity(), model
    if not isinstance(model, nn.Sequential):
        raise InvalidInputError(
            f"a hidden-layer pool ({layer!r}) needs an nn.Sequential model, got {type(model).__name__}"
        )
    names = [name for name, _ in model.named_children()]
    if layer not in names:
        raise InvalidInputError(
            f"pool layer {layer!r} is not a child of the model (children: {', '.join(names)})"
        )
    cut = names.index(layer) + 1
    if cut == len(names):
        raise InvalidInputError(f"pool layer {layer!r} is the model's last layer; nothing above it")
    children = list(model.children())
    return nn.Sequential(*children[:cut]), nn.Sequential(*children[cut:])


def check_box(features: torch.Tensor, layer: str) -> None:
    """Refuse layer outputs outside [0, 1] (the attacks' box); names the layer.

    Raises:
        InvalidInputError: NaN or values outside [0, 1].
    """
    try:  # the attacks' own check of the box, so both say the same
        check_images(features, name=f"layer {layer!r} outputs")
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{exc}; a hidden-layer pool needs a bounded (sigmoid) layer: choose another layer"
        ) from None


# ----------------------------------------------------------------------------- refill attacks
def refill_attack(
    pool: PoolConfig,
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The pool's attack as ``fn(above, inputs, labels) -> (adversarial, success)``.

    ``above`` must be in eval mode; ``inputs`` ``(N, ...)`` in [0, 1]; ``success`` ``(N,)`` bool
    (misclassified after the attack).
    """
    if pool.attack == "fgm":

        def fgm(
            above: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            adversarial = fgm_l2(above, inputs, labels, pool.epsilon)
            with torch.no_grad():
                success = above(adversarial).argmax(1) != labels
            return adversarial, success

        return fgm

    from intriguing.attacks import LBFGS
    from intriguing.attacks.checks import AttackWarning

    attack = LBFGS(
        mode="untargeted",
        search_steps=pool.lbfgs_steps,
        max_iter=pool.lbfgs_iterations,
        refine=False,
        progress=False,
    )

    def lbfgs(
        above: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AttackWarning)  # saturated units: expected, harmless
            result = attack(above, inputs, labels)
        return result.adversarial, result.success

    return lbfgs


# ----------------------------------------------------------------------------- the pool
@dataclass
class Pool:
    """One layer's pool: ``source`` ``(P,)`` int64 training indices and ``delta`` ``(P, ...)``
    perturbations in that layer's space (``P <= capacity``)."""

    layer: str
    capacity: int
    source: torch.Tensor
    delta: torch.Tensor

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def insert(self, source: torch.Tensor, delta: torch.Tensor, generator: torch.Generator) -> None:
        """Append while there is room; then overwrite random distinct entries (paper: "a random
        subset of which is continuously replaced by newly generated adversarial examples")."""
        room = min(self.capacity - len(self), source.shape[0])
        if room > 0 and len(self) == 0:
            self.source, self.delta = source[:room].clone(), delta[:room].clone()
        elif room > 0:
            self.source = torch.cat([self.source, source[:room]])
            self.delta = torch.cat([self.delta, delta[:room]])
        source, delta = source[max(room, 0) :], delta[max(room, 0) :]
        if source.shape[0] > 0:
            slots = torch.randperm(len(self), generator=generator)[: source.shape[0]]
            self.source[slots] = source
            self.delta[slots] = delta

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` entries drawn uniformly with replacement: ``(source, delta)``."""
        picks = torch.randint(0, len(self), (count,), generator=generator)
        return self.source[picks], self.delta[picks]


# ----------------------------------------------------------------------------- checkpoint state
def _data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(str(tuple(images.shape)).encode())
    digest.update(labels.numpy().tobytes())
    digest.update(images.flatten(1).sum(1).double().numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the trainer
class _Run:
    """The mutable state of one run (see :func:`adversarial_train`)."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        config: AdvTrainConfig,
    ) -> None:
        self.model, self.images, self.labels, self.config = model, images, labels, config
        cfg = config.train
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.terms = decay_terms(model, cfg)
        self.batches = math.ceil(images.shape[0] / cfg.batch_size)
        self.optimizer: torch.optim.Optimizer
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        else:
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=0.9)
        self.scheduler = make_scheduler(self.optimizer, cfg, cfg.epochs * self.batches)
        self.order = torch.Generator().manual_seed(cfg.seed)
        self.dropout = torch.Generator().manual_seed(cfg.seed + 1)
        self.pool_rng = torch.Generator().manual_seed(cfg.seed + 2)
        self.dropout_on = False
        self.splits: dict[str, tuple[nn.Module, nn.Module]] = {}
        self.pools: dict[str, Pool] = {}
        pool = config.pool
        if pool is not None:
            self.attack = refill_attack(pool)
            for layer in pool.layers:
                self.splits[layer] = split_model(model, layer)
                empty = torch.zeros(0, dtype=torch.long)
                self.pools[layer] = Pool(layer, pool.size, empty, torch.zeros(0))
        self.epoch, self.steps = 0, 0
        self.history: list[dict[str, Any]] = []
        self.wall_s, self.cpu_s = 0.0, 0.0

    # -- checkpoint
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = optimizer_tensors(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        for name in ("order", "dropout", "pool_rng"):
            tensors[f"rng/{name}"] = getattr(self, name).get_state()
        for layer, pool in self.pools.items():
            tensors[f"pool/{layer}/source"] = pool.source
            tensors[f"pool/{layer}/delta"] = pool.delta
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "data": _data_fingerprint(self.images, self.labels),
            "epoch": self.epoch,
            "steps": self.steps,
            "history": self.history,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "optimizer": optim_meta,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }
        return tensors, meta

    def restore(self, path: Path) -> None:
        tensors, meta = load_state(path, CHECKPOINT_FORMAT)
        if meta.get("config") != self.config.to_dict():
            raise CheckpointError(
                f"{path}: checkpoint was written with another config; delete it or use another path"
            )
        if meta.get("data") != _data_fingerprint(self.images, self.labels):
            raise CheckpointError(
                f"{path}: checkpoint was written for other training data; delete it or use another path"
            )
        try:
            weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
            self.model.load_state_dict(weights, strict=True)
            self.optimizer.load_state_dict(optimizer_state(tensors, meta["optimizer"]))
            if self.scheduler is not None:
                self.scheduler.load_state_dict(meta["scheduler"])
            for name in ("order", "dropout", "pool_rng"):
                getattr(self, name).set_state(tensors[f"rng/{name}"])
            for layer, pool in self.pools.items():
                pool.source = tensors[f"pool/{layer}/source"]
                pool.delta = tensors[f"pool/{layer}/delta"]
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(
                f"{path}: checkpoint does not fit this model ({first}); delete it and rerun"
            ) from None
        self.epoch, self.steps = int(meta["epoch"]), int(meta["steps"])
        self.history = list(meta["history"])
        self.wall_s, self.cpu_s = float(meta["wall_s"]), float(meta["cpu_s"])

    # -- dropout hooks
    @contextmanager
    def dropout_hooks(self) -> Iterator[None]:
        modules = dict(self.model.named_modules())
        handles = []
        for layer, p in self.config.dropout.items():
            if layer not in modules or not layer:
                raise InvalidInputError(
                    f"dropout names layer {layer!r}, which the model does not have "
                    f"(layers: {', '.join(n for n in modules if n)})"
                )
            if p > 0:
                handles.append(modules[layer].register_forward_hook(self._dropout_hook(p)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _dropout_hook(self, p: float) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if self.dropout_on and module.training:
                return F.dropout(output, p, training=True)
            return output

        return hook

    # -- the pool
    def pool_active(self) -> bool:
        pool = self.config.pool
        return pool is not None and self.epoch >= pool.warmup_epochs

    def refresh(self, stats: dict[str, float]) -> None:
        """Add ``refresh_count`` new adversarial examples to every pool (model in eval mode)."""
        pool = self.config.pool
        assert pool is not None
        self.model.eval()
        try:
            for layer, (below, above) in self.splits.items():
                below.eval(), above.eval()  # the split views are containers of their own
                src = torch.randint(
                    0, self.images.shape[0], (pool.refresh_count,), generator=self.pool_rng
                )
                with torch.no_grad():
                    base = below(self.images[src])
                if layer != INPUT:
                    check_box(base, layer)
                adversarial, success = self.attack(above, base, self.labels[src])
                delta = (adversarial - base).detach()
                self.pools[layer].insert(src, delta, self.pool_rng)
                stats["new"] += src.shape[0]
                stats["success"] += int(success.sum())
                stats["distortion"] += float(delta.flatten(1).pow(2).mean(1).sqrt().sum())
        finally:
            for below, above in self.splits.values():
                below.train(), above.train()
            self.model.train()

    def pool_loss(self) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of a draw from every non-empty pool, and the number drawn."""
        pool = self.config.pool
        assert pool is not None
        share = max(1, round(pool.mix * self.config.train.batch_size / len(self.pools)))
        total, count = torch.zeros(()), 0
        for layer, entries in self.pools.items():
            if len(entries) == 0:
                continue
            below, above = self.splits[layer]
            src, delta = entries.sample(share, self.pool_rng)
            with torch.no_grad():
                self.dropout_on = False
                base = below(self.images[src])
            inputs = (base + delta).clamp(0.0, 1.0)
            self.dropout_on = True
            total = total + F.cross_entropy(above(inputs), self.labels[src], reduction="sum")
            count += share
        return total, count

    # -- one epoch
    def train_epoch(self, bar: Any, task: Any) -> dict[str, Any]:
        cfg, pool = self.config.train, self.config.pool
        n = self.images.shape[0]
        perm = torch.randperm(n, generator=self.order)
        total_loss, wrong = 0.0, 0
        stats = {"new": 0.0, "success": 0.0, "distortion": 0.0, "refreshes": 0.0}
        active = self.pool_active()
        self.model.train()
        for i in range(0, n, cfg.batch_size):
            if active and pool is not None and self.steps % pool.refresh_every == 0:
                self.refresh(stats)
                stats["refreshes"] += 1
            idx = perm[i : i + cfg.batch_size]
            self.optimizer.zero_grad()
            with dropout_rng(self.dropout):
                self.dropout_on = True
                logits = self.model(self.images[idx])
                clean = F.cross_entropy(logits, self.labels[idx], reduction="sum")
                extra, count = self.pool_loss() if active else (torch.zeros(()), 0)
            self.dropout_on = False
            loss = (clean + extra) / (idx.shape[0] + count) + weight_penalty(self.terms)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.steps += 1
            total_loss += loss.item() * idx.shape[0]
            wrong += int((logits.argmax(dim=1) != self.labels[idx]).sum())
            bar.advance(task)
        new = max(1.0, stats["new"])
        return {
            "epoch": self.epoch + 1,
            "loss": total_loss / n,
            "train_error": wrong / n,
            "pool_size": {layer: len(p) for layer, p in self.pools.items()},
            "refreshes": int(stats["refreshes"]),
            "pool_success": stats["success"] / new if stats["new"] else None,
            "pool_distortion": stats["distortion"] / new if stats["new"] else None,
        }


def adversarial_train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AdvTrainConfig,
    *,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    stop_after: int | None = None,
    log: LogFn | None = None,
    description: str = "adversarial training",
) -> AdvTrainMetrics:
    """Train ``model`` in place on ``(images, labels)`` with ``config`` (paper §4.2).

    Args:
        model: any ``nn.Module`` ``(N, ...)`` in [0, 1] -> logits ``(N, K)``; hidden-layer pools and
            dropout name its layers (an ``nn.Sequential`` for hidden-layer pools). Its initial
            weights are the caller's (seed them).
        images: float32 ``(N, ...)`` in [0, 1]; labels: int64 ``(N,)``.
        config: the recipe (:class:`AdvTrainConfig`).
        test_images, test_labels: evaluated after every epoch (history ``test_error``).
        checkpoint: a file written atomically after every epoch; if it exists the run resumes
            from it (it must have been written with the same config and data).
        stop_after: stop after this many epochs of THIS call (to test resumption); None: run to
            ``config.train.epochs``.
        log: receives one line per epoch.
        description: the progress bar's label.

    Returns:
        :class:`AdvTrainMetrics`; the model is left in eval mode.

    Raises:
        InvalidInputError: bad data or settings; CheckpointError: unusable checkpoint.
    """
    check_training_data(images, labels)
    _check_test(test_images, test_labels)
    run = _Run(model, images, labels, config)
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        run.restore(path)
    resumed_from = run.epoch
    epochs = config.train.epochs
    last = epochs if stop_after is None else min(epochs, run.epoch + max(0, stop_after))
    with run.dropout_hooks(), make_progress() as bar:
        task = bar.add_task(description, total=epochs * run.batches, completed=run.steps)
        while run.epoch < last:
            start, cpu_start = time.perf_counter(), time.process_time()
            row = run.train_epoch(bar, task)
            row["test_error"] = (
                None
                if test_images is None or test_labels is None
                else error_rate(model, test_images, test_labels)
            )
            run.epoch += 1
            run.wall_s += time.perf_counter() - start
            run.cpu_s += time.process_time() - cpu_start
            row["time_s"], row["cpu_s"] = run.wall_s, run.cpu_s
            run.history.append(row)
            if path is not None:
                save_state(path, *run.state())
            _log_epoch(log, row, epochs)
    model.eval()
    return AdvTrainMetrics(
        train_error=error_rate(model, images, labels),
        test_error=(
            None
            if test_images is None or test_labels is None
            else error_rate(model, test_images, test_labels)
        ),
        wall_time_s=run.wall_s,
        cpu_time_s=run.cpu_s,
        steps=run.steps,
        history=run.history,
        resumed_from=resumed_from,
    )


def _check_test(images: torch.Tensor | None, labels: torch.Tensor | None) -> None:
    if (images is None) != (labels is None):
        raise InvalidInputError("pass both test_images and test_labels, or neither")
    if images is not None and labels is not None:
        check_training_data(images, labels)


def _log_epoch(log: LogFn | None, row: dict[str, Any], epochs: int) -> None:
    if log is None:
        return
    test = "" if row["test_error"] is None else f", test error {100 * row['test_error']:.2f}%"
    pool = "" if row["pool_success"] is None else f", pool success {100 * row['pool_success']:.0f}%"
    log(
        f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, running train error "
        f"{100 * row['train_error']:.2f}%{test}{pool}, {row['time_s']:.0f}s"
    )
