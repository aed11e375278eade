"""Atomic writes and JSON reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from intriguing._io import atomic_path, atomic_write_bytes, atomic_write_json, read_json, sealed
from intriguing.errors import IntriguingError


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_write_removes_the_temporaries_of_killed_writers_only(tmp_path: Path) -> None:
    """A writer killed by SIGKILL leaves its hidden temporary; the next write of the same file
    removes it (a probe found a SIGKILLed advtrain's ``.tmp`` figure left after a rerun), but not a
    running process's, another host's or another file's."""
    import subprocess
    import sys

    from intriguing._io import _temporary_prefix

    target = tmp_path / "figure.png"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid no longer runs
    prefix = _temporary_prefix(target)
    dead = tmp_path / f"{prefix}{child.pid}.abc123.tmp"
    alive = tmp_path / f"{prefix}{os.getpid()}.def456.tmp"
    elsewhere = tmp_path / f".figure.png.otherhost.{child.pid}.ghi789.tmp"
    other_file = tmp_path / f"{_temporary_prefix(tmp_path / 'other.png')}{child.pid}.jkl012.tmp"
    # a live temporary of another target whose name extends this one's by ".<host>.<dead pid>"
    # (a probe: the pid was read from the wrong field and the live file deleted)
    longer = tmp_path / f"figure.png.{prefix.split('.')[-2]}.{child.pid}"
    extended = tmp_path / f"{_temporary_prefix(longer)}{os.getpid()}.mno345.tmp"
    for leftover in (dead, alive, elsewhere, other_file, extended):
        leftover.write_bytes(b"half")
    atomic_write_bytes(target, b"png")
    assert target.read_bytes() == b"png"
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and other_file.exists() and extended.exists()


def test_a_temporary_removed_under_the_writer_is_one_line(tmp_path: Path) -> None:
    from intriguing.errors import OutputError

    with pytest.raises(OutputError, match="cannot write"), atomic_path(tmp_path / "r.bin") as tmp:
        tmp.write_bytes(b"x")
        tmp.unlink()
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "r.json", [1, 2])
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")})
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("content", "message"), [(None, "not found"), ('{"a": ', "not valid JSON")]
)
def test_read_json_errors_are_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(IntriguingError, match=message) as info:
        read_json(path)
    assert "\n" not in str(info.value)


def test_json_safe_is_strict_json() -> None:
    """One conversion for every result (issue 17): inf/NaN -> None, tuples -> lists, keys -> str."""
    import json
    import math

    import numpy as np
    import torch

    from intriguing._io import finite_or_none, json_safe

    value = {
        1: (1.5, math.inf, -math.inf, math.nan),
        "t": torch.tensor([0.25, float("inf")]),
        "b": torch.tensor([True, False]),
        "i": torch.tensor([3, 4]),
        "n": np.float64("nan"),
        "s": ["x", None, True, 7],
    }
    out = json_safe(value)
    assert out == {
        "1": [1.5, None, None, None],
        "t": [0.25, None],
        "b": [True, False],
        "i": [3, 4],
        "n": None,
        "s": ["x", None, True, 7],
    }
    json.dumps(out, allow_nan=False)
    assert finite_or_none(2) == 2.0 and finite_or_none(math.inf) is None


def test_read_results_checks_directory_file_json_and_schema(tmp_path: Path) -> None:
    """The one results.json loader (issue 17): each failure is one IntriguingError line."""
    import json

    from intriguing._io import read_results
    from intriguing.errors import IntriguingError

    with pytest.raises(IntriguingError, match="no such run directory"):
        read_results(tmp_path / "nope", "intriguing.x/1", command="x")
    with pytest.raises(IntriguingError, match="not found; run `intriguing x"):
        read_results(tmp_path, "intriguing.x/1", command="x")
    (tmp_path / "steps").mkdir()  # a run that started: finish it with its own options
    with pytest.raises(IntriguingError, match=r"has not finished .* with the same options"):
        read_results(tmp_path, "intriguing.x/1", command="x")
    (tmp_path / "results.json").write_text("{bad")
    with pytest.raises(IntriguingError, match="not valid JSON"):
        read_results(tmp_path, "intriguing.x/1", command="x")
    (tmp_path / "results.json").write_text(json.dumps(sealed({"schema": "intriguing.x/2", "v": 1})))
    with pytest.raises(IntriguingError, match="not the results of `intriguing x`"):
        read_results(tmp_path, "intriguing.x/1", command="x")
    assert read_results(tmp_path, "intriguing.x/", command="x")["v"] == 1  # prefix: any version
    (tmp_path / "results.json").write_text(json.dumps({"schema": "intriguing.x/2", "v": 1}))
    with pytest.raises(IntriguingError, match="has no digest"):  # unsealed: cannot be checked
        read_results(tmp_path, "intriguing.x/", command="x")
    for constant in ("NaN", "Infinity", "-Infinity"):  # json.loads takes them; no writer emits them
        (tmp_path / "results.json").write_text(
            '{"schema": "intriguing.x/2", "v": ' + constant + "}"
        )
        with pytest.raises(IntriguingError, match=f"non-finite number {constant}"):
            read_results(tmp_path, "intriguing.x/", command="x")
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(IntriguingError, match="found None"):
        read_results(tmp_path, "intriguing.x/", command="x")


def test_tensor_files_are_written_shared_like_the_json_beside_them(tmp_path: Path) -> None:
    """safetensors' save_file replaced our temporary with its own 0600 file, and a kill left that
    file behind under a random name; now the bytes are ours, the mode is the JSON's."""
    import os

    import torch
    from safetensors.torch import load_file, save

    from intriguing._io import atomic_path, atomic_save_tensors, atomic_write_json

    tensors = {"b": torch.rand(3, 4), "a": torch.arange(5)}
    atomic_save_tensors(tmp_path / "t.safetensors", tensors, metadata={"k": "v"})
    atomic_write_json(tmp_path / "t.json", {"x": 1})
    mode = os.stat(tmp_path / "t.safetensors").st_mode & 0o777
    assert mode == os.stat(tmp_path / "t.json").st_mode & 0o777 == 0o666 & ~_umask()
    assert (tmp_path / "t.safetensors").read_bytes() == save(tensors, metadata={"k": "v"})
    assert torch.equal(load_file(tmp_path / "t.safetensors")["b"], tensors["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.safetensors"]
    with atomic_path(tmp_path / "r.bin") as tmp:  # a writer that replaces the file (0600)
        replacement = tmp.with_name("other")
        replacement.write_bytes(b"x")
        os.chmod(replacement, 0o600)
        os.replace(replacement, tmp)
    assert os.stat(tmp_path / "r.bin").st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
