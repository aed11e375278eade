"""Report sections of the critics' experiments (rarity, recover, curves), from stored results only.

:func:`render_section` turns the JSON of :func:`intriguing.experiments.critics.run_critics` into a
markdown section with a table, a figure (PNG under ``<out>/figures/``, written atomically with
:func:`intriguing.report.plotting.save_figure`) and a one-sentence verdict computed from the numbers
(never written by hand). Distortion is the paper's RMS per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from intriguing.analysis.rarity import clopper_pearson
from intriguing.errors import InvalidInputError
from intriguing.report.blocks import markdown_table
from intriguing.report.plotting import save_figure

NEVER = 1e3  # where the rarity figure plots a ray whose label never changes
RARE = 1e-3  # pooled flip-rate upper bound below which adversarial pockets count as "rare"


@dataclass
class Section:
    """A rendered report section: markdown, its verdict sentence, and the figures it links."""

    markdown: str
    verdict: str
    figures: dict[str, str] = field(default_factory=dict)


def _colour(i: int) -> Any:
    """The ``i``-th of 20 distinct colours (tab20), so that up to 20 models never share one."""
    i %= 20
    return plt.get_cmap("tab20")(2 * i if i < 10 else 2 * (i - 10) + 1)  # dark hues first


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}"


def _inf(v: float | None) -> str:
    """A ray-distance ratio; ``None`` in the JSON means the label never changed (infinite)."""
    return "∞" if v is None else _fmt(v)


def _pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def _ci(ci: list[float] | None, pct: bool = False) -> str:
    if not ci:
        return ""
    if pct:
        return f" [{_pct(ci[0])}, {_pct(ci[1])}]"
    return f" [{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]"


def _span(
    pairs: list[tuple[float, str]],
    fmt: Callable[[float], str],
    *,
    names: bool = True,
    sep: str = "to",
) -> str:
    """``lowest (model) to highest (model)`` of ``(value, model)`` pairs, values written by ``fmt``
    (``names=False``: the values only; ``sep``: the word between them)."""
    ends = [min(pairs), max(pairs)]
    return f" {sep} ".join(fmt(v) + (f" ({m})" if names else "") for v, m in ends)


def _rays_sentence(directions: int) -> str:
    """The rarity intro's sentence on the boundary distance along ``directions`` rays (0: skipped)."""
    if directions == 0:
        return "The distance to the boundary along random rays was skipped (--rays 0)."
    return (
        f"Along {directions} further random directions per example, the distance to the "
        "first label change (grid scan + bisection) is divided by the adversarial distance."
    )


def _source_note(payload: Mapping[str, Any]) -> str:
    models = payload["models"]
    parts = [f"{m}: {r['split']} split ({r['origin']})" for m, r in models.items()]
    run = payload.get("from_run")
    where = f"reproduce run `{run}`" if run else "attacks run by this command"
    return f"Examples: {where}; " + ", ".join(parts) + "."


# ----------------------------------------------------------------------------- rarity
def _section(
    name: str,
    payload: Mapping[str, Any],
    out: Path,
    rows: list[dict[str, str]],
    **method: Any,
) -> Section:
    """A report section: title, method, examples used, table, figure and verdict.

    ``rows``: one ``{column header: cell}`` per model (the first row's keys are the header).
    ``name`` (``rarity``, ``recover`` or ``curves``) picks the title, the method paragraph (filled
    in with the ``method`` fields), the figure (drawn into ``<out>/figures/<name>.png``) and the
    verdict (:data:`_PARTS`).
    """
    part = _PARTS[name]
    figure = part.figure(payload, out / "figures" / f"{name}.png")
    verdict = part.verdict(payload)
    md = "\n\n".join(
        [
            part.title,
            part.method.format(**method),
            _source_note(payload),
            "\n".join(markdown_table(list(rows[0]), [list(row.values()) for row in rows])),
            f"![{name}]({figure.relative_to(out).as_posix()})",
            f"**Verdict.** {verdict}",
        ]
    )
    return Section(md, verdict, {name: str(figure)})


