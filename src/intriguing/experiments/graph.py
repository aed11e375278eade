"""A graph of cached, resumable experiment steps.

An experiment (a table of the paper, say) is declared as data: a set of :class:`Step` objects, each
with a unique key, JSON-serialisable parameters, the keys it depends on and a function that computes
a JSON-serialisable result from its parameters and its dependencies' results. :func:`run_graph`
executes the steps in dependency order inside a :class:`RunStore` (a results directory):

- every finished step is written atomically to ``<root>/steps/<key>.json`` (by the driver, as
  soon as it finishes), so a killed run loses at most the steps in flight;
- a rerun skips every step whose stored *fingerprint* matches (a hash of the step's key, params,
  code version and its dependencies' fingerprints), so it continues where it stopped;
- changing a step's parameters invalidates it and everything downstream, nothing else;
- nothing read back is trusted (issue 16): each record stores the SHA-256 of every file in its
  artifact directory (``artifacts_sha256``), the digest of each dependency's record (``deps``)
  and its own digest (``digest``); a rerun recomputes a step whose record was edited, whose
  artifact is missing, truncated or replaced, or whose dependencies' records changed (a deleted
  dependency record recomputed to another result, say), and so, digest by digest, everything
  downstream of it;
- :meth:`RunStore.lock` makes one run directory one run at a time: a second process waits for the
  first and then reuses what it stored.

Steps must be deterministic given their params (seeds live in params), which makes a resumed run's
results equal to an uninterrupted run's. Large artefacts (images, checkpoints) go to files under
:meth:`RunStore.artifact_dir`; the JSON result records their relative paths.

Where step functions run is a :class:`Backend`: :class:`LocalBackend` (the default; one step at a
time in this process, no extra dependency) or ``RayBackend`` in :mod:`intriguing.experiments.backends`
(independent steps run concurrently as Ray tasks; see docs/ray.md). Both produce the same records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from intriguing._io import atomic_write_json, atomic_write_text, file_sha256, loads_strict
from intriguing.errors import IntriguingError, OutputError
from intriguing.progress import make_progress

StepFn = Callable[["StepContext"], Any]

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.'=+-]*(/[A-Za-z0-9][A-Za-z0-9_.'=+-]*)*$")


_PROCESS_LOCAL: dict[str, Any] = {}


def process_local(factory: Callable[..., Any], args: tuple[Any, ...], context: str = "") -> Any:
    """This process's one ``factory(*args)`` (made on first use, then reused; ``context`` keys it too).

    The one way a step's shared state (a workbench of loaded data and models) travels to another
    process: its ``__reduce__`` returns ``(process_local, (type, args, context))`` with ``args``
    naming where the data and models come from, never tensors, so a Ray worker builds one per
    setting and keeps it across tasks (and ``copy``/``pickle`` give the process's instance).
    """
    key = repr((factory.__module__, factory.__qualname__, args, context))
    if key not in _PROCESS_LOCAL:
        _PROCESS_LOCAL[key] = factory(*args)
    return _PROCESS_LOCAL[key]


def shipped_as(
    factory: Callable[..., Any], dataset: str, data_dir: str | os.PathLike[str] | None, *rest: Any
) -> tuple[Any, tuple[Any, ...]]:
    """A workbench's ``__reduce__``: ``factory(dataset, absolute data_dir, *rest)`` made once per
    process by :func:`process_local`, keyed also by the driver's ``INTRIGUING_*`` settings."""
    where = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("INTRIGUING_"))
    return process_local, (factory, (dataset, where, *rest), repr(env))


def step_key(*parts: object) -> str:
    """A step key from its parts: ``step_key("attack", "test", "softmax1")`` -> ``"attack/test/softmax1"``.

    The one way keys are built, so producers and readers agree; each part must be non-empty and
    free of ``/`` (``/`` separates the sub-folders of ``steps/`` and ``artifacts/``).
    """
    texts = [str(part) for part in parts]
    if not texts or any(not t or "/" in t for t in texts):
        raise ValueError(f"step key parts must be non-empty and free of '/': {texts}")
    return "/".join(texts)


