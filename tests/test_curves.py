"""Robustness curves (issue #9, item 5), the critics experiments' ``--from-run`` source, and the CLI.

Oracles: an empirical CDF written out by hand (failures never succeed); the curve of a run's stored
distortions recomputed with numpy; Clopper-Pearson bounds from scipy; resume by step records.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from intriguing._io import sealed
from intriguing.analysis.curves import budget_for_rate, curve_summary, robustness_curve
from intriguing.analysis.rarity import clopper_pearson
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
from intriguing.experiments.graph import RunStore, shard_key
from intriguing.experiments.specs import make_spec
from intriguing.training.api import cached_weights_sha256

DATASET = "mnist-5k"
# the reproduce pipeline's "tiny" attack settings (few constants and iterations, no polish)
TINY_ATTACK: dict[str, Any] = make_spec("tiny").attack.kwargs()


# ----------------------------------------------------------------------------- the curve
def test_curve_is_the_hand_computed_empirical_cdf_with_failures_never_succeeding() -> None:
    dist = torch.tensor([0.1, 0.3, 0.2, 0.05])
    ok = torch.tensor([True, True, True, False])
    budgets = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 1.0]
    # successes at 0.1, 0.2, 0.3 out of 4; the failure at 0.05 never counts
    expected = [0.0, 0.0, 0.25, 0.25, 0.5, 0.75, 0.75]
    assert robustness_curve(dist, ok, budgets).tolist() == expected
    assert budget_for_rate(dist, ok, 0.5) == pytest.approx(0.2)
    assert budget_for_rate(dist, ok, 0.75) == pytest.approx(0.3)
    assert budget_for_rate(dist, ok, 1.0) == float("inf")
    summary = curve_summary(dist, ok, budgets)
    assert summary["rate"] == expected and summary["successes"] == 3
    assert summary["mean_distortion"] == pytest.approx(0.2)
    assert [summary["ci_low"][2], summary["ci_high"][2]] == list(clopper_pearson(1, 4))
    assert summary["budget_for"] == {
        "0.5": pytest.approx(0.2),
        "0.9": None,
        "0.99": None,
        "1": None,
    }


def test_curve_refuses_bad_input() -> None:
    ok = torch.tensor([True, True])
    with pytest.raises(IntriguingError, match="NaN"):
        robustness_curve(torch.tensor([0.1, float("nan")]), ok, [0.1])
    with pytest.raises(IntriguingError, match="shape"):
        robustness_curve(torch.tensor([0.1, 0.2, 0.3]), ok, [0.1])
    with pytest.raises(IntriguingError, match="at least one"):
        robustness_curve(torch.zeros(0), torch.zeros(0, dtype=torch.bool), [0.1])
    for budgets in ([float("nan")], [-1.0, 0.25], "0.1"):  # as robust_accuracy refuses them
        with pytest.raises(IntriguingError, match="budgets must be"):
            robustness_curve(torch.tensor([0.1, 0.2]), ok, budgets)  # type: ignore[arg-type]
    with pytest.raises(IntriguingError, match="success must be a bool tensor"):
        robustness_curve(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.0]), [1.0])
    with pytest.raises(IntriguingError, match="rate"):
        budget_for_rate(torch.tensor([0.1, 0.2]), ok, 0.0)
    # a failure's distortion may be anything (it is ignored)
    assert robustness_curve(
        torch.tensor([0.1, float("nan")]), torch.tensor([True, False]), [1.0]
    ).tolist() == [0.5]


# ----------------------------------------------------------------------------- a stored run
def _fake_run(root: Path) -> Path:
    """A reproduce-layout run: softmax1's untargeted attack on 8 train images of mnist-5k."""
    from intriguing.attacks import LBFGS
    from intriguing.experiments import steps as st

    bench = st.Workbench(dataset=DATASET, data_dir=None, seed=0)
    model = bench.model("softmax1")
    images, labels = bench.data.split("train")
    index = torch.nonzero(st.predict(model, images[:50]) == labels[:50]).flatten()[:8]
    result = LBFGS(mode="untargeted", **TINY_ATTACK)(model, images[index], labels[index])
    rel = "artifacts/attack/train/softmax1/untargeted/shard-0000/result.safetensors"
    (root / rel).parent.mkdir(parents=True)
    result.save(root / rel)
    shard = {
        "model": "softmax1",
        "split": "train",
        "mode": "untargeted",
        "indices": index.tolist(),
        "artifact": rel,
        "labels": labels[index].tolist(),
        "distortion": result.distortion.tolist(),
        "success": result.success.tolist(),
    }
    store = RunStore(root)
    shard_record = store.save(shard_key("train", "softmax1", "untargeted", 0), "f1", shard, 0.0)
    store.save(
        "attacks/train/softmax1/untargeted",
        "f2",
        {},
        0.0,
        {shard_record["key"]: shard_record["digest"]},
    )
    key = st.checkpoint_key("softmax1", bench.data.identity, 0)
    weights = cached_weights_sha256("softmax1", bench.data.identity, 0)
    settings = {k: v for k, v in TINY_ATTACK.items() if k not in ("threads", "progress")}
    document = {
        "schema": "intriguing.reproduce/1",
        "config": {"dataset": DATASET, "attack": settings},
        "models": {"softmax1": {"checkpoint_key": key, "weights_sha256": weights}},
    }
    (root / "results.json").write_text(json.dumps(sealed(document)))
    return root


