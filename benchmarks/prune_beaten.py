"""Beaten untargeted candidates stop early (issue 18): ``PRUNE_BEATEN`` / ``PRUNE_FACTOR``.

    python benchmarks/prune_beaten.py Conv --n 300 --factors 1,1.02,1.05
    python benchmarks/prune_beaten.py relu-mlp N100-100-10 softmax1 AE400-10 relu-cnn Conv --split train --n 500 --factors 1.05

The untargeted attack searches its candidate classes side by side; a candidate whose stage fails at
a point ``PRUNE_FACTOR`` times as far as another class's success (or farther) stops
(``intriguing.attacks.lbfgs._Search._beaten``). Per model, on its first ``--n`` correctly
classified MNIST ``--split`` images (default: test), one thread: the attack without the rule, then
with it at each factor of ``--factors``: success, mean RMS distortion, gradient evaluations per
example, and each example's distortion against the unpruned run's (largest and smallest ratio,
examples more than 0.1% worse). Distortions and counts are exact (no timing). Bad arguments exit 2
with one line before any work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from unittest import mock

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from intriguing.attacks import LBFGS, AttackResult


def parse_factors(text: str) -> list[float]:
    """``"1,1.05"`` -> ``[1.0, 1.05]``; ValueError with the reason."""
    return strong_models.number_list(text, "--factors", "1,1.05")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 300, "images (default 300)", split=True)
    p.add_argument("--factors", default="1,1.02,1.05", help="values of PRUNE_FACTOR")
    return strong_models.parse_checked(p, argv, ("n",), {"factors": parse_factors})


def attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, factor: float | None
) -> AttackResult:
    """The default attack with the rule at ``factor`` (None: without the rule)."""
    with (
        mock.patch.object(lbfgs, "PRUNE_BEATEN", factor is not None),
        mock.patch.object(lbfgs, "PRUNE_FACTOR", 1.0 if factor is None else factor),
    ):
        return LBFGS(progress=False)(model, x, y)


def row(name: str, label: str, result: AttackResult, base: AttackResult) -> str:
    ok = result.success
    ratio = result.distortion.double() / base.distortion.double()
    worse = int((ratio > 1.001).sum())
    return (
        f"| {name} | {label} | {float(ok.double().mean()):.3f} | "
        f"{float(result.distortion[ok].double().mean()):.5f} | "
        f"{float(result.grad_evals.double().mean()):.1f} | {float(ratio.max()):.4f} | "
        f"{float(ratio.min()):.4f} | {worse} |"
    )


def compare_table(
    args: argparse.Namespace,
    column: str,
    off: str,
    variants: list[tuple[str, float]],
    attack: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, float | None], AttackResult],
) -> None:
    """Print, per model of ``args``, the attack with its change off (``attack(..., None)``) and at
    each ``(label, value)`` of ``variants``, as rows (:func:`row`) under a ``column`` header."""
    torch.set_num_threads(1)
    setups = strong_models.untargeted_setups(args.models, args.data_dir, args.n, args.split)
    print(f"{args.n} first correctly classified {args.split} images per model, 1 thread")
    print(
        f"| model | {column} | success | mean RMS | evals/ex | largest ratio | smallest | "
        "worse >0.1% |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, x, y) in setups.items():
        base = attack(model, x, y, None)
        print(row(name, off, base, base), flush=True)
        for label, value in variants:
            print(row(name, label, attack(model, x, y, value), base), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    variants = [(f"factor {factor:g}", factor) for factor in args.factors]
    compare_table(args, "rule", "off", variants, attack)


if __name__ == "__main__":
    main()
