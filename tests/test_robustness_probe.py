"""Researchers' models and inputs the attack had not seen: each is a one-line error (exit code 2 on
the CLI, :class:`InvalidInputError` in Python) or works, never a traceback or a silent wrong number.

The CLI cases run ``intriguing attack`` on small ``--tensors`` files of 8x8 grey images with the
toy models below (``intriguing.inputs.resolve_model`` is patched to build them by name).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError
from intriguing.inputs import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 8


class Linear(nn.Module):
    """``(N, 1, 8, 8)`` -> ``(N, classes)`` logits."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(SIDE * SIDE, classes)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fc(x.flatten(1))


class IntegerLogits(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        return super().forward(x).long()


class TupleOut(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        return super().forward(x), x


class DictOut(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        return {"logits": super().forward(x)}


class OneHot(Linear):
    """Scores from an argmax: finite, right shape, no gradient."""

    def forward(self, x: torch.Tensor) -> Any:
        return nn.functional.one_hot(super().forward(x).argmax(1), 4).float() * 3


class DetachedInput(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        return super().forward(x.detach())


class NoGrad(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            return super().forward(x)


class NoSingleImage(Linear):
    def forward(self, x: torch.Tensor) -> Any:
        if len(x) == 1:
            raise RuntimeError("expected more than 1 value per channel")
        return super().forward(x)


def float64_model() -> nn.Module:
    return Linear().double()


MODELS = {
    "linear": Linear,
    "one-class": lambda: Linear(classes=1),
    "integer-logits": IntegerLogits,
    "one-hot": OneHot,
    "detached": DetachedInput,
    "no-grad": NoGrad,
    "no-single-image": NoSingleImage,
    "float64": float64_model,
}


@pytest.fixture(autouse=True)
def toy_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(spec: str, **kwargs: Any) -> LoadedModel:
        return LoadedModel(MODELS[spec]().eval(), "factory", f"factory {spec}", spec)

    monkeypatch.setattr("intriguing.inputs.resolve_model", fake)


def images(n: int = 4, channels: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, channels, SIDE, SIDE)


def tensors_file(tmp_path: Path, **arrays: Any) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **{"images": images().numpy(), **arrays})
    return path


def attack(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["attack", *args, "--n", "3"])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, message: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert output.startswith("Error: ") and message in output, output


# ----------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("integer-logits", "must return floating logits"),
        ("one-class", "at least 2 classes"),
        ("one-hot", "not differentiable in its input"),
        ("detached", "not differentiable in its input"),
        ("no-grad", "not differentiable in its input"),
        ("no-single-image", "fails on a batch of 1 image"),
    ],
)
def test_cli_refuses_models_the_attack_cannot_use(model: str, message: str, tmp_path: Path) -> None:
    code, output = attack(model, "--tensors", str(tensors_file(tmp_path)))
    assert_one_line_error(code, output, message)


def test_cli_attacks_a_float64_model(tmp_path: Path) -> None:
    code, output = attack("float64", "--tensors", str(tensors_file(tmp_path)))
    assert code == 0, output
    assert "success rate        100.0%" in output and "re-verified         3/3" in output


def test_cli_uint64_labels(tmp_path: Path) -> None:
    labels = Linear()(images()).argmax(1).numpy().astype(np.uint64)
    code, output = attack("linear", "--tensors", str(tensors_file(tmp_path, labels=labels)))
    assert code == 0, output
    wrapped = np.full(4, 2**64 - 1, dtype=np.uint64)
    code, output = attack("linear", "--tensors", str(tensors_file(tmp_path, labels=wrapped)))
    assert_one_line_error(
        code, output, "'labels' holds 18446744073709551615, beyond any class index"
    )


def test_cli_npz_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_text("not an archive")
    code, output = attack("linear", "--tensors", str(path))
    assert_one_line_error(code, output, "not an .npz (zip) archive")
    assert "allow_pickle" not in output


def test_cli_weights_with_integer_values(tmp_path: Path) -> None:
    state = {k: (v * 100).long() for k, v in Linear().state_dict().items()}
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    code, output = attack(
        "linear", "--tensors", str(tensors_file(tmp_path)), "--weights", str(weights)
    )
    assert_one_line_error(code, output, "fc.weight is torch.int64 in the file but torch.float32")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["1", "-1", "2", "0"], "label '-1' of image 'img1.png' is negative"),
        (["1", "3", "x", "0"], "label 'x' of image 'img2.png' is not a class index"),
        # read as names, 7.0 and 9.0 became classes 0 and 1 (with no 8.0, every 9 became 8)
        (["1.0", "3.0", "0", "2"], "label '1.0' of image 'img0.png' is a number but not a class"),
        (["1", "2e0", "0", "2"], "label '2e0' of image 'img1.png' is a number but not a class"),
        # an int64 overflow traceback, or gigabytes for the list of class names
        (["1", "99999999999999999999", "0", "2"], "is above 1,000,000"),
        (["1", "30000000", "0", "2"], "label '30000000' of image 'img1.png' is above 1,000,000"),
    ],
    ids=["negative", "name-among-indices", "float", "exponent", "overflow", "huge"],
)
def test_cli_labels_file_with_negative_or_mixed_labels(
    labels: list[str], message: str, tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, pixels in enumerate(images()):
        Image.fromarray((pixels[0].numpy() * 255).astype(np.uint8), "L").save(
            folder / f"img{i}.png"
        )
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("".join(f"img{i}.png {v}\n" for i, v in enumerate(labels)))
    code, output = attack(
        "linear", "--images", str(folder), "--labels", str(labels_file), "--all-images"
    )
    assert_one_line_error(code, output, message)


def _image_folder(tmp_path: Path, *names: str) -> Path:
    """The test images saved as PNGs under ``names`` (relative paths) in ``tmp_path / 'imgs'``."""
    folder = tmp_path / "imgs"
    for name, pixels in zip(names, images(), strict=False):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels[0].numpy() * 255).astype(np.uint8), "L").save(folder / name)
    return folder


