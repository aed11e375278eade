"""The adversarial-training comparison (paper §4.2): statistics, the resumable step graph, the
report rendered from stored results, and the ``intriguing advtrain`` command."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from intriguing._io import sealed
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments import advtrain as experiment
from intriguing.experiments.advtrain import (
    AdvTrainSpec,
    run_advtrain,
    summarise,
    t_interval,
    welch,
)
from intriguing.report.advtrain import load_advtrain_results, render_advtrain
from intriguing.training.adversarial import adversarial_train


def tiny_spec(**changes: Any) -> AdvTrainSpec:
    """Seconds on 2 cores: 300 mnist-5k training images, 2 epochs, small pools, 8 attacked."""
    base = AdvTrainSpec()
    spec = base.replace(
        variants=("weight-decay", "hidden-pool"),
        seeds=2,
        dataset="mnist-5k",
        train=base.train.replace(epochs=2, lr=0.2, batch_size=50),
        pool=dataclasses.replace(base.pool, size=20, refresh_every=2, refresh_fraction=0.25),
        robust_n=8,
        train_limit=300,
    )
    return spec.replace(**changes)


@pytest.fixture(autouse=True)
def _quiet_mnist5k() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- statistics
def test_t_interval_matches_the_hand_computed_interval() -> None:
    low, high = t_interval([1.0, 2.0, 3.0])  # type: ignore[misc]
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, df=2} * sd / sqrt(n), sd = 1
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)
    assert t_interval([0.5]) is None


def test_welch_matches_the_formula() -> None:
    from scipy import stats

    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    va, vb = 1.0 / 3, (5.0 / 3) / 4  # sample variance / n
    t = (2.0 - 5.5) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    result = welch(a, b)
    assert result["t"] == pytest.approx(t)
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert result["difference"] == pytest.approx(-3.5)
    assert welch([1.0], b)["p"] is None
    assert welch([1.0, 1.0], [1.0, 1.0])["p"] is None  # no spread at all: undefined


def test_summarise_tests_each_variant_against_weight_decay() -> None:
    def run(variant: str, seed: int, error: float) -> dict[str, Any]:
        return {
            "variant": variant,
            "seed": seed,
            "test_error": error,
            "train_error": 0.0,
            "wall_time_s": 10.0,
            "cpu_time_s": 5.0,
            "robustness": {"median": 0.02 + error, "mean": 0.03, "success_rate": 1.0},
        }

    runs = [run("weight-decay", s, e) for s, e in enumerate([0.0190, 0.0193, 0.0188])]
    runs += [run("input-pool", s, e) for s, e in enumerate([0.0150, 0.0152, 0.0151])]
    runs += [run("dropout", s, e) for s, e in enumerate([0.0191, 0.0187, 0.0194])]
    rows = {
        r["variant"]: r for r in summarise(runs, ["weight-decay", "input-pool", "dropout"])["rows"]
    }
    assert rows["weight-decay"]["vs_baseline"] is None
    assert rows["input-pool"]["significant"] is True
    assert rows["dropout"]["significant"] is False
    assert rows["input-pool"]["mean"] == pytest.approx(0.0151)
    assert rows["input-pool"]["ci95"][0] < 0.0151 < rows["input-pool"]["ci95"][1]
    assert rows["input-pool"]["robust_median"] == pytest.approx(0.0351)
    assert rows["input-pool"]["paper"]["test_error"] == 0.012


# ----------------------------------------------------------------------------- the spec
def test_spec_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInputError, match="unknown variant"):
        AdvTrainSpec(variants=("weight-decay", "mixup"))
    with pytest.raises(InvalidInputError, match="seeds"):
        AdvTrainSpec(seeds=0)
    with pytest.raises(InvalidInputError, match="repeat"):
        AdvTrainSpec(variants=("dropout", "dropout"))
    with pytest.raises(IntriguingError):
        AdvTrainSpec(model="N999")


def test_variants_share_the_recipe_and_differ_only_as_intended() -> None:
    spec = AdvTrainSpec()
    configs = {v: spec.variant_config(v, seed=4) for v in spec.variants}
    assert all(c.train == spec.train.replace(seed=4) for c in configs.values())
    assert configs["weight-decay"].pool is None and not configs["weight-decay"].dropout
    assert configs["dropout"].pool is None and configs["dropout"].dropout
    input_pool, hidden_pool = configs["input-pool"].pool, configs["hidden-pool"].pool
    assert input_pool is not None and input_pool.layers == ("input",)
    assert hidden_pool is not None and hidden_pool.layers == ("act1", "act2")
    assert dataclasses.replace(input_pool, layers=("x",)) == dataclasses.replace(
        hidden_pool, layers=("x",)
    )


# ----------------------------------------------------------------------------- the run
def test_run_writes_results_report_and_plot_then_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = run_advtrain(tiny_spec(), tmp_path)
    assert [(r["variant"], r["seed"]) for r in doc["runs"]] == [
        ("hidden-pool", 0),
        ("hidden-pool", 1),
        ("weight-decay", 0),
        ("weight-decay", 1),
    ]
    for run in doc["runs"]:
        assert 0 <= run["test_error"] <= 1 and len(run["history"]) == 2
        assert run["robustness"]["of"] == 8
    hidden = next(r for r in doc["runs"] if r["variant"] == "hidden-pool")
    assert hidden["history"][1]["pool_size"] == {"act1": 15, "act2": 15}  # 3 refreshes of 5
    assert (tmp_path / "report.md").is_file()
    assert (tmp_path / "figures" / "advtrain_test_error.png").stat().st_size > 1000
    assert load_advtrain_results(tmp_path)["summary"] == doc["summary"]

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished step was recomputed")

    monkeypatch.setattr(experiment, "adversarial_train", no_training)
    assert run_advtrain(tiny_spec(), tmp_path)["runs"] == doc["runs"]


def test_killed_run_resumes_with_identical_numbers(tmp_path: Path) -> None:
    """A run killed after one epoch (its per-epoch checkpoint on disk) ends like an uninterrupted one."""
    from intriguing.data import load_mnist
    from intriguing.models import build_model
    from intriguing.training.checkpoint import seeded

    spec = tiny_spec(variants=("input-pool",), seeds=1, robust_n=0)
    whole = run_advtrain(spec, tmp_path / "whole")["runs"][0]
    data = load_mnist(dataset="mnist-5k")
    with seeded(0):
        model = build_model(spec.model)
    checkpoint = tmp_path / "killed/artifacts/train/input-pool/seed-0/checkpoint.safetensors"
    images, labels = data.train_images[:300], data.train_labels[:300]
    config = spec.variant_config("input-pool", 0)
    adversarial_train(
        model,
        images,
        labels,
        config,
        test_images=data.test_images,
        test_labels=data.test_labels,
        checkpoint=checkpoint,
        stop_after=1,
    )
    resumed = run_advtrain(spec, tmp_path / "killed")["runs"][0]
    assert resumed["resumed_from"] == 1 and whole["resumed_from"] == 0
    assert resumed["test_error"] == whole["test_error"]
    assert resumed["train_error"] == whole["train_error"]
    strip = ("time_s", "cpu_s")
    assert [{k: v for k, v in h.items() if k not in strip} for h in resumed["history"]] == [
        {k: v for k, v in h.items() if k not in strip} for h in whole["history"]
    ]


# ----------------------------------------------------------------------------- the report
def fake_doc() -> dict[str, Any]:
    history = [{"epoch": e, "test_error": 0.03 / e} for e in (1, 2, 3)]
    runs = [
        {
            "variant": v,
            "seed": s,
            "test_error": e,
            "train_error": 0.0,
            "wall_time_s": 60.0,
            "cpu_time_s": 30.0,
            "history": history,
            "robustness": {
                "median": 0.03,
                "mean": 0.031,
                "success_rate": 1.0,
                "attacked": 9,
                "of": 10,
            },
        }
        for v, errors in (("weight-decay", (0.0191, 0.0195)), ("input-pool", (0.0123, 0.0127)))
        for s, e in enumerate(errors)
    ]
    return {
        "schema": "intriguing.advtrain/1",
        "spec": AdvTrainSpec(variants=("weight-decay", "input-pool")).to_dict(),
        "summary": summarise(runs, ["weight-decay", "input-pool"]),
        "runs": runs,
    }


def test_report_renders_from_the_stored_results_only(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(sealed(fake_doc())))
    paths = render_advtrain(tmp_path)
    text = paths["report"].read_text()
    assert "| input-pool | 2 | 1.25% |" in text
    assert "| weight-decay | 2 | 1.93% |" in text
    assert "< 1.2%" in text and "1.6%" in text
    assert "input-pool: -0.68 points against weight decay alone" in text
    assert "significantly lower (Welch p = 0.0017)" in text
    assert paths["figure"].is_file()


def test_report_refuses_missing_or_foreign_results(tmp_path: Path) -> None:
    with pytest.raises(IntriguingError, match=r"results\.json not found"):
        render_advtrain(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": "intriguing.reproduce/1"}))
    with pytest.raises(
        IntriguingError, match=r"results of `intriguing reproduce`.*not of `intriguing advtrain`"
    ):
        render_advtrain(tmp_path)
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(IntriguingError, match="not valid JSON"):
        render_advtrain(tmp_path)
    sealed_doc = sealed(fake_doc())  # changed after the run: its digest no longer matches
    (tmp_path / "results.json").write_text(json.dumps(sealed_doc | {"baseline": "other"}))
    with pytest.raises(IntriguingError, match="changed after the run"):
        render_advtrain(tmp_path)


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize(
    "args,message",
    [
        (["--variants", "weight-decay,mixup"], "unknown variant"),
        (["--variants", ","], "--variants is empty"),
        (["--seeds", "0"], "--seeds"),
        (["--epochs", "0"], "--epochs"),
        (["--mix", "-1"], "--mix"),
        (["--pool-size", "0"], "--pool-size"),
        (["--warmup-epochs", "-1"], "--warmup-epochs"),
        (["--refresh-every", "0"], "--refresh-every"),
        (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["--attack", "pgd"], "pgd"),
        # cut to the 1000 test images of mnist-5k silently before
        (["--dataset", "mnist-5k", "--robust-n", "1500"], "exceeds the 1000 test images"),
        # mnist-5k: 4000 images, 32 minibatches of 128 an epoch; epoch 2 holds 32-63: no refresh
        (
            [
                *("--dataset", "mnist-5k", "--variants", "input-pool", "--epochs", "2"),
                *("--warmup-epochs", "1", "--refresh-every", "1000"),
            ],
            "no pool refresh would happen (every 1000 minibatches",
        ),
    ],
)
def test_cli_user_mistakes_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["advtrain", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_passes_the_options_to_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(
        spec: AdvTrainSpec, out: Path, *, data_dir: Any = None, backend: Any = None
    ) -> dict[str, Any]:
        seen.update(spec=spec, out=out, backend=backend)
        return fake_doc()

    monkeypatch.setattr(experiment, "run_advtrain", fake_run)
    out_json = tmp_path / "doc.json"
    args = ["advtrain", "--variants", "weight-decay,input-pool", "--seeds", "5", "--epochs", "7"]
    args += [
        "--attack",
        "fgm",
        "--mix",
        "0.25",
        "--warmup-epochs",
        "4",
        "--out",
        str(tmp_path / "r"),
        "--json",
        str(out_json),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    spec = seen["spec"]
    assert spec.variants == ("weight-decay", "input-pool") and spec.seeds == 5
    assert spec.train.epochs == 7 and spec.pool.attack == "fgm" and spec.pool.mix == 0.25
    assert spec.pool.warmup_epochs == 4 and spec.pool.refresh_every == 40
    assert json.loads(out_json.read_text())["schema"] == "intriguing.advtrain/1"
    assert "report.md" in result.output and "advtrain: test error" in result.output
    quick = CliRunner().invoke(cli, ["advtrain", "--quick", "--out", str(tmp_path / "q")])
    assert quick.exit_code == 0 and seen["spec"].train_limit == 10000
    assert seen["backend"].name == "local"


def test_torch_threads_are_set_to_one(tmp_path: Path) -> None:
    spec = tiny_spec(variants=("weight-decay",), seeds=1, robust_n=0)
    doc = run_advtrain(spec, tmp_path)
    assert doc["runs"][0]["torch_threads"] == 1 == torch.get_num_threads()
