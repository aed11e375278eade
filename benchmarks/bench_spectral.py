"""Benchmark of the spectral bounds (paper section 4.3): AlexNet's first layer, 3x11x11x96 stride 4.

Times four ways of getting the operator norm of a 3 -> 96 channel, 11x11, stride-4 convolution on a
227x227 input (the paper's AlexNet conv1, no padding, output 96x55x55), with a seeded random kernel
(PyTorch's default initialisation; timings do not depend on the values):

- ``fft``: circular operator on the 228x228 grid (certified upper bound on the true operator), all
  per-frequency singular values in one batched ``svdvals`` call;
- ``power``: power iteration on the true (valid) operator with ``conv2d`` / ``conv_transpose2d``
  (exact from below), float64;
- ``lanczos``: scipy's ARPACK ``svds(k=1)`` on the same operator (also from below; far fewer
  operator applications when the top singular values are close);
- ``explicit``: SVD of the dense matrix; infeasible at 227 (its size is reported), so it is run
  with the other methods on a 35x35 input, where all must agree.

Also prints ``torch.nn.utils.spectral_norm``'s reshaped-kernel value, which is not the operator norm.
Wall time and process CPU time are both recorded (the CPU time is less sensitive to a busy machine).

With ``--softmax1 N`` it splits the sandwich gap of the linear softmax1 on N test images: certified
(pairwise, the exact unconstrained minimum) <= exact box-constrained minimum <= L-BFGS distortion.
With ``--alexnet-arch`` it also bounds every layer of the paper's AlexNet architecture (random weights,
so the values are not the paper's; this shows the cost of a full Table 5 at ImageNet scale).

Run: ``python benchmarks/bench_spectral.py [--quick] [--softmax1 N] [--alexnet-arch]``; writes
``benchmarks/results/spectral.json``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from intriguing._io import atomic_write_json
from intriguing.analysis.lipschitz import BoundOptions, network_bounds
from intriguing.analysis.spectral_conv import (
    ConvGeometry,
    circular_conv_frame_bounds,
    explicit_operator_matrix,
    lanczos_norm,
    power_iteration,
    zero_padded_conv,
    zero_padded_conv_transpose,
)

RESULTS = Path(__file__).resolve().parent / "results" / "spectral.json"


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float, float]:
    """``(result, best wall seconds, best CPU seconds)`` over ``repeats`` runs."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, min(walls), min(cpus)


def measure(
    conv: nn.Conv2d, size: int, *, explicit: bool, max_iter: int, tol: float
) -> dict[str, Any]:
    """All methods on one input size."""
    geometry = ConvGeometry.from_conv(conv, (size, size))
    weight = conv.weight.detach().double()
    shape = (conv.in_channels, size, size)
    grid = geometry.circular_grid((conv.kernel_size[0], conv.kernel_size[1]))
    repeats = 3 if size <= 64 else 1
    (upper, lower), wall, cpu = timed(
        lambda: circular_conv_frame_bounds(weight, grid, stride=geometry.stride), repeats
    )
    out: dict[str, Any] = {
        "input": list(shape),
        "fft": {"grid": list(grid), "upper": upper, "lower": lower, "wall_s": wall, "cpu_s": cpu},
    }
    forward = zero_padded_conv(weight, geometry)
    adjoint = zero_padded_conv_transpose(weight, geometry)
    power, wall, cpu = timed(
        lambda: power_iteration(forward, adjoint, shape, max_iter=max_iter, tol=tol)
    )
    out["power"] = {
        **power.to_dict(),
        "wall_s": wall,
        "cpu_s": cpu,
        "s_per_iteration": wall / power.iterations,
    }
    lanczos, wall, cpu = timed(
        lambda: lanczos_norm(forward, adjoint, shape, max_iter=max_iter, tol=1e-10)
    )
    out["lanczos"] = {**lanczos.to_dict(), "wall_s": wall, "cpu_s": cpu}
    out_numel = math.prod(forward(torch.zeros((1, *shape), dtype=torch.float64)).shape)
    matrix_gb = out_numel * math.prod(shape) * 8 / 1e9
    if explicit:
        values, wall, cpu = timed(
            lambda: torch.linalg.svdvals(explicit_operator_matrix(forward, shape))
        )
        out["explicit"] = {
            "sigma_max": float(values[0]),
            "sigma_min": float(values[-1]),
            "matrix_gb": matrix_gb,
            "wall_s": wall,
            "cpu_s": cpu,
        }
    else:
        out["explicit"] = {
            "skipped": f"dense matrix {out_numel} x {math.prod(shape)} = {matrix_gb:.0f} GB"
        }
    return out


def paper_alexnet() -> nn.Sequential:
    """Krizhevsky et al. (2012) as in the paper's Table 5: 227x227 input, the two-GPU split as
    ``groups=2`` (conv2, conv4, conv5), no local response normalisation; random weights (seed 0)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000),
    ).eval()  # fmt: skip


def alexnet_table() -> dict[str, Any]:
    """Per-layer bounds of the paper's AlexNet architecture (random weights) and per-layer CPU time."""
    marks: list[tuple[str, float]] = []
    start = time.process_time()
    bound = network_bounds(
        paper_alexnet(),
        (3, 227, 227),
        options=BoundOptions(exact_method="none"),
        progress=lambda name: marks.append((name, time.process_time())),
    )
    end = time.process_time()
    times = [
        later - now for (_, now), (_, later) in zip(marks, [*marks[1:], ("", end)], strict=True)
    ]
    layers = [
        {**layer.to_dict(), "cpu_s": cpu} for layer, cpu in zip(bound.layers, times, strict=True)
    ]
    Console(width=150).print(bound.to_markdown())
    return {"lipschitz_upper": bound.lipschitz, "cpu_s": end - start, "layers": layers}


