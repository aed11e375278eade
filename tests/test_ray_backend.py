"""The Ray backend of the step graph against the local backend, on a real local Ray runtime.

Oracle: the local backend (one step at a time in this process). Every test compares the Ray run's
results, byte for byte as stored, with the local run's, apart from timings. Faults are real: a step
SIGKILLs its own Ray worker process, and a driver process is SIGKILLed mid-run and rerun.

One runtime (``ray.init(num_cpus=2)`` on loopback) is shared by the module; the tests that need
Ray are skipped, with the reason, when ray is not installed (``pip install "intriguing[ray]"``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
from intriguing.experiments.backends import RayBackend, make_backend
from intriguing.experiments.graph import LocalBackend, RunStore, Step, StepContext, run_graph
from intriguing.experiments.steps import Workbench

DATASET = "mnist-5k"
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- the runtime
@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    """A private Ray runtime on loopback with 2 CPUs, quiet and offline, for the whole module."""
    ray = pytest.importorskip("ray", reason='ray is not installed: pip install "intriguing[ray]"')
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    # Workers import this module's step functions by name: put tests/ on their path.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), saved) if p)
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    yield context
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


# --------------------------------------------------------- a small graph of picklable steps
def _log_attempt(ctx: StepContext, what: str) -> Path:
    """Append ``<key> <what> <pid>`` to the run's attempt log; return the log's path."""
    path = Path(ctx.params["log"])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{ctx.step.key} {what} {os.getpid()}\n")
    return path


def numbers_step(ctx: StepContext) -> dict[str, Any]:
    """Deterministic pseudo-random floats from the step's seed (a stand-in for an attack shard)."""
    _log_attempt(ctx, "start")
    marker = Path(str(ctx.params["log"]) + f".{ctx.params['seed']}.killed")
    if ctx.params.get("kill_once") and not marker.exists():
        marker.write_text("killed", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)  # this worker process dies mid-step
    if ctx.params.get("fail_once") and not marker.exists():
        marker.write_text("failed", encoding="utf-8")
        raise IntriguingError(f"step {ctx.step.key} fails once on purpose")
    time.sleep(float(ctx.params.get("sleep", 0.0)))
    generator = torch.Generator().manual_seed(int(ctx.params["seed"]))
    values = torch.rand(int(ctx.params["n"]), generator=generator, dtype=torch.float64)
    _log_attempt(ctx, "done")
    return {"values": values.tolist(), "pid": os.getpid()}


def total_step(ctx: StepContext) -> dict[str, Any]:
    """Concatenate and sum the dependencies' values (counting each value exactly once)."""
    _log_attempt(ctx, "start")
    values = [v for key in ctx.step.deps for v in ctx.deps[key]["values"]]
    _log_attempt(ctx, "done")
    return {"n": len(values), "sum": float(torch.tensor(values, dtype=torch.float64).sum())}


def _graph(log: Path, n_shards: int = 4, **shard_params: Any) -> list[Step]:
    """``n_shards`` independent shards and a total over them; ``shard_params`` go to shard 1."""
    shards = [
        Step(
            f"shard/{k}",
            numbers_step,
            {"seed": 10 + k, "n": 5, "log": str(log), **(shard_params if k == 1 else {})},
        )
        for k in range(n_shards)
    ]
    total = Step("total", total_step, {"log": str(log)}, tuple(s.key for s in shards))
    return [*shards, total]


def _stored(root: Path) -> dict[str, Any]:
    """Every step record of ``root`` without timings and without the worker's pid."""
    out: dict[str, Any] = {}
    for key, result in RunStore(root).results().items():
        result = copy.deepcopy(result)
        if isinstance(result, dict):
            result.pop("pid", None)
            result.pop("elapsed_s", None)  # an attack's own wall time (critics' source steps)
        out[key] = result
    return out


def _attempts(log: Path) -> Counter[tuple[str, str]]:
    """How often each ``(key, "start" | "done")`` was logged by the steps."""
    pairs = [line.split()[:2] for line in log.read_text().splitlines()]
    return Counter((key, what) for key, what in pairs)


