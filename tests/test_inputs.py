"""The one way in (issue 14), through the Python API: models, weights, normalisation, data, checks.

User models come from ``tests/fixtures/mymodels.py``, imported as ``mymodels:...`` with that folder
as the current directory, as a researcher would run ``intriguing attack mymodels:lenet``.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from intriguing.analysis import imagefolder
from intriguing.analysis.curves import model_robust_accuracy, robust_accuracy
from intriguing.errors import IntriguingError, InvalidInputError, UnknownModelError
from intriguing.inputs import (
    DataSource,
    check_model_input,
    choose_examples,
    load_any_model,
    load_tensors,
    open_data,
    parse_normalize,
    resolve_device,
    select_correct,
)
from intriguing.models.preprocessing import Preprocessed

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tests/fixtures (so that ``mymodels`` resolves from the current directory)."""
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(FIXTURES))])
    sys.modules.pop("mymodels", None)
    return FIXTURES


# ------------------------------------------------------------------------------------ models
def test_factory_resolves_from_the_current_directory(in_fixtures: Path) -> None:
    model = load_any_model("mymodels:lenet")
    assert not model.training
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    by_file = load_any_model("mymodels.py:resnet")
    assert by_file(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_form_lists_the_forms_and_missing_module_says_why(in_fixtures: Path) -> None:
    with pytest.raises(UnknownModelError, match=r"package\.module:factory") as info:
        load_any_model("no-such-model")
    assert "zoo name" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match=r"cannot import 'no_such_mod_xyz'.*PYTHONPATH"):
        load_any_model("no_such_mod_xyz:make")
    with pytest.raises(InvalidInputError, match="has no callable 'nope'"):
        load_any_model("mymodels:nope")


def test_preprocessing_wrapper_equals_normalisation_inside_the_model(in_fixtures: Path) -> None:
    inside = load_any_model("mymodels:lenet")
    outside = load_any_model("mymodels:lenet_raw", preprocessing=([0.1307], [0.3081]))
    same = load_any_model("mymodels:lenet_raw", preprocessing="0.1307,0.3081")
    assert isinstance(outside, Preprocessed)
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(outside(x), inside(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(same(x), inside(x), rtol=1e-5, atol=1e-5)


def test_parse_normalize_splits_means_then_stds() -> None:
    assert parse_normalize("0.1307,0.3081") == ([0.1307], [0.3081])
    assert parse_normalize("0.5,0.4,0.3,0.2,0.2,0.1") == ([0.5, 0.4, 0.3], [0.2, 0.2, 0.1])
    for bad in ("0.5", "0.5,0.2,0.1", "a,b", "", "0.5,0", "0.5,-0.2", "nan,0.3", "0.1,inf"):
        with pytest.raises(InvalidInputError, match="--normalize"):
            parse_normalize(bad)  # std <= 0 and non-finite values too: before a zoo model trains


def test_weights_round_trip_and_every_refusal(in_fixtures: Path, tmp_path: Path) -> None:
    source = load_any_model("mymodels:colour_cnn")
    with torch.no_grad():
        for p in source.parameters():
            p.mul_(-2.0)  # different from the factory's weights
    good = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(good))
    loaded = load_any_model("mymodels:colour_cnn", weights=good)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source(x))
    state = source.state_dict()
    renamed = {("x." + k if k == "0.weight" else k): v.contiguous() for k, v in state.items()}
    save_file(renamed, str(tmp_path / "keys.safetensors"))
    with pytest.raises(InvalidInputError, match=r"missing 0\.weight; unexpected x\.0\.weight"):
        load_any_model("mymodels:colour_cnn", weights=tmp_path / "keys.safetensors")
    reshaped = {k: v.contiguous() for k, v in state.items()}
    reshaped["5.weight"] = torch.zeros(10, 7)
    save_file(reshaped, str(tmp_path / "shape.safetensors"))
    with pytest.raises(InvalidInputError, match=r"5.weight has shape \(10, 7\) in the file"):
        load_any_model("mymodels:colour_cnn", weights=tmp_path / "shape.safetensors")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(InvalidInputError, match="pickles can run code"):
        load_any_model("mymodels:colour_cnn", weights=tmp_path / "w.pt")
    (tmp_path / "pickle.safetensors").write_bytes((tmp_path / "w.pt").read_bytes())
    with pytest.raises(InvalidInputError, match="not a readable safetensors file"):
        load_any_model("mymodels:colour_cnn", weights=tmp_path / "pickle.safetensors")


