"""Bit-for-bit check of the attack across an engineering change (issue 18).

    python benchmarks/attack_identity.py save before.pt      # on the old code
    python benchmarks/attack_identity.py compare before.pt   # on the new code: exit 1 if any differs

Runs ten configurations that reach every path of the optimiser and the c-search (untargeted with
candidates, targeted, ``candidates=0`` with the polish, the margin loss, 48- and 64-slot pools with
partial batches and compaction, ``memory=3``) on N100-100-10, softmax1, AE400-10 and the benchmark's
ReLU CNN, on the first correctly classified of MNIST's first 1500 training images, one thread.
``save`` stores each run's adversarial images, constants, iterations and gradient evaluations;
``compare`` reruns them and reports IDENTICAL or DIFFERENT per configuration (NaN constants compare
equal). A change meant to be pure engineering (fewer passes, no new arithmetic) must leave every
configuration IDENTICAL; seconds are printed for orientation only (one run each: not a timing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch

import strong_models
from intriguing._io import atomic_path
from intriguing.attacks import LBFGS
from intriguing.data import load_mnist
from intriguing.models.user import select_correct

CONFIGS: list[tuple[str, int, dict[str, Any]]] = [
    ("N100-100-10", 600, {}),
    ("N100-100-10", 600, {"mode": "targeted"}),
    ("softmax1", 400, {}),
    ("softmax1", 400, {"mode": "targeted"}),
    ("AE400-10", 300, {}),
    ("relu-cnn", 60, {}),
    ("N100-100-10", 300, {"candidates": 0}),
    ("N100-100-10", 200, {"loss": "margin"}),
    ("N100-100-10", 300, {"batch_size": 64}),
    ("N100-100-10", 200, {"mode": "targeted", "batch_size": 48, "memory": 3}),
]
FIELDS = ("adversarial", "c", "iterations", "grad_evals")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("action", choices=("save", "compare"))
    p.add_argument("file", type=Path, help="where the reference runs are stored (torch.save)")
    p.add_argument("--data-dir", default=None)
    return p.parse_args(argv)


def run_all(data_dir: str | None) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    data = load_mnist(data_dir)
    models: dict[str, torch.nn.Module] = {}
    runs = []
    for name, n, settings in CONFIGS:
        if name not in models:
            models[name] = strong_models.load_any(name, data_dir)
        model = models[name]
        x, y, _ = select_correct(model, data.train_images[:1500], data.train_labels[:1500], n)
        start = time.perf_counter()
        result = LBFGS(progress=False, **settings)(model, x, y)
        run = {f: getattr(result, f).clone() for f in FIELDS}
        run["seconds"] = time.perf_counter() - start
        runs.append(run)
    return runs


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _check_writable(path: Path) -> None:
    """Exit 2 with one line, before any attack, when ``path`` cannot be written."""
    if path.is_dir():
        _fail(f"{path} is a directory; give a file name")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        _fail(f"cannot write {path}: its folder does not exist or is not writable")


def _reference(path: Path) -> list[dict[str, Any]]:
    """The runs stored by ``save``, checked before any attack runs (exit 2 with one line if not)."""
    if not path.is_file():
        _fail(f"{path} does not exist; run 'save {path}' on the old code first")
    try:
        runs = torch.load(path, weights_only=True)
    except Exception as exc:  # any unreadable file: one line, not a traceback
        _fail(f"{path} is not a file written by 'save' ({type(exc).__name__}); save it again")
    if not (
        isinstance(runs, list)
        and len(runs) == len(CONFIGS)
        and all(isinstance(r, dict) and all(f in r for f in FIELDS) for r in runs)
    ):
        _fail(f"{path} does not hold this script's {len(CONFIGS)} runs; save it again")
    return runs


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(torch.equal(a[f].nan_to_num(-1.0), b[f].nan_to_num(-1.0)) for f in FIELDS)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.action == "save":
        _check_writable(args.file)
    reference = _reference(args.file) if args.action == "compare" else None
    runs = run_all(args.data_dir)
    if args.action == "save":
        with atomic_path(args.file) as tmp:
            torch.save(runs, tmp)
        print(f"saved {len(runs)} runs to {args.file}")
        return
    assert reference is not None
    differing = 0
    for (name, _, settings), new, old in zip(CONFIGS, runs, reference, strict=True):
        ok = same(new, old)
        differing += not ok
        verdict = "IDENTICAL" if ok else "DIFFERENT"
        print(f"{name} {settings}: {verdict} ({new['seconds']:.2f} s, was {old['seconds']:.2f} s)")
    print("all identical" if not differing else f"{differing} of {len(runs)} differ")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