@pytest.fixture(scope="module")
def local_oracle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small graph's results from the local backend."""
    root = tmp_path_factory.mktemp("local")
    run_graph(_graph(root / "log.txt"), RunStore(root / "run"))
    return _stored(root / "run")


# ------------------------------------------------------------------------------ small graph
def test_ray_runs_independent_steps_concurrently_and_equals_local(
    ray_runtime: Any, local_oracle: dict[str, Any], tmp_path: Path
) -> None:
    seen: list[tuple[str, bool]] = []
    results = run_graph(
        _graph(tmp_path / "log.txt", sleep=0.0),
        RunStore(tmp_path / "run"),
        backend=RayBackend(),
        on_step=lambda step, cached: seen.append((step.key, cached)),
    )
    assert _stored(tmp_path / "run") == local_oracle
    assert list(results) == ["shard/0", "shard/1", "shard/2", "shard/3", "total"]
    assert results["total"] == {"n": 20, "sum": local_oracle["total"]["sum"]}
    assert sorted(seen) == sorted((key, False) for key in results)
    pids = {results[f"shard/{k}"]["pid"] for k in range(4)}
    assert os.getpid() not in pids  # the steps ran in Ray worker processes
    # A second run reuses every stored step: nothing is submitted.
    again: list[bool] = []
    run_graph(
        _graph(tmp_path / "log.txt", sleep=0.0),
        RunStore(tmp_path / "run"),
        backend=RayBackend(),
        on_step=lambda step, cached: again.append(cached),
    )
    assert again == [True] * 5
    assert _attempts(tmp_path / "log.txt")[("total", "done")] == 1


