"""The "fewer classes" report section (issue #9, item 4), rendered from ``results.json`` only.

- :func:`verdict`: one sentence answering "if the number of classes is small, will the problem be
  less severe?", computed from the stored numbers;
- :func:`plot_classes`: mean minimum distortion (95% CI) against the number of classes per model
  family, and the MLP -> second-MLP transfer rate;
- :func:`classes_markdown`: the section (verdict, tables, figure);
- :func:`write_classes_report`: ``classes.md`` and ``classes.png`` beside ``results.json``.

The measurements come from :mod:`intriguing.experiments.classes` (paper §4.1's attack, §4.2's
models, on MNIST tasks with 2 to 10 classes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intriguing._io import atomic_write_text, read_results
from intriguing.errors import IntriguingError
from intriguing.report.blocks import markdown_table
from intriguing.report.render import num, pct

SCHEMA = "intriguing.classes/1"  # results.json of a run (written by experiments.classes.summary)
FIGURE = "classes.png"
MARKDOWN = "classes.md"
LESS_SEVERE = 1.2  # a mean-distortion ratio beyond this counts as "larger" (20%)
NOISE_LEVEL = 0.1  # the paper's Gaussian-noise stddev that barely changes MNIST errors (Table 2)
COLORS = {"softmax": "tab:blue", "mlp": "tab:orange", "ae-probe": "tab:green", "mlp-b": "tab:red"}


def load_classes_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run_dir/results.json`` of a ``classes`` run, checked for its schema.

    Raises:
        IntriguingError: missing, corrupt, or not a ``classes`` results file.
    """
    doc = read_results(run_dir, SCHEMA, command="classes")
    if not isinstance(doc.get("rows"), list):
        raise IntriguingError(
            f"{Path(run_dir) / 'results.json'}: no rows; rerun `intriguing classes`"
        )
    return doc


def _rows(doc: Mapping[str, Any], **match: Any) -> list[Mapping[str, Any]]:
    return [r for r in doc["rows"] if all(r.get(k) == v for k, v in match.items())]


def _mean(row: Mapping[str, Any]) -> float | None:
    dist = row.get("distortion") or {}
    value = dist.get("mean")
    return None if value is None else float(value)


def _ci(pair: Sequence[float] | None, fmt: str = "{:.3f}") -> str:
    return "" if not pair else f" [{fmt.format(pair[0])}, {fmt.format(pair[1])}]"


# -------------------------------------------------------------------------------------- verdict


