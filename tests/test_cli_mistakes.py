"""Command-line mistakes refused in one line (exit 2) before any long work; Ctrl-C's one line and
exit code 130; user text (model specs, paths) printed literally by rich.

Models come from ``tests/fixtures/mymodels.py`` or from small files written into ``tmp_path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from torch import nn

from intriguing.analysis import imagefolder
from intriguing.cli import main as cli_main
from intriguing.cli.critics_cmds import _slug
from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LENET = f"{Path(__file__).resolve().parent / 'fixtures' / 'mymodels.py'}:lenet"
INTERRUPTED = "interrupted; rerun the same command to resume where it stopped"


def one_line_error(result: Result, *fragments: str) -> str:
    """The only ``Error: ...`` line of a run that exited with 2, checked to hold ``fragments``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def grey_pngs(folder: Path, *names: str) -> Path:
    """28x28 grey PNGs at ``folder / name`` for each relative ``name``."""
    rng = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(path)
    return folder


# ----------------------------------------------------------------- 1: class-folder labels
def test_integer_and_named_class_folders_are_not_mixed() -> None:
    with pytest.raises(
        InvalidInputError, match="class folder 'unsure' is not a class index"
    ) as caught:
        imagefolder.folder_labels(["3/a.png", "8/b.png", "unsure/c.png"])
    assert "(3/, 8/): rename or remove unsure/" in str(caught.value)
    with pytest.raises(InvalidInputError, match="class folder '-1' is a negative number"):
        imagefolder.folder_labels(["-1/a.png", "-2/b.png"])
    labels, classes = imagefolder.folder_labels(["3/a.png", "8/b.png"]) or (None, None)
    assert (
        labels is not None and labels.tolist() == [3, 8] and classes == [str(i) for i in range(9)]
    )
    labels, classes = imagefolder.folder_labels(["dog/a.png", "cat/b.png"]) or (None, None)
    assert labels is not None and labels.tolist() == [1, 0] and classes == ["cat", "dog"]


def test_two_folders_of_one_class_index_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="class folders 03/ and 3/ are both class 3"):
        imagefolder.folder_labels(["3/a.png", "03/b.png", "8/c.png"])
    labels, _ = imagefolder.folder_labels(["03/a.png", "08/b.png"]) or (None, None)
    assert labels is not None and labels.tolist() == [3, 8]
    images = grey_pngs(tmp_path / "twins", "3/a.png", "03/b.png")
    result = CliRunner().invoke(cli, ["eval", LENET, "--images", str(images)])
    one_line_error(result, "03/ and 3/", "merge them")