def test_worker_killed_mid_step_is_retried_and_nothing_is_counted_twice(
    ray_runtime: Any, local_oracle: dict[str, Any], tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    seen: list[str] = []
    results = run_graph(
        _graph(log, kill_once=True),
        RunStore(tmp_path / "run"),
        backend=RayBackend(max_retries=2),
        on_step=lambda step, cached: seen.append(step.key),
    )
    attempts = _attempts(log)
    assert attempts[("shard/1", "start")] == 2  # the first attempt's worker was killed
    assert attempts[("shard/1", "done")] == 1
    assert (tmp_path / "log.txt.11.killed").exists()
    assert sorted(seen) == sorted(results)  # every step saved exactly once
    assert results["total"]["n"] == 20
    assert _stored(tmp_path / "run") == local_oracle


def test_worker_killed_with_no_retry_left_is_a_one_line_error(
    ray_runtime: Any, tmp_path: Path
) -> None:
    with pytest.raises(IntriguingError, match=r"'shard/1' failed on the Ray cluster") as info:
        run_graph(
            _graph(tmp_path / "log.txt", kill_once=True),
            RunStore(tmp_path / "run"),
            backend=RayBackend(max_retries=0),
        )
    assert "\n" not in str(info.value)
    assert RunStore(tmp_path / "run").load("shard/1") is None
    # Rerunning resumes: the killed shard and the total run, the stored shards are reused.
    results = run_graph(
        _graph(tmp_path / "log.txt", kill_once=True),
        RunStore(tmp_path / "run"),
        backend=RayBackend(max_retries=0),
    )
    assert results["total"]["n"] == 20


def test_step_error_is_raised_as_is_and_the_rerun_resumes(
    ray_runtime: Any, local_oracle: dict[str, Any], tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    with pytest.raises(IntriguingError, match="fails once on purpose"):
        run_graph(_graph(log, fail_once=True), RunStore(tmp_path / "run"), backend=RayBackend())
    assert _attempts(log)[("shard/1", "start")] == 1  # a step's own error is not retried
    assert RunStore(tmp_path / "run").load("total") is None
    stored_before = set(RunStore(tmp_path / "run").results())
    before = _attempts(log)
    run_graph(_graph(log, fail_once=True), RunStore(tmp_path / "run"), backend=RayBackend())
    rerun = _attempts(log) - before
    assert all(rerun[(k, "start")] == 0 for k in stored_before)  # reused, not recomputed
    assert rerun[("shard/1", "done")] == 1 and rerun[("total", "done")] == 1
    assert _stored(tmp_path / "run") == local_oracle


DRIVER = """
import sys
sys.path.insert(0, {here!r})
import ray
import test_ray_backend as t
from intriguing.experiments.backends import RayBackend
from intriguing.experiments.graph import RunStore, run_graph
ray.init(address={address!r}, log_to_driver=False, logging_level="WARNING")
run_graph(t._graph(t.Path({log!r}), n_shards=6, sleep=20.0), RunStore({root!r}), backend=RayBackend())
"""


def test_driver_killed_mid_run_resumes_from_stored_results(
    ray_runtime: Any, tmp_path: Path
) -> None:
    """A driver SIGKILLed after some shards finished: the rerun recomputes only the missing ones.

    Shard 1 sleeps 20 s, so the driver is killed while it is in flight and the others are stored.
    """
    log, root = tmp_path / "log.txt", tmp_path / "run"
    script = DRIVER.format(
        here=str(HERE), address=ray_runtime.address_info["address"], log=str(log), root=str(root)
    )
    driver = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        deadline = time.monotonic() + 45
        while len(list((root / "steps" / "shard").glob("*.json"))) < 3:
            assert driver.poll() is None, "the driver exited before it was killed"
            assert time.monotonic() < deadline, "the driver stored no shard in 45 s"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    stored = set(RunStore(root).results())
    assert "shard/1" not in stored and "total" not in stored
    before = _attempts(log)
    results = run_graph(_graph(log, n_shards=6), RunStore(root), backend=RayBackend())
    rerun = _attempts(log) - before
    assert {key for (key, what) in rerun if what == "done"} == {"shard/1", "total"} | (
        {f"shard/{k}" for k in range(6)} - stored
    )
    assert results["total"]["n"] == 30
    local = tmp_path / "local"
    run_graph(_graph(tmp_path / "local-log.txt", n_shards=6), RunStore(local))
    assert _stored(root) == _stored(local)


# ----------------------------------------------------------------------------- the reproduce run
def _trimmed_tiny() -> Any:
    """The suite's ``tiny`` reproduction on softmax2/softmax3 only, without the unit analysis.

    (softmax1's training and the unit analysis are its slowest steps; every step kind is kept.)
    """
    from intriguing.experiments.specs import make_spec

    spec = make_spec("tiny", dataset=DATASET)
    pair = ("softmax2", "softmax3")
    return dataclasses.replace(
        spec,
        table1=dataclasses.replace(spec.table1, models=pair),
        figure7=dataclasses.replace(spec.figure7, models=pair),
        units=dataclasses.replace(spec.units, models=(), layers=()),
        spectral=dataclasses.replace(spec.spectral, sandwich_models=("softmax3",)),
    )


def _without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc.pop("timings")
    for model in doc["models"].values():
        model.pop("train_wall_time_s")  # measured when the checkpoint was trained
    return doc


def test_reproduce_on_ray_equals_local_bit_for_bit(
    ray_runtime: Any, mnist_dir: Path, tmp_path: Path
) -> None:
    from intriguing.experiments.reproduce import run_reproduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k warning
        local = run_reproduce(_trimmed_tiny(), tmp_path / "local", render=False)
        remote = run_reproduce(
            _trimmed_tiny(), tmp_path / "ray", render=False, backend=RayBackend()
        )
    assert _without_timings(remote) == _without_timings(local)
    assert json.dumps(_without_timings(remote), sort_keys=True) == json.dumps(
        _without_timings(local), sort_keys=True
    )
    for path in sorted((tmp_path / "local" / "artifacts").rglob("*.safetensors")):
        twin = tmp_path / "ray" / path.relative_to(tmp_path / "local")
        assert twin.read_bytes() == path.read_bytes(), path.name  # adversarial images too
    assert _stored(tmp_path / "ray") == _stored(tmp_path / "local")


def test_recurrent_and_critics_on_ray_equal_local(
    ray_runtime: Any, mnist_dir: Path, tmp_path: Path
) -> None:
    """The ``recurrent`` and ``rarity`` step graphs (tiny: two softmax models, a few examples) give
    the same documents and step records on Ray as locally."""
    from intriguing.experiments.critics import run_critics
    from intriguing.experiments.recurrent import RecurrentSpec, run_recurrent
    from intriguing.experiments.specs import AttackSettings

    tiny = AttackSettings(search_steps=4, max_iter=20, c_rtol=0.2, refine=False)
    spec = RecurrentSpec(
        recurrent=("softmax2",),
        feedforward=("softmax3",),
        n_examples=6,
        attack=tiny,
        shard_size=4,
        dataset=DATASET,
    )
    rarity = {
        "config": {
            "samples": 50,
            "scales": [1.0],
            "ray_directions": 4,
            "grid": 16,
            "bisect_steps": 10,
            "box": "rescale",
            "confidence": 0.95,
            "seed": 0,
        }
    }
    docs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k warning
        for name, backend in (("local", None), ("ray", RayBackend())):
            recurrent = run_recurrent(
                spec, tmp_path / name / "recurrent", render=False, backend=backend
            )
            critics = run_critics(
                "rarity",
                ["softmax3"],
                tmp_path / name / "rarity",
                dataset=DATASET,
                n=3,
                source_n=4,
                attack=tiny.kwargs(),
                options=rarity,
                backend=backend,
            )
            critics.pop("figures")  # paths inside each run's own folder
            docs[name] = (_without_timings(recurrent), critics)
    assert docs["ray"] == docs["local"]
    assert docs["local"][1]["models"]["softmax3"]["n"] >= 1  # the analysis had examples
    for part in ("recurrent", "rarity"):
        assert _stored(tmp_path / "ray" / part) == _stored(tmp_path / "local" / part)


TIMING_KEYS = {
    "wall_time_s",
    "cpu_time_s",
    "time_s",
    "cpu_s",
    "machine",
    "attack_s",
    "train_cpu_s",
    "elapsed_s",
    "timings",
    "digest",  # the seal covers the nested timing entries above, so it differs with them
}


def _untimed(value: Any) -> Any:
    """``value`` with every timing entry (:data:`TIMING_KEYS`) removed, at any depth."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_advtrain_on_ray_equals_local(ray_runtime: Any, mnist_dir: Path, tmp_path: Path) -> None:
    """Adversarial training (two variants x two seeds, tiny) trains the same models on Ray."""
    from intriguing.experiments.advtrain import AdvTrainSpec, run_advtrain

    base = AdvTrainSpec()
    spec = base.replace(
        variants=("weight-decay", "hidden-pool"),
        seeds=2,
        dataset=DATASET,
        train=base.train.replace(epochs=2, lr=0.2, batch_size=50),
        pool=dataclasses.replace(base.pool, size=20, refresh_every=2, refresh_fraction=0.25),
        robust_n=8,
        train_limit=300,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k warning
        local = run_advtrain(spec, tmp_path / "local")
        remote = run_advtrain(spec, tmp_path / "ray", backend=RayBackend())
    assert len(remote["runs"]) == 4
    assert _untimed(remote) == _untimed(local)
    assert _untimed(_stored(tmp_path / "ray")) == _untimed(_stored(tmp_path / "local"))
    from safetensors.torch import load_file

    checkpoints = sorted((tmp_path / "local" / "artifacts").rglob("*.safetensors"))
    assert len(checkpoints) == 4
    for path in checkpoints:  # the trained weights and pools, exactly (metadata holds timings)
        mine = load_file(str(tmp_path / "ray" / path.relative_to(tmp_path / "local")))
        theirs = load_file(str(path))
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), path


def test_classes_on_ray_equals_local(ray_runtime: Any, mnist_dir: Path, tmp_path: Path) -> None:
    """The fewer-classes experiment (tiny: two tasks, fake encoder) on Ray equals the local run,
    and the workers get its workbench without the data."""
    import pickle

    from intriguing.experiments.classes import Bench, ClassesConfig, run_classes
    from test_classes import TINY, _fake_encoder

    config = ClassesConfig(**TINY)  # type: ignore[arg-type]
    bench = Bench(config.dataset, None, config, encoder_loader=_fake_encoder)
    assert bench.data.train_images.numel() > 10**7  # loaded here...
    assert len(pickle.dumps(bench)) < 10**4  # ...but shipped as settings only
    local = run_classes(config, tmp_path / "local", encoder_loader=_fake_encoder)
    remote = run_classes(
        config, tmp_path / "ray", encoder_loader=_fake_encoder, backend=RayBackend()
    )
    assert remote["timings"]["steps_total"] == local["timings"]["steps_total"] > 0
    assert _untimed(remote) == _untimed(local)
    assert _untimed(_stored(tmp_path / "ray")) == _untimed(_stored(tmp_path / "local"))


def probe_bench(bench: Workbench) -> dict[str, Any]:
    """What a worker's Workbench holds on arrival, and its data once loaded."""
    arrived_empty = bench._data is None and not bench._models
    return {
        "arrived_empty": arrived_empty,
        "n_test": int(bench.data.test_labels.shape[0]),
        "pid": os.getpid(),
    }


def test_workbench_is_shipped_without_its_tensors(ray_runtime: Any, mnist_dir: Path) -> None:
    import ray

    backend = RayBackend()
    backend.start()  # registers the Workbench serializer
    try:
        bench = Workbench(dataset=DATASET, data_dir=None, seed=9091)  # new to every worker
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mnist-5k warning
            assert bench.data.test_labels.shape[0] > 0  # loaded here, in the driver
        probe = ray.remote(probe_bench).options(num_cpus=1)
        first = ray.get(probe.remote(bench))
    finally:
        backend.stop(abort=False)
    assert first["arrived_empty"]
    assert first["n_test"] == bench.data.test_labels.shape[0]
    assert ray.is_initialized()  # a runtime the backend did not start is left running


# ------------------------------------------------------------------------------ user mistakes
def test_missing_ray_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without ray
    with pytest.raises(IntriguingError, match=r'pip install "intriguing\[ray\]"') as info:
        run_graph(_graph(tmp_path / "log.txt"), RunStore(tmp_path / "run"), backend=RayBackend())
    assert "\n" not in str(info.value)
    # The local backend never imports ray: it still runs with ray unavailable.
    results = run_graph(
        _graph(tmp_path / "log.txt"), RunStore(tmp_path / "local"), backend=make_backend("local")
    )
    assert results["total"]["n"] == 20


def test_backend_arguments_are_checked() -> None:
    assert isinstance(make_backend("local"), LocalBackend)
    assert isinstance(make_backend("ray", address="auto"), RayBackend)
    with pytest.raises(IntriguingError, match="unknown backend 'dask'"):
        make_backend("dask")
    with pytest.raises(IntriguingError, match="--address needs --backend ray"):
        make_backend("local", address="127.0.0.1:6379")
    with pytest.raises(IntriguingError, match="max_retries"):
        RayBackend(max_retries=-1)
    with pytest.raises(IntriguingError, match="num_cpus"):
        RayBackend(address="127.0.0.1:6379", num_cpus=2)


def test_cli_rejects_an_unreachable_address_and_a_stray_one(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason='ray is not installed: pip install "intriguing[ray]"')
    runner = CliRunner()
    base = ["reproduce", "--size", "tiny", "--dataset", DATASET, "--out", str(tmp_path / "o")]
    result = runner.invoke(cli, [*base, "--backend", "ray", "--address", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert "no Ray cluster reachable at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, [*base, "--backend", "ray", "--address", "nonsense"])
    assert result.exit_code == 2 and "must be HOST:PORT" in result.output
    result = runner.invoke(cli, [*base, "--address", "127.0.0.1:6379"])
    assert result.exit_code == 2 and "--address needs --backend ray" in result.output


@pytest.mark.parametrize(
    "command", ["advtrain", "classes", "recurrent", "rarity", "recover", "curves"]
)
def test_graph_commands_take_the_backend_options(command: str, tmp_path: Path) -> None:
    runner = CliRunner()
    out = ["--out", str(tmp_path / "o")]
    result = runner.invoke(cli, [command, "--address", "127.0.0.1:6379", *out])
    assert result.exit_code == 2, result.output
    assert "--address needs --backend ray" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, [command, "--backend", "dask", *out])
    assert result.exit_code == 2 and "'dask' is not one of 'local', 'ray'" in result.output
    assert not (tmp_path / "o").exists()  # refused before any work
