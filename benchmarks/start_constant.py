"""The c-search's starting constant (issue 18): a fixed ``c_init`` against each problem's estimate.

    python benchmarks/start_constant.py                      # every model below, ~10 min
    python benchmarks/start_constant.py --models N100-100-10 --n 300

The first ``n`` correctly classified of MNIST's first 3000 test images (``--n``; default 1000 for
the MLPs and softmax1, 200 for the CNNs), one thread, untargeted. Settings compared, each on the
same images:

- ``c_init=5, candidates=2``: the previous default (fixed start, bracketing factor 3);
- ``c_init=None, candidates=2``: the estimated start (bracketing factor 1.5), two classes;
- ``c_init=None, candidates=3``: the default since (see ``docs/attack.md``, "Starting constant").

Targeted mode keeps the fixed start; the estimated targeted starts were measured with this script at
commit a718157 (its targeted rows) and not adopted.

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
from intriguing.attacks import LBFGS
from intriguing.data import MNIST, load_mnist
from intriguing.errors import IntriguingError
from intriguing.models.user import select_correct

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("softmax1", "N100-100-10", "relu-mlp", "relu-cnn", "Conv")
CNNS = ("relu-cnn", "Conv")
UNTARGETED: list[dict[str, Any]] = [
    {"c_init": 5.0, "candidates": 2},
    {"c_init": None, "candidates": 2},
    {"c_init": None, "candidates": 3},
]


def measure(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any
) -> dict[str, Any]:
    start = time.perf_counter()
    r = LBFGS(progress=False, **kwargs)(model, x, y)
    seconds = time.perf_counter() - start
    ok = r.success
    return {
        "settings": kwargs,
        "n": len(y),
        "success_rate": float(ok.double().mean()),
        "mean_rms": float(r.distortion[ok].double().mean()),
        "evals_per_example": float(r.grad_evals.double().mean()),
        "seconds": seconds,
    }


def bench_model(
    name: str, model: torch.nn.Module, data: MNIST, n: int | None
) -> list[dict[str, Any]]:
    size = n if n is not None else (200 if name in CNNS else 1000)
    x, y, _ = select_correct(model, data.test_images[:3000], data.test_labels[:3000], size)
    rows = []
    for kwargs in UNTARGETED:
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
        "| model | n | c_init | candidates | success | mean RMS | evals/example |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["settings"]
        start = "estimate" if s["c_init"] is None else s["c_init"]
        lines.append(
            f"| {r['model']} | {r['n']} | {start} | {s['candidates']} | "
            f"{100 * r['success_rate']:.1f}% | {r['mean_rms']:.5f} | {r['evals_per_example']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--n", type=int, default=None, help="images per model (>= 1)")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    torch.set_num_threads(1)
    try:  # every model and the data before any attack: a wrong name stops in one line
        models = {name: strong_models.load_any(name) for name in args.models}
        data = load_mnist()
    except IntriguingError as err:
        p.exit(2, f"start_constant.py: error: {err}\n")
    rows = [row for name, model in models.items() for row in bench_model(name, model, data, args.n)]
    env = environment("start_constant.py", argv, threads=1)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "start_constant.json", {"environment": env, "rows": rows})
    text = markdown(rows, env["command"])
    atomic_write_text(RESULTS / "start_constant.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
