"""The four original MNIST files, their published MD5 checksums, and how a directory is checked.

The gzip MD5s are the published ones (``/work/shared/REFERENCE.md``, torchvision, the mirrors); the
raw MD5s are those of the same files after ``gunzip`` (computed from the verified gzip files), so a
directory holding the uncompressed files is verified just as strictly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from intriguing.errors import DataError
from intriguing.paths import DATA_DIR_ENV


@dataclass(frozen=True)
class MnistFile:
    """One of the four MNIST files.

    Attributes:
        key: short name used in identities (``train-images``, ``train-labels``, ...).
        name: file name without ``.gz`` (``train-images-idx3-ubyte``, ...).
        gz_md5: MD5 of the published ``<name>.gz``.
        gz_size: size in bytes of ``<name>.gz``.
        raw_md5: MD5 of the uncompressed ``<name>``.
        raw_size: size in bytes of the uncompressed ``<name>``.
    """

    key: str
    name: str
    gz_md5: str
    gz_size: int
    raw_md5: str
    raw_size: int

    @property
    def gz_name(self) -> str:
        """The compressed file's name, as served by the mirrors."""
        return self.name + ".gz"


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train-images",
        "train-images-idx3-ubyte",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        9912422,
        "6bbc9ace898e44ae57da46a324031adb",
        47040016,
    ),
    MnistFile(
        "train-labels",
        "train-labels-idx1-ubyte",
        "d53e105ee54ea40749a09fcbcd1e9432",
        28881,
        "a25bea736e30d166cdddb491f175f624",
        60008,
    ),
    MnistFile(
        "test-images",
        "t10k-images-idx3-ubyte",
        "9fb629c4189551a2d022fa330f9573f3",
        1648877,
        "2646ac647ad5339dbf082846283269ea",
        7840016,
    ),
    MnistFile(
        "test-labels",
        "t10k-labels-idx1-ubyte",
        "ec29112dd5afa0611ce80d1b7f02629c",
        4542,
        "27ae3e4e09519cfbb04c329615203637",
        10008,
    ),
)

FILES_BY_KEY: dict[str, MnistFile] = {spec.key: spec for spec in MNIST_FILES}


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file's bytes, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def find_file(directory: Path, spec: MnistFile) -> Path | None:
    """``<dir>/<name>.gz`` if it exists, else the raw ``<dir>/<name>``, else None."""
    for candidate in (directory / spec.gz_name, directory / spec.name):
        if candidate.is_file():
            return candidate
    return None


def has_all_files(directory: Path, specs: tuple[MnistFile, ...] = MNIST_FILES) -> bool:
    """Whether ``directory`` holds every file in ``specs`` (gzip or raw)."""
    return directory.is_dir() and all(find_file(directory, spec) is not None for spec in specs)


def missing_files(directory: Path, specs: tuple[MnistFile, ...] = MNIST_FILES) -> list[str]:
    """Names (``<name>.gz``) of the files in ``specs`` that ``directory`` lacks."""
    return [spec.gz_name for spec in specs if find_file(directory, spec) is None]


def expected_md5(path: Path, spec: MnistFile) -> str:
    """The reference MD5 for ``path`` (gzip or raw form of ``spec``)."""
    return spec.gz_md5 if path.suffix == ".gz" else spec.raw_md5


def verify_md5(path: Path, expected: str) -> str:
    """Check ``path``'s MD5 against ``expected``; return it.

    Raises:
        DataError: the checksum differs (the file is corrupt, truncated or not the original).
    """
    actual = md5_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: wrong MD5 checksum {actual} (expected {expected}); the file is corrupt or not "
            "the original MNIST file: replace it (a file in the cache is re-downloaded once deleted)"
        )
    return actual


def verify_directory(
    directory: Path,
    specs: tuple[MnistFile, ...] = MNIST_FILES,
    checksums: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Locate and MD5-check every file of ``specs`` in ``directory``.

    Args:
        directory: where the files are.
        specs: the files to look for.
        checksums: ``{key: md5}`` overriding the reference MD5s (tests use it for synthetic files).

    Returns:
        ``{key: path}`` of the verified files.

    Raises:
        DataError: a file is missing or has the wrong checksum.
    """
    found: dict[str, Path] = {}
    for spec in specs:
        path = find_file(directory, spec)
        if path is None:
            raise DataError(
                f"{directory / spec.gz_name}: file not found; put the four MNIST files "
                f"({', '.join(s.gz_name for s in specs)}) in {directory}"
            )
        wanted = checksums[spec.key] if checksums is not None else expected_md5(path, spec)
        verify_md5(path, wanted)
        found[spec.key] = path
    return found


def where_to_put_files() -> str:
    """The advice given whenever MNIST cannot be found."""
    names = ", ".join(spec.gz_name for spec in MNIST_FILES)
    return (
        f"put the four MNIST files ({names}) in a directory and pass --data-dir DIR "
        f"(data_dir=DIR) or set {DATA_DIR_ENV}=DIR, or use --dataset mnist-5k"
    )
