"""Figures of the unit analysis (paper §3, Figures 1-4), rendered with matplotlib (Agg backend).

- :func:`plot_topk_grid`: rows of top-k images per direction, one panel per family side by side
  (natural basis beside random directions, as in the paper's Figures 1 and 2 / 3 and 4), each row
  captioned with its direction id, the top-k labels and the purity;
- :func:`plot_rotation_curve`: coherence of the rotated units ``Q^alpha e_i`` against ``alpha``,
  with the random-subset null's mean and 95th percentile;
- :func:`plot_metric_distributions`: each family's per-direction metric values beside the null.

All PNGs are written atomically (:func:`intriguing._io.atomic_path`). The rows shown are the first
``n_rows`` directions of each family in their stored order (a seeded unit sample / the first random
draws), not hand-picked ones -- the paper does not say how it chose its rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from intriguing.errors import InvalidInputError
from intriguing.report.plotting import save_figure as _save

METRIC_LABELS: dict[str, str] = {
    "purity": "top-k label purity",
    "entropy": "top-k label entropy (bits)",
    "pixel_cosine": "top-k mean pairwise pixel cosine",
}


def _finish(fig: Any, title: str, path: str | os.PathLike[str]) -> Path:
    """Give the matplotlib ``fig`` its suptitle (when ``title``), lay it out, save it as ``path``."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _to_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``(C, H, W)`` or ``(H, W)`` in [0, 1] -> an array imshow understands and its colour map."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 2:
        return img, "gray"
    if img.ndim == 3 and img.shape[0] in (3, 4):
        return np.clip(np.moveaxis(img, 0, -1), 0.0, 1.0), None
    raise InvalidInputError(f"cannot display an image of shape {image.shape}")


def _strip(images: Any, indices: np.ndarray, gap: int = 2) -> tuple[np.ndarray, str | None]:
    """The images ``indices`` side by side (``gap`` white columns between): one array to imshow."""
    tiles = [_to_display(images[int(i)]) for i in indices]
    cmap = tiles[0][1]
    first = tiles[0][0]
    pad_shape = (first.shape[0], gap, *first.shape[2:])
    parts: list[np.ndarray] = []
    for j, (tile, _) in enumerate(tiles):
        if j:
            parts.append(np.ones(pad_shape, dtype=np.float32))
        parts.append(tile)
    return np.concatenate(parts, axis=1), cmap


def plot_topk_grid(
    images: Any,
    panels: dict[str, dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    n_rows: int = 4,
    title: str = "",
) -> Path:
    """Rows of top-k images per direction, one column per family (the paper's Figures 1-4).

    Args:
        images: indexable image set, ``images[i]`` of shape ``(C, H, W)`` or ``(H, W)`` in ``[0, 1]``.
        panels: family name -> ``{"ids": [...], "topk": (n, k) indices, "purity": (n,) or None}``.
        path: PNG to write.
        labels: ``(N,)`` labels, printed in each row's caption, or None.
        n_rows: directions shown per family (the first ``n_rows``).
        title: figure title.
    """
    if not panels:
        raise InvalidInputError("nothing to plot: no direction family given")
    k = int(np.asarray(next(iter(panels.values()))["topk"]).shape[1])
    rows = min(n_rows, *(len(p["ids"]) for p in panels.values()))
    fig, axes = plt.subplots(
        rows, len(panels), figsize=(0.8 * k * len(panels) + 0.4, 1.15 * rows + 0.5), squeeze=False
    )
    for col, (name, panel) in enumerate(panels.items()):
        topk = np.asarray(panel["topk"])
        purity = panel.get("purity")
        for r in range(rows):
            ax = axes[r, col]
            strip, cmap = _strip(images, topk[r])
            ax.imshow(strip, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            caption = f"{name}: {panel['ids'][r]}"
            if purity is not None:
                caption += f", purity {float(purity[r]):.2f}"
            if labels is not None:
                caption += "\nlabels " + " ".join(str(int(labels[i])) for i in topk[r])
            ax.set_title(caption, fontsize=7, loc="left")
    return _finish(fig, title, path)


def plot_rotation_curve(
    curve: dict[str, Any],
    null: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Coherence vs rotation power ``alpha`` (0: natural basis, 1: Haar-random basis).

    Args:
        curve: the ``rotation_curve`` part of the units JSON (alphas; per metric mean/lo/hi;
            ``mean_abs_cos_to_unit``).
        null: the ``null`` part of the units JSON (per metric ``mean`` and ``threshold_p95``).
        path: PNG to write.
    """
    metrics = [m for m in METRIC_LABELS if m in curve]
    if not metrics:
        raise InvalidInputError("the rotation curve has no metric to plot")
    alphas = np.asarray(curve["alphas"], dtype=float)
    fig, axes = plt.subplots(
        1, len(metrics) + 1, figsize=(3.6 * (len(metrics) + 1), 3.2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=False):
        values = curve[metric]
        ax.plot(alphas, values["mean"], "o-", color="C0", label="rotated units $Q^\\alpha e_i$")
        ax.fill_between(
            alphas, values["lo"], values["hi"], color="C0", alpha=0.2, label="95% CI of mean"
        )
        if metric in null:
            ax.axhline(
                null[metric]["mean"],
                color="gray",
                ls="--",
                lw=1,
                label="null mean (random k-subset)",
            )
            ax.axhline(
                null[metric]["threshold_p95"], color="gray", ls=":", lw=1, label="null 95th pct."
            )
        ax.set_xlabel("rotation power $\\alpha$")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="best")
    ax = axes[0][-1]
    ax.plot(alphas, curve["mean_abs_cos_to_unit"], "s-", color="C3")
    ax.set_xlabel("rotation power $\\alpha$")
    ax.set_ylabel("mean $|\\langle Q^\\alpha e_i, e_i \\rangle|$")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    return _finish(fig, title, path)


def plot_metric_distributions(
    family_values: dict[str, dict[str, Sequence[float]]],
    null: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Per-family distributions of each metric (box plot + points) beside the null's.

    Args:
        family_values: family -> metric -> per-direction values (directions that are not dead).
        null: the ``null`` part of the units JSON: per metric its quantile summary, drawn as the
            first box ("null", whiskers at the 5th/95th percentiles), and its coherent-side 95th
            percentile, drawn as a dotted line.
        path: PNG to write.
    """
    metrics = [m for m in METRIC_LABELS if m in null]
    if not metrics or not family_values:
        raise InvalidInputError("nothing to plot: no metric or no family")
    names = ["null", *family_values]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics, strict=False):
        s = null[metric]
        null_box = {
            "med": s["median"],
            "q1": s["q25"],
            "q3": s["q75"],
            "whislo": s["q05"],
            "whishi": s["q95"],
            "fliers": [],
            "label": "null",
        }
        data = [np.asarray(family_values[f].get(metric, []), dtype=float) for f in family_values]
        ax.bxp([null_box], positions=[1], widths=0.6, showfliers=False)
        ax.boxplot(data, positions=range(2, len(names) + 1), showfliers=False, widths=0.6)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, fontsize=7)
        for i, values in enumerate(data, start=2):
            jitter = rng.uniform(-0.18, 0.18, size=values.size)
            ax.plot(i + jitter, values, ".", ms=2.5, alpha=0.6, color="C0")
        ax.axhline(
            s["threshold_p95"], color="gray", ls=":", lw=1, label="null 95th pct. (coherent side)"
        )
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=6, loc="best")
    return _finish(fig, title, path)