def shard_key(split: str, model: str, mode: str, k: int) -> str:
    """The key of attack shard ``k`` of ``model`` on ``split`` (``attack/<split>/<m>/<mode>/shard-k``)."""
    return step_key("attack", split, model, mode, f"shard-{k:04d}")


@dataclass(frozen=True)
class Step:
    """One unit of cached work.

    Attributes:
        key: unique name such as ``"attack/softmax1/shard-003"``; ``/`` makes sub-folders.
        fn: computes the result from a :class:`StepContext`; must be deterministic given ``params``.
        params: JSON-serialisable settings (including seeds); part of the fingerprint.
        deps: keys of the steps whose results ``fn`` reads.
        version: bump it when ``fn``'s code changes meaning, to invalidate stored results.
        reusable: when given, a stored result is reused only if ``reusable(result)`` holds: for
            state outside the run directory that the result depends on (a cached checkpoint).
    """

    key: str
    fn: StepFn
    params: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    version: str = "1"
    reusable: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class StepContext:
    """What a step function sees: its params, its dependencies' results, and where to put files."""

    step: Step
    deps: Mapping[str, Any]
    store: RunStore

    @property
    def params(self) -> Mapping[str, Any]:
        return self.step.params

    def artifact_dir(self) -> Path:
        """A directory private to this step for large artefacts (created on demand)."""
        return self.store.artifact_dir(self.step.key)


# in a step's artifact folder: the fingerprint its files belong to
FINGERPRINT_FILE = ".fingerprint"


