"""Figure 5 for a user's model: a factory from a module, a folder of RGB images, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intriguing.attacks import AttackResult
from intriguing.cli.reproduce_cmd import figure5
from intriguing.experiments.figure5 import magnified_difference

FACTORY_MODULE = """
import torch
from torch import nn

def make():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
"""


def test_magnified_difference_is_shifted_scaled_and_clipped() -> None:
    x = torch.tensor([0.2, 0.2, 0.2, 0.5]).view(1, 1, 2, 2)
    adv = torch.tensor([0.21, 0.19, 0.3, 0.0]).view(1, 1, 2, 2)
    expected = torch.tensor([0.6, 0.4, 1.0, 0.0]).view(1, 1, 2, 2)
    assert torch.allclose(magnified_difference(x, adv), expected, atol=1e-6)


@pytest.fixture()
def user_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_models_f5.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{i}.png")
    return tmp_path


def test_factory_model_on_rgb_folder(user_setup: Path) -> None:
    out = user_setup / "out"
    result = CliRunner().invoke(
        figure5,
        [
            "user_models_f5:make",
            "--images",
            str(user_setup / "imgs"),
            "--out",
            str(out),
        ],
    )  # the default --n (4) draws the 3 there are
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "figure5.json").read_text())
    assert [r["name"] for r in doc["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert (out / "figure5.png").stat().st_size > 1000
    stored = AttackResult.load(out / "figure5.safetensors")
    assert stored.adversarial.shape == (3, 3, 8, 8)
    model = sys.modules["user_models_f5"].make().eval()
    with torch.no_grad():
        pred = model(stored.adversarial).argmax(1)
    for i, row in enumerate(doc["images"]):
        if row["success"]:
            assert int(pred[i]) == row["predicted"] != row["label"]
    assert sum(r["success"] for r in doc["images"]) >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_xyz:make"], "cannot import"),
        (["no-such-zoo-model"], "no-such-zoo-model"),
        (["softmax1", "--n", "0"], "Invalid value for '--n': 0 is not in the range 1<=x<=64"),
        (["missing.safetensors"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intriguing.cli import main

    # registered as the group would once COMMANDS has the line (see docs/reproduce.md)
    monkeypatch.setitem(main.COMMANDS, "figure5", "intriguing.cli.reproduce_cmd:figure5")
    result = CliRunner().invoke(main.cli, ["figure5", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_empty_image_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(figure5, ["softmax1", "--images", str(tmp_path / "empty")])
    assert isinstance(result.exception, Exception) and "no image files" in str(result.exception)


def test_a_typed_n_above_the_images_is_refused_before_the_attack(user_setup: Path) -> None:
    """``--n 5`` on 3 images drew 3 without a word (attack refuses the same)."""
    out = user_setup / "out"
    argv = ["user_models_f5:make", "--images", str(user_setup / "imgs"), "--n", "5"]
    result = CliRunner().invoke(figure5, [*argv, "--out", str(out)])
    assert result.exit_code == 1 and "only 3 images; lower --n to at most 3" in str(
        result.exception
    )
    assert not out.exists()


def test_run_figure5_gives_back_the_models_train_eval_flags(tmp_path: Path) -> None:
    """run_figure5 left a training model (with a frozen, eval-mode BatchNorm) in eval mode."""
    from intriguing.experiments.figure5 import run_figure5

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    model.train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    run_figure5(
        model, torch.rand(2, 1, 4, 4), ["a", "b"], tmp_path, attack_settings={"max_iter": 5}
    )
    assert [m.training for m in model.modules()] == flags


def test_labels_are_refused_as_figure5_uses_none(user_setup: Path) -> None:
    """``--labels`` was read, checked and ignored: figure5 attacks from the model's predictions."""
    labels = user_setup / "labels.txt"
    labels.write_text("img0.png 3\nimg1.png 3\nimg2.png 3\n")
    argv = ["user_models_f5:make", "--images", str(user_setup / "imgs"), "--labels", str(labels)]
    result = CliRunner().invoke(figure5, [*argv, "--out", str(user_setup / "out")])
    assert "uses no labels; drop --labels" in str(result.exception)
