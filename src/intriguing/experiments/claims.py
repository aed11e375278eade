"""The paper's claims (§3, §4.2), each judged by a rule stated before the data (docs/claims.md).

A claim is a dict::

    {"id", "section", "claim", "rule", "verdict", "statistic", "p_value", "ci", "n",
     "evidence", "parts"}

``verdict`` is ``"holds"``, ``"fails"`` or ``"inconclusive"`` (underpowered, or the interval
straddles the threshold); ``statistic`` says in words what was measured; ``p_value`` (a float) or
``ci`` (``[lo, hi]``, 95%) quantifies its uncertainty (the other is None); ``n`` is the number of
examples (or cells, or runs) the verdict rests on; ``parts`` holds the per-model / per-cell pieces,
each with its own ``verdict``. Sanity checks (theorems and re-verification, which can fail only
through a bug) are not claims: :func:`sanity_checks` returns them separately, as ``{"id", "check",
"passed", "detail"}``.

Every rule uses :mod:`intriguing.analysis.stats`. Inputs are the stored step results of a
reproduce run (tables, ``paired/<split>/<m>``, ``reference/<split>``, ``units/<m>``,
``sandwich/<m>``); nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from intriguing.analysis import stats
from intriguing.analysis.stats import UNITS_EFFECT, units_direction
from intriguing.report.blocks import pct

ALPHA = stats.ALPHA  # per test, one-sided unless said otherwise
FOOLED_RATE = 0.95  # "100% error": the success rate's 95% interval must lie at or above this
TINY_RATIO = 0.25  # "tiny": mean distortion / mean distance between different-class images
MAJORITY = 0.5  # share of cells that must significantly agree (Clopper-Pearson lower bound)
FIGURE7_ADV_ACCURACY = 0.05  # Figure 7 "0% accuracy": the interval must lie below this
PAPER_FIGURE7_ACCURACY = 0.51
RULES_VERSION = 3  # in the claims step's params: a changed rule re-judges stored runs
DIRECTION_TEXT = {
    "more": "more coherent than",
    "less": "less coherent than",
    "equally": "not significantly different from",
    "untested": "too few to be compared with",
}


def _claim(
    cid: str,
    section: str,
    text: str,
    rule: str,
    verdict: str,
    statistic: str,
    *,
    n: int,
    p_value: float | None = None,
    ci: tuple[float, float] | None = None,
    evidence: str = "",
    parts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "id": cid,
        "section": section,
        "claim": text,
        "rule": rule,
        "verdict": verdict,
        "statistic": statistic,
        "p_value": p_value,
        "ci": None if ci is None else [float(ci[0]), float(ci[1])],
        "n": n,
        "evidence": evidence,
        "parts": [dict(p) for p in parts],
    }


def _every_model_claim(
    cid: str,
    text: str,
    rule: str,
    statistic: str,
    parts: Sequence[Mapping[str, Any]],
    *,
    worst: Mapping[str, Any] | None,
    evidence: str,
) -> dict[str, Any]:
    """A §4.1 claim that every model must hold: the parts' combined verdict, their summed ``n``
    and the ``worst`` part's interval."""
    return _claim(
        cid,
        "§4.1",
        text,
        rule,
        stats.combine([p["verdict"] for p in parts]),
        statistic,
        n=sum(p["n"] for p in parts),
        ci=None if worst is None else tuple(worst["ci"]),
        evidence=evidence,
        parts=parts,
    )