def test_device_choices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidInputError, match="choose one of cpu, cuda, auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_attacks_agree(in_fixtures: Path) -> None:
    """The same attack on CPU and CUDA: same successes, distortions within 1e-3 relative."""
    from intriguing.attacks import LBFGS

    cpu = load_any_model("mymodels:colour_cnn", device="cpu")
    gpu = load_any_model("mymodels:colour_cnn", device="cuda")
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    labels = cpu(images).argmax(1)
    with torch.no_grad():
        torch.testing.assert_close(gpu(images.cuda()).cpu(), cpu(images), rtol=1e-4, atol=1e-4)
    a = LBFGS(mode="untargeted", seed=0)(cpu, images, labels)
    b = LBFGS(mode="untargeted", seed=0)(gpu, images.cuda(), labels.cuda())
    assert b.adversarial.device.type == "cuda"
    assert torch.equal(a.success, b.success.cpu())
    ok = a.success
    torch.testing.assert_close(b.distortion.cpu()[ok], a.distortion[ok], rtol=1e-3, atol=1e-5)


# -------------------------------------------------------------------------------------- data
def _grey_folder(root: Path, n: int = 4, size: int = 28, classes: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / str(i % 2) if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"img{i}.png")
    return root


def test_sixteen_bit_png_is_scaled_by_65535(tmp_path: Path) -> None:
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    data = open_data(images=tmp_path, mode="L")
    got = data.batch(0, 1)[0, 0].numpy()
    np.testing.assert_allclose(got, values / 65535.0, rtol=0, atol=1e-6)
    assert got.max() < 1.0 and len(np.unique(got)) == 64  # not saturated at 255
    rgb = open_data(images=tmp_path, mode="RGB").batch(0, 1)[0]
    assert rgb.shape == (3, 8, 8) and torch.equal(rgb[0], rgb[2])


def test_palette_and_alpha_pngs_are_read_through_their_palette(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 6)
    index = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette)
    image.save(tmp_path / "a_palette.png")
    Image.fromarray(np.full((2, 2, 4), [10, 20, 30, 0], dtype=np.uint8), "RGBA").save(
        tmp_path / "b_rgba.png"
    )
    Image.fromarray(np.full((2, 2, 2), [200, 7], dtype=np.uint8), "LA").save(tmp_path / "c_la.png")
    batch = open_data(images=tmp_path, mode="RGB").batch(0, 3) * 255
    assert batch[0, :, 0, 0].round().tolist() == [255, 0, 0]
    assert batch[0, :, 0, 1].round().tolist() == [0, 128, 255]
    assert batch[1, :, 1, 1].round().tolist() == [10, 20, 30]
    assert batch[2, :, 0, 0].round().tolist() == [200, 200, 200]


