"""Threads for the attack (issue 18): interleaved timings of ``LBFGS(threads=1)`` and ``threads=2``.

    python benchmarks/threads.py N100-100-10 500 3
    python benchmarks/threads.py relu-cnn 200 3

The first ``n`` correctly classified MNIST test images; ``pairs`` alternating runs; prints each
run's examples/s and the median speed ratio (2 threads over 1). Results are identical up to float
summation order (the distortions are printed). The machine's load average is printed: on a shared
machine extra threads compete with other jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

import strong_models
from intriguing.attacks import LBFGS
from intriguing.data import load_mnist
from intriguing.training import load_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a zoo name, or relu-mlp / relu-cnn")
    parser.add_argument("n", type=int, help="correctly classified test images")
    parser.add_argument("pairs", type=int, help="alternating 1- and 2-thread runs")
    args = parser.parse_args(argv)
    name, n, pairs = args.model, args.n, args.pairs
    model = strong_models.load(name) if name.startswith("relu-") else load_model(name)
    data = load_mnist()
    with torch.no_grad():
        keep = model(data.test_images[:3000]).argmax(1) == data.test_labels[:3000]
    x, y = data.test_images[:3000][keep][:n], data.test_labels[:3000][keep][:n]
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    ratios = []
    for _ in range(pairs):
        speed = {}
        for threads in (1, 2):
            r = LBFGS(threads=threads, progress=False)(model, x, y)
            speed[threads] = n / r.elapsed_s
            print(
                f"threads {threads}: {speed[threads]:.1f} ex/s, mean {float(r.distortion.mean()):.5f}"
            )
        ratios.append(speed[2] / speed[1])
    print(f"2 threads / 1 thread speed: median {statistics.median(ratios):.2f} ({ratios})")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
