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

Once every option is parsed, :func:`refuse_overwrites` (applied to every command of the console
script by :func:`guard_outputs`) refuses an output file that is, by any spelling, symlink or hard
link, an input (a ``click.Path`` option such as ``--weights``, ``--tensors``, ``--labels``, a file an
input folder reads, or the file a MODEL argument names), another output, a sidecar another output
writes (``--save X.safetensors`` writes ``X.safetensors.json``) or an output directory.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from intriguing.errors import OutputError

_FORBIDDEN = (Path("/proc"), Path("/sys"), Path("/dev"))
_NAME_MAX = 255
_PATH_MAX = 4096
# room an output directory leaves for what a run writes inside it (the longest today, such as
# artifacts/attack/train/<model>/untargeted/shard-0000/result.safetensors, is under 100 bytes)
DIRECTORY_ROOM = 256
_META_KEY = "intriguing.output_dirs"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def expand_home(path: Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; OutputError (one line) for an unknown
    user or an unknown home folder (``Path.expanduser`` raises RuntimeError)."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise OutputError(
            f"{path}: cannot expand {path.parts[0]} (no such user, or no home folder)"
        ) from None


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
    resolved = Path(os.path.abspath(expand_home(path)))
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


def refuse_directory_name(text: str) -> None:
    """OutputError when an output file's name is a directory: an existing one, ``.``, ``..``, ``/``
    or a name ending in a separator (a file name is needed; ``Path.with_suffix`` fails on them)."""
    last = text.replace(os.altsep or os.sep, os.sep).rsplit(os.sep, 1)[-1]
    existing = expand_home(Path(text)).is_dir()
    if existing or last in ("", ".", ".."):
        raise OutputError(f"{text} {'is' if existing else 'names'} a directory; give a file name")


def _refuse_dangling_link(absolute: Path, shown: Path) -> None:
    """OutputError when ``absolute`` or a folder above it is a symbolic link to nothing: the
    folders could not be created through it (found only when the results were written)."""
    for part in (absolute, *absolute.parents):
        if part.is_symlink() and not part.exists():
            raise OutputError(
                f"{shown}: {part} is a symbolic link to {os.readlink(part)}, which does not exist; "
                "create its target or choose another path"
            )


def check_output_dir(path: Path) -> Path:
    """Check that ``path`` is (or can be created as) a writable directory; return it unchanged.

    Raises:
        OutputError: ``path`` is a file, lies below a file, under /proc, /sys or /dev, is too long
            to hold the files written inside it, or its nearest existing ancestor is not writable.
    """
    absolute = _check_syntax(path)
    if len(os.fsencode(str(absolute))) + DIRECTORY_ROOM > _PATH_MAX:
        raise OutputError(
            f"{str(path)[:60]}...: the files written inside this directory would pass the system's "
            f"{_PATH_MAX}-byte path limit; choose a shorter path"
        )
    _refuse_dangling_link(absolute, path)
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
    refuse_directory_name(str(path))
    _refuse_dangling_link(absolute, path)
    if absolute.exists() and not absolute.is_file():
        raise OutputError(f"{path} is not a regular file; give a file name")
    parent = absolute.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a directory")
    if not parent.exists():
        created = [_check_syntax(d) for d in created_dirs]  # absolute, as parent is
        if not any(parent == d or d in parent.parents for d in created):
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

    def __init__(
        self, kind: str = "file", suffix: str | None = None, sidecars: tuple[str, ...] = ()
    ) -> None:
        if kind not in ("file", "dir"):
            raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
        self.kind, self.suffix, self.sidecars = kind, suffix, sidecars
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
            path = expand_home(path)  # the shell leaves ~ alone in --json=~/x.json
            if self.kind == "dir":
                checked = check_output_dir(path)
                if ctx is not None:
                    ctx.meta.setdefault(_META_KEY, []).append(_check_syntax(path))
                return checked
            _check_syntax(path)
            refuse_directory_name(value if isinstance(value, str) else str(path))
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