def test_exif_orientation_is_applied_and_a_broken_tag_is_ignored(tmp_path: Path) -> None:
    """A camera photo stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise to
    view") is read upright, as viewers show it; a tag Pillow cannot use leaves it as stored."""
    stored = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3) * 40  # H 2, W 3 as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored, "L").save(tmp_path / "a_turned.png", exif=exif)
    exif[0x0112] = 1  # "as stored"
    Image.fromarray(np.rot90(stored, -1).copy(), "L").save(tmp_path / "b_upright.png", exif=exif)
    batch = open_data(images=tmp_path, mode="L").batch(0, 2)[:, 0] * 255
    upright = np.rot90(stored, -1)  # clockwise: H 3, W 2
    np.testing.assert_array_equal(batch[0].round().numpy(), upright)
    np.testing.assert_array_equal(batch[1].round().numpy(), upright)
    (tmp_path / "bad").mkdir()
    exif[0x0112] = 99  # not an orientation
    Image.fromarray(stored, "L").save(tmp_path / "bad" / "c.png", exif=exif)
    got = open_data(images=tmp_path / "bad", mode="L").batch(0, 1)[0, 0] * 255
    np.testing.assert_array_equal(got.round().numpy(), stored)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (no pixel data is ever needed to refuse it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_and_empty_inputs_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "huge").mkdir()
    _png_header_only(tmp_path / "huge" / "big.png", 20000, 20000)
    with pytest.raises(InvalidInputError, match="too many pixels") as info:
        open_data(images=tmp_path / "huge", mode="L").batch(0, 1)
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no image files"):
        open_data(images=tmp_path / "empty")
    save_file({"images": torch.zeros(0, 1, 28, 28)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(InvalidInputError, match="holds no images"):
        load_tensors(tmp_path / "none.safetensors")
    assert imagefolder.MAX_PIXELS < 20000 * 20000


def test_an_image_pillow_cannot_convert_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A CIELAB TIFF: Pillow's ValueError was a traceback."""
    (tmp_path / "lab").mkdir()
    Image.new("LAB", (4, 4)).save(tmp_path / "lab" / "x.tif")
    with pytest.raises(
        IntriguingError, match=r"x\.tif: cannot read the image \(conversion from LAB"
    ):
        open_data(images=tmp_path / "lab", mode="L").batch(0, 1)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.full((2, 1, 4, 4), 1.5, np.float32)}, r"must lie in \[0, 1\], found"),
        # 1.0001 printed as 1 before: "must lie in [0, 1], found values in [0, 1]"
        ({"images": np.full((2, 1, 4, 4), 1.0001, np.float64)}, r"found values in \[1\.0001, "),
        ({"images": np.zeros(4, np.float32)}, r"must have shape \(N, \.\.\.\)"),
        ({"pixels": np.zeros((2, 1, 4, 4), np.float32)}, "no 'images' entry"),
        ({"images": np.zeros((2, 1, 4, 4), np.uint8)}, "store floats in"),
        ({"images": np.full((2, 1, 4, 4), np.nan, np.float32)}, "NaN"),
        ({"images": np.zeros((5, 1, 0, 28), np.float32)}, r"no values: shape \(5, 1, 0, 28\)"),
        (
            {"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.zeros(3, np.int64)},
            r"'labels' must have shape \(2,\)",
        ),
    ],
)
def test_tensor_files_are_verified(
    arrays: dict[str, np.ndarray], message: str, tmp_path: Path
) -> None:
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(InvalidInputError, match=message):
        load_tensors(tmp_path / "t.npz")
    save_file({k: torch.from_numpy(v) for k, v in arrays.items()}, str(tmp_path / "t.safetensors"))
    with pytest.raises(InvalidInputError, match=message):
        load_tensors(tmp_path / "t.safetensors")


def test_probe_names_the_model_input_and_the_data_shape(in_fixtures: Path, tmp_path: Path) -> None:
    colour, lenet = load_any_model("mymodels:colour_cnn"), load_any_model("mymodels:lenet")
    with pytest.raises(InvalidInputError, match=r"expects 3-channel images.*1x32x32"):
        check_model_input(colour, torch.rand(2, 1, 32, 32))
    with pytest.raises(InvalidInputError, match=r"expects 1-channel images.*3x28x28"):
        check_model_input(lenet, torch.rand(2, 3, 28, 28))
    folder = _grey_folder(tmp_path / "grey")
    with pytest.raises(InvalidInputError, match=r"does not accept the data \(1x16x16"):
        open_data(images=folder, image_size=16).fit_to(lenet)
    with pytest.raises(InvalidInputError, match="expects 3-channel images"):
        open_data(images=folder, mode="L").fit_to(colour)
    grey = open_data(images=folder)  # mode follows the model
    assert grey.fit_to(lenet) == 10 and grey.meta["mode"] == "L"
    assert grey.labels is not None and grey.labels.tolist() == [0, 0, 1, 1]
    assert grey.names == ["0/img0.png", "0/img2.png", "1/img1.png", "1/img3.png"]
    auto_rgb = open_data(images=folder, image_size=32)
    auto_rgb.fit_to(colour)  # grey files converted for a colour model when no --mode is given
    assert auto_rgb.meta["mode"] == "RGB" and auto_rgb.batch(0, 1).shape == (1, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="out of range for a model with 10 outputs"):
        check_model_input(lenet, torch.rand(2, 1, 28, 28), torch.tensor([3, 12]))


