"""Run (or resume) the experiment in a directory and write its ``results.json``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from intriguing._io import atomic_write_json
from intriguing.errors import IntriguingError
from intriguing.experiments.classes.bench import Bench, EncoderLoader, load_encoder
from intriguing.experiments.classes.config import ClassesConfig
from intriguing.experiments.classes.steps import build_steps
from intriguing.experiments.classes.summary import summarize

if TYPE_CHECKING:
    from intriguing.experiments.graph import Backend


def run_classes(
    config: ClassesConfig,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    encoder_loader: EncoderLoader = load_encoder,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment in ``out``; write ``out/results.json`` atomically.

    Returns the results document (:func:`summarize`) with ``timings`` added. ``backend`` runs the
    steps (default: local; ``RayBackend`` for a Ray cluster, with identical results).

    Raises:
        IntriguingError: bad settings, missing data, an unusable ``out``.
    """
    from intriguing.experiments.graph import RunStore, run_graph

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise IntriguingError(f"--out {root} is a file; give a directory")
    start, cpu_start = time.perf_counter(), time.process_time()
    bench = Bench(config.dataset, data_dir, config, encoder_loader=encoder_loader)
    reused: list[str] = []
    results = run_graph(
        build_steps(config, bench),
        RunStore(root),
        description="classes",
        on_step=lambda step, cached: reused.append(step.key) if cached else None,
        backend=backend,
    )
    doc = summarize(results, config)
    store = RunStore(root)
    records = [store.load(key) for key in results]
    doc["timings"] = {
        "steps_wall_time_s": sum(float(r["elapsed_s"]) for r in records if r is not None),
        "wall_time_s": time.perf_counter() - start,
        "cpu_time_s": time.process_time() - cpu_start,
        "torch_threads": torch.get_num_threads(),
        "steps_reused": len(reused),
        "steps_total": len(results),
    }
    atomic_write_json(root / "results.json", doc)
    return doc
