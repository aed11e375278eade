"""``intriguing units``: user models on MNIST and on an image folder; one-line errors with exit 2."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intriguing.cli.main import cli

FAST = ["--n-null", "300", "--n-resamples", "199", "--alphas", "0,1"]

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def mnist_mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 12), nn.ReLU(), nn.Linear(12, 10))

    def rgb_net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 6), nn.Sigmoid()
        )

    not_a_model = 3
    def returns_int():
        return 5
    def broken():
        raise RuntimeError("weights file missing")
    """
)


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "units_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "units_user_models"
    sys.modules.pop("units_user_models", None)


@pytest.fixture()
def image_folder(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    lines = []
    for i in range(30):
        colour = i % 3
        pixels = (rng.random((8, 8, 3)) * 60).astype(np.uint8)
        pixels[..., colour] += 180
        name = f"sub/img{i:02d}.png" if i % 2 else f"img{i:02d}.png"
        Image.fromarray(pixels).save(folder / name)
        lines.append(f"{name} {['red', 'green', 'blue'][colour]}")
    labels = tmp_path / "labels.txt"
    labels.write_text("# image label\n" + "\n".join(lines) + "\n")
    return folder, labels


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_user_model_on_mnist_test_images(user_module: str, tmp_path: Path, mnist_dir: Path) -> None:
    out, js = tmp_path / "figs", tmp_path / "r.json"
    result = run(
        "units",
        f"{user_module}:mnist_mlp",
        "--layer",
        "2",
        "--limit",
        "400",
        "--n-directions",
        "8",
        "--json",
        str(js),
        "--out",
        str(out),
        "--seed",
        "3",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["schema"] == "intriguing.units/1" and payload["dim"] == 12
    assert payload["image_set"]["split"] == "test" and payload["image_set"]["n_images"] == 400
    assert payload["families"]["classmean"]["n_directions"] == 10
    assert "natural vs random [purity]" in result.output
    for path in payload["figures"].values():
        assert Path(path).is_file()
    again = tmp_path / "again.json"
    run(
        "units",
        f"{user_module}:mnist_mlp",
        "--layer",
        "2",
        "--limit",
        "400",
        "--n-directions",
        "8",
        "--json",
        str(again),
        "--seed",
        "3",
        *FAST,
    )
    assert json.loads(again.read_text())["families"] == payload["families"]


def test_user_model_on_an_image_folder_with_and_without_labels(
    user_module: str, image_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = image_folder
    js = tmp_path / "folder.json"
    result = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "1",
        "--images",
        str(folder),
        "--labels",
        str(labels),
        "--k",
        "4",
        "--n-directions",
        "6",
        "--json",
        str(js),
        "--out",
        str(tmp_path / "f"),
        "--save-activations",
        str(tmp_path / "phi.npy"),
        "--float16",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["image_set"]["classes"] == ["blue", "green", "red"]
    assert payload["metrics"] == ["purity", "entropy", "pixel_cosine"]
    assert (
        np.load(tmp_path / "phi.npy").shape == (30, 144)
        and np.load(tmp_path / "phi.npy").dtype == np.float16
    )
    unlabelled = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "4",
        "--images",
        str(folder),
        "--directions",
        "natural,random",
        "--k",
        "4",
        "--n-directions",
        "6",
        "--json",
        str(js),
        *FAST,
    )
    assert unlabelled.exit_code == 0, unlabelled.output
    assert json.loads(js.read_text())["metrics"] == ["pixel_cosine"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{m}:mnist_mlp", "--layer", "fc9", "--limit", "50"],
            "layer 'fc9' not found in the model; available layers: 0, 1, 2, 3",
        ),
        (
            ["{m}:mnist_mlp", "--layer", "2", "--directions", "natural,diagonal"],
            "unknown direction family 'diagonal'",
        ),
        (["{m}:nothing", "--layer", "2"], "has no callable 'nothing'"),
        (["{m}:not_a_model", "--layer", "2"], "has no callable 'not_a_model'"),
        (["{m}:returns_int", "--layer", "2"], "not an nn.Module"),
        (["no_such_module_xyz:make", "--layer", "2"], "cannot import 'no_such_module_xyz'"),
        (["{m}:broken", "--layer", "2"], "factory raised RuntimeError: weights file missing"),
        (["{m}:mnist_mlp"], "--layer is required"),
        (["{m}:mnist_mlp", "--layer", "2", "--labels", "x.txt"], "--labels needs --images"),
        (
            ["{m}:mnist_mlp", "--layer", "2", "--alphas", "0,half"],
            "expected comma-separated numbers",
        ),
        (["{m}:mnist_mlp", "--layer", "2", "--k", "1"], "'--k': 1 is not in the range 2<=x"),
        (["{m}:rgb_net", "--layer", "3", "--images", "/no/such/folder"], "not a directory"),
        (["{m}:mnist_mlp", "--layer", "2", "--split", "nope"], "unknown split 'nope'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    user_module: str, args: list[str], message: str
) -> None:
    result = run("units", *FAST, *(a.format(m=user_module) for a in args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_folder_errors_exit_2(
    user_module: str, image_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, labels = image_folder
    partial = tmp_path / "partial.txt"
    partial.write_text("\n".join(labels.read_text().splitlines()[:5]) + "\n")
    result = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "3",
        "--images",
        str(folder),
        "--labels",
        str(partial),
        *FAST,
    )
    assert result.exit_code == 2 and "no label for image" in result.output
    no_labels = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "3",
        "--images",
        str(folder),
        "--directions",
        "classmean",
        *FAST,
    )
    assert no_labels.exit_code == 2 and "classmean family needs labels" in no_labels.output
    (folder / "broken.png").write_bytes(b"not an image")
    broken = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "3",
        "--images",
        str(folder),
        "--directions",
        "natural",
        *FAST,
    )
    assert broken.exit_code == 2 and "broken.png: cannot read the image" in broken.output
    (folder / "broken.png").unlink()
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(folder / "odd.png")
    odd = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "3",
        "--images",
        str(folder),
        "--directions",
        "natural",
        *FAST,
    )
    assert odd.exit_code == 2 and "pass --image-size" in odd.output
    resized = run(
        "units",
        f"{user_module}:rgb_net",
        "--layer",
        "3",
        "--images",
        str(folder),
        "--image-size",
        "8",
        "--directions",
        "natural,random",
        "--k",
        "4",
        "--n-directions",
        "4",
        *FAST,
    )
    assert resized.exit_code == 0, resized.output


def test_zoo_model_uses_the_entry_hidden_layer_and_records_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist_dir: Path
) -> None:
    import intriguing.training as training
    from intriguing.models import build_model

    torch.manual_seed(0)
    model = build_model("N100-100-10").eval()  # untrained: about 90% error, not the sidecar's 2%

    def fake_train_model(name: str, **kwargs: object) -> training.TrainedModel:
        sidecar = {"key": "abc", "metrics": {"train_error": 0.0, "test_error": 0.02}}
        return training.TrainedModel(model, name, tmp_path / "w.safetensors", sidecar, cached=True)

    monkeypatch.setattr(training, "train_model", fake_train_model)
    js = tmp_path / "zoo.json"
    result = run(
        "units",
        "N100-100-10",
        "--limit",
        "300",
        "--n-directions",
        "5",
        "--directions",
        "natural,random",
        "--json",
        str(js),
        *FAST,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["layer"] == "act2" and payload["dim"] == 100
    # the errors are measured now on the data, never copied from a (hand-editable) sidecar
    from intriguing.data import load_mnist
    from intriguing.training.api import error_rate

    test_error = error_rate(model, *load_mnist(mnist_dir).split("test"))
    assert payload["checkpoint"]["key"] == "abc" and test_error > 0.5
    assert payload["checkpoint"]["test_error"] == pytest.approx(test_error, abs=1e-12)


def test_unknown_zoo_model_exits_2() -> None:
    result = run("units", "N999-no-such-model", "--layer", "act2", *FAST)
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1