def distortion_ratios(doc: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """``{(task, family): ratio}``: each fewest-class task model's mean minimum distortion over that
    of the same family's model on the task with the most classes (empty with a single K)."""
    out: dict[tuple[str, str], float] = {}
    ks = sorted({int(r["num_classes"]) for r in doc["rows"]})
    if len(ks) < 2:
        return out
    for family in dict(doc["families"]):
        large = [m for r in _rows(doc, family=family, num_classes=ks[-1]) if (m := _mean(r))]
        if not large:
            continue
        for row in _rows(doc, family=family, num_classes=ks[0]):
            if (m := _mean(row)) is not None:
                out[(str(row["task"]), family)] = m / (sum(large) / len(large))
    return out


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _transfer_rate(doc: Mapping[str, Any], k: int, source: str, target: str) -> float | None:
    rates = []
    for row in _rows(doc, family=source, num_classes=k):
        t = (row.get("transfer") or {}).get(target)
        if t and t.get("rate") is not None:
            rates.append(float(t["rate"]))
    return sum(rates) / len(rates) if rates else None


def _paired_factors(doc: Mapping[str, Any], k: int) -> tuple[list[float], list[float]]:
    """For the k-class rows: (restricted / untargeted, task / restricted) ratios of the 10-class
    comparison on the same images (the alternatives factor and the training factor)."""
    alternatives, training = [], []
    for row in _rows(doc, num_classes=k):
        s = row.get("restricted") or {}
        r_any = (s.get("restricted_over_untargeted") or {}).get("ratio")
        t_res = (s.get("task_over_restricted") or {}).get("ratio")
        if r_any and t_res:
            alternatives.append(float(r_any))
            training.append(float(t_res))
    return alternatives, training


def verdict(doc: Mapping[str, Any]) -> str:
    """One sentence answering the critique's question from the stored numbers.

    Size: the geometric mean over (fewest-class task, family) of the mean-distortion ratio to the
    most-class task (beyond :data:`LESS_SEVERE` either way counts). Kind: every fewest-class model
    still fooled on (almost) every image below the paper's noise level. Cause: the same-image 10-class comparison
    splits the ratio into fewer alternatives x training for the task (geometric means).
    """
    ratios = distortion_ratios(doc)
    attacked = [r for r in doc["rows"] if r.get("success_rate") is not None]
    ks = sorted({int(r["num_classes"]) for r in doc["rows"]})
    if len(ks) < 2 or not attacked:
        return (
            "No verdict: the run needs tasks with at least two different numbers of classes "
            "and one attacked family."
        )
    if not ratios:
        never = sorted({int(r["num_classes"]) for r in attacked if _mean(r) is None})
        return (
            "No verdict: no distortion ratio can be formed, as the "
            f"{' and '.join(f'{k}-class' for k in never)} models were fooled on no image "
            "(success 0%); attack more images (--n)."
        )
    overall = _geomean(list(ratios.values()))
    if overall >= LESS_SEVERE:
        size = "less severe in size"
    elif overall <= 1 / LESS_SEVERE:
        size = "more severe in size"
    else:
        size = "about as severe in size"
    # the sentence speaks of the fewest-class models: their rows only (not every task's)
    fewest = [r for r in attacked if int(r["num_classes"]) == ks[0]] or attacked
    success = min(float(r["success_rate"]) for r in fewest)
    worst = max((m for r in fewest if (m := _mean(r)) is not None), default=math.nan)
    small_noise = success >= 0.99 and worst < NOISE_LEVEL
    tasks = list(dict.fromkeys(task for task, _ in ratios))
    per_task = ", ".join(
        f"{t} {min(v for (u, _), v in ratios.items() if u == t):.2f}-"
        f"{max(v for (u, _), v in ratios.items() if u == t):.2f}x"
        for t in tasks
    )
    fooled = "all" if success == 1.0 else f"at least {pct(success)}"
    sentence = (
        f"Fewer classes make the problem {size}{' but not in kind' if small_noise else ''}: "
        f"the {ks[0]}-class models need {overall:.2f}x (geometric mean; {per_task} over the model "
        f"families) the mean minimum distortion of their {ks[-1]}-class counterparts, yet L-BFGS "
        f"fooled {fooled} of their correctly classified test images at a mean RMS distortion of "
        f"at most {num(worst)}"
    )
    alternatives, training = _paired_factors(doc, ks[0])
    if alternatives:
        a_g, t_g = _geomean(alternatives), _geomean(training)
        sentence += (
            f"; on the same images, restricting a 10-class model to the task's other classes "
            f"raises its distortion {a_g:.2f}x, and training a model for the task changes it by a "
            f"further {t_g:.2f}x ({min(training):.2f}-{max(training):.2f}x)"
        )
        if abs(math.log(t_g)) < abs(math.log(a_g)) / 2:
            sentence += (
                ", so the gain comes from having fewer wrong classes to reach, "
                "not from a more robust model"
            )
    t_small = _transfer_rate(doc, ks[0], "mlp", "mlp-b")
    t_large = _transfer_rate(doc, ks[-1], "mlp", "mlp-b")
    if t_small is not None and t_large is not None:
        how = "at least as often" if t_small >= t_large else "less often"
        sentence += (
            f"; and MLP examples transfer to the second MLP {how} ({pct(t_small)} with {ks[0]} "
            f"classes, {pct(t_large)} with {ks[-1]})"
        )
    return sentence + "."


# ---------------------------------------------------------------------------------------- plots


def _positions(doc: Mapping[str, Any]) -> dict[str, float]:
    """x position per task: its number of classes; tasks with the same K are spread 1 apart."""
    by_k: dict[int, list[str]] = {}
    for task in doc["tasks"]:
        by_k.setdefault(int(task["num_classes"]), []).append(str(task["name"]))
    pos: dict[str, float] = {}
    for k, names in by_k.items():
        for i, name in enumerate(names):
            pos[name] = k + 1.0 * (i - (len(names) - 1) / 2)
    return pos


def _k_means(points: Sequence[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """Per number of classes K, the average of the values (for the trend line)."""
    by_k: dict[int, list[float]] = {}
    for k, value in points:
        by_k.setdefault(k, []).append(value)
    ks = sorted(by_k)
    return ks, [sum(by_k[k]) / len(by_k[k]) for k in ks]


def plot_classes(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Left: mean minimum distortion (95% CI) of each task's models against the number of classes
    (one marker per task, the line through the per-K averages; crosses: the 10-class model on the
    same images restricted to the task's other classes). Right: transfer rate to ``mlp-b``."""
    pos = _positions(doc)
    import matplotlib.pyplot as plt  # only when drawing (plotting selects the Agg backend)

    from intriguing.report.plotting import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for family in dict(doc["families"]):
        rows = [r for r in _rows(doc, family=family) if _mean(r) is not None]
        if not rows:
            continue
        color = COLORS.get(family)
        ys = [_mean(r) or 0.0 for r in rows]
        cis = [r["distortion"].get("mean_ci") or [y, y] for r, y in zip(rows, ys, strict=True)]
        err = [
            [y - c[0] for y, c in zip(ys, cis, strict=True)],
            [c[1] - y for y, c in zip(ys, cis, strict=True)],
        ]
        xs = [pos[r["task"]] for r in rows]
        left.errorbar(xs, ys, yerr=err, marker="o", linestyle="none", capsize=3, color=color)
        trend = _k_means([(int(r["num_classes"]), y) for r, y in zip(rows, ys, strict=True)])
        left.plot(*trend, color=color, alpha=0.6, label=family)
        restricted = [
            (pos[r["task"]], r["restricted"]["all_restricted"]["mean"])
            for r in rows
            if (r.get("restricted") or {}).get("all_restricted", {}).get("mean") is not None
        ]
        if restricted:
            left.plot(
                *zip(*restricted, strict=True),
                linestyle="none",
                marker="x",
                color=color,
                markersize=8,
                label=f"{family}: 10-class model, task's classes only",
            )
        transfer = [
            (pos[r["task"]], int(r["num_classes"]), r["transfer"]["mlp-b"]["rate"])
            for r in rows
            if (r.get("transfer") or {}).get("mlp-b", {}).get("rate") is not None
        ]
        if transfer:
            right.plot(
                [t[0] for t in transfer],
                [t[2] for t in transfer],
                marker="o",
                linestyle="none",
                color=color,
            )
            right.plot(
                *_k_means([(t[1], t[2]) for t in transfer]),
                color=color,
                alpha=0.6,
                label=f"{family} -> mlp-b",
            )
    for ax in (left, right):
        ax.set_xticks(sorted(pos.values()))
        ax.set_xticklabels(_tick_labels(doc, pos), fontsize=8)
        ax.set_xlabel("task (number of classes)")
        ax.grid(alpha=0.3)
    left.set_ylabel("mean minimum distortion (RMS per pixel)")
    left.set_title("untargeted L-BFGS, 95% bootstrap CI")
    right.set_ylabel("share of adversarial examples misclassified")
    right.set_ylim(0, 1)
    right.set_title("transfer to the second MLP (mlp-b)")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing to show in this run", ha="center", transform=ax.transAxes)
    return save_figure(fig, path)


def _tick_labels(doc: Mapping[str, Any], pos: Mapping[str, float]) -> list[str]:
    ordered = sorted(doc["tasks"], key=lambda t: pos[str(t["name"])])
    return [f"{t['name']}\n({t['num_classes']})" for t in ordered]


# ------------------------------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [*markdown_table(header, rows), ""]


def distortion_table(doc: Mapping[str, Any]) -> list[str]:
    """Per task and family: errors, attacked images, success, mean/median distortion with CIs."""
    rows = []
    for r in doc["rows"]:
        dist = r.get("distortion") or {}
        exact = r.get("exact") or {}
        rows.append(
            [
                r["task"],
                str(r["num_classes"]),
                r["family"],
                pct(r["train_error"]),
                pct(r["test_error"]),
                str(r.get("n_attacked", "-")) if r.get("attacked") else "(target only)",
                pct(r.get("success_rate")),
                num(dist.get("mean"), 4) + _ci(dist.get("mean_ci"), "{:.4f}"),
                num(dist.get("median"), 4) + _ci(dist.get("median_ci"), "{:.4f}"),
                num(exact.get("mean"), 4) if exact else "-",
            ]
        )
    header = [
        "task",
        "K",
        "model",
        "train err",
        "test err",
        "attacked",
        "fooled",
        "mean distortion [95% CI]",
        "median [95% CI]",
        "exact optimum (mean)",
    ]
    return _table(header, rows)


def transfer_table(doc: Mapping[str, Any]) -> list[str]:
    """Rows (task, source); columns: each target family's transfer rate [Wilson 95% CI]."""
    families = list(dict(doc["families"]))
    rows = []
    for r in doc["rows"]:
        transfer = r.get("transfer")
        if not transfer:
            continue
        cells = []
        for target in families:
            t = transfer.get(target)
            if t is None:
                cells.append("-" if target != r["family"] else "(100%)")
                continue
            cells.append(f"{pct(t['rate'])}{_ci(t['rate_ci'], '{:.2f}')} (n={t['n']})")
        rows.append([r["task"], str(r["num_classes"]), r["family"], *cells])
    return _table(["task", "K", "made for", *[f"on {f}" for f in families]], rows)


def restricted_table(doc: Mapping[str, Any]) -> list[str]:
    """Task model vs the 10-class model (untargeted; restricted to the task's other classes)."""
    rows = []
    for r in doc["rows"]:
        s = r.get("restricted")
        if not s:
            continue
        t_over = s["task_over_restricted"]
        r_over = s["restricted_over_untargeted"]
        exact = s.get("exact")
        rows.append(
            [
                r["task"],
                str(r["num_classes"]),
                r["family"],
                str(s["n_paired"]),
                num(s["task_mean"], 4),
                num(s["all_restricted"]["mean"], 4),
                num(s["all_untargeted"]["mean"], 4),
                num(t_over["ratio"], 2) + _ci(t_over["ratio_ci"], "{:.2f}"),
                num(r_over["ratio"], 2) + _ci(r_over["ratio_ci"], "{:.2f}"),
                "-"
                if not exact
                else f"{num(exact['task_mean'], 4)} / {num(exact['all_restricted_mean'], 4)} / "
                f"{num(exact['all_untargeted_mean'], 4)}",
            ]
        )
    header = [
        "task",
        "K",
        "model",
        "images",
        "task model",
        "10-class, task's classes",
        "10-class, any class",
        "task / restricted [CI]",
        "restricted / any [CI]",
        "exact: task / restricted / any",
    ]
    return _table(header, rows)


def classes_markdown(doc: Mapping[str, Any], figure: str | None = FIGURE) -> str:
    """The report section as markdown (``figure``: the PNG's path relative to the markdown)."""
    cfg = doc["config"]
    tasks = ", ".join(f"`{t['name']}` ({t['description']})" for t in doc["tasks"])
    lines = [
        "## Fewer classes: is the problem less severe? (issue #9, item 4)",
        "",
        f"**Verdict.** {verdict(doc)}",
        "",
        f"Tasks: {tasks}. "
        f"Every model is trained on the task's training images with minibatch Adam "
        f"(at least {cfg['updates']} updates of {cfg['batch_size']} images, rounded up to whole "
        f"epochs of the task's training images) and the zoo's weight decay; untargeted L-BFGS "
        f"(§4.1) on up to the first {cfg['n']} test images of the task that the model classifies "
        f"correctly (the tables count them) ({cfg['dataset']}, seed {cfg['seed']}). "
        "Distortion is the paper's RMS per pixel over successful examples; intervals are 95% "
        f"percentile bootstraps ({cfg['bootstrap']} resamples) and Wilson intervals for rates.",
        "",
        "### Minimum distortion per task and model",
        "",
        *distortion_table(doc),
    ]
    if figure:
        lines += [f"![distortion vs number of classes]({figure})", ""]
    transfer = transfer_table(doc)
    lines += ["### Transfer between the task's models", ""]
    if len(transfer) > 3:  # a header, its rule and the blank line: no rows
        lines += [
            "Share of the successful adversarial examples made for one model that another model "
            "of the same task misclassifies, over the images that model classifies correctly when "
            "clean.",
            "",
            *transfer,
        ]
    else:
        lines += [
            "None: each task has one model family, so there is no other model to transfer to.",
            "",
        ]
    restricted = restricted_table(doc)
    if len(restricted) > 3:
        lines += [
            "### Same images, 10-class model: fewer alternatives or a different model?",
            "",
            "An untargeted attack on a K-class model may reach any of K-1 other classes, so a "
            "2-class model has fewer ways to be wrong. On the task model's attacked images (those "
            "the 10-class model of the same family also classifies correctly) the 10-class model "
            "is attacked twice: untargeted (any other digit) and restricted to the digits of the "
            "task's other classes (one targeted attack per allowed digit, the smallest kept). "
            "Ratios are of means over the same images (paired bootstrap CIs).",
            "",
            *restricted,
        ]
    timings = doc.get("timings") or {}
    if timings:
        lines += [
            f"Run: {num(timings.get('wall_time_s'), 0)} s wall, "
            f"{num(timings.get('cpu_time_s'), 0)} s CPU with {timings.get('torch_threads')} "
            f"torch thread(s); {timings.get('steps_reused')} of {timings.get('steps_total')} steps "
            f"reused from an earlier run; computing all steps took "
            f"{num(timings.get('steps_wall_time_s'), 0)} s wall in total.",
            "",
        ]
    return "\n".join(lines)


def write_classes_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``classes.md`` and ``classes.png`` into ``run_dir`` from its ``results.json``."""
    root = Path(run_dir)
    doc = load_classes_results(root)
    figure = plot_classes(doc, root / FIGURE)
    markdown = root / MARKDOWN
    atomic_write_text(markdown, classes_markdown(doc, FIGURE))
    return {"markdown": markdown, "figure": figure}