class RunStore:
    """A results directory holding one JSON record per finished step.

    ``step_keys``: the keys of the graph being run (set by :func:`run_graph`); an artifact
    directory nested inside another step's (``a`` and ``a/b``) belongs to the inner step.
    ``derived``: files built from the records (a run's results.json and reports), deleted before
    the first step is computed: from then on they no longer describe the records, and a rerun
    with other settings that is killed must not leave them sealed over changed records.
    """

    def __init__(self, root: str | Path, derived: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.step_keys: frozenset[str] = frozenset()
        self.derived = tuple(derived)

    def retire_derived(self) -> None:
        """Delete the ``derived`` files (once a step is about to be computed)."""
        for name in self.derived:
            (self.root / name).unlink(missing_ok=True)
        self.derived = ()

    def record_path(self, key: str) -> Path:
        return self.root / "steps" / f"{key}.json"

    def artifact_dir(self, key: str) -> Path:
        path = self.root / "artifacts" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or None if absent or unreadable (then it is recomputed)."""
        path = self.record_path(key)
        try:
            record = loads_strict(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict) or record.get("key") != key or "result" not in record:
            return None
        return record

    def save(
        self,
        key: str,
        fingerprint: str,
        result: Any,
        elapsed_s: float,
        deps: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write the record of a finished step; ``deps``: its dependencies' record digests.

        Returns the record as written (with ``artifacts_sha256`` of the step's files).
        """
        hashes = self.artifact_hashes(key)
        if not hashes:  # a step without files: no folder left holding only its marker
            base = self.root / "artifacts" / key
            (base / FINGERPRINT_FILE).unlink(missing_ok=True)
            while base != self.root / "artifacts":
                try:
                    base.rmdir()  # empty folders only: another step's files stay
                except OSError:
                    break
                base = base.parent
        record = {
            "key": key,
            "fingerprint": fingerprint,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed_s, 3),
            "deps": dict(sorted((deps or {}).items())),
            "artifacts_sha256": hashes,
            "result": result,
        }
        record["digest"] = record_digest(record)  # a record edited later no longer matches it
        atomic_write_json(self.record_path(key), record)
        return record

    def claim_artifacts(self, key: str, fingerprint: str) -> None:
        """Before ``key`` is computed with ``fingerprint``: delete the artifact files a run of the
        step with another fingerprint left (a finished step of other settings, or one killed
        part-way), keep those of this fingerprint (a killed step resumes from them: advtrain's
        epoch checkpoints) and those of unknown origin (no marker, no record: the step's own
        checks judge them), and record the fingerprint in the folder (``.fingerprint``, hidden, so
        not one of the step's hashed artifacts)."""
        base = self.root / "artifacts" / key
        marker = base / FINGERPRINT_FILE
        try:
            previous: str | None = marker.read_text(encoding="utf-8").strip()
        except OSError:  # no marker (a folder from before markers): the step's record, if any
            record = self.load(key)
            previous = None if record is None else str(record.get("fingerprint"))
        if previous is not None and previous != fingerprint:
            for path in self.artifact_files(key):
                path.unlink()
        base.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, fingerprint)

    def artifact_files(self, key: str) -> list[Path]:
        """The files of ``key``'s artifact directory (not those of steps nested inside it)."""
        base = self.root / "artifacts" / key
        if not base.is_dir():
            return []
        files: list[Path] = []
        for path in sorted(base.rglob("*")):
            inner = path.relative_to(self.root / "artifacts").as_posix()
            if any(
                inner == other or inner.startswith(other + "/")
                for other in self.step_keys
                if other != key and other.startswith(key + "/")
            ):
                continue
            if path.is_file() and not path.name.startswith("."):
                files.append(path)
        return files

    def artifact_hashes(self, key: str) -> dict[str, str]:
        """``{path relative to the run directory: SHA-256}`` of ``key``'s artifact files."""
        return {
            p.relative_to(self.root).as_posix(): file_sha256(p) for p in self.artifact_files(key)
        }

    def is_current(self, record: Mapping[str, Any], deps: Mapping[str, str]) -> bool:
        """Whether a stored record can be reused: its own digest matches what it says (not edited
        since it was written), same dependency digests, artifacts intact."""
        return record.get("deps") == dict(deps) and self._intact(record)

    def _intact(self, record: Mapping[str, Any]) -> bool:
        """The record's digest matches its content and its artifact files their hashes."""
        stored = record.get("artifacts_sha256")
        if not isinstance(stored, dict):
            return False
        try:
            if record.get("digest") != record_digest(record):
                return False
        except IntriguingError:  # a result that is no longer canonical JSON
            return False
        for rel, digest in stored.items():
            path = self.root / str(rel)
            if not path.is_file() or file_sha256(path) != digest:
                return False
        return True

    def verified(
        self, key: str, digest: str | None = None, *, command: str = "reproduce"
    ) -> dict[str, Any]:
        """The record of a finished step, checked before another command reads it: present,
        unedited (its digest), its artifact files intact and, given ``digest``, the very record
        that a dependant step was computed from (not one left over from another run).

        Raises:
            IntriguingError: one line naming the record and what to run (``intriguing
                <command>``).
        """
        rerun = f"rerun `intriguing {command}` with the same options and --out"
        path = self.record_path(key)
        record = self.load(key)
        if record is None:
            raise IntriguingError(f"{path}: missing or unreadable step record; {rerun}")
        if not self._intact(record):
            raise IntriguingError(
                f"{path}: changed after the run (its digest or an artifact file does not match); "
                f"{rerun} to re-derive it"
            )
        if digest is not None and record.get("digest") != digest:
            raise IntriguingError(
                f"{path}: not the record its run's summary was computed from (left over from "
                f"another run); {rerun}"
            )
        return record

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the run directory's lock (``<root>/.lock``, POSIX ``flock``); re-entrant.

        A second process running into the same directory waits (``on_wait`` is told once) and
        then resumes from what the first stored, instead of doing all the work twice.
        """
        key = str(self.root.expanduser().resolve())
        if _HELD.get(key, 0) > 0:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise OutputError(
                f"{self.root}: cannot use as a run directory ({exc.strerror or exc}); choose "
                "another --out"
            ) from None
        with handle:
            _flock(handle.fileno(), self.root, on_wait)
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD[key] = 0
                _funlock(handle.fileno())

    def results(self) -> dict[str, Any]:
        """Every stored step's result by key (what reports render from)."""
        out: dict[str, Any] = {}
        steps_root = self.root / "steps"
        for path in sorted(steps_root.rglob("*.json")):
            key = path.relative_to(steps_root).with_suffix("").as_posix()
            record = self.load(key)
            if record is not None:
                out[key] = record["result"]
        return out


