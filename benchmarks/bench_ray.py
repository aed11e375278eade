"""Local vs Ray backend on the same ``reproduce`` config (issue 8): identical results, wall times.

Runs ``intriguing reproduce --quick`` three times in a scratch folder that shares one private
checkpoint cache: a warm-up run (trains the zoo once, not timed), then the local backend and the Ray
backend (a private local Ray runtime on every core), each into an empty results folder.
Then it compares the two runs:

- ``results.json`` apart from ``timings`` (every other value, exactly);
- every step record's result under ``steps/``;
- every stored tensor file (``artifacts/**/*.safetensors``: the adversarial images) byte for byte.

Run: ``python benchmarks/bench_ray.py [--quick] [--dataset mnist-5k] [--data-dir DIR]``; writes
``benchmarks/results/ray.json``. ``--quick`` is accepted for ``run.py`` and changes nothing: the
issue asks for the ``--quick`` reproduce config, which is already small. Needs ``ray`` installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from intriguing._io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "ray.json"
console = Console(width=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run.py; no change")
    parser.add_argument("--dataset", default="mnist-5k", choices=("mnist", "mnist-5k"))
    parser.add_argument("--data-dir", default=None, help="MNIST IDX folder (--dataset mnist)")
    parser.add_argument("--keep", default=None, help="keep the runs in this folder")
    return parser.parse_args(argv)


def reproduce(out: Path, env: dict[str, str], args: argparse.Namespace, *extra: str) -> float:
    """One ``intriguing reproduce --quick`` into ``out``; returns its wall time in seconds."""
    command = [sys.executable, "-m", "intriguing.cli.main", "reproduce", "--quick"]
    command += ["--dataset", args.dataset, "--out", str(out), *extra]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"reproduce failed ({' '.join(extra) or 'local'}):\n{done.stderr[-2000:]}")
    return elapsed


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Every place where two JSON values differ, as ``path: a != b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                yield f"{path}/{key}: present in one run only"
            else:
                yield from differences(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield f"{path}: {a!r} != {b!r}"


def compare(local: Path, ray: Path) -> dict[str, Any]:
    """The three comparisons of the module docstring."""
    docs = [json.loads((run / "results.json").read_text()) for run in (local, ray)]
    timings = [doc.pop("timings", {}) for doc in docs]
    diffs = list(differences(docs[0], docs[1]))
    records = sorted(p.relative_to(local) for p in (local / "steps").rglob("*.json"))
    equal_records = sum(
        (ray / r).exists()
        and json.loads((local / r).read_text())["result"]
        == json.loads((ray / r).read_text())["result"]
        for r in records
    )
    tensors = sorted(p.relative_to(local) for p in (local / "artifacts").rglob("*.safetensors"))
    equal_tensors = sum(
        (ray / t).exists() and _sha256(local / t) == _sha256(ray / t) for t in tensors
    )
    return {
        "results_json_differences": diffs[:50],
        "results_json_identical": not diffs,
        "step_records": len(records),
        "step_records_equal": equal_records,
        "tensor_files": len(tensors),
        "tensor_files_identical": equal_tensors,
        "recorded_wall_s": [t.get("wall_time_s") for t in timings],
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = os.environ | {
            "INTRIGUING_CACHE_DIR": str(root / "cache"),
            "INTRIGUING_NO_PROGRESS": "1",
        }
        console.print("warm-up (trains the zoo into a private cache; not timed)")
        reproduce(root / "warmup", env, args)
        local_s = reproduce(root / "local", env, args)
        ray_s = reproduce(root / "ray", env, args, "--backend", "ray")
        report = compare(root / "local", root / "ray")
    report |= {
        "config": f"reproduce --quick --dataset {args.dataset}",
        "wall_s": {"local": round(local_s, 2), "ray": round(ray_s, 2)},
        "ray_over_local": round(ray_s / local_s, 3),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    table = Table(title=f"local vs Ray: {report['config']}")
    for column in ("check", "value"):
        table.add_column(column)
    table.add_row(
        "results.json identical apart from timings", str(report["results_json_identical"])
    )
    table.add_row("step records equal", f"{report['step_records_equal']}/{report['step_records']}")
    table.add_row(
        "tensor files byte-identical",
        f"{report['tensor_files_identical']}/{report['tensor_files']}",
    )
    table.add_row("wall time local / Ray (s)", f"{local_s:.1f} / {ray_s:.1f}")
    console.print(table)
    for line in report["results_json_differences"][:10]:
        console.print(f"  differs: {line}")
    atomic_write_json(RESULTS, report)
    console.print(f"wrote {RESULTS}")
    return 0 if report["results_json_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
