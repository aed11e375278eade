"""IDX parsing and every kind of bad MNIST file: each gives a one-line DataError naming the file."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from intriguing.data import DataError, load_mnist
from intriguing.data.files import MNIST_FILES, verify_directory
from intriguing.data.idx import IMAGES_MAGIC, LABELS_MAGIC, decode_idx, read_idx
from intriguing.data.mnist import read_mnist_arrays
from test_data_fakes import fake_arrays, idx_bytes, write_fake_mnist


def assert_one_line(exc: pytest.ExceptionInfo[DataError], *fragments: str) -> None:
    """The error is one line and contains every fragment (file name, problem, remedy)."""
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --- decoding, against hand-written bytes ---------------------------------------------------


def test_decode_uint8_vector_from_hand_written_bytes() -> None:
    data = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 255])
    out = decode_idx(data, source="v", expected_magic=LABELS_MAGIC)
    assert out.dtype == np.uint8
    assert out.tolist() == [7, 8, 255]


def test_decode_big_endian_int16_matrix() -> None:
    # 2 x 2 int16: 258, -2, 1, -32768 (big-endian)
    data = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 0xFF, 0xFE, 0, 1, 0x80, 0])
    assert decode_idx(data, source="m").tolist() == [[258, -2], [1, -32768]]


def test_read_idx_gzip_and_raw_agree(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "a").write_bytes(idx_bytes(images))
    gz = read_idx(tmp_path / "a.gz", expected_magic=IMAGES_MAGIC)
    raw = read_idx(tmp_path / "a", expected_magic=IMAGES_MAGIC)
    np.testing.assert_array_equal(gz, images)
    np.testing.assert_array_equal(raw, images)


def test_synthetic_directory_round_trips(tmp_path: Path) -> None:
    arrays = fake_arrays(n_train=12, n_test=6)
    checksums = write_fake_mnist(tmp_path, arrays)
    out = read_mnist_arrays(tmp_path, checksums)
    for key, expected in arrays.items():
        np.testing.assert_array_equal(out[key], expected)


# --- bad files ------------------------------------------------------------------------------


def test_truncated_images_file(tmp_path: Path) -> None:
    good = idx_bytes(fake_arrays()["train-images"])
    checksums = write_fake_mnist(tmp_path, raw={"train-images": good[:-100]})
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "train-images-idx3-ubyte.gz", "truncated", "replace it")


def test_truncated_header(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path, raw={"test-labels": bytes([0, 0, 8])})
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "t10k-labels-idx1-ubyte.gz", "truncated")


def test_trailing_bytes(tmp_path: Path) -> None:
    good = idx_bytes(fake_arrays()["test-labels"])
    checksums = write_fake_mnist(tmp_path, raw={"test-labels": good + b"\x00\x00"})
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "t10k-labels-idx1-ubyte.gz", "2 unexpected trailing bytes")


def test_wrong_magic_number(tmp_path: Path) -> None:
    # a label file's magic (0x801) where an image file (0x803) belongs
    bad = idx_bytes(fake_arrays()["train-images"], magic=LABELS_MAGIC)
    checksums = write_fake_mnist(tmp_path, raw={"train-images": bad})
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(
        exc, "train-images-idx3-ubyte.gz", "wrong magic number 0x00000801", "0x00000803"
    )


def test_not_an_idx_file_at_all(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path, raw={"train-labels": b"<html>not found</html>"})
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "train-labels-idx1-ubyte.gz", "wrong magic number")


def test_mismatched_image_and_label_counts(tmp_path: Path) -> None:
    arrays = fake_arrays(n_train=20)
    arrays["train-labels"] = arrays["train-labels"][:19]
    checksums = write_fake_mnist(tmp_path, arrays)
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "train-labels-idx1-ubyte.gz", "19 labels", "20 images")


def test_wrong_image_size(tmp_path: Path) -> None:
    arrays = fake_arrays()
    arrays["test-images"] = np.zeros((10, 32, 32), dtype=np.uint8)
    checksums = write_fake_mnist(tmp_path, arrays)
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "t10k-images-idx3-ubyte.gz", "(10, 32, 32)", "(N, 28, 28)")


def test_label_out_of_range(tmp_path: Path) -> None:
    arrays = fake_arrays()
    arrays["test-labels"][3] = 10
    checksums = write_fake_mnist(tmp_path, arrays)
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "t10k-labels-idx1-ubyte.gz", "label 10 outside 0..9")


def test_gz_file_that_is_not_gzip(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(fake_arrays()["train-images"]))  # raw IDX under a .gz name
    checksums["train-images"] = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, str(path), "not a gzip file")


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    checksums["test-images"] = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, str(path), "corrupt or truncated gzip")


def test_missing_file(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        read_mnist_arrays(tmp_path, checksums)
    assert_one_line(exc, "t10k-labels-idx1-ubyte.gz", "file not found", str(tmp_path))


def test_wrong_checksum_against_given_md5s(tmp_path: Path) -> None:
    checksums = write_fake_mnist(tmp_path)
    checksums["test-images"] = "0" * 32
    with pytest.raises(DataError) as exc:
        verify_directory(tmp_path, MNIST_FILES, checksums)
    assert_one_line(exc, "t10k-images-idx3-ubyte.gz", "wrong MD5", "0" * 32, "replace it")


def test_load_mnist_rejects_files_that_are_not_the_published_ones(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)  # well-formed IDX, but not MNIST: the published MD5 must fail
    with pytest.raises(DataError) as exc:
        load_mnist(data_dir=tmp_path)
    assert_one_line(
        exc, "train-images-idx3-ubyte.gz", "wrong MD5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    )


def test_load_mnist_checks_raw_files_against_raw_md5(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, compress=False)
    with pytest.raises(DataError) as exc:
        load_mnist(data_dir=tmp_path)
    assert_one_line(exc, "train-images-idx3-ubyte", "wrong MD5", "6bbc9ace898e44ae57da46a324031adb")


def test_unreadable_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_idx(tmp_path / "nope.gz")
    assert_one_line(exc, "nope.gz", "file not found")
