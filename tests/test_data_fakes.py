"""Helpers for the data tests: tiny hand-built MNIST-format files and a loopback HTTP server.

Also checks the helpers themselves against hand-written bytes, so the other tests' fixtures are sound.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from intriguing.data.files import MNIST_FILES

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as IDX: magic (default 0x0000 08 <ndim>), big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def fake_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images (N, 28, 28) and labels cycling 0..9, keyed like MNIST_FILES."""
    rng = np.random.default_rng(seed)
    return {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test-labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_fake_mnist(
    directory: Path,
    arrays: dict[str, np.ndarray] | None = None,
    *,
    raw: dict[str, bytes] | None = None,
    compress: bool = True,
) -> dict[str, str]:
    """Write the four files (gzip ``<name>.gz`` or raw ``<name>``); return ``{key: md5}``.

    ``raw`` replaces a file's uncompressed content by the given bytes (to build broken files).
    """
    directory.mkdir(parents=True, exist_ok=True)
    arrays = arrays if arrays is not None else fake_arrays()
    checksums: dict[str, str] = {}
    for spec in MNIST_FILES:
        content = (raw or {}).get(spec.key)
        if content is None:
            content = idx_bytes(arrays[spec.key])
        data = gzip.compress(content, mtime=0) if compress else content
        path = directory / (spec.gz_name if compress else spec.name)
        path.write_bytes(data)
        checksums[spec.key] = hashlib.md5(data).hexdigest()
    return checksums


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; records request paths instead of logging them."""

    requests: ClassVar[list[str]]

    def log_message(self, format: str, *args: object) -> None:
        type(self).requests.append(self.path)


@contextmanager
def serve_directory(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port) in a thread.

    Yields:
        ``(base_url, requests)``: the base URL ending in ``/`` and the list of request paths.
    """

    class Handler(_QuietHandler):
        requests: ClassVar[list[str]] = []  # one fresh list per served directory

    handler = Handler
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_idx_bytes_matches_hand_written_header() -> None:
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    expected = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert idx_bytes(array) == expected


def test_serve_directory_serves_files_on_loopback(tmp_path: Path) -> None:
    import urllib.request

    (tmp_path / "hello.txt").write_bytes(b"hi")
    with serve_directory(tmp_path) as (base, requests):
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base + "hello.txt", timeout=5) as response:
            assert response.read() == b"hi"
    assert requests == ["/hello.txt"]
