"""Tables 1-4 of the paper (§4.2) assembled from stored step results (pure functions, no model).

Every row carries our numbers and, under ``paper``, the paper's (from the zoo registry for Tables 1
and 3, from REFERENCE.md's transcription below for the cross tables); errors are fractions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Paper's Table 2 (rows: examples made for; columns: error caused) and Table 4, as fractions.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "softmax1": {
        "softmax1": 1.0,
        "softmax2": 0.117,
        "softmax3": 0.227,
        "N100-100-10": 0.02,
        "N200-200-10": 0.039,
        "AE400-10": 0.027,
    },
    "softmax2": {
        "softmax1": 0.871,
        "softmax2": 1.0,
        "softmax3": 0.352,
        "N100-100-10": 0.359,
        "N200-200-10": 0.273,
        "AE400-10": 0.098,
    },
    "softmax3": {
        "softmax1": 0.719,
        "softmax2": 0.762,
        "softmax3": 1.0,
        "N100-100-10": 0.481,
        "N200-200-10": 0.47,
        "AE400-10": 0.344,
    },
    "N100-100-10": {
        "softmax1": 0.289,
        "softmax2": 0.137,
        "softmax3": 0.211,
        "N100-100-10": 1.0,
        "N200-200-10": 0.066,
        "AE400-10": 0.02,
    },
    "N200-200-10": {
        "softmax1": 0.382,
        "softmax2": 0.14,
        "softmax3": 0.238,
        "N100-100-10": 0.203,
        "N200-200-10": 1.0,
        "AE400-10": 0.027,
    },
    "AE400-10": {
        "softmax1": 0.234,
        "softmax2": 0.16,
        "softmax3": 0.248,
        "N100-100-10": 0.094,
        "N200-200-10": 0.066,
        "AE400-10": 1.0,
    },
    "noise 0.1": {
        "softmax1": 0.05,
        "softmax2": 0.101,
        "softmax3": 0.183,
        "N100-100-10": 0.0,
        "N200-200-10": 0.0,
        "AE400-10": 0.008,
    },
    "noise 0.3": {
        "softmax1": 0.156,
        "softmax2": 0.113,
        "softmax3": 0.227,
        "N100-100-10": 0.05,
        "N200-200-10": 0.043,
        "AE400-10": 0.031,
    },
}
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "M1": {"M1": 1.0, "M1'": 0.262, "M2": 0.059},
    "M1'": {"M1": 0.0625, "M1'": 1.0, "M2": 0.051},
    "M2": {"M1": 0.082, "M1'": 0.082, "M2": 1.0},
    "noise 0.06": {"M1": 0.022, "M1'": 0.026, "M2": 0.024},
    "M1 amplified 0.1": {"M1": 1.0, "M1'": 0.98, "M2": 0.43},
    "M1' amplified 0.1": {"M1": 0.96, "M1'": 1.0, "M2": 0.22},
    "M2 amplified 0.1": {"M1": 0.27, "M1'": 0.50, "M2": 1.0},
    "noise 0.1": {"M1": 0.026, "M1'": 0.028, "M2": 0.027},
}


def noise_label(stddev: float) -> str:
    return f"noise {stddev:g}"


def amplified_label(source: str, stddev: float) -> str:
    return f"{source} amplified {stddev:g}"


def table1(
    models: Mapping[str, Any], untargeted: Mapping[str, Any], targeted: Mapping[str, Any]
) -> dict[str, Any]:
    """Rows: model, train/test error, untargeted (and targeted) attack summary, paper numbers."""
    rows = []
    for name, model in models.items():
        u = untargeted[name]
        t = targeted.get(name)
        train_split = model["train_split"]
        rows.append(
            {
                "model": name,
                "train_error": model["errors"][train_split],
                "test_error": model["errors"]["test"],
                "n": u["n"],
                "success_rate": u["success_rate"],
                "mean_distortion": u["mean_distortion"],
                "median_distortion": u["median_distortion"],
                "max_distortion": u["max_distortion"],
                "verified": u["verified"],
                "verify_mismatches": u["verify_mismatches"],
                "targeted_success_rate": t["success_rate"] if t else None,
                "targeted_mean_distortion": t["mean_distortion"] if t else None,
                "paper": {
                    k: model["paper"].get(k) for k in ("train_error", "test_error", "distortion")
                },
            }
        )
    return {"rows": rows}


def cross_table(
    models: Sequence[str],
    cross: Mapping[str, Any],
    noise: Sequence[Mapping[str, Any]],
    amplified: Sequence[Mapping[str, Any]],
    paper: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """A transfer matrix: one row per source model, noise level and amplified source.

    Row fields: ``label``, ``kind`` (``adversarial`` | ``noise`` | ``amplified``), ``source``,
    ``distortion`` (mean over the row's images), ``n``, ``errors`` (model -> error), ``paper``.
    """
    rows: list[dict[str, Any]] = []
    for source in models:
        c = cross[source]
        rows.append(
            {
                "label": source,
                "kind": "adversarial",
                "source": source,
                "n": c["n"],
                "distortion": c["mean_distortion"],
                "errors": c["errors"],
                "clean_errors": c["clean_errors"],
                "paper": paper.get(source),
            }
        )
    noise_rows = [
        {
            "label": noise_label(r["stddev"]),
            "kind": "noise",
            "source": None,
            "stddev": r["stddev"],
            "n": r["n"],
            "distortion": r["achieved_distortion"],
            "errors": r["errors"],
            "paper": paper.get(noise_label(r["stddev"])),
        }
        for r in noise
    ]
    amp_rows = [
        {
            "label": amplified_label(r["source"], r["stddev"]),
            "kind": "amplified",
            "source": r["source"],
            "stddev": r["stddev"],
            "n": r["n"],
            "distortion": r["achieved_distortion"],
            "errors": r["errors"],
            "paper": paper.get(amplified_label(r["source"], r["stddev"])),
        }
        for r in amplified
    ]
    if amp_rows:  # the paper's order: raw rows, small noise, amplified rows, large noise
        rows += noise_rows[:1] + amp_rows + noise_rows[1:]
    else:
        rows += noise_rows
    return {"columns": list(models), "rows": rows}


def table3(models: Mapping[str, Any], untargeted: Mapping[str, Any]) -> dict[str, Any]:
    """Rows: model, error on P1 / P2 / test, mean distortion on the test set, paper numbers."""
    rows = []
    for name, model in models.items():
        u = untargeted[name]
        rows.append(
            {
                "model": name,
                "train_split": model["train_split"],
                "err_p1": model["errors"]["p1"],
                "err_p2": model["errors"]["p2"],
                "err_test": model["errors"]["test"],
                "n": u["n"],
                "success_rate": u["success_rate"],
                "mean_distortion": u["mean_distortion"],
                "verified": u["verified"],
                "verify_mismatches": u["verify_mismatches"],
                "paper": {
                    k: model["paper"].get(k)
                    for k in ("err_p1", "err_p2", "test_error", "distortion")
                },
            }
        )
    return {"rows": rows}