# ------------------------------------------------------------------------------ selection
def test_select_correct_keeps_the_first_correct_in_order() -> None:
    weight = torch.eye(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight)
    images = torch.eye(3)[[0, 1, 2, 0, 1]].view(5, 1, 1, 3)
    labels = torch.tensor([0, 2, 2, 1, 1])  # correct: 0, 2, 4
    x, y, index = select_correct(model, images, labels, 2)
    assert index.tolist() == [0, 2] and y.tolist() == [0, 2] and torch.equal(x, images[[0, 2]])
    with pytest.raises(InvalidInputError, match=r"only 3 correctly classified.*at most 3"):
        select_correct(model, images, labels, 4)
    wrong = torch.tensor([1, 0, 0, 2, 2])  # none correct: '--n at most 0' would mislead
    with pytest.raises(InvalidInputError, match=r"none of the 5 images.*normalisation"):
        select_correct(model, images, wrong, 1)
    with pytest.raises(InvalidInputError, match=r"^none of the 5 images is classified correctly"):
        choose_examples(model, DataSource("tensors", images, wrong, list("abcde")), 4, chunk=2)
    tensors = DataSource("tensors", images, labels, list("abcde"))
    x2, y2, index2, source = choose_examples(model, tensors, 3, chunk=2)
    assert index2.tolist() == [0, 2, 4] and source == "labels" and y2.tolist() == [0, 2, 1]
    assert torch.equal(x2, images[[0, 2, 4]])


# --------------------------------------------------------------------------- robust accuracy
def test_robust_accuracy_is_hand_computed() -> None:
    correct = torch.tensor([True, True, True, False, True])
    success = torch.tensor([True, True, False, False, True])
    distortion = torch.tensor([0.5, 1.5, 9.0, 0.0, 2.0])
    got = robust_accuracy(correct, distortion, success, [0.0, 0.5, 1.0, 2.0, 5.0])
    # 4 correct; fooled within eps: {} {0} {0} {0,1,4} {0,1,4}; the failed attack stays robust
    assert got.tolist() == pytest.approx([0.8, 0.6, 0.6, 0.2, 0.2])
    with pytest.raises(InvalidInputError, match="budgets"):
        robust_accuracy(correct, distortion, success, [-1.0])


def test_model_robust_accuracy_matches_its_attack(in_fixtures: Path) -> None:
    from intriguing.attacks import LBFGS

    model = load_any_model("mymodels:colour_cnn")
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    labels = model(images).argmax(1)
    labels[0] = (labels[0] + 1) % 10  # one clean error: never robust
    summary, result = model_robust_accuracy(
        model, images, labels, [0.0, 0.1, 100.0], norm="l2", attack=LBFGS(max_iter=30, seed=0)
    )
    assert summary["clean_accuracy"] == pytest.approx(5 / 6) and summary["attacked"] == 5
    fooled = (model(result.adversarial).argmax(1) != labels[1:]) & result.success
    l2 = (result.adversarial - images[1:]).flatten(1).norm(dim=1)
    expected = [(5 - int((fooled & (l2 <= e + 1e-5)).sum())) / 6 for e in (0.0, 0.1, 100.0)]
    assert summary["robust_accuracy"] == pytest.approx(expected)
    assert summary["robust_accuracy"][0] == pytest.approx(5 / 6)


# ------------------------------------------------------------------------ the API end to end
@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("mymodels:lenet", (1, 28, 28)),
        ("mymodels:colour_cnn", (3, 32, 32)),
        ("mymodels:resnet", (3, 32, 32)),
    ],
)
def test_api_attack_units_and_figure5_on_each_user_model(
    in_fixtures: Path, tmp_path: Path, spec: str, shape: tuple[int, ...]
) -> None:
    from intriguing.analysis.activations import compute_activations
    from intriguing.attacks import LBFGS
    from intriguing.experiments.figure5 import run_figure5

    model = load_any_model(spec)
    torch.manual_seed(3)
    images = torch.rand(6, *shape)
    with torch.no_grad():
        labels = model(images).argmax(1)
    np.savez(tmp_path / "t.npz", images=images.numpy(), labels=labels.numpy())
    data = load_tensors(tmp_path / "t.npz")
    assert data.fit_to(model) == 10
    x, y, index, source = choose_examples(model, data, 3)
    assert index.tolist() == [0, 1, 2] and source == "labels"
    result = LBFGS(mode="untargeted", max_iter=50, seed=0)(model, x, y)
    with torch.no_grad():
        fooled = model(result.adversarial).argmax(1) != y
    assert bool(result.success.all()) and bool(fooled.all())
    delta = (result.adversarial - x).flatten(1)
    torch.testing.assert_close(
        result.distortion.double(),
        (delta.norm(dim=1) / delta.shape[1] ** 0.5).double(),
        rtol=1e-4,
        atol=1e-7,
    )
    layer = {"mymodels:lenet": "fc1", "mymodels:colour_cnn": "3", "mymodels:resnet": "block"}[spec]
    phi = compute_activations(model, layer, images)
    assert phi.shape[0] == 6 and np.isfinite(phi).all()
    doc = run_figure5(model, images[:2], ["a", "b"], tmp_path / "f5")
    assert doc["summary"]["n"] == 2 and (tmp_path / "f5" / "figure5.png").exists()


