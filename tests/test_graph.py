"""The cached step graph: order, caching, invalidation, and resuming after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from intriguing.errors import IntriguingError
from intriguing.experiments import RunStore, Step, StepContext, run_graph

CALLS: list[str] = []


def _square(ctx: StepContext) -> Any:
    CALLS.append(ctx.step.key)
    return {"value": ctx.params["x"] ** 2}


def _total(ctx: StepContext) -> Any:
    CALLS.append(ctx.step.key)
    return {"value": sum(d["value"] for d in ctx.deps.values()), "parts": (1, 2)}


def _graph(x_b: int = 3) -> list[Step]:
    return [
        Step("total", _total, deps=("sq/a", "sq/b")),  # declared before its deps on purpose
        Step("sq/a", _square, params={"x": 2}),
        Step("sq/b", _square, params={"x": x_b}),
    ]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_runs_dependencies_first_and_passes_results(tmp_path: Path) -> None:
    results = run_graph(_graph(), RunStore(tmp_path))
    assert CALLS == ["sq/a", "sq/b", "total"]
    assert results["total"] == {"value": 13, "parts": [1, 2]}  # tuples come back as stored: lists


def test_second_run_reuses_every_step(tmp_path: Path) -> None:
    first = run_graph(_graph(), RunStore(tmp_path))
    CALLS.clear()
    second = run_graph(_graph(), RunStore(tmp_path))
    assert CALLS == []
    assert second == first


def test_changed_params_invalidate_the_step_and_its_dependents_only(tmp_path: Path) -> None:
    run_graph(_graph(), RunStore(tmp_path))
    CALLS.clear()
    results = run_graph(_graph(x_b=4), RunStore(tmp_path))
    assert CALLS == ["sq/b", "total"]
    assert results["total"]["value"] == 20


def test_corrupt_record_is_recomputed(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    store.record_path("sq/a").write_text('{"key": "sq/a", "resu')  # truncated by a crash
    CALLS.clear()
    run_graph(_graph(), store)
    assert CALLS == ["sq/a"]  # same params, same fingerprint: 'total' still matches and is reused
    assert store.results()["total"]["value"] == 13


def test_failure_keeps_finished_steps(tmp_path: Path) -> None:
    def boom(ctx: StepContext) -> Any:
        raise RuntimeError("killed")

    steps = [*_graph()[1:], Step("total", boom, deps=("sq/a", "sq/b"))]
    with pytest.raises(RuntimeError):
        run_graph(steps, RunStore(tmp_path))
    CALLS.clear()
    results = run_graph(_graph(), RunStore(tmp_path))
    assert CALLS == ["total"]
    assert results["total"]["value"] == 13


def test_a_rerun_that_computes_a_step_retires_the_results_built_on_the_old_records(
    tmp_path: Path,
) -> None:
    """A rerun with other settings killed half-way must not leave the old results.json sealed
    over changed records (``--from-run`` read such a run's new shards under the old results)."""
    from intriguing.experiments.rundir import RunDirectory

    def finished_run(steps: list[Step]) -> RunDirectory:
        run = RunDirectory(tmp_path, one_thread=False)
        run.run(steps, description="test")
        run.write({"schema": "intriguing.test/1", "total": run.results["total"]["value"]})
        (tmp_path / "report.md").write_text("13")
        return run

    finished_run(_graph())
    RunDirectory(tmp_path, one_thread=False).run(_graph(), description="test")  # all reused
    assert (tmp_path / "results.json").is_file() and (tmp_path / "report.md").is_file()

    def boom(ctx: StepContext) -> Any:
        raise RuntimeError("killed")

    changed = [*_graph(x_b=4)[1:], Step("total", boom, deps=("sq/a", "sq/b"))]
    with pytest.raises(RuntimeError):
        RunDirectory(tmp_path, one_thread=False).run(changed, description="test")
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "report.md").exists()
    assert RunStore(tmp_path).load("sq/b")["result"] == {"value": 16}  # the new record stays


def _resumable(ctx: StepContext) -> Any:
    """Keeps its state in its artifact folder, as advtrain's epoch checkpoints: resumes from it."""
    state = ctx.artifact_dir() / "state.json"
    seen = json.loads(state.read_text()) if state.exists() else {"x": ctx.params["x"], "tries": 0}
    seen["tries"] += 1
    state.write_text(json.dumps(seen))
    if ctx.params.get("fail"):
        raise RuntimeError("killed")
    return seen


def test_artifacts_of_other_settings_are_cleared_and_a_killed_steps_are_kept(
    tmp_path: Path,
) -> None:
    """advtrain rerun with another --epochs found the finished step's checkpoint and stopped
    ('written with another config'); a killed step of the same settings must still resume."""
    run_graph([Step("s", _resumable, params={"x": 3})], RunStore(tmp_path))
    again = run_graph([Step("s", _resumable, params={"x": 4})], RunStore(tmp_path))
    assert again["s"] == {"x": 4, "tries": 1}  # not the x = 3 state
    with pytest.raises(RuntimeError):
        run_graph([Step("s", _resumable, params={"x": 5, "fail": True})], RunStore(tmp_path))
    with pytest.raises(RuntimeError):  # the same settings: resumes from its own state
        run_graph([Step("s", _resumable, params={"x": 5, "fail": True})], RunStore(tmp_path))
    state = json.loads((tmp_path / "artifacts" / "s" / "state.json").read_text())
    assert state == {"x": 5, "tries": 2}
    hashes = RunStore(tmp_path).artifact_hashes("s")
    assert list(hashes) == ["artifacts/s/state.json"]  # the fingerprint marker is not hashed


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([Step("a", _square, deps=("b",)), Step("b", _square, deps=("a",))], "cycle"),
        ([Step("a", _square, deps=("missing",))], "unknown step 'missing'"),
        ([Step("a", _square), Step("a", _square)], "share the key"),
        ([Step("../escape", _square)], "step key"),
        ([Step("a", _square, params={"x": float("nan")})], "finite JSON"),
    ],
)
def test_bad_graphs_are_refused_with_a_clear_error(
    tmp_path: Path, steps: list[Step], message: str
) -> None:
    with pytest.raises(IntriguingError, match=message):
        run_graph(steps, RunStore(tmp_path))


