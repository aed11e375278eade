"""An experiment's run directory: the one place for what every ``run_*`` does around its steps.

:class:`RunDirectory` checks the directory, runs on one torch thread, starts the clock, runs (or
resumes) the step graph in a :class:`~intriguing.experiments.graph.RunStore` there, records which
steps were reused and how long each took, and writes the results document. :class:`RunOptions`
(and :class:`ReportOptions`) are the keywords every ``run_*`` takes::

    run_reproduce(spec, out, data_dir=..., backend=RayBackend(), render=False)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import torch

from intriguing._io import atomic_write_json, sealed
from intriguing.errors import InvalidInputError
from intriguing.experiments.graph import Backend, RunStore, Step, run_graph

RESULTS_FILE = "results.json"
# what a run writes into its directory: checked before any work, so that a directory where a file
# goes (or a file where a folder goes) fails in one line at the start, not after the run
RUN_FILES = (RESULTS_FILE, "report.md", "report.html")
RUN_FOLDERS = ("steps", "artifacts", "figures")


class RunOptions(TypedDict, total=False):
    """The keywords of every ``run_*`` experiment, all optional.

    ``data_dir``: the directory of the MNIST IDX files (default: ``$INTRIGUING_DATA_DIR``, the
    cache, a download). ``backend``: where the steps run (default: local, in this process;
    :class:`~intriguing.experiments.backends.RayBackend` for a Ray cluster, with identical results).
    """

    data_dir: str | os.PathLike[str] | None
    backend: Backend | None


class ReportOptions(TypedDict, total=False):
    """:class:`RunOptions` and ``render``: write the report when the run ends (default True)."""

    data_dir: str | os.PathLike[str] | None
    backend: Backend | None
    render: bool


class RunDirectory:
    """The directory ``out`` of one run, its clock started when made.

    Args:
        out: the run directory (created as needed; a file there is refused).
        one_thread: run on one torch thread (the steps' numbers do not depend on the machine).
        schema: the ``schema`` of the results this run writes (``intriguing.reproduce/1``): a
            results.json of another command already in ``out`` is refused, not overwritten.

    Raises:
        InvalidInputError: ``out`` is a file, or holds another command's results.json.
    """

    def __init__(
        self, out: str | os.PathLike[str], *, one_thread: bool = True, schema: str | None = None
    ) -> None:
        self.root = Path(out)
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(f"--out {self.root} is a file; give a directory")
        _check_layout(self.root)
        if schema is not None:
            _check_own_results(self.root / RESULTS_FILE, schema)
        if one_thread:
            torch.set_num_threads(1)
        self.store = RunStore(self.root, derived=RUN_FILES)
        self.reused: list[str] = []  # keys of the steps found finished in the store
        self.results: dict[str, Any] = {}
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def run(
        self, steps: Iterable[Step], *, description: str, backend: Backend | None = None
    ) -> dict[str, Any]:
        """Run (or resume) ``steps`` here (:func:`~intriguing.experiments.graph.run_graph`)."""

        def count(step: Step, cached: bool) -> None:
            if cached:
                self.reused.append(step.key)

        self.results = run_graph(
            steps, self.store, description=description, on_step=count, backend=backend
        )
        return self.results

    @property
    def wall_time_s(self) -> float:
        """Seconds since the directory was opened."""
        return time.perf_counter() - self._wall

    @property
    def cpu_time_s(self) -> float:
        """CPU seconds of this process since the directory was opened."""
        return time.process_time() - self._cpu

    def step_times(self) -> dict[str, float]:
        """Seconds each step took when it was computed, by key (steps without a record left out)."""
        times = {}
        for key in self.results:
            record = self.store.load(key)
            if record is not None:
                times[key] = float(record.get("elapsed_s", 0.0))
        return times

    def timings(self) -> dict[str, Any]:
        """results.json's ``timings``: when the run finished, its wall time, torch threads and
        the seconds of each step."""
        return {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_time_s": round(self.wall_time_s, 3),
            "torch_threads": torch.get_num_threads(),
            "steps_s": self.step_times(),
        }

    def write(self, document: dict[str, Any], name: str = RESULTS_FILE) -> dict[str, Any]:
        """Write ``document`` as ``<out>/<name>`` atomically, sealed with its digest
        (:func:`~intriguing._io.sealed`); return it exactly as it reads back."""
        document = sealed(json.loads(json.dumps(document, allow_nan=False)))
        atomic_write_json(self.root / name, document)
        return document


def _check_layout(root: Path) -> None:
    """Refuse a run directory whose results or report paths are folders, or whose step, artifact
    or figure folders are files (the run could not write there)."""
    for name in RUN_FILES:
        if (root / name).is_dir():
            raise InvalidInputError(
                f"--out {root}: {root / name} is a directory where the run writes a file; "
                "remove it or choose another --out"
            )
    for name in RUN_FOLDERS:
        if (root / name).exists() and not (root / name).is_dir():
            raise InvalidInputError(
                f"--out {root}: {root / name} is a file where the run keeps a folder; "
                "remove it or choose another --out"
            )


def _check_own_results(path: Path, schema: str) -> None:
    """Refuse ``path`` if it is the results.json of another command (a schema of another family:
    ``intriguing.classes/1`` where ``intriguing.reproduce/1`` is written). Unreadable or older
    results of the same command are this run's to rewrite."""
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("schema")
    except (OSError, ValueError, AttributeError):
        return
    family = schema.split("/")[0] + "/"
    if isinstance(found, str) and not found.startswith(family):
        raise InvalidInputError(
            f"--out {path.parent} holds the results of another command ({found[:60]!r}); choose "
            "another --out (nothing is overwritten)"
        )
