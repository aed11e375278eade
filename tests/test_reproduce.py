"""``intriguing reproduce`` end to end on the tiny config (mnist-5k, 2+2 softmax models, 10 examples).

Oracles: the models' own predictions on the stored adversarial images (re-verification), the RMS
formula recomputed with numpy, hand-built tables for the claims, and an uninterrupted run for the
resume test (a real SIGKILL of a subprocess).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from intriguing.attacks import AttackResult
from intriguing.errors import IntriguingError
from intriguing.experiments.backends import ProcessBackend
from intriguing.experiments.graph import Backend
from intriguing.experiments.reproduce import run_reproduce
from intriguing.experiments.specs import SIZES, Figure7Spec, ReproduceSpec, make_spec

DATASET = "mnist-5k"


def _run(out: Path, render: bool = True, backend: Backend | None = None) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k warning
        spec = make_spec("tiny", dataset=DATASET)
        return run_reproduce(spec, out, render=render, backend=backend)


@pytest.fixture(scope="module")
def tiny_run(
    mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tiny-run")
    return out, _run(out, render=False)


def _without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc.pop("timings")
    return doc


# ------------------------------------------------------------------------------------- specs
def test_sizes_grow_and_unknown_size_is_refused() -> None:
    counts = [make_spec(s).table1.n_examples for s in SIZES]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert make_spec("quick").table3.models == ("M1", "M1'", "M2")
    with pytest.raises(IntriguingError, match="unknown size"):
        make_spec("huge")


def test_spec_rejects_bad_settings() -> None:
    with pytest.raises(IntriguingError, match="shard_size"):
        ReproduceSpec(size="x", shard_size=0)
    with pytest.raises(IntriguingError, match="Figure 7 models"):
        ReproduceSpec(size="x", figure7=Figure7Spec(models=("M1",)))


# ------------------------------------------------------------------------------------- the run
def test_tiny_run_has_every_table(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, doc = tiny_run
    assert doc["schema"] == "intriguing.reproduce/1"
    t1 = doc["tables"]["table1"]["rows"]
    assert [r["model"] for r in t1] == ["softmax1", "softmax2"]
    for row in t1 + doc["tables"]["table3"]["rows"]:
        assert row["n"] == 10
        assert row["verify_mismatches"] == 0
        assert row["verified"] == round(row["success_rate"] * row["n"])
    labels = [r["label"] for r in doc["tables"]["table4"]["rows"]]
    assert labels == [
        "softmax2",
        "softmax3",
        "noise 0.06",
        "softmax2 amplified 0.1",
        "softmax3 amplified 0.1",
        "noise 0.1",
    ]
    assert {c["id"] for c in doc["claims"]} >= {"table1-fooled", "table4-amplified"}
    json.dumps(doc, allow_nan=False)  # strict JSON


def _load_model(name: str) -> torch.nn.Module:
    from intriguing.training import load_model

    return load_model(name, dataset=DATASET)


def test_every_counted_adversarial_example_is_reverified(
    tiny_run: tuple[Path, dict[str, Any]],
) -> None:
    """Independently of the run: each success's stored image fools its model; RMS recomputed."""
    from intriguing.data import load_mnist

    out, _ = tiny_run
    data = load_mnist(dataset=DATASET)
    checked = 0
    for record_path in sorted((out / "steps" / "attack").rglob("shard-*.json")):
        shard = json.loads(record_path.read_text())["result"]
        if not shard["artifact"]:
            continue
        stored = AttackResult.load(out / shard["artifact"])
        model = _load_model(shard["model"])
        with torch.no_grad():
            pred = model(stored.adversarial).argmax(1).numpy()
        images, labels = data.split(shard["split"])
        originals = images[torch.tensor(shard["indices"])].numpy()
        rms = np.sqrt(
            ((stored.adversarial.numpy() - originals) ** 2).reshape(len(pred), -1).mean(1)
        )
        np.testing.assert_allclose(rms, shard["distortion"], rtol=1e-4, atol=1e-7)
        for i, ok in enumerate(shard["success"]):
            assert labels[shard["indices"][i]] == shard["labels"][i]
            if ok:
                checked += 1
                if shard["mode"] == "targeted":
                    assert pred[i] == shard["targets"][i]
                else:
                    assert pred[i] != shard["labels"][i]
    assert checked >= 50  # tiny: 2 models x 2 modes x 10 + 2 x 10, nearly all successful


