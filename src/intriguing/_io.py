"""Atomic file writes (a killed process never leaves a half-written result behind) and the one
conversion of results to strict JSON (:func:`json_safe`).

Each writer writes to a temporary file in the destination's directory, flushes and fsyncs it, then
renames it over the destination (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def finite_or_none(value: float) -> float | None:
    """``float(value)``, or None for inf / NaN (strict JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats -> None, tuples -> lists, keys -> str.

    Tensors and numpy arrays / scalars (anything with ``tolist()``) become (nested) lists of
    Python numbers first, so a float tensor's inf / NaN entries become None too. Other values
    (str, int, bool, None) pass unchanged.
    """
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return value


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_folder_names(out_dir: str | os.PathLike[str], names: Iterable[str]) -> None:
    """OutputError (one line) when a file a command will write into ``out_dir`` (``names``,
    relative) exists there as a folder: found before the work, not when the result is written."""
    from intriguing.errors import OutputError

    for name in names:
        if (Path(out_dir) / name).is_dir():
            raise OutputError(
                f"{Path(out_dir) / name} is a folder; remove it or choose another --out"
            )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Use it for writers that want a filename (``safetensors.torch.save_file``, ``savefig``, ...).
    On an exception the temporary file is removed and ``path`` is left untouched. Missing parent
    directories are created (the CLI refuses missing parents of files beforehand, see
    :mod:`intriguing.cli.validation`); a directory that cannot be written raises
    :class:`~intriguing.errors.OutputError` (one line) instead of an ``OSError``. The temporary's
    name holds this host and process (``.<name>.<host>.<pid>.<random>.tmp``): a process killed
    while writing (SIGKILL runs no cleanup) leaves its temporary behind, and the next successful
    write of ``path`` removes the ones of this host whose process no longer runs.
    """
    target = Path(path)
    if target.is_symlink():  # write the file the link names; renaming onto it would replace it
        target = Path(os.path.realpath(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f"{_temporary_prefix(target)}{os.getpid()}.", suffix=".tmp"
        )
    except OSError as exc:
        raise _output_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # after the writer: mkstemp makes 0600, and so do writers that replace the file with their
        # own temporary (safetensors' save_file); results are meant to be shared
        try:
            os.chmod(tmp, 0o666 & ~_current_umask())
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:  # the temporary removed or the disk full under the writer
            raise _output_error(target, exc) from None
        _remove_dead_temporaries(target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temporary_prefix(target: Path) -> str:
    """``.<name>.<host>.``: the start of :func:`atomic_path`'s temporaries for ``target`` here."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())
    return f".{target.name}.{host or 'host'}."


def _remove_dead_temporaries(target: Path) -> None:
    """Remove the temporaries of ``target`` left by processes of this host that no longer run
    (killed while writing); those of running processes and of other hosts are left alone."""
    prefix = _temporary_prefix(target)
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            # exactly <pid>.<random>.tmp (mkstemp's random part has no dot): a longer name
            # belongs to another target whose name extends this one's
            rest = name[len(prefix) : -len(".tmp")].split(".")
            if len(rest) != 2 or not rest[0].isdigit():
                continue
            if not _process_runs(int(rest[0])):
                with contextlib.suppress(OSError):
                    entry.unlink()


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0: no signal is sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's (PermissionError), or cannot tell
        return True
    return True


def _output_error(target: Path, exc: OSError) -> Exception:
    """A one-line :class:`~intriguing.errors.OutputError` for a failed write of ``target``."""
    from intriguing.errors import OutputError

    reason = exc.strerror or type(exc).__name__
    return OutputError(f"{target}: cannot write ({reason}); choose another path")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save_tensors(
    path: str | os.PathLike[str],
    tensors: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors`` as a ``.safetensors`` file at ``path`` atomically: serialised in memory
    (the same bytes as ``safetensors.torch.save_file``, whose own temporary file a kill would leave
    behind under a random name) and renamed into place."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in insertion order) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses ``NaN`` and ``Infinity``: every file this package writes is
    strict JSON (``allow_nan=False``), so such a value was put there by hand. Raises ValueError
    (``json.JSONDecodeError`` for malformed text)."""
    return json.loads(text, parse_constant=_refuse_constant)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a strict JSON file (:func:`loads_strict`); a missing, unreadable or corrupt file
    raises :class:`intriguing.errors.IntriguingError` in one line."""
    from intriguing.errors import IntriguingError

    target = Path(path)
    if target.is_dir():
        raise IntriguingError(f"{path} is a directory, not a JSON file; remove it and rerun")
    try:
        return loads_strict(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntriguingError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise IntriguingError(
            f"{path}: corrupt, not valid JSON ({exc}); delete it and rerun"
        ) from None
    except OSError as exc:
        raise IntriguingError(f"{path}: cannot read ({exc.strerror or exc})") from None


UNSEALED = ("digest", "timings")  # left out of a results document's digest


def results_digest(document: dict[str, Any]) -> str:
    """SHA-256 of a results document's content: canonical JSON (sorted keys) of every field but
    ``digest`` itself and ``timings`` (wall times differ between identical runs)."""
    content = {key: value for key, value in document.items() if key not in UNSEALED}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its ``digest`` (:func:`results_digest`), as results.json is written:
    :func:`read_results` then notices a results file changed after its run."""
    return document | {"digest": results_digest(document)}


# the results of the step-graph commands that write no results.json (experiments/critics.py)
STEP_GRAPH_RESULTS = ("rarity.json", "recover.json", "curves.json")


def read_results(run_dir: str | os.PathLike[str], schema: str, *, command: str) -> dict[str, Any]:
    """``run_dir/results.json`` of an ``intriguing <command>`` run, checked for its ``schema``.

    The one loader of stored results: ``schema`` is matched exactly, or as a prefix when it ends
    with ``/`` (any version). Each failure is one line naming the file and what to run.

    Raises:
        intriguing.errors.IntriguingError: no such directory, no results.json, corrupt JSON, not a
            results file of ``command`` (another schema), or changed after its run (its
            ``digest`` does not match or is missing).
    """
    from intriguing.errors import IntriguingError

    if not str(run_dir).strip():
        raise IntriguingError(
            f"the run directory is empty; give the --out DIR of an `intriguing {command}` run"
        )
    root = Path(run_dir)
    path = root / "results.json"
    if root.exists() and not root.is_dir():
        raise IntriguingError(
            f"{run_dir} is a file, not a run directory; give the --out DIR of an "
            f"`intriguing {command}` run"
        )
    if not root.is_dir():
        raise IntriguingError(
            f"{run_dir}: no such run directory; run `intriguing {command} --out {run_dir}` first"
        )
    if path.is_dir():
        raise IntriguingError(
            f"{path} is a directory, not a results file; remove it and rerun "
            f"`intriguing {command} --out {run_dir}`"
        )
    other = [name for name in STEP_GRAPH_RESULTS if (root / name).is_file()]
    if not path.is_file() and other:
        raise IntriguingError(
            f"{run_dir} holds the results of `intriguing {Path(other[0]).stem}` ({other[0]}), not "
            f"of `intriguing {command}`; give the --out DIR of an `intriguing {command}` run"
        )
    if not path.is_file() and (root / "steps").is_dir():
        raise IntriguingError(
            f"{path} not found: the run in {run_dir} has not finished (it was stopped, or a later "
            "run with other options is changing it); rerun the command that made it, with the "
            "same options, to finish it"
        )
    if not path.is_file():
        raise IntriguingError(f"{path} not found; run `intriguing {command} --out {run_dir}` first")
    doc = read_json(path)
    found = doc.get("schema") if isinstance(doc, dict) else None
    ok = isinstance(found, str) and (
        found.startswith(schema) if schema.endswith("/") else found == schema
    )
    maker = found.split("/")[0].removeprefix("intriguing.") if isinstance(found, str) else ""
    if not ok and isinstance(found, str) and found.startswith("intriguing.") and maker != command:
        raise IntriguingError(
            f"{path}: holds the results of `intriguing {maker}` (schema {found!r}), not of "
            f"`intriguing {command}`, which this reads; give the --out DIR of an "
            f"`intriguing {command}` run (`intriguing {maker}` writes its own report)"
        )
    if not ok:
        raise IntriguingError(
            f"{path}: not the results of `intriguing {command}` (schema {schema!r}, found {found!r}); "
            f"rerun `intriguing {command}`"
        )
    if "digest" not in doc:
        raise IntriguingError(
            f"{path}: has no digest, so its numbers cannot be checked against its run (edited, or "
            f"written by an older version); rerun `intriguing {command}` with the same options "
            "and --out to re-derive it (finished steps are reused)"
        )
    if doc["digest"] != results_digest(doc):
        raise IntriguingError(
            f"{path}: changed after the run (its digest does not match its content); rerun "
            f"`intriguing {command}` with the same options and --out to re-derive it (finished "
            "steps are reused)"
        )
    return dict(doc)
