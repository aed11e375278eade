"""Report of the adversarial-training comparison (paper §4.2), rendered from stored results only.

:func:`render_advtrain` reads ``DIR/results.json`` (written by
:func:`intriguing.experiments.advtrain.run_advtrain`), draws ``DIR/figures/advtrain_test_error.png``
(test error over epochs per variant: mean over seeds, band from the lowest to the highest seed) and
writes ``DIR/report.md``: the comparison table (ours as mean and 95% t-interval over seeds beside
the paper's 1.6 / 1.3 / 1.2%), the Welch tests against weight decay alone, robustness and run times.
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

from intriguing._io import atomic_write_text, read_results
from intriguing.errors import IntriguingError
from intriguing.report.blocks import Cell as _Cell
from intriguing.report.blocks import Figure as _Figure
from intriguing.report.blocks import Heading, Para, Table
from intriguing.report.markdown import to_markdown
from intriguing.report.plotting import save_figure

SCHEMA = "intriguing.advtrain/1"
FIGURE = "figures/advtrain_test_error.png"


def load_advtrain_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``DIR/results.json`` of an advtrain run (:func:`intriguing._io.read_results`).

    Raises:
        IntriguingError: missing, corrupt, not an advtrain results file, or changed after its run.
    """
    return read_results(run_dir, SCHEMA, command="advtrain")


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def _ci(row: Mapping[str, Any]) -> str:
    ci = row.get("ci95")
    return "-" if not ci else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def test_size(runs: Sequence[Mapping[str, Any]]) -> int | None:
    """The number of test images the runs' errors are measured on (None: not recorded, older runs).

    Raises:
        IntriguingError: runs disagree on it (results from different datasets mixed).
    """
    sizes = {int(r["n_test"]) for r in runs if r.get("n_test") is not None}
    if len(sizes) > 1:
        raise IntriguingError(f"runs were measured on different test sets: {sorted(sizes)} images")
    return sizes.pop() if sizes else None


def _test_set(n_test: int | None) -> str:
    return (
        "the test set (size not recorded by this run)"
        if n_test is None
        else f"{n_test} test images"
    )


def comparison_table(summary: Mapping[str, Any], n_test: int | None = None) -> Table:
    """The comparison: one row per variant, ours beside the paper's; ``n_test``: test images."""
    rows = []
    for row in summary["rows"]:
        test = row.get("vs_baseline") or {}
        diff = test.get("difference")
        verdict = {True: "yes", False: "no", None: "-"}[row.get("significant")]
        rows.append(
            tuple(
                _Cell(text)
                for text in (
                    row["variant"],
                    str(len(row["test_errors"])),
                    _pct(row["mean"]),
                    _ci(row),
                    _pct(row.get("sd")),
                    row["paper"]["text"],
                    "-" if diff is None else f"{100 * diff:+.2f} pts",
                    _p(test.get("p")),
                    verdict,
                    _num(row.get("robust_median")),
                    _num(row.get("robust_mean")),
                    "-" if row.get("wall_time_s") is None else f"{row['wall_time_s']:.0f} s",
                    "-" if row.get("cpu_time_s") is None else f"{row['cpu_time_s']:.0f} s",
                )
            )
        )
    return Table(
        header=(
            "variant",
            "seeds",
            "test error (mean)",
            "95% CI",
            "sd",
            "paper",
            "vs weight decay",
            "Welch p",
            "p < 0.05",
            "robust. median",
            "robust. mean",
            "wall / run",
            "CPU / run",
        ),
        rows=tuple(rows),
        caption=(
            f"Test error on {_test_set(n_test)}: mean over seeds and 95% Student-t interval; "
            "Welch t-test against weight decay alone; robustness: untargeted L-BFGS minimum "
            "distortion (RMS per pixel) on the correctly classified of the first test images, "
            "median / mean per run, averaged over seeds; times per training run (1 torch thread)."
        ),
    )


def per_seed_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    """Every run: variant, seed, test/train error, robustness, wall and CPU time."""
    rows = []
    for run in runs:
        robust = run.get("robustness") or {}
        rows.append(
            tuple(
                _Cell(t)
                for t in (
                    run["variant"],
                    str(run["seed"]),
                    _pct(run["test_error"]),
                    _pct(run["train_error"]),
                    _num(robust.get("median")),
                    f"{robust.get('attacked', 0)}/{robust.get('of', 0)}",
                    f"{run['wall_time_s']:.0f} s",
                    f"{run['cpu_time_s']:.0f} s",
                )
            )
        )
    return Table(
        header=(
            "variant",
            "seed",
            "test error",
            "train error",
            "robust. median",
            "attacked",
            "wall",
            "CPU",
        ),
        rows=tuple(rows),
    )


