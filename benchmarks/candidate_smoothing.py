"""The candidates' softplus temperature (issue 18): ``CANDIDATE_SMOOTHING``.

    python benchmarks/candidate_smoothing.py Conv relu-cnn N100-100-10 relu-mlp softmax1 --split train --n 300 --values 0.3,0.5,1

Untargeted mode's candidate problems minimise ``c ||r||^2 + S softplus(d / S)`` of the lead ``d`` over
the competitors blended at the targeted temperature ``T`` (0.1); ``S = T`` is the former loss.
Per model, on its first ``--n`` correctly classified MNIST ``--split`` images (default: test), one
thread: the attack with ``S = T`` ("off"), then with ``CANDIDATE_SMOOTHING`` at each of
``--values``: success, mean RMS distortion, gradient evaluations per example, and each example's
distortion against the "off" run's (largest and smallest ratio, examples more than 0.1% worse).
Distortions and counts are exact (no timing). Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import math

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from intriguing.attacks import LBFGS, AttackResult
from prune_beaten import row


def parse_values(text: str) -> list[float]:
    """``"0.5,1"`` -> ``[0.5, 1.0]``: comma-separated finite numbers > 0; ValueError otherwise."""
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0.0 and math.isfinite(v) for v in values):
        raise ValueError(
            f"--values {text!r} must be comma-separated finite numbers > 0, e.g. 0.5,1"
        )
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 300, "images (default 300)", split=True)
    p.add_argument("--values", default="0.3,0.5,1", help="values of CANDIDATE_SMOOTHING")
    return strong_models.parse_checked(p, argv, ("n",), {"values": parse_values})


def attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, smoothing: float | None
) -> AttackResult:
    """The default attack with the candidates' softplus temperature ``smoothing`` (None: T)."""
    saved = lbfgs.CANDIDATE_SMOOTHING
    lbfgs.CANDIDATE_SMOOTHING = smoothing  # type: ignore[assignment]
    try:
        return LBFGS(progress=False)(model, x, y)
    finally:
        lbfgs.CANDIDATE_SMOOTHING = saved


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    setups = strong_models.untargeted_setups(args.models, args.data_dir, args.n, args.split)
    print(f"{args.n} first correctly classified {args.split} images per model, 1 thread")
    print("| model | S | success | mean RMS | evals/ex | largest ratio | smallest | worse >0.1% |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, x, y) in setups.items():
        base = attack(model, x, y, None)
        print(row(name, "off (S = T)", base, base), flush=True)
        for value in args.values:
            print(row(name, f"{value:g}", attack(model, x, y, value), base), flush=True)


if __name__ == "__main__":
    main()
