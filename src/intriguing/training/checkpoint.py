"""Checkpoints: safetensors weights + a JSON sidecar, in a content-addressed cache.

A checkpoint is two files in :func:`intriguing.paths.models_dir` (or anywhere, for explicit paths):

- ``<slug>-<key>.safetensors``: the model's ``state_dict`` (safetensors; never pickle);
- ``<slug>-<key>.json``: the sidecar: model name, full :class:`TrainConfig`, training split, dataset
  identity (:attr:`intriguing.data.MNIST.identity`), seed, metrics (train/test error, wall time),
  library versions, creation time, and the SHA-256 of the weights file.

``key`` is a SHA-256 (first 20 hex digits) of everything that determines the weights: model name,
architecture (``repr`` of the untrained module), config (seed included), training split and dataset
identity. The same request therefore finds the same files; any change trains anew. Both files are
written atomically, weights first, so a sidecar only ever points at complete weights. A truncated,
corrupt or mismatched checkpoint raises :class:`~intriguing.errors.CheckpointError`.

Verification on every load (issue 16): ``weights_sha256`` is :func:`tensors_sha256`, a hash over the
tensors themselves (names, dtypes, shapes and bytes, in sorted name order), so it does not depend on
the safetensors header (whose metadata key order varies between runs) and is a stable fingerprint of
the weights. Sidecars written before this change hold the SHA-256 of the file instead; they still
load when that matches (:func:`load_weights` accepts either). Non-finite weights are refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import platform
import re
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing._io import atomic_save_tensors, atomic_write_json, file_sha256, loads_strict
from intriguing.errors import CheckpointError
from intriguing.paths import models_dir
from intriguing.training.config import TrainConfig

FORMAT_VERSION = 1
# Bump when a change to the training code changes the weights it produces: old cache entries are
# then no longer found (they stay on disk) and models are retrained.
TRAINER_VERSION = 2
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"


def cache_key(
    name: str, architecture: str, config: TrainConfig, train_split: str, dataset: dict[str, Any]
) -> str:
    """20 hex digits of SHA-256 over the canonical JSON of everything that fixes the weights."""
    payload = {
        "format_version": FORMAT_VERSION,
        "trainer_version": TRAINER_VERSION,
        "model": name,
        "architecture": architecture,
        "config": config.to_dict(),
        "train_split": train_split,
        "dataset": dataset,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def slug(name: str) -> str:
    """A file-name-safe form of a model name (``"M1'"`` -> ``"M1p"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("'", "p"))


def checkpoint_paths(name: str, key: str, directory: Path | None = None) -> tuple[Path, Path]:
    """``(weights, sidecar)`` paths of a cache entry (``directory`` defaults to ``models_dir()``)."""
    base = (directory if directory is not None else models_dir()) / f"{slug(name)}-{key}"
    return base.with_suffix(WEIGHTS_SUFFIX), base.with_suffix(SIDECAR_SUFFIX)


def sidecar_path_for(path: Path) -> Path:
    """The sidecar belonging to a weights (or sidecar) path."""
    return path.with_suffix(SIDECAR_SUFFIX)


def weights_path_for(path: Path) -> Path:
    """The weights file belonging to a sidecar (or weights) path."""
    return path.with_suffix(WEIGHTS_SUFFIX)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that influence the weights."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("numpy", "safetensors", "intriguing"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over ``tensors`` in sorted name order: each name, dtype, shape and raw bytes.

    Independent of file layout and metadata: two bit-identical state dicts hash the same.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape)], separators=(",", ":"))
        digest.update(header.encode("utf-8") + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`CheckpointError` if a floating-point tensor holds NaN or Inf."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or Inf; delete the checkpoint and retrain"
            )


def save_checkpoint(
    model: nn.Module, weights_path: Path, sidecar: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model``'s weights (safetensors) and ``sidecar`` (JSON) atomically.

    Adds ``format_version``, ``weights_file``, ``weights_sha256``, ``versions`` and ``created`` to
    the sidecar, and returns the completed sidecar.
    """

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(tensors, weights_path)
    atomic_save_tensors(
        weights_path, tensors, metadata={"format": "pt", "model": str(sidecar.get("model", ""))}
    )
    full = {
        "format_version": FORMAT_VERSION,
        **sidecar,
        "weights_file": weights_path.name,
        "weights_sha256": tensors_sha256(tensors),
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(sidecar_path_for(weights_path), full)
    return full


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of a checkpoint given its weights or sidecar path.

    Raises:
        CheckpointError: the sidecar is missing, not JSON, or lacks required fields.
    """
    sidecar_file = sidecar_path_for(Path(path))
    if not sidecar_file.is_file():
        raise CheckpointError(
            f"{sidecar_file}: checkpoint sidecar not found; pass a checkpoint written by intriguing"
        )
    try:
        data = loads_strict(sidecar_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{sidecar_file}: cannot read the sidecar ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{sidecar_file}: corrupt sidecar ({exc}); delete the checkpoint and retrain"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{sidecar_file}: sidecar is not a JSON object; delete it and retrain"
        )
    missing = [k for k in ("model", "config", "weights_sha256") if k not in data]
    if "config" in missing and "weights_sha256" in missing:  # e.g. a results file of eval --json
        raise CheckpointError(
            f"{sidecar_file} is not a checkpoint's sidecar (no config, no weights_sha256); give "
            "a checkpoint written by intriguing train (NAME-KEY.safetensors or its .json)"
        )
    if missing:
        raise CheckpointError(
            f"{sidecar_file}: sidecar lacks {missing}; delete the checkpoint and retrain"
        )
    _check_sidecar_types(data, sidecar_file)
    return data


_SIDECAR_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "config": dict,
    "weights_sha256": str,
    "key": str,
    "train_split": str,
    "architecture": str,
    "dataset": dict,
    "metrics": dict,
}


