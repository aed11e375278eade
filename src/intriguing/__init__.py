"""intriguing: reproduce, measure and extend Szegedy et al., "Intriguing properties of neural networks".

The public API is small and loaded lazily (importing the package does not import torch):

- :func:`load_mnist` - MNIST (or the offline 5k subset) as tensors in [0, 1].
- :func:`load_model` - a trained model from the paper's zoo, cached on disk.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_mnist": "intriguing.data",
    "load_model": "intriguing.training",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'intriguing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
