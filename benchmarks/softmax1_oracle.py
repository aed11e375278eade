"""Zoo softmax1: the default attack against the exact QP optimum (issue 18 target), 500 images.

    python benchmarks/softmax1_oracle.py                          # softmax1, 500 images
    python benchmarks/softmax1_oracle.py --model softmax3 --n 300  # any affine zoo model
    python benchmarks/softmax1_oracle.py --model softmax3 --scale 10  # its logits times 10

Untargeted: against the minimum of the exact optima over all targets; targeted: label + 1. The first
``--n`` MNIST test images the model classifies correctly, one thread. ``--model``: softmax1, softmax2
or softmax3 (the affine zoo models, for which the minimum-distortion problem is a convex QP);
``--scale A`` multiplies the model's weights and bias by ``A > 0`` (the same decisions and the same
optimum, logits ``A`` times larger: how the attack depends on the logits' scale, docs/attack.md
"Small logits"); bad arguments exit 2 with one line.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from intriguing.attacks import LBFGS, AttackResult
from intriguing.attacks.exact_linear import ExactLinearResult, exact_linear_attack
from intriguing.data import load_mnist
from intriguing.errors import IntriguingError
from intriguing.models.user import select_correct
from intriguing.training import load_model


def line(name: str, found: AttackResult, optimum: ExactLinearResult) -> str:
    """Success, mean distortion, the optimum's mean, the gap and the smallest per-image ratio."""
    mean, best = float(found.distortion.double().mean()), float(optimum.distortion.mean())
    ratio = float((found.distortion.double() / optimum.distortion).min())
    return (
        f"{name}: success {float(found.success.double().mean()):.3f} mean {mean:.5f} "
        f"optimum {best:.5f} gap {mean / best - 1:+.3%} min ratio {ratio:.6f}"
    )


AFFINE_MODELS = ("softmax1", "softmax2", "softmax3")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=AFFINE_MODELS, default="softmax1")
    p.add_argument("--n", type=int, default=500, help="images (default 500)")
    p.add_argument("--scale", type=float, default=1.0, help="logit scale (default 1)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.exit(2, "error: --n must be >= 1\n")
    if not (math.isfinite(args.scale) and args.scale > 0):
        p.exit(2, "error: --scale must be a finite number > 0\n")
    return args


def scaled(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """``model`` with every parameter multiplied by ``scale`` in place (an affine model's logits
    become ``scale`` times larger; its decisions do not change)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    try:  # missing data or too few correct images: one line, before any attack
        model = scaled(load_model(args.model), args.scale)
        data = load_mnist()
        x, y, _ = select_correct(model, data.test_images, data.test_labels, args.n)
    except IntriguingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    t = (y + 1) % 10
    untargeted = LBFGS(progress=False)(model, x, y)
    print(line("untargeted", untargeted, exact_linear_attack(model, x, y, progress=False)))
    targeted = LBFGS(mode="targeted", progress=False)(model, x, y, targets=t)
    print(line("targeted", targeted, exact_linear_attack(model, x, targets=t, progress=False)))


if __name__ == "__main__":
    main()