_HELD: dict[str, int] = {}  # run directories whose lock this process holds (re-entrancy)


def _flock(fd: int, root: Path, on_wait: Callable[[str], None] | None) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        message = f"waiting for another run that is using {root}"
        if on_wait is not None:
            on_wait(message)
        fcntl.flock(fd, fcntl.LOCK_EX)


def _funlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def record_digest(record: Mapping[str, Any]) -> str:
    """Hash of what a record says (key, fingerprint, dependencies, artifacts, result), not when."""
    fields = {
        k: record.get(k) for k in ("key", "fingerprint", "deps", "artifacts_sha256", "result")
    }
    return hashlib.sha256(_canonical(fields, "a step record").encode("utf-8")).hexdigest()[:32]


def _canonical(obj: Any, what: str = "step parameters") -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise IntriguingError(
            f"{what} must be finite JSON values (use None for NaN): {exc}"
        ) from None


def _as_stored(result: Any, key: str) -> Any:
    """The result exactly as it will read back from disk (tuples become lists, and so on)."""
    _canonical(result, f"the result of step {key!r}")
    return json.loads(json.dumps(result, allow_nan=False))


def fingerprint(step: Step, dep_fingerprints: Iterable[str]) -> str:
    """Hash of the step's identity, params, version and its dependencies' fingerprints."""
    payload = _canonical([step.key, step.version, dict(step.params), sorted(dep_fingerprints)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def topological_order(steps: Iterable[Step]) -> list[Step]:
    """Steps sorted so every step comes after its dependencies (stable in declaration order)."""
    by_key: dict[str, Step] = {}
    for step in steps:
        if not _SAFE_KEY.match(step.key):
            raise IntriguingError(f"step key {step.key!r} must be letters, digits, '_.-=+' and '/'")
        if step.key in by_key:
            raise IntriguingError(f"two steps share the key {step.key!r}")
        by_key[step.key] = step
    order: list[Step] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str, chain: tuple[str, ...]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise IntriguingError(f"dependency cycle: {' -> '.join((*chain, key))}")
        if key not in by_key:
            raise IntriguingError(f"step {chain[-1]!r} depends on unknown step {key!r}")
        state[key] = 1
        for dep in by_key[key].deps:
            visit(dep, (*chain, key))
        state[key] = 2
        order.append(by_key[key])

    for key in by_key:
        visit(key, ())
    return order


def fingerprints(ordered: Iterable[Step]) -> dict[str, str]:
    """Every step's fingerprint by key; ``ordered`` must be in dependency order."""
    prints: dict[str, str] = {}
    for step in ordered:
        prints[step.key] = fingerprint(step, (prints[d] for d in step.deps))
    return prints


@dataclass(frozen=True)
class StepOutcome:
    """What running one step produced: its result exactly as stored, and how long ``fn`` took."""

    key: str
    result: Any
    elapsed_s: float


def execute_step(step: Step, deps: Mapping[str, Any], store: RunStore) -> StepOutcome:
    """Run ``step.fn`` on its dependencies' results; the same code runs in every backend."""
    ctx = StepContext(step=step, deps=deps, store=store)
    start = time.perf_counter()
    result = _as_stored(step.fn(ctx), step.key)
    return StepOutcome(step.key, result, time.perf_counter() - start)


class Backend(Protocol):
    """Where step functions run. :func:`run_graph` drives it; the driver alone writes records.

    ``start`` returns how many steps may be in flight at once; ``submit`` hands over a step whose
    dependencies are done (``deps``: their results); ``wait`` blocks until one submitted step
    finishes and returns its outcome, or raises that step's error; ``stop`` releases resources
    (``abort``: a step failed or the driver was interrupted; drop what is still in flight).
    """

    name: str

    def start(self) -> int: ...

    def submit(self, step: Step, deps: Mapping[str, Any], store: RunStore) -> None: ...

    def wait(self) -> StepOutcome: ...

    def stop(self, *, abort: bool) -> None: ...


class LocalBackend:
    """The embedded default: one step at a time, in dependency order, in this process."""

    name = "local"

    def __init__(self) -> None:
        self._queue: deque[tuple[Step, Mapping[str, Any], RunStore]] = deque()

    def start(self) -> int:
        self._queue.clear()
        return 1

    def submit(self, step: Step, deps: Mapping[str, Any], store: RunStore) -> None:
        self._queue.append((step, deps, store))

    def wait(self) -> StepOutcome:
        if not self._queue:
            raise RuntimeError("LocalBackend.wait() called with no step submitted")
        return execute_step(*self._queue.popleft())

    def stop(self, *, abort: bool) -> None:
        self._queue.clear()


def run_graph(
    steps: Iterable[Step],
    store: RunStore,
    *,
    description: str = "experiment",
    on_step: Callable[[Step, bool], None] | None = None,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``steps`` in ``store``; return every step's result by key.

    ``backend`` runs the step functions: :class:`LocalBackend` (default: one at a time, in this
    process) or :class:`intriguing.experiments.backends.RayBackend` (a Ray cluster). Whatever the
    backend, steps whose stored fingerprint matches are reused, each finished step is saved by this
    process as soon as it finishes, and the returned dict is in dependency order.
    ``on_step(step, cached)`` is called once per step, with ``cached`` True when it was reused.
    """
    ordered = topological_order(steps)
    prints = fingerprints(ordered)
    backend = backend if backend is not None else LocalBackend()
    store.step_keys = frozenset(step.key for step in ordered)
    done: dict[str, Any] = {}
    with store.lock(on_wait=_warn), make_progress() as bar:
        task = bar.add_task(description, total=len(ordered))

        def finish(step: Step, result: Any, cached: bool) -> None:
            done[step.key] = result
            if on_step is not None:
                on_step(step, cached)
            bar.advance(task)

        _drive(
            ordered,
            prints,
            store,
            backend,
            finish,
            lambda key: bar.update(task, description=f"{description}: {key}"),
        )
    return {step.key: done[step.key] for step in ordered}


def _warn(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _drive(
    ordered: list[Step],
    prints: Mapping[str, str],
    store: RunStore,
    backend: Backend,
    finish: Callable[[Step, Any, bool], None],
    announce: Callable[[str], None],
) -> None:
    """Submit ready steps (in dependency order, up to the backend's capacity), save what finishes."""
    capacity = max(1, backend.start())
    pending = list(ordered)
    in_flight: dict[str, Step] = {}
    results: dict[str, Any] = {}
    digests: dict[str, str] = {}

    def fill() -> None:
        for step in list(pending):
            if len(in_flight) >= capacity:
                return
            if any(d not in results for d in step.deps):
                continue
            pending.remove(step)
            record = store.load(step.key)
            deps = {d: digests[d] for d in step.deps}
            if (
                record is not None
                and record.get("fingerprint") == prints[step.key]
                and store.is_current(record, deps)
                and (step.reusable is None or step.reusable(record["result"]))
            ):
                results[step.key] = record["result"]
                digests[step.key] = record["digest"]  # checked by is_current
                finish(step, record["result"], True)
                continue
            announce(step.key)
            store.retire_derived()
            store.claim_artifacts(step.key, prints[step.key])
            backend.submit(step, {d: results[d] for d in step.deps}, store)
            in_flight[step.key] = step

    aborted = True
    try:
        fill()
        while in_flight:
            outcome = backend.wait()
            step = in_flight.pop(outcome.key)
            deps = {d: digests[d] for d in step.deps}
            record = store.save(step.key, prints[step.key], outcome.result, outcome.elapsed_s, deps)
            results[step.key] = outcome.result
            digests[step.key] = record["digest"]
            finish(step, outcome.result, False)
            fill()
        aborted = False
    finally:
        backend.stop(abort=aborted)
