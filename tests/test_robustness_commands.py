"""Researchers' models and bad inputs for the commands other than ``attack`` and ``reproduce``:
``eval``, ``units``, ``spectral``, ``rarity``, ``recover``, ``curves``, ``advtrain`` and
``recurrent``. Each case either works with the right numbers or is one ``Error: ...`` line with
exit code 2 before any long work, never a traceback or an option silently ignored.

The models are tiny (one linear layer on 1x28x28 images) and written to a ``models.py`` the
commands load as ``<dir>/models.py:factory``, as a user's file would be.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from safetensors.torch import save_file

from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = """
import torch
from torch import nn


def _linear(classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, classes))


def plain():
    return _linear()


def f64():
    return _linear().double()


def bf16():
    return _linear().bfloat16()


def two():
    return _linear(2)


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _linear()

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


def softmaxed():
    return Softmaxed()
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``models.py`` file holding the factories above."""
    path = tmp_path_factory.mktemp("user") / "models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def spec(models: Path, factory: str) -> str:
    return f"{models}:{factory}"


def unlabelled(path: Path, n: int = 4) -> Path:
    """``n`` random 1x28x28 images without labels (the model's predictions are used)."""
    torch.manual_seed(3)
    np.savez(path, images=torch.rand(n, 1, 28, 28).numpy())
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    for word in words:
        assert word in result.output, result.output


# ------------------------------------------------------------------------------------- eval
def test_eval_checkpoint_with_tensors_evaluates_the_tensors(tmp_path: Path) -> None:
    """Before: --tensors/--weights/--normalize were silently ignored with --checkpoint (MNIST's
    train/test/P1/P2 errors were printed instead)."""
    from intriguing.models import build_model
    from intriguing.training.checkpoint import save_checkpoint

    model = build_model("softmax1").eval()
    checkpoint = tmp_path / "ck.safetensors"
    save_checkpoint(model, checkpoint, {"model": "softmax1", "config": {}})
    torch.manual_seed(4)
    images = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[:2] = (labels[:2] + 1) % 10  # two wrong labels: error 2/6
    tensors = tmp_path / "t.safetensors"
    save_file({"images": images, "labels": labels}, str(tensors))
    js = tmp_path / "e.json"
    result = run("eval", "--checkpoint", str(checkpoint), "--tensors", str(tensors),
                 "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["n"] == 6 and payload["tensors_error"] == pytest.approx(2 / 6)
    assert "train_error" not in payload
    one_line_error(
        run("eval", "Conv", "--checkpoint", str(checkpoint), "--tensors", str(tensors)),
        "holds 'softmax1'",
    )


# ------------------------------------------------------------------------------------ units
UNITS_FAST = ["--n-directions", "2", "--directions", "natural,random", "--n-null", "100",
              "--n-resamples", "99", "--alphas", "none", "--k", "2"]  # fmt: skip


@pytest.mark.parametrize("factory", ["f64", "bf16"])
def test_units_on_float64_and_bfloat16_models(models: Path, tmp_path: Path, factory: str) -> None:
    """Before: 'the model failed on images ...: mat1 and mat2 must have the same dtype'."""
    js = tmp_path / "u.json"
    result = run("units", spec(models, factory), "--layer", "1", "--tensors",
                 str(unlabelled(tmp_path / "x.npz")), *UNITS_FAST, "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(js.read_text())["dim"] == 10


def test_units_limit_applies_to_an_image_folder(models: Path, tmp_path: Path) -> None:
    """Before: --limit was ignored for --images (every file of the folder was used)."""
    folder = tmp_path / "grey"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"img{i}.png")
    js = tmp_path / "u.json"
    result = run("units", spec(models, "plain"), "--layer", "1", "--images", str(folder),
                 "--limit", "4", *UNITS_FAST, "--json", str(js))  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(js.read_text())
    assert payload["n_images"] == 4 and len(payload["image_set"]["files"]) == 4


@pytest.mark.parametrize(
    "option,value,shown", [("--n-null", "50", "100<=x"), ("--n-resamples", "20", "99<=x")]
)
def test_units_ranges_in_help_are_the_real_ones(option: str, value: str, shown: str) -> None:
    """Before: --help said 1<=x, then the run refused 50 null subsets / 20 permutations."""
    one_line_error(run("units", "softmax1", option, value), option, shown)
    assert shown in run("units", "--help").output


# --------------------------------------------------------------------------------- spectral
def test_spectral_huge_input_shape_is_refused(models: Path) -> None:
    """Before: a RuntimeError traceback (the 2 x 1 x 100000 x 100000 probe could not be allocated)."""
    result = run("spectral", spec(models, "plain"), "--input-shape", "1,100000,100000")
    one_line_error(result, "--input-shape", "too large")


@pytest.mark.parametrize(
    "factory,args,words",
    [
        ("two", ["--sandwich", "2"], ["label", "2 outputs"]),
        ("bf16", ["--sandwich", "2"], ["bfloat16"]),
        ("softmaxed", ["--sandwich", "2"], ["probabilities"]),
        ("plain", ["--sandwich", "20000"], ["--sandwich 20000", "10000 images"]),
    ],
)
def test_spectral_sandwich_is_checked_before_the_bounds(
    models: Path, mnist_dir: Path, factory: str, args: list[str], words: list[str]
) -> None:
    """Before: the bound table was computed and printed, then the attack failed (or 20000 images
    silently became 10000)."""
    result = run("spectral", spec(models, factory), "--input-shape", "1,28,28", "--exact-method",
                 "none", "--data-dir", str(mnist_dir), *args)  # fmt: skip
    one_line_error(result, *words)


# ------------------------------------------------------------------ rarity, recover, curves
CRITICS_FAST = ["--n", "1", "--max-iter", "5", "--search-steps", "1"]


def test_rarity_and_recover_on_a_float64_model(models: Path, tmp_path: Path) -> None:
    """Before: a traceback (float32 images into a float64 model) after the attack."""
    data = str(unlabelled(tmp_path / "x.npz"))
    rarity = run("rarity", spec(models, "f64"), "--tensors", data, *CRITICS_FAST,
                 "--samples", "4", "--rays", "2")  # fmt: skip
    assert rarity.exit_code == 0, rarity.output
    assert "random directions flip the label" in rarity.output
    recover = run("recover", spec(models, "f64"), "--tensors", data, *CRITICS_FAST,
                  "--bootstrap", "2", "--amplify", "none")  # fmt: skip
    assert recover.exit_code == 0, recover.output
    assert "recovered 1/1" in recover.output


def test_measure_rarity_takes_float32_images_for_a_float64_model() -> None:
    from intriguing.analysis.rarity import RarityConfig, measure_rarity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    x = torch.rand(1, 1, 2, 2)
    with torch.no_grad():
        label = model(x).argmax(1)
    adversarial = (x + 0.3).clamp(0, 1)
    config = RarityConfig(samples=8, scales=(1.0,), ray_directions=0)
    single = measure_rarity(model, x, adversarial, label, config)
    double = measure_rarity(model.double(), x, adversarial, label, config)
    assert double["pooled"] == single["pooled"]


def test_recover_infinite_amplify_is_refused_before_the_attack(
    models: Path, tmp_path: Path
) -> None:
    """Before: inf passed the CLI check; the attack ran, then the library refused it."""
    data = str(unlabelled(tmp_path / "x.npz"))
    result = run("recover", spec(models, "plain"), "--tensors", data, "--amplify", "inf")
    one_line_error(result, "--amplify", "finite")


@pytest.mark.parametrize(
    "command,args,flag",
    [
        ("rarity", ["--tensors", "x.npz"], "--tensors"),
        ("recover", ["--weights", "w.safetensors"], "--weights"),
        ("curves", ["--normalize", "0.1,0.3"], "--normalize"),
        ("curves", ["--device", "auto"], "--device"),
    ],
)
def test_critics_without_model_refuse_model_options(
    tmp_path: Path, command: str, args: list[str], flag: str
) -> None:
    """Before: without MODEL these were silently ignored and the zoo was attacked on MNIST."""
    result = run(command, "--models", "softmax1", "--out", str(tmp_path / "run"), *args)
    one_line_error(result, flag, "only with a MODEL argument")
    assert not (tmp_path / "run" / f"{command}.json").exists()


@pytest.mark.parametrize(
    "command,args,flag",
    [
        ("rarity", ["--workers", "2"], "--workers"),
        ("recover", ["--backend", "ray"], "--backend"),
        ("rarity", ["--address", "auto"], "--address"),
        ("curves", ["--eps", "1", "--points", "5"], "--points"),
        ("curves", ["--eps", "1", "--budget-max", "0.2"], "--budget-max"),
        ("curves", ["--eps", "1", "--attack-n", "9"], "--attack-n"),
    ],
)
def test_critics_with_model_refuse_the_zoo_runs_options(
    models: Path, tmp_path: Path, command: str, args: list[str], flag: str
) -> None:
    """Before: with MODEL the step graph's options (and curves' grid and --attack-n) were silently
    ignored; now one line before the model is loaded or anything attacked."""
    out = tmp_path / "run"
    result = run(command, spec(models, "plain"), "--n", "2", "--out", str(out), *args)
    one_line_error(result, flag, "only without a MODEL argument")
    assert not out.exists() or not any(out.iterdir())


def test_curves_without_model_refuses_norm(tmp_path: Path) -> None:
    """--norm applies to MODEL's robust accuracy only; without MODEL it was silently ignored."""
    result = run("curves", "--models", "softmax1", "--out", str(tmp_path / "run"), "--norm", "rms")
    one_line_error(result, "--norm", "only with a MODEL")


# ------------------------------------------------------------------------ advtrain, recurrent
def test_recurrent_models_naming_nothing_is_refused(tmp_path: Path) -> None:
    """Before: '--models ,' fell back to the default eight models (training LSTMs for minutes)."""
    one_line_error(
        run("recurrent", "--models", ",", "--out", str(tmp_path / "r")), "names no model"
    )


def test_advtrain_pools_that_never_start_are_refused(tmp_path: Path) -> None:
    """Before: --warmup-epochs >= --epochs trained the pool variants without any adversarial
    example and reported them as input-pool / hidden-pool."""
    result = run("advtrain", "--variants", "weight-decay,input-pool", "--warmup-epochs", "3",
                 "--epochs", "3", "--out", str(tmp_path / "a"))  # fmt: skip
    one_line_error(result, "input-pool", "--warmup-epochs")
    from intriguing.experiments.advtrain import AdvTrainRunConfig

    spec_ = AdvTrainRunConfig(variants=("weight-decay",))
    spec_.replace(train=spec_.train.replace(epochs=1))  # no pool variant: fine
    with pytest.raises(InvalidInputError, match="hidden-pool"):
        spec_.replace(variants=("hidden-pool",), train=spec_.train.replace(epochs=1))
    one_line_error(run("advtrain", "--mix", "0", "--out", str(tmp_path / "b")), "--mix", "0<x")


def test_too_few_correct_images_for_attack_n_names_attack_n(models: Path, tmp_path: Path) -> None:
    """It said 'lower n (--n) to at most K' with --n already below K."""
    import numpy as np
    from torch import nn

    data = tmp_path / "x.npz"
    images = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    torch.manual_seed(0)  # the factory's model (_linear)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(1).numpy()
    labels = predicted.copy()
    labels[2:] = (predicted[2:] + 1) % 10  # exactly two correctly classified
    np.savez(data, images=images, labels=labels)
    result = run("rarity", spec(models, "plain"), "--tensors", str(data), "--n", "1",
                 "--attack-n", "6", "--samples", "2", "--rays", "0")  # fmt: skip
    one_line_error(result, "lower --attack-n to at most 2")
    assert "--n)" not in result.output
