"""How the attack's distortion depends on the scale of a model's logits (issue 18).

    python benchmarks/logit_scale.py N100-100-10 --n 200 --scales 1 0.03 0.01 0.001
    python benchmarks/logit_scale.py N100-100-10 --n 50 --scales 1 10 100 --ceilings 1000 50

The decisions of a classifier do not change when its logits are multiplied by a constant ``A > 0``;
the attack's loss does (docs/attack.md, "Small logits"). For each ``A`` this runs the default attack,
untargeted and targeted (``label + 1``), on the model wrapped as ``A * model(x)``, on the first
``--n`` MNIST test images the model classifies correctly, one thread, and prints success, mean
distortion and gradient evaluations per image; ``--ceilings`` repeats it with the attack's
``LOGIT_CEILING`` set to each value (the scale-down threshold for large logits). Models: the zoo's names and the benchmark's
``relu-mlp`` / ``relu-cnn`` (:func:`strong_models.load_any`). Bad arguments exit 2 with one line
before any work.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import nn

import strong_models
from intriguing.attacks import LBFGS, AttackResult, lbfgs
from intriguing.data import load_mnist
from intriguing.errors import IntriguingError
from intriguing.models.user import select_correct


class ScaledLogits(nn.Module):
    """``scale * model(x)``: the same decisions as ``model``, logits ``scale`` times larger."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="a zoo name, relu-mlp or relu-cnn")
    p.add_argument("--n", type=int, default=200, help="images (default 200)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.01, 0.001])
    p.add_argument("--ceilings", type=float, nargs="+", default=[lbfgs.LOGIT_CEILING])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if args.n < 1:
        p.exit(2, "error: --n must be >= 1\n")
    if not all(math.isfinite(a) and a > 0 for a in args.scales):
        p.exit(2, "error: every --scales value must be a finite number > 0\n")
    if not all(c > 0 for c in args.ceilings):
        p.exit(2, "error: every --ceilings value must be > 0\n")
    return args


def summary(result: AttackResult) -> str:
    success = float(result.success.double().mean())
    mean = float(result.distortion.double().mean())
    evals = float(result.grad_evals.double().mean())
    return f"success {success:.3f} mean {mean:.5f} evaluations {evals:.1f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    try:
        model = strong_models.load_any(args.model, args.data_dir)
        data = load_mnist(args.data_dir)
        x, y, _ = select_correct(model, data.test_images, data.test_labels, args.n)
    except (IntriguingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for ceiling in args.ceilings:
        lbfgs.LOGIT_CEILING = ceiling
        for scale in args.scales:
            scaled = ScaledLogits(model, scale).eval()
            for mode in ("untargeted", "targeted"):
                targets = (y + 1) % 10 if mode == "targeted" else None
                result = LBFGS(mode=mode, progress=False)(scaled, x, y, targets=targets)
                print(
                    f"{args.model} ceiling {ceiling:g} x{scale:g} {mode}: {summary(result)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
