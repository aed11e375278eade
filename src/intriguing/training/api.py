"""``load_model``: a trained zoo model, trained and cached on first use (like robustbench's).

>>> from intriguing.training import load_model
>>> model = load_model("N100-100-10")       # trains (minutes) the first time, then loads (ms)
>>> logits = model(images)                  # images (N, 1, 28, 28) in [0, 1] -> logits (N, 10)

The model is trained on its registered split (``train``, ``p1`` or ``p2``) of the chosen dataset
with its registered :class:`TrainConfig` (seed replaced by ``seed``), evaluated on the test set, and
stored in the checkpoint cache (:mod:`.checkpoint`). Explicit files load with
:func:`load_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import nn

from intriguing.errors import CheckpointError, InvalidInputError
from intriguing.models.user import first_line, model_device
from intriguing.training.checkpoint import (
    cache_key,
    checkpoint_paths,
    load_weights,
    read_sidecar,
    save_checkpoint,
    seeded,
    sidecar_path_for,
    training_lock,
    weights_path_for,
)
from intriguing.training.config import TrainConfig
from intriguing.training.trainer import LogFn, error_rate, eval_mode, train, training_threads

if TYPE_CHECKING:
    from intriguing.data import MNIST
    from intriguing.models import ZooEntry

logger = logging.getLogger("intriguing.training")


@dataclass
class TrainedModel:
    """A trained model and where it came from.

    Attributes:
        model: the network, in eval mode.
        name: canonical zoo name.
        path: the safetensors weights file.
        sidecar: the checkpoint's JSON sidecar (config, dataset identity, metrics, versions, ...).
        cached: True when the checkpoint already existed (nothing was trained).
    """

    model: nn.Module
    name: str
    path: Path
    sidecar: dict[str, Any]
    cached: bool

    @property
    def metrics(self) -> dict[str, Any]:
        """``{"train_error", "test_error", "wall_time_s", ...}`` recorded at training time."""
        return dict(self.sidecar.get("metrics", {}))


class ZooTraining(TypedDict, total=False):
    """Which training of a zoo model is meant: the keywords of :func:`train_model` that
    :func:`intriguing.inputs.resolve_model` and :func:`~intriguing.inputs.load_any_model` pass on.

    ``dataset``: ``"mnist"`` (default) or ``"mnist-5k"``; ``data_dir``: the MNIST IDX files;
    ``seed``: the training seed (default 0).
    """

    dataset: str
    data_dir: str | os.PathLike[str] | None
    seed: int


def train_model(
    name: str,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    retrain: bool = False,
    log: LogFn | None = None,
) -> TrainedModel:
    """Return zoo model ``name`` trained on ``dataset``, from the cache or by training it now.

    Args:
        name: a zoo name or alias (``intriguing zoo`` lists them).
        dataset: ``"mnist"`` (the paper's data) or ``"mnist-5k"`` (small offline subset).
        data_dir: directory of the MNIST IDX files (see :func:`intriguing.data.load_mnist`).
        seed: seeds initialisation, minibatch order and dropout (part of the cache key).
        retrain: train and overwrite even if a cached checkpoint exists.
        log: receives one line per epoch (default: the ``intriguing.training`` logger).

    Returns:
        :class:`TrainedModel` with the model in eval mode.

    Raises:
        UnknownModelError: ``name`` is not in the zoo.
        DataError, InvalidInputError: the dataset cannot be loaded.
        CheckpointError: a cached checkpoint is corrupt (delete it or pass ``retrain=True``).
        InvalidInputError: ``seed`` is not an integer >= 0, or the model's factory fails, returns
            no ``nn.Module``, or builds a model that does not map one MNIST image
            ``(1, 1, 28, 28)`` to logits ``(1, K)`` with ``K >= 10`` (checked before training).
    """
    from intriguing.data import load_mnist
    from intriguing.data.files import verify_directory
    from intriguing.data.mnist import locate_mnist, published_identity
    from intriguing.models import get_entry

    check_seed(seed)
    entry = get_entry(name)
    # The full MNIST's identity is known without reading it, so a cached checkpoint loads offline
    # and without parsing the data; an explicitly named directory is still MD5-verified.
    data = None if dataset == "mnist" else load_mnist(data_dir, dataset=dataset)
    if data is None and data_dir is not None:
        verify_directory(locate_mnist(data_dir, download=False)[0])
    identity = published_identity() if data is None else data.identity
    model, config, key = _zoo_key(entry, identity, seed)
    probe_mnist_input(model, entry.name)
    weights, _ = checkpoint_paths(entry.name, key)
    expected = _expected_sidecar(entry, model, config, key, identity)
    log = log or logger.info
    if weights.exists() and not retrain:
        return _load_cached(model, entry.name, weights, expected)
    with training_lock(weights, on_wait=log):
        if weights.exists() and not retrain:  # another process trained it while we waited
            return _load_cached(model, entry.name, weights, expected)
        if data is None:
            data = load_mnist(data_dir, dataset=dataset)
        with training_threads():
            return _train_and_save(entry, model, data, config, key, weights, log)


def _zoo_key(entry: ZooEntry, identity: Any, seed: int) -> tuple[nn.Module, TrainConfig, str]:
    """The untrained model (built under ``seed``), its training config and its cache key."""
    check_seed(seed)
    config = entry.train_config.replace(seed=seed)
    with seeded(seed):  # building draws from the global RNG: leave it untouched
        model = entry.build()
    return model, config, cache_key(entry.name, repr(model), config, entry.train_split, identity)


MAX_SEED = 2**32 - 1  # larger seeds repeat smaller ones (2**32 trains exactly seed 0's weights)


def check_seed(seed: object) -> int:
    """``seed`` unchanged; InvalidInputError unless it is an integer (not a bool) in
    ``[0, MAX_SEED]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return seed


MNIST_CLASSES = 10


def probe_mnist_input(model: nn.Module, name: str) -> None:
    """One forward pass of an MNIST-shaped image ``(1, 1, 28, 28)`` through ``model`` (eval mode,
    no gradients; every submodule's mode restored), so that a model that cannot train on MNIST
    is refused in one line before any data is read or any training starts.

    Raises:
        InvalidInputError: the model fails on the image, or returns anything but one floating
            tensor of logits ``(1, K)`` with ``K >= 10``.
    """
    probe = torch.full((1, 1, 28, 28), 0.5, device=model_device(model))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(probe)
    except Exception as exc:  # the user's model can fail in any way: one line naming it
        raise InvalidInputError(
            f"model {name!r} fails on one MNIST image (1, 1, 28, 28) ({first_line(exc)}); zoo "
            "models must map (N, 1, 28, 28) images in [0, 1] to (N, 10) logits"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if (
        shape is None
        or not out.is_floating_point()
        or len(shape) != 2
        or shape[0] != 1
        or shape[1] < MNIST_CLASSES
    ):
        got = f"shape {shape}" if shape is not None else type(out).__name__
        raise InvalidInputError(
            f"model {name!r} returned {got} for one MNIST image (1, 1, 28, 28); zoo models must "
            f"return floating logits (N, K) with K >= {MNIST_CLASSES}"
        )


def checkpoint_key(name: str, identity: Any, seed: int) -> str:
    """The checkpoint cache key :func:`train_model` uses for ``name`` (architecture, recipe, data,
    seed); ``identity`` is the dataset's identity (:attr:`intriguing.data.MNIST.identity`).

    Put in a model step's params, it makes every downstream result depend on the exact
    checkpoint: a changed training recipe invalidates the stored attacks instead of mixing them.
    """
    from intriguing.models import get_entry

    return _zoo_key(get_entry(name), identity, seed)[2]


def cached_weights_sha256(name: str, identity: Any, seed: int) -> str | None:
    """The ``weights_sha256`` recorded by the cached checkpoint that :func:`train_model` would load
    for zoo model ``name`` (dataset ``identity``, ``seed``); None when none is cached or its
    sidecar is unreadable (loading it then retrains or fails in one line)."""
    from intriguing.models import get_entry

    entry = get_entry(name)
    weights, _ = checkpoint_paths(entry.name, _zoo_key(entry, identity, seed)[2])
    if not weights.is_file():
        return None
    try:
        found = read_sidecar(weights).get("weights_sha256")
    except CheckpointError:
        return None
    return found if isinstance(found, str) else None


def _expected_sidecar(
    entry: ZooEntry, model: nn.Module, config: TrainConfig, key: str, identity: dict[str, Any]
) -> dict[str, Any]:
    """What the sidecar of the cache entry ``key`` must say (JSON-normalised, as read back)."""
    return json.loads(
        json.dumps(
            {
                "model": entry.name,
                "key": key,
                "train_split": entry.train_split,
                "seed": config.seed,
                "config": config.to_dict(),
                "dataset": identity,
                "architecture": repr(model),
            }
        )
    )


def verify_sidecar(sidecar: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming the first field where ``sidecar`` differs from ``expected``.

    A cache entry whose sidecar names another model, key, config, seed, split, dataset or
    architecture was replaced or corrupted: its weights would silently give another model's numbers.
    """
    for field_name, wanted in expected.items():
        if sidecar.get(field_name) != wanted:
            raise CheckpointError(
                f"{sidecar_path_for(path)}: sidecar field {field_name!r} does not match this cache "
                f"entry (replaced or corrupt checkpoint); delete {path.name} and its .json and rerun"
            )


def _load_cached(
    model: nn.Module, name: str, weights: Path, expected: dict[str, Any]
) -> TrainedModel:
    if not sidecar_path_for(weights).is_file():  # read_sidecar's advice is for explicit paths
        raise CheckpointError(
            f"{sidecar_path_for(weights)}: the cached model's sidecar not found; delete "
            f"{weights} and rerun to retrain it"
        )
    sidecar = read_sidecar(weights)
    verify_sidecar(sidecar, expected, weights)
    sidecar["weights_sha256"] = load_weights(model, weights, sidecar["weights_sha256"])
    model.eval()
    return TrainedModel(model, name, weights, sidecar, cached=True)


def _train_and_save(
    entry: ZooEntry,
    model: nn.Module,
    data: MNIST,
    config: TrainConfig,
    key: str,
    weights: Path,
    log: LogFn,
) -> TrainedModel:
    """Train ``model`` on its split, evaluate it on the test set, write the checkpoint."""
    seed = config.seed
    identity = data.identity
    images, labels = data.split(entry.train_split)
    metrics = train(model, images, labels, config, log=log, description=entry.name)
    test_images, test_labels = data.split("test")
    sidecar = {
        "model": entry.name,
        "key": key,
        "dataset": identity,
        "train_split": entry.train_split,
        "seed": seed,
        "config": config.to_dict(),
        "architecture": repr(model),
        "metrics": {
            "train_error": metrics.train_error,
            "test_error": error_rate(model, test_images, test_labels),
            "loss": metrics.loss,
            "wall_time_s": metrics.wall_time_s,
            "cpu_time_s": metrics.cpu_time_s,
            "torch_threads": torch.get_num_threads(),
            "steps": metrics.steps,
            "converged": metrics.converged,
        },
        "history": metrics.history,
    }
    sidecar = save_checkpoint(model, weights, sidecar)
    model.eval()
    return TrainedModel(model, entry.name, weights, sidecar, cached=False)


def load_model(
    name: str,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> nn.Module:
    """The trained zoo model ``name`` in eval mode, training and caching it first if needed.

    Images in, logits out: ``(N, 1, 28, 28)`` float32 in [0, 1] -> ``(N, 10)``. Training shows a
    progress bar; a full-MNIST model takes from seconds (softmax) to a few minutes (Conv, AE400-10).
    See :func:`train_model` for the arguments and errors.
    """
    return train_model(name, dataset=dataset, data_dir=data_dir, seed=seed).model


def load_checkpoint(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a checkpoint from an explicit path (its ``.safetensors`` or ``.json`` file).

    The sidecar names the model, which must be registered in the zoo (register custom models
    before loading them).

    Raises:
        CheckpointError: missing/corrupt files, checksum mismatch, weights that do not fit.
        UnknownModelError: the sidecar names a model that is not registered.
    """
    from intriguing.models import get_entry

    weights = weights_path_for(Path(path))
    if not Path(path).exists():
        raise CheckpointError(f"{path}: checkpoint not found; check the path")
    sidecar = read_sidecar(weights)
    entry = get_entry(str(sidecar["model"]))
    with seeded(int(sidecar.get("seed", 0))):
        model = entry.build()
    if "architecture" in sidecar and sidecar["architecture"] != repr(model):
        raise CheckpointError(
            f"{sidecar_path_for(weights)}: the sidecar's architecture is not {entry.name}'s; "
            "the checkpoint is corrupt or from another version: retrain it"
        )
    _check_own_key(sidecar, entry.name, repr(model), sidecar_path_for(weights))
    sidecar["weights_sha256"] = load_weights(model, weights, sidecar["weights_sha256"])
    model.eval()
    return TrainedModel(model, entry.name, weights, sidecar, cached=True)


def _check_own_key(sidecar: dict[str, Any], name: str, architecture: str, path: Path) -> None:
    """A sidecar with a ``key`` must hash to it: its config, split or dataset were not edited."""
    from intriguing.errors import InvalidInputError

    if not all(k in sidecar for k in ("key", "train_split", "dataset")):
        return  # an older or hand-made sidecar: the weights' hash and fit are still checked
    try:
        config = TrainConfig.from_dict(sidecar["config"])
        key = cache_key(name, architecture, config, sidecar["train_split"], sidecar["dataset"])
    except (InvalidInputError, TypeError, ValueError):
        key = None
    if key != sidecar["key"]:
        raise CheckpointError(
            f"{path}: the sidecar's config, split or dataset do not give its key (edited or "
            "corrupt); delete the checkpoint and retrain"
        )


def measured_errors(
    trained: TrainedModel, dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None
) -> dict[str, float]:
    """``{"train_error", "test_error"}`` measured now on the data (not read from the sidecar).

    ``train_error`` is on the model's training split (``train``, ``p1`` or ``p2``); both in [0, 1].
    """
    from intriguing.data import load_mnist

    data = load_mnist(data_dir, dataset=dataset)
    split = str(trained.sidecar.get("train_split", "train"))
    return {
        "train_error": error_rate(trained.model, *data.split(split)),
        "test_error": error_rate(trained.model, *data.split("test")),
    }
