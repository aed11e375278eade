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
import torch
from click.testing import CliRunner

from intriguing._io import atomic_write_json
from intriguing.cli import options, validation
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
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    return {
        "file as parent": str(afile / "x.json"),
        "dangling link": str(tmp / "dangling" / "x.json"),
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dangling"]  # nothing written


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


def test_a_directory_too_long_for_the_files_written_inside_it_is_refused(tmp_path: Path) -> None:
    """Every name under 255 bytes and the whole under 4096, but the run's shard files inside would
    pass the limit: refused before any work (it failed after the first attack shard)."""
    deep = tmp_path.joinpath(*["c" * 250] * 15, "d" * 100)
    assert len(os.fsencode(str(deep))) < 4096 - 100
    with pytest.raises(OutputError, match="path limit; choose a shorter path"):
        validation.check_output_dir(deep)
    validation.check_output_dir(tmp_path.joinpath(*["c" * 250] * 10))


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


# ------------------------------------------------------------------------------------------------
# Outputs that would replace an input or another output (found by a robustness probe: `attack
# --weights w.safetensors --save w.safetensors` overwrote the weights after the attack, `--save
# c.safetensors --json c.safetensors` left a corrupt result, `--json X.safetensors.json` silently
# replaced the sidecar of `--save X.safetensors`; `--save .` was a ValueError traceback).
MODEL_FILE = """
from pathlib import Path

import torch
from torch import nn

Path(__file__).with_name("imported").write_text("the model was loaded")


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
"""


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model file, its weights, a tensor file, an image folder and a labels file in ``tmp_path``
    (the current directory); loading the model leaves a file ``imported``."""
    from PIL import Image
    from safetensors.torch import save_file
    from torch import nn

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODEL_FILE)
    save_file(dict(nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).state_dict()), "w.safetensors")
    save_file({"images": torch.rand(3, 1, 4, 4), "labels": torch.arange(3)}, "d.safetensors")
    (tmp_path / "photos").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "photos" / "a.png")
    (tmp_path / "labels.txt").write_text("a.png 1\n")
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _refused(args: list[str], root: Path, *words: str) -> str:
    before = _snapshot(root)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], result.output
    assert _snapshot(root) == before  # nothing written, the model never loaded (no `imported`)
    return errors[0]


ATTACK = ["attack", "m.py:net", "--n", "2"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--weights", "w.safetensors", "--save", "w.safetensors"], ["--save", "--weights"]),
        (["--tensors", "d.safetensors", "--save", "d.safetensors"], ["--save", "--tensors"]),
        (["--tensors", "d.safetensors", "--json", "d.safetensors"], ["--json", "--tensors"]),
        (["--json", "m.py"], ["--json", "MODEL"]),
        (["--save", "c.safetensors", "--json", "c.safetensors"], ["--save", "--json"]),
        (["--save", "x.safetensors", "--json", "x.safetensors.json"], ["sidecar", "--save"]),
        (["--images", "photos", "--json", "photos/a.png"], ["--images"]),
        (["--images", "photos", "--labels", "labels.txt", "--json", "labels.txt"], ["--labels"]),
        (["--weights", "./sub/../w.safetensors", "--json", "w.safetensors"], ["--weights"]),
    ],
    ids=[
        "weights",
        "tensors",
        "tensors-json",
        "model-file",
        "save-json",
        "sidecar",
        "image-folder-file",
        "labels",
        "spelled-differently",
    ],
)
def test_an_output_that_would_replace_an_input_or_output_is_refused_before_any_work(
    inputs: Path, extra: list[str], words: list[str]
) -> None:
    (inputs / "sub").mkdir()
    _refused([*ATTACK, *extra], inputs, *words)


def test_links_to_an_input_are_refused(inputs: Path) -> None:
    os.symlink(inputs / "w.safetensors", inputs / "soft.safetensors")
    os.link(inputs / "d.safetensors", inputs / "hard.safetensors")
    _refused([*ATTACK, "--weights", "w.safetensors", "--save", "soft.safetensors"], inputs)
    _refused([*ATTACK, "--tensors", "d.safetensors", "--save", "hard.safetensors"], inputs)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "m.py:net", "--weights", "w.safetensors", "--json", "w.safetensors"],
        ["units", "m.py:net", "--tensors", "d.safetensors", "--json", "d.safetensors"],
        ["units", "m.py:net", "--layer", "1", "--save-activations", "m.npy"],
        ["spectral", "m.py:net", "--weights", "w.safetensors", "--json", "w.safetensors"],
        ["curves", "m.py:net", "--tensors", "d.safetensors", "--eps", "1", "--plot", "d.png"],
        ["curves", "m.py:net", "--eps", "1", "--json", "j.png", "--plot", "j.png"],
        ["rarity", "m.py:net", "--weights", "w.safetensors", "--json", "w.safetensors"],
        ["recover", "m.py:net", "--tensors", "d.safetensors", "--json", "d.safetensors"],
        ["data", "info", "--data-dir", ".", "--json", "t10k-labels-idx1-ubyte"],
        ["train", "softmax1", "--data-dir", ".", "--json", "t10k-labels-idx1-ubyte"],
        ["eval", "--checkpoint", "k.safetensors", "--json", "k.json"],
    ],
    ids=lambda a: " ".join(a[:1] + a[-2:-1]),
)
def test_every_command_refuses_outputs_that_replace_inputs(inputs: Path, argv: list[str]) -> None:
    """One check for every command (the console script's group applies it to each)."""
    (inputs / "m.npy").symlink_to(inputs / "m.py")
    (inputs / "d.png").symlink_to(inputs / "d.safetensors")
    (inputs / "t10k-labels-idx1-ubyte").write_bytes(b"x")
    (inputs / "k.safetensors").write_bytes(b"x")
    (inputs / "k.json").write_text("{}")
    flags = [a for a in argv if a.startswith("--") and a not in ("--eps", "--layer")]
    _refused(argv, inputs, *flags[-2:])


@pytest.mark.parametrize(
    "argv",
    [
        ["figure5", "m.py:net", "--images", "photos", "--out", "photos"],
        ["figure5", "m.py:net", "--images", "photos", "--out", "photos/figs"],
        ["curves", "--from-run", "run", "--out", "run"],
        ["rarity", "--from-run", "run", "--out", "run/sub"],
    ],
    ids=["images-is-out", "out-inside-images", "from-run-is-out", "out-inside-from-run"],
)
def test_an_output_directory_inside_a_folder_it_reads_is_refused(
    inputs: Path, argv: list[str]
) -> None:
    """A figure written into an --images folder would be read as an image next time; a
    --from-run folder would mix the command's files with the run's."""
    (inputs / "run").mkdir()
    (inputs / "run" / "results.json").write_text("{}")
    _refused(argv, inputs, "--out", "which the command reads")


def test_an_output_directory_inside_a_folder_of_other_files_passes(tmp_path: Path) -> None:
    """An --out folder inside the MNIST folder is fine: --data-dir reads only the IDX files."""
    idx = validation.Input("--data-dir", tmp_path, lambda p: p.name.endswith("-ubyte"))
    run = validation.Output("--out", tmp_path / "run", directory=True)
    validation.refuse_overwrites([run], [idx])
    with pytest.raises(OutputError, match="lies inside the --images folder"):
        validation.refuse_overwrites([run], [validation.Input("--images", tmp_path)])


def test_a_sidecar_name_that_is_a_directory_is_refused_before_any_work(inputs: Path) -> None:
    """``x.safetensors.json/`` existing as a folder: the attack ran, wrote ``x.safetensors`` and
    then failed on its sidecar."""
    (inputs / "x.safetensors.json").mkdir()
    _refused([*ATTACK, "--save", "x.safetensors"], inputs, "sidecar", "is an existing directory")


def test_an_output_file_that_is_also_an_output_directory_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["units", "softmax1", "--layer", "out", "--out", str(run), "--json", str(run)]
    assert "also the --out directory" in _refused(args, tmp_path)


def test_distinct_outputs_pass_and_a_sidecar_collision_names_both() -> None:
    """The check itself, on parsed values."""
    save = validation.Output("--save", Path("a.safetensors"), (".json",))
    validation.refuse_overwrites(
        [save, validation.Output("--json", Path("a.json"))],
        [validation.Input("--weights", Path("w.safetensors"))],
    )
    with pytest.raises(
        OutputError, match=r"^--json a\.safetensors\.json is also the \.json sidecar"
    ):
        validation.refuse_overwrites(
            [validation.Output("--json", Path("a.safetensors.json")), save], []
        )


def test_a_rerun_may_replace_its_own_output_in_a_data_folder(inputs: Path) -> None:
    """Only the files an input folder reads are protected: a result already in --data-dir or
    --images (a rerun) may be replaced, an IDX file or an image may not."""
    (inputs / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    (inputs / "r.json").write_text("{}")
    (inputs / "photos" / "r.json").write_text("{}")
    images = validation.Input("--images", Path("photos"), options._image_file)
    data = validation.Input("--data-dir", Path("."), options._mnist_file)
    validation.refuse_overwrites([validation.Output("--json", Path("photos/r.json"))], [images])
    validation.refuse_overwrites([validation.Output("--json", Path("r.json"))], [data])
    with pytest.raises(OutputError, match="--data-dir"):
        validation.refuse_overwrites(
            [validation.Output("--json", Path("train-images-idx3-ubyte.gz"))], [data]
        )


@pytest.mark.parametrize("text", [".", "/", "..", "./", "sub/", "sub/.", "sub/.."])
def test_directory_like_output_files_are_refused_as_directories(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for suffix in (".safetensors", ".png", None):
        with pytest.raises(click.BadParameter, match="is a directory; give a file name") as info:
            validation.output_file(suffix).convert(text, None, None)
        assert "..." not in str(info.value)


def test_save_dot_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["attack", "softmax1", "--dataset", "mnist-5k", "--save", "."],
        ["attack", "softmax1", "--dataset", "mnist-5k", "--save", "/"],
        ["curves", "softmax1", "--dataset", "mnist-5k", "--eps", "1", "--plot", "."],
    ):
        assert "is a directory" in _refused(argv, tmp_path)


def test_every_command_of_the_console_script_checks_its_outputs() -> None:
    """The group guards each command it loads (nested ones too), so a new command with an output
    option is covered without code of its own."""
    from intriguing.cli.main import COMMANDS

    ctx = click.Context(cli)
    pending = [cli.get_command(ctx, name) for name in COMMANDS]
    while pending:
        command = pending.pop()
        assert command is not None and command.callback is not None
        assert getattr(command.callback, "_intriguing_outputs_guarded", False), command.name
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())


def test_a_relative_out_that_does_not_exist_yet_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of the files curves/rarity/recover write into --out compared their absolute
    parent with the relative --out: a new relative --out (the usual way to type it) was refused
    as "does not exist; create it first"."""
    lenet = f"{Path(__file__).resolve().parent / 'fixtures' / 'mymodels.py'}:lenet"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["curves", lenet, "--n", "1", "--eps", "0.1", "--out", "rel"])
    assert result.exit_code == 0, result.output
    assert sorted(p.suffix for p in (tmp_path / "rel").iterdir()) == [".json", ".png"]


def test_a_tilde_in_an_output_path_is_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--json=~/x.json`` (the shell expands no ``~`` after ``=``) was checked as ``$HOME/x.json``
    but written to ``./~/x.json``, creating a folder named ``~``."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)

    @click.command()
    @click.option("--json", type=validation.output_file(".json"))
    def probe(json: Path) -> None:
        atomic_write_json(json, {"ok": True})

    result = CliRunner().invoke(probe, ["--json=~/x.json"])
    assert result.exit_code == 0, result.output
    assert (home / "x.json").is_file() and list(work.iterdir()) == []


def test_an_out_that_is_a_link_to_nothing_is_named_before_any_work(tmp_path: Path) -> None:
    """figure5 and units ran their work, then failed with "cannot write (File exists)"."""
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for out in (tmp_path / "gone", tmp_path / "gone" / "run"):
        with pytest.raises(OutputError, match=r"gone is a symbolic link to .*nowhere, which does"):
            validation.check_output_dir(out)


def test_an_unknown_user_after_tilde_is_one_line() -> None:
    """``--json=~nosuchuser/x.json`` ended in ``RuntimeError: Could not determine home directory``."""
    with pytest.raises(OutputError, match=r"cannot expand ~no-such-user-9f3 \(no such user"):
        validation.check_output_file(Path("~no-such-user-9f3/x.json"))
    result = CliRunner().invoke(cli, ["data", "info", "--json=~no-such-user-9f3/x.json"])
    assert result.exit_code == 2 and "cannot expand ~no-such-user-9f3" in result.output


def test_an_output_file_that_is_a_link_is_written_through_it(tmp_path: Path) -> None:
    """The atomic rename replaced the link with a regular file and left its target as it was; a
    link to nothing was replaced silently."""
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    atomic_write_json(tmp_path / "link.json", {"new": 1})
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "target.json").read_text().startswith("{")
    (tmp_path / "dead.json").symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(
        OutputError, match=r"dead\.json is a symbolic link to .*which does not exist"
    ):
        validation.check_output_file(tmp_path / "dead.json")
