"""Real MNIST (shapes, values, known labels and class counts, P1/P2, identity) and the lookup order."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from intriguing.data import (
    MNIST,
    SPLIT_NAMES,
    DataError,
    clear_cache,
    load_mnist,
)
from intriguing.data.files import MNIST_FILES
from intriguing.data.splits import P1P2_SEED, p1_p2_indices, split_fingerprint
from intriguing.errors import InvalidInputError
from intriguing.paths import DATA_DIR_ENV
from test_data_fakes import serve_directory

# Published facts about MNIST, used as oracles.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
REFERENCE_MD5 = {
    "train-images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels": "d53e105ee54ea40749a09fcbcd1e9432",
    "test-images": "9fb629c4189551a2d022fa330f9573f3",
    "test-labels": "ec29112dd5afa0611ce80d1b7f02629c",
}
# MD5 of the int64 little-endian P1 indices for 60000 images and seed 20131221. If numpy ever
# changes its permutation stream this fails, and checkpoints trained on P1 would notice too.
P1_FINGERPRINT_60000 = "b76fb02b4df9d48c03fe29d8f39cb4dc"


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> MNIST:
    return load_mnist(data_dir=mnist_dir)


# --- the real data ------------------------------------------------------------------------


def test_shapes_and_dtypes(mnist: MNIST) -> None:
    assert mnist.name == "mnist"
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == mnist.test_images.dtype == torch.float32
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_labels.shape == (10000,)
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == torch.int64
    assert mnist.train_images.is_contiguous()


def test_pixels_are_bytes_over_255(mnist: MNIST) -> None:
    for images in (mnist.train_images, mnist.test_images):
        assert float(images.min()) == 0.0
        assert float(images.max()) == 1.0
        scaled = images[:2000] * 255
        torch.testing.assert_close(scaled, scaled.round(), atol=1e-4, rtol=0)


def test_known_statistics(mnist: MNIST) -> None:
    # the widely used MNIST normalisation constants: mean 0.1307, std 0.3081
    assert abs(float(mnist.train_images.mean()) - 0.1307) < 5e-5
    assert abs(float(mnist.train_images.std()) - 0.3081) < 5e-5


def test_labels_match_published_facts(mnist: MNIST) -> None:
    assert mnist.train_labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert mnist.test_labels[:10].tolist() == FIRST_TEST_LABELS
    assert mnist.train_labels.bincount(minlength=10).tolist() == TRAIN_COUNTS
    assert mnist.test_labels.bincount(minlength=10).tolist() == TEST_COUNTS


def test_train_and_test_splits_are_the_attributes(mnist: MNIST) -> None:
    assert mnist.split("train") == (mnist.train_images, mnist.train_labels)
    assert mnist.split("test") == (mnist.test_images, mnist.test_labels)
    assert mnist.split("TEST")[0] is mnist.test_images
    assert SPLIT_NAMES == ("train", "test", "p1", "p2")


def test_p1_p2_are_disjoint_halves_covering_train(mnist: MNIST) -> None:
    p1_idx, p2_idx = mnist.split_indices("p1"), mnist.split_indices("p2")
    assert len(p1_idx) == len(p2_idx) == 30000
    assert np.array_equal(np.sort(np.concatenate([p1_idx, p2_idx])), np.arange(60000))
    assert np.all(np.diff(p1_idx) > 0) and np.all(np.diff(p2_idx) > 0)  # sorted, no repeats
    p1_images, p1_labels = mnist.split("p1")
    p2_images, p2_labels = mnist.split("p2")
    assert p1_images.shape == p2_images.shape == (30000, 1, 28, 28)
    assert torch.equal(p1_images[123], mnist.train_images[int(p1_idx[123])])
    assert torch.equal(p2_labels, mnist.train_labels[torch.from_numpy(p2_idx)])
    # a random half: every class within 5% of half its training count
    for labels in (p1_labels, p2_labels):
        counts = labels.bincount(minlength=10).numpy()
        assert np.all(np.abs(counts - np.array(TRAIN_COUNTS) / 2) < 0.05 * np.array(TRAIN_COUNTS))
    assert mnist.split("p1")[0] is p1_images  # built once, then reused


def test_p1_p2_definition_is_pinned() -> None:
    p1, p2 = p1_p2_indices(60000)
    perm = np.random.default_rng(P1P2_SEED).permutation(60000)
    assert np.array_equal(p1, np.sort(perm[:30000]))
    assert np.array_equal(p2, np.sort(perm[30000:]))
    assert split_fingerprint(60000) == P1_FINGERPRINT_60000


def test_split_indices_for_odd_sizes() -> None:
    p1, p2 = p1_p2_indices(7)
    assert len(p1) == 3 and len(p2) == 4
    assert sorted([*p1.tolist(), *p2.tolist()]) == list(range(7))


def test_unknown_split_name(mnist: MNIST) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown split 'val'; choose one of train, test"):
        mnist.split("val")


def test_identity(mnist: MNIST, mnist_dir: Path) -> None:
    identity = mnist.identity
    assert identity["dataset"] == "mnist"
    assert {k: v["md5"] for k, v in identity["files"].items()} == REFERENCE_MD5
    assert identity["files"]["train-images"]["size"] == 9912422
    assert identity["train_size"] == 60000 and identity["test_size"] == 10000
    assert identity["split"]["p1_md5"] == P1_FINGERPRINT_60000
    text = json.dumps(identity)
    assert json.loads(text) == identity
    assert str(mnist_dir) not in text  # machine-independent
    identity["dataset"] = "changed"
    assert mnist.identity["dataset"] == "mnist"  # each access is a fresh copy


def test_dataset_is_frozen(mnist: MNIST) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.name = "other"  # type: ignore[misc]


def test_loaded_once_per_process(mnist: MNIST, mnist_dir: Path) -> None:
    # compared with a fresh load, not the session fixture: other tests may clear the cache
    first = load_mnist(data_dir=mnist_dir)
    again = load_mnist(data_dir=mnist_dir)
    assert again is first
    assert again.train_images is first.train_images
    assert torch.equal(first.test_labels, mnist.test_labels)


def test_raw_files_give_the_same_data_and_identity(mnist: MNIST, tmp_path: Path) -> None:
    for spec in MNIST_FILES:
        source = Path(mnist.source) / spec.gz_name
        (tmp_path / spec.name).write_bytes(gzip.decompress(source.read_bytes()))
    raw = load_mnist(data_dir=tmp_path)
    try:
        assert raw.identity == mnist.identity
        assert torch.equal(raw.test_images, mnist.test_images)
        assert torch.equal(raw.train_labels, mnist.train_labels)
    finally:
        clear_cache()


def test_reload_after_clear_cache_is_identical(mnist: MNIST, mnist_dir: Path) -> None:
    clear_cache()
    fresh = load_mnist(data_dir=mnist_dir)
    assert fresh is not mnist
    assert torch.equal(fresh.train_images, mnist.train_images)
    assert torch.equal(fresh.split("p2")[1], mnist.split("p2")[1])


# --- lookup order -------------------------------------------------------------------------


@pytest.fixture
def real_mirror(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A loopback mirror serving the real files; any request to it means a download happened."""
    with serve_directory(mnist_dir) as (base, requests):
        monkeypatch.setenv("INTRIGUING_MNIST_MIRRORS", base)
        yield requests


