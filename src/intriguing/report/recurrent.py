"""The ``recurrent`` experiment's report section (issue #9, item 1), rendered from stored results.

:func:`render_recurrent` reads ``<run>/results.json`` (schema ``intriguing.recurrent/1``, written by
:func:`intriguing.experiments.recurrent.run_recurrent`) and writes ``<run>/report.md`` and the heat
map ``<run>/figures/recurrent_transfer.png``; nothing is recomputed. :func:`verdict` turns the
numbers into the one-sentence answer to "does every example still fall, at what distortion, and do
examples transfer between recurrent and feedforward nets?".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intriguing._io import atomic_write_text, read_results
from intriguing.report.blocks import Block, Cell, Figure, Heading, Para, Table
from intriguing.report.markdown import to_markdown
from intriguing.report.plotting import plt, save_figure
from intriguing.report.render import num, pct, success_cell, verified_cell

SCHEMA = "intriguing.recurrent/1"
FIGURE = "figures/recurrent_transfer.png"
REPORT = "report.md"
BLOCK_NAMES = {"recurrent": "RNN", "feedforward": "FF"}


def load_recurrent(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``DIR/results.json`` of a ``recurrent`` run.

    Raises:
        IntriguingError: missing, unreadable or of another schema (one line).
    """
    return read_results(run_dir, SCHEMA, command="recurrent")


def block_mean(table: Mapping[str, Any], source: str, target: str) -> float | None:
    """Mean off-diagonal error of the (source kind -> target kind) block, or None if empty."""
    for block in table["blocks"]:
        if block["source"] == source and block["target"] == target:
            return block["mean"]
    return None


