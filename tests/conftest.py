"""Shared test set-up: real MNIST from ../shared, a private cache, and the ``slow`` marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