def test_data_dir_argument_beats_env(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))  # empty: would fail if consulted
    assert load_mnist(data_dir=mnist_dir).found_via == "data_dir"


def test_env_is_used_without_argument(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))
    loaded = load_mnist()
    assert loaded.found_via == f"${DATA_DIR_ENV}"
    assert loaded.source == str(mnist_dir)


def test_explicit_dir_without_files_fails_and_never_downloads(
    tmp_path: Path, real_mirror: list[str]
) -> None:
    with pytest.raises(DataError) as exc:
        load_mnist(data_dir=tmp_path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "--data-dir" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert real_mirror == []


def test_missing_explicit_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(data_dir=tmp_path / "nope")


def test_env_dir_without_files_fails_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_mirror: list[str]
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError, match=r"\$INTRIGUING_DATA_DIR"):
        load_mnist()
    assert real_mirror == []


def test_cache_is_used_when_nothing_else_is_set(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_mirror: list[str]
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    for spec in MNIST_FILES:
        (tmp_path / "mnist" / spec.gz_name).symlink_to(mnist_dir / spec.gz_name)
    loaded = load_mnist()
    assert loaded.found_via == "cache"
    assert loaded.source == str(tmp_path / "mnist")
    assert loaded.train_labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert real_mirror == []


def test_offline_without_files_names_the_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTRIGUING_NO_DOWNLOAD", "1")
    with pytest.raises(DataError) as exc:
        load_mnist()
    message = str(exc.value)
    assert "\n" not in message
    for fragment in ("INTRIGUING_DATA_DIR", "--data-dir", "t10k-labels-idx1-ubyte.gz", "mnist-5k"):
        assert fragment in message


def test_a_partial_cache_names_the_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three of the four files in the cache: the message said 'nothing in' the folder."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTRIGUING_NO_DOWNLOAD", "1")
    from intriguing.data.files import MNIST_FILES
    from intriguing.paths import data_cache_dir

    cache = data_cache_dir("mnist")
    cache.mkdir(parents=True, exist_ok=True)
    for spec in MNIST_FILES[:3]:
        (cache / spec.gz_name).write_bytes(b"x")
    with pytest.raises(DataError, match=f"lacks {MNIST_FILES[3].gz_name}") as exc:
        load_mnist()
    assert "nothing in" not in str(exc.value)


