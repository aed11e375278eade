"""The optimiser's fused CPU kernels against its torch step (issue 18): interleaved whole attacks.

    python benchmarks/fused_step.py softmax1,N100-100-10,relu-mlp --n 500 --rounds 3

For each model: the first ``--n`` correctly classified MNIST test images, untargeted, one thread;
``--rounds`` alternating runs of the default attack (on a CPU, ``BoxLBFGS``'s fused kernels,
``intriguing.attacks.fused``) and of the same attack with the torch step (``fused=False``, what a
GPU runs), each timed by the attack itself. Prints a table (examples/s per round, the median speed
ratio, mean RMS distortion, successes and evaluations per example of both) and writes it as JSON
with ``--json FILE``. The two steps round sums differently, so distortions agree to about 1e-4
relative, not bit for bit. Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import strong_models
from intriguing._io import atomic_write_json
from intriguing.attacks import LBFGS, AttackResult, optim
from intriguing.cli.validation import check_output_file
from intriguing.errors import IntriguingError


@contextmanager
def torch_step() -> Iterator[None]:
    """While open, every new ``BoxLBFGS`` takes the torch step (as ``fused=False``)."""
    original = optim._fused_supported
    optim._fused_supported = lambda device, dtype: False  # type: ignore[assignment]
    try:
        yield
    finally:
        optim._fused_supported = original  # type: ignore[assignment]


def attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool) -> AttackResult:
    if fused:
        return LBFGS(progress=False)(model, x, y)
    with torch_step():
        return LBFGS(progress=False)(model, x, y)


def summary(result: AttackResult) -> dict[str, float]:
    return {
        "mean_distortion": float(result.distortion[result.success].mean()),
        "success_rate": float(result.success.double().mean()),
        "grad_evals_per_example": float(result.grad_evals.double().mean()),
    }


def compare(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rounds: int
) -> dict[str, Any]:
    """``rounds`` alternating fused / torch attacks on ``x``, ``y``: speeds and summaries."""
    n = len(y)
    for fused in (True, False):  # warm-up: numba's compilation or cache load, first allocations
        attack(model, x[:8], y[:8], fused)
    speeds: dict[str, list[float]] = {"fused": [], "torch": []}
    last: dict[str, AttackResult] = {}
    for _ in range(rounds):
        for label, fused in (("fused", True), ("torch", False)):
            last[label] = attack(model, x, y, fused)
            speeds[label].append(n / last[label].elapsed_s)
    ratios = [f / t for f, t in zip(speeds["fused"], speeds["torch"], strict=True)]
    return {
        "n": len(y),
        "examples_per_s": speeds,
        "median_speed_ratio": statistics.median(ratios),
        "fused": summary(last["fused"]),
        "torch": summary(last["torch"]),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| model | n | fused ex/s | torch ex/s | fused / torch (median) "
        "| mean RMS fused / torch | evals/ex fused / torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["models"].items():
        f, t = r["fused"], r["torch"]
        speeds = [", ".join(f"{v:.0f}" for v in r["examples_per_s"][k]) for k in ("fused", "torch")]
        lines.append(
            f"| {name} | {r['n']} | {speeds[0]} | {speeds[1]} | {r['median_speed_ratio']:.2f} "
            f"| {f['mean_distortion']:.5f} / {t['mean_distortion']:.5f} "
            f"| {f['grad_evals_per_example']:.1f} / {t['grad_evals_per_example']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", help="comma-separated: zoo names, relu-mlp, relu-cnn")
    p.add_argument("--n", type=int, default=500, help="images per model (default 500)")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs (default 3)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        p.exit(2, "error: --n and --rounds must be >= 1\n")
    if args.json:
        try:  # before any attack: a result that cannot be written is known now
            check_output_file(Path(args.json))
        except IntriguingError as exc:
            p.exit(2, f"error: --json {exc}\n")
    names = [m for m in args.models.split(",") if m]
    if not names:
        p.exit(2, "error: name at least one model\n")
    torch.set_num_threads(1)
    # every model and image set before any attack: an unknown name exits 2 at once
    setups = strong_models.untargeted_setups(names, args.data_dir, args.n, "test")
    report: dict[str, Any] = {"load_average_start": os.getloadavg()[0], "models": {}}
    for name, (model, x, y) in setups.items():
        report["models"][name] = compare(model, x, y, args.rounds)
    report["load_average_end"] = os.getloadavg()[0]
    print(table(report))
    if args.json:
        atomic_write_json(args.json, report)


if __name__ == "__main__":
    main()