def _rows_of(table: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [r for r in table["rows"] if r["kind"] == kind]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def verdict(table: Mapping[str, Any]) -> str:
    """One sentence computed from the numbers: do all fall, at what distortion, do they transfer.

    Transfer is judged per cross-family block (RNN->FF, FF->RNN; diagonal excluded) twice: for the
    raw minimum-distortion examples against the ``matched`` noise row (stddev = the mean
    adversarial distortion), and for the amplified rows against the noise row of the amplified
    stddev. A block "transfers" when its mean error is above 5% and at least twice the noise's
    mean error on the same target models.
    """
    rnn = _rows_of(table, "recurrent")
    ff = _rows_of(table, "feedforward")
    if not rnn:
        return "No recurrent model was attacked, so the question stays open."
    all_fall = all(r["success_rate"] == 1.0 for r in rnn)
    worst = min(r["success_rate"] or 0.0 for r in rnn)
    rnn_dist = _mean([r["mean_distortion"] for r in rnn])
    ff_dist = _mean([r["mean_distortion"] for r in ff])
    fall = (
        f"every attacked example of the {len(rnn)} recurrent nets fell"
        if all_fall
        else f"the attack fooled the recurrent nets on only {pct(worst)} of examples at worst"
    )
    dist = f"at mean RMS distortion {num(rnn_dist)}"
    if ff_dist is not None:
        relation = "below" if rnn_dist is not None and rnn_dist < ff_dist else "vs"
        dist += f" ({relation} the feedforward nets' {num(ff_dist)})"
    clauses = [_transfer_clause(table, None, _noise_row(table, "matched"), "at that distortion")]
    stddev = _amplified_stddev(table)
    if stddev is not None:
        noise = _noise_row(table, f"{stddev:g}")
        clauses.append(_transfer_clause(table, stddev, noise, f"rescaled to RMS {stddev:g}"))
    tail = "; ".join(c for c in clauses if c) or "no cross-family cell to judge transfer"
    return f"{'Yes' if all_fall else 'No'}: {fall}, {dist}; {tail}."


CROSS = (("recurrent", "feedforward"), ("feedforward", "recurrent"))


def _transfer_clause(
    table: Mapping[str, Any],
    stddev: float | None,
    noise: Mapping[str, Any] | None,
    prefix: str,
) -> str:
    """E.g. "at that distortion examples barely transfer across families (RNN->FF 2.3%, FF->RNN
    2.4% vs 4.3%/4.8% within RNN/FF and 0.1%/0.2% for same-stddev noise)"."""

    def source(kind: str) -> str:
        return kind if stddev is None else f"{kind} amplified {stddev:g}"

    means = [(s, t, block_mean(table, source(s), t)) for s, t in CROSS]
    cross = [(s, t, m) for s, t, m in means if m is not None]
    if not cross:
        return ""
    bases = [_noise_mean(table, noise, t) for _, t, _ in cross]
    moves = [
        m > 0.05 and (b is None or m >= 2 * b) for (_, _, m), b in zip(cross, bases, strict=True)
    ]
    if all(moves):
        word = "examples transfer across families"
    elif not any(moves):
        word = "examples barely transfer across families"
    else:
        ways = [
            f"{BLOCK_NAMES[s]}->{BLOCK_NAMES[t]}"
            for (s, t, _), ok in zip(cross, moves, strict=True)
            if ok
        ]
        word = f"examples transfer only {', '.join(ways)}"
    values = ", ".join(f"{BLOCK_NAMES[s]}->{BLOCK_NAMES[t]} {pct(m)}" for s, t, m in cross)
    within = [block_mean(table, source(k), k) for k in ("recurrent", "feedforward")]
    extra = []
    if all(w is not None for w in within):
        extra.append(f"{pct(within[0])}/{pct(within[1])} within RNN/FF")
    if all(b is not None for b in bases):
        extra.append(f"{'/'.join(pct(b) for b in bases)} for same-stddev noise")
    detail = f" vs {' and '.join(extra)}" if extra else ""
    return f"{prefix} {word} ({values} mean error{detail})"


def _noise_mean(
    table: Mapping[str, Any], noise: Mapping[str, Any] | None, target: str
) -> float | None:
    if noise is None:
        return None
    return _mean([noise["errors"][m] for m, k in table["kinds"].items() if k == target])


def _noise_row(table: Mapping[str, Any], label: str) -> Mapping[str, Any] | None:
    for row in table["matrix"]["rows"]:
        if row["kind"] == "noise" and row.get("noise") == label:
            return row
    return None


def _amplified_stddev(table: Mapping[str, Any]) -> float | None:
    for row in table["matrix"]["rows"]:
        if row["kind"] == "amplified":
            return float(row["stddev"])
    return None


def plot_matrix(table: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Heat map of the transfer matrix (error %, rows: sources and noise; columns: models), with
    lines separating the recurrent and feedforward blocks."""
    matrix = table["matrix"]
    cols = matrix["columns"]
    labels = [r["label"] for r in matrix["rows"]]
    values = np.array(
        [
            [np.nan if r["errors"][c] is None else r["errors"][c] for c in cols]
            for r in matrix["rows"]
        ],
        dtype=float,
    )
    n_rnn = sum(1 for c in cols if table["kinds"][c] == "recurrent")
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * len(cols), 1.2 + 0.42 * len(labels)))
    ax.imshow(values, cmap="Reds", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("error caused on model", fontsize=8)
    ax.set_ylabel("examples made for", fontsize=8)
    for i, j in np.ndindex(values.shape):
        if not np.isnan(values[i, j]):
            color = "white" if values[i, j] > 0.6 else "black"
            ax.text(
                j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", fontsize=6, color=color
            )
    if 0 < n_rnn < len(cols):
        ax.axvline(n_rnn - 0.5, color="black", lw=1.2)
        ax.axhline(n_rnn - 0.5, color="black", lw=1.2)
    for i in range(1, len(labels)):
        if matrix["rows"][i]["kind"] != matrix["rows"][i - 1]["kind"]:
            ax.axhline(i - 0.5, color="gray", lw=1.0, ls="--")
    ax.set_title("Transfer of L-BFGS examples: recurrent (top/left) vs feedforward", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def model_block(table: Mapping[str, Any]) -> Table:
    rows = tuple(
        (
            Cell(r["model"]),
            Cell(BLOCK_NAMES[r["kind"]]),
            Cell(pct(r["test_error"])),
            Cell(str(r["n"])),
            success_cell(r),
            Cell(num(r["mean_distortion"])),
            Cell(num(r["median_distortion"])),
            Cell(num(r["max_distortion"])),
            verified_cell(r),
        )
        for r in table["rows"]
    )
    header = (
        "model",
        "kind",
        "test err",
        "attacked",
        "misclassified after attack",
        "mean distortion",
        "median",
        "max",
        "re-verified",
    )
    return Table(header, rows, "untargeted L-BFGS; distortion = RMS per pixel over successes")


def matrix_block(table: Mapping[str, Any]) -> Table:
    matrix = table["matrix"]
    cols = matrix["columns"]
    header = ("examples for", "distortion", *cols)
    rows = []
    for r in matrix["rows"]:
        cells = [Cell(r["label"]), Cell(num(r["distortion"]))]
        for c in cols:
            cells.append(Cell(pct(r["errors"][c]), c == r["source"]))
        rows.append(tuple(cells))
    return Table(header, tuple(rows), "error caused on each model (bold: the model's own examples)")


def _short(block: str) -> str:
    """``"recurrent amplified 0.1"`` -> ``"RNN amplified 0.1"``."""
    kind, _, rest = block.partition(" ")
    return f"{BLOCK_NAMES[kind]} {rest}".strip() if kind in BLOCK_NAMES else block


def blocks_block(table: Mapping[str, Any]) -> Table:
    rows = tuple(
        (
            Cell(_short(b["source"])),
            Cell(BLOCK_NAMES.get(b["target"], b["target"])),
            Cell(str(b["cells"])),
            Cell(pct(b["mean"])),
            Cell(pct(b["min"])),
            Cell(pct(b["max"])),
        )
        for b in table["blocks"]
    )
    header = ("examples from", "evaluated on", "cells", "mean error", "min", "max")
    return Table(header, rows, "off-diagonal cells only (a model's own examples excluded)")


def section_blocks(doc: Mapping[str, Any], figure: str | None) -> list[Block]:
    """The report section as blocks (headings, tables, figure, verdict)."""
    table = doc["table"]
    sel = doc["selection"]
    blocks: list[Block] = [
        Heading("Recurrent networks (issue #9, item 1)"),
        Para(
            'Neocleous & Schizas: adversarial examples were "not verified in recurrent neural '
            f'structures". We attack {sel["n"]} {sel["split"]} images that every model '
            f"classifies correctly ({sel['n_common']} such images in all) with the untargeted "
            "box-constrained L-BFGS of §4.1, and evaluate each model's examples on every model, "
            "recurrent and feedforward (Table 2's protocol), beside Gaussian noise whose stddev is "
            "the mean adversarial distortion (clipping to [0, 1] lowers its achieved RMS). The "
            "amplified rows rescale each source's successful perturbations to a common RMS, "
            "compared with the noise row of that stddev (Table 4's protocol): minimum-distortion "
            "examples sit just across their own model's boundary, so raw transfer is a lower bound."
        ),
        Para(f"**Verdict.** {verdict(table)}"),
        Heading("Attack success and distortion per model", 3),
        model_block(table),
        Heading("Transfer matrix", 3),
        matrix_block(table),
        Heading("Recurrent / feedforward blocks", 3),
        blocks_block(table),
    ]
    if figure is not None:
        blocks.append(Figure(figure, "Transfer matrix as a heat map (error %)"))
    return blocks


def render_recurrent(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.md`` and the heat map of a ``recurrent`` run; returns their paths.

    Raises:
        IntriguingError: no readable results.json of this experiment in ``run_dir``.
    """
    root = Path(run_dir)
    doc = load_recurrent(root)
    figure = plot_matrix(doc["table"], root / FIGURE)
    markdown = to_markdown(section_blocks(doc, FIGURE))
    report = root / REPORT
    atomic_write_text(report, markdown)
    return {"markdown": report, "figure": figure}