# ------------------------------------------------------------------------- Tables 1 and 3
def every_model_fooled(
    rows: Sequence[Mapping[str, Any]], paired: Mapping[str, Mapping[str, Any]], cid: str, name: str
) -> dict[str, Any]:
    """Every model misclassifies its attacked examples: success rate >= 95% with 95% confidence.

    ``paired``: model -> its ``paired/<split>/<m>`` result (``n`` attacked, ``distortion.n``
    successes).
    """
    parts = []
    for r in rows:
        ev = paired[r["model"]]
        k, n = int(ev["distortion"]["n"]), int(ev["n"])
        lo, hi = stats.clopper_pearson(k, n)
        parts.append(
            {
                "model": r["model"],
                "successes": k,
                "n": n,
                "rate": k / n if n else None,
                "ci": [lo, hi],
                "verdict": stats.interval_verdict(lo, hi, FOOLED_RATE, below=False)
                if n
                else stats.INCONCLUSIVE,
            }
        )
    return _every_model_claim(
        cid,
        f"{name}: every model misclassifies all of its attacked examples (100% error)",
        f"per model, the exact 95% interval of the attack's success rate: holds if its lower bound "
        f">= {FOOLED_RATE:g}, fails if its upper bound < {FOOLED_RATE:g}; all models must hold",
        "success rate per model (the lowest shown)",
        parts,
        worst=min(parts, key=lambda p: p["ci"][0]) if parts else None,
        evidence=", ".join(f"{p['model']} {p['successes']}/{p['n']}" for p in parts),
    )


def distortion_tiny(
    rows: Sequence[Mapping[str, Any]],
    paired: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Any],
    cid: str,
    name: str,
) -> dict[str, Any]:
    """The minimum distortion is tiny: mean distortion / mean RMS distance between test images of
    different classes, 95% interval below :data:`TINY_RATIO` for every model."""
    d_lo, d_hi = stats.mean_ci(
        float(reference["mean"]), float(reference["sd"]), int(reference["n"])
    )
    parts = []
    for r in rows:
        dist = paired[r["model"]]["distortion"]
        if not dist["n"]:
            parts.append({"model": r["model"], "verdict": stats.INCONCLUSIVE, "n": 0})
            continue
        lo, hi = stats.mean_ci(float(dist["mean"]), float(dist["sd"] or 0.0), int(dist["n"]))
        ci = (max(lo, 0.0) / d_hi, hi / d_lo) if int(dist["n"]) >= 2 else None  # one: no interval
        paper = (r.get("paper") or {}).get("distortion")
        parts.append(
            {
                "model": r["model"],
                "n": int(dist["n"]),
                "mean_distortion": float(dist["mean"]),
                "ratio": float(dist["mean"]) / float(reference["mean"]),
                "ci": None if ci is None else list(ci),
                "paper_ratio": None if paper is None else paper / float(reference["mean"]),
                "verdict": stats.INCONCLUSIVE
                if ci is None
                else stats.interval_verdict(ci[0], ci[1], TINY_RATIO, below=True),
            }
        )
    judged = [p for p in parts if "ratio" in p]
    with_ci = [p for p in judged if p["ci"] is not None]
    worst = max(with_ci, key=lambda p: p["ratio"]) if with_ci else None
    paper = [p["paper_ratio"] for p in judged if p["paper_ratio"] is not None]
    paper_text = (
        f"; the paper's own distortions give {min(paper):.2f}-{max(paper):.2f}" if paper else ""
    )
    return _every_model_claim(
        cid,
        f"{name}: the minimum distortion is tiny (the perturbation is small next to what separates "
        "digits of different classes)",
        f"per model, mean RMS distortion of the successful examples / mean RMS distance between "
        f"test images of different classes ({float(reference['mean']):.3f} over "
        f"{reference['n']} pairs): holds if the 95% interval is below {TINY_RATIO:g}, fails if it "
        f"is at or above {TINY_RATIO:g}; all models must hold",
        "distortion ratio per model (the largest shown)",
        parts,
        worst=worst,
        evidence=", ".join(f"{p['model']} {p['ratio']:.3f}" for p in judged) + paper_text,
    )


# ------------------------------------------------------------------------- Tables 2 and 4
def _cell(a_vs_b: Mapping[str, Any], **label: Any) -> dict[str, Any]:
    t = stats.Paired.from_dict(dict(a_vs_b))
    p_greater, p_less = t.p_greater(), t.p_less()
    return {
        **label,
        **t.to_dict(),
        "p_greater": p_greater,
        "p_less": p_less,
        "agrees": p_greater < ALPHA,
        "contradicts": p_less < ALPHA,
    }


