"""Issue 16, items 4 and 8 (lock): resume verifies artifacts and dependency records.

Before: a truncated or replaced artifact was reused as it was (results said "verified 100/100"),
and a deleted dependency record was recomputed while the steps downstream of it kept their old
results. Two runs into one directory both did all the work.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from intriguing.experiments import RunStore, Step, StepContext, run_graph

CALLS: list[str] = []
SOURCE = {"value": 1.0}


def _shard(ctx: StepContext) -> Any:
    CALLS.append(ctx.step.key)
    path = ctx.artifact_dir() / "data.bin"
    path.write_bytes(bytes(range(200)) * 10)
    return {"artifact": path.relative_to(ctx.store.root).as_posix(), "value": SOURCE["value"]}


def _summary(ctx: StepContext) -> Any:
    CALLS.append(ctx.step.key)
    shard = ctx.deps["shard"]
    data = (ctx.store.root / shard["artifact"]).read_bytes()
    return {"bytes": len(data), "value": shard["value"]}


def _table(ctx: StepContext) -> Any:
    CALLS.append(ctx.step.key)
    return {"value": ctx.deps["summary"]["value"] * 10}


def _graph() -> list[Step]:
    return [
        Step("shard", _shard),
        Step("summary", _summary, deps=("shard",)),
        Step("table", _table, deps=("summary",)),
    ]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    SOURCE["value"] = 1.0


def _rerun(store: RunStore) -> dict[str, Any]:
    CALLS.clear()
    return run_graph(_graph(), store)


def test_records_store_artifact_and_dependency_hashes(tmp_path: Path) -> None:
    import json

    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    shard = json.loads(store.record_path("shard").read_text())
    assert list(shard["artifacts_sha256"]) == ["artifacts/shard/data.bin"]
    summary = json.loads(store.record_path("summary").read_text())
    assert set(summary["deps"]) == {"shard"} and summary["artifacts_sha256"] == {}
    assert _rerun(store)["table"] == {"value": 10.0} and CALLS == []


@pytest.mark.parametrize("damage", ["truncate", "replace", "delete"])
def test_a_damaged_artifact_is_recomputed(tmp_path: Path, damage: str) -> None:
    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    artifact = tmp_path / "artifacts" / "shard" / "data.bin"
    if damage == "truncate":
        artifact.write_bytes(artifact.read_bytes()[:100])
    elif damage == "replace":
        artifact.write_bytes(b"\0" * 2000)  # same size, other content
    else:
        artifact.unlink()
    results = _rerun(store)
    assert CALLS == ["shard"]  # recomputed identically: downstream digests match, reused
    assert results["summary"]["bytes"] == 2000
    assert artifact.read_bytes() == bytes(range(200)) * 10


def test_a_deleted_dependency_record_recomputed_differently_invalidates_downstream(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    store.record_path("shard").unlink()
    SOURCE["value"] = 0.0  # the recomputation now gives another result
    results = _rerun(store)
    assert CALLS == ["shard", "summary", "table"]
    assert results["table"] == {"value": 0.0}
    assert store.results()["table"] == {"value": 0.0}  # records and results agree


def test_a_hand_edited_record_is_recomputed_and_downstream_keeps_the_true_value(
    tmp_path: Path,
) -> None:
    """Before: an edited record was trusted (its own fingerprint still matches) and only the steps
    downstream were recomputed from the edited value (table 70); a reproduce run then showed a
    hand-edited test error in Table 1. Now the record's own digest catches the edit: the step is
    recomputed, and the table, whose dependency is the same again, keeps the true value."""
    import json

    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    path = store.record_path("summary")
    record = json.loads(path.read_text())
    record["result"]["value"] = 7.0  # edited by hand
    path.write_text(json.dumps(record))
    results = _rerun(store)
    assert CALLS == ["summary"]
    assert results["summary"]["value"] == 1.0 and results["table"] == {"value": 10.0}


@pytest.mark.parametrize("edit", ["digest", "nan"])
def test_a_record_with_a_forged_or_unreadable_digest_is_recomputed(
    tmp_path: Path, edit: str
) -> None:
    import json

    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    path = store.record_path("table")
    record = json.loads(path.read_text())
    if edit == "digest":
        record["digest"] = "0" * 32
    else:
        record["result"]["value"] = float("nan")
    path.write_text(json.dumps(record))
    results = _rerun(store)
    assert CALLS == ["table"] and results["table"] == {"value": 10.0}


def test_old_records_without_hashes_are_recomputed(tmp_path: Path) -> None:
    import json

    store = RunStore(tmp_path)
    run_graph(_graph(), store)
    for key in ("shard", "summary", "table"):
        record = json.loads(store.record_path(key).read_text())
        del record["artifacts_sha256"], record["deps"]
        store.record_path(key).write_text(json.dumps(record))
    _rerun(store)
    assert CALLS == ["shard", "summary", "table"]


def test_a_second_run_into_the_same_directory_waits_for_the_first(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from intriguing.experiments import RunStore, Step, run_graph
        print(run_graph([Step("a", lambda ctx: {{"x": 1}})], RunStore({str(tmp_path)!r}))["a"])
        """
    )
    with RunStore(tmp_path).lock():
        second = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)  # ample time to start and to reach the lock
        assert second.poll() is None  # blocked on the lock
        assert not (tmp_path / "steps").exists()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "waiting for another run" in err
    assert out.strip() == "{'x': 1}"


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with store.lock():
        assert run_graph(_graph(), store)["table"] == {"value": 10.0}


def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    from intriguing.errors import OutputError

    (tmp_path / "a-file").touch()
    with pytest.raises(OutputError, match="cannot use as a run directory") as info:
        run_graph(_graph(), RunStore(tmp_path / "a-file" / "run"))
    assert "\n" not in str(info.value)