def output_file(suffix: str | None = None, sidecars: tuple[str, ...] = ()) -> OutputPath:
    """The type of every output-file option (``--json``, ``--save``, ``--plot``, ...); ``suffix``
    (e.g. ``".safetensors"``): the file's format, which its name must end with (checked before
    any work, so nothing is written under a misleading name); ``sidecars``: what the command
    appends to the name for the files it writes beside it (``(".json",)``: ``NAME.json``)."""
    return OutputPath("file", suffix, sidecars)


def output_dir() -> OutputPath:
    """The type of every output-directory option (``--out``); declare it ``is_eager=True`` so a
    file option inside it (``--json OUT/x.json``) may name a parent that ``--out`` creates."""
    return OutputPath("dir")


# ------------------------------------------------------------------ outputs that replace inputs
@dataclass(frozen=True)
class Output:
    """An output a command writes: ``flag`` (``--save``) and ``path``; ``sidecars``: suffixes
    appended to the name for the files written beside it; ``directory``: an ``--out`` folder."""

    flag: str
    path: Path
    sidecars: tuple[str, ...] = ()
    directory: bool = False


@dataclass(frozen=True)
class Input:
    """A file or folder a command reads: ``flag`` (``--weights``, ``MODEL``) and ``path``;
    ``reads``: for a folder, which of its files the command reads (None: every file)."""

    flag: str
    path: Path
    reads: Callable[[Path], bool] | None = None


