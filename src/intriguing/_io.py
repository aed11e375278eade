"""Atomic file writes: a killed process never leaves a half-written result behind.

Each writer writes to a temporary file in the destination's directory, flushes and fsyncs it, then
renames it over the destination (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Use it for writers that want a filename (``safetensors.torch.save_file``, ``savefig``, ...).
    On an exception the temporary file is removed and ``path`` is left untouched. Missing parent
    directories are created (the CLI refuses missing parents of files beforehand, see
    :mod:`intriguing.cli.validation`); a directory that cannot be written raises
    :class:`~intriguing.errors.OutputError` (one line) instead of an ``OSError``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _output_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _output_error(target, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _output_error(target: Path, exc: OSError) -> Exception:
    """A one-line :class:`~intriguing.errors.OutputError` for a failed write of ``target``."""
    from intriguing.errors import OutputError

    reason = exc.strerror or type(exc).__name__
    return OutputError(f"{target}: cannot write ({reason}); choose another path")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in insertion order) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a corrupt file raises :class:`intriguing.errors.IntriguingError`."""
    from intriguing.errors import IntriguingError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntriguingError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntriguingError(f"{path}: not valid JSON ({exc}); delete it and rerun") from None