def render_units_figures(
    results: dict[str, Any],
    images: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
    stem: str = "units",
    n_rows: int = 4,
    grid_families: Sequence[str] = ("natural", "random"),
) -> dict[str, str]:
    """All unit-analysis figures from a stored units JSON (schema ``intriguing.units/1``).

    Writes ``<stem>-topk.png`` (the grid families side by side; ``<stem>-topk-all.png`` with every
    family), ``<stem>-rotation.png`` (if the JSON has a rotation curve) and
    ``<stem>-distributions.png``. Returns figure kind -> path.
    """
    out = Path(out_dir)
    families = results["families"]
    metrics = results["metrics"]
    panels = {name: _panel(families[name]) for name in grid_families if name in families}
    panels = {name: panel for name, panel in panels.items() if panel["ids"]}
    dead = sum(int(f.get("n_dead", 0)) for f in families.values())
    caption = (
        f"{results.get('model', 'model')} / layer {results.get('layer', '?')}, "
        f"k = {results['config']['k']}" + (f" ({dead} dead directions left out)" if dead else "")
    )
    paths: dict[str, str] = {}
    if panels:
        paths["topk"] = str(
            plot_topk_grid(
                images,
                panels,
                out / f"{stem}-topk.png",
                labels=labels,
                n_rows=n_rows,
                title=caption,
            )
        )
    if len(families) > len(panels):
        everything = {name: _panel(f) for name, f in families.items() if _panel(f)["ids"]}
        paths["topk_all"] = str(
            plot_topk_grid(
                images,
                everything,
                out / f"{stem}-topk-all.png",
                labels=labels,
                n_rows=n_rows,
                title=caption,
            )
        )
    if results.get("rotation_curve"):
        paths["rotation"] = str(
            plot_rotation_curve(
                results["rotation_curve"],
                results["null"],
                out / f"{stem}-rotation.png",
                title=caption,
            )
        )
    values: dict[str, dict[str, Sequence[float]]] = {
        name: {m: [d[m] for d in f["directions"] if not d["dead"]] for m in metrics}
        for name, f in families.items()
    }
    paths["distributions"] = str(
        plot_metric_distributions(
            values, results["null"], out / f"{stem}-distributions.png", title=caption
        )
    )
    return paths


