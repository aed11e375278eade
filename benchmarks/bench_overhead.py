"""The attack's overhead ratio across model sizes (issue 3): how much the optimiser adds to the model.

The issue's overhead ratio is ``wall / (gradient evaluations x T)``, ``T`` the time of one batched
forward+backward; 1.0 means the attack costs nothing beyond its model calls. The optimiser's own
work per iteration is fixed per pixel (two reads of the ``(B, 2m, D)`` L-BFGS memory and a few dozen
elementwise ``(B, D)`` operations), while ``T`` grows with the model. This script runs the default
untargeted attack on zoo models of increasing cost, on the first ``n`` MNIST test images that every
one of them classifies correctly, and prints per model: ``T`` at the attack's batch, the per-call
ratio (batched model calls counted by a forward hook), the full-batch-equivalent ratio, and the
floor set by the memory reads alone (see ``bench_attack.run_ours``).

Run: ``python benchmarks/bench_overhead.py [--quick] [--n N] [--models a,b] [--threads 1]
[--data-dir DIR]``; writes ``benchmarks/results/overhead.json`` (``overhead_quick.json`` with
``--quick``: 100 images).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from bench_attack import environment, run_ours, select_images
from intriguing._io import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = "softmax1,N100-100-10,N200-200-10,AE400-10,Conv,LSTM-rows"
console = Console(width=130)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 images instead of 1000")
    parser.add_argument("--n", type=int, default=None, help="images per model (default 1000)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo names")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (else the usual lookup)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/...)")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 100 if args.quick else 1000
    if args.out is None:
        args.out = RESULTS_DIR / ("overhead_quick.json" if args.quick else "overhead.json")
    return args


def measure_model(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """One untargeted run of the default attack and its overhead figures."""
    measured, overhead = run_ours(model, images, labels)
    return {
        "examples_per_s": measured.n / measured.elapsed_s,
        "success_rate": float(measured.success.double().mean()),
        "mean_distortion": float(measured.distortion[measured.success].mean()),
        "grad_evals_per_example": measured.grad_evals,
        **{key: value for key, value in overhead.items() if key != "settings"},
    }


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title="overhead ratio = wall / (batched model calls x one batched fwd+bwd)")
    for column in (
        "model",
        "fwd+bwd (ms, B rows)",
        "calls",
        "wall (s)",
        "ratio per call",
        "per full batch",
        "memory-read floor",
    ):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['forward_backward_s'] * 1e3:.2f} ({row['batch_rows']})",
            str(row["model_calls_with_grad"]),
            f"{row['wall_s']:.2f}",
            f"{row['overhead_ratio']:.2f}",
            f"{row['overhead_ratio_per_row']:.2f}",
            f"{row['ratio_floor_from_memory']:.2f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from intriguing.data import load_mnist
    from intriguing.training import load_model

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    models = {name: load_model(name) for name in names}
    data = load_mnist(args.data_dir)
    images, labels = select_images(
        list(models.values()), data.test_images, data.test_labels, args.n
    )
    argv = sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {
        "environment": environment("bench_overhead.py", argv, args.threads),
        "n": int(images.shape[0]),
        "models": {},
    }
    for name, model in models.items():
        console.rule(f"[bold]{name}")
        report["models"][name] = measure_model(model, images, labels)
        atomic_write_json(args.out, report)  # written as it goes
    report["environment"]["load_average_end"] = list(os.getloadavg())
    atomic_write_json(args.out, report)
    print_table(report["models"])
    console.print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
