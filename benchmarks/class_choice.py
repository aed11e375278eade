"""The untargeted class choice (issue 18): ``candidates`` / ``candidate_ratio`` settings compared.

    python benchmarks/class_choice.py N100-100-10 300
    python benchmarks/class_choice.py relu-mlp 300 --best

The first ``n`` correctly classified of MNIST's first 3000 test images, one thread; prints success,
mean distortion and gradient evaluations per example of each setting (``--best``: also
``target="best"``, every class). Model names: the zoo's, or ``relu-mlp`` / ``relu-cnn``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

import strong_models
from intriguing.attacks import LBFGS
from intriguing.data import load_mnist
from intriguing.training import load_model

SETTINGS: list[dict[str, Any]] = [
    {"candidates": 0},
    {"candidates": 1},
    {"candidates": 2, "candidate_ratio": 1.2},
    {"candidates": 2, "candidate_ratio": 1.5},
    {"candidates": 2, "candidate_ratio": float("inf")},
]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a zoo name, or relu-mlp / relu-cnn")
    parser.add_argument("n", type=int, help="correctly classified test images")
    parser.add_argument("--best", action="store_true", help='also target="best" (every class)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    name, n = args.model, args.n
    model = strong_models.load(name) if name.startswith("relu-") else load_model(name)
    data = load_mnist()
    x, y = data.test_images[:3000], data.test_labels[:3000]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:n], y[keep][:n]
    runs = SETTINGS + ([{"target": "best"}] if args.best else [])
    for kwargs in runs:
        r = LBFGS(progress=False, **kwargs)(model, x, y)
        ok = r.success
        print(
            f"{kwargs}: success {float(ok.double().mean()):.3f} "
            f"mean {float(r.distortion[ok].double().mean()):.5f} "
            f"evals/example {float(r.grad_evals.double().mean()):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