def _share_claim(
    cid: str, text: str, rule_cells: str, cells: list[dict[str, Any]], evidence: str
) -> dict[str, Any]:
    agree = sum(c["agrees"] for c in cells)
    contra = sum(c["contradicts"] for c in cells)
    verdict, ci = stats.share_verdict(agree, len(cells), threshold=MAJORITY)
    return _claim(
        cid,
        "§4.2",
        text,
        f"{rule_cells}; each cell: exact one-sided McNemar test on the same images at {ALPHA:g}. "
        f"Holds if the exact 95% interval of the share of significant cells is at or above "
        f"{MAJORITY:g}, fails if it is below {MAJORITY:g}, else inconclusive",
        verdict,
        f"{agree} of {len(cells)} cells significant ({contra} significantly the other way)",
        n=len(cells),
        ci=ci,
        evidence=evidence,
        parts=cells,
    )


def _nearest(noise: Sequence[Mapping[str, Any]], distortion: float | None) -> Mapping[str, Any]:
    return min(noise, key=lambda r: abs(float(r["stddev"]) - (distortion or 0.0)))


def transfer_beats_noise(
    table: Mapping[str, Any], paired: Mapping[str, Mapping[str, Any]], cid: str, name: str
) -> dict[str, Any]:
    """Off-diagonal cells: adversarial examples vs Gaussian noise of the nearest stddev on the
    same images, per target model (paired McNemar), judged by the share of significant cells."""
    cells = []
    for source in table["columns"]:
        ev = paired.get(source)
        if ev is None or not ev["noise"]:
            continue
        noise = _nearest(ev["noise"], (ev["distortion"] or {}).get("mean"))
        for col, counts in noise["cells"].items():
            if col != source:
                cells.append(_cell(counts, source=source, target=col, stddev=noise["stddev"]))
    stddevs = sorted({c["stddev"] for c in cells})
    return _share_claim(
        cid,
        f"{name}: adversarial examples made for one model are misclassified by another model more "
        "often than Gaussian noise",
        "cells: every (source, other model); adversarial examples vs Gaussian noise of the table's "
        "stddev nearest the source's mean distortion, added to the same attacked images",
        cells,
        f"noise stddev {', '.join(f'{s:g}' for s in stddevs)}; "
        + ", ".join(
            f"{c['source']}->{c['target']} {pct(c['a'] / c['n'])} vs {pct(c['b'] / c['n'])}"
            for c in cells
            if c["n"]
        ),
    )


