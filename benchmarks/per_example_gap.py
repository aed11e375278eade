"""Where ALMA-1000 is tighter than ours, example by example (issue 18).

    python benchmarks/per_example_gap.py Conv relu-cnn --n 100
    python benchmarks/per_example_gap.py Conv --n 100 --settings '{"ftol": 1e-4}'

The benchmark's means (bench_strongest.py) mix two things: which class an attack reaches and how
close it gets within that class. Per model, on its first ``--n`` correctly classified MNIST
``--split`` images (default test), one thread, this runs adv-lib's ALMA-1000 (untargeted L2) once,
then our attack with default settings and with each ``--settings`` (a JSON object of ``LBFGS``
keyword settings), and our targeted attack toward the class ALMA reached ("toward ALMA's class":
the search within a class, the class choice taken from ALMA). Per run: mean RMS, evaluations per
example, examples whose adversarial class is ALMA's, the median of ALMA's distortion over ours per
example (all, and over the examples of the same class), and the examples where ALMA is more than
1% closer. Distortions and counts are exact (no timing); ``--json FILE`` keeps them. Bad arguments
exit 2 with one line before any work, and so does a missing adv-lib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import peers
import strong_models
from intriguing._io import atomic_write_json
from intriguing.attacks import LBFGS, AttackResult
from intriguing.attacks.metrics import median
from intriguing.cli.validation import check_output_file
from intriguing.errors import IntriguingError


def parse_settings(texts: list[str]) -> list[dict[str, Any]]:
    """``['{"ftol": 1e-4}']`` -> ``[{"ftol": 0.0001}]``, each checked by ``LBFGS``; ValueError
    with the reason."""
    settings = []
    for text in texts:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(
                f"--settings {text!r} must be a JSON object, e.g. '{{\"ftol\": 1e-4}}'"
            )
        try:
            LBFGS(progress=False, **value)
        except (IntriguingError, TypeError) as exc:
            raise ValueError(f"--settings {text!r}: {exc}") from None
        settings.append(value)
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = strong_models.model_parser(__doc__, 100, "images (default 100)", split=True)
    p.add_argument("--settings", nargs="*", default=[], help="JSON objects of LBFGS settings")
    p.add_argument("--json", default=None, help="write the figures here")
    args = strong_models.parse_checked(p, argv, ("n",), {})
    try:
        args.settings = parse_settings(args.settings)
    except ValueError as exc:
        p.exit(2, f"error: {exc}\n")
    if args.json is not None:
        try:
            check_output_file(Path(args.json))
        except IntriguingError as exc:
            p.exit(2, f"error: --json: {exc}\n")
    missing = peers.adv_lib_missing()
    if missing:
        p.exit(2, f"error: {missing}\n")
    return args


def compare(
    result: AttackResult, images: torch.Tensor, alma: torch.Tensor, alma_class: torch.Tensor
) -> dict[str, Any]:
    """Figures of one of our runs on ``images`` ``(n, ...)`` against ALMA's points ``(n, ...)``
    and classes ``(n,)``."""
    x = images.reshape(len(alma), -1).double()
    alma_d = (alma.reshape(len(alma), -1).double() - x).norm(dim=1) / x.shape[1] ** 0.5
    ratio = alma_d / result.distortion.double()
    same = result.predicted == alma_class
    return {
        "success_rate": float(result.success.double().mean()),
        "mean_distortion": float(result.distortion[result.success].double().mean()),
        "alma_mean_distortion": float(alma_d.mean()),
        "grad_evals_per_example": float(result.grad_evals.double().mean()),
        "same_class": int(same.sum()),
        "median_alma_over_ours": median(ratio),
        "median_alma_over_ours_same_class": median(ratio[same]) if same.any() else None,
        "alma_closer_by_1pct": int((ratio < 0.99).sum()),
    }


def row(name: str, label: str, n: int, f: dict[str, Any]) -> str:
    same = f["median_alma_over_ours_same_class"]
    return (
        f"| {name} | {label} | {f['mean_distortion']:.5f} | {f['alma_mean_distortion']:.5f} | "
        f"{f['grad_evals_per_example']:.1f} | {f['same_class']}/{n} | "
        f"{f['median_alma_over_ours']:.4f} | {'-' if same is None else f'{same:.4f}'} | "
        f"{f['alma_closer_by_1pct']} |"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    setups = strong_models.untargeted_setups(args.models, args.data_dir, args.n, args.split)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "models": {}}
    print(
        "| model | run | ours mean RMS | ALMA-1000 | evals/ex | same class | median ALMA/ours "
        "| same class: median | ALMA > 1% closer |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, (model, x, y) in setups.items():
        alma = peers.run_adv_lib("ALMA-1000", model, x, y).adversarial
        with torch.no_grad():
            alma_class = model(alma).argmax(1)
        runs = [("default", LBFGS(progress=False)(model, x, y))]
        runs += [
            (json.dumps(kwargs), LBFGS(progress=False, **kwargs)(model, x, y))
            for kwargs in args.settings
        ]
        fooled = alma_class != y  # toward ALMA's class where it has one
        toward = LBFGS(progress=False, mode="targeted")(
            model, x[fooled], y[fooled], targets=alma_class[fooled]
        )
        report["models"][name] = {"n": len(y), "alma_success": int(fooled.sum()), "runs": {}}
        for label, result in runs:
            figures = compare(result, x, alma, alma_class)
            report["models"][name]["runs"][label] = figures
            print(row(name, label, len(y), figures), flush=True)
        figures = compare(toward, x[fooled], alma[fooled], alma_class[fooled])
        report["models"][name]["runs"]["toward ALMA's class"] = figures
        print(row(name, "targeted toward ALMA's class", int(fooled.sum()), figures), flush=True)
        if args.json is not None:
            atomic_write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
