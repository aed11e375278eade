"""Matplotlib plumbing shared by the report's figure modules (Agg backend, atomic PNG writes).

Used by :mod:`intriguing.report.figures` (paper §4.2, Figure 7 and Tables 1-4) and
:mod:`intriguing.report.units_figures` (paper §3, Figures 1-4).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from intriguing._io import atomic_path


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` atomically as a PNG (110 dpi, tight bounding box) to ``path``, then close it.

    Returns the path written.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return target
