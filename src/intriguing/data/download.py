"""Download the four MNIST files from public mirrors, MD5-checked, written atomically.

Mirrors are tried in order for each file (default :data:`DEFAULT_MIRRORS`; override with
``$INTRIGUING_MNIST_MIRRORS``, a comma- or space-separated list of base URLs, ``file://`` and
``http://`` included). Each file streams into a temporary file beside its destination while its MD5
is computed and a progress bar advances; only a file with the published MD5 is renamed into place.
A file with the wrong checksum is deleted, reported with a :class:`DownloadWarning`, and the next
mirror is tried. When every mirror fails the error is one line listing each mirror's failure and
where to put the files by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.progress import Progress, TaskID

from intriguing._io import atomic_path
from intriguing.data.files import MNIST_FILES, MnistFile, md5_of, where_to_put_files
from intriguing.errors import DataError
from intriguing.progress import make_progress

MIRRORS_ENV = "INTRIGUING_MNIST_MIRRORS"
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
TIMEOUT_S = 30.0
CHUNK = 1 << 16
USER_AGENT = "intriguing-mnist-downloader/0.1 (+python urllib)"


class DownloadWarning(UserWarning):
    """A mirror failed or served a corrupt file (which was deleted); the next mirror is tried."""


class _ChecksumMismatchError(Exception):
    """Internal: the downloaded bytes have the wrong MD5 (the temporary file is then deleted)."""


def mirror_list() -> list[str]:
    """Base URLs to try, in order: ``$INTRIGUING_MNIST_MIRRORS`` if set, else the defaults."""
    raw = os.environ.get(MIRRORS_ENV, "")
    mirrors = [m for m in raw.replace(",", " ").split() if m] or list(DEFAULT_MIRRORS)
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _fetch(
    url: str, dest: Path, expected: str, progress: Progress, task: TaskID, timeout: float
) -> None:
    """Stream ``url`` into ``dest`` atomically; raise :class:`_ChecksumMismatchError` on a bad MD5."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(request, timeout=timeout) as response, atomic_path(dest) as tmp:
        length = response.headers.get("Content-Length")
        progress.reset(task, total=int(length) if length and length.isdigit() else None)
        with open(tmp, "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                progress.advance(task, len(block))
        actual = digest.hexdigest()
        if actual != expected:
            raise _ChecksumMismatchError(f"wrong MD5 {actual} (expected {expected}), file deleted")


def _describe(exc: BaseException) -> str:
    """A short one-line reason for a failed download."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason).splitlines()[0] if str(exc.reason) else type(exc).__name__
    return (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__


def download_file(
    spec: MnistFile,
    dest_dir: Path,
    expected: str,
    mirrors: Sequence[str],
    progress: Progress,
    timeout: float = TIMEOUT_S,
    unreachable: set[str] | None = None,
) -> Path:
    """Download ``spec``'s gzip file into ``dest_dir``, trying each mirror until one is correct.

    Mirrors in ``unreachable`` (a network error earlier) are tried last; mirrors that fail with a
    network error now are added to it, so a dead mirror costs one timeout, not one per file.

    Raises:
        DataError: every mirror failed; the message lists each mirror's reason.
    """
    dest = dest_dir / spec.gz_name
    failures: list[str] = []
    task = progress.add_task(spec.gz_name, total=spec.gz_size)
    unreachable = unreachable if unreachable is not None else set()
    for mirror in sorted(mirrors, key=lambda m: m in unreachable):  # stable: keeps the order
        url = mirror + spec.gz_name
        try:
            _fetch(url, dest, expected, progress, task, timeout)
        except _ChecksumMismatchError as exc:
            reason = str(exc)
        except urllib.error.HTTPError as exc:  # the server answered: not a network problem
            reason = _describe(exc)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = _describe(exc)
            unreachable.add(mirror)
        else:
            return dest
        failures.append(f"{url}: {reason}")
        warnings.warn(f"download of {url} failed: {reason}", DownloadWarning, stacklevel=3)
    raise DataError(
        f"could not download {spec.gz_name} ({'; '.join(failures) or 'no mirrors'}); "
        f"check the network or {MIRRORS_ENV}, or {where_to_put_files()}"
    )


def download_mnist(
    dest_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> dict[str, Path]:
    """Make ``dest_dir`` hold the four verified MNIST gzip files, downloading those missing.

    A file already there with the right MD5 is kept; one with a wrong MD5 is replaced.

    Args:
        dest_dir: target directory (created if needed).
        mirrors: base URLs to try in order; default :func:`mirror_list`.
        checksums: ``{key: md5}`` overriding the published gzip MD5s (tests).
        timeout: socket timeout per request, seconds.

    Returns:
        ``{key: path}`` of the four files.

    Raises:
        DataError: some file could not be downloaded correctly from any mirror.
    """
    dest = Path(dest_dir).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest} ({exc.strerror}); choose a writable directory"
        ) from None
    urls = list(mirrors) if mirrors is not None else mirror_list()
    urls = [u if u.endswith("/") else u + "/" for u in urls]
    paths: dict[str, Path] = {}
    unreachable: set[str] = set()
    with make_progress() as progress:
        for spec in MNIST_FILES:
            expected = checksums[spec.key] if checksums is not None else spec.gz_md5
            existing = dest / spec.gz_name
            if existing.is_file():
                if md5_of(existing) == expected:
                    paths[spec.key] = existing
                    continue
                warnings.warn(
                    f"{existing}: wrong MD5, downloading a fresh copy",
                    DownloadWarning,
                    stacklevel=2,
                )
            paths[spec.key] = download_file(
                spec, dest, expected, urls, progress, timeout, unreachable
            )
    return paths