def test_probe_refuses_non_logits_and_nan_logits() -> None:
    nan_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        nan_model[1].weight.fill_(float("nan"))
    with pytest.raises(InvalidInputError, match="NaN or infinite logits"):
        check_model_input(nan_model, torch.rand(2, 1, 2, 2))
    with pytest.raises(InvalidInputError, match=r"must return logits \(N, classes\)"):
        check_model_input(torch.nn.Identity(), torch.rand(2, 1, 2, 2))


# ------------------------------------------------------------------------- file.py:factory
NET_FILE = """
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
"""


def test_a_model_file_named_like_a_stdlib_module_leaves_that_module_alone(tmp_path: Path) -> None:
    """``sub/random.py:net`` replaced ``random`` in sys.modules for the whole process, and a later
    ``import sympy`` crashed (found by a robustness probe)."""
    import json
    import random

    sub = tmp_path / "sub"
    sub.mkdir()
    before = dict(sys.modules)
    for name in ("random", "json", "random"):  # twice: a second load replaces nothing either
        (sub / f"{name}.py").write_text(NET_FILE)
        assert load_any_model(f"{sub}/{name}.py:net")(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sys.modules["random"] is random and sys.modules["json"] is json
    assert [k for k, v in before.items() if sys.modules.get(k) is not v] == []
    assert random.Random(0).random() == pytest.approx(0.8444218515250481)


def test_a_model_file_imports_its_siblings_absolutely_or_relatively(tmp_path: Path) -> None:
    (tmp_path / "zz_width.py").write_text("WIDTH = 7\n")
    (tmp_path / "zz_head.py").write_text(
        "from torch import nn\n\n\ndef head(width):\n    return nn.Linear(784, width)\n"
    )
    (tmp_path / "zz_net.py").write_text(
        "from torch import nn\n\nimport zz_width\n\nfrom . import zz_head\n\n\n"
        "def net():\n    return nn.Sequential(nn.Flatten(), zz_head.head(zz_width.WIDTH))\n"
    )
    model = load_any_model(f"{tmp_path}/zz_net.py:net")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert "zz_head" not in sys.modules  # the relative import stays private to the file


def test_a_failing_model_file_leaves_no_module_behind(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    before = set(sys.modules)
    with pytest.raises(InvalidInputError, match="importing it raised RuntimeError: boom"):
        load_any_model(f"{tmp_path}/broken.py:net")
    assert set(sys.modules) == before


# ------------------------------------------------------------------------------ model probe
class Squeezed(torch.nn.Module):
    """``net(x).squeeze()``: logits (N, 10) for N >= 2 but (10,) for one image."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze()


def test_probe_refuses_a_model_that_drops_the_batch_axis_for_one_image() -> None:
    """It passed the probe of 2 images, then crashed in the attack, curves or eval (a last chunk of
    one image) with an IndexError (found by a robustness probe)."""
    with pytest.raises(InvalidInputError, match=r"returned shape \(10,\) for a batch of 1") as info:
        check_model_input(Squeezed().eval(), torch.rand(3, 1, 2, 2))
    assert "(1, K)" in str(info.value)
    with pytest.raises(InvalidInputError, match=r"returned shape \(10,\) for a batch of 1"):
        check_model_input(Squeezed().eval(), torch.rand(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            [torch.nn.Conv1d(1, 4, 5), torch.nn.Flatten(), torch.nn.Linear(96, 10)],
            r"1-channel signals \(N, C, L\) \(first layer Conv1d\(1, \.\.\.\)\)",
        ),
        (
            [torch.nn.Conv3d(2, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)],
            r"2-channel volumes \(N, C, D, H, W\) \(first layer Conv3d\(2, \.\.\.\)\)",
        ),
        (
            [torch.nn.ConvTranspose2d(5, 1, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)],
            r"5-channel images \(N, C, H, W\) \(first layer ConvTranspose2d\(5, \.\.\.\)\)",
        ),
        (
            [torch.nn.Flatten(), torch.nn.Linear(96, 10)],
            r"96 inputs per image \(first layer Linear\(96, \.\.\.\)\)",
        ),
    ],
    ids=["conv1d", "conv3d", "conv-transpose", "linear"],
)
def test_the_input_error_names_the_first_layer_of_any_kind(
    layers: list[torch.nn.Module], expected: str
) -> None:
    """A Conv1d model was said to take 'first layer Linear(96, ...)' (found by a robustness probe)."""
    with pytest.raises(InvalidInputError, match=expected):
        check_model_input(torch.nn.Sequential(*layers).eval(), torch.rand(2, 1, 28, 28))


class LaterRegistered(torch.nn.Module):
    """The head is registered before the convolution that runs first."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(12, 10)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def test_the_first_layer_is_the_first_one_forward_runs() -> None:
    with pytest.raises(InvalidInputError, match=r"first layer Conv2d\(3, \.\.\.\)"):
        check_model_input(LaterRegistered().eval(), torch.rand(2, 1, 2, 2))


_FLAT_MODELS = """
import torch
from torch import nn


def mlp():  # feature vectors (N, 20) -> 3 classes
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 3))


def conv1d():  # signals (N, 2, 16) -> 3 classes
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(56, 3))
"""


@pytest.mark.parametrize(("factory", "shape"), [("mlp", (12, 20)), ("conv1d", (12, 2, 16))])
def test_feature_vectors_and_signals_are_data_too(
    tmp_path: Path, factory: str, shape: tuple[int, ...]
) -> None:
    """--tensors took only (N, C, H, W): a researcher's tabular features or 1-D signals were
    refused although the attack works on any (N, ...). Every success is re-verified here."""
    from click.testing import CliRunner

    from intriguing.attacks import AttackResult
    from intriguing.cli.main import cli

    (tmp_path / "flat.py").write_text(_FLAT_MODELS)
    np.savez(tmp_path / "d.npz", images=np.random.default_rng(0).random(shape, np.float32))
    spec = f"{tmp_path / 'flat.py'}:{factory}"
    data, out = str(tmp_path / "d.npz"), str(tmp_path / "adv.safetensors")
    args = ["attack", spec, "--tensors", data, "--n", "6", "--all-images", "--save", out]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = AttackResult.load(out)
    assert saved.adversarial.shape == (6, *shape[1:]) and bool(saved.success.all())
    model = load_any_model(spec)
    with torch.no_grad():
        assert bool((model(saved.adversarial).argmax(1) != saved.labels).all())
    normalized = CliRunner().invoke(cli, [*args[:-2], "--normalize", "0.5,0.2"])
    assert normalized.exit_code == 0, normalized.output


def test_tensor_files_read_only_images_and_labels(tmp_path: Path) -> None:
    """Other entries (class names, object metadata, a big-endian statistic) were read and refused
    the whole file; big-endian images and labels are read in the native byte order."""
    rng = np.random.default_rng(0)
    images = rng.random((4, 1, 5, 5), dtype=np.float32)
    labels = np.array([0, 2, 1, 2])
    np.savez(tmp_path / "extra.npz", images=images, labels=labels,
             class_names=np.array(["cat", "dog", "eel"]), meta=np.array({"a": 1}, dtype=object),
             stats=np.array([1.0, 2.0], dtype=">f8"))  # fmt: skip
    np.savez(tmp_path / "big.npz", images=images.astype(">f4"), labels=labels.astype(">i8"))
    for name in ("extra.npz", "big.npz"):
        data = load_tensors(tmp_path / name)
        assert torch.equal(data.images, torch.from_numpy(images))
        assert data.labels is not None and data.labels.tolist() == labels.tolist()
    save_file({"images": torch.from_numpy(images), "names": torch.arange(3)},
              str(tmp_path / "t.safetensors"))  # fmt: skip
    assert load_tensors(tmp_path / "t.safetensors").labels is None
    # labels that are not numbers: named in one line; left unread where labels are not used
    np.savez(tmp_path / "words.npz", images=images, labels=np.array(["a", "b", "c", "d"]))
    with pytest.raises(InvalidInputError, match=r"'labels' is of dtype <U1; store numbers"):
        load_tensors(tmp_path / "words.npz")
    assert load_tensors(tmp_path / "words.npz", labels=False).labels is None
    np.savez(tmp_path / "objects.npz", images=np.array([None] * 4, dtype=object))
    with pytest.raises(InvalidInputError, match=r"'images' is an object array; store numbers"):
        load_tensors(tmp_path / "objects.npz")