@pytest.fixture(scope="module")
def fake_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _fake_run(tmp_path_factory.mktemp("fake-run"))


def _curves(out: Path, run: Path | None, models: list[str], budgets: list[float]) -> dict[str, Any]:
    from intriguing.experiments.critics import run_critics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_critics(
            "curves",
            models,
            out,
            dataset=DATASET,
            from_run=run,
            n=5,
            attack=TINY_ATTACK,
            options={"budgets": budgets, "confidence": 0.95},
        )


def test_curves_from_a_run_match_its_stored_distortions(fake_run: Path, tmp_path: Path) -> None:
    budgets = [0.0, 0.01, 0.02, 0.04, 0.08, 0.16]
    doc = _curves(tmp_path, fake_run, ["softmax1"], budgets)
    shard = json.loads(
        (fake_run / "steps/attack/train/softmax1/untargeted/shard-0000.json").read_text()
    )["result"]
    d = np.array(shard["distortion"])
    ok = np.array(shard["success"])
    expected = [float(np.mean(ok & (d <= b))) for b in budgets]
    r = doc["models"]["softmax1"]
    assert r["origin"] == "run" and r["split"] == "train" and r["n"] == 8
    assert r["rate"] == pytest.approx(expected)
    assert r["distortion_sorted"] == pytest.approx(sorted(d[ok].tolist()))
    md = (tmp_path / "curves.md").read_text()
    assert "Universality as a curve" in md and "softmax1" in md and doc["verdict"] in md
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 1000
    # resume: the same command reuses every step; new budgets redo the curve, not the source
    src = tmp_path / "steps/source/softmax1/run.json"
    stamp = src.stat().st_mtime_ns
    again = _curves(tmp_path, fake_run, ["softmax1"], budgets)
    assert again["models"] == doc["models"] and src.stat().st_mtime_ns == stamp
    other = _curves(tmp_path, fake_run, ["softmax1"], [0.0, 1.0])
    assert other["models"]["softmax1"]["rate"] == [0.0, float(ok.mean())]
    assert src.stat().st_mtime_ns == stamp


def test_models_missing_from_the_run_are_attacked_here(fake_run: Path, tmp_path: Path) -> None:
    doc = _curves(tmp_path, fake_run, ["softmax1", "softmax2"], [0.0, 0.5])
    r = doc["models"]["softmax2"]
    assert r["origin"] == "attack" and r["split"] == "test" and r["n"] == 5
    assert (tmp_path / "steps/source/softmax2/test-n5.json").exists()
    assert "2 models" in doc["verdict"]


