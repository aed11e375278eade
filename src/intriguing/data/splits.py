"""Named splits of a dataset: ``train``, ``test`` and the paper's disjoint training halves P1 / P2.

Section 4.2 (Tables 3 and 4) of Szegedy et al. splits the 60000 MNIST training images into two
disjoint halves P1 and P2 of 30000 each to test cross-training-set generalisation. The paper does not
say how; here the split is a fixed seeded permutation::

    perm = numpy.random.default_rng(P1P2_SEED).permutation(n_train)
    P1 = sorted(perm[: n_train // 2]);  P2 = sorted(perm[n_train // 2 :])

with ``P1P2_SEED = 20131221`` (the paper's arXiv submission date). Both halves keep the images in
their original order. The same rule splits the 4000 training images of ``mnist-5k`` into 2000/2000.
:func:`split_fingerprint` (an MD5 of the P1 indices) goes into the dataset identity, so a checkpoint
trained on P1 notices if the split ever changes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from intriguing.errors import InvalidInputError

SPLIT_NAMES: tuple[str, ...] = ("train", "test", "p1", "p2")
P1P2_SEED = 20131221


def check_split_name(name: str) -> str:
    """Return ``name`` lower-cased if it is one of :data:`SPLIT_NAMES`.

    Raises:
        InvalidInputError: an unknown split name.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in SPLIT_NAMES:
        raise InvalidInputError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
    return key


def p1_p2_indices(n_train: int, seed: int = P1P2_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The P1 and P2 training-set indices (int64, each sorted ascending, disjoint, covering).

    Args:
        n_train: number of training images (60000 for MNIST, 4000 for mnist-5k).
        seed: the permutation seed (default :data:`P1P2_SEED`).

    Returns:
        ``(p1, p2)`` with ``len(p1) == n_train // 2`` and ``len(p2) == n_train - n_train // 2``.
    """
    perm = np.random.default_rng(seed).permutation(n_train).astype(np.int64)
    half = n_train // 2
    return np.sort(perm[:half]), np.sort(perm[half:])


def split_fingerprint(n_train: int, seed: int = P1P2_SEED) -> str:
    """MD5 (hex) of the little-endian int64 P1 indices: identifies the P1/P2 split exactly."""
    p1, _ = p1_p2_indices(n_train, seed)
    return hashlib.md5(p1.astype("<i8").tobytes(), usedforsecurity=False).hexdigest()


def stratified_split(
    labels: np.ndarray, n_test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train/test with exactly ``n_test_per_class`` test items of every class.

    Within each class the items are drawn by a seeded permutation; each returned index array is then
    shuffled by the same generator so classes are interleaved (a prefix is a mixed sample).

    Args:
        labels: (N,) integer class labels.
        n_test_per_class: how many test items each class gives.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``(train_idx, test_idx)``, int64 arrays, disjoint, together covering ``range(N)``.

    Raises:
        InvalidInputError: a class has fewer than ``n_test_per_class`` items.
    """
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < n_test_per_class:
            raise InvalidInputError(
                f"class {cls} has {len(members)} items, fewer than {n_test_per_class} test items"
            )
        members = rng.permutation(members)
        test_parts.append(members[:n_test_per_class])
        train_parts.append(members[n_test_per_class:])
    train_idx = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test_idx = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train_idx, test_idx
