"""Run (or resume) the experiment in a directory and write its ``results.json``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import torch

from intriguing.experiments.classes.bench import Bench, EncoderLoader, load_encoder
from intriguing.experiments.classes.config import ClassesConfig
from intriguing.experiments.classes.steps import build_steps
from intriguing.experiments.classes.summary import summarize
from intriguing.experiments.classes.tasks import parse_tasks
from intriguing.experiments.rundir import RunDirectory
from intriguing.report.classes import SCHEMA

if TYPE_CHECKING:
    from intriguing.experiments.graph import Backend


class ClassesOptions(TypedDict, total=False):
    """:class:`~intriguing.experiments.rundir.RunOptions` and ``encoder_loader``: the AE400
    encoder of the ae-probe family (default :func:`load_encoder`; tests pass a fake)."""

    data_dir: str | os.PathLike[str] | None
    backend: Backend | None
    encoder_loader: EncoderLoader


def run_classes(
    config: ClassesConfig, out: str | os.PathLike[str], **options: Unpack[ClassesOptions]
) -> dict[str, Any]:
    """Run (or resume) the experiment in ``out``; write ``out/results.json`` atomically.

    Returns the results document (:func:`summarize`) with ``timings`` added. ``options``:
    ``data_dir``, ``backend`` (default: local; ``RayBackend`` for a Ray cluster, with identical
    results) and ``encoder_loader`` (:class:`ClassesOptions`).

    Raises:
        IntriguingError: bad settings, missing data, an unusable ``out``.
    """
    loader = options.get("encoder_loader", load_encoder)
    bench = Bench(config.dataset, options.get("data_dir"), config, encoder_loader=loader)
    bench.check_train_limit(parse_tasks(config.tasks))  # before the run folder is made
    run = RunDirectory(out, one_thread=False, schema=SCHEMA)
    results = run.run(
        build_steps(config, bench), description="classes", backend=options.get("backend")
    )
    doc = summarize(results, config)
    doc["timings"] = {
        "steps_wall_time_s": sum(run.step_times().values()),
        "wall_time_s": run.wall_time_s,
        "cpu_time_s": run.cpu_time_s,
        "torch_threads": torch.get_num_threads(),
        "steps_reused": len(run.reused),
        "steps_total": len(results),
    }
    return run.write(doc)
