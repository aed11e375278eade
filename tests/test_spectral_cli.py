"""``intriguing spectral``: table, JSON, sandwich, and one-line exit-2 errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.cli import spectral_cmd
from intriguing.cli.main import cli
from intriguing.errors import UnknownModelError


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 13 * 13, 10)
    ).eval()


@pytest.fixture
def fake_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve a small random model for the name 'tiny'; other names are unknown, as in the zoo."""

    def load(
        name: str, dataset: str, data_dir: Path | None, seed: int
    ) -> tuple[Any, Any, tuple[int, ...]]:
        if name != "tiny":
            raise UnknownModelError(f"unknown model {name!r}; see 'intriguing zoo'")
        return tiny_model(), None, (1, 28, 28)

    monkeypatch.setattr(spectral_cmd, "load_named_model", load)


def test_table_and_json(fake_zoo: None, tmp_path: Path) -> None:
    out = tmp_path / "bounds.json"
    result = CliRunner().invoke(cli, ["spectral", "tiny", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "1x3x3x2" in result.output and "product" in result.output
    data = json.loads(out.read_text())
    layers = data["bound"]["layers"]
    assert [layer["kind"] for layer in layers] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    product = 1.0
    for layer in layers:
        product *= layer["upper"]
    assert data["bound"]["lipschitz_upper"] == pytest.approx(product)
    assert layers[0]["stride"] == "2"


def test_exact_norms_not_computed_are_not_shown_as_a_value(fake_zoo: None) -> None:
    """With --exact-method none the caption's 'with exact norms' printed the certified bound."""
    result = CliRunner().invoke(cli, ["spectral", "tiny", "--exact-method", "none"])
    assert result.exit_code == 0, result.output
    assert "with exact norms = not computed" in " ".join(result.output.split())


def test_sandwich_option(fake_zoo: None, tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "s.json"
    result = CliRunner().invoke(
        cli,
        ["spectral", "tiny", "--sandwich", "5", "--data-dir", str(mnist_dir), "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    sandwich = json.loads(out.read_text())["sandwich"]
    assert sandwich["summary"]["examples"] == 5 and len(sandwich["examples"]) == 5
    assert sandwich["summary"]["violations"] == 0


def test_sandwich_runs_on_the_device_it_is_given(
    fake_zoo: None, tmp_path: Path, mnist_dir: Path
) -> None:
    """--device auto: the bound on the CPU, the sandwich's attack wherever auto resolves."""
    out = tmp_path / "s.json"
    args = ["spectral", "tiny", "--sandwich", "3", "--device", "auto"]
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(mnist_dir), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["sandwich"]["summary"]["violations"] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_without_cuda_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["spectral", "softmax1", "--device", "cuda"])
    assert result.exit_code == 2
    assert "CUDA is not available" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["spectral", "nosuch"], "unknown model"),
        (["spectral", "tiny", "--sandwich", "-1"], "--sandwich"),
        (["spectral", "tiny", "--tol", "0"], "--tol"),
        (["spectral", "tiny", "--dataset", "cifar"], "--dataset"),
        (["spectral", "alexnet", "--sandwich", "3"], "MNIST zoo only"),
        (["spectral", "tiny", "--device", "tpu"], "--device"),
        (["spectral", "softmax1", "--weights", "w.pt"], "pickles"),
    ],
)
def test_user_mistakes_exit_2(fake_zoo: None, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_alexnet_is_skipped_with_a_message_without_torchvision() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    result = CliRunner().invoke(cli, ["spectral", "alexnet"])
    assert result.exit_code == 2
    assert "AlexNet skipped" in result.output and "\n" not in result.output.strip()


def test_real_zoo_name_is_resolved() -> None:
    """An unknown zoo name reaches the real registry and is a one-line exit-2 error."""
    result = CliRunner().invoke(cli, ["spectral", "N100-100-11"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "Traceback" not in result.output


VECTOR_MODELS = """
import torch
from torch import nn


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3))
"""


@pytest.fixture
def vector_model(tmp_path: Path) -> str:
    """A user's MLP on 12-vectors (no image axes), as ``file.py:factory``."""
    path = tmp_path / "vector_models.py"
    path.write_text(VECTOR_MODELS)
    return f"{path}:mlp"


def test_a_model_on_vectors_is_bounded_from_a_one_size_input_shape(
    vector_model: str, tmp_path: Path
) -> None:
    """Before: --input-shape took exactly C,H,W, so an MLP on vectors could not be bounded from the
    CLI. The bound is the product of the weights' spectral norms (explicit SVDs) and ReLU's 1."""
    out = tmp_path / "mlp.json"
    result = CliRunner().invoke(
        cli, ["spectral", vector_model, "--input-shape", "12", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    namespace: dict[str, Any] = {}
    exec(VECTOR_MODELS, namespace)  # the same factory, built here
    model = namespace["mlp"]()
    expected = 1.0
    for layer in (model[0], model[2]):
        expected *= float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    assert json.loads(out.read_text())["bound"]["lipschitz_upper"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-shape", "1,2,3,4"], "1 to 3 positive sizes"),
        (["--input-shape", "12", "--normalize", "0.1,0.3"], "--normalize is per image channel"),
        (["--input-shape", "12", "--sandwich", "2"], "--sandwich attacks MNIST"),
    ],
)
def test_vector_input_shape_mistakes_exit_2(
    vector_model: str, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["spectral", vector_model, *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
