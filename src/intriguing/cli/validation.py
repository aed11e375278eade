"""Output paths checked before any work starts (issue 16, item 1).

Every ``--out`` / ``--json`` / ``--save`` / ``--plot`` option of every command uses one of two click
parameter types defined here:

- :class:`OutputFile` (``kind="file"``): the path must not be a directory or a special file; its
  parent must be an existing, writable directory. A missing parent is refused (nothing is created
  silently) unless it lies inside a directory given to an :class:`OutputDir` option of the same
  command (``--json RUN/results.json --out RUN``), which the command creates anyway.
- :class:`OutputDir` (``kind="dir"``): the path is a writable directory, or can be created: its
  nearest existing ancestor is a writable directory (not a file).

Both refuse ``/proc``, ``/sys`` and ``/dev``, path components longer than 255 bytes and paths with
NUL bytes. Writability is probed by creating (and removing) a temporary file, which also catches
read-only file systems. Problems become one-line :class:`~intriguing.errors.OutputError` messages
raised as click usage errors (``Error: ...``, exit 2) while the command line is parsed, i.e. before
any data is read, any model trained or any attack run. The writes themselves are atomic
(:mod:`intriguing._io`).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from intriguing.errors import OutputError

_FORBIDDEN = (Path("/proc"), Path("/sys"), Path("/dev"))
_NAME_MAX = 255
_PATH_MAX = 4096
_META_KEY = "intriguing.output_dirs"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_syntax(path: Path) -> Path:
    """Refuse empty paths, NUL bytes, over-long names and system pseudo file systems."""
    text = str(path)
    if not text.strip():
        raise OutputError("an output path is empty; give a file or directory name")
    if "\x00" in text:
        raise OutputError(f"{text!r}: an output path cannot contain a NUL byte")
    if len(os.fsencode(text)) > _PATH_MAX or any(
        len(os.fsencode(part)) > _NAME_MAX for part in path.parts
    ):
        raise OutputError(f"{text[:60]}...: path or file name too long; choose a shorter one")
    resolved = Path(os.path.abspath(path.expanduser()))
    try:
        real = resolved.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise OutputError(f"{path}: cannot resolve the path (symlink loop?)") from None
    for root in _FORBIDDEN:
        if any(p == root or root in p.parents for p in (resolved, real)):
            raise OutputError(f"{path}: cannot write under {root}; choose another path")
    return resolved


def probe_writable(directory: Path, shown: Path) -> None:
    """Create and remove a temporary file in ``directory``; OutputError naming ``shown`` if not."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".intriguing-probe-")
    except OSError as exc:
        raise OutputError(
            f"{shown}: cannot write in {directory} ({_reason(exc)}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(name)


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (absolute) that exists; OutputError if it is a file."""
    current = path
    while not current.exists() and current != current.parent:
        previous, current = current, current.parent
        if current.exists() and not current.is_dir():
            raise OutputError(f"{path}: {current} is a file, so {previous} cannot be created")
    return current


def check_output_dir(path: Path) -> Path:
    """Check that ``path`` is (or can be created as) a writable directory; return it unchanged.

    Raises:
        OutputError: ``path`` is a file, lies below a file, under /proc, /sys or /dev, or its
            nearest existing ancestor is not writable.
    """
    absolute = _check_syntax(path)
    if absolute.exists():
        if not absolute.is_dir():
            raise OutputError(f"{path} is a file; give a directory")
        probe_writable(absolute, path)
        return path
    ancestor = _existing_ancestor(absolute)
    if not ancestor.is_dir():
        raise OutputError(f"{path}: {ancestor} is not a directory; choose another path")
    probe_writable(ancestor, path)
    return path


def check_output_file(path: Path, created_dirs: tuple[Path, ...] = ()) -> Path:
    """Check that a result can be written to file ``path``; return it unchanged.

    ``created_dirs``: directories the command creates itself (its ``--out``); a missing parent
    inside one of them is accepted (checked as a directory instead).

    Raises:
        OutputError: ``path`` is a directory or a special file, its parent is missing (outside
            ``created_dirs``), a file, read-only, or under /proc, /sys or /dev.
    """
    absolute = _check_syntax(path)
    if absolute.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    if absolute.exists() and not absolute.is_file():
        raise OutputError(f"{path} is not a regular file; give a file name")
    parent = absolute.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a directory")
    if not parent.exists():
        if not any(parent == d or d in parent.parents for d in created_dirs):
            raise OutputError(
                f"{path}: directory {parent} does not exist; create it first (nothing is "
                "created silently)"
            )
        check_output_dir(parent)
        return path
    probe_writable(parent, path)
    return path


class OutputPath(click.ParamType):
    """A click type for an output file (``kind="file"``) or directory (``kind="dir"``).

    The value converts to a :class:`~pathlib.Path` after the checks of :func:`check_output_file`
    or :func:`check_output_dir`; a failed check is a usage error (``Error: ...``, exit 2).
    """

    def __init__(self, kind: str = "file", suffix: str | None = None) -> None:
        if kind not in ("file", "dir"):
            raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
        self.kind, self.suffix = kind, suffix
        self.name = "directory" if kind == "dir" else "file"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DIR" if self.kind == "dir" else "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            path = value
        elif isinstance(value, str):
            if not value.strip():
                self.fail("an output path is empty; give a file or directory name", param, ctx)
            if "\x00" in value:
                self.fail(f"{value!r}: an output path cannot contain a NUL byte", param, ctx)
            path = Path(value)
        else:
            self.fail(f"{value!r} is not a path", param, ctx)
        try:
            if self.kind == "dir":
                checked = check_output_dir(path)
                if ctx is not None:
                    ctx.meta.setdefault(_META_KEY, []).append(_check_syntax(path))
                return checked
            if self.suffix is not None and path.suffix.lower() != self.suffix:
                self.fail(
                    f"{path}: this option writes a {self.suffix} file; name it "
                    f"{path.with_suffix(self.suffix).name}",
                    param,
                    ctx,
                )
            created = tuple(ctx.meta.get(_META_KEY, [])) if ctx is not None else ()
            return check_output_file(path, created)
        except OutputError as exc:
            self.fail(str(exc), param, ctx)


def output_file(suffix: str | None = None) -> OutputPath:
    """The type of every output-file option (``--json``, ``--save``, ``--plot``, ...); ``suffix``
    (e.g. ``".safetensors"``): the file's format, which its name must end with (checked before
    any work, so nothing is written under a misleading name)."""
    return OutputPath("file", suffix)


def output_dir() -> OutputPath:
    """The type of every output-directory option (``--out``); declare it ``is_eager=True`` so a
    file option inside it (``--json OUT/x.json``) may name a parent that ``--out`` creates."""
    return OutputPath("dir")


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (which compare as in range)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        if not math.isfinite(converted):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return converted


def float_range(
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
) -> FiniteFloatRange:
    """The type of every float option: bounded (shown in --help) and finite."""
    return FiniteFloatRange(min, max, min_open=min_open, max_open=max_open)