def amplified_beats_noise(
    table: Mapping[str, Any], paired: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Table 4: amplified perturbations (RMS 0.1) vs Gaussian noise of the same stddev, same images."""
    cells = []
    stddev = None
    for source in table["columns"]:
        amp = (paired.get(source) or {}).get("amplified")
        if not amp:
            continue
        stddev = amp["stddev"]
        for col, counts in amp["cells"].items():
            if col != source:
                cells.append(_cell(counts, source=source, target=col, stddev=stddev))
    return _share_claim(
        "table4-amplified",
        "Table 4: adversarial perturbations amplified to stddev "
        f"{'?' if stddev is None else f'{stddev:g}'} transfer to other models far more than "
        "Gaussian noise of the same stddev",
        "cells: every (source, other model); amplified examples vs Gaussian noise of the same "
        "stddev on the same images",
        cells,
        ", ".join(
            f"{c['source']}->{c['target']} {pct(c['a'] / c['n'])} vs {pct(c['b'] / c['n'])}"
            for c in cells
            if c["n"]
        ),
    )


# ------------------------------------------------------------------------- Figure 7
def _figure7_part(model: str, ev: Mapping[str, Any]) -> list[dict[str, Any]]:
    f7 = ev["figure7"]
    parts = []
    first = stats.Paired.from_dict(f7["unclipped"]["paired"])
    adv_correct, n = first.b, first.n
    lo, hi = stats.clopper_pearson(adv_correct, n)
    parts.append(
        {
            "model": model,
            "part": "adversarial accuracy",
            "accuracy": adv_correct / n if n else None,
            "n": n,
            "ci": [lo, hi],
            "verdict": stats.interval_verdict(lo, hi, FIGURE7_ADV_ACCURACY, below=True),
        }
    )
    for mode in ("unclipped", "clipped"):
        t = stats.Paired.from_dict(f7[mode]["paired"])
        test = f7[mode]["test"]
        p_g, p_l = t.p_greater(), t.p_less()
        verdict = stats.HOLDS if p_g < ALPHA else stats.FAILS if p_l < ALPHA else stats.INCONCLUSIVE
        parts.append(
            {
                "model": model,
                "part": f"noise accuracy ({mode})",
                "accuracy": t.a / t.n if t.n else None,
                "n": t.n,
                "p_value": p_g,
                "achieved_distortion": f7[mode]["achieved_distortion"],
                "test_accuracy": test["correct"] / test["n"] if test["n"] else None,
                "test_n": test["n"],
                "verdict": verdict,
            }
        )
    return parts


def figure7_noise_vs_adversarial(
    models: Sequence[str], paired: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Figure 7: adversarial examples leave ~0% accuracy, heavy Gaussian noise leaves much more."""
    parts: list[dict[str, Any]] = []
    stddev = None
    for model in models:
        ev = paired.get(model)
        if ev and ev.get("figure7"):
            stddev = ev["figure7"]["stddev"]
            parts += _figure7_part(model, ev)
    noise_parts = [p for p in parts if p["part"].startswith("noise")]
    p_max = max((p["p_value"] for p in noise_parts), default=None)
    return _claim(
        "figure7",
        "§4.2",
        f"Figure 7 ({', '.join(models)}): adversarial examples are classified correctly 0% of the "
        f"time, while Gaussian noise of stddev {'?' if stddev is None else f'{stddev:g}'}, far "
        "larger, leaves the digits classified correctly in about half of the cases",
        f"both parts, per model: (a) the exact 95% interval of the accuracy on the adversarial "
        f"examples lies below {FIGURE7_ADV_ACCURACY:g}; (b) on the same images, the accuracy under "
        f"the noise, clipped to [0, 1] and unclipped, exceeds the adversarial accuracy (exact "
        f"one-sided McNemar at {ALPHA:g}; fails if significantly lower). The paper's 51% is "
        "reported beside (test images), not judged",
        stats.combine([p["verdict"] for p in parts]),
        "accuracy on adversarial examples vs under noise, per model (p: the largest McNemar p)",
        n=sum(p["n"] for p in parts if p["part"] == "adversarial accuracy"),
        p_value=p_max,
        evidence="; ".join(
            f"{p['model']} {p['part']} {pct(p['accuracy'] or 0.0)}"
            + (f" (test images {pct(p['test_accuracy'] or 0.0)})" if "test_accuracy" in p else "")
            for p in parts
        )
        + f"; paper: 0% and {pct(PAPER_FIGURE7_ACCURACY)}",
        parts=parts,
    )


# ------------------------------------------------------------------------- §3
def _natural_vs_random(run: Mapping[str, Any]) -> Mapping[str, Any] | None:
    metric = "purity" if "purity" in run["metrics"] else "pixel_cosine"
    for c in run["comparisons"]:
        if c["a"] == "natural" and c["b"] == "random" and c["metric"] == metric:
            return c
    return None


def units_not_privileged(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """§3: single units are no more coherent than random directions of the same layer."""
    parts = []
    for run in runs:
        test = _natural_vs_random(run)
        if test is None:
            continue
        direction, verdict = units_direction(test)
        dead = (run.get("families", {}).get("natural") or {}).get("n_dead")
        parts.append(
            {
                "model": run["model"],
                "layer": run["layer"],
                "metric": test["metric"],
                "units_mean": test["mean_a"],
                "random_mean": test["mean_b"],
                "n_units": test["n_a"],
                "n_random": test["n_b"],
                "dead_units": dead,
                "p_value": test["p_mannwhitney"],
                "rank_biserial": test["rank_biserial"],
                "direction": direction,
                "verdict": verdict,
            }
        )
    return _claim(
        "units-not-privileged",
        "§3",
        "Single units are no more semantically coherent than random directions of the same layer",
        f"per run, two-sided Mann-Whitney of the top-k coherence of units (dead units excluded) vs "
        f"random directions: fails if units are significantly more coherent (p < {ALPHA:g}); holds "
        f"if they are significantly less coherent or not significantly different with "
        f"rank-biserial r < {UNITS_EFFECT:g}; inconclusive if not significant with r >= "
        f"{UNITS_EFFECT:g}, or if too few directions for the exact test to give p < {ALPHA:g}. "
        "Which way the evidence points is stated",
        stats.combine([p["verdict"] for p in parts]),
        "; ".join(
            f"{p['model']}: units {DIRECTION_TEXT[p['direction']]} random directions" for p in parts
        )
        + " (p: the smallest per-run p)",
        n=len(parts),
        p_value=min((p["p_value"] for p in parts), default=None),
        evidence="; ".join(
            f"{p['model']}/{p['layer']}: units {DIRECTION_TEXT[p['direction']]} random, {p['metric']} "
            f"{p['units_mean']:.3f} vs {p['random_mean']:.3f}, p = {p['p_value']:.3g}, "
            f"r = {p['rank_biserial']:+.2f} ({p['n_units']} live units, {p['dead_units']} dead)"
            for p in parts
        )
        or "no unit analysis in this run",
        parts=parts,
    )


# ------------------------------------------------------------------------- sanity checks
def _check(cid: str, text: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"id": cid, "check": text, "passed": passed, "detail": detail}


def sanity_checks(
    tables: Mapping[str, Any],
    paired: Mapping[str, Mapping[str, Any]],
    sandwiches: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Checks that can fail only through a bug: re-verification, the [0, 1] box, certified <= attack."""
    rows = [*tables["table1"]["rows"], *tables["table3"]["rows"]]
    mismatches = sum(int(r["verify_mismatches"]) for r in rows)
    lows = [e["box"]["min"] for e in paired.values() if e["box"]["min"] is not None]
    highs = [e["box"]["max"] for e in paired.values() if e["box"]["max"] is not None]
    out = [
        _check(
            "reverified",
            "every stored adversarial image, read back from disk, is misclassified by its model",
            mismatches == 0,
            f"{mismatches} mismatches over {sum(int(r['n']) for r in rows)} attacked examples",
        ),
        _check(
            "box",
            "every stored adversarial image lies in [0, 1]",
            bool(lows) and min(lows) >= 0.0 and max(highs) <= 1.0,
            f"pixel range [{min(lows, default=float('nan')):.4g}, "
            f"{max(highs, default=float('nan')):.4g}] over {len(paired)} attacks",
        ),
    ]
    for s in sandwiches:
        summary = s["summary"]
        out.append(
            _check(
                f"certified-{s['model']}",
                f"{s['model']}: the certified lower bound (§4.3) never exceeds the attack's distortion",
                summary["violations"] == 0,
                f"{summary['violations']} violations over {summary['used']} examples",
            )
        )
    return out


# ------------------------------------------------------------------------- all together
def all_claims(
    tables: Mapping[str, Any],
    paired: Mapping[str, Mapping[str, Mapping[str, Any]]],
    reference: Mapping[str, Any],
    figure7_models: Sequence[str],
    *,
    units: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every claim, in the order of the paper (§3 first).

    ``paired``: ``{"table1": {model: paired result}, "table3": {...}}``; ``reference``: the
    ``reference/test`` result.
    """
    p1, p3 = paired["table1"], paired["table3"]
    t1, t3 = tables["table1"]["rows"], tables["table3"]["rows"]
    return [
        *([units_not_privileged(units)] if units else []),
        every_model_fooled(t1, p1, "table1-fooled", "Table 1"),
        distortion_tiny(t1, p1, reference, "table1-tiny", "Table 1"),
        transfer_beats_noise(tables["table2"], p1, "table2-transfer", "Table 2 (cross-model)"),
        every_model_fooled(t3, p3, "table3-fooled", "Table 3 (P1/P2 models, test set)"),
        distortion_tiny(t3, p3, reference, "table3-tiny", "Table 3 (P1/P2 models, test set)"),
        transfer_beats_noise(
            tables["table4"], p3, "table4-transfer", "Table 4 (cross-training-set)"
        ),
        amplified_beats_noise(tables["table4"], p3),
        figure7_noise_vs_adversarial(figure7_models, p1),
    ]