@pytest.mark.parametrize(
    ("names", "lines", "message"),
    [
        (  # the last line won silently
            ("a.png", "b.png"),
            "a.png 1\nb.png 2\na.png 3\n",
            "labels.txt:3: image 'a.png' has label '3' here and '1' on line 1; keep one",
        ),
        (  # one bare name labelled both images
            ("s/x.png", "t/x.png"),
            "x.png 1\n",
            "'x.png' names both 's/x.png' and 't/x.png'; give each image's path",
        ),
        (  # s/x.png's line must not label t/x.png through their shared file name
            ("s/x.png", "t/x.png"),
            "s/x.png 1\n",
            "no label for image 't/x.png'; add a line 't/x.png <label>'",
        ),
    ],
    ids=["twice", "ambiguous-file-name", "path-of-another-image"],
)
def test_cli_labels_file_that_labels_an_image_twice_or_ambiguously(
    names: tuple[str, ...], lines: str, message: str, tmp_path: Path
) -> None:
    folder = _image_folder(tmp_path, *names)
    (tmp_path / "labels.txt").write_text(lines)
    code, output = attack(
        "linear", "--images", str(folder), "--labels", str(tmp_path / "labels.txt"), "--all-images"
    )
    assert_one_line_error(code, output, message)


def test_labels_files_with_a_bom_spaces_quotes_and_comments_are_read() -> None:
    """The label is the last field: names may hold spaces, commas and '#'; a BOM is dropped."""
    import tempfile

    from intriguing.analysis.imagefolder import read_labels

    text = (
        "\ufeff# image label\n"
        "img 0.png 1  # a comment\n"
        '"quoted, name.png",2\n'
        "a#1.png\t0\n"
        "./sub/x.png 2\n"
        '"q.png","10"\n'  # csv.QUOTE_ALL: the quoted "10" was a class name, sorted as text
    )
    names = ["img 0.png", "quoted, name.png", "a#1.png", "sub/x.png", "q.png"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.txt"
        path.write_text(text, encoding="utf-8")
        labels, classes = read_labels(path, names)
    assert labels.tolist() == [1, 2, 0, 2, 10] and classes == [str(i) for i in range(11)]


def test_cli_normalize_with_the_wrong_number_of_channels(tmp_path: Path) -> None:
    code, output = attack(
        "linear", "--tensors", str(tensors_file(tmp_path)), "--normalize", "0.5,0.5,0.5,0.2,0.2,0.2"
    )
    assert_one_line_error(code, output, "the normalisation has 3 channels")


def test_cli_channels_last_images_get_the_permute_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    monkeypatch.setitem(MODELS, "conv", lambda: conv)
    path = tmp_path / "nhwc.npz"
    np.savez(path, images=images(channels=3).permute(0, 2, 3, 1).numpy())
    code, output = attack("conv", "--tensors", str(path))
    assert_one_line_error(code, output, "channels-last (N, H, W, C)")


# -------------------------------------------------------------------------------------- Python
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (TupleOut, "got tuple"),
        (DictOut, "got dict"),
        (IntegerLogits, "must return floating logits"),
        (OneHot, "not differentiable in its input"),
        (DetachedInput, "not differentiable in its input"),
        (NoGrad, "not differentiable in its input"),
        (NoSingleImage, "fails on a batch of 1 image"),
    ],
)
def test_api_refuses_models_the_attack_cannot_use(model: type[nn.Module], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        LBFGS()(model().eval(), images())
    assert len(str(caught.value).splitlines()) == 1


def test_api_casts_images_to_the_model_dtype() -> None:
    model, x = Linear().eval(), images()
    reference = LBFGS()(model, x)
    for other in (x.double(), x.half()):
        result = LBFGS()(model, other)
        assert result.adversarial.dtype == torch.float32
        assert bool(result.success.all())
    same = LBFGS()(model, x.double())
    assert torch.equal(same.distortion, reference.distortion)
    wide = LBFGS()(Linear().double().eval(), x)  # float64 parameters, float32 images
    assert wide.adversarial.dtype == torch.float64 and bool(wide.success.all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_api_refuses_half_precision_models(dtype: torch.dtype) -> None:
    """The optimiser's state and distances need single precision: a half model is refused with
    the fix, not attacked in half precision."""
    with pytest.raises(InvalidInputError, match=r"attack works in float32 or float64") as caught:
        LBFGS()(Linear().to(dtype).eval(), images())
    assert "model.float()" in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_api_images_requiring_grad_raise_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = LBFGS()(Linear().eval(), images().requires_grad_(True))
    assert bool(result.success.all())
