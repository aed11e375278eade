"""Rows per model call on a CPU, timed against each other (issue 18).

    python benchmarks/chunk_rows.py relu-cnn --n 200 --budgets none,16,20,32 --repeats 3

Attacks the first ``--n`` correctly classified MNIST training images (untargeted, default settings,
one thread) once per budget of autograd's saved bytes per model call
(``intriguing.attacks.base.CPU_SAVED_BYTES``, in MiB; ``none``: every call carries the whole slot
pool, as before the chunks). The budgets run interleaved in one process, ``--repeats`` rounds (order
reversed every other round); the table gives the model's saved bytes per image (the attack's
1-image probe), the rows per call each budget gives, its fastest time, the ratio to the first
budget's, and the mean distortion and gradient evaluations per example (equal up to float
summation order: only the batches the model sees differ). This chose ``CPU_SAVED_BYTES``. Bad
arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import time

import torch

import intriguing.attacks.base as attack_base
import strong_models
from intriguing.attacks import LBFGS
from intriguing.attacks.checks import check_input_gradient

NONE = 2**62  # a budget no model reaches: one call per step, as before the chunks


def parse_budgets(text: str) -> list[int]:
    """``"none,16,32"`` -> bytes ``[NONE, 16 MiB, 32 MiB]``; ValueError with the reason."""
    budgets = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "none":
            budgets.append(NONE)
        elif item.isdigit() and int(item) > 0:
            budgets.append(int(item) * 2**20)
        else:
            raise ValueError(f"--budgets item {item!r} is neither 'none' nor a count of MiB >= 1")
    return budgets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="a zoo name, relu-mlp or relu-cnn")
    p.add_argument("--n", type=int, default=200, help="images (default 200)")
    p.add_argument("--budgets", default="none,16,20,32", help="MiB per call, or none")
    p.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--data-dir", default=None)
    return strong_models.parse_checked(p, argv, ("n", "repeats"), {"budgets": parse_budgets})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    model, x, y, _ = strong_models.attack_setup(args.model, args.data_dir, args.n, "untargeted")
    saved = check_input_gradient(model, x)
    LBFGS(progress=False)(model, x[:8], y[:8])  # warm-up, untimed
    times: dict[int, list[float]] = {b: [] for b in args.budgets}
    results = {}
    for round_ in range(args.repeats):
        order = args.budgets if round_ % 2 == 0 else args.budgets[::-1]
        for budget in order:
            attack_base.CPU_SAVED_BYTES = budget
            start = time.perf_counter()
            results[budget] = LBFGS(progress=False)(model, x, y)
            times[budget].append(time.perf_counter() - start)
    first = min(times[args.budgets[0]])
    print(f"{args.model}: {saved} bytes saved per image, {args.n} images, {args.repeats} rounds")
    print("| MiB per call | rows per call | fastest s | ratio | mean distortion | evals/ex |")
    print("|---|---|---|---|---|---|")
    for budget in args.budgets:
        res = results[budget]
        attack_base.CPU_SAVED_BYTES = budget
        rows = attack_base.rows_per_call(saved, torch.device("cpu"), LBFGS().batch_size)
        label = "none" if budget == NONE else str(budget // 2**20)
        mean = float(res.distortion[res.success].mean())
        evals = float(res.grad_evals.double().mean())
        best = min(times[budget])
        print(f"| {label} | {rows} | {best:.2f} | {best / first:.2f} | {mean:.6f} | {evals:.1f} |")


if __name__ == "__main__":
    main()
