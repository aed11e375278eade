"""The results document (``results.json``): per task and family, with bootstrap and Wilson intervals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from intriguing.analysis.stats import mean_median_ci, ratio_of_means_ci
from intriguing.experiments.classes.config import ClassesConfig
from intriguing.experiments.classes.families import FAMILIES
from intriguing.experiments.classes.tasks import get_task
from intriguing.experiments.graph import step_key
from intriguing.report.classes import SCHEMA

CONFIDENCE = 0.95


def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of a proportion ``k / n`` as stored in results.json (None when n = 0);
    computed by :func:`intriguing.analysis.stats.wilson`."""
    if n == 0:
        return None
    from intriguing.analysis.stats import wilson as wilson_interval

    return list(wilson_interval(k, n, CONFIDENCE))


def summarize(results: Mapping[str, Any], config: ClassesConfig) -> dict[str, Any]:
    """The run's results document (``results.json``) from the step results."""
    rows: list[dict[str, Any]] = []
    stats = {"resamples": config.bootstrap, "seed": config.seed}
    for task_name in config.tasks:
        task = get_task(task_name)
        for family in config.families:
            trained = results[step_key("train", task.name, family)]
            row: dict[str, Any] = {
                "task": task.name,
                "num_classes": task.num_classes,
                "family": family,
                "description": FAMILIES[family].description,
                "n_train": trained["n_train"],
                "train_error": trained["train_error"],
                "test_error": trained["test_error"],
                "epochs": trained["epochs"],
                "train_cpu_s": trained["cpu_time_s"],
                "attacked": FAMILIES[family].attacked,
            }
            attack = results.get(step_key("attack", task.name, family))
            if attack is not None:
                row.update(_attack_row(attack, stats))
            transfer = results.get(f"transfer/{task.name}/{family}")
            if transfer is not None:
                row["transfer"] = {
                    target: {
                        **t,
                        "rate": t["fooled"] / t["n"] if t["n"] else None,
                        "rate_ci": wilson(t["fooled"], t["n"]),
                    }
                    for target, t in transfer["targets"].items()
                }
            restricted = results.get(f"restricted/{task.name}/{family}")
            if restricted is not None:
                row["restricted"] = _restricted_row(restricted, stats)
            rows.append(row)
    return {
        "schema": SCHEMA,
        "question": "if the number of classes is small, will the problem be less severe?",
        "config": config.to_dict(),
        "tasks": [get_task(t).to_dict() for t in config.tasks],
        "families": {f: FAMILIES[f].description for f in config.families},
        "rows": rows,
    }


def _attack_row(attack: Mapping[str, Any], stats: Mapping[str, int]) -> dict[str, Any]:
    success = attack["success"]
    dist = [d for d, s in zip(attack["distortion"], success, strict=True) if s]
    n = len(success)
    row: dict[str, Any] = {
        "n_task_test": attack["n_task_test"],
        "n_attacked": n,
        "success_rate": sum(success) / n if n else None,
        "distortion": mean_median_ci(dist, **stats),
        "grad_evals_mean": float(np.mean(attack["grad_evals"])) if n else None,
        "attack_s": attack["elapsed_s"],
    }
    if attack.get("exact"):
        exact = [v for v in attack["exact"] if v is not None]
        row["exact"] = mean_median_ci(exact, **stats)
        pairs = [
            (d, e)
            for d, e, s in zip(attack["distortion"], attack["exact"], success, strict=True)
            if s and e
        ]
        row["lbfgs_over_exact"] = (
            float(np.mean([d for d, _ in pairs]) / np.mean([e for _, e in pairs]))
            if pairs
            else None
        )
    return row


def _restricted_row(r: Mapping[str, Any], stats: Mapping[str, int]) -> dict[str, Any]:
    triples = [
        (t, u, s)
        for t, u, s in zip(r["task_distortion"], r["untargeted"], r["restricted"], strict=True)
        if t is not None and u is not None and s is not None
    ]
    task_d, untargeted, restricted = (
        (list(col) for col in zip(*triples, strict=True)) if triples else ([], [], [])
    )
    out: dict[str, Any] = {
        "n_kept": r["n_kept"],
        "n_paired": len(triples),
        "task_mean": float(np.mean(task_d)) if triples else None,
        "all_untargeted": mean_median_ci(untargeted, **stats),
        "all_restricted": mean_median_ci(restricted, **stats),
        "task_over_restricted": ratio_of_means_ci(task_d, restricted, **stats),
        "restricted_over_untargeted": ratio_of_means_ci(restricted, untargeted, **stats),
    }
    if r.get("exact_restricted") is not None:
        keep = [
            (t, u, s)
            for t, u, s in zip(
                r.get("exact_task") or [None] * r["n_kept"],
                r["exact_untargeted"],
                r["exact_restricted"],
                strict=True,
            )
            if t is not None and u is not None and s is not None
        ]
        if keep:
            t_e, u_e, s_e = (np.asarray(col) for col in zip(*keep, strict=True))
            out["exact"] = {
                "n": len(keep),
                "task_mean": float(t_e.mean()),
                "all_untargeted_mean": float(u_e.mean()),
                "all_restricted_mean": float(s_e.mean()),
            }
    return out
