"""The paper's qualitative claims of §4.2, each with a verdict computed from our numbers.

A claim is ``{"id", "claim", "verdict", "evidence", "holds", "total"}``: ``verdict`` is ``"holds"``,
``"partly"`` (some but not all cells agree), ``"fails"`` or ``"n/a"`` (nothing to judge);
``holds``/``total`` count the cells (or models) that agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DISTORTION_BOUND = 0.15  # "every model reaches 100% error at distortion below 0.15"
NOISE_ACCURACY_MARGIN = 0.25  # Fig. 7: stddev-1 noise must leave this much more accuracy than 0%


def _verdict(holds: int, total: int) -> str:
    if total == 0:
        return "n/a"
    if holds == total:
        return "holds"
    return "partly" if holds else "fails"


def _greater(a: float | None, b: float | None) -> bool:
    """``a > b``; a missing value (no images) never counts as agreeing with the claim."""
    return a is not None and b is not None and a > b


def _claim(cid: str, text: str, holds: int, total: int, evidence: str) -> dict[str, Any]:
    return {
        "id": cid,
        "claim": text,
        "verdict": _verdict(holds, total),
        "holds": holds,
        "total": total,
        "evidence": evidence,
    }


def every_model_fooled(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Table 1: every attacked example misclassified, mean distortion below 0.15, for each model."""
    good = [
        r
        for r in rows
        if r["success_rate"] == 1.0
        and r["mean_distortion"] is not None
        and r["mean_distortion"] < DISTORTION_BOUND
    ]
    worst = max((r["mean_distortion"] or 0.0 for r in rows), default=0.0)
    rates = ", ".join(f"{r['model']} {100 * (r['success_rate'] or 0):.1f}%" for r in rows)
    return _claim(
        "table1-all-fooled",
        f"Every model reaches 100% error on its attacked examples at mean distortion below {DISTORTION_BOUND}",
        len(good),
        len(rows),
        f"success rates: {rates}; largest mean distortion {worst:.4f}",
    )


def _nearest_noise(noise: Sequence[Mapping[str, Any]], distortion: float) -> Mapping[str, Any]:
    return min(noise, key=lambda r: abs(float(r["stddev"]) - distortion))


def transfer_beats_noise(table: Mapping[str, Any], cid: str, name: str) -> dict[str, Any]:
    """Off-diagonal transfer cells against noise of the nearest stddev, same column."""
    noise = [r for r in table["rows"] if r["kind"] == "noise"]
    holds = total = 0
    for row in table["rows"]:
        if row["kind"] != "adversarial" or row["distortion"] is None or not noise:
            continue
        ref = _nearest_noise(noise, float(row["distortion"]))
        for col in table["columns"]:
            if col == row["source"]:
                continue
            total += 1
            holds += int(_greater(row["errors"][col], ref["errors"][col]))
    return _claim(
        cid,
        f"{name}: examples made for one model cause more error on another model than Gaussian noise "
        "of the nearest stddev",
        holds,
        total,
        f"{holds} of {total} cross cells",
    )


def amplified_beats_raw(table: Mapping[str, Any]) -> dict[str, Any]:
    """Table 4: the amplified row of a source transfers more than its raw row, cell by cell."""
    raw = {r["source"]: r for r in table["rows"] if r["kind"] == "adversarial"}
    holds = total = 0
    for row in table["rows"]:
        if row["kind"] != "amplified":
            continue
        for col in table["columns"]:
            if col == row["source"]:
                continue
            total += 1
            holds += int(_greater(row["errors"][col], raw[row["source"]]["errors"][col]))
    return _claim(
        "table4-amplified",
        "Table 4: amplified examples (stddev 0.1) transfer more than the raw ones",
        holds,
        total,
        f"{holds} of {total} cross cells",
    )


def noise_leaves_accuracy(figure7: Mapping[str, Any]) -> dict[str, Any]:
    """Figure 7: stddev-1 noise leaves substantial accuracy while adversarial examples leave 0%."""
    noise = figure7["noise"]
    acc = noise["accuracy"]
    good = sum(1 for a in acc.values() if a >= NOISE_ACCURACY_MARGIN)
    shown = ", ".join(f"{m} {100 * a:.1f}%" for m, a in acc.items())
    return _claim(
        "figure7-noise",
        f"Gaussian noise of stddev {noise['stddev']:g} (far larger than any adversarial distortion) "
        f"leaves at least {100 * NOISE_ACCURACY_MARGIN:.0f}% accuracy (paper: 51%), adversarial examples 0%",
        good,
        len(acc),
        f"accuracy under noise: {shown} (achieved RMS {noise['achieved_distortion']:.3f})",
    )


def all_claims(tables: Mapping[str, Any], figure7: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every claim, in the order of the paper."""
    return [
        every_model_fooled(tables["table1"]["rows"]),
        transfer_beats_noise(tables["table2"], "table2-transfer", "Table 2 (cross-model)"),
        every_model_fooled(tables["table3"]["rows"])
        | {
            "id": "table3-all-fooled",
            "claim": "Table 3 models (P1/P2) also reach 100% error on the test set at mean distortion "
            f"below {DISTORTION_BOUND}",
        },
        transfer_beats_noise(tables["table4"], "table4-transfer", "Table 4 (cross-training-set)"),
        amplified_beats_raw(tables["table4"]),
        noise_leaves_accuracy(figure7),
    ]
