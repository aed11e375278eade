"""Issue 16, item 1: every output path is checked before any work starts; writes are atomic.

Before: a parent that is a file, a read-only directory or /proc gave an OSError traceback (exit 1),
often after the attack or training had finished, and ``--json`` created missing parents silently.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from intriguing._io import atomic_write_json
from intriguing.cli import validation
from intriguing.cli.main import cli
from intriguing.errors import OutputError

# (command line with {bad} where the output path goes); every command with an output option.
COMMANDS = [
    ["attack", "softmax1", "--dataset", "mnist-5k", "--n", "2", "--save", "{bad}"],
    ["attack", "softmax1", "--dataset", "mnist-5k", "--n", "2", "--json", "{bad}"],
    ["train", "softmax1", "--dataset", "mnist-5k", "--json", "{bad}"],
    ["eval", "softmax1", "--dataset", "mnist-5k", "--json", "{bad}"],
    ["data", "info", "--dataset", "mnist-5k", "--json", "{bad}"],
    ["spectral", "softmax1", "--dataset", "mnist-5k", "--json", "{bad}"],
    ["units", "softmax1", "--dataset", "mnist-5k", "--layer", "out", "--out", "{bad}"],
    ["units", "softmax1", "--dataset", "mnist-5k", "--layer", "out", "--json", "{bad}"],
    ["units", "softmax1", "--dataset", "mnist-5k", "--layer", "out", "--save-activations", "{bad}"],
    ["reproduce", "--quick", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["figure5", "softmax1", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["advtrain", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["classes", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["recurrent", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["rarity", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["recover", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["curves", "--dataset", "mnist-5k", "--out", "{bad}"],
    ["data", "download", "--dir", "{bad}"],
]


def _bad_paths(tmp: Path) -> dict[str, str]:
    afile = tmp / "a-file"
    afile.write_text("x")
    return {
        "file as parent": str(afile / "x.json"),
        "/proc": "/proc/intriguing-test/x.json",
        "deep below a file": str(afile / "sub" / "dir" / "x.json"),
    }


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:1] + a[-2:-1]))
def test_unwritable_outputs_are_one_error_line_before_any_work(
    argv: list[str], tmp_path: Path
) -> None:
    for what, bad in _bad_paths(tmp_path).items():
        args = [a.replace("{bad}", bad) for a in argv]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (what, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, (what, result.output)
        assert ("Traceback" not in result.output and result.exception is None) or isinstance(
            result.exception, SystemExit
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written


@pytest.mark.parametrize(
    ("argv", "suffix"),
    [
        (["attack", "softmax1", "--dataset", "mnist-5k", "--n", "2", "--save"], ".safetensors"),
        (["curves", "softmax1", "--dataset", "mnist-5k", "--plot"], ".png"),
        (
            ["units", "softmax1", "--dataset", "mnist-5k", "--layer", "out", "--save-activations"],
            ".npy",
        ),
    ],
    ids=["save", "plot", "save-activations"],
)
def test_an_output_in_a_fixed_format_must_be_named_for_it(
    argv: list[str], suffix: str, tmp_path: Path
) -> None:
    """``--save out.npz`` would have written safetensors under a .npz name (found by a robustness
    probe): the name must carry the format's suffix, checked before any work."""
    wrong = tmp_path / "result.npz"
    result = CliRunner().invoke(cli, [*argv, str(wrong)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"result{suffix}" in errors[0], result.output
    assert list(tmp_path.iterdir()) == []
    accepted = validation.output_file(suffix).convert(
        str(tmp_path / f"R{suffix.upper()}"), None, None
    )
    assert accepted == tmp_path / f"R{suffix.upper()}"  # the suffix is matched case-insensitively


def test_json_does_not_create_missing_parents_outside_out(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "x.json"
    result = CliRunner().invoke(cli, ["data", "info", "--dataset", "mnist-5k", "--json", missing])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "no").exists()


def test_a_file_inside_out_may_name_a_parent_that_out_creates(tmp_path: Path) -> None:
    run = tmp_path / "run"

    @click.command()
    @click.option("--json", type=validation.output_file())
    @click.option("--out", type=validation.output_dir(), is_eager=True)
    def probe(json: Path, out: Path) -> None:
        click.echo(f"{json} {out}")

    for order in (
        ["--json", run / "x.json", "--out", run],
        ["--out", run, "--json", run / "x.json"],
    ):
        result = CliRunner().invoke(probe, [str(a) for a in order])
        assert result.exit_code == 0, result.output
    assert not run.exists()  # checking creates nothing


def test_read_only_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only file system (EROFS), simulated: root ignores permission bits."""

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system") as info:
        validation.check_output_file(tmp_path / "x.json")
    assert "\n" not in str(info.value)
    with pytest.raises(OutputError, match="Read-only file system"):
        validation.check_output_dir(tmp_path / "new" / "dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_refused_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write"):
        validation.check_output_file(locked / "x.json")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty"),
        ("a\x00b", "NUL"),
        ("x" * 300, "too long"),
        ("/sys/x.json", "/sys"),
        ("/dev/null", "/dev"),
    ],
)
def test_syntactically_bad_outputs(path: str, message: str) -> None:
    for kind in ("file", "dir"):
        with pytest.raises(click.BadParameter, match=message):
            validation.OutputPath(kind).convert(path, None, None)


def test_directory_or_special_file_as_output_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        validation.check_output_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        validation.check_output_file(fifo)


def test_a_failed_atomic_write_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OutputError, match="No space left") as info:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
