"""Training loops: full-batch L-BFGS (the paper's "L-BFGS until convergence", §4.2) and minibatch
Adam/SGD, both minimising ``mean cross-entropy + per-layer weight decay`` (see :mod:`.config`).

:func:`train` trains an ``nn.Sequential`` zoo model in place. It also runs the optional sparse-
autoencoder pre-training of one layer (AE400-10) and freezes the layers the config names; when a
prefix of the network is frozen and deterministic, its output is computed once and only the rest is
trained (full-batch L-BFGS over a frozen encoder then costs no encoder passes).

Runs are deterministic on CPU given ``config.seed``: minibatch order and dropout come from
generators seeded by it (weight initialisation is the caller's job: see
:func:`intriguing.training.checkpoint.seeded_build`).

Thread count (issue 16): float reductions depend on how many threads split them, so weights and
every number computed from them depend on ``torch.set_num_threads``. Every command runs with
:data:`DEFAULT_THREADS` (set once by the CLI through :func:`use_default_threads`), and training
always runs under :func:`training_threads`, so a checkpoint in the cache is the same whichever
command (``train``, ``reproduce``, a library call) trained it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from intriguing.attacks.base import torch_threads
from intriguing.errors import InvalidInputError
from intriguing.progress import finish, make_progress
from intriguing.training.autoencoder import pretrain_sparse_autoencoder
from intriguing.training.config import TrainConfig

LogFn = Callable[[str], None]
EVAL_CHUNK = 8192
LBFGS_CHUNK = 10  # L-BFGS iterations per progress update
LBFGS_LOG_EVERY = 50  # L-BFGS iterations per log line
MAX_EVALS_PER_ITERATION = 25  # loose cap on line-search evaluations (never the stopping reason)
DEFAULT_THREADS = 1  # torch threads of every command and of all training (see module docstring)


def use_default_threads() -> None:
    """Set ``torch.set_num_threads(DEFAULT_THREADS)`` (the CLI calls it once per command)."""
    torch.set_num_threads(DEFAULT_THREADS)


def training_threads() -> contextlib.AbstractContextManager[None]:
    """Run a block (training) with :data:`DEFAULT_THREADS` torch threads, restored afterwards."""
    return torch_threads(DEFAULT_THREADS)


@dataclass
class TrainMetrics:
    """What a training run reports.

    Attributes:
        loss: final training objective (mean cross-entropy + weight decay) on the training set.
        train_error: fraction of training images misclassified after training, in [0, 1].
        wall_time_s: wall-clock seconds of the whole run (pre-training included).
        cpu_time_s: CPU seconds of this process over the run, all threads (on a busy, shared
            machine this is the fairer cost measure: wall time on k idle cores >= cpu_time_s / k).
        steps: L-BFGS iterations or minibatch updates.
        history: one dict per epoch / L-BFGS chunk: ``{"step", "loss", "train_error", "time_s"}``.
        converged: L-BFGS stopped on its tolerances before ``iterations`` (always False for
            minibatch optimizers).
    """

    loss: float
    train_error: float
    wall_time_s: float
    cpu_time_s: float
    steps: int
    converged: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, fields in declaration order."""
        return dataclasses.asdict(self)


def check_training_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Check images (N, ...) float in [0, 1] without NaN and int64 labels (N,) in 0..9.

    Raises:
        InvalidInputError: naming the problem.
    """
    if not torch.is_floating_point(images):
        raise InvalidInputError(f"images must be a float tensor, got dtype {images.dtype}")
    if images.ndim < 2 or images.shape[0] == 0:
        raise InvalidInputError(
            f"images must have shape (N, ...) with N > 0, got {tuple(images.shape)}"
        )
    if labels.shape != (images.shape[0],):
        raise InvalidInputError(
            f"labels must have shape ({images.shape[0]},) to match the images, got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise InvalidInputError(f"labels must be int64, got {labels.dtype}")
    if torch.isnan(images).any():
        raise InvalidInputError("images contain NaN; clean the data before training")
    if images.min() < 0 or images.max() > 1:
        raise InvalidInputError(
            f"images must lie in [0, 1], got values in [{images.min().item():.3g}, {images.max().item():.3g}]"
        )


def layer_units(module: nn.Module) -> int:
    """Number of units of a weight layer: output features (Linear) or channels (Conv)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    raise InvalidInputError(
        f"weight decay needs an nn.Linear or nn.Conv layer, got {type(module).__name__}"
    )