def plot_test_error(
    runs: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    order: Sequence[str] | None = None,
) -> Path:
    """Test error (%) over epochs per variant (in ``order``, default: as met in ``runs``): mean over
    seeds with a shaded min-max band; PNG written atomically at ``path``."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    variants = list(order) if order is not None else list(dict.fromkeys(r["variant"] for r in runs))
    for variant in variants:
        curves = [
            [100 * h["test_error"] for h in r["history"] if h.get("test_error") is not None]
            for r in runs
            if r["variant"] == variant
        ]
        length = min((len(c) for c in curves), default=0)
        if length == 0:
            continue
        data = np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        (line,) = ax.plot(
            epochs,
            data.mean(0),
            label=f"{variant} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
        )
        ax.fill_between(epochs, data.min(0), data.max(0), color=line.get_color(), alpha=0.2)
    for value, text in (
        (1.6, "paper: weight decay 1.6%"),
        (1.3, "dropout 1.3%"),
        (1.2, "pool < 1.2%"),
    ):
        ax.axhline(value, color="grey", linestyle=":", linewidth=0.8)
        ax.text(1.0, value, text, fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0.8, 4.0)
    ax.set_title("100-100-10 sigmoid net on MNIST: test error during training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def verdicts(summary: Mapping[str, Any], n_test: int | None = None) -> list[str]:
    """One sentence per variant: its difference from weight decay alone and whether it is
    significant (Welch, 5%), beside the binomial standard error of one test error."""
    lines = []
    base = next((r for r in summary["rows"] if r["variant"] == summary["baseline"]), None)
    if base is not None and base.get("mean") is not None and n_test:
        p = base["mean"]
        lines.append(
            f"Noise scale: one run's test error on {n_test} images has a binomial standard error "
            f"of {100 * (p * (1 - p) / n_test) ** 0.5:.2f} points at {100 * p:.2f}%; the seed-to-seed "
            f"standard deviation of weight decay alone is "
            f"{_num(None if base.get('sd') is None else 100 * base['sd'], 2)} points."
        )
    for row in summary["rows"]:
        test = row.get("vs_baseline")
        if not test or test.get("difference") is None:
            continue
        diff, p_value = test["difference"], test.get("p")
        if p_value is None:
            verdict = "not testable (fewer than 2 seeds or no spread)"
        elif p_value < 0.05:
            direction = "lower" if diff < 0 else "higher"
            verdict = f"significantly {direction} (Welch p = {_p(p_value)})"
        else:
            verdict = f"not significant (Welch p = {_p(p_value)})"
        lines.append(
            f"{row['variant']}: {100 * diff:+.2f} points against weight decay alone "
            f"({_pct(row['mean'])} vs {_pct(base['mean'] if base else None)}), {verdict}; "
            f"paper: {row['paper']['text']} vs 1.6%."
        )
    return lines


def advtrain_blocks(doc: Mapping[str, Any], figure: str | None) -> list[Any]:
    """The report's blocks (headings, paragraphs, tables, figure)."""
    spec = doc["spec"]
    train = spec["train"]
    pool = spec["pool"]
    blocks: list[Any] = [
        Heading("Adversarial training with a pool of adversarial examples (§4.2)"),
        Para(
            f"Model {spec['model']} ({spec['dataset']}), {train['optimizer']} with momentum 0.9, "
            f"{train['epochs']} epochs, batch {train['batch_size']}, peak learning rate {train['lr']} "
            f"({train['schedule']}), weight decay {train['weight_decay']} (lambda/2 * ||W||^2). "
            f"Dropout variant: {spec['dropout']}. Pools: size {pool['size']}, "
            f"{pool['refresh_fraction']:g} of it regenerated every {pool['refresh_every']} minibatches "
            f"by the {pool['attack']} attack, {pool['mix']:g} pool examples per clean example in "
            f"every minibatch, from epoch {pool['warmup_epochs'] + 1}; hidden-layer pool on "
            "act1 and act2."
        ),
        comparison_table(doc["summary"], test_size(doc["runs"])),
        *(Para(line) for line in verdicts(doc["summary"], test_size(doc["runs"]))),
    ]
    if figure is not None:
        blocks.append(_Figure(figure, "Test error per epoch: mean over seeds, band min-max"))
    blocks += [Heading("Every run", level=3), per_seed_table(doc["runs"])]
    return blocks


def render_advtrain(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Draw the figure and write ``report.md`` from ``DIR/results.json``; returns the paths written.

    Raises:
        IntriguingError: no or unusable results.json.
    """
    root = Path(run_dir)
    doc = load_advtrain_results(root)
    figure = None
    written: dict[str, Path] = {}
    if any(r.get("history") for r in doc["runs"]):
        order = [row["variant"] for row in doc["summary"]["rows"]]
        written["figure"] = plot_test_error(doc["runs"], root / FIGURE, order)
        figure = FIGURE
    report = root / "report.md"
    atomic_write_text(report, to_markdown(advtrain_blocks(doc, figure)))
    written["report"] = report
    return written