@pytest.mark.parametrize(
    ("layout", "names", "why"),
    [
        ("flat", ("a.png", "b.png"), "the images lie directly in"),
        ("nested", ("5/deep/a.png", "5/deep/b.png"), "lies 2 folders deep"),
    ],
)
def test_attack_says_when_predictions_stand_in_for_labels(
    tmp_path: Path, layout: str, names: tuple[str, ...], why: str
) -> None:
    images = grey_pngs(tmp_path / layout, *names)
    args = ["attack", LENET, "--images", str(images), "--n", "1", "--all-images"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    note = [line for line in result.stderr.splitlines() if line.startswith("note: no labels")]
    assert len(note) == 1 and why in note[0], result.stderr
    labelled = grey_pngs(tmp_path / "classes", "3/a.png", "8/b.png")
    args = ["attack", LENET, "--images", str(labelled), "--n", "1", "--all-images"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "note: no labels" not in result.output


def test_eval_refuses_mixed_class_folders_before_loading_the_model(tmp_path: Path) -> None:
    images = grey_pngs(tmp_path / "mixed", "3/a.png", "8/b.png", "unsure/c.png")
    result = CliRunner().invoke(cli, ["eval", LENET, "--images", str(images)])
    one_line_error(result, "'unsure'")


def test_nested_class_folders_are_explained() -> None:
    deep = imagefolder.unlabelled_reason(["5/deeper/0.png", "5/deeper/1.png"], "nested")
    assert "'5/deeper/0.png' lies 2 folders deep" in deep
    assert "class subfolders must hold the images directly (nested/<class>/<image>)" in deep
    mixed = imagefolder.unlabelled_reason(["5/deeper/0.png", "5/top.png"], "nested")
    assert "'5/deeper/0.png' lies 2 folders deep" in mixed
    outside = imagefolder.unlabelled_reason(["3/a.png", "b.png"], "f")
    assert "'b.png' lies outside any class subfolder" in outside
    flat = imagefolder.unlabelled_reason(["a.png", "b.png"], "f")
    assert "--labels" in flat and "f/<class>/<image>" in flat


def test_eval_on_nested_folders_says_where_the_images_are(tmp_path: Path) -> None:
    images = grey_pngs(tmp_path / "nested", "5/top.png", "5/deeper/0.png")
    result = CliRunner().invoke(cli, ["eval", LENET, "--images", str(images)])
    one_line_error(result, "lies 2 folders deep", "must hold the images directly")


# ------------------------------------------------------------------------------ 2: Ctrl-C
def add_command(monkeypatch: pytest.MonkeyPatch, name: str, error: BaseException) -> None:
    """A command ``name`` of the console script that raises ``error``, for this test only."""
    module = types.ModuleType(f"intriguing_{name}_cmd")

    @click.command(name)
    def command() -> None:
        raise error

    module.command = command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli_main.COMMANDS, name, f"{module.__name__}:command")


@pytest.fixture
def interrupted_command(monkeypatch: pytest.MonkeyPatch) -> None:
    add_command(monkeypatch, "stop", KeyboardInterrupt())


def test_ctrl_c_prints_one_line_and_exits_130(
    interrupted_command: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli_main.main(["stop"])
    assert caught.value.code == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "interrupted" and "Aborted" not in captured.err
    result = CliRunner().invoke(cli, ["stop"])
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"


@pytest.mark.parametrize(
    ("argv", "resumable"),
    [
        (["reproduce", "--quick"], True),
        (["rarity", "--models", "softmax1", "--out", "x"], True),
        (["rarity", "softmax1", "--n", "2"], False),  # a MODEL argument: attacked in memory
        (["attack", "softmax1"], False),
        (["eval", "softmax1"], False),
    ],
)
def test_ctrl_c_promises_a_resume_only_where_there_is_one(argv: list[str], resumable: bool) -> None:
    """attack and eval said "rerun the same command to resume where it stopped"; they keep no
    run folder, and a rerun starts again."""
    ctx = cli.make_context("intriguing", list(argv), resilient_parsing=True)
    expected = INTERRUPTED if resumable else "interrupted"
    assert cli_main.interrupted_message(ctx) == expected


@pytest.mark.parametrize(
    ("error", "one_line"),
    [
        (PermissionError(13, "Permission denied", "/data/t10k.gz"), "/data/t10k.gz: Permission"),
        (NotADirectoryError(20, "Not a directory", "/cache/models"), "/cache/models: Not a dir"),
        (OSError(28, "No space left on device", "/out/x.safetensors"), "No space left"),
    ],
    ids=["unreadable", "file-for-folder", "disk-full"],
)
def test_a_file_the_system_refuses_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, error: OSError, one_line: str
) -> None:
    add_command(monkeypatch, "refused", error)
    one_line_error(CliRunner().invoke(cli, ["refused"]), one_line, "check the path")


def test_a_model_cache_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is a file: training's lock gave a NotADirectoryError traceback."""
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, ["train", "softmax1", "--dataset", "mnist-5k"])
    one_line_error(result, "cannot write in the model cache", "INTRIGUING_CACHE_DIR")


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "softmax1", "--dataset", "mnist-5k", "--data-dir", "."],
        ["train", "softmax1", "--data-dir", ".", "--dataset", "mnist-5k"],
        ["data", "info", "--dataset", "mnist-5k", "--data-dir", "."],
    ],
    ids=["dataset-first", "data-dir-first", "data-info"],
)
def test_data_dir_with_mnist5k_does_nothing_and_is_refused(argv: list[str]) -> None:
    """It was ignored: a corrupt or empty --data-dir 'worked'."""
    one_line_error(CliRunner().invoke(cli, argv), "--data-dir does nothing with --dataset mnist-5k")


SLEEPER = textwrap.dedent(
    """
    import signal, sys, time, types
    import click
    from intriguing.cli import main as m

    # a shell that started the tests in the background made SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: restore the interactive default for this check
    signal.signal(signal.SIGINT, signal.default_int_handler)

    @click.command()
    def sleep() -> None:
        print("ready", flush=True)
        time.sleep(60)

    module = types.ModuleType("sleeper")
    module.sleep = sleep
    sys.modules["sleeper"] = module
    m.COMMANDS["sleep"] = "sleeper:sleep"
    m.main(["sleep"])
    """
)


