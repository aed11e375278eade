"""Which activations a layer name means (§3): aliases, layers called twice, outputs not batch-first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.analysis.activations import compute_activations, get_layer, layer_names
from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError


def images(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))


class Tied(nn.Module):
    """``dec`` is ``enc`` (tied weights), called twice: once as enc, once as dec."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(16, 16)
        self.dec = self.enc
        self.act = nn.ReLU()
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dec(self.act(self.enc(x.flatten(1)))))


class Alias(nn.Module):
    """``body`` is another name of ``features``, which forward calls once."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Sigmoid())
        self.body = self.features
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def test_an_alias_is_listed_and_resolves_to_its_module() -> None:
    """Before: 'dec' was missing from the names (named_modules drops repeats) and not found."""
    model = Tied()
    assert layer_names(model) == ["enc", "dec", "act", "out"]
    assert get_layer(model, "dec") is model.enc
    alias = Alias()
    assert get_layer(alias, "body.1") is alias.features[1]
    x = images(7)
    expected = torch.sigmoid(x.flatten(1) @ alias.features[1].weight.T + alias.features[1].bias)
    for name in ("features", "body"):
        phi = compute_activations(alias, name, x, batch_size=3)
        np.testing.assert_allclose(phi, expected.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize(("layer", "other"), [("enc", "dec"), ("dec", "enc")])
def test_a_layer_called_twice_is_refused_naming_it_and_the_calls(layer: str, other: str) -> None:
    """Before: 'enc' silently gave the first call's output, 'dec' was 'not found'."""
    with pytest.raises(InvalidInputError) as info:
        compute_activations(Tied(), layer, images(5), batch_size=5)
    message = str(info.value)
    assert "\n" not in message
    assert f"layer {layer!r}" in message and "called 2 times" in message
    assert f"also named {other!r}" in message
    assert "its own module" in message


class SharedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x.flatten(1)))))


def test_a_shared_activation_module_is_refused_and_others_still_work() -> None:
    model = SharedReLU()
    with pytest.raises(InvalidInputError, match=r"layer 'act' .*called 2 times"):
        compute_activations(model, "act", images(4))
    x = images(4)
    phi = compute_activations(model, "fc1", x)
    expected = x.flatten(1) @ model.fc1.weight.T + model.fc1.bias
    np.testing.assert_allclose(phi, expected.detach().numpy(), rtol=1e-6)


class Swap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


class BatchSecond(nn.Module):
    """``swap`` returns ``(features, batch)`` (like an RNN without batch_first)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, width)
        self.swap = Swap()
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.swap(self.fc(x.flatten(1))).transpose(0, 1))


@pytest.mark.parametrize(("n", "batch_size"), [(8, 8), (16, 8), (23, 5), (1, 1)])
def test_an_output_that_is_not_batch_first_is_refused(n: int, batch_size: int) -> None:
    """Before: with 8 images per batch and 8 features, the rows were silently the features.
    (8, 8) and (16, 8): every batch's output is (8, 8), so only a second, smaller batch shows it."""
    with pytest.raises(InvalidInputError) as info:
        compute_activations(BatchSecond(), "swap", images(n), batch_size=batch_size)
    message = str(info.value)
    assert "\n" not in message and "layer 'swap'" in message and "batch" in message
    assert "(8, " in message  # the shape it returned


class FlatAll(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1)


def test_an_output_without_batch_dimension_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), FlatAll())
    with pytest.raises(
        InvalidInputError, match=r"layer '2' returned shape \(12,\) for a batch of 6"
    ):
        compute_activations(model, "2", images(6), batch_size=6)


def test_a_batch_first_output_as_wide_as_the_batch_is_accepted() -> None:
    """8 images, 8 features: (8, 8) is ambiguous, and the check with a smaller batch clears it."""
    model = BatchSecond()
    x = images(8)
    phi = compute_activations(model, "fc", x, batch_size=8)
    expected = x.flatten(1) @ model.fc.weight.T + model.fc.bias
    np.testing.assert_allclose(phi, expected.detach().numpy(), rtol=1e-6)


UNIT_MODELS = """
import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(784, 32)
        self.dec = nn.Linear(32, 32)
        self.dec = self.dec
        self.mid = self.dec
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.dec(torch.relu(self.mid(self.enc(x.flatten(1))))))


def tied():
    return Tied()
"""


def test_the_cli_refuses_a_layer_called_twice_in_one_line(tmp_path: Path, mnist_dir: Path) -> None:
    path = tmp_path / "unit_models.py"
    path.write_text(UNIT_MODELS)
    args = [
        "units",
        f"{path}:tied",
        "--layer",
        "mid",
        "--limit",
        "20",
        "--data-dir",
        str(mnist_dir),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "called 2 times" in lines[0]
