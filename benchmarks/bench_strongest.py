"""The attack against the field's strongest (issue 18): adv-lib and foolbox peers, budget view.

    python benchmarks/bench_strongest.py --threads 1                  # n = 500 per model
    python benchmarks/bench_strongest.py --quick                      # 50 images, cheap peers only
    python benchmarks/bench_strongest.py --only-ours                  # re-run ours, reuse the peers

Untargeted L2 on the same correctly classified MNIST test images for every attack of a model (the
first ``n`` test images that every benchmark model classifies correctly), one torch thread:

- ours: ``intriguing.attacks.LBFGS()`` with its defaults;
- adv-lib 0.2.8: ALMA-1000, ALMA-100, DDN-100, FMN-100, FAB-100; foolbox 3.3.4 DDN-100;
- models: ``relu-mlp`` and ``relu-cnn`` (benchmarks/strong_models.py) and the zoo's softmax1,
  N100-100-10 and Conv (``intriguing.training.load_model``).

Per model and attack: success rate and mean RMS distortion (re-verified with the package's success
rule), the mean over examples of ``distortion / best``, ``best`` the per-example smallest distortion
any attack found, and examples/s. The throughput target is judged on ``--pairs`` interleaved timings
of ours and adv-lib DDN-100 (median of the speed ratios). Budget view (AttackBench): every attack run
once more on the first ``--budget-n`` images through :class:`budget.BudgetTracker`, which counts
forward(+backward) passes per example with the model wrapper; the best distortion within
25/50/100/250/1000 passes. Writes ``results/strongest[_quick].json``, ``.md`` and
``strongest_budget[_quick].png``. Peer results are stored per model and image set in the JSON and
reused by ``--only-ours``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import strong_models
from bench_attack import environment, measure
from budget import BUDGETS, BudgetTracker
from intriguing._io import atomic_path, atomic_write_json, atomic_write_text
from intriguing.attacks import LBFGS
from intriguing.data import load_mnist
from peers import (
    ADV_LIB_ATTACKS,
    PeerRun,
    adv_lib_missing,
    foolbox_missing,
    run_adv_lib,
    run_foolbox,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("relu-mlp", "N100-100-10", "softmax1", "relu-cnn", "Conv")
PEER_ORDER = (
    "adv-lib ALMA-1000",
    "adv-lib ALMA-100",
    "adv-lib DDN-100",
    "foolbox DDN-100",
    "adv-lib FMN-100",
    "adv-lib FAB-100",
)
OURS = "ours L-BFGS"
COLORS = dict(zip((OURS, *PEER_ORDER), ("C0", "C1", "C2", "C3", "C7", "C4", "C5"), strict=True))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="images per model (500, every model: the issue's n >= 500)",
    )
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--peers", nargs="+", default=None, help="subset of the peer names")
    p.add_argument("--budget-n", type=int, default=None, help="images for the budget view (100)")
    p.add_argument("--budget-models", nargs="+", default=None, help="models for the budget view")
    p.add_argument("--pairs", type=int, default=3, help="interleaved ours/adv-lib DDN timings")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--only-ours",
        action="store_true",
        help="rerun ours (results, speed pairs, budget view); reuse the stored peer results",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--render-only", action="store_true", help="rewrite .md and .png from the JSON")
    return p.parse_args(argv)


def image_key(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def peer_runners(
    peers: list[str],
) -> dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], PeerRun]]:
    runners: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], PeerRun]] = {}
    missing = adv_lib_missing()
    for name in ADV_LIB_ATTACKS:
        label = f"adv-lib {name}"
        if label in peers:
            if missing:
                print(f"skipping {label}: {missing}")
            else:
                runners[label] = lambda m, x, y, name=name: run_adv_lib(name, m, x, y)
    if "foolbox DDN-100" in peers:
        if foolbox_missing():
            print(f"skipping foolbox DDN-100: {foolbox_missing()}")
        else:
            runners["foolbox DDN-100"] = lambda m, x, y: run_foolbox("DDN", m, x, y)
    return runners


def run_ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> PeerRun:
    result = LBFGS(progress=False)(model, x, y)
    return PeerRun(
        OURS, result.adversarial, result.elapsed_s, float(result.grad_evals.double().mean())
    )


def bench_model(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runners: dict[str, Any],
    stored: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    key = image_key(x)
    old = stored.get(name, {})
    if args.only_ours and old and old.get("images") != key:
        # the image set depends on which models run together: never drop the stored peers
        raise SystemExit(
            f"{name}: the stored peer results were run on another image set; rerun --only-ours "
            "with the --models grouping (and --n) of the run that stored them"
        )
    rows: dict[str, Any] = dict(old.get("methods", {})) if old.get("images") == key else {}
    todo = {OURS: run_ours} if args.only_ours else {OURS: run_ours, **runners}
    run_ours(model, x[:8], y[:8])  # warm-up, untimed
    for method, run in todo.items():
        print(f"  {name}: {method} on {len(y)} images ...", flush=True)
        load = os.getloadavg()[0]
        got = run(model, x, y)
        m = measure(method, model, x, y, got.adversarial, got.elapsed_s, grad_evals=got.grad_evals)
        row = m.row()
        row["distortion"] = [
            d if s else None for d, s in zip(m.distortion.tolist(), m.success.tolist(), strict=True)
        ]
        row["load_average"] = load
        rows[method] = row
    best = torch.tensor(
        [min(_inf(r["distortion"][i]) for r in rows.values()) for i in range(len(y))]
    )
    for row in rows.values():
        d = torch.tensor([_inf(v) for v in row["distortion"]])
        ok = torch.isfinite(d)
        row["ratio_to_best"] = float((d[ok] / best[ok]).mean()) if bool(ok.any()) else None
    out: dict[str, Any] = {
        "images": key,
        "n": len(y),
        "methods": rows,
        "best_mean": float(best.mean()),
    }
    if "adv-lib DDN-100" in runners and args.pairs > 0:
        out["pairs_vs_adv_lib_ddn"] = pairs(model, x, y, runners["adv-lib DDN-100"], args.pairs)
    elif old.get("images") == key and "pairs_vs_adv_lib_ddn" in old and not args.only_ours:
        out["pairs_vs_adv_lib_ddn"] = old["pairs_vs_adv_lib_ddn"]
    return out


def _inf(value: float | None) -> float:
    """A stored distortion (None: the attack failed on that example) as a float."""
    return math.inf if value is None else value


def pairs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ddn: Any, count: int
) -> dict[str, Any]:
    """``count`` alternating timings of ours and adv-lib DDN-100: the ratios of their speeds."""
    ratios, ours_s, ddn_s = [], [], []
    for _ in range(count):
        a = run_ours(model, x, y).elapsed_s
        b = ddn(model, x, y).elapsed_s
        ours_s.append(len(y) / a)
        ddn_s.append(len(y) / b)
        ratios.append(b / a)
    return {
        "ours_per_s": ours_s,
        "ddn_per_s": ddn_s,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
    }


def budget_view(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runners: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    out = {}
    for method, run in {OURS: run_ours, **runners}.items():
        if method == "foolbox DDN-100":
            continue  # foolbox wraps the model itself; its DDN is the same algorithm as adv-lib's
        tracker = BudgetTracker(model, x, y)
        print(f"  budget {name}: {method} on {len(y)} images ...", flush=True)
        run(tracker, x, y)
        out[method] = {
            "n": len(y),
            "curve": [{k: v for k, v in r.items() if k != "best"} for r in tracker.curve()],
            **tracker.summary(),
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    """The results table, each model's command, the speed pairs and the budget view."""
    env = report["environment"]
    lines = [
        f"Command: `{env['command']}` ({env['started']}, load average at start "
        f"{env['load_average_start'][0]:.1f}, at end {report['load_average_end'][0]:.1f})",
        "",
        *_results_table(report["models"]),
        *_model_commands(report["models"]),
        "",
        *_pairs_table(report["models"]),
        "",
        "Budget view: mean RMS distortion (success rate) within k forward+backward passes "
        "per example, counted by the model wrapper.",
        "",
        *_budget_table(report.get("budget", {})),
        "",
        *_budget_verdict(report.get("budget", {})),
    ]
    return "\n".join(lines) + "\n"