def _panel(family: dict[str, Any]) -> dict[str, Any]:
    """A top-k grid panel of the family's live directions (dead ones, constant over the images,
    have no top-k of their own and are left out; the family's ``n_dead`` counts them)."""
    rows = [d for d in family["directions"] if not d.get("dead")]
    return {
        "ids": [d["id"] for d in rows],
        "topk": np.asarray([d["top_k"] for d in rows], dtype=np.int64),
        "purity": [d["purity"] for d in rows] if rows and "purity" in rows[0] else None,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _comparison(results: dict[str, Any], a: str, b: str, metric: str) -> dict[str, Any] | None:
    for c in results["comparisons"]:
        if c["a"] == a and c["b"] == b and c["metric"] == metric:
            return dict(c)
    return None


RELATIONS = {
    ("more", "fails"): "significantly more coherent than",
    ("less", "holds"): "significantly less coherent than",
    ("equally", "holds"): "statistically indistinguishable from",
    ("equally", "inconclusive"): (
        "not significantly different from, though by an effect favouring them too large to call "
        "them equal,"
    ),
    ("untested", "inconclusive"): (
        "too few to be compared (at these sizes the exact test's p cannot fall below 0.05) with"
    ),
}


def units_verdict(results: dict[str, Any]) -> str:
    """One sentence on the paper's §3 claim from a stored units JSON (purity if labelled), by the
    rule of :func:`intriguing.analysis.stats.units_direction` (docs/claims.md)."""
    from intriguing.analysis.stats import units_direction

    metric = "purity" if "purity" in results["metrics"] else "pixel_cosine"
    families = results["families"]
    if "natural" not in families or "random" not in families:
        return "no verdict: the run lacks the natural or the random family"
    nat = families["natural"]["summary"][metric]
    rnd = families["random"]["summary"][metric]
    null_mean = results["null"][metric]["mean"]
    test = _comparison(results, "natural", "random", metric)
    if test is None:
        return "no verdict: too few directions for a test"
    relation = RELATIONS[units_direction(test)]
    coherent = min(
        nat["vs_null"].get("frac_beyond_null_p95", 0.0),
        rnd["vs_null"].get("frac_beyond_null_p95", 0.0),
    )
    return (
        f"{results.get('model', 'model')}/{results.get('layer', '?')}: natural-basis directions "
        f"({metric} {_fmt(nat['mean'])}) are {relation} random directions ({_fmt(rnd['mean'])}; "
        f"Mann-Whitney p = {test['p_mannwhitney']:.3g}, rank-biserial {test['rank_biserial']:+.2f}), "
        f"and at least {coherent:.0%} of each family beat the 95th percentile of random "
        f"{results['config']['k']}-image subsets (null mean {_fmt(null_mean)})."
    )


def units_report_section(
    runs: Sequence[dict[str, Any]], *, title: str = "Unit analysis (§3)"
) -> str:
    """A Markdown section for the reproduce report, rendered from stored units JSON payloads.

    One table per run (families x metrics: mean, median, share beyond the null's 95th percentile),
    the natural-vs-random tests, the rotation curve, the figure paths and the one-line verdict.
    """
    lines = [f"## {title}", ""]
    for results in runs:
        metrics = results["metrics"]
        lines += [
            f"### {results.get('model', 'model')}, layer {results.get('layer', '?')} "
            f"(D = {results['dim']}, {results['n_images']} images, k = {results['config']['k']})",
            "",
            "| family | n | dead | "
            + " | ".join(f"{m} mean | {m} median | >null p95" for m in metrics)
            + " |",
            "|---|---|---|" + "---|---|---|" * len(metrics),
        ]
        null = results["null"]
        lines.append(
            "| null (random subsets) | "
            f"{null['n_subsets']} | - | "
            + " | ".join(
                f"{_fmt(null[m]['mean'])} | {_fmt(null[m]['median'])} | (p95 = {_fmt(null[m]['threshold_p95'])})"
                for m in metrics
            )
            + " |"
        )
        for name, fam in results["families"].items():
            cells = []
            for m in metrics:
                s = fam["summary"][m]
                cells.append(
                    f"{_fmt(s.get('mean'))} | {_fmt(s.get('median'))} | "
                    f"{_fmt(s['vs_null'].get('frac_beyond_null_p95'), 2)}"
                )
            lines.append(
                f"| {name} | {fam['n_directions']} | {fam['n_dead']} | " + " | ".join(cells) + " |"
            )
        lines += [
            "",
            "| test | metric | mean diff | U | p (MWU) | p (perm.) | rank-biserial |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in results["comparisons"]:
            lines.append(
                f"| {c['a']} vs {c['b']} | {c['metric']} | {c['mean_diff']:+.3f} | {c['mannwhitney_u']:.0f} | "
                f"{c['p_mannwhitney']:.3g} | {c['p_permutation']:.3g} | {c['rank_biserial']:+.3f} |"
            )
        curve = results.get("rotation_curve")
        if curve:
            key = "purity" if "purity" in curve else "pixel_cosine"
            lines += [
                "",
                f"Rotation curve ({key} mean of `Q^alpha e_i`): "
                + ", ".join(
                    f"alpha {a:g}: {_fmt(v)}"
                    for a, v in zip(curve["alphas"], curve[key]["mean"], strict=True)
                )
                + ".",
            ]
        for kind, path in results.get("figures", {}).items():
            lines.append(f"- figure ({kind}): `{path}`")
        lines += ["", f"**Verdict.** {units_verdict(results)}", ""]
    return "\n".join(lines)
