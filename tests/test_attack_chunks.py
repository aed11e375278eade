"""Model calls in cache-sized chunks (issue 18; docs/attack.md, "Model calls in cache-sized chunks").

The 1-image probe of :func:`check_input_gradient` measures the bytes autograd saves per image; on a
CPU the attack's forward+backward calls carry at most :data:`CPU_SAVED_BYTES` of them. Expected
byte counts are worked out by hand from what each layer saves for its backward pass.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.attacks.base import CPU_SAVED_BYTES, rows_per_call
from intriguing.attacks.checks import check_input_gradient

pytestmark = pytest.mark.usefixtures("one_thread")


def test_saved_bytes_per_image_by_hand() -> None:
    # Linear saves its input (4 floats; its weight is a parameter), ReLU its output (3 floats)
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    assert check_input_gradient(mlp, torch.rand(5, 4)) == (4 + 3) * 4
    # conv saves its input (1x16x16), ReLU its output (8x16x16), which Linear saves again through
    # a Flatten view: one storage, counted once
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)
    ).eval()
    assert check_input_gradient(cnn, torch.rand(5, 1, 16, 16)) == (16 * 16 + 8 * 16 * 16) * 4
    # float64: twice the bytes
    assert check_input_gradient(mlp.double(), torch.rand(5, 4, dtype=torch.float64)) == 56


def test_rows_per_call() -> None:
    cpu = torch.device("cpu")
    assert rows_per_call(CPU_SAVED_BYTES // 40, cpu, 512) == 40
    assert rows_per_call(100, cpu, 512) == 512  # small models: the whole pool in one call
    assert rows_per_call(0, cpu, 512) == 512
    assert rows_per_call(10 * CPU_SAVED_BYTES, cpu, 512) == 1  # never 0
    assert rows_per_call(CPU_SAVED_BYTES, torch.device("meta"), 512) == 512  # not a CPU: unsplit


class RowCounter(nn.Module):
    """``model`` recording the rows of every call with gradients enabled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, []  # type: list[int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.rows.append(x.shape[0])
        return self.model(x)


def test_large_activations_are_attacked_in_chunks_with_the_same_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)
    ).eval()
    x = torch.rand(30, 1, 16, 16)
    y = net(x).argmax(1)
    saved = (16 * 16 + 8 * 16 * 16) * 4
    monkeypatch.setattr("intriguing.attacks.base.CPU_SAVED_BYTES", 7 * saved)
    counter = RowCounter(net).eval()
    chunked = LBFGS(progress=False)(counter, x, y)
    assert max(counter.rows) == 7 and len(counter.rows) > 10  # every call carried <= 7 images
    monkeypatch.setattr("intriguing.attacks.base.CPU_SAVED_BYTES", 10**12)
    counter.rows.clear()
    whole = LBFGS(progress=False)(counter, x, y)
    assert max(counter.rows) > 7
    assert bool(chunked.success.all()) and bool(whole.success.all())
    # the same attack: rows are computed independently, up to float summation order
    assert torch.allclose(chunked.distortion, whole.distortion, rtol=1e-3, atol=1e-6)
