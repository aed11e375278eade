"""Zoo softmax1: the default attack against the exact QP optimum (issue 18 target), 500 images.

    python benchmarks/softmax1_oracle.py

Untargeted: against the minimum of the exact optima over all targets; targeted: label + 1. The first
500 MNIST test images softmax1 classifies correctly, one thread.
"""

from __future__ import annotations

import torch

from intriguing.attacks import LBFGS, AttackResult
from intriguing.attacks.exact_linear import ExactLinearResult, exact_linear_attack
from intriguing.data import load_mnist
from intriguing.training import load_model


def line(name: str, found: AttackResult, optimum: ExactLinearResult) -> str:
    """Success, mean distortion, the optimum's mean, the gap and the smallest per-image ratio."""
    mean, best = float(found.distortion.double().mean()), float(optimum.distortion.mean())
    ratio = float((found.distortion.double() / optimum.distortion).min())
    return (
        f"{name}: success {float(found.success.double().mean()):.3f} mean {mean:.5f} "
        f"optimum {best:.5f} gap {mean / best - 1:+.3%} min ratio {ratio:.6f}"
    )


def main() -> None:
    torch.set_num_threads(1)
    model = load_model("softmax1")
    data = load_mnist()
    with torch.no_grad():
        keep = model(data.test_images).argmax(1) == data.test_labels
    x, y = data.test_images[keep][:500], data.test_labels[keep][:500]
    t = (y + 1) % 10
    untargeted = LBFGS(progress=False)(model, x, y)
    print(line("untargeted", untargeted, exact_linear_attack(model, x, y, progress=False)))
    targeted = LBFGS(mode="targeted", progress=False)(model, x, y, targets=t)
    print(line("targeted", targeted, exact_linear_attack(model, x, targets=t, progress=False)))


if __name__ == "__main__":
    main()
