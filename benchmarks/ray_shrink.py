"""The final move of each success toward its original (issue 18): ``RAY_SPAN`` / ``RAY_STEPS``.

    python benchmarks/ray_shrink.py N100-100-10 softmax1 relu-mlp relu-cnn Conv --n 200

After the c-search the attack moves every success along the segment to its original, to the nearest
point within ``RAY_SPAN`` that is still a success (``LBFGS._shrink_along_rays``: bisection with
``RAY_STEPS`` forward passes). Per model and mode (untargeted; targeted toward ``label + 1``), on the
first ``--n`` correctly classified MNIST test images, one thread: the attack without the move
(``RAY_STEPS = 0``) and with it: success, mean RMS distortion, the change, how many examples moved
and whether any came out farther (it must not). Exact figures, no timing. Bad arguments exit 2 with
one line before any work.
"""

from __future__ import annotations

import argparse

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from intriguing.attacks import LBFGS, AttackResult


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 200, "images (default 200)")
    return strong_models.parse_checked(p, argv, ("n",), {})


def attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, steps: int
) -> AttackResult:
    saved = lbfgs.RAY_STEPS
    lbfgs.RAY_STEPS = steps
    try:
        if mode == "targeted":
            return LBFGS(mode="targeted", progress=False)(model, x, y, targets=(y + 1) % 10)
        return LBFGS(progress=False)(model, x, y)
    finally:
        lbfgs.RAY_STEPS = saved


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    setups = strong_models.untargeted_setups(args.models, args.data_dir, args.n, "test")
    print(f"{args.n} first correctly classified test images per model, 1 thread")
    print("| model | mode | success | mean RMS without | with | change | moved | farther |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, x, y) in setups.items():
        for mode in ("untargeted", "targeted"):
            plain = attack(model, x, y, mode, 0)
            moved = attack(model, x, y, mode, lbfgs.RAY_STEPS)
            ok = plain.success & moved.success
            before = float(plain.distortion[ok].double().mean())
            after = float(moved.distortion[ok].double().mean())
            print(
                f"| {name} | {mode} | {float(moved.success.double().mean()):.3f} | {before:.6f} | "
                f"{after:.6f} | {100 * (after / before - 1):+.3f}% | "
                f"{int((moved.distortion < plain.distortion).sum())} | "
                f"{int((moved.distortion > plain.distortion).sum())} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
