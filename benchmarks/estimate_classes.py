"""How many classes the untargeted class estimate looks at (issue 18): ``ESTIMATE_CLASSES``.

    python benchmarks/estimate_classes.py relu-mlp N100-100-10 softmax1 relu-cnn Conv --n 500 --classes 9,6,5,4

The untargeted attack's candidates come from DeepFool's linearised distance over the ``E`` classes
of largest clean logit besides the label (``intriguing.attacks.lbfgs.ESTIMATE_CLASSES``; one
backward pass each). Per model, on its first ``--n`` correctly classified MNIST ``--split`` images
(default: test; ``bench_strongest.py`` keeps the images that all of its models classify correctly,
so its images differ), one thread:

- how often the three classes that the full estimate (every class) would pick all rank within the
  top ``E`` logits besides the label;
- per ``E`` of ``--classes``: success, mean RMS distortion, gradient evaluations per example, and
  (unless ``--no-budget``) the budget view's mean distortion within 25 / 50 / 100 passes
  (:class:`budget.BudgetTracker`: a second run of the same attack through the counting wrapper).

Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from budget import BudgetTracker
from intriguing.attacks import LBFGS

BUDGETS = (25, 50, 100)


def parse_classes(text: str) -> list[int]:
    """``"9,5"`` -> ``[9, 5]``; ValueError with the reason."""
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() and int(item) >= 1 for item in items):
        raise ValueError(f"--classes {text!r} must be comma-separated counts >= 1, e.g. 9,5")
    return [int(item) for item in items]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 500, "images (default 500)", split=True)
    p.add_argument("--classes", default="9,6,5,4", help="values of E (default 9,6,5,4)")
    p.add_argument("--no-budget", action="store_true", help="skip the budget view's second run")
    return strong_models.parse_checked(p, argv, ("n",), {"classes": parse_classes})


def nearest_logit_rank(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the lowest logit rank (0: the largest logit besides the label) among each image's
    three nearest classes by the full estimate; they all lie within the top ``e`` logits exactly
    when it is below ``e``."""
    nearest = lbfgs.linear_distances(model, x, y).argsort(dim=1)[:, :3]
    with torch.no_grad():
        logits = model(x)
    by_logit = lbfgs.estimated_classes(logits, y, logits.shape[1])  # every class but the label
    position = torch.full(logits.shape, logits.shape[1], dtype=torch.long)  # the label: last
    position.scatter_(1, by_logit, torch.arange(by_logit.shape[1]).expand_as(by_logit))
    return position.gather(1, nearest).max(1).values


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    default = lbfgs.ESTIMATE_CLASSES
    setups = strong_models.untargeted_setups(args.models, args.data_dir, args.n, args.split)
    print(f"{args.n} first correctly classified {args.split} images per model, 1 thread")
    print(
        "| model | E | top-3 within E logits | success | mean RMS | evals/ex | "
        + " | ".join(f"at {b}" for b in BUDGETS)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(BUDGETS))
    for name, (model, x, y) in setups.items():
        rank = nearest_logit_rank(model, x, y)
        for e in args.classes:
            lbfgs.ESTIMATE_CLASSES = e
            try:
                result = LBFGS(progress=False)(model, x, y)
                budget = ["-"] * len(BUDGETS)
                if not args.no_budget:
                    tracker = BudgetTracker(model, x, y)
                    LBFGS(progress=False)(tracker, x, y)
                    budget = [f"{row['mean_distortion']:.5f}" for row in tracker.curve(BUDGETS)]
            finally:
                lbfgs.ESTIMATE_CLASSES = default
            ok = result.success
            print(
                f"| {name} | {e} | {int((rank < e).sum())} | "
                f"{float(ok.double().mean()):.3f} | {float(result.distortion[ok].double().mean()):.5f} | "
                f"{float(result.grad_evals.double().mean()):.1f} | " + " | ".join(budget) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