class InputPath(click.Path):
    """``click.Path`` for an input option; ``reads``: which files of an input folder are read
    (:func:`refuse_overwrites` refuses only outputs that would replace one of those);
    ``companions``: suffixes of the files read with it (a checkpoint's ``.json`` sidecar)."""

    def __init__(
        self,
        *,
        reads: Callable[[Path], bool] | None = None,
        companions: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(path_type=Path, **kwargs)
        self.reads, self.companions = reads, companions

    def inputs(self, flag: str, path: Path) -> list[Input]:
        """The inputs the option's value ``path`` stands for."""
        others = [path.with_suffix(s) for s in self.companions if path.name not in ("", "..")]
        return [Input(flag, path, self.reads), *(Input(flag, p) for p in others)]


def _real(path: Path) -> Path:
    """``path`` absolute, ``~`` expanded and symlinks resolved: the one spelling compared."""
    return Path(os.path.abspath(expand_home(path))).resolve()


def _identity(path: Path) -> tuple[Any, ...]:
    """What makes two paths the same file: device and inode where it exists (hard links,
    symlinks), else the absolute path with symlinks resolved."""
    real = _real(path)
    try:
        info = real.stat()
    except OSError:
        return ("path", str(real))
    return ("inode", info.st_dev, info.st_ino)


def _inside(path: Path, folder: Path, reads: Callable[[Path], bool] | None) -> bool:
    """Whether ``path`` is an existing file in ``folder`` (at any depth) that the folder's input
    reads."""
    real = _real(path)
    root = _real(folder)
    if root not in real.parents or not real.is_file():
        return False
    return reads is None or reads(real)


def _written(outputs: Sequence[Output]) -> list[tuple[str, Path]]:
    """Every file the outputs write, each with how to name it in a message."""
    files: list[tuple[str, Path]] = []
    for out in outputs:
        if out.directory:
            continue
        files.append((f"{out.flag} {out.path}", out.path))
        for suffix in out.sidecars:
            sidecar = out.path.with_name(out.path.name + suffix)
            files.append((f"the {suffix} sidecar that {out.flag} {out.path} writes", sidecar))
    return files


def _check_input(what: str, path: Path, source: Input) -> None:
    """OutputError if the output ``path`` (named ``what``) would replace the input ``source``."""
    folder = expand_home(source.path).is_dir()
    if folder and _inside(path, source.path, source.reads):
        raise OutputError(
            f"{what} would overwrite a file of the {source.flag} folder {source.path}; "
            "write the output elsewhere"
        )
    if not folder and _identity(path) == _identity(source.path):
        raise OutputError(
            f"{what} would overwrite the {source.flag} file {source.path}; "
            "choose another output name"
        )


# the kinds of file an output directory receives (figures, tables, JSON, tensors)
DIRECTORY_SUFFIXES = (".png", ".json", ".md", ".html", ".safetensors", ".npz", ".txt")


def _check_directory(out: Output, source: Input) -> None:
    """OutputError if the output directory ``out`` is the input folder ``source`` or lies inside
    it, and that folder reads files of the kinds a command writes (an ``--images`` folder would
    take a written figure for an image on the next run; a ``--from-run`` folder would mix)."""
    real = _real(out.path)
    root = _real(source.path)
    if not root.is_dir() or (real != root and root not in real.parents):
        return
    if source.reads is not None and not any(
        source.reads(real / f"output{suffix}") for suffix in DIRECTORY_SUFFIXES
    ):
        return
    where = "is" if real == root else "lies inside"
    raise OutputError(
        f"{out.flag} {out.path} {where} the {source.flag} folder {source.path}, which the command "
        "reads; write the output elsewhere"
    )


def refuse_overwrites(outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
    """Refuse an output file that is an input (or a file an input folder reads), another output,
    another output's sidecar or an output directory, and an output directory that is (or lies
    inside) an input folder reading what it would receive, whatever the spelling, symlink or hard
    link.

    Raises:
        OutputError: one line naming both options.
    """
    for out in outputs:
        if out.directory:
            for source in inputs:
                _check_directory(out, source)
    files = _written(outputs)
    for what, path in files:
        if expand_home(path).is_dir():  # the option's own name was checked when parsed
            raise OutputError(f"{what} is an existing directory: {path}; remove it or rename")
    seen: dict[tuple[Any, ...], str] = {
        _identity(out.path): f"the {out.flag} directory {out.path}"
        for out in outputs
        if out.directory
    }
    for what, path in files:
        for source in inputs:
            _check_input(what, path, source)
        other = seen.setdefault(_identity(path), what)
        if other != what:
            # name an option first: "--json X is also the .json sidecar that --save Y writes"
            first, second = (other, what) if what.startswith("the ") else (what, other)
            raise OutputError(f"{first} is also {second}; give each output its own name")


def model_files(spec: str) -> list[Path]:
    """The files a MODEL argument reads: ``file.py`` of ``file.py:factory``, the module file of
    ``package.module:factory`` in the current directory, a checkpoint and its sidecar."""
    text = spec.strip()
    suffix = Path(text).suffix.lower()
    if suffix in (".safetensors", ".json"):
        return [Path(text).with_suffix(".safetensors"), Path(text).with_suffix(".json")]
    module = text.rpartition(":")[0]
    if not module:
        return []
    if module.endswith(".py"):
        return [Path(module)]
    base = Path(*module.split("."))
    return [base.with_suffix(".py"), base / "__init__.py"]


def _values(value: Any) -> Iterable[Any]:
    return value if isinstance(value, tuple | list) else (value,)


def _parsed(ctx: click.Context) -> tuple[list[Output], list[Input]]:
    """The outputs and inputs of the command line parsed into ``ctx``."""
    outputs: list[Output] = []
    inputs: list[Input] = []
    for param in ctx.command.params:
        flag = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        for value in _values(ctx.params.get(param.name or "")):
            if value is None:
                continue
            kind = param.type
            if isinstance(kind, OutputPath):
                outputs.append(Output(flag, Path(value), kind.sidecars, kind.kind == "dir"))
            elif isinstance(kind, InputPath):
                inputs.extend(kind.inputs(flag, Path(value)))
            elif isinstance(kind, click.Path):
                inputs.append(Input(flag, Path(value)))
            elif isinstance(param, click.Argument) and isinstance(value, str):
                inputs.extend(Input(flag, path) for path in model_files(value))
    return outputs, inputs


def check_overwrites(ctx: click.Context) -> None:
    """:func:`refuse_overwrites` on the command line parsed into ``ctx``."""
    outputs, inputs = _parsed(ctx)
    if outputs:
        refuse_overwrites(outputs, inputs)


_GUARDED = "_intriguing_outputs_guarded"


def guard_outputs(command: click.Command) -> click.Command:
    """Make ``command`` (and a group's subcommands) run :func:`check_overwrites` once its options
    are parsed, before its own code: the console script applies it to every command."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            guard_outputs(sub)
    callback = command.callback
    if callback is None or getattr(callback, _GUARDED, False):
        return command

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_overwrites(click.get_current_context())
        return callback(*args, **kwargs)

    setattr(checked, _GUARDED, True)
    command.callback = checked
    return command


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