def test_cross_cell_matches_direct_evaluation(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    summary = json.loads((out / "steps/attacks/train/softmax1/untargeted.json").read_text())[
        "result"
    ]
    parts = [AttackResult.load(out / a) for a in summary["artifacts"]]
    adv = torch.cat([p.adversarial for p in parts])
    labels = torch.cat([p.labels for p in parts])
    with torch.no_grad():
        wrong = (_load_model("softmax2")(adv).argmax(1) != labels).double().mean().item()
    row = doc["tables"]["table2"]["rows"][0]
    assert row["label"] == "softmax1"
    assert row["errors"]["softmax2"] == pytest.approx(wrong)
    assert row["errors"]["softmax1"] == pytest.approx(summary["success_rate"])


def test_noise_rows_are_unclipped_by_default(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, doc = tiny_run
    assert doc["config"]["noise_clip"] is False
    for row in doc["tables"]["table2"]["rows"]:
        if row["kind"] == "noise":  # 50 images x 784 pixels: the sample RMS is within 2%
            assert row["distortion"] == pytest.approx(row["stddev"], rel=0.02)
    for row in doc["tables"]["table4"]["rows"]:
        if row["kind"] == "amplified":
            assert row["distortion"] == pytest.approx(row["stddev"], rel=1e-5)
    assert doc["figure7"]["noise"]["clipped"] is False


def test_noise_clip_reruns_only_the_noise_rows(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reproduce --noise-clip`` on a copy of a finished run: the attacks are reused, the noise and
    amplified rows stay inside the box and below their stddev, and the report says so."""
    from click.testing import CliRunner

    from intriguing.cli.main import cli

    out, doc = tiny_run
    copy_dir = tmp_path / "clipped"
    shutil.copytree(out, copy_dir)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the attack ran again")

    monkeypatch.setattr("intriguing.attacks.LBFGS.__call__", boom)
    args = ["reproduce", "--size", "tiny", "--dataset", DATASET, "--noise-clip"]
    result = CliRunner().invoke(cli, [*args, "--out", str(copy_dir)])
    assert result.exit_code == 0, result.output
    again = json.loads((copy_dir / "results.json").read_text())
    assert again["config"]["noise_clip"] is True
    for table in ("table2", "table4"):
        before = {r["label"]: r for r in doc["tables"][table]["rows"]}
        for row in again["tables"][table]["rows"]:
            if row["kind"] == "noise":  # MNIST's black background clips away much of the noise
                assert 0.0 < row["distortion"] < 0.9 * before[row["label"]]["distortion"]
            elif row["kind"] == "amplified":
                assert row["distortion"] <= row["stddev"] + 1e-6
            else:  # the transferred adversarial examples themselves are unchanged
                assert row == before[row["label"]]
    noise = again["figure7"]["noise"]
    assert noise["clipped"] is True and noise["achieved_distortion"] < 0.6
    report = (copy_dir / "report.md").read_text()
    assert "Gaussian noise is clipped to [0, 1]" in report
    # Figure 7's claim judges clipped and unclipped noise whatever --noise-clip says
    for run in (doc, again):
        parts = {p["part"] for p in next(c for c in run["claims"] if c["id"] == "figure7")["parts"]}
        assert {"noise accuracy (clipped)", "noise accuracy (unclipped)"} <= parts


def test_rerun_reuses_every_step(
    tiny_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, doc = tiny_run

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the attack ran again")

    monkeypatch.setattr("intriguing.attacks.LBFGS.__call__", boom)
    again = _run(out, render=False)
    assert _without_timings(again) == _without_timings(doc)


def test_killed_run_resumes_to_the_same_results(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """SIGKILL a real subprocess mid-run, rerun the same command: results equal an uninterrupted run."""
    _, uninterrupted = tiny_run
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "intriguing.cli.main",
        "reproduce",
        "--size",
        "tiny",
        "--dataset",
        DATASET,
        "--out",
        str(out),
    ]
    env = {**os.environ, "INTRIGUING_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    attack_dir = out / "steps" / "attack"
    while time.monotonic() < deadline and proc.poll() is None:
        if attack_dir.exists() and any(attack_dir.rglob("shard-*.json")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    done_before = len(list((out / "steps").rglob("*.json")))
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((out / "results.json").read_text())
    assert len(list((out / "steps").rglob("*.json"))) > done_before
    assert _without_timings(final) == _without_timings(uninterrupted)
    assert (out / "report.html").exists()


# ------------------------------------------------------------------------------------- claims
def test_tiny_run_judges_every_claim_with_its_statistic(
    tiny_run: tuple[Path, dict[str, Any]],
) -> None:
    """Claims carry verdict/rule/statistic/p_value or ci/n; sanity checks are separate; the
    paired evidence matches the tables (same images: the adversarial error is the cross cell)."""
    _, doc = tiny_run
    ids = [c["id"] for c in doc["claims"]]
    assert "table2-transfer" in ids and "figure7" in ids and "table1-tiny" in ids
    assert not any(i.startswith("spectral") for i in ids)
    for c in doc["claims"]:
        assert c["verdict"] in ("holds", "fails", "inconclusive")
        assert c["rule"] and c["statistic"] and isinstance(c["n"], int)
        assert (c["p_value"] is None) != (c["ci"] is None)
    assert {c["id"] for c in doc["sanity"]} >= {"reverified", "box"}
    assert all(c["passed"] for c in doc["sanity"])
    table2 = {r["label"]: r for r in doc["tables"]["table2"]["rows"]}
    for key, ev in doc["evidence"]["paired"].items():
        if not key.startswith("train/"):
            continue
        for model, cell in ev["noise"][0]["cells"].items():
            assert cell["a"] / cell["n"] == pytest.approx(table2[ev["source"]]["errors"][model])
    reference = doc["evidence"]["reference"]
    assert 0.2 < reference["mean"] < 0.6 and reference["n"] > 1000


def test_model_steps_name_the_checkpoint_they_used(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    """The checkpoint key in each model step's params (its fingerprint) is the one actually loaded."""
    out, doc = tiny_run
    for name, model in doc["models"].items():
        record = json.loads((out / "steps" / "model" / f"{name}.json").read_text())
        assert model["checkpoint_key"] is not None
        assert record["result"]["checkpoint_key"] == model["checkpoint_key"]
    from intriguing.data import load_mnist
    from intriguing.experiments.steps import checkpoint_key

    identity = load_mnist(dataset=DATASET).identity
    assert checkpoint_key("softmax1", identity, 0) == doc["models"]["softmax1"]["checkpoint_key"]


def test_seeds_record_each_verdict_and_reuse_the_first_run(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """``--seeds 2``: seed 0 is the finished run (its claims unchanged), seed 1 a run of its own
    in OUT/seeds/seed-1; the stability record matches the two runs' verdicts."""
    from intriguing.experiments.reproduce import run_seeds, seed_dir

    out, doc = tiny_run
    copy_dir = tmp_path / "seeds"
    shutil.copytree(out, copy_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = run_seeds(make_spec("tiny", dataset=DATASET), copy_dir, 2)
    assert both["claims"] == doc["claims"]
    second = json.loads((seed_dir(copy_dir, 1) / "results.json").read_text())
    assert second["config"]["seed"] == 1
    assert both["stability"]["seeds"] == [0, 1]
    for c0, c1 in zip(doc["claims"], second["claims"], strict=True):
        record = both["stability"]["claims"][c0["id"]]
        assert record["verdicts"] == [c0["verdict"], c1["verdict"]]
        assert record["stable"] == (c0["verdict"] == c1["verdict"])
    assert "same verdict at seeds 0, 1" in (copy_dir / "report.md").read_text()
    # the timings are the whole invocation's: seed 1's steps too (seed 0's alone were shown)
    steps = both["timings"]["steps_s"]
    assert set(second["timings"]["steps_s"]) == {
        key.removeprefix("seeds/seed-1/") for key in steps if key.startswith("seeds/seed-1/")
    }
    assert both["timings"]["wall_time_s"] >= second["timings"]["wall_time_s"]
    with pytest.raises(IntriguingError, match="--seeds"):
        run_seeds(make_spec("tiny", dataset=DATASET), copy_dir, 0)
    # seed 2**32 would train exactly seed 0's models under another label
    with pytest.raises(IntriguingError, match="reaches seed 4294967296, above 4294967295"):
        run_seeds(make_spec("tiny", dataset=DATASET, seed=2**32 - 1), tmp_path / "none", 2)
    assert not (tmp_path / "none").exists()


def test_two_worker_processes_give_the_same_results(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, local = tiny_run
    procs = _run(tmp_path / "procs", render=False, backend=ProcessBackend(2))
    assert _without_timings(procs) == _without_timings(local)
