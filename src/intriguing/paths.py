"""Where the tool keeps its files.

- Data: ``--data-dir`` / ``data_dir=``, else ``$INTRIGUING_DATA_DIR``, else ``<cache>/mnist``.
- Cache (downloaded data, trained checkpoints): ``$INTRIGUING_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/intriguing``, else ``~/.cache/intriguing``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "INTRIGUING_DATA_DIR"
CACHE_DIR_ENV = "INTRIGUING_CACHE_DIR"


def cache_dir() -> Path:
    """The root cache directory (not created here)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "intriguing"


def models_dir() -> Path:
    """Directory of the content-addressed checkpoint cache."""
    return cache_dir() / "models"


def data_cache_dir(dataset: str = "mnist") -> Path:
    """Directory where downloaded copies of ``dataset`` are kept."""
    return cache_dir() / dataset
