"""The nearest class first (issue 18): ``LEAD_FIRST`` / ``LEAD_HEAD_START``.

    python benchmarks/lead_first.py Conv relu-cnn N100-100-10 relu-mlp softmax1 --n 100 --head-starts 10,20,inf
    python benchmarks/lead_first.py relu-mlp N100-100-10 --n 0 --time-n 500 --pairs 8

The untargeted attack searches up to three candidate classes per example. With ``LEAD_FIRST`` the
other candidates wait until the nearest one (by the class estimate) has ended a stage or made
``LEAD_HEAD_START`` evaluations (``intriguing.attacks.lbfgs._Search._eligible``). Per model, one
thread:

- on the first ``--n`` correctly classified MNIST test images, through the benchmark's
  :class:`budget.BudgetTracker` (passes counted per example by the model wrapper): the attack with
  every candidate at once (``off``), then with each head start of ``--head-starts`` (``inf``: until
  the first stage ends): success and mean RMS distortion within 25 / 50 / 100 passes, the final mean
  RMS and evaluations per example. These are exact (no timing).
- on the first ``--time-n`` images, ``--pairs`` interleaved timings of ``off`` and the default
  (their order alternates pair by pair): the median ratio of the default's time to ``off``'s.

``--n 0`` or ``--pairs 0`` skips a part. Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

import intriguing.attacks.lbfgs as lbfgs
import strong_models
from budget import BudgetTracker
from intriguing.attacks import LBFGS, AttackResult

SHOWN_BUDGETS = (25, 50, 100)
NEVER = 2**62  # a head start no search reaches: wait for the first stage to end


def parse_head_starts(text: str) -> list[float]:
    """``"10,inf"`` -> ``[10.0, inf]``; ValueError with the reason."""
    return strong_models.number_list(text, "--head-starts", "10,20,inf", allow_inf=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 100, "images for the budget view (0: skip)")
    p.add_argument("--head-starts", default="20", help="values of LEAD_HEAD_START (inf allowed)")
    p.add_argument("--time-n", type=int, default=500, help="images for the timing pairs")
    p.add_argument("--pairs", type=int, default=0, help="interleaved timing pairs (0: skip)")
    return strong_models.parse_checked(
        p,
        argv,
        ("n", "time_n", "pairs"),
        {"head_starts": parse_head_starts},
        may_be_zero=("n", "pairs"),
    )


@contextmanager
def schedule(head_start: float | None) -> Iterator[None]:
    """The attack with every candidate at once (None) or nearest first with ``head_start``."""
    saved = lbfgs.LEAD_FIRST, lbfgs.LEAD_HEAD_START
    lbfgs.LEAD_FIRST = head_start is not None
    if head_start is not None:
        lbfgs.LEAD_HEAD_START = NEVER if math.isinf(head_start) else int(head_start)
    try:
        yield
    finally:
        lbfgs.LEAD_FIRST, lbfgs.LEAD_HEAD_START = saved


def budget_row(
    name: str, label: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> str:
    tracker = BudgetTracker(model, x, y)
    result: AttackResult = LBFGS(progress=False)(tracker, x, y)
    curve = {r["budget"]: r for r in tracker.curve(SHOWN_BUDGETS)}
    cells = [
        f"{curve[k]['success_rate']:.2f} / {curve[k]['mean_distortion']:.5f}"
        if curve[k]["mean_distortion"] is not None
        else f"{curve[k]['success_rate']:.2f} / -"
        for k in SHOWN_BUDGETS
    ]
    ok = result.success
    return (
        f"| {name} | {label} | {' | '.join(cells)} | {float(ok.double().mean()):.3f} / "
        f"{float(result.distortion[ok].double().mean()):.5f} | "
        f"{float(result.grad_evals.double().mean()):.1f} |"
    )


def time_pairs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: int) -> str:
    """``pairs`` interleaved runs of ``off`` and the default; the median time ratio default/off."""
    ratios = []
    for i in range(pairs):
        seconds = {}
        for label in ("off", "default") if i % 2 == 0 else ("default", "off"):
            with schedule(None) if label == "off" else nullcontext():
                seconds[label] = LBFGS(progress=False)(model, x, y).elapsed_s
        ratios.append(seconds["default"] / seconds["off"])
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    return f"median {statistics.median(ratios):.3f} ({shown})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    most = max(args.n, args.time_n if args.pairs else 0)
    setups = strong_models.untargeted_setups(args.models, args.data_dir, most, "test")
    if args.n:
        print(f"budget view: the first {args.n} correctly classified test images, 1 thread")
        heads = " | ".join(f"at {k}: success / mean RMS" for k in SHOWN_BUDGETS)
        print(f"| model | schedule | {heads} | final success / mean RMS | evals/ex |")
        print("|---|---|" + "---|" * len(SHOWN_BUDGETS) + "---|---|")
        for name, (model, x, y) in setups.items():
            x, y = x[: args.n], y[: args.n]
            with schedule(None):
                print(budget_row(name, "off", model, x, y), flush=True)
            for head in args.head_starts:
                with schedule(head):
                    print(budget_row(name, f"head start {head:g}", model, x, y), flush=True)
    if args.pairs:
        print(f"\ntime of the default / every candidate at once, {args.time_n} images, 1 thread")
        for name, (model, x, y) in setups.items():
            x, y = x[: args.time_n], y[: args.time_n]
            LBFGS(progress=False)(model, x[:8], y[:8])  # warm-up, untimed
            print(f"{name}: {time_pairs(model, x, y, args.pairs)}", flush=True)


if __name__ == "__main__":
    main()
