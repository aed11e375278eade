"""Issue 14 through the CLI: a researcher's own models (tests/fixtures/mymodels.py) and data.

Every command runs from tests/fixtures, so ``mymodels:lenet`` resolves from the current directory
as it would for a user. Models are random-init (fixed seeds): the attack, unit analysis and
curves need no trained model; each success is re-verified here with a fresh forward pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from intriguing.attacks import AttackResult
from intriguing.cli import main
from intriguing.inputs import load_any_model

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(FIXTURES))])
    sys.modules.pop("mymodels", None)
    monkeypatch.setitem(main.COMMANDS, "figure5", "intriguing.cli.reproduce_cmd:figure5")


def run(*args: str) -> Result:
    return CliRunner().invoke(main.cli, list(args))


def one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _folder(root: Path, mode: str, size: int, n: int = 4, classes: bool = True) -> Path:
    """``n`` random PNGs in class subfolders 0/ and 1/ (ImageFolder layout), or flat."""
    rng = np.random.default_rng(1)
    shape = (size, size) if mode == "L" else (size, size, 3)
    for i in range(n):
        folder = root / str(i % 2) if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / f"img{i}.png")
    return root


def _tensors(path: Path, spec: str, shape: tuple[int, ...], n: int = 4) -> Path:
    """Random images with the model's own predictions as labels (every one correct)."""
    torch.manual_seed(5)
    images = torch.rand(n, *shape)
    labels = load_any_model(spec)(images).argmax(1)
    save_file({"images": images, "labels": labels}, str(path))
    return path


def _reverified(
    spec: str, saved: Path, normalize: tuple[list[float], list[float]] | None = None
) -> AttackResult:
    result = AttackResult.load(saved)
    model = load_any_model(spec, preprocessing=normalize)
    with torch.no_grad():
        predicted = model(result.adversarial).argmax(1)
    assert bool(result.success.all())
    assert torch.equal(predicted != result.labels, result.success)
    assert bool((result.distortion > 0).all())
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    return result