def test_download_false_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match="downloads are off"):
        load_mnist(download=False)


def test_unknown_dataset() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown dataset 'cifar'; choose one of mnist"):
        load_mnist(dataset="cifar")


def test_env_pointing_at_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "f"))
    with pytest.raises(DataError, match=r"is not a directory; .*INTRIGUING_DATA_DIR=DIR"):
        load_mnist()


# --- in-memory datasets -------------------------------------------------------------------


def _tiny(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
    return images, torch.arange(n, dtype=torch.int64) % 10


def test_from_tensors() -> None:
    train, test = _tiny(10), _tiny(4)
    data = MNIST.from_tensors("tiny", *train, *test)
    assert data.split("test")[0] is test[0]
    p1, p2 = data.split_indices("p1"), data.split_indices("p2")
    assert len(p1) == len(p2) == 5 and set(p1.tolist()).isdisjoint(p2.tolist())
    identity = data.identity
    assert identity["dataset"] == "tiny" and identity["train_size"] == 10
    changed = MNIST.from_tensors("tiny", train[0] * 0.5, train[1], *test)
    assert changed.identity["files"] != identity["files"]  # content-addressed


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.int64), "float32 \\(N, 1, 28, 28\\)"),
        (torch.zeros(3, 1, 28, 28), torch.zeros(3), "labels must be int64"),
        (torch.zeros(3, 1, 28, 28), torch.zeros(2, dtype=torch.int64), "labels must be int64"),
        (torch.full((3, 1, 28, 28), float("nan")), torch.zeros(3, dtype=torch.int64), "NaN"),
        (torch.full((3, 1, 28, 28), 1.5), torch.zeros(3, dtype=torch.int64), "outside \\[0, 1\\]"),
        (torch.zeros(3, 1, 28, 28), torch.tensor([0, 10, 1]), "labels must be in 0..9"),
    ],
)
def test_from_tensors_rejects_bad_input(
    images: torch.Tensor, labels: torch.Tensor, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        MNIST.from_tensors("bad", images, labels, *_tiny(2))
