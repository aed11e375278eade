"""Execution backends of the step graph: the local default, local worker processes, a Ray cluster.

:func:`~intriguing.experiments.graph.run_graph` decides *what* runs (dependency order, fingerprints,
resuming) and saves every record itself; a backend decides *where* step functions run. The local
backend lives in :mod:`intriguing.experiments.graph` and needs nothing beyond the package;
:class:`ProcessBackend` (``--workers N``) runs up to ``N`` ready steps at once in worker processes
of this machine, also with nothing beyond the package; :class:`RayBackend` runs every ready step as a
Ray task (``pip install "intriguing[ray]"``). Both ship steps the same way:

- a step travels with its dependencies' results (Ray: its function pickled by cloudpickle, results
  through the object store; worker processes: the standard pickle, and a step whose function cannot
  be pickled runs in the driver instead); it returns a
  :class:`~intriguing.experiments.graph.StepOutcome` that the driver saves with
  :meth:`RunStore.save` exactly as the local backend does;
- a :class:`~intriguing.experiments.steps.Workbench` travels (its ``__reduce__``, see
  :func:`~intriguing.experiments.graph.process_local`) as ``(dataset, data_dir, seed)`` plus the
  driver's ``INTRIGUING_*`` directories, never with its tensors: each worker process loads the data
  from the data directory and the models from the checkpoint cache once, and keeps them;
- large artefacts (adversarial images) are written by the workers into the results directory, so on
  a multi-node cluster the results, data and cache directories must be on a shared filesystem;
- a Ray worker that dies mid-step (killed, out of memory, node lost) is retried up to
  ``max_retries`` times; a local worker that dies stops the run with one line, and rerunning the
  command resumes it. The record is written once, by the driver, when an attempt succeeds, so
  nothing is counted twice or lost. An error raised *by* a step (a user mistake, a bug) is not
  retried;
- workers use the driver's number of torch threads, so results equal the local backend's bit for
  bit (every step is deterministic given its params, whichever process runs it).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import socket
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments.graph import (
    Backend,
    LocalBackend,
    RunStore,
    Step,
    StepOutcome,
    execute_step,
)
from intriguing.paths import CACHE_DIR_ENV, DATA_DIR_ENV, cache_dir

BackendName = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
RAY_HINT = 'pip install "intriguing[ray]"'
ENV_PREFIX = "INTRIGUING_"


MAX_WORKERS = 64


def make_backend(
    name: str, *, address: str | None = None, workers: int = 1, max_retries: int = 3
) -> Backend:
    """The backend called ``name`` (``"local"`` or ``"ray"``); ``address`` only goes with Ray.

    ``workers`` (local only, 1..``MAX_WORKERS``): 1 runs steps one at a time in this process
    (:class:`LocalBackend`); more runs that many steps at once in worker processes
    (:class:`ProcessBackend`). Results are the same either way.

    Raises:
        InvalidInputError: an unknown name, an address given to the local backend, workers out of
            range or given to Ray.
    """
    check_workers(workers)
    if name == "local":
        if address is not None:
            raise InvalidInputError("--address needs --backend ray (the local backend has none)")
        return LocalBackend() if workers == 1 else ProcessBackend(workers)
    if name == "ray":
        if workers != 1:
            raise InvalidInputError(
                "--workers goes with --backend local; Ray sizes itself from the cluster's CPUs"
            )
        return RayBackend(address=address, max_retries=max_retries)
    raise InvalidInputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def check_workers(workers: object) -> None:
    """InvalidInputError unless ``workers`` is an integer in 1..``MAX_WORKERS``."""
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise InvalidInputError(
            f"workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}"
        )


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise IntriguingError(f"the Ray backend needs the ray package: {RAY_HINT}") from None
    return ray


def check_address(address: str) -> None:
    """Fail fast (one line) when ``address`` is malformed or nothing listens there.

    Ray itself retries an unreachable address for minutes; ``"auto"`` is left to Ray.
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInputError(
            f"--address {address!r} must be HOST:PORT (as printed by `ray start --head`), "
            "ray://HOST:PORT or auto"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise IntriguingError(
            f"no Ray cluster reachable at {address} ({reason}); "
            "start one with `ray start --head` or fix --address"
        ) from None


# ------------------------------------------------------------------------ what workers receive
def driver_env() -> dict[str, str]:
    """The driver's ``INTRIGUING_*`` settings, directories made absolute, progress bars off."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    env[CACHE_DIR_ENV] = str(cache_dir().expanduser().resolve())
    if env.get(DATA_DIR_ENV):
        env[DATA_DIR_ENV] = str(Path(env[DATA_DIR_ENV]).expanduser().resolve())
    env["INTRIGUING_NO_PROGRESS"] = "1"
    return env


def apply_env(env: Mapping[str, str]) -> None:
    """Make this process's ``INTRIGUING_*`` variables exactly ``env`` (workers are reused)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env]:
        del os.environ[key]
    os.environ.update(env)


def remote_step(
    step: Step,
    dep_keys: list[str],
    root: str,
    env: Mapping[str, str],
    threads: int,
    *dep_outcomes: StepOutcome,
) -> StepOutcome:
    """Body of a step's Ray task: its dependencies' results from their outcomes, then
    :func:`process_step`."""
    deps = {key: outcome.result for key, outcome in zip(dep_keys, dep_outcomes, strict=True)}
    return process_step(step, deps, root, env, threads)


# ------------------------------------------------------------------------- local processes
def process_step(
    step: Step, deps: Mapping[str, Any], root: str, env: Mapping[str, str], threads: int
) -> StepOutcome:
    """Body of a step in a worker process (local or Ray): the driver's settings, then the very code
    the local backend runs."""
    apply_env(env)
    torch.set_num_threads(threads)
    return execute_step(step, deps, RunStore(root))


class ProcessBackend:
    """Run up to ``workers`` ready steps at once, each in a worker process of this machine.

    Workers are started with ``spawn`` (no state inherited from the driver but what is sent), use
    the driver's torch thread count and ``INTRIGUING_*`` settings, and live for the whole run, so
    each loads the data and models once (:func:`~intriguing.experiments.graph.process_local`).
    A step that the standard pickle cannot send runs in the driver process instead. As with any
    ``spawn`` pool, a script that builds this backend must keep its top-level code under
    ``if __name__ == "__main__":`` (workers import the script's module).

    Args:
        workers: worker processes (>= 2; 1 is :class:`LocalBackend`).
    """

    name = "processes"

    def __init__(self, workers: int) -> None:
        check_workers(workers)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight: dict[Future[StepOutcome], str] = {}
        self._inline: list[tuple[Step, Mapping[str, Any], RunStore]] = []
        self._env: dict[str, str] = {}
        self._threads = 1

    def start(self) -> int:
        self._env = driver_env()
        self._threads = torch.get_num_threads()
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        )
        return self.workers

    def submit(self, step: Step, deps: Mapping[str, Any], store: RunStore) -> None:
        if self._pool is None:
            raise RuntimeError("ProcessBackend.submit() called before start()")
        root = str(store.root.expanduser().resolve())
        try:
            pickle.dumps(step.fn)
        except (pickle.PicklingError, AttributeError, TypeError):
            self._inline.append((step, deps, store))
            return
        try:
            future = self._pool.submit(process_step, step, deps, root, self._env, self._threads)
        except BrokenProcessPool:  # a worker died while running an earlier step
            raise _worker_died(step.key) from None
        self._in_flight[future] = step.key

    def wait(self) -> StepOutcome:
        if self._inline:
            return execute_step(*self._inline.pop(0))
        if not self._in_flight:
            raise RuntimeError("ProcessBackend.wait() called with no step submitted")
        done, _ = wait_futures(list(self._in_flight), return_when=FIRST_COMPLETED)
        future = next(iter(done))
        key = self._in_flight.pop(future)
        try:
            return future.result()
        except BrokenProcessPool:
            raise _worker_died(key) from None

    def stop(self, *, abort: bool) -> None:
        pool, self._pool = self._pool, None
        self._in_flight.clear()
        self._inline.clear()
        if pool is None:
            return
        if abort:  # a step failed or the driver was interrupted: do not finish the others' steps
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=abort)