def test_unstorable_result_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntriguingError, match="result of step 'a'"):
        run_graph([Step("a", lambda ctx: {"x": object()})], RunStore(tmp_path))


SCRIPT = textwrap.dedent(
    """
    import random, sys, time
    from intriguing.experiments import RunStore, Step, run_graph

    def noisy_sum(ctx):
        rng = random.Random(ctx.params["seed"])
        time.sleep(float(sys.argv[2]))  # not a param: the resumed run must match the stored steps
        prior = sum(d["value"] for d in ctx.deps.values())
        return {"value": prior + rng.random()}

    steps = [Step("s0", noisy_sum, params={"seed": 0})]
    for i in range(1, 6):
        steps.append(Step(f"s{i}", noisy_sum, params={"seed": i}, deps=(f"s{i-1}",)))
    run_graph(steps, RunStore(sys.argv[1]))
    """
)


def test_real_kill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "graph_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "INTRIGUING_NO_PROGRESS": "1"}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"

    proc = subprocess.Popen([sys.executable, str(script), str(killed_dir), "0.4"], env=env)
    deadline = time.monotonic() + 60
    while not (killed_dir / "steps" / "s1.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.stem for p in (killed_dir / "steps").glob("*.json")}
    assert "s1" in finished and "s5" not in finished
    before = {k: (killed_dir / "steps" / f"{k}.json").read_text() for k in finished}

    subprocess.run([sys.executable, str(script), str(killed_dir), "0"], env=env, check=True)
    subprocess.run([sys.executable, str(script), str(clean_dir), "0"], env=env, check=True)

    def values(root: Path) -> dict[str, Any]:
        return {
            p.stem: json.loads(p.read_text())["result"] for p in (root / "steps").glob("*.json")
        }

    for key, text in before.items():  # finished steps were reused, not recomputed
        assert (killed_dir / "steps" / f"{key}.json").read_text() == text
    assert values(killed_dir) == values(clean_dir)
    assert len(values(clean_dir)) == 6


def test_step_key_is_the_one_way_keys_are_built() -> None:
    """Issue 17: keys built by one helper; a part with ``/`` or an empty part is refused."""
    from intriguing.experiments.graph import shard_key, step_key

    assert step_key("attack", "test", "M1'") == "attack/test/M1'"
    assert step_key("train", "0-4", "seed-3") == "train/0-4/seed-3"
    assert (
        shard_key("test", "softmax1", "untargeted", 7)
        == "attack/test/softmax1/untargeted/shard-0007"
    )
    for bad in (("a", ""), ("a", "b/c"), ()):
        with pytest.raises(ValueError, match="step key"):
            step_key(*bad)


def test_a_step_not_reusable_by_its_own_rule_is_recomputed_with_its_dependents(
    tmp_path: Path,
) -> None:
    """``Step.reusable`` guards state outside the run directory (a model step: the cached weights
    it measured): a stored result it rejects is recomputed, and a changed result recomputes its
    dependents instead of mixing two states in one run."""
    state = {"weights": "w1"}

    def measured(ctx: StepContext) -> Any:
        CALLS.append(ctx.step.key)
        return {"value": ctx.params["x"], "weights": state["weights"]}

    def graph() -> list[Step]:
        same = lambda result: result["weights"] == state["weights"]  # noqa: E731
        return [
            Step("total", _total, deps=("sq/a", "sq/b")),
            Step("sq/a", measured, params={"x": 2}, reusable=same),
            Step("sq/b", _square, params={"x": 3}),
        ]

    run_graph(graph(), RunStore(tmp_path))
    CALLS.clear()
    run_graph(graph(), RunStore(tmp_path))
    assert CALLS == []
    state["weights"] = "w2"  # the cache now holds other weights under the same key
    results = run_graph(graph(), RunStore(tmp_path))
    assert CALLS == ["sq/a", "total"] and results["sq/a"]["weights"] == "w2"


def test_verified_reads_only_intact_records_of_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    total = store.verified("total")
    part = store.verified("sq/a", total["deps"]["sq/a"])
    assert part["result"] == {"value": 4}
    with pytest.raises(IntriguingError, match="missing or unreadable"):
        store.verified("sq/c")
    path = store.record_path("sq/a")
    record = json.loads(path.read_text())
    record["result"]["value"] = 5
    path.write_text(json.dumps(record))
    with pytest.raises(IntriguingError, match="changed after the run"):
        store.verified("sq/a")
    from intriguing.experiments.graph import record_digest

    record["digest"] = record_digest(record)  # resealed: intact, but not what total read
    path.write_text(json.dumps(record))
    assert store.verified("sq/a")["result"] == {"value": 5}
    with pytest.raises(IntriguingError, match="left over from another run"):
        store.verified("sq/a", total["deps"]["sq/a"])
