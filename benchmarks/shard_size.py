"""Shard size and slot count of a long attack run, timed against each other (issue 18).

    python benchmarks/shard_size.py N100-100-10 --mode targeted --n 5000 --configs 1000x512,5000x1024

Attacks the first ``--n`` correctly classified MNIST training images once per configuration
``SHARDxSLOTS``: the images split into consecutive shards of ``SHARD`` (one attack call each, as
``reproduce`` does), ``SLOTS`` the attack's ``batch_size``. The configurations run interleaved,
``--repeats`` times (order reversed every other round), one thread; the table gives each one's
fastest time, its ratio to the first configuration's, and the mean distortion of its successes
(equal to 4-5 digits: only the batches the model sees differ). Targeted runs use ``label + 1``.
This chose ``reproduce --full``'s shards (``FULL_SHARD_SIZE``, ``FULL_BATCH_SIZE`` in
``intriguing.experiments.specs``). Bad arguments exit 2 with one line before any work.
"""

from __future__ import annotations

import argparse
import time

import torch

import strong_models
from intriguing.attacks import LBFGS


def parse_configs(text: str) -> list[tuple[int, int]]:
    """``"1000x512,5000x1024"`` -> ``[(1000, 512), (5000, 1024)]``; ValueError with the reason."""
    configs = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--configs item {item!r} is not SHARDxSLOTS with two counts >= 1")
        configs.append((int(parts[0]), int(parts[1])))
    return configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="a zoo name, relu-mlp or relu-cnn")
    p.add_argument("--mode", choices=("untargeted", "targeted"), default="targeted")
    p.add_argument("--n", type=int, default=5000, help="images (default 5000)")
    p.add_argument("--configs", default="1000x512,5000x1024,10000x1024")
    p.add_argument("--repeats", type=int, default=2, help="rounds (default 2)")
    p.add_argument("--data-dir", default=None)
    return strong_models.parse_checked(p, argv, ("n", "repeats"), {"configs": parse_configs})


def run_sharded(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    shard: int,
    slots: int,
    mode: str,
) -> tuple[float, float]:
    """Seconds for all shards and the mean RMS distortion of the successes."""
    attack = LBFGS(progress=False, mode=mode, batch_size=slots)
    distortions = []
    start = time.perf_counter()
    for i in range(0, len(y), shard):
        part = slice(i, i + shard)
        result = attack(model, x[part], y[part], targets=None if targets is None else targets[part])
        rms = (result.adversarial - x[part]).flatten(1).norm(dim=1) / x[0].numel() ** 0.5
        distortions.append(rms[result.success])
    seconds = time.perf_counter() - start
    return seconds, float(torch.cat(distortions).double().mean())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    model, x, y, targets = strong_models.attack_setup(args.model, args.data_dir, args.n, args.mode)
    seconds: dict[tuple[int, int], list[float]] = {c: [] for c in args.configs}
    distortion: dict[tuple[int, int], float] = {}
    for round_ in range(args.repeats):
        order = args.configs if round_ % 2 == 0 else args.configs[::-1]
        for shard, slots in order:
            s, d = run_sharded(model, x, y, targets, shard, slots, args.mode)
            seconds[(shard, slots)].append(s)
            distortion[(shard, slots)] = d
    base = min(seconds[args.configs[0]])
    print(f"{args.model} {args.mode}, {len(y)} images, {args.repeats} rounds, 1 thread")
    print("| shard x slots | fastest s | ratio to first | all s | mean distortion |")
    print("|---|---|---|---|---|")
    for c in args.configs:
        times = seconds[c]
        print(
            f"| {c[0]} x {c[1]} | {min(times):.2f} | {min(times) / base:.3f} | "
            f"{', '.join(f'{t:.2f}' for t in times)} | {distortion[c]:.5f} |"
        )


if __name__ == "__main__":
    main()
