"""Figures of the reproduce report (paper §4.2), drawn with matplotlib (Agg) from stored results only.

- :func:`plot_figure7`: Figure 7: originals beside their adversarial examples for two models (odd
  columns original, even columns adversarial, as the paper) and originals beside stddev-1 noise;
- :func:`plot_distortions`: Tables 1 and 3: our mean minimum distortion beside the paper's;
- :func:`plot_transfer`: a transfer table (2 or 4) as two heat maps, ours and the paper's.

Every PNG is written atomically; each function returns the path written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from intriguing.report.plotting import save_figure as _save


def _interleave(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``(k,1,28,28)`` pairs -> one strip ``(28, 2k*30)``: a0 b0 a1 b1 ... with 2-pixel gaps."""
    tiles = []
    for x, y in zip(a, b, strict=True):
        for img in (x, y):
            tiles.append(np.pad(img[0].numpy(), ((0, 0), (1, 1)), constant_values=1.0))
    if not tiles:
        return np.ones((28, 30))
    return np.concatenate(tiles, axis=1)


def plot_figure7(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: str | os.PathLike[str]
) -> Path:
    """Figure 7 from the stored images (see :func:`intriguing.experiments.steps.figure7_step`).

    Args:
        tensors: ``<model>.original`` / ``<model>.adversarial`` and ``noise.original`` /
            ``noise.noisy``, each ``(k, 1, 28, 28)`` in [0, 1] (unclipped noise is shown saturated).
        meta: the figure7 step result (``shown``, ``noise``).
        path: PNG to write.
    """
    models = list(meta["shown"])
    rows = [(m, tensors[f"{m}.original"], tensors[f"{m}.adversarial"]) for m in models]
    rows.append(("noise", tensors["noise.original"], tensors["noise.noisy"]))
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.3 * len(rows)), squeeze=False)
    for ax, (name, orig, other) in zip(axes[:, 0], rows, strict=True):
        ax.imshow(
            _interleave(orig, other), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if name == "noise":
            noise = meta["noise"]
            acc = ", ".join(f"{m} {100 * a:.0f}%" for m, a in noise["accuracy"].items())
            kind = " (unclipped, shown saturated)" if noise.get("clipped") is False else ""
            ax.set_title(
                f"original | Gaussian noise stddev {noise['stddev']:g}{kind}: accuracy {acc}",
                fontsize=9,
            )
        else:
            shown = meta["shown"][name]
            dist = shown["distortion"]
            mean = f"{np.mean(dist):.3f}" if dist else "-"
            hits = [p == y for p, y in zip(shown["predicted"], shown["labels"], strict=True)]
            acc = f"{100 * np.mean(hits):.0f}% of {len(hits)}" if hits else "-"
            ax.set_title(
                f"original | adversarial for {name} (accuracy {acc}, mean distortion {mean})",
                fontsize=9,
            )
    fig.tight_layout()
    return _save(fig, path)


def plot_distortions(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Bars per model: our untargeted minimum, our targeted (random class) where run, the paper's."""
    names = [r["model"] for r in rows]
    series = [
        ("ours: untargeted minimum", [r["mean_distortion"] or 0.0 for r in rows]),
        ("ours: targeted, random class", [r.get("targeted_mean_distortion") or 0.0 for r in rows]),
        ("paper", [r["paper"].get("distortion") or 0.0 for r in rows]),
    ]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names)), 3.0))
    for k, (label, values) in enumerate(series):
        ax.bar(
            x + (k - 1) * 0.27, values, 0.27, label=label, alpha=0.75 if label == "paper" else 1.0
        )
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylabel("mean distortion (RMS per pixel)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(table: Mapping[str, Any], path: str | os.PathLike[str], title: str) -> Path:
    """Heat maps of a transfer table's errors: ours (left) and the paper's (right, blank if none)."""
    cols = table["columns"]
    labels = [r["label"] for r in table["rows"]]
    ours = np.array([[r["errors"][c] for c in cols] for r in table["rows"]], dtype=float)
    paper = np.array(
        [[(r["paper"] or {}).get(c, np.nan) for c in cols] for r in table["rows"]], dtype=float
    )
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.4 * len(cols), 0.45 * len(labels) + 1.5))
    for ax, values, name in zip(axes, (ours, paper), ("ours", "paper"), strict=True):
        ax.imshow(values, cmap="Reds", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(cols)), cols, rotation=30, fontsize=7)
        ax.set_yticks(range(len(labels)), labels if name == "ours" else [], fontsize=7)
        ax.set_title(f"{title}: {name}", fontsize=9)
        for i, j in np.ndindex(values.shape):
            if not np.isnan(values[i, j]):
                color = "white" if values[i, j] > 0.6 else "black"
                ax.text(
                    j,
                    i,
                    f"{100 * values[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color=color,
                )
    fig.tight_layout()
    return _save(fig, path)


def _display(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """``(C, H, W)`` in [0, 1] -> an imshow array and colour map (gray for one channel)."""
    array = image.detach().cpu().numpy()
    if array.shape[0] == 1:
        return array[0], "gray"
    return np.moveaxis(array, 0, -1), None


def plot_figure5(
    originals: torch.Tensor,
    differences: torch.Tensor,
    adversarials: torch.Tensor,
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> Path:
    """Figure 5: one row per image: original, magnified difference, adversarial.

    Args:
        originals, differences, adversarials: ``(N, C, H, W)`` in [0, 1] (C = 1 or 3).
        rows: per image ``name``, ``label`` (prediction on the original), ``predicted``, ``distortion``.
        path: PNG to write.
    """
    n = len(rows)
    fig, axes = plt.subplots(n, 3, figsize=(6.0, 2.0 * n), squeeze=False)
    titles = ("original", "difference x10 (+0.5)", "adversarial")
    for i, row in enumerate(rows):
        for j, images in enumerate((originals, differences, adversarials)):
            array, cmap = _display(images[i])
            ax = axes[i, j]
            ax.imshow(array, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(f"{row['name']}: class {row['label']}", fontsize=8)
            elif j == 2:
                ax.set_title(
                    f"class {row['predicted']}, distortion {row['distortion']:.4f}", fontsize=8
                )
            else:
                ax.set_title(titles[1], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
