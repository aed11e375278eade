"""Shared test set-up: real MNIST from ../shared, a private cache, and the ``slow`` marker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(1)  # small models: more threads only add synchronisation overhead
    os.environ.setdefault("INTRIGUING_NO_PROGRESS", "1")
    if SHARED_MNIST.is_dir():
        os.environ.setdefault("INTRIGUING_DATA_DIR", str(SHARED_MNIST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("INTRIGUING_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(
        reason="slow experiment: set INTRIGUING_RUN_SLOW=1 (see benchmarks/)"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files; tests that need them are skipped where they are absent."""
    path = Path(os.environ.get("INTRIGUING_DATA_DIR", SHARED_MNIST))
    if (
        not (path / "train-images-idx3-ubyte.gz").exists()
        and not (path / "train-images-idx3-ubyte").exists()
    ):
        pytest.skip(f"real MNIST not found in {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test run's checkpoints and downloads out of the user's cache."""
    path = tmp_path_factory.mktemp("intriguing-cache")
    os.environ["INTRIGUING_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module, restored after: the attack's many small tensor ops run faster
    on one thread on a shared 2-core machine (``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BackwardCounter(nn.Module):
    """``model`` in eval mode, counting the backward passes through its output and their rows;
    ``calls`` holds ``[rows, backward passes]`` per forward with gradients (the class estimate
    makes several backward passes per forward, the search one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.passes, self.rows = model, 0, 0
        self.calls: list[list[int]] = []
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if z.requires_grad:
            call = [x.shape[0], 0]
            self.calls.append(call)

            def count(grad: torch.Tensor) -> None:
                self.passes += 1
                self.rows += grad.shape[0]
                call[1] += 1

            z.register_hook(count)
        return z

    def search_rows(self) -> list[int]:
        """Rows of the forwards with one backward pass each (the c-search's evaluations)."""
        return [rows for rows, passes in self.calls if passes == 1]


@pytest.fixture
def backward_counter() -> type[BackwardCounter]:
    """:class:`BackwardCounter`: wrap a model to count the backward passes an attack makes."""
    return BackwardCounter


FitOnMnist = Callable[
    [Callable[[], nn.Module], int, int], tuple[nn.Module, torch.Tensor, torch.Tensor]
]


@pytest.fixture(scope="session")
def fit_on_mnist(mnist_dir: Path) -> FitOnMnist:
    """``fit(build, n_train, epochs)``: seed 0, ``build()`` the model, then Adam (lr 3e-3, batches
    of 100) on the first ``n_train`` real MNIST training images; returns the model in eval mode and
    the first 200 test images and labels, for the caller to keep the correctly classified ones."""
    from intriguing.data import load_mnist

    data = load_mnist(mnist_dir)

    def fit(
        build: Callable[[], nn.Module], n_train: int, epochs: int
    ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = build()
        images, labels = data.train_images[:n_train], data.train_labels[:n_train]
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(epochs):
            for batch in torch.randperm(n_train).split(100):
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
                optimiser.step()
        return model.eval(), data.test_images[:200], data.test_labels[:200]

    return fit
