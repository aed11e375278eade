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
from unittest import mock

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from intriguing.attacks import LBFGS, AttackResult
from prune_beaten import compare_table


def parse_values(text: str) -> list[float]:
    """``"0.5,1"`` -> ``[0.5, 1.0]``; ValueError with the reason."""
    return strong_models.number_list(text, "--values", "0.5,1", positive=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 300, "images (default 300)", split=True)
    p.add_argument("--values", default="0.3,0.5,1", help="values of CANDIDATE_SMOOTHING")
    return strong_models.parse_checked(p, argv, ("n",), {"values": parse_values})


def attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, smoothing: float | None
) -> AttackResult:
    """The default attack with the candidates' softplus temperature ``smoothing`` (None: T)."""
    with mock.patch.object(lbfgs, "CANDIDATE_SMOOTHING", smoothing):
        return LBFGS(progress=False)(model, x, y)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    variants = [(f"{value:g}", value) for value in args.values]
    compare_table(args, "S", "off (S = T)", variants, attack)


if __name__ == "__main__":
    main()