# --------------------------------------------------------------------------------- attack
def test_attack_lenet_on_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    js, saved = tmp_path / "a.json", tmp_path / "a.safetensors"
    result = run(
        "attack", "mymodels:lenet", "--n", "3", "--data-dir", str(mnist_dir),
        "--json", str(js), "--save", str(saved),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "re-verified         3/3 successes" in result.output
    payload = json.loads(js.read_text())
    assert payload["summary"]["success_rate"] == 1.0 and payload["correct_only"] is True
    assert payload["verified_successes"] == 3 and payload["labels_from"] == "labels"
    _reverified("mymodels:lenet", saved)


def test_attack_with_normalize_outside_the_model(mnist_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "n.safetensors"
    result = run(
        "attack", "mymodels:lenet_raw", "--normalize", "0.1307,0.3081", "--n", "2",
        "--data-dir", str(mnist_dir), "--save", str(saved),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = _reverified("mymodels:lenet_raw", saved, ([0.1307], [0.3081]))
    inside = load_any_model("mymodels:lenet")  # the same function with the normalisation inside
    with torch.no_grad():
        assert bool((inside(stored.adversarial).argmax(1) != stored.labels).all())


def test_attack_colour_cnn_on_tensors_and_resnet_on_a_folder(tmp_path: Path) -> None:
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:colour_cnn", (3, 32, 32))
    saved = tmp_path / "c.safetensors"
    result = run("attack", "mymodels:colour_cnn", "--tensors", str(tensors), "--n", "3",
                 "--save", str(saved))  # fmt: skip
    assert result.exit_code == 0, result.output
    _reverified("mymodels:colour_cnn", saved)
    folder = _folder(tmp_path / "rgb", "RGB", 32, classes=False)
    saved = tmp_path / "r.safetensors"
    js = tmp_path / "r.json"
    result = run("attack", "mymodels:resnet", "--images", str(folder), "--n", "4",
                 "--save", str(saved), "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    _reverified("mymodels:resnet", saved)
    payload = json.loads(js.read_text())
    assert payload["layout"] == "flat" and payload["labels_from"] == "predictions"


def test_weights_file_is_loaded_into_the_factory_model(tmp_path: Path) -> None:
    model = load_any_model("mymodels:colour_cnn")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    torch.manual_seed(5)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)  # the predictions of the *loaded* weights
    tensors = tmp_path / "t.safetensors"
    save_file({"images": images, "labels": labels}, str(tensors))
    js = tmp_path / "w.json"
    result = run("attack", "mymodels:colour_cnn", "--weights", str(weights), "--tensors",
                 str(tensors), "--n", "3", "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(js.read_text())["correct_only"] is True  # all 3 are correct: weights used


def test_a_slightly_random_forward_is_refused_before_the_attack(mnist_dir: Path) -> None:
    """Logit noise of 0.003 (0.03% of the logits, far below the 1% batch-size check) still decides
    a success's 1e-4 lead: 14 reported successes of which a different 10 held on every rerun."""
    message = "the model gives different logits for the same images in two identical forward"
    for command in ("attack", "eval", "curves"):
        extra = ["--eps", "0.5"] if command == "curves" else []
        result = run(command, "mymodels:noisy_lenet", "--data-dir", str(mnist_dir), *extra)
        one_line_error(result, message)
    from intriguing.attacks import LBFGS
    from intriguing.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        LBFGS()(load_any_model("mymodels:noisy_lenet"), torch.rand(3, 1, 28, 28))


def test_attack_warns_when_successes_do_not_hold_on_a_fresh_pass(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intriguing.cli import attack_cmd

    monkeypatch.setattr(attack_cmd, "verify_successes", lambda model, result: 0)
    result = run("attack", "mymodels:lenet", "--n", "2", "--data-dir", str(mnist_dir))
    assert result.exit_code == 0, result.output
    assert "Warning: only 0 of 2 successes hold on a fresh forward pass" in result.output


def test_a_train_override_without_return_self_is_analysed(mnist_dir: Path, tmp_path: Path) -> None:
    """``model.eval()`` is None for such a model; it was refused as 'got NoneType'."""
    for command in ("eval", "attack"):
        result = run(command, "mymodels:train_without_return", "--data-dir", str(mnist_dir),
                     *(["--n", "2"] if command == "attack" else []))  # fmt: skip
        assert result.exit_code == 0, result.output
    result = run("spectral", "mymodels:train_without_return", "--input-shape", "1,28,28",
                 "--exact-method", "none",
                 "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_forward_that_reshapes_before_its_first_convolution_is_accepted(
    mnist_dir: Path, tmp_path: Path
) -> None:
    """Conv2d(4, ...) after a space-to-depth fold of 1x28x28 images: the channel check refused it
    before running it ('expects 4-channel images'), in attack, eval and spectral alike."""
    for command in ("eval", "attack"):
        result = run(command, "mymodels:space_to_depth", "--data-dir", str(mnist_dir),
                     *(["--n", "2"] if command == "attack" else []))  # fmt: skip
        assert result.exit_code == 0, result.output
    result = run("spectral", "mymodels:space_to_depth", "--input-shape", "1,28,28",
                 "--exact-method", "none", "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    # data that the first convolution really cannot take still gets the channel hint
    images = torch.rand(2, 3, 28, 28)
    save_file(
        {"images": images, "labels": torch.zeros(2, dtype=torch.long)},
        str(tmp_path / "rgb.safetensors"),
    )
    result = run("eval", "mymodels:lenet", "--tensors", str(tmp_path / "rgb.safetensors"))
    one_line_error(result, "the model expects 1-channel images (N, C, H, W) (first layer Conv2d(1")


def test_grey_images_spread_over_colour_channels_inside_the_model_are_noted(
    mnist_dir: Path, tmp_path: Path
) -> None:
    """Grey MNIST reaches an RGB model with (x - mean) / std inside as three channels: a warning
    (grey images are valid colour images, and a grey model may repeat them on purpose, which the
    result cannot tell apart), not a refusal; channels made otherwise raise no warning."""
    import warnings

    from intriguing.inputs import InputWarning

    warning = r"receives the 1x28x28 \(C x H x W\) data spread over 3 channels by the forward"
    for spec in ("mymodels:colour_with_normalisation", "mymodels:grey_to_rgb"):
        with pytest.warns(InputWarning, match=warning):
            result = run("eval", spec, "--data-dir", str(mnist_dir))
        assert result.exit_code == 0, result.output
    for spec in ("mymodels:space_to_depth", "mymodels:lenet"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputWarning)
            result = run("eval", spec, "--data-dir", str(mnist_dir))
        assert result.exit_code == 0, result.output
    # an image folder of grey PNGs: the colour mode is the one the forward accepts (L here)
    folder = _folder(tmp_path / "grey", "L", 28)
    result = run("eval", "mymodels:grey_to_rgb", "--images", str(folder))
    assert result.exit_code == 0, result.output
    # a wrong image size: the first convolution took the channels, so they are not blamed
    save_file({"images": torch.rand(2, 1, 32, 32), "labels": torch.zeros(2, dtype=torch.long)},
              str(tmp_path / "big.safetensors"))  # fmt: skip
    result = run("eval", "mymodels:grey_to_rgb", "--tensors", str(tmp_path / "big.safetensors"))
    one_line_error(result, "the model does not accept the data (1x32x32 (C x H x W)): the probe")
    assert "channel" not in result.output


def test_a_functional_first_convolution_is_not_blamed_on_a_later_module(tmp_path: Path) -> None:
    """F.conv2d with a 3-channel weight first, nn.Conv2d(8, ...) next: the refusal named the
    latter ('store 8-channel images'); PyTorch's own message names the real channels."""
    (tmp_path / "f.py").write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = nn.Parameter(torch.randn(8, 3, 3, 3))\n"
        "        self.conv = nn.Conv2d(8, 4, 3)\n"
        "        self.fc = nn.Linear(4 * 24 * 24, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.conv(F.conv2d(x, self.w)).flatten(1))\n"
        "def net():\n    return Net()\n"
    )
    save_file({"images": torch.rand(2, 1, 28, 28), "labels": torch.zeros(2, dtype=torch.long)},
              str(tmp_path / "grey.safetensors"))  # fmt: skip
    result = run(
        "eval", f"{tmp_path / 'f.py'}:net", "--tensors", str(tmp_path / "grey.safetensors")
    )
    one_line_error(result, "the probe forward raised RuntimeError")
    assert "8-channel" not in result.output and "to have 3 channels" in result.output


def test_an_image_folder_keeps_its_colour_for_a_model_whose_first_conv_is_registered_late(
    tmp_path: Path,
) -> None:
    """The first registered convolution (the head, 8 channels) chose nothing, and grey, which the
    forward also accepts by broadcasting, was tried first: colour images were read as grey."""
    from intriguing.inputs import open_data

    data = open_data(images=_folder(tmp_path / "rgb", "RGB", 28))
    data.fit_to(load_any_model("mymodels:late_stem"))
    assert data.meta["mode"] == "RGB" and tuple(data.batch(0, 1).shape) == (1, 3, 28, 28)
    grey = open_data(images=_folder(tmp_path / "grey", "L", 32))
    grey.fit_to(load_any_model("mymodels:colour_cnn"))  # an RGB model: grey images as RGB
    assert grey.meta["mode"] == "RGB"


def test_failed_probes_name_the_real_problem(tmp_path: Path) -> None:
    """Channels-last data into an RGB model whose normalisation fails before any convolution keeps
    the permute hint; a Linear-first model whose first layer took the data is not told what it
    'expects'; TorchScript's error gives its last line, which names the problem."""
    last = tmp_path / "last.safetensors"
    save_file({"images": torch.rand(2, 28, 28, 3), "labels": torch.zeros(2, dtype=torch.long)},
              str(last))  # fmt: skip
    one_line_error(run("eval", "mymodels:colour_with_normalisation", "--tensors", str(last)),
                   "the data looks channels-last (N, H, W, C)")  # fmt: skip
    one_line_error(run("eval", "mymodels:late_stem", "--tensors", str(last)),
                   "(if the data is channels-last (N, H, W, C), store (N, C, H, W)")  # fmt: skip
    # (N, 8, 8, 3) feature maps that an 8-channel first convolution takes: the model's own error,
    # no channels-last guess
    maps = tmp_path / "maps.safetensors"
    save_file({"images": torch.rand(2, 8, 8, 3), "labels": torch.zeros(2, dtype=torch.long)},
              str(maps))  # fmt: skip
    (tmp_path / "f8.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(8, 4, 1)\n"
        "        self.fc = nn.Linear(4 * 8 * 3, 10)\n"
        "    def forward(self, x):\n"
        "        if x.shape[-1] != x.shape[-2]:\n"
        "            raise ValueError('square maps only')\n"
        "        return self.fc(self.conv(x).flatten(1))\n"
        "def net():\n    return Net()\n"
    )
    result = run("eval", f"{tmp_path / 'f8.py'}:net", "--tensors", str(maps))
    one_line_error(result, "raised ValueError: square maps only")
    assert "channels-last" not in result.output
    one_line_error(
        run("eval", "mymodels:colour_cnn", "--normalize", "0.5,0.5,0.5,0.2,0.2,0.2", "--tensors",
            str(last)),
        "the normalisation has 3 channels but the data is 28x28x3 (C x H x W): the data looks "
        "channels-last",
    )  # fmt: skip
    grey = tmp_path / "grey.safetensors"
    save_file({"images": torch.rand(2, 1, 28, 28), "labels": torch.zeros(2, dtype=torch.long)},
              str(grey))  # fmt: skip
    result = run("eval", "mymodels:mlp_with_bug", "--tensors", str(grey))
    one_line_error(result, "the probe forward raised RuntimeError: mat1 and mat2 shapes")
    assert "it expects" not in result.output
    scripted = tmp_path / "s.py"
    scripted.write_text(
        "import torch\nfrom torch import nn\n"
        "def net():\n    torch.manual_seed(0)\n"
        "    return torch.jit.script(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(),"
        " nn.Linear(4 * 26 * 26, 10)).eval())\n"
    )
    rgb = tmp_path / "rgb.safetensors"
    save_file({"images": torch.rand(2, 3, 28, 28), "labels": torch.zeros(2, dtype=torch.long)},
              str(rgb))  # fmt: skip
    result = run("eval", f"{scripted}:net", "--tensors", str(rgb))
    one_line_error(result, "to have 1 channels, but got 3 channels instead")


def test_the_spread_warning_survives_a_batch_wrapper_a_resize_and_half_precision() -> None:
    """The channels are tested against each other, not against the image: a test-time
    augmentation wrapper (doubled batch), a resize before the model and float16 still warn."""
    from intriguing.inputs import InputWarning, check_model_input

    inner = load_any_model("mymodels:colour_with_normalisation")

    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            both = self.inner(torch.cat([x, x.flip(3)]))
            return (both[: len(x)] + both[len(x) :]) / 2

    class Resized(Twice):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.nn.functional.interpolate(x, size=(28, 28)))

    images = torch.rand(2, 1, 28, 28)
    for model, data in ((Twice(), images), (Resized(), torch.rand(2, 1, 20, 20))):
        with pytest.warns(InputWarning, match="spread over 3 channels"):
            check_model_input(model.eval(), data)
    with pytest.warns(InputWarning, match="spread over 3 channels"):
        check_model_input(load_any_model("mymodels:colour_with_normalisation").half(), images)


def test_colour_is_kept_for_mixed_folders_and_models_with_a_grey_conv_registered_first(
    tmp_path: Path,
) -> None:
    """A grey first image made a mixed folder grey; a one-channel attention conv registered
    before an RGB stem made a colour folder grey (the normalisation broadcast the grey probe)."""
    import warnings

    from intriguing.inputs import InputWarning, check_model_input, open_data

    mixed = tmp_path / "mixed"
    _folder(mixed / "a", "L", 28, n=1, classes=False)
    _folder(mixed / "b", "RGB", 28, n=3, classes=False)
    lazy = nn.Sequential(nn.LazyConv2d(4, 3), nn.Flatten(), nn.LazyLinear(10)).eval()
    data = open_data(images=mixed)
    data.fit_to(lazy)
    assert data.meta["mode"] == "RGB"

    class AttentionFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Conv2d(1, 1, 7, padding=3)  # registered first, used later
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
            self.fc = nn.Linear(4 * 28 * 28, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x - self.mean))
            h = h * torch.sigmoid(self.attention(h.mean(1, keepdim=True)))
            out: torch.Tensor = self.fc(h.flatten(1))
            return out

    colour = open_data(images=_folder(tmp_path / "rgb", "RGB", 28))
    colour.fit_to(AttentionFirst().eval())
    assert colour.meta["mode"] == "RGB"

    class MaskChannel(nn.Module):
        """A grey model that adds a constant plane as a second channel: no spread warning."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(self.conv(torch.cat([x, torch.ones_like(x)], 1)).flatten(1))
            return out

    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        check_model_input(MaskChannel().eval(), torch.rand(2, 1, 28, 28))

    class ColourAndMask(nn.Module):
        """An RGB model with its normalisation inside and a mask plane: grey data still warns."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
            self.conv = nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x - self.mean
            h = torch.cat([torch.ones_like(h[:, :1]), h], 1)
            out: torch.Tensor = self.fc(self.conv(h).flatten(1))
            return out

    with pytest.warns(InputWarning, match="spread over 4 channels"):
        check_model_input(ColourAndMask().eval(), torch.rand(2, 1, 28, 28))


def test_a_model_on_the_meta_device_is_refused_or_takes_its_weights(tmp_path: Path) -> None:
    """A factory building its layers on the meta device (no values) is refused in one line by every
    command; with --weights the file's tensors become the model's, as for any factory."""
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:colour_cnn", (3, 32, 32))
    for command in ("eval", "attack", "figure5"):
        result = run(command, "mymodels:colour_cnn_on_meta", "--tensors", str(tensors))
        one_line_error(result, "the model has no data (meta device, e.g. 0.weight): load its")
    weights = tmp_path / "w.safetensors"
    real = load_any_model("mymodels:colour_cnn")
    save_file({k: v.contiguous() for k, v in real.state_dict().items()}, str(weights))
    js = tmp_path / "e.json"
    result = run("eval", "mymodels:colour_cnn_on_meta", "--weights", str(weights), "--tensors",
                 str(tensors), "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(js.read_text())["tensors_error"] == 0.0  # labels are colour_cnn's predictions
    # weights stored in float64 take the dtype the model was built with, as for any factory
    save_file({k: v.double().contiguous() for k, v in real.state_dict().items()}, str(weights))
    from intriguing.inputs import load_any_model as load

    model = load("mymodels:colour_cnn_on_meta", weights=weights)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_meta_buffer_no_weights_file_holds_is_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file as save

    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n"
        "        self.register_buffer('scale', torch.tensor(1.0), persistent=False)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1)) * self.scale\n"
        "def net():\n"
        "    with torch.device('meta'):\n"
        "        return Net()\n"
    )
    save(
        {"fc.weight": torch.zeros(10, 784), "fc.bias": torch.zeros(10)},
        str(tmp_path / "w.safetensors"),
    )
    result = run("eval", f"{tmp_path / 'm.py'}:net", "--weights", str(tmp_path / "w.safetensors"))
    one_line_error(result, "the model's scale is still on the meta device after loading --weights")


# ------------------------------------------------------------------ units, figure5, curves
def test_units_on_a_grey_image_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "grey", "L", 28, n=12)
    js = tmp_path / "u.json"
    result = run(
        "units", "mymodels:lenet", "--layer", "fc1", "--images", str(folder), "--k", "3",
        "--n-directions", "4", "--directions", "natural,random", "--n-null", "200",
        "--n-resamples", "99", "--alphas", "none", "--json", str(js),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["dim"] == 64 and payload["image_set"]["classes"] == ["0", "1"]
    assert payload["image_set"]["mode"] == "L"


def test_figure5_on_grey_pngs_no_longer_crashes(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "grey", "L", 28, n=2)
    out = tmp_path / "f5"
    result = run(
        "figure5", "mymodels:lenet", "--images", str(folder), "--n", "2", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    stored = AttackResult.load(out / "figure5.safetensors")
    assert stored.adversarial.shape == (2, 1, 28, 28)
    assert (out / "figure5.png").stat().st_size > 1000


def test_curves_robust_accuracy_at_budgets(tmp_path: Path) -> None:
    tensors = _tensors(tmp_path / "t.npz.safetensors", "mymodels:resnet", (3, 32, 32), n=5)
    js, plot = tmp_path / "c.json", tmp_path / "c.png"
    result = run(
        "curves", "mymodels:resnet", "--tensors", str(tensors), "--eps", "2,0.5,1", "--norm", "l2",
        "--n", "5", "--max-iter", "20", "--json", str(js), "--plot", str(plot),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    acc = payload["robust_accuracy"]
    assert payload["eps"] == [0.5, 1.0, 2.0] and payload["norm"] == "l2"
    assert payload["clean_accuracy"] == 1.0 and acc[0] >= acc[1] >= acc[2] >= 0.0
    assert payload["n"] == 5 and plot.stat().st_size > 1000
    rms = run("curves", "mymodels:resnet", "--tensors", str(tensors), "--eps", "0.01",
              "--norm", "rms", "--n", "2", "--max-iter", "20")  # fmt: skip
    assert rms.exit_code == 0 and "eps 0.01" in rms.output


def test_curves_out_keeps_its_json_and_plot_a_pair(tmp_path: Path) -> None:
    """A second run into the same --out with --plot elsewhere left the first run's plot beside
    the second run's JSON (found by a probe)."""
    tensors = _tensors(tmp_path / "t.npz.safetensors", "mymodels:lenet", (1, 28, 28), n=3)
    out, other = tmp_path / "out", tmp_path / "other.png"
    common = ["curves", "mymodels:lenet", "--tensors", str(tensors), "--max-iter", "20"]
    first = run(*common, "--n", "3", "--eps", "1,2", "--out", str(out))
    assert first.exit_code == 0, first.output
    in_out = out / "curves-mymodels_lenet.png"
    before = in_out.read_bytes()
    second = run(*common, "--n", "2", "--eps", "3", "--out", str(out), "--plot", str(other))
    assert second.exit_code == 0, second.output
    payload = json.loads((out / "curves-mymodels_lenet.json").read_text())
    assert payload["eps"] == [3.0] and payload["plot"] == str(other)
    assert in_out.read_bytes() != before  # redrawn for the second run
    assert other.read_bytes() == in_out.read_bytes()


# --------------------------------------------------------------------------------- spectral
def test_spectral_user_models_run_or_refuse_cleanly(tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    ok = run("spectral", "mymodels:colour_cnn", "--input-shape", "3,32,32",
             "--exact-method", "none", "--json", str(js))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(js.read_text())["bound"]["lipschitz_upper"] > 0
    one_line_error(run("spectral", "mymodels:colour_cnn"), "--input-shape C,H,W")
    one_line_error(
        run("spectral", "mymodels:colour_cnn", "--input-shape", "1,28,28"), "expects 3-channel"
    )
    one_line_error(run("spectral", "mymodels:lenet", "--input-shape", "3,x"), "--input-shape")


# --------------------------------------------------------------------------------- refusals
def test_refusals_are_one_line(tmp_path: Path, mnist_dir: Path) -> None:
    grey = _folder(tmp_path / "grey", "L", 32, n=2)
    colour = tmp_path / "c.safetensors"
    save_file({"images": torch.rand(2, 3, 28, 28), "labels": torch.tensor([1, 2])}, str(colour))
    mnist = ["--data-dir", str(mnist_dir)]
    one_line_error(run("attack", "no-such-thing"), "package.module:factory")
    one_line_error(run("attack", "no_such_module_xyz:make"), "cannot import 'no_such_module_xyz'")
    one_line_error(
        run("attack", "mymodels:colour_cnn", "--images", str(grey), "--image-mode", "L"),
        "expects 3-channel images",
    )
    one_line_error(run("attack", "mymodels:lenet", "--tensors", str(colour)), "expects 1-channel")
    one_line_error(
        run("figure5", "mymodels:lenet", "--images", str(grey), "--image-size", "16"),
        "does not accept the data (1x16x16",
    )
    one_line_error(run("units", "mymodels:colour_cnn", "--layer", "1", *mnist), "1x28x28")
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "w.pt")
    one_line_error(run("attack", "mymodels:lenet", "--weights", str(tmp_path / "w.pt")), "pickles")
    save_file({"conv1.weight": torch.zeros(6, 1, 3, 3)}, str(tmp_path / "bad.safetensors"))
    one_line_error(
        run("attack", "mymodels:lenet", "--weights", str(tmp_path / "bad.safetensors")),
        "keys do not match the model",
    )
    one_line_error(run("curves", "mymodels:lenet", *mnist), "--eps is required")
    one_line_error(run("curves", "mymodels:lenet", "--eps", "1,-2", *mnist), "finite numbers >= 0")
    if not torch.cuda.is_available():
        one_line_error(run("attack", "mymodels:lenet", "--device", "cuda"), "CUDA is not available")
    one_line_error(run("eval", "mymodels:lenet", "--images", str(grey)), "does not accept")


def test_eval_any_model_on_tensors_is_the_hand_counted_error(tmp_path: Path) -> None:
    torch.manual_seed(7)
    images = torch.rand(8, 3, 32, 32)
    labels = load_any_model("mymodels:colour_cnn")(images).argmax(1)
    labels[:3] = (labels[:3] + 1) % 10  # exactly three wrong
    save_file({"images": images, "labels": labels}, str(tmp_path / "t.safetensors"))
    js = tmp_path / "e.json"
    result = run("eval", "mymodels:colour_cnn", "--tensors", str(tmp_path / "t.safetensors"),
                 "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["tensors_error"] == pytest.approx(3 / 8) and payload["n"] == 8


def test_rarity_and_recover_on_a_user_model(tmp_path: Path) -> None:
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:colour_cnn", (3, 32, 32), n=3)
    js = tmp_path / "r.json"
    rarity = run("rarity", "mymodels:colour_cnn", "--tensors", str(tensors), "--n", "2",
                 "--samples", "50", "--rays", "2", "--max-iter", "30", "--json", str(js))  # fmt: skip
    assert rarity.exit_code == 0, rarity.output
    payload = json.loads(js.read_text())
    assert payload["n"] == 2 and payload["pooled"]["1"]["valid"] == 100
    assert payload["positions"] == [0, 1] and payload["labels_from"] == "labels"
    recover = run("recover", "mymodels:colour_cnn", "--tensors", str(tensors), "--n", "2",
                  "--bootstrap", "50", "--max-iter", "30", "--amplify", "none",
                  "--json", str(js))  # fmt: skip
    assert recover.exit_code == 0, recover.output
    summary = json.loads(js.read_text())
    assert summary["n"] == 2 and 0 <= summary["recovered"] <= 2
    one_line_error(
        run("rarity", "mymodels:colour_cnn", "--models", "softmax1", "--tensors", str(tensors)),
        "takes no --models",
    )
    one_line_error(run("rarity", "--models", "softmax1"), "--out is required")


def test_device_auto_runs_where_cuda_is_or_on_the_cpu(tmp_path: Path) -> None:
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:colour_cnn", (3, 32, 32), n=2)
    expected = "(cuda" if torch.cuda.is_available() else "(cpu)"
    for command in (["attack"], ["figure5", "--out", str(tmp_path / "f5")]):
        result = run(*command, "mymodels:colour_cnn", "--tensors", str(tensors), "--n", "2",
                     "--device", "auto")  # fmt: skip
        assert result.exit_code == 0, result.output
    attack = run("attack", "mymodels:colour_cnn", "--tensors", str(tensors), "--n", "1",
                 "--device", "auto")  # fmt: skip
    assert expected in attack.output


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("eval", ("--dataset", "mnist")),
        ("attack", ("--data-dir", ".")),
        ("units", ("--dataset", "mnist")),
    ],
)
def test_data_options_a_factory_model_on_tensors_would_ignore_are_refused(
    tmp_path: Path, command: str, flag: tuple[str, str]
) -> None:
    """--dataset/--data-dir pick the MNIST a zoo model trains on and a command reads: with
    --tensors and a factory model they did nothing, silently."""
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:colour_cnn", (3, 32, 32), n=2)
    extra = ("--layer", "1") if command == "units" else ()
    result = run(command, "mymodels:colour_cnn", "--tensors", str(tensors), *extra, *flag)
    one_line_error(result, f"{flag[0]} does nothing here")
    # without the option the same command runs (eval: the quickest to show it)
    if command == "eval":
        assert run(command, "mymodels:colour_cnn", "--tensors", str(tensors)).exit_code == 0


def test_a_torch_compiled_factory_is_analysed_as_its_network(tmp_path: Path) -> None:
    """torch.compile wraps a model in an OptimizedModule: its layer names gain an ``_orig_mod.``
    prefix, spectral could not trace it and --weights saved from the plain network did not load.
    Every command now works on the network it holds (compiled lazily: never called here)."""
    from intriguing.models.user import uncompiled

    plain = load_any_model("mymodels:lenet")
    compiled = torch.compile(plain)
    assert uncompiled(compiled) is plain and uncompiled(plain) is plain  # type: ignore[arg-type]
    assert type(load_any_model("mymodels:compiled_lenet")).__name__ == "LeNet"
    bounds = []
    for spec in ("mymodels:lenet", "mymodels:compiled_lenet"):
        js = tmp_path / f"{spec.split(':')[1]}.json"
        result = run("spectral", spec, "--input-shape", "1,28,28", "--json", str(js))
        assert result.exit_code == 0, result.output
        bounds.append(json.loads(js.read_text()))
    assert bounds[0]["bound"]["lipschitz_upper"] == bounds[1]["bound"]["lipschitz_upper"]
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(weights))
    tensors = _tensors(tmp_path / "t.safetensors", "mymodels:lenet", (1, 28, 28), n=2)
    result = run("eval", "mymodels:compiled_lenet", "--weights", str(weights),
                 "--tensors", str(tensors))  # fmt: skip
    assert result.exit_code == 0, result.output
