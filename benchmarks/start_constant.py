"""The c-search's starting constant (issue 18): a fixed ``c_init`` against each problem's estimate.

    python benchmarks/start_constant.py                      # every model below, ~10 min
    python benchmarks/start_constant.py --models N100-100-10 --n 300

The first ``n`` correctly classified of MNIST's first 3000 test images (``--n``; default 1000 for
the MLPs and softmax1, 200 for the CNNs), one thread, untargeted and targeted (``label + 1 mod
10``). Settings compared, each on the same images:

- ``c_init=5, candidates=2``: the previous default (fixed start, bracketing factor 3);
- ``c_init=None, candidates=2``: the estimated start (bracketing factor 1.5), two classes;
- ``c_init=None, candidates=3``: the default since (see ``docs/attack.md``, "Starting constant");
- targeted: ``c_init=5``; the estimate itself (``TARGETED_START = 1``, an ablation); the default
  (twice the estimate).

Prints success, mean RMS distortion over successes and gradient evaluations per example (the
attack's own count, the class estimate and the constants' estimate included), and writes
``results/start_constant.json`` and ``.md``. Model names: the zoo's, or ``relu-mlp`` /
``relu-cnn`` (``strong_models.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

import strong_models
from bench_attack import environment
from intriguing._io import atomic_write_json, atomic_write_text
from intriguing.attacks import LBFGS, lbfgs
from intriguing.data import load_mnist
from intriguing.training import load_model

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("softmax1", "N100-100-10", "relu-mlp", "relu-cnn", "Conv")
CNNS = ("relu-cnn", "Conv")
UNTARGETED: list[dict[str, Any]] = [
    {"c_init": 5.0, "candidates": 2},
    {"c_init": None, "candidates": 2},
    {"c_init": None, "candidates": 3},
]
# targeted_start: an ablation of lbfgs.TARGETED_START (the default 2 starts above the estimate)
TARGETED: list[dict[str, Any]] = [
    {"c_init": 5.0},
    {"c_init": None, "targeted_start": 1.0},
    {"c_init": None},
]


def measure(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any
) -> dict[str, Any]:
    targets = (y + 1) % 10 if kwargs.get("mode") == "targeted" else None
    settings = {k: v for k, v in kwargs.items() if k != "targeted_start"}
    default_start = lbfgs.TARGETED_START
    lbfgs.TARGETED_START = kwargs.get("targeted_start", default_start)
    try:
        start = time.perf_counter()
        r = LBFGS(progress=False, **settings)(model, x, y, targets=targets)
        seconds = time.perf_counter() - start
    finally:
        lbfgs.TARGETED_START = default_start
    ok = r.success
    return {
        "settings": kwargs,
        "n": len(y),
        "success_rate": float(ok.double().mean()),
        "mean_rms": float(r.distortion[ok].double().mean()),
        "evals_per_example": float(r.grad_evals.double().mean()),
        "seconds": seconds,
    }


def bench_model(name: str, n: int | None) -> list[dict[str, Any]]:
    model = strong_models.load(name) if name.startswith("relu-") else load_model(name)
    data = load_mnist()
    x, y = data.test_images[:3000], data.test_labels[:3000]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    size = n if n is not None else (200 if name in CNNS else 1000)
    x, y = x[keep][:size], y[keep][:size]
    rows = []
    for kwargs in UNTARGETED + [{**t, "mode": "targeted"} for t in TARGETED]:
        row = {"model": name, **measure(model, x, y, **kwargs)}
        print(
            f"{name} {kwargs}: success {row['success_rate']:.3f} mean {row['mean_rms']:.5f} "
            f"evals/example {row['evals_per_example']:.1f}",
            flush=True,
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| model | n | mode | c_init | candidates | success | mean RMS | evals/example |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["settings"]
        start = s["c_init"]
        if start is None:
            factor = s.get("targeted_start", 2.0) if s.get("mode") == "targeted" else 1.0
            start = "estimate" if factor == 1.0 else f"{factor:g} x estimate"
        lines.append(
            f"| {r['model']} | {r['n']} | {s.get('mode', 'untargeted')} | "
            f"{start} | {s.get('candidates', '-')} | "
            f"{100 * r['success_rate']:.1f}% | {r['mean_rms']:.5f} | {r['evals_per_example']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--n", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for name in args.models for row in bench_model(name, args.n)]
    env = environment("start_constant.py", argv, threads=1)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "start_constant.json", {"environment": env, "rows": rows})
    text = markdown(rows, env["command"])
    atomic_write_text(RESULTS / "start_constant.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
