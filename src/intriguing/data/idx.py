"""The IDX file format of MNIST (LeCun et al.), read with numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the array itself in C order (big-endian for multi-byte types). MNIST's
image files are ``0x00000803`` (uint8, 3-D: N x 28 x 28) and its label files ``0x00000801`` (uint8,
1-D: N). Files ending in ``.gz`` are gzip-compressed; any other name is read as raw IDX.

Every problem (missing file, not gzip, truncated, wrong magic number, trailing bytes) raises a
one-line :class:`~intriguing.errors.DataError` naming the file, the problem and what to do.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from intriguing.errors import DataError

# IDX type code -> numpy dtype (big-endian where it matters).
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_FIX = "replace it with the original MNIST file (delete it to re-download)"


def read_file_bytes(path: Path) -> bytes:
    """The decompressed bytes of ``path`` (gunzipped when the name ends in ``.gz``).

    Raises:
        DataError: the file is missing or unreadable, or a ``.gz`` file is not valid gzip.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {_FIX}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except gzip.BadGzipFile:
        raise DataError(f"{path}: not a gzip file although named .gz; {_FIX}") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc}); {_FIX}") from None


def decode_idx(data: bytes, *, source: str, expected_magic: int | None = None) -> np.ndarray:
    """Decode raw IDX bytes into a numpy array (shape from the header, dtype from the type code).

    Args:
        data: the uncompressed file content.
        source: the file's name, used in error messages.
        expected_magic: if given, the magic number the file must start with (e.g. ``IMAGES_MAGIC``).

    Returns:
        A read-only array viewing ``data`` (native byte order for uint8/int8).

    Raises:
        DataError: wrong magic number, unknown type code, truncated data or trailing bytes.
    """
    if len(data) < 4:
        raise DataError(f"{source}: truncated ({len(data)} bytes, no IDX header); {_FIX}")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{source}: wrong magic number 0x{magic:08x} (expected 0x{expected_magic:08x}); "
            f"not an MNIST IDX file of this kind, {_FIX}"
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{source}: wrong magic number 0x{magic:08x}; not an IDX file, {_FIX}")
    dtype = IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated inside the IDX header; {_FIX}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{source}: truncated ({len(data)} bytes, header {shape} needs {expected}); {_FIX}"
        )
    if len(data) > expected:
        raise DataError(
            f"{source}: {len(data) - expected} unexpected trailing bytes after the {shape} array; {_FIX}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path, *, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array; see :func:`decode_idx`."""
    return decode_idx(read_file_bytes(path), source=str(path), expected_magic=expected_magic)