def decay_terms(model: nn.Module, config: TrainConfig) -> list[tuple[torch.Tensor, float]]:
    """``[(weight, coefficient)]`` such that the penalty is ``sum coefficient * sum(weight ** 2)``.

    The coefficient is ``lambda / k`` with k from ``config.decay_divisor`` ("2", "units" or "1").

    Raises:
        InvalidInputError: a layer named in ``config.weight_decay`` does not exist or has no weight.
    """
    modules = dict(model.named_modules())
    terms = []
    for name, lam in config.weight_decay.items():
        module = modules.get(name)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise InvalidInputError(
                f"weight_decay names layer {name!r}, which the model does not have "
                f"(layers: {', '.join(n for n in modules if n)})"
            )
        divisor = {"2": 2.0, "1": 1.0}.get(config.decay_divisor)
        k = divisor if divisor is not None else float(layer_units(module))
        if lam > 0:
            terms.append((module.weight, lam / k))
    return terms


def weight_penalty(terms: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """``sum coefficient * sum(weight ** 2)`` over ``terms`` (a 0-d tensor; 0 when there are none)."""
    total = torch.zeros(())
    for weight, coefficient in terms:
        total = total + coefficient * weight.pow(2).sum()
    return total


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` and all its sub-modules in eval mode, then restore each
    sub-module's own ``training`` flag (a train-mode model with a frozen, eval-mode BatchNorm comes
    back exactly so)."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on ``images`` in chunks (no gradient; mode left unchanged)."""
    return torch.cat([model(images[i : i + chunk]) for i in range(0, images.shape[0], chunk)])


@torch.no_grad()
def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction in [0, 1] of ``images`` that ``model`` (in eval mode) misclassifies."""
    with eval_mode(model):
        wrong = (predict_logits(model, images).argmax(dim=1) != labels).sum().item()
    return wrong / max(1, labels.shape[0])


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    log: LogFn | None = None,
    description: str = "training",
) -> TrainMetrics:
    """Train ``model`` in place on ``(images, labels)`` following ``config``.

    Args:
        model: an ``nn.Sequential`` (N,1,28,28) -> logits (N, 10), e.g. from the zoo.
        images: float32 (N, 1, 28, 28) in [0, 1].
        labels: int64 (N,) class indices.
        config: the recipe (optimizer, iterations/epochs, weight decay, pre-training, seed).
        log: called with one short line per epoch / L-BFGS chunk (None: silent).
        description: label of the progress bar.

    Returns:
        :class:`TrainMetrics`; the model is left in eval mode.

    Raises:
        InvalidInputError: bad data, or a config naming layers the model lacks.
    """
    check_training_data(images, labels)
    start, cpu_start = time.perf_counter(), time.process_time()
    layers = _named_layers(model, config)
    if config.pretrain is not None:
        encoder = layers[config.pretrain.layer]
        if not isinstance(encoder, nn.Linear):
            raise InvalidInputError(
                f"pretrain layer {config.pretrain.layer!r} must be an nn.Linear"
            )
        pretrain_sparse_autoencoder(
            encoder, images.flatten(1), config.pretrain, seed=config.seed, log=log
        )
    for name in config.frozen:
        layers[name].requires_grad_(False)
    trainable, inputs = _split_frozen_prefix(model, images)
    terms = decay_terms(model, config)
    model.train()
    job = _Job(trainable, inputs, labels, terms, config, log, description)
    if config.optimizer == "lbfgs":
        steps, converged, history = _train_lbfgs(job)
    else:
        steps, history = _train_minibatch(job)
        converged = False
    model.eval()
    loss = _objective(trainable, inputs, labels, terms)
    train_err = error_rate(model, images, labels)
    return TrainMetrics(
        loss=loss,
        train_error=train_err,
        wall_time_s=time.perf_counter() - start,
        cpu_time_s=time.process_time() - cpu_start,
        steps=steps,
        history=history,
        converged=converged,
    )


def _named_layers(model: nn.Module, config: TrainConfig) -> dict[str, nn.Module]:
    layers = dict(model.named_modules())
    wanted = [*config.frozen, *([config.pretrain.layer] if config.pretrain else [])]
    for name in wanted:
        if name not in layers or not name:
            raise InvalidInputError(f"config names layer {name!r}, which the model does not have")
    return layers


def _split_frozen_prefix(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """Cache the output of a frozen, deterministic prefix of an ``nn.Sequential``.

    Returns ``(rest, inputs)``: the trainable remainder and its inputs. Models that are not
    ``nn.Sequential`` or have no frozen prefix come back unchanged with the images.
    """
    if not isinstance(model, nn.Sequential):
        return model, images
    children = list(model.children())
    cut = 0
    for index, child in enumerate(children):
        params = list(child.parameters())
        if any(p.requires_grad for p in params) or _is_stochastic(child):
            break
        if params:
            cut = index + 1
    if cut == 0:
        return model, images
    prefix, rest = nn.Sequential(*children[:cut]), nn.Sequential(*children[cut:])
    prefix.eval()
    with torch.no_grad():
        features = predict_logits(prefix, images)
    return rest, features


def _is_stochastic(module: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.dropout._DropoutNd | nn.modules.batchnorm._BatchNorm)
        for m in module.modules()
    )


def _objective(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    terms: list[tuple[torch.Tensor, float]],
) -> float:
    """Full-data objective (mean cross-entropy + penalty) in eval mode, without gradient."""
    with eval_mode(model), torch.no_grad():
        total = 0.0
        for i in range(0, inputs.shape[0], EVAL_CHUNK):
            logits = model(inputs[i : i + EVAL_CHUNK])
            total += F.cross_entropy(logits, labels[i : i + EVAL_CHUNK], reduction="sum").item()
        value = total / inputs.shape[0] + float(weight_penalty(terms))
    return value


class _Job(NamedTuple):
    """One training run's inputs: ``inputs`` ``(N, ...)`` after any frozen prefix, int64 labels."""

    model: nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    terms: list[tuple[torch.Tensor, float]]
    config: TrainConfig
    log: LogFn | None
    description: str


def _train_lbfgs(job: _Job) -> tuple[int, bool, list[dict[str, float]]]:
    """Full-batch L-BFGS with strong-Wolfe line search, in chunks of LBFGS_CHUNK iterations."""
    model, inputs, labels, terms, config, log, description = job
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        params,
        lr=config.lr,
        max_iter=LBFGS_CHUNK,
        history_size=config.history_size,
        tolerance_grad=config.tolerance_grad,
        tolerance_change=config.tolerance_change,
        line_search_fn="strong_wolfe",
    )
    generator = torch.Generator().manual_seed(config.seed)
    last_loss = [math.nan]  # objective at the latest evaluated point

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with dropout_rng(generator):
            loss = F.cross_entropy(model(inputs), labels) + weight_penalty(terms)
        loss.backward()
        last_loss[0] = loss.item()
        return loss

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    done, converged = 0, False
    with make_progress() as bar:
        task = bar.add_task(f"{description} (L-BFGS)", total=config.iterations)
        while done < config.iterations and not converged:
            chunk = min(LBFGS_CHUNK, config.iterations - done)
            optimizer.param_groups[0]["max_iter"] = chunk
            optimizer.param_groups[0]["max_eval"] = chunk * MAX_EVALS_PER_ITERATION
            before = _lbfgs_iterations(optimizer, params)
            optimizer.step(closure)
            ran = _lbfgs_iterations(optimizer, params) - before
            loss = last_loss[0]
            done += ran
            converged = ran < chunk or not math.isfinite(loss)
            bar.update(task, completed=done)
            history.append(_history_row(done, loss, None, start))
            if done % LBFGS_LOG_EVERY == 0 or converged or done >= config.iterations:
                _log(
                    log,
                    f"L-BFGS iteration {done}: loss {loss:.5f}, {time.perf_counter() - start:.0f}s",
                )
        if converged:
            finish(bar, task, _stop_reason(done, config.iterations, last_loss[0]))
    return done, converged, history


def _stop_reason(done: int, limit: int, loss: float) -> str:
    """Why full-batch L-BFGS stopped before ``limit`` iterations (shown on its finished bar)."""
    if not math.isfinite(loss):
        return f"stopped at {done}/{limit}: loss not finite"
    return f"converged at {done}/{limit}"


def _lbfgs_iterations(optimizer: torch.optim.LBFGS, params: list[nn.Parameter]) -> int:
    return int(optimizer.state[params[0]].get("n_iter", 0))


def _train_minibatch(job: _Job) -> tuple[int, list[dict[str, float]]]:
    """Minibatch Adam/SGD (momentum 0.9) with the configured learning-rate schedule."""
    model, inputs, labels, terms, config, log, description = job
    params = [p for p in model.parameters() if p.requires_grad]
    n = inputs.shape[0]
    batches = math.ceil(n / config.batch_size)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    scheduler = make_scheduler(optimizer, config, config.epochs * batches)
    order = torch.Generator().manual_seed(config.seed)
    dropout = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with make_progress() as bar:
        task = bar.add_task(f"{description} ({config.optimizer})", total=config.epochs * batches)
        for epoch in range(1, config.epochs + 1):
            perm = torch.randperm(n, generator=order)
            total_loss, wrong = 0.0, 0
            for i in range(0, n, config.batch_size):
                idx = perm[i : i + config.batch_size]
                optimizer.zero_grad()
                with dropout_rng(dropout):
                    logits = model(inputs[idx])
                loss = F.cross_entropy(logits, labels[idx]) + weight_penalty(terms)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total_loss += loss.item() * idx.shape[0]
                wrong += int((logits.argmax(dim=1) != labels[idx]).sum())
                bar.advance(task)
            row = _history_row(epoch * batches, total_loss / n, wrong / n, start)
            row["epoch"] = epoch
            history.append(row)
            _log(
                log,
                f"epoch {epoch}/{config.epochs}: loss {total_loss / n:.4f}, "
                f"running train error {100 * wrong / n:.2f}%, {row['time_s']:.0f}s",
            )
    return config.epochs * batches, history


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


class dropout_rng:  # noqa: N801 - used like a function
    """Run dropout (and anything else using the global RNG) on ``generator``'s stream.

    Forks the global CPU RNG, seeds it from ``generator``, and restores it afterwards, so a training
    run's randomness depends only on ``config.seed`` and not on unrelated RNG use.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.saved: torch.Tensor | None = None

    def __enter__(self) -> None:
        self.saved = torch.get_rng_state()
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        torch.manual_seed(seed)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            torch.set_rng_state(self.saved)


def _history_row(
    step: int, loss: float, train_error: float | None, start: float
) -> dict[str, float]:
    row = {"step": float(step), "loss": loss, "time_s": time.perf_counter() - start}
    if train_error is not None:
        row["train_error"] = train_error
    return row


def _log(log: LogFn | None, line: str) -> None:
    if log is not None:
        log(line)