def _worker_died(key: str) -> IntriguingError:
    return IntriguingError(
        f"a worker process died (killed or out of memory) while the run was at step {key!r}; "
        "rerun the same command to resume, with fewer --workers if memory is short"
    )


# ------------------------------------------------------------------------------- Ray
class RayBackend:
    """Run the graph's steps as Ray tasks, independent steps concurrently.

    Args:
        address: an existing cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); None starts
            a private local Ray runtime for the run (on loopback) and stops it afterwards. When Ray
            is already initialised in this process, that runtime is used as it is.
        num_cpus: CPUs of the private local runtime (default: every core); not with ``address``.
        max_retries: how often a step whose worker died is retried before the run fails.
        cpus_per_step: Ray CPUs each step's task reserves.
        max_in_flight: most steps submitted at once (default: the cluster's CPUs / cpus_per_step);
            the rest wait in dependency order, so the earliest steps run first.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_retries: int = 3,
        cpus_per_step: float = 1.0,
        max_in_flight: int | None = None,
    ) -> None:
        if max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {max_retries}")
        if cpus_per_step <= 0:
            raise InvalidInputError(f"cpus_per_step must be > 0, got {cpus_per_step}")
        if num_cpus is not None and (num_cpus < 1 or address is not None):
            raise InvalidInputError("num_cpus must be >= 1 and only sizes a local runtime")
        if max_in_flight is not None and max_in_flight < 1:
            raise InvalidInputError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if address is not None:
            check_address(address)
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.cpus_per_step = cpus_per_step
        self.max_in_flight = max_in_flight
        self._ray: Any = None
        self._task: Any = None
        self._owned = False
        self._env: dict[str, str] = {}
        self._threads = 1
        self._in_flight: dict[Any, str] = {}
        self._refs: dict[str, Any] = {}

    # -- lifecycle
    def start(self) -> int:
        ray = import_ray()
        self._ray = ray
        if not ray.is_initialized():
            self._connect(ray)
            self._owned = True
        self._task = ray.remote(remote_step).options(
            num_cpus=self.cpus_per_step, max_retries=self.max_retries, retry_exceptions=False
        )
        self._env = driver_env()
        self._threads = torch.get_num_threads()
        if self.max_in_flight is not None:
            return self.max_in_flight
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.cpus_per_step))

    def _connect(self, ray: Any) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            ray.init(num_cpus=self.num_cpus, _node_ip_address="127.0.0.1", **quiet)
            return
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IntriguingError(f"cannot join the Ray cluster at {address}: {message}") from None

    def stop(self, *, abort: bool) -> None:
        ray = self._ray
        if ray is None:
            return
        if abort:
            for ref in self._in_flight:
                with contextlib.suppress(Exception):  # already finished or gone
                    ray.cancel(ref)  # interrupts the task; the worker process is kept
        self._in_flight.clear()
        self._refs.clear()
        if self._owned:
            ray.shutdown()
            self._owned = False
        self._ray = None

    # -- steps
    def submit(self, step: Step, deps: Mapping[str, Any], store: RunStore) -> None:
        dep_refs = [self._ref_of(key, deps[key]) for key in step.deps]
        root = str(store.root.expanduser().resolve())
        ref = self._task.remote(step, list(step.deps), root, self._env, self._threads, *dep_refs)
        self._in_flight[ref] = step.key

    def _ref_of(self, key: str, result: Any) -> Any:
        """The object-store reference of ``key``'s outcome (put there once if it was reused)."""
        if key not in self._refs:
            self._refs[key] = self._ray.put(StepOutcome(key, result, 0.0))
        return self._refs[key]

    def wait(self) -> StepOutcome:
        ray = self._ray
        ready, _ = ray.wait(list(self._in_flight), num_returns=1)
        ref = ready[0]
        key = self._in_flight.pop(ref)
        try:
            outcome: StepOutcome = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, IntriguingError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise IntriguingError(
                f"step {key!r} failed on the Ray cluster after {self.max_retries} retries "
                f"({type(exc).__name__}); rerun the same command to resume"
            ) from None
        self._refs[key] = ref
        return outcome