def rarity_verdict(payload: Mapping[str, Any]) -> str:
    """One sentence: pooled flip counts at the adversarial distance and the ray-distance ratio."""
    models = payload["models"]
    flips = sum(r["pooled"]["1"]["flips"] for r in models.values() if "1" in r["pooled"])
    valid = sum(r["pooled"]["1"]["valid"] for r in models.values() if "1" in r["pooled"])
    worst = max((r["pooled"]["1"]["ci"][1], m) for m, r in models.items() if "1" in r["pooled"])
    ratios = [
        (r["rays"].get("ratio_median"), m)
        for m, r in models.items()
        if r["rays"].get("ratio_median") is not None
    ]
    overall = clopper_pearson(flips, valid)[1]
    frequent = [
        m for m, r in models.items() if "1" in r["pooled"] and r["pooled"]["1"]["ci"][0] >= RARE
    ]
    sentence = (
        f"At each adversarial example's own L2 distance, {flips} of {valid:,} random directions "
        f"({len(models)} models) changed the label (95% upper bound {overall:.2g} pooled over "
        f"models, at most {worst[0]:.2g} for any one model, {worst[1]})"
    )
    if ratios:
        sentence += (
            f", and a random direction needs a median {_span(ratios, '{:.1f}x'.format)} the "
            "adversarial distance to reach the decision boundary"
        )
    if frequent:
        sentence += (
            f": random perturbations of the same size change the label too often for 'extremely low "
            f"probability' (95% lower bound >= {RARE:g} for {', '.join(frequent)})."
        )
    elif worst[0] < RARE:
        sentence += (
            ": adversarial pockets have very low probability under random perturbation, "
            "as the paper says."
        )
    else:
        sentence += (
            f": the samples are too few to bound the probability below {RARE:g}; "
            "rerun with more --samples or --n."
        )
    return sentence


def _rarity_figure(payload: Mapping[str, Any], path: Path) -> Path:
    models = payload["models"]
    names = list(models)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 2.5))
    data = []
    for m in names:
        # a ray whose label never changes (None) is plotted at NEVER, beyond every finite value
        sample = [NEVER if v is None else v for v in models[m]["rays"].get("ratios_sample", [])]
        data.append(sample if sample else [float("nan")])
    ax1.boxplot(data, orientation="horizontal", whis=(5, 95), showfliers=False)
    ax1.set_yticks(range(1, len(names) + 1), names)
    ax1.axvline(1.0, color="crimson", ls="--", lw=1, label="adversarial distance")
    ax1.set_xscale("log")
    ax1.set_xlabel(
        f"random-direction distance to the boundary / adversarial distance (never: {NEVER:g})"
    )
    ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title("Distance to the boundary along random rays (5-95%)")
    for i, m in enumerate(names):
        pooled = models[m]["pooled"]
        scales = sorted(pooled, key=float)
        xs = [float(s) for s in scales]
        hi = [max(pooled[s]["ci"][1], 1e-7) for s in scales]
        rate = [max(pooled[s]["rate"] or 0.0, 1e-7) for s in scales]
        ax2.plot(xs, rate, "o-", color=_colour(i), label=m, ms=4)
        ax2.plot(xs, hi, "v:", color=_colour(i), ms=4, alpha=0.7)
    ax2.set_xscale("log")
    all_scales = sorted({float(s) for r in models.values() for s in r["pooled"]})
    ax2.set_xticks(all_scales, [f"{s:g}x" for s in all_scales])
    ax2.minorticks_off()
    ax2.set_yscale("log")
    ax2.set_ylim(5e-8, 1.5)
    ax2.set_xlabel("radius / adversarial distance")
    ax2.set_ylabel("P(label changes) (dotted: 95% upper bound)")
    ax2.set_title("Random perturbations on the sphere (1e-7 = none seen)")
    ax2.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def render_rarity(payload: Mapping[str, Any], out: Path) -> Section:
    """Table of flip rates (pooled, Clopper-Pearson) and ray-distance ratios; figure; verdict."""
    models = payload["models"]
    scales = sorted({s for r in models.values() for s in r["pooled"]}, key=float)
    rows = []
    for m, r in models.items():
        row = {
            "model": m,
            "n": str(r["n"]),
            "median adv. RMS": _fmt(r["adversarial_rms"]["median"]),
            "K": str(r["config"]["samples"]),
        }
        for s in scales:
            p = r["pooled"].get(s)
            row[f"flips at {s}x (95% CP)"] = (
                "—"
                if p is None
                else f"{p['flips']}/{p['valid']:,} = {_fmt(p['rate'], 2)}{_ci(p['ci'])}"
            )
        p1 = r["pooled"].get(scales[0], {})
        row[f"examples with a flip at {scales[0]}x"] = (
            f"{p1.get('examples_with_flip', '—')}/{p1.get('examples_measured', r['n'])}"
        )
        rays = r["rays"]
        row["ray / adv. distance: median [10%, 90%]"] = (
            f"{_inf(rays.get('ratio_median'))} [{_inf(rays.get('ratio_q10'))}, "
            f"{_inf(rays.get('ratio_q90'))}]"
        )
        row["rays below adv."] = (
            f"{rays.get('below_adversarial', '—')}/{rays.get('directions', 0):,}"
        )
        row["rays never flipping"] = str(rays.get("censored", "—"))
        rows.append(row)
    cfg = next(iter(models.values()))["config"]
    return _section(
        "rarity",
        payload,
        out,
        rows,
        samples=cfg["samples"],
        box=cfg["box"],
        rays=_rays_sentence(int(cfg["ray_directions"])),
    )