# metrics shown or written by `train` as they are stored (the errors are measured again)
_NUMERIC_METRICS = ("train_error", "test_error", "wall_time_s", "cpu_time_s")


def _check_sidecar_types(data: dict[str, Any], sidecar_file: Path) -> None:
    """Every known field of the right JSON type; ``seed`` a (non-bool) integer, the same as the
    training config's ``seed`` where the sidecar has one."""
    for name, kind in _SIDECAR_TYPES.items():
        if name in data and not isinstance(data[name], kind):
            raise CheckpointError(
                f"{sidecar_file}: sidecar field {name!r} has the wrong type; delete the "
                "checkpoint and retrain"
            )
    metrics = data.get("metrics") or {}
    for name in _NUMERIC_METRICS:
        value = metrics.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise CheckpointError(
                f"{sidecar_file}: sidecar metric {name!r} is {value!r}, not a number >= 0 "
                "(edited?); delete the checkpoint and retrain"
            )
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CheckpointError(
            f"{sidecar_file}: sidecar seed {seed!r} is not an integer; delete the checkpoint "
            "and retrain"
        )
    config = data.get("config")
    if isinstance(config, dict) and "seed" in config and config["seed"] != seed:
        raise CheckpointError(
            f"{sidecar_file}: sidecar seed {seed!r} differs from its config's seed "
            f"{config['seed']!r} (edited?); delete the checkpoint and retrain"
        )


def load_weights(model: nn.Module, path: Path, expected_sha256: str | None = None) -> str:
    """Load safetensors weights from ``path`` into ``model`` (strict: same keys and shapes).

    ``expected_sha256``: the sidecar's ``weights_sha256``, either :func:`tensors_sha256` of the
    tensors or (sidecars of older versions) the SHA-256 of the file.

    Returns:
        :func:`tensors_sha256` of the loaded tensors (the stable fingerprint of the weights).

    Raises:
        CheckpointError: missing, truncated or corrupt file, checksum mismatch, NaN/Inf weights,
            or weights that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint weights not found; retrain or pass another path")
    mismatch = CheckpointError(
        f"{path}: weights do not match the checksum in the sidecar (corrupt or truncated, or "
        "replaced); delete the checkpoint and retrain"
    )
    try:
        tensors = _read_tensors(path)
    except CheckpointError:
        if expected_sha256 is not None and file_sha256(path) != expected_sha256:
            raise mismatch from None
        raise
    fingerprint = tensors_sha256(tensors)
    if expected_sha256 is not None and expected_sha256 not in (fingerprint, file_sha256(path)):
        raise mismatch
    check_finite(tensors, path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit the model ({first}); retrain it"
        ) from None
    return fingerprint


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError if it cannot be parsed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({message}); delete it and retrain"
        ) from None


@contextlib.contextmanager
def training_lock(
    weights_path: Path, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock for training the checkpoint ``weights_path`` (POSIX ``flock``).

    Two processes asking for the same uncached model then train it once: the second waits and
    finds the checkpoint afterwards. Without ``fcntl`` (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path = weights_path.with_suffix(".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+b")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write in the model cache {lock_path.parent} ({exc.strerror}); set "
            "INTRIGUING_CACHE_DIR to a writable folder"
        ) from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another process that is training {weights_path.name}")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global torch RNG seeded by ``seed``; restore the RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------- resumable training state
def save_state(path: Path, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a training state atomically: ``tensors`` in one safetensors file, ``meta`` (JSON-safe,
    with a ``"format"`` version) in its metadata. Read back with :func:`load_state`."""

    payload = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    check_finite(payload, path)
    meta = {**meta, "tensors_sha256": tensors_sha256(payload)}
    atomic_save_tensors(path, payload, metadata={"state": json.dumps(meta, allow_nan=False)})


def load_state(path: Path, format_version: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state written by :func:`save_state` whose ``meta["format"]`` is ``format_version``.

    The tensors are checked against the hash :func:`save_state` recorded and must be finite.

    Raises:
        CheckpointError: unreadable, truncated, not a training state, another format, tensors
            that do not match their hash, or NaN/Inf.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta_text = (handle.metadata() or {}).get("state")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        if meta_text is None:
            raise ValueError("no training state in its metadata")
        meta = loads_strict(meta_text)
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable training checkpoint ({first}); delete it and rerun"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != format_version:
        raise CheckpointError(f"{path}: unknown checkpoint format; delete it and rerun")
    expected = meta.pop("tensors_sha256", None)
    if expected is not None and expected != tensors_sha256(tensors):
        raise CheckpointError(
            f"{path}: tensors do not match their recorded hash; delete it and rerun"
        )
    check_finite(tensors, path)
    return tensors, meta


def optimizer_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict()`` split into tensors (``optim/<param>/<name>``) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer ``state_dict()`` rebuilt from :func:`optimizer_tensors`' two halves."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["plain"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