def test_an_attack_source_of_other_cached_weights_is_redone_not_mixed(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed --out whose attack was made on weights the cache no longer holds (retrained, or
    another cache directory) attacks again: the stored adversarials were measured on the new model
    and silently dropped or mixed (--n 10 became 2)."""
    budgets = [0.0, 0.5]
    doc = _curves(tmp_path, None, ["softmax1"], budgets)
    src = tmp_path / "steps/source/softmax1/test-n5.json"
    stored = json.loads(src.read_text())["result"]
    assert stored["weights_sha256"] == cached_weights_sha256("softmax1", _identity(), 0)
    stamp = src.stat().st_mtime_ns
    assert _curves(tmp_path, None, ["softmax1"], budgets)["models"] == doc["models"]
    assert src.stat().st_mtime_ns == stamp  # same weights: reused
    other = "f" * 64  # the cache now holds other weights under the same checkpoint key
    for where in ("intriguing.training.api", "intriguing.experiments.critics"):
        monkeypatch.setattr(f"{where}.cached_weights_sha256", lambda *args: other)
    _curves(tmp_path, None, ["softmax1"], budgets)
    assert src.stat().st_mtime_ns != stamp
    assert json.loads(src.read_text())["result"]["weights_sha256"] == other


def _identity() -> Any:
    from intriguing.data import load_mnist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_mnist(dataset=DATASET).identity


def test_a_run_of_another_checkpoint_or_a_broken_run_is_refused(
    fake_run: Path, tmp_path: Path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(fake_run, bad)
    results = json.loads((bad / "results.json").read_text())
    results["models"]["softmax1"]["checkpoint_key"] = "other"
    (bad / "results.json").write_text(json.dumps(sealed(results)))
    with pytest.raises(IntriguingError, match="another recipe"):
        _curves(tmp_path / "o1", bad, ["softmax1"], [0.1])
    results = json.loads((fake_run / "results.json").read_text())
    results["models"]["softmax1"]["weights_sha256"] = "0" * 64  # retrained since, or another cache
    (bad / "results.json").write_text(json.dumps(sealed(results)))
    with pytest.raises(IntriguingError, match="other weights than the cached model"):
        _curves(tmp_path / "o4", bad, ["softmax1"], [0.1])
    (bad / "results.json").write_text("{not json")
    with pytest.raises(IntriguingError, match="corrupt"):
        _curves(tmp_path / "o2", bad, ["softmax1"], [0.1])
    (bad / "results.json").write_text(json.dumps({"schema": "something/1"}))
    with pytest.raises(IntriguingError, match="not the results of `intriguing reproduce`"):
        _curves(tmp_path / "o3", bad, ["softmax1"], [0.1])


def test_from_run_reads_only_the_shards_its_summary_lists(fake_run: Path, tmp_path: Path) -> None:
    """A killed run with other settings leaves shards that the finished run did not write over:
    they used to be globbed into the source (3593 examples where the run had 100)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    shards = run / "steps/attack/train/softmax1/untargeted"
    leftover = json.loads((shards / "shard-0000.json").read_text())
    leftover["key"] = leftover["key"].replace("shard-0000", "shard-0001")
    (shards / "shard-0001.json").write_text(json.dumps(leftover))
    doc = _curves(tmp_path / "out", run, ["softmax1"], [0.1])
    assert doc["models"]["softmax1"]["n"] == 8


def test_from_run_refuses_an_edited_shard_or_one_the_summary_did_not_read(
    fake_run: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    path = run / "steps/attack/train/softmax1/untargeted/shard-0000.json"
    record = json.loads(path.read_text())
    record["result"]["distortion"] = [10 * d for d in record["result"]["distortion"]]
    path.write_text(json.dumps(record))  # edited by hand: its digest no longer matches
    with pytest.raises(IntriguingError, match="changed after the run"):
        _curves(tmp_path / "o1", run, ["softmax1"], [0.1])
    # resealed by hand, it is still not the record the summary was computed from
    from intriguing.experiments.graph import record_digest

    record["digest"] = record_digest(record)
    path.write_text(json.dumps(record))
    with pytest.raises(IntriguingError, match="left over from another run"):
        _curves(tmp_path / "o2", run, ["softmax1"], [0.1])
    shutil.copy(fake_run / path.relative_to(run), path)
    artifact = run / json.loads(path.read_text())["result"]["artifact"]
    artifact.write_bytes(artifact.read_bytes()[:-8] + bytes(8))  # the images changed
    with pytest.raises(IntriguingError, match="changed after the run"):
        _curves(tmp_path / "o3", run, ["softmax1"], [0.1])


def test_curves_cli_writes_json_and_exits_2_on_mistakes(fake_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["curves", "--models", "softmax1", "--from-run", str(fake_run), "--out", str(out)]
    args += ["--dataset", DATASET, "--points", "11", "--budget-max", "0.2"]
    args += ["--json", str(tmp_path / "c.json")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert (
        doc["schema"] == "intriguing.critics/1" and len(doc["models"]["softmax1"]["budgets"]) == 11
    )
    assert "verdict:" in result.output
    for bad in (
        ["curves", "--models", "nope", "--out", str(out)],
        ["curves", "--models", "", "--out", str(out)],
        ["curves", "--budget-max", "-1", "--out", str(out)],
        ["curves", "--from-run", str(tmp_path / "nowhere"), "--out", str(out)],
        ["curves", "--models", "softmax1,softmax1", "--out", str(out)],
    ):
        result = runner.invoke(cli, bad)
        assert result.exit_code == 2, (bad, result.output)
        assert result.output.startswith("Error:") and "Traceback" not in result.output


def test_curves_verdict_names_the_weakest_model_and_the_99_percent_budgets() -> None:
    from intriguing.report.critics import curves_verdict

    def row(rate: float, b99: float | None) -> dict[str, Any]:
        return {"success_rate": rate, "n": 100, "budget_for": {"0.99": b99}}

    all_ok = curves_verdict({"models": {"a": row(1.0, 0.05), "b": row(1.0, 0.12)}})
    assert "every one of them" in all_ok and "0.050 (a)" in all_ok and "0.120 (b)" in all_ok
    assert "holds" in all_ok
    weak = curves_verdict({"models": {"a": row(1.0, 0.05), "b": row(0.9, None)}})
    assert "90.00%" in weak and "(lowest: b)" in weak and "never 99% for b" in weak
    assert "does not hold" in weak


def test_reported_medians_of_an_even_count_are_the_mean_of_the_two_middle_values() -> None:
    """``torch.median`` returns the lower middle value: the attack summary, the robust-accuracy
    summary and the attack-summary step reported 0.2 for distortions 0.1, 0.2, 0.4, 0.8 (by hand:
    (0.2 + 0.4) / 2 = 0.3), while the package's other medians were numpy's."""
    from intriguing.analysis.curves import robust_accuracy_summary
    from intriguing.attacks import AttackResult
    from intriguing.attacks.metrics import median

    dist = torch.tensor([0.8, 0.1, 0.4, 0.2])
    assert median(dist) == pytest.approx(0.3) and median(dist[:3]) == pytest.approx(0.4)
    with pytest.raises(IntriguingError, match="no values"):
        median(dist[:0])
    ok = torch.ones(4, dtype=torch.bool)
    summary = robust_accuracy_summary(ok, dist, ok, [0.5], norm="l2")
    assert summary["median_distortion"] == pytest.approx(0.3)
    result = AttackResult(
        adversarial=torch.zeros(4, 1),
        success=ok,
        distortion=dist,
        l2=dist,
        c=torch.ones(4, dtype=torch.float64),
        iterations=torch.zeros(4, dtype=torch.long),
        grad_evals=torch.zeros(4, dtype=torch.long),
        labels=torch.zeros(4, dtype=torch.long),
        predicted=torch.ones(4, dtype=torch.long),
        targets=torch.full((4,), -1),
        mode="untargeted",
    )
    assert result.summary()["median_distortion"] == pytest.approx(0.3)