# ----------------------------------------------------------------------------- recover
def recover_verdict(payload: Mapping[str, Any]) -> str:
    """One sentence: recovery rate range, distance of the recovered image, detector AUC range."""
    models = payload["models"]
    rates = [(r["recovery_rate"], m) for m, r in models.items()]
    far = [
        (r["median_recovered_to_original_over_adversarial"], m)
        for m, r in models.items()
        if r["median_recovered_to_original_over_adversarial"] is not None
    ]
    aucs = [(r["detector"]["auc"], m) for m, r in models.items()]
    oracle = [(r["oracle"]["auc"], m) for m, r in models.items()]
    lowest_auc = min(aucs)[0]
    total = sum(r["n"] for r in models.values())
    if min(rates)[0] >= 1.0:
        sentence = (
            "The targeted attack back to the true label recovered it for every one of "
            f"{total:,} adversarial examples ({len(models)} models)"
        )
    else:
        sentence = (
            "The targeted attack back to the true label recovered it for "
            f"{_span(rates, _pct)} of adversarial examples"
        )
    if far:
        sentence += (
            f", but the recovered image lies a median {_span(far, '{:.4f}x'.format, names=False)} "
            "the adversarial distance from the original (just back across the boundary, not back "
            "at the original)"
        )
    strength = (
        "separates"
        if lowest_auc >= 0.9
        else "partly separates"
        if lowest_auc >= 0.7
        else "does not separate"
    )
    sentence += (
        f"; the label-free statistic (minimum distortion to change the prediction) {strength} "
        f"these adversarial from clean inputs with ROC AUC {_span(aucs, '{:.3f}'.format)} "
        f"(oracle with the label: {_span(oracle, '{:.3f}'.format, names=False)})"
    )
    factors = sorted(
        {k for r in models.values() for k in r.get("detector_amplified", {})}, key=float
    )
    ranges = []
    for k in factors:
        values = [
            (r["detector_amplified"][k]["auc"], m)
            for m, r in models.items()
            if r.get("detector_amplified", {}).get(k, {}).get("auc") is not None
        ]
        if values:
            ranges.append(f"{_span(values, '{:.3f}'.format, names=False)} at k = {k}")
    if ranges:
        sentence += (
            ", but an adversarial pushed k times past the boundary gets AUC "
            + ", ".join(ranges)
            + " (0.5 = chance)"
        )
    return sentence + "."