def test_sigint_during_a_command_exits_130_with_one_line() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", SLEEPER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip() == "interrupted"  # a fake command keeps no run folder


# --------------------------------------------------------- 3 and 4: spectral, rich text
def write_model_file(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.py"
    path.write_text("import torch\nfrom torch import nn\n\n" + textwrap.dedent(body))
    return path


def test_sandwich_with_no_correct_image_is_refused_before_the_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intriguing.data import load_mnist

    labels = load_mnist(dataset="mnist-5k").split("test")[1][:3].tolist()
    wrong = next(c for c in range(10) if c not in labels)
    body = f"""
    def always_wrong():
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        with torch.no_grad():
            model[1].weight.mul_(1e-3)
            model[1].bias.zero_()
            model[1].bias[{wrong}] = 10.0
        return model
    """
    path = write_model_file(tmp_path, body)

    def no_bounds(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("bounds computed before the refusal")

    monkeypatch.setattr("intriguing.analysis.lipschitz.network_bounds", no_bounds)
    args = ["spectral", f"{path}:always_wrong", "--input-shape", "1,28,28", "--sandwich", "3"]
    result = CliRunner().invoke(cli, [*args, "--dataset", "mnist-5k"])
    one_line_error(result, "none of the first 3 test images is classified correctly")


def test_sandwich_with_nothing_to_compare_prints_one_line() -> None:
    from intriguing.cli.spectral_cmd import sandwich_report

    summary = {"examples": 4, "correct": 2, "attack_success": 0, "used": 0}
    summary |= {"ratio_global_quantiles": None, "ratio_pairwise_quantiles": None}
    line = sandwich_report(summary)
    assert isinstance(line, str)
    assert "no example to compare" in line and "2 of the 4" in line


ZERO = """
def zero():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
"""


def test_user_text_is_printed_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_model_file(tmp_path / "[bold]d", ZERO)
    spec = "[bold]d/m.py:zero"
    json_path = "[red]out.json"
    args = ["spectral", spec, "--input-shape", "1,28,28", "--json", json_path]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{spec}: frame bounds" in result.output  # no emoji for ':zero:', no bold markup
    assert f"wrote {json_path}" in result.output


# ------------------------------------------------------------------ 5: recurrent models
def test_recurrent_needs_a_recurrent_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["recurrent", "--models", "softmax1", "--n", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--dataset", "mnist-5k"])
    one_line_error(result, "no recurrent model", "LSTM-rows, GRU-rows, Feedback")
    assert not (out / "results.json").exists()


# --------------------------------------------------------------------- 7: train's MODEL
@pytest.mark.parametrize("spec", [LENET, "mymodels:lenet", "net.safetensors"])
def test_train_takes_zoo_names_only(spec: str, tmp_path: Path) -> None:
    if spec.endswith(".safetensors"):
        spec = str(tmp_path / spec)
        Path(spec).write_bytes(b"x")
    result = CliRunner().invoke(cli, ["train", spec, "--dataset", "mnist-5k"])
    one_line_error(result, "train takes a zoo model name", "--weights")


def test_train_of_a_missing_file_does_not_call_it_a_checkpoint(tmp_path: Path) -> None:
    missing = str(tmp_path / "does_not_exist.safetensors")
    result = CliRunner().invoke(cli, ["train", missing, "--dataset", "mnist-5k"])
    line = one_line_error(result, "not a file, and", "does not exist either")
    assert "trained already" not in line


# ------------------------------------------------------------ 8: options that do nothing
@pytest.mark.parametrize(
    "args,option",
    [
        (["--variants", "weight-decay", "--attack", "fgm"], "--attack"),
        (["--variants", "dropout", "--pool-size", "100"], "--pool-size"),
        (["--variants", "weight-decay,dropout", "--mix", "2"], "--mix"),
        (["--variants", "dropout", "--warmup-epochs", "2"], "--warmup-epochs"),
        (["--variants", "dropout", "--refresh-every", "2"], "--refresh-every"),
    ],
)
def test_advtrain_pool_options_need_a_pool_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], option: str
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr("intriguing.experiments.advtrain.run_advtrain", never)
    result = CliRunner().invoke(cli, ["advtrain", *args, "--out", str(tmp_path / "run")])
    one_line_error(result, option, "input-pool", "hidden-pool")


def test_advtrain_pool_options_with_a_pool_variant_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def fake(spec: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(spec)
        raise InvalidInputError("stopped by the test")

    monkeypatch.setattr("intriguing.experiments.advtrain.run_advtrain", fake)
    args = ["advtrain", "--variants", "dropout,hidden-pool", "--attack", "fgm", "--pool-size", "7"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run")])
    one_line_error(result, "stopped by the test")
    assert seen[0].pool.attack == "fgm" and seen[0].pool.size == 7


@pytest.mark.parametrize(
    "args",
    [
        ["eval", LENET, "--seed", "7"],
        ["eval", "softmax1", "--weights", "w.safetensors", "--seed", "7"],
        ["spectral", LENET, "--input-shape", "1,28,28", "--seed", "7"],
        ["spectral", "softmax1", "--weights", "w.safetensors", "--seed", "7"],
    ],
)
def test_a_training_seed_for_a_model_not_trained_here_is_refused(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--dataset", "mnist-5k"])
    one_line_error(result, "--seed", "does nothing")


def test_eval_of_a_user_model_without_seed_runs(tmp_path: Path) -> None:
    images = grey_pngs(tmp_path / "digits", "3/a.png", "8/b.png")
    result = CliRunner().invoke(cli, ["eval", LENET, "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert "folder_error" in result.output


# ------------------------------------------------------------------------ 9: classes
def test_classes_train_limit_names_the_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["classes", "--train-limit", "1", "--out", str(tmp_path)])
    one_line_error(result, "--train-limit")
    assert "None" not in result.output and "train_limit" not in result.output


@pytest.mark.parametrize("tasks", ["3v8,8v3", "0-1,0v1", "0-9,all"])
def test_classes_refuses_the_same_task_named_twice(tmp_path: Path, tasks: str) -> None:
    result = CliRunner().invoke(cli, ["classes", "--tasks", tasks, "--out", str(tmp_path / "o")])
    one_line_error(result, "twice")


# ------------------------------------------------------------------ 9: shapes beyond images
@pytest.mark.parametrize(
    "shape",
    [(3, 20), (3, 1, 64), (3, 2, 8, 8), (3, 4, 8, 8)],
    ids=["vectors", "signal", "2ch", "4ch"],
)
def test_figure5_refuses_data_it_cannot_draw_before_the_attack(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    """A traceback after the attack (matplotlib: 'Invalid shape (20,) for image data')."""
    data = tmp_path / "d.npz"
    np.savez(data, images=np.random.default_rng(0).random(shape, dtype=np.float32))
    (tmp_path / "m.py").write_text(
        "from torch import nn\n"
        f"def net():\n    return nn.Sequential(nn.Flatten(), nn.Linear({int(np.prod(shape[1:]))}, 3))\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            "figure5",
            f"{tmp_path / 'm.py'}:net",
            "--tensors",
            str(data),
            "--out",
            str(tmp_path / "f"),
        ],
    )
    example = "x".join(map(str, shape[1:]))
    one_line_error(result, "figure5 draws images (N, C, H, W) with 1 or 3 channels", example)
    assert not (tmp_path / "f").exists()


def test_shapes_are_named_by_their_axes() -> None:
    from intriguing.inputs import shape_text

    assert shape_text(torch.zeros(2, 3, 32, 33)) == "3x32x33 (C x H x W)"
    assert shape_text(torch.zeros(2, 2, 4096)) == "2x4096 (C x L)"
    assert shape_text(torch.zeros(2, 10000)) == "10000 (D)"


def test_units_help_says_images_only() -> None:
    text = " ".join(CliRunner().invoke(cli, ["units", "--help"]).output.split())
    assert "(N, C, H, W) in [0, 1] (images only)" in text and "signals" not in text
    attack = " ".join(CliRunner().invoke(cli, ["attack", "--help"]).output.split())
    assert "signals (N, C, L)" in attack


def test_image_sizes_are_named_height_by_width(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (48, 64)).save(folder / "a.png")  # PIL sizes are (W, H): H 64, W 48
    Image.new("L", (64, 48)).save(folder / "b.png")
    with pytest.raises(
        InvalidInputError,
        match=r"b\.png: size 48x64 \(H x W\) differs from the first image's 64x48",
    ):
        imagefolder.ImageFolderSource(folder, mode="L").batch(0, 2)


def test_figure5_refuses_an_output_name_taken_by_a_folder_before_the_attack(tmp_path: Path) -> None:
    """``OUT/figure5.json/`` existing as a folder: the PNG and result were written, then it failed."""
    out = tmp_path / "f5"
    (out / "figure5.json").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["figure5", LENET, "--n", "1", "--out", str(out)])
    one_line_error(result, "figure5.json is a folder; remove it or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == ["figure5.json"]


@pytest.mark.parametrize(
    ("argv", "taken"),
    [
        (["curves", LENET, "--n", "1", "--eps", "0.1"], f"curves-{_slug(LENET)}.json"),
        (["curves", LENET, "--n", "1", "--eps", "0.1"], f"curves-{_slug(LENET)}.png"),
        (["rarity", LENET, "--n", "1"], f"rarity-{_slug(LENET)}.json"),
        (["recover", "--models", "softmax1", "--n", "1"], "recover.md"),
        (["rarity", "--models", "softmax1", "--n", "1"], "figures/rarity.png"),
    ],
)
def test_critics_refuse_an_output_name_taken_by_a_folder_before_the_work(
    tmp_path: Path, argv: list[str], taken: str
) -> None:
    """A folder holding the name of a file the command writes into --out: it was found only when
    the results were written, after the attacks."""
    out = tmp_path / "out"
    (out / taken).mkdir(parents=True)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = CliRunner().invoke(cli, [*argv, "--out", str(out)])
    one_line_error(result, f"{taken} is a folder; remove it or choose another --out")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tol", "2"], "2.0 is not in the range 0<x<1"),
        (["--exact-method", "none", "--tol", "0.5"], "--tol: the exact-norm iteration they tune"),
        (["--exact-method", "none", "--power-iterations", "5"], "--power-iterations: the exact"),
    ],
)
def test_spectral_refuses_iteration_settings_that_would_mislead(
    argv: list[str], message: str
) -> None:
    """--tol 2 stopped the power iteration at once and showed its estimate as converged; with
    --exact-method none the iteration's settings were ignored silently."""
    result = CliRunner().invoke(cli, ["spectral", LENET, "--input-shape", "1,28,28", *argv])
    one_line_error(result, message)


def test_report_on_a_critics_run_names_what_the_folder_holds(tmp_path: Path) -> None:
    """A finished rarity run was called a reproduce run that "has not finished"; rerunning it
    would never write results.json."""
    (tmp_path / "steps").mkdir()
    (tmp_path / "rarity.json").write_text("{}")
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    one_line_error(result, "holds the results of `intriguing rarity` (rarity.json), not of")


# ------------------------------------------------- image folders: class numbering and names
def _labels_of(folder: Path, labels_file: Path | None = None) -> tuple[list[int], list[str]]:
    from intriguing.inputs import open_data

    data = open_data(images=folder, labels_file=labels_file, mode="L")
    assert data.labels is not None
    return data.labels.tolist(), list(data.meta["classes"])


def test_an_empty_named_class_folder_is_refused(tmp_path: Path) -> None:
    """``cat/``, an empty ``dog/`` and ``zebra/``: zebra was numbered 1 (the model's dog), so eval
    printed 50% error for a perfect model and the attack 'fooled' zebras at distortion 0."""
    grey_pngs(tmp_path, "cat/a.png", "zebra/b.png")
    (tmp_path / "dog").mkdir()
    with pytest.raises(InvalidInputError, match=r"class folder dog/ in .* holds no images"):
        _labels_of(tmp_path)
    (tmp_path / "dog").rmdir()
    assert _labels_of(tmp_path) == ([0, 1], ["cat", "zebra"])  # no gap: numbered as present


def test_a_labels_files_named_classes_are_numbered_over_all_its_labels(tmp_path: Path) -> None:
    """The file names cat, dog and zebra but no dog image is here: zebra stays class 2."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png cat\nmissing.png dog\nb.png zebra\n")
    assert _labels_of(folder, labels) == ([0, 2], ["cat", "dog", "zebra"])


def test_a_class_folder_that_is_a_link_is_followed_once(tmp_path: Path) -> None:
    """A symlinked class folder was skipped silently (rglob follows no folder links)."""
    root = grey_pngs(tmp_path / "root", "cat/a.png", "zebra/b.png")
    grey_pngs(tmp_path / "elsewhere", "c.png")
    (root / "dog").symlink_to(tmp_path / "elsewhere")
    (root / "zebra" / "loop").symlink_to(root / "zebra")  # a link loop is not walked twice
    assert _labels_of(root) == ([0, 1, 2], ["cat", "dog", "zebra"])


def test_a_file_name_matches_its_label_in_either_unicode_form(tmp_path: Path) -> None:
    """macOS writes names decomposed (NFD); a typed labels file holds them composed (NFC)."""
    import unicodedata

    name = "m\u00fcde.png"
    folder = grey_pngs(tmp_path / "imgs", unicodedata.normalize("NFD", name))
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{unicodedata.normalize('NFC', name)} 3\n", encoding="utf-8")
    assert _labels_of(folder, labels)[0] == [3]


@pytest.mark.parametrize("header", ["image,class", "filename,label", '"file","target"'])
def test_a_labels_files_csv_header_is_not_a_class(tmp_path: Path, header: str) -> None:
    """``image,class`` made 'class' a class sorted among the names: deer..ship moved up by one
    and eval printed 94% error for an 89% model."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png", "c.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{header}\na.png,bird\nb.png,deer\nc.png,ship\n")
    assert _labels_of(folder, labels) == ([0, 1, 2], ["bird", "deer", "ship"])


@pytest.mark.parametrize("header", ["image_file,species", "image,digit", "file name,label"])
def test_a_header_of_any_column_names_is_not_a_class(tmp_path: Path, header: str) -> None:
    """Column names outside a fixed list still became a class and shifted the others: a first
    line naming no image and without an image suffix can name no image, so it is dropped."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png", "c.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{header}\na.png,cat\nb.png,dog\nc.png,zebra\n")
    assert _labels_of(folder, labels) == ([0, 1, 2], ["cat", "dog", "zebra"])


def test_a_first_line_for_an_absent_image_keeps_its_class(tmp_path: Path) -> None:
    """A full labels file on a subset folder: its first image is absent and its class rare. It
    was refused as a header, which told the user to delete a line that keeps the numbering."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("aaa_rare.png eight\na.png five\nb.png nine\n")
    assert _labels_of(folder, labels) == ([1, 2], ["eight", "five", "nine"])


@pytest.mark.parametrize("first", ["old/photo.heic ant", "x.jfif ant"])
def test_an_absent_file_of_another_format_first_keeps_its_class(tmp_path: Path, first: str) -> None:
    """Dropped as a header because .heic is not read here: the numbering depended on line order."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{first}\na.png cat\nb.png dog\n")
    assert _labels_of(folder, labels) == ([1, 2], ["ant", "cat", "dog"])


@pytest.mark.parametrize("stale", ["7", "7.0", "-1"])
def test_an_absent_images_class_index_among_names_is_refused(tmp_path: Path, stale: str) -> None:
    """'stale.png 7' among class names became class '7' and shifted every named class (100%
    error for a 5% model), though a mix among the present images was refused."""
    folder = grey_pngs(tmp_path / "imgs", "a.png", "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"a.png cat\nstale.png {stale}\nb.png dog\n")
    with pytest.raises(InvalidInputError, match="is a number while the images here have class"):
        _labels_of(folder, labels)


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    """``.ipynb_checkpoints/one.png`` became class 0 and shifted every named class (100% error);
    macOS's ``._a.png`` asked for a label of its own."""
    root = grey_pngs(
        tmp_path / "root", "c0/a.png", "c1/b.png", ".ipynb_checkpoints/x.png", "c0/._a.png"
    )
    grey_pngs(root, "__MACOSX/c0/._a.png")
    assert _labels_of(root) == ([0, 1], ["c0", "c1"])
    flat = grey_pngs(tmp_path / "flat", "a.png", "._a.png", ".hidden.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png 4\n")
    assert _labels_of(flat, labels)[0] == [4]


def test_32_bit_integer_images_are_refused_and_16_bit_ones_scaled(tmp_path: Path) -> None:
    """An int32 TIFF of 0..255 digits was divided by 65535: images nearly black, 82% error."""
    import numpy as np
    from PIL import Image

    from intriguing.inputs import open_data

    values = np.arange(16, dtype=np.int32).reshape(4, 4) * 17
    (tmp_path / "wide").mkdir()
    Image.fromarray(values).save(tmp_path / "wide" / "a.tif")
    with pytest.raises(InvalidInputError, match=r"a\.tif: 32-bit integer pixels") as info:
        open_data(images=tmp_path / "wide", mode="L").images[0]
    assert "\n" not in str(info.value)
    (tmp_path / "deep").mkdir()
    Image.fromarray((values * 257).astype(np.uint16)).save(tmp_path / "deep" / "a.tif")
    image = open_data(images=tmp_path / "deep", mode="L").images[0]
    assert float(np.asarray(image).max()) == pytest.approx(255 * 257 / 65535)


def _figure5_on(tmp_path: Path, **arrays: np.ndarray) -> Any:
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    (tmp_path / "m.py").write_text(
        "from torch import nn\n"
        "def net():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))\n"
    )
    model, out = f"{tmp_path / 'm.py'}:net", str(tmp_path / "f")
    argv = ["figure5", model, "--tensors", str(data), "--n", "2", "--out", out]
    return CliRunner().invoke(cli, argv)


def test_figure5_names_channels_last_data(tmp_path: Path) -> None:
    """It said 'use attack --save for other data'; attack itself says how to fix the layout."""
    images = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    one_line_error(_figure5_on(tmp_path, images=images), "looks channels-last", "permute(0, 3")


@pytest.mark.parametrize("labels", [[7, 9], [-1, 0], [0.5, 1.0], [1]])
def test_figure5_ignores_a_tensor_files_labels(tmp_path: Path, labels: list[float]) -> None:
    """figure5 uses the model's predictions; labels above the model's classes, negative, float
    or of the wrong length were refused."""
    images = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    result = _figure5_on(tmp_path, images=images, labels=np.array(labels))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f" / "figure5.png").is_file()


def test_a_colour_model_on_grey_tensors_is_told_about_tensors_too() -> None:
    from intriguing.inputs import check_model_input

    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(InvalidInputError, match="store 3-channel images in a tensor file"):
        check_model_input(model, torch.rand(2, 1, 8, 8), None)


def test_figure5_help_offers_no_labels_it_would_refuse() -> None:
    shown = CliRunner().invoke(cli, ["figure5", "--help"]).output
    assert "--labels" not in shown and "no labels used" in shown
    assert "--labels" in CliRunner().invoke(cli, ["units", "--help"]).output


def test_options_for_image_folders_name_the_command_s_own_flag(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    runs = {
        ("attack", "--image-mode", "L"): "--image-mode applies to --images only, not to --tensors",
        ("attack", "--image-size", "8"): "--image-size applies to --images only, not to --tensors",
        ("units", "--mode", "L"): "--mode applies to --images only, not to --tensors",
    }
    for (command, flag, value), message in runs.items():
        argv = [command, "softmax1", "--tensors", str(data), flag, value]
        one_line_error(CliRunner().invoke(cli, argv), message)


def test_a_typed_count_above_the_data_is_refused_not_lowered(tmp_path: Path) -> None:
    """rarity/recover lowered a typed --n 5 to the one image of the data and ran; the default
    count still takes what there is."""
    torch.manual_seed(0)
    images = torch.rand(1, 1, 28, 28)
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def net():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))\n"
    )
    from safetensors.torch import save_file

    model = f"{tmp_path / 'm.py'}:net"
    labels = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        from intriguing.inputs import load_any_model

        labels = load_any_model(model)(images).argmax(1)
    save_file({"images": images, "labels": labels}, str(tmp_path / "one.safetensors"))
    for command in ("rarity", "recover"):
        argv = [command, model, "--tensors", str(tmp_path / "one.safetensors"), "--n", "5"]
        one_line_error(CliRunner().invoke(cli, argv), "only 1 correctly classified images among 1")


def test_uint64_labels_beyond_int64_are_refused_not_wrapped(tmp_path: Path) -> None:
    from intriguing.inputs import load_tensors

    images = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "u.npz", images=images, labels=np.array([1, 2**63 + 1], dtype=np.uint64))
    with pytest.raises(InvalidInputError, match=r"'labels' holds 9223372036854775809, beyond"):
        load_tensors(tmp_path / "u.npz")
    np.savez(tmp_path / "ok.npz", images=images, labels=np.array([1, 2], dtype=np.uint64))
    data = load_tensors(tmp_path / "ok.npz")
    assert data.labels is not None and data.labels.tolist() == [1, 2]
