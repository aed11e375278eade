"""Activations phi(x) of a named layer via forward hooks (§3), in memory or streamed to .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from intriguing.analysis.activations import (
    compute_activations,
    iter_activations,
    layer_names,
    load_activations,
)
from intriguing.errors import IntriguingError, InvalidInputError


class Exploding(nn.Module):
    """Fails if it is run: the hook must stop each batch's forward pass before it (the one full
    pass that counts the chosen layer's calls ends here, after the layer has run)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("layers above the chosen one must not run")


def small_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Sigmoid(), nn.Linear(5, 3), Exploding())


def images(n: int = 23) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_activations_equal_the_layer_output_computed_by_hand() -> None:
    model = small_mlp()
    x = images()
    phi = compute_activations(model, "2", x, batch_size=7)
    expected = torch.sigmoid(x.flatten(1) @ model[1].weight.T + model[1].bias)
    assert phi.shape == (23, 5) and phi.dtype == np.float32
    np.testing.assert_allclose(phi, expected.detach().numpy(), rtol=1e-6)


def test_wrong_layer_name_lists_the_available_ones() -> None:
    model = small_mlp()
    assert layer_names(model) == ["0", "1", "2", "3", "4"]
    with pytest.raises(
        InvalidInputError, match=r"layer 'fc9' not found.*available layers: 0, 1, 2"
    ):
        compute_activations(model, "fc9", images())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.full((2, 1, 4, 4), 1.5), r"must lie in \[0, 1\]"),
        (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
        (torch.zeros(2, 16), r"shape \(N, C, H, W\)"),
        (torch.zeros((2, 1, 4, 4), dtype=torch.int64), "floating point"),
    ],
)
def test_bad_images_are_rejected(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        compute_activations(small_mlp(), "2", bad)


def test_streaming_to_npy_is_atomic_and_memory_mapped(tmp_path: Path) -> None:
    model, x = small_mlp(), images()
    in_memory = compute_activations(model, "2", x)
    path = tmp_path / "phi" / "act.npy"
    stored = compute_activations(model, "2", x, batch_size=5, out_path=path, dtype="float16")
    assert isinstance(stored, np.memmap) and stored.dtype == np.float16 and stored.shape == (23, 5)
    np.testing.assert_allclose(stored, in_memory, atol=1e-3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["act.npy"]
    np.testing.assert_array_equal(load_activations(path), stored)


def test_load_activations_rejects_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    with pytest.raises(IntriguingError, match=r"not a valid \.npy"):
        load_activations(bad)
    with pytest.raises(IntriguingError, match="not found"):
        load_activations(tmp_path / "missing.npy")


def test_conv_maps_flatten_or_pool_per_channel() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))
    x = images(4)
    out = conv(x).detach()
    flat = compute_activations(conv, "0", x)
    pooled = compute_activations(conv, "0", x, reduce="max")
    mean = compute_activations(conv, "0", x, reduce="mean")
    assert flat.shape == (4, 3 * 4 * 4)
    np.testing.assert_allclose(pooled, out.amax(dim=(2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(mean, out.mean(dim=(2, 3)).numpy(), rtol=1e-5)


def test_model_mode_is_restored_and_dropout_is_off() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9))
    model.train()
    x = images(6)
    phi = np.concatenate([b.numpy() for b in iter_activations(model, "1", x)])
    np.testing.assert_allclose(phi, x.flatten(1).numpy())
    assert model.training


def test_layer_outside_the_forward_pass_is_reported() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Flatten()
            self.unused = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(InvalidInputError, match="never called"):
        compute_activations(Skips(), "unused", images(3))


def test_a_model_that_cannot_take_the_images_is_a_one_line_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(InvalidInputError, match=r"model failed on images of shape \(1, 4, 4\)"):
        compute_activations(model, "1", images(3))


@pytest.mark.parametrize("streamed", [False, True])
def test_float16_overflow_is_refused_not_stored_as_inf(tmp_path: Path, streamed: bool) -> None:
    """Activations of 1e5 are finite in float32 but inf in float16: before, the streamed .npy
    silently held inf (the check ran before the cast); now both paths refuse, naming --float16."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.fill_(0.0)
        model[1].bias.fill_(1e5)
    path = tmp_path / "act.npy" if streamed else None
    with pytest.raises(InvalidInputError, match="float16"):
        compute_activations(model, "1", torch.rand(4, 1, 4, 4), out_path=path, dtype="float16")
    assert float(compute_activations(model, "1", torch.rand(4, 1, 4, 4)).max()) == 1e5
    if streamed:
        assert not path.exists()  # type: ignore[union-attr]


def test_numpy_images_and_torchscript_models_are_one_line_errors() -> None:
    """A numpy array ended in ``AttributeError: ... no attribute 'batch'``, a scripted model in
    torch's ``register_forward_hook is not supported on ScriptModules``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Sigmoid()).eval()
    with pytest.raises(InvalidInputError, match=r"got ndarray; e\.g\. torch\.from_numpy"):
        compute_activations(model, "2", images().numpy())  # type: ignore[arg-type]
    scripted = torch.jit.script(model)
    for call in (
        lambda: compute_activations(scripted, "2", images()),
        lambda: next(iter_activations(scripted, "2", images())),
    ):
        with pytest.raises(InvalidInputError, match="TorchScript module, whose layers take no"):
            call()


class _DictLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": x.flatten(1)}


def test_a_pooling_reduce_on_a_layer_without_positions_is_refused() -> None:
    """``reduce="max"`` on a ``(B, D)`` layer was accepted, recorded and did nothing."""
    model = small_mlp()
    with pytest.raises(InvalidInputError, match=r"layer '2' returns \(5,\) values per image"):
        compute_activations(model, "2", images(), reduce="max")


def test_a_layer_returning_a_dict_is_named_with_what_to_do() -> None:
    model = nn.Sequential(_DictLayer()).eval()
    with pytest.raises(InvalidInputError, match="layer '0' returned a dict, not a tensor; choose"):
        compute_activations(model, "0", images())