def softmax1_decomposition(count: int) -> dict[str, Any]:
    """softmax1 on the first ``count`` test images: certified (pairwise, = exact unconstrained minimum)
    <= exact box-constrained minimum (QP) <= L-BFGS; quantiles of the two ratios."""
    from intriguing.analysis import certified_radii
    from intriguing.attacks import LBFGS
    from intriguing.attacks.exact_linear import exact_linear_attack
    from intriguing.data import load_mnist
    from intriguing.training import load_model

    model = load_model("softmax1")
    images, labels = load_mnist().split("test")
    images, labels = images[:count], labels[:count]
    radii = certified_radii(model, images, labels, network_bounds(model, (1, 28, 28)))
    exact = exact_linear_attack(model, images, labels, progress=False)
    found = LBFGS()(model, images, labels)
    assert radii.pairwise is not None
    used = radii.correct & exact.feasible.numpy() & found.success.numpy()
    exact_d, found_d = exact.distortion.numpy()[used], found.distortion.double().numpy()[used]
    quantiles = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)

    def summary(values: Any) -> list[float]:
        return [float(v) for v in np.quantile(values, quantiles)]

    return {
        "examples": count,
        "used": int(used.sum()),
        "quantiles": list(quantiles),
        "exact_box_over_certified": summary(exact_d / radii.pairwise[used]),
        "lbfgs_over_exact_box": summary(found_d / exact_d),
        "mean_certified": float(radii.pairwise[used].mean()),
        "mean_exact_box": float(exact_d.mean()),
        "mean_lbfgs": float(found_d.mean()),
    }


def reshaped_norm(conv: nn.Conv2d) -> float:
    """What ``torch.nn.utils.spectral_norm`` normalises by: the norm of the kernel as a D x (C k k) matrix."""
    return float(
        torch.linalg.matrix_norm(
            conv.weight.detach().double().reshape(conv.out_channels, -1), ord=2
        )
    )


def report(results: dict[str, Any]) -> None:
    table = Table(title="3x11x11x96 stride-4 convolution: operator norm by method")
    for column in ("input", "method", "value", "wall s", "cpu s", "note"):
        table.add_column(column)
    for entry in results["sizes"]:
        size = "x".join(map(str, entry["input"]))
        fft = entry["fft"]
        table.add_row(
            size,
            "fft (circular, upper)",
            f"{fft['upper']:.6f}",
            f"{fft['wall_s']:.3f}",
            f"{fft['cpu_s']:.3f}",
            f"grid {fft['grid'][0]}, lower {fft['lower']:.4g}",
        )
        power = entry["power"]
        table.add_row(
            size,
            "power iteration (exact, from below)",
            f"{power['sigma']:.6f}",
            f"{power['wall_s']:.3f}",
            f"{power['cpu_s']:.3f}",
            f"{power['iterations']} it, converged={power['converged']}, tol {power['tol']:g}",
        )
        lanczos = entry["lanczos"]
        table.add_row(
            size,
            "Lanczos (scipy ARPACK svds, from below)",
            f"{lanczos['sigma']:.6f}",
            f"{lanczos['wall_s']:.3f}",
            f"{lanczos['cpu_s']:.3f}",
            f"{lanczos['iterations']} A^T A products, converged={lanczos['converged']}",
        )
        explicit = entry["explicit"]
        if "skipped" in explicit:
            table.add_row(size, "explicit SVD", "-", "-", "-", "infeasible: " + explicit["skipped"])
        else:
            table.add_row(
                size,
                "explicit SVD",
                f"{explicit['sigma_max']:.6f}",
                f"{explicit['wall_s']:.3f}",
                f"{explicit['cpu_s']:.3f}",
                f"{explicit['matrix_gb']:.2f} GB matrix",
            )
    table.caption = (
        f"torch.nn.utils.spectral_norm's reshaped-kernel value: {results['reshaped_kernel_norm']:.6f} "
        "(not the operator norm)"
    )
    Console(width=150).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small input only (a smoke run)")
    parser.add_argument("--max-iter", type=int, default=3000)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--softmax1",
        type=int,
        default=0,
        metavar="N",
        help="also split softmax1's sandwich gap on N test images (certified / exact QP / L-BFGS)",
    )
    parser.add_argument(
        "--alexnet-arch",
        action="store_true",
        help="also bound every layer of the paper's AlexNet architecture (random weights; ~2 CPU min)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 96, 11, stride=4)
    sizes = [(35, True)] if args.quick else [(35, True), (227, False)]
    results: dict[str, Any] = {
        "layer": "Conv2d(3, 96, 11, stride=4), PyTorch default init, seed 0",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "reshaped_kernel_norm": reshaped_norm(conv),
        "sizes": [
            measure(conv, size, explicit=explicit, max_iter=args.max_iter, tol=args.tol)
            for size, explicit in sizes
        ],
    }
    if args.softmax1:
        results["softmax1_decomposition"] = softmax1_decomposition(args.softmax1)
        print(results["softmax1_decomposition"])
    if args.alexnet_arch:
        results["paper_alexnet_random_weights"] = alexnet_table()
    atomic_write_json(args.output, results)
    report(results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