def _results_table(models: dict[str, Any]) -> list[str]:
    lines = [
        "ex/s: one timing per method, with the 1-minute load average when it started (`?`: not "
        "recorded); on this shared machine only the interleaved pairs further down compare speeds.",
        "",
        "| model | n | method | success | mean RMS | ratio to best | ex/s (load) | evals/ex |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in models.items():
        for method, r in res["methods"].items():
            lines.append(
                f"| {name} | {res['n']} | {method} | {r['success_rate']:.1%} | "
                f"{_f(r['mean_distortion'], 5)} | {_f(r['ratio_to_best'], 4)} | "
                f"{_f(r['examples_per_s'], 1)} ({_f(r.get('load_average'), 1, '?')}) | "
                f"{_f(r['grad_evals_per_example'], 1)} |"
            )
    return lines


def _model_commands(models: dict[str, Any]) -> list[str]:
    """Where a model's rows come from a later run than the report's command: that run's command."""
    return [
        f"\n{name}: `{env['command']}` ({env['started']}, load average at start "
        f"{env['load_average_start'][0]:.1f})"
        for name, res in models.items()
        if (env := res.get("environment"))
    ]


def _pairs_table(models: dict[str, Any]) -> list[str]:
    lines = [
        "| model | ours/adv-lib DDN-100 speed, median of pairs | pairs | ours ex/s | DDN ex/s |",
        "|---|---|---|---|---|",
    ]
    for name, res in models.items():
        if p := res.get("pairs_vs_adv_lib_ddn"):
            ratios = ", ".join(f"{r:.2f}" for r in p["ratios"])
            lines.append(
                f"| {name} | {p['median_ratio']:.2f} | {ratios} | "
                f"{statistics.median(p['ours_per_s']):.0f} | {statistics.median(p['ddn_per_s']):.0f} |"
            )
    return lines


def _budget_table(budget: dict[str, Any]) -> list[str]:
    lines = [
        "| model | method | " + " | ".join(str(b) for b in BUDGETS) + " | passes/ex |",
        "|---|---|" + "---|" * len(BUDGETS) + "---|",
    ]
    for name, res in budget.items():
        for method, r in res.items():
            cells = [f"{_f(c['mean_distortion'], 5)} ({c['success_rate']:.0%})" for c in r["curve"]]
            lines.append(
                f"| {name} | {method} | " + " | ".join(cells) + f" | {r['passes_mean']:.0f} |"
            )
    return lines


def budget_losses(budget: dict[str, Any]) -> tuple[int, list[tuple[str, int, str, float, float]]]:
    """Issue 18's budget rule at full precision: at each (model, budget) point ours must have the
    lowest mean distortion among the peers that fool at least as many examples. Returns the number
    of points and, per lost point, ``(model, budget, peer, ours, peer's)`` for the lowest such
    peer."""
    points, losses = 0, []
    for name, res in budget.items():
        if OURS not in res:
            continue
        for ours in res[OURS]["curve"]:
            points += 1
            mine = ours["mean_distortion"]
            rivals = [
                (c["mean_distortion"], method)
                for method, r in res.items()
                if method != OURS
                for c in r["curve"]
                if c["budget"] == ours["budget"]
                and c["mean_distortion"] is not None
                and c["success_rate"] >= ours["success_rate"]
                and (mine is None or c["mean_distortion"] < mine)
            ]
            if rivals:
                theirs, method = min(rivals)
                losses.append((name, ours["budget"], method, mine, theirs))
    return points, losses


def _budget_verdict(budget: dict[str, Any]) -> list[str]:
    points, losses = budget_losses(budget)
    if points == 0:
        return []
    lines = [
        f"Budget rule (lowest among the peers that fool at least as many, full precision): ours "
        f"holds at {points - len(losses)} of {points} points."
    ]
    lines += [
        f"- lost: {name} at {b} passes, ours {_f(mine, 6)} against {method} {theirs:.6f}"
        for name, b, method, mine, theirs in losses
    ]
    return lines


def _f(v: float | None, digits: int, missing: str = "-") -> str:
    return missing if v is None else f"{v:.{digits}f}"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = report.get("budget", {})
    if not budget:
        return
    fig, axes = plt.subplots(1, len(budget), figsize=(4.5 * len(budget), 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], budget.items(), strict=True):
        for method, r in res.items():
            if r["curve"][-1]["success_rate"] < 0.5:
                continue  # a peer that fools fewer than half (FMN here) would only stretch the axis
            xs = [c["budget"] for c in r["curve"] if c["mean_distortion"] is not None]
            ys = [c["mean_distortion"] for c in r["curve"] if c["mean_distortion"] is not None]
            color = COLORS.get(method, "gray")
            ax.plot(
                xs, ys, marker="o", label=method, color=color, lw=2.5 if method == OURS else 1.2
            )
        ax.set_xscale("log")
        ax.set_xlabel("forward+backward passes per example")
        ax.set_ylabel("mean RMS distortion of the fooled")
        ax.set_title(f"{name} (attacks fooling >= 50%)", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    suffix = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    json_path = RESULTS / f"strongest{suffix}.json"
    n = args.n or (50 if args.quick else 500)
    budget_n = args.budget_n or (20 if args.quick else 100)
    names = args.models or (["relu-mlp", "softmax1"] if args.quick else list(MODELS))
    peers = args.peers or (
        ["adv-lib ALMA-100", "adv-lib DDN-100"] if args.quick else list(PEER_ORDER)
    )
    if args.render_only:
        report = json.loads(json_path.read_text())
        atomic_write_text(json_path.with_suffix(".md"), markdown(report))
        plot(report, RESULTS / f"strongest_budget{suffix}.png")
        return
    runners = peer_runners(peers)
    stored = json.loads(json_path.read_text()).get("models", {}) if json_path.exists() else {}
    report: dict[str, Any] = {
        "environment": environment("bench_strongest.py", argv, args.threads),
        "models": {},
        "budget": {},
    }
    if json_path.exists():  # models not run this time keep their stored results
        previous = json.loads(json_path.read_text())
        report["models"] = previous.get("models", {})
        report["budget"] = previous.get("budget", {})
    data = load_mnist(args.data_dir)
    models = {name: strong_models.load_any(name, args.data_dir) for name in names}
    with torch.no_grad():
        keep = torch.ones(len(data.test_labels), dtype=torch.bool)
        for model in models.values():
            keep &= (
                torch.cat([model(c).argmax(1) for c in data.test_images.split(1000)])
                == data.test_labels
            )
    x_all, y_all = data.test_images[keep], data.test_labels[keep]
    for name, model in models.items():
        x, y = x_all[:n], y_all[:n]
        start = time.perf_counter()
        report["models"][name] = bench_model(name, model, x, y, runners, stored, args)
        report["models"][name]["environment"] = report["environment"]
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        if args.only_ours and name in report["budget"]:
            # the stored peers' budget rows stay; ours is run again on the first budget_n images
            # (pass the --budget-n of the run that stored them: 100, or 50 for Conv)
            ours = budget_view(name, model, x[:budget_n], y[:budget_n], {}, args)[OURS]
            report["budget"][name][OURS] = ours
        elif not args.only_ours and (args.budget_models is None or name in args.budget_models):
            report["budget"][name] = budget_view(
                name, model, x[:budget_n], y[:budget_n], runners, args
            )
        report["load_average_end"] = list(__import__("os").getloadavg())
        atomic_write_json(json_path, report)
    text = markdown(report)
    atomic_write_text(json_path.with_suffix(".md"), text)
    plot(report, RESULTS / f"strongest_budget{suffix}.png")
    print(text)


if __name__ == "__main__":
    main()
