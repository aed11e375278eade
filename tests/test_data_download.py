"""Downloading from mirrors, against HTTP servers on 127.0.0.1 serving files made in the test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from intriguing.data import DataError, load_mnist
from intriguing.data.download import DEFAULT_MIRRORS, DownloadWarning, download_mnist, mirror_list
from intriguing.data.files import MNIST_FILES
from intriguing.paths import DATA_DIR_ENV
from test_data_fakes import serve_directory, write_fake_mnist

NAMES = sorted(spec.gz_name for spec in MNIST_FILES)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def good_and_bad(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A directory of good files, one of corrupt files under the same names, and the good MD5s."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    checksums = write_fake_mnist(good)
    write_fake_mnist(bad)
    for spec in MNIST_FILES:  # same names, wrong bytes
        path = bad / spec.gz_name
        path.write_bytes(path.read_bytes()[:-7] + b"corrupt")
    return good, bad, checksums


def test_corrupt_mirror_then_good_mirror(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    good, bad, checksums = good_and_bad
    dest = tmp_path / "dest"
    with (
        serve_directory(bad) as (bad_url, bad_requests),
        serve_directory(good) as (good_url, _),
        pytest.warns(DownloadWarning) as record,
    ):
        paths = download_mnist(dest, mirrors=[bad_url, good_url], checksums=checksums)
    assert sorted(p.name for p in dest.iterdir()) == NAMES  # no temporary files left behind
    for spec in MNIST_FILES:
        assert paths[spec.key] == dest / spec.gz_name
        assert _md5(paths[spec.key]) == checksums[spec.key]
    messages = [str(w.message) for w in record]
    assert len(messages) == 4
    assert all(bad_url in m and "wrong MD5" in m and "file deleted" in m for m in messages)
    assert len(bad_requests) == 4


def test_all_mirrors_corrupt_leaves_nothing_and_says_so(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    _, bad, checksums = good_and_bad
    dest = tmp_path / "dest"
    with (
        serve_directory(bad) as (bad_url, _),
        pytest.warns(DownloadWarning),
        pytest.raises(DataError) as exc,
    ):
        download_mnist(dest, mirrors=[bad_url], checksums=checksums)
    message = str(exc.value)
    assert "\n" not in message
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert "wrong MD5" in message and "deleted" in message
    assert "INTRIGUING_DATA_DIR" in message and "--data-dir" in message
    assert list(dest.iterdir()) == []  # the corrupt download was deleted


def test_missing_file_on_mirror_then_good(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    good, _, checksums = good_and_bad
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "dest"
    with (
        serve_directory(empty) as (url_404, _),
        serve_directory(good) as (good_url, _),
        pytest.warns(DownloadWarning, match="HTTP 404"),
    ):
        download_mnist(dest, mirrors=[url_404, good_url], checksums=checksums)
    assert sorted(p.name for p in dest.iterdir()) == NAMES


def test_unreachable_mirror_reason_is_reported(tmp_path: Path) -> None:
    with pytest.warns(DownloadWarning), pytest.raises(DataError) as exc:
        download_mnist(tmp_path, mirrors=["http://127.0.0.1:1/"], timeout=5)
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz:" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_correct_existing_files_are_kept(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    good, _, checksums = good_and_bad
    dest = tmp_path / "dest"
    with serve_directory(good) as (url, requests):
        download_mnist(dest, mirrors=[url], checksums=checksums)
        assert len(requests) == 4
        download_mnist(dest, mirrors=[url], checksums=checksums)
        assert len(requests) == 4  # nothing fetched again


def test_corrupt_existing_file_is_replaced(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    good, _, checksums = good_and_bad
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with serve_directory(good) as (url, _), pytest.warns(DownloadWarning, match="wrong MD5"):
        download_mnist(dest, mirrors=[url], checksums=checksums)
    assert _md5(dest / "t10k-labels-idx1-ubyte.gz") == checksums["test-labels"]


def test_mirror_list_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTRIGUING_MNIST_MIRRORS", raising=False)
    assert mirror_list() == list(DEFAULT_MIRRORS)
    monkeypatch.setenv("INTRIGUING_MNIST_MIRRORS", "http://a/x, file:///m/  http://b/")
    assert mirror_list() == ["http://a/x/", "file:///m/", "http://b/"]


def test_load_mnist_downloads_real_files_into_the_cache(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: no data dir, empty cache, a corrupt mirror, then one serving the real MNIST."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for spec in MNIST_FILES:
        (corrupt / spec.gz_name).write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    with serve_directory(corrupt) as (bad_url, _), serve_directory(mnist_dir) as (url, _):
        monkeypatch.setenv("INTRIGUING_MNIST_MIRRORS", f"{bad_url},{url}")
        with pytest.warns(DownloadWarning, match="wrong MD5"):
            downloaded = load_mnist()
    assert downloaded.found_via == "download"
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == NAMES
    reference = load_mnist(data_dir=mnist_dir)
    assert downloaded.identity == reference.identity
    assert torch.equal(downloaded.test_images, reference.test_images)
    # the next call finds the cache, with no server running
    assert load_mnist().found_via == "cache"


def test_unreachable_mirror_is_tried_last_for_later_files(
    tmp_path: Path, good_and_bad: tuple[Path, Path, dict[str, str]]
) -> None:
    good, _, checksums = good_and_bad
    dead = "http://127.0.0.1:1/"
    with serve_directory(good) as (url, _), pytest.warns(DownloadWarning) as record:
        download_mnist(tmp_path / "dest", mirrors=[dead, url], checksums=checksums, timeout=5)
    assert [dead in str(w.message) for w in record] == [True]  # once, not once per file
