"""The paper's qualitative claims of §3, §4.2 and §4.3, each with a verdict computed from our numbers.

A claim is ``{"id", "claim", "verdict", "evidence", "holds", "total"}``: ``verdict`` is ``"holds"``,
``"partly"`` (some but not all cells agree), ``"fails"`` or ``"n/a"`` (nothing to judge);
``holds``/``total`` count the cells (or models) that agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DISTORTION_BOUND = 0.15  # "every model reaches 100% error at distortion below 0.15"
NOISE_ACCURACY_MARGIN = 0.25  # Fig. 7: stddev-1 noise must leave this much more accuracy than 0%
UNITS_ALPHA = 0.05  # §3: significance level of the natural-vs-random Mann-Whitney test


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
    unclipped = "unclipped, " if noise.get("clipped") is False else ""
    return _claim(
        "figure7-noise",
        f"Gaussian noise of stddev {noise['stddev']:g} (far larger than any adversarial distortion) "
        f"leaves at least {100 * NOISE_ACCURACY_MARGIN:.0f}% accuracy (paper: 51%), adversarial examples 0%",
        good,
        len(acc),
        f"accuracy under noise: {shown} ({unclipped}achieved RMS {noise['achieved_distortion']:.3f})",
    )


def _natural_vs_random(run: Mapping[str, Any]) -> Mapping[str, Any] | None:
    metric = "purity" if "purity" in run["metrics"] else "pixel_cosine"
    for c in run["comparisons"]:
        if c["a"] == "natural" and c["b"] == "random" and c["metric"] == metric:
            return c
    return None


def units_not_privileged(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """§3: single units are not significantly more coherent than random directions.

    Per units run (schema ``intriguing.units/1``): holds unless the two-sided Mann-Whitney test of
    natural vs random (purity, or pixel cosine without labels) has ``p < UNITS_ALPHA`` with a
    positive rank-biserial correlation (units more coherent). Runs without the test are not counted.
    """
    holds = total = 0
    parts = []
    for run in runs:
        test = _natural_vs_random(run)
        if test is None:
            continue
        total += 1
        better = test["p_mannwhitney"] < UNITS_ALPHA and test["rank_biserial"] > 0
        holds += int(not better)
        parts.append(
            f"{run['model']}/{run['layer']} {test['metric']} {test['mean_a']:.3f} vs "
            f"{test['mean_b']:.3f}, p = {test['p_mannwhitney']:.3g}, r = {test['rank_biserial']:+.2f}"
        )
    return _claim(
        "units-not-privileged",
        "§3: single units are no more coherent than random directions (natural vs random, "
        f"two-sided Mann-Whitney at {UNITS_ALPHA:g})",
        holds,
        total,
        "; ".join(parts) or "no unit analysis in this run",
    )


def certified_below_attack(sandwiches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """§4.3: the certified lower bound never exceeds the attack's distortion (any example, any model).

    Per sandwich step result: holds when ``violations == 0`` over at least one used example.
    """
    holds = total = 0
    parts = []
    for s in sandwiches:
        summary = s["summary"]
        if summary["used"] == 0:
            continue
        total += 1
        holds += int(summary["violations"] == 0)
        ratio = s.get("median_ratio")
        parts.append(
            f"{s['model']}: {summary['violations']} of {summary['used']} violations, median "
            f"attack/certified {'-' if ratio is None else f'{ratio:.3g}'}"
        )
    return _claim(
        "spectral-certified",
        "§4.3: the certified lower bound (margin / Lipschitz product) is at most the attack's "
        "distortion for every example",
        holds,
        total,
        "; ".join(parts) or "no sandwich in this run",
    )


def all_claims(
    tables: Mapping[str, Any],
    figure7: Mapping[str, Any],
    *,
    units: Sequence[Mapping[str, Any]] = (),
    sandwiches: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every claim, in the order of the paper (§3 units first; §4.3 after §4.2)."""
    analysis_first = [units_not_privileged(units)] if units else []
    analysis_last = [certified_below_attack(sandwiches)] if sandwiches else []
    return [
        *analysis_first,
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
        *analysis_last,
    ]
