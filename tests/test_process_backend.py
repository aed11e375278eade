"""The local worker-process backend (``--workers N``) against the in-process local backend.

Oracle: :class:`LocalBackend` (one step at a time in this process). The graph's steps are the Ray
tests' picklable steps (``test_ray_backend``); a process run must store the same results apart
from timings and worker pids, run steps in more than one process, surface a step's error as that
error, and stop with one line when a worker dies (a rerun then resumes). The real reproduction
with two workers is compared with one worker's in ``test_reproduce.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.cli.options import WORKERS_MAX
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments.backends import MAX_WORKERS, ProcessBackend, make_backend
from intriguing.experiments.graph import LocalBackend, RunStore, Step, run_graph
from test_ray_backend import HERE, _graph, _stored


@pytest.fixture(autouse=True)
def tests_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned workers import this folder's step functions by module name."""
    saved = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), saved) if p))


def _pids(root: Path) -> set[int]:
    return {
        result["pid"]
        for key, result in RunStore(root).results().items()
        if key.startswith("shard/")
    }


def test_make_backend_picks_processes_for_more_than_one_worker() -> None:
    assert isinstance(make_backend("local"), LocalBackend)
    backend = make_backend("local", workers=3)
    assert isinstance(backend, ProcessBackend) and backend.workers == 3
    assert MAX_WORKERS == WORKERS_MAX  # the CLI's bound is the backend's


@pytest.mark.parametrize("workers", [0, -1, MAX_WORKERS + 1, True, 2.0, "2"])
def test_bad_worker_counts_are_refused(workers: Any) -> None:
    with pytest.raises(InvalidInputError, match="workers must be an integer"):
        make_backend("local", workers=workers)


def test_workers_do_not_go_with_ray() -> None:
    with pytest.raises(InvalidInputError, match="--workers goes with --backend local"):
        make_backend("ray", workers=2)


def test_process_run_stores_what_the_local_run_stores(tmp_path: Path) -> None:
    local = tmp_path / "local"
    procs = tmp_path / "procs"
    run_graph(_graph(tmp_path / "a.log", n_shards=6), RunStore(local), backend=LocalBackend())
    run_graph(_graph(tmp_path / "b.log", n_shards=6), RunStore(procs), backend=ProcessBackend(2))
    assert _stored(procs) == _stored(local)
    assert os.getpid() not in _pids(procs)  # the shards ran in workers, not in the driver
    assert _pids(local) == {os.getpid()}


def test_a_step_that_cannot_be_pickled_runs_in_the_driver(tmp_path: Path) -> None:
    steps = [
        Step("a", lambda ctx: {"pid": os.getpid(), "x": 1}, {}),
        Step("b", lambda ctx: {"pid": os.getpid(), "y": ctx.deps["a"]["x"] + 1}, {}, ("a",)),
    ]
    results = run_graph(steps, RunStore(tmp_path / "run"), backend=ProcessBackend(2))
    assert results["b"] == {"pid": os.getpid(), "y": 2}


def test_a_step_error_reaches_the_driver_and_a_rerun_resumes(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    store = RunStore(tmp_path / "run")
    with pytest.raises(IntriguingError, match="fails once on purpose"):
        run_graph(_graph(log, fail_once=True), store, backend=ProcessBackend(2))
    run_graph(_graph(log, fail_once=True), store, backend=ProcessBackend(2))
    fresh = tmp_path / "fresh"
    run_graph(_graph(tmp_path / "f.log"), RunStore(fresh), backend=LocalBackend())
    assert _stored(tmp_path / "run") == _stored(fresh)


def test_a_killed_worker_stops_the_run_with_one_line_and_a_rerun_resumes(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    store = RunStore(tmp_path / "run")
    with pytest.raises(IntriguingError, match=r"worker process died .* rerun the same command"):
        run_graph(_graph(log, kill_once=True), store, backend=ProcessBackend(2))
    run_graph(_graph(log, kill_once=True), store, backend=ProcessBackend(2))
    fresh = tmp_path / "fresh"
    run_graph(_graph(tmp_path / "f.log"), RunStore(fresh), backend=LocalBackend())
    assert _stored(tmp_path / "run") == _stored(fresh)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--workers", "2", "--backend", "ray"], "--workers goes with --backend local"),
    ],
)
def test_cli_refuses_bad_workers_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["reproduce", "--quick", "--dataset", "mnist-5k", "--out", str(out), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