def _recover_figure(payload: Mapping[str, Any], path: Path) -> Path:
    models = payload["models"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    factors = sorted(
        {k for r in models.values() for k in r.get("detector_amplified", {})}, key=float
    )
    pushed_k = factors[0] if factors else None
    for i, (m, r) in enumerate(models.items()):
        roc = r["detector"]["roc"]
        ax1.plot(
            roc["fpr"], roc["tpr"], color=_colour(i), label=f"{m} ({r['detector']['auc']:.3f})"
        )
        pushed = r.get("detector_amplified", {}).get(pushed_k, {}) if pushed_k else {}
        if "roc" in pushed:
            ax1.plot(pushed["roc"]["fpr"], pushed["roc"]["tpr"], color=_colour(i), ls="--", lw=1)
    ax1.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax1.set_xlabel("false-positive rate (clean flagged)")
    ax1.set_ylabel("true-positive rate (adversarial flagged)")
    title = "Detector: flag a small min. distortion to change the prediction"
    if pushed_k:
        title += f"\n(dashed: adversarials pushed {pushed_k}x past the boundary)"
    ax1.set_title(title, fontsize=10)
    ax1.legend(fontsize=7, loc="lower right")
    names = list(models)
    factors = sorted(
        {k for r in models.values() for k in r.get("detector_amplified", {})}, key=float
    )
    groups = [("clean", "detector_clean"), ("adversarial", "detector_adversarial")]
    groups += [(f"adv. pushed {k}x", f"detector_amplified_{k}") for k in factors]
    width = 0.8 / len(groups)
    pos = np.arange(len(names))
    colours = ["lightsteelblue", "salmon", "khaki", "palegreen", "plum"]
    for g, (label, key) in enumerate(groups):
        data = [_finite(models[m]["per_example"].get(key, [])) for m in names]
        offset = (g - (len(groups) - 1) / 2) * width
        ax2.boxplot(
            data,
            positions=pos + offset,
            widths=width * 0.9,
            whis=(5, 95),
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": colours[g % len(colours)]},
        )
        ax2.plot([], [], "s", color=colours[g % len(colours)], label=label)
    ax2.set_xticks(pos, names, rotation=30, fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("min. RMS distortion to change the prediction")
    ax2.set_title("Detector statistic S (boxes: quartiles; whiskers: 5-95%)")
    ax2.legend(fontsize=7)
    return save_figure(fig, path)


def _finite(values: list[float | None]) -> list[float]:
    out = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return out or [float("nan")]


def _amplified_cell(amplified: Mapping[str, Any]) -> str:
    parts = []
    for k, a in sorted(amplified.items(), key=lambda kv: float(kv[0])):
        auc = a.get("auc")
        shown = "—" if auc is None else f"{auc:.3f}{_ci(a.get('auc_ci'))}"
        parts.append(f"k={k}: {shown} ({a['still_adversarial']}/{a['n']})")
    return "; ".join(parts) or "—"


def render_recover(payload: Mapping[str, Any], out: Path) -> Section:
    """Table of recovery and detection figures per model; ROC figure; verdict."""
    models = payload["models"]
    rows = []
    for m, r in models.items():
        d, o = r["detector"], r["oracle"]
        rows.append(
            {
                "model": m,
                "n": str(r["n"]),
                "recovered (95% CP)": f"{_pct(r['recovery_rate'])}{_ci(r['recovery_ci'], pct=True)}",
                "median adv. RMS": _fmt(r["median_adversarial_rms"]),
                "median back / adv.": _fmt(r["median_back_over_adversarial"]),
                "median ‖x''−x‖ / ‖x'−x‖": _fmt(
                    r["median_recovered_to_original_over_adversarial"], 5
                ),
                "x'' closer to x than x'": (
                    f"{r['recovered_closer_than_adversarial']}/{r['recovered']}"
                ),
                "detector AUC (95% bootstrap)": f"{d['auc']:.3f}{_ci(d['auc_ci'])}",
                "TPR at 5% FPR": _pct(d["tpr_at_fpr_0.05"]),
                "median S clean / adv.": (
                    f"{_fmt(d['median_clean'])} / {_fmt(d['median_adversarial'])}"
                ),
                "oracle AUC": f"{o['auc']:.3f}{_ci(o['auc_ci'])}",
                "detector AUC on adv. pushed k x (still adv.)": _amplified_cell(
                    r.get("detector_amplified", {})
                ),
            }
        )
    return _section("recover", payload, out, rows)


# ----------------------------------------------------------------------------- curves
def curves_verdict(payload: Mapping[str, Any]) -> str:
    """One sentence: the smallest success rate and the spread of the 99%-success budget."""
    models = payload["models"]
    succ = min((r["success_rate"], m) for m, r in models.items())
    total = sum(r["n"] for r in models.values())
    b99 = [(r["budget_for"].get("0.99"), m) for m, r in models.items()]
    reached = [b for b in b99 if b[0] is not None]
    sentence = (
        f"Over {total:,} attacked examples on {len(models)} models, the attack succeeded "
        + (
            "on every one of them"
            if succ[0] >= 1.0
            else f"on at least {_pct(succ[0], 2)} of each model's examples (lowest: {succ[1]})"
        )
    )
    if reached:
        sentence += (
            ", and 99% of each model's examples became adversarial within an RMS budget between "
            + _span(reached, "{:.3f}".format, sep="and")
        )
    missing = [m for b, m in b99 if b is None]
    if missing:
        sentence += f" (never 99% for {', '.join(missing)})"
    sentence += (
        ": 'we always manage to generate' holds as a measured lower bound on these models."
        if succ[0] >= 0.99
        else ": 'we always manage to generate' does not hold for every model at this attack strength."
    )
    return sentence


def _curves_figure(payload: Mapping[str, Any], path: Path) -> Path:
    from intriguing.models import get_entry

    models = payload["models"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (m, r) in enumerate(models.items()):
        colour = _colour(i)
        ls = "-" if i % 2 == 0 else "--"
        ax.plot(
            r["budgets"], r["rate"], color=colour, ls=ls, label=f"{m} ({r['split']}, n={r['n']})"
        )
        ax.fill_between(r["budgets"], r["ci_low"], r["ci_high"], color=colour, alpha=0.15, lw=0)
        try:
            paper = get_entry(m).paper.get("distortion")
        except Exception:  # a model removed from the zoo after the run: no marker
            paper = None
        if paper is not None:
            ax.axvline(float(paper), color=colour, lw=0.6, ls=":")
    ax.set_xlabel("distortion budget (RMS per pixel; dotted: the paper's Table 1/3 mean)")
    ax.set_ylabel("attack success rate (lower bound)")
    ax.set_ylim(0, 1.01)
    ax.set_title("Robustness curves: success rate vs distortion budget (95% CP bands)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def render_curves(payload: Mapping[str, Any], out: Path) -> Section:
    """Table of budgets reaching 50/90/99/100% success per model; the curves; verdict."""
    from intriguing.models import get_entry

    models = payload["models"]
    rows = []
    for m, r in models.items():
        try:
            paper = get_entry(m).paper.get("distortion")
        except Exception:  # a model removed from the zoo after the run
            paper = None
        bf = r["budget_for"]
        row = {
            "model": m,
            "split": r["split"],
            "source": r["origin"],
            "n": str(r["n"]),
            "success": _pct(r["success_rate"], 2),
            "mean distortion": _fmt(r["mean_distortion"]),
        }
        for share, key in (("50%", "0.5"), ("90%", "0.9"), ("99%", "0.99"), ("100%", "1")):
            row[f"budget {share}"] = _fmt(bf.get(key))
        row["paper av. distortion"] = _fmt(paper)
        rows.append(row)
    return _section("curves", payload, out, rows)


def render_section(payload: Mapping[str, Any], out: str | Path) -> Section:
    """The report section of a critics JSON payload (``payload["command"]`` picks the renderer)."""
    renderers = {"rarity": render_rarity, "recover": render_recover, "curves": render_curves}
    command = payload.get("command")
    if command not in renderers:
        raise InvalidInputError(f"unknown critics experiment {command!r} in the results")
    if not payload.get("models"):
        raise InvalidInputError("the results hold no model; nothing to report")
    return renderers[str(command)](payload, Path(out))


class _Part(NamedTuple):
    """What sets an experiment's section apart besides its table: its title, method paragraph (a
    :meth:`str.format` template, filled in by the renderer), figure (drawn into the given path)
    and verdict."""

    title: str
    method: str
    figure: Callable[[Mapping[str, Any], Path], Path]
    verdict: Callable[[Mapping[str, Any]], str]


_PARTS = {
    "rarity": _Part(
        "## How rare are adversarial pockets? (issue #9, item 2)",
        "The paper: adversarial examples have *extremely low probability* yet are *dense*; the "
        "summary-and-critique: *little evidence for extremely low probability*. For each "
        "adversarial example ``x'`` of ``x`` we drew K = {samples} directions uniformly "
        "on the sphere and moved ``x`` by exactly ``||x' - x||_2`` (times the scale) along the "
        "clipped ray ``clip(x + s u, 0, 1)`` (box mode `{box}`: the exact norm is kept "
        "inside [0, 1], see `intriguing.analysis.rarity`), counting label changes; pooled rates "
        "carry exact Clopper-Pearson 95% intervals (conditional on the examples). {rays}",
        _rarity_figure,
        rarity_verdict,
    ),
    "recover": _Part(
        "## Recovering the true label with the same optimisation (issue #9, item 3)",
        "From each adversarial ``x'`` (``f(x') = t``) the targeted L-BFGS attack runs back toward "
        "the original label ``y``, giving ``x''``. Detector statistic (no label needed): ``S(z)``, "
        "the untargeted minimum distortion that changes the current prediction, on the clean "
        "``x`` and on ``x'``; small ``S`` flags an adversarial. Oracle (uses the label): "
        "``||x'' - x'||`` for ``x'`` against the targeted distortion from ``x`` to ``t`` for "
        "``x``. AUC = P(S(x') < S(x)) by the Mann-Whitney formula, with a percentile bootstrap "
        "interval resampling clean and adversarial statistics independently; failed attacks "
        "count as ``S = inf``.",
        _recover_figure,
        recover_verdict,
    ),
    "curves": _Part(
        "## Universality as a curve (issue #9, item 5)",
        "Success rate of the untargeted L-BFGS attack as a function of the distortion budget: "
        "the empirical CDF of each example's minimum distortion, failures counted as never "
        "succeeding. The L-BFGS distortion is an upper bound on the true minimum, so each curve "
        "is a lower bound on the success attainable at that budget.",
        _curves_figure,
        curves_verdict,
    ),
}
