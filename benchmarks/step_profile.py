"""Where one attack call's time goes, step by step (issue 18).

    python benchmarks/step_profile.py N100-100-10 --mode targeted --n 3000 --batch-size 1024

Runs the attack once on the first ``--n`` correctly classified MNIST training images (targets
``label + 1`` in targeted mode), one thread, and prints

- the drain: steps and seconds by how many slots each step evaluated (a call ends in a tail of
  steps over a few slots, each nearly as costly as a full one: the reason ``--full`` runs long
  shards, docs/reproduce.md);
- with ``--ops``, a second run under ``torch.profiler``: the operators whose inputs have the pool's
  row count (the ``(B, D)`` passes, the memory products, the model's layers), per full step
  (milliseconds and calls). Profiler times include its own overhead; compare rows, not totals.

Models: the zoo's names and the benchmark's ``relu-mlp`` / ``relu-cnn``
(:func:`strong_models.load_any`). Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

import strong_models
from intriguing.attacks import LBFGS, optim

BANDS = ((0, 16), (16, 64), (64, 256), (256, None))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="a zoo name, relu-mlp or relu-cnn")
    p.add_argument("--mode", choices=("untargeted", "targeted"), default="untargeted")
    p.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    p.add_argument("--batch-size", type=int, default=512, help="attack slots (default 512)")
    p.add_argument("--ops", action="store_true", help="also profile operators per full step")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    for name in ("n", "batch_size"):
        if getattr(args, name) < 1:
            p.exit(2, f"error: --{name.replace('_', '-')} must be >= 1\n")
    return args


@contextmanager
def recorded_steps() -> Iterator[list[tuple[float, int]]]:
    """While open, every ``BoxLBFGS.trial`` appends (start time, evaluated rows) to the yielded
    list; the original method is back afterwards, also on an error."""
    log: list[tuple[float, int]] = []
    original = optim.BoxLBFGS.trial

    def trial(self: optim.BoxLBFGS) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        idx, xt = original(self)
        log.append((start, len(idx)))
        return idx, xt

    optim.BoxLBFGS.trial = trial  # type: ignore[method-assign]
    try:
        yield log
    finally:
        optim.BoxLBFGS.trial = original  # type: ignore[method-assign]


def drain_table(log: list[tuple[float, int]], end: float) -> list[str]:
    """Steps, seconds and ms per step by rows evaluated (a step lasts until the next one starts)."""
    bands: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    for i, (start, rows) in enumerate(log):
        stop = log[i + 1][0] if i + 1 < len(log) else end
        band = next(
            k for k, (lo, hi) in enumerate(BANDS) if rows >= lo and (hi is None or rows < hi)
        )
        bands[band][0] += 1
        bands[band][1] += stop - start
    lines = ["| rows evaluated | steps | seconds | ms per step |", "|---|---|---|---|"]
    for band, (count, seconds) in sorted(bands.items()):
        lo, hi = BANDS[band]
        label = f"{lo}-{hi - 1}" if hi is not None else f">= {lo}"
        lines.append(f"| {label} | {int(count)} | {seconds:.2f} | {1000 * seconds / count:.2f} |")
    return lines


def ops_table(attack: LBFGS, model: torch.nn.Module, x: Any, y: Any, targets: Any) -> list[str]:
    """Operators on inputs with the pool's row count, per full step (a step evaluating the most
    rows of the run), under ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    with (
        recorded_steps() as log,
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
    ):
        attack(model, x, y, targets=targets)
    full = max(rows for _, rows in log)  # the pool: batch_size, or fewer problems than that
    steps = sum(1 for _, rows in log if rows == full)
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = str(event.input_shapes)
        if f"[{full}, " in shapes:
            rows.append(
                (event.self_cpu_time_total / 1000 / steps, event.count / steps, event.key, shapes)
            )
    rows.sort(reverse=True)
    lines = [
        f"{steps} full steps ({full} rows); per full step:",
        "| ms | calls | operator | input shapes |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {ms:.3f} | {calls:.2f} | {key} | {shapes[:90]} |"
        for ms, calls, key, shapes in rows[:30]
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    model, x, y, targets = strong_models.attack_setup(args.model, args.data_dir, args.n, args.mode)
    attack = LBFGS(progress=False, mode=args.mode, batch_size=args.batch_size)
    attack(model, x[:8], y[:8], targets=None if targets is None else targets[:8])  # warm-up
    with recorded_steps() as log:
        start = time.perf_counter()
        result = attack(model, x, y, targets=targets)
        end = time.perf_counter()
    print(
        f"{args.model} {args.mode}, {len(y)} images, {args.batch_size} slots: {end - start:.2f} s, "
        f"{len(log)} steps, {float(result.grad_evals.double().mean()):.1f} evaluations per image"
    )
    print("\n".join(drain_table(log, end)))
    if args.ops:
        print("\n".join(ops_table(attack, model, x, y, targets)))


if __name__ == "__main__":
    main()
