"""Fewer classes (issue #9, item 4): tasks, models, the 2-class attack against exact optima, the
resumable run, its report and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.attacks import LBFGS, exact_linear_attack
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments.classes import (
    ClassesConfig,
    build_task_model,
    get_task,
    mean_median_ci,
    parse_tasks,
    ratio_of_means_ci,
    run_classes,
    wilson,
)
from intriguing.report.classes import (
    classes_markdown,
    distortion_ratios,
    load_classes_results,
    verdict,
    write_classes_report,
)

# ------------------------------------------------------------------------------------ tasks


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("3v8", [-1, -1, -1, 0, -1, -1, -1, -1, 1, -1]),
        ("8v3", [-1, -1, -1, 1, -1, -1, -1, -1, 0, -1]),
        ("0vrest", [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("7vrest", [1, 1, 1, 1, 1, 1, 1, 0, 1, 1]),
        ("0-4", [0, 1, 2, 3, 4, -1, -1, -1, -1, -1]),
        ("2-5", [-1, -1, 0, 1, 2, 3, -1, -1, -1, -1]),
        ("all", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ],
)
def test_task_label_mapping_by_hand(name: str, expected: list[int]) -> None:
    task = get_task(name)
    assert task.task_labels(torch.arange(10)).tolist() == expected
    assert task.num_classes == max(expected) + 1


def test_task_subset_and_other_digits() -> None:
    digits = torch.tensor([3, 1, 8, 8, 0, 3, 9])
    images = torch.zeros(7, 1, 28, 28)
    index, labels = get_task("3v8").subset(images, digits)
    assert index.tolist() == [0, 2, 3, 5]
    assert labels.tolist() == [0, 1, 1, 0]
    rest = get_task("0vrest")
    assert rest.other_digits(0) == (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert rest.other_digits(6) == (0,)
    assert get_task("0-4").other_digits(2) == (0, 1, 3, 4)
    with pytest.raises(InvalidInputError, match="not part of task"):
        get_task("3v8").other_digits(5)


@pytest.mark.parametrize("bad", ["3v3", "5-2", "4-4", "foo", "12v3", "", "3 v 8", "all10"])
def test_unknown_task_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown task"):
        get_task(bad)


def test_parse_tasks_refuses_duplicates_and_empty() -> None:
    assert [t.name for t in parse_tasks("3v8, all")] == ["3v8", "all"]
    assert [t.name for t in parse_tasks("0-9")] == ["all"]
    with pytest.raises(InvalidInputError, match="twice"):
        parse_tasks("3v8,3v8")
    with pytest.raises(InvalidInputError, match="no task"):
        parse_tasks(" , ")


# ----------------------------------------------------------------------------------- models


@pytest.mark.parametrize("family", ["softmax", "mlp", "mlp-b"])
@pytest.mark.parametrize("k", [2, 5])
def test_task_models_output_k_logits(family: str, k: int) -> None:
    model = build_task_model(family, k).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, k)
    assert [name for name, _ in model.named_children()][-1] == "out"


def test_probe_copies_the_frozen_encoder() -> None:
    encoder = {"weight": torch.randn(16, 784), "bias": torch.randn(16)}
    model = build_task_model("ae-probe", 2, encoder).eval()
    fc1, out = model.get_submodule("fc1"), model.get_submodule("out")
    assert isinstance(fc1, nn.Linear) and isinstance(out, nn.Linear)
    assert torch.equal(fc1.weight, encoder["weight"])
    assert not any(p.requires_grad is False for p in out.parameters())
    x = torch.rand(4, 1, 28, 28)
    hidden = torch.sigmoid(x.flatten(1) @ encoder["weight"].T + encoder["bias"])
    expected = hidden @ out.weight.T + out.bias
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(InvalidInputError, match="encoder"):
        build_task_model("ae-probe", 2)
    with pytest.raises(InvalidInputError, match="unknown model family"):
        build_task_model("cnn", 2)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        build_task_model("softmax", 1)


# ------------------------------------------------------------------- 2-class attack vs oracle


def _two_class_linear(seed: int = 0) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """A 2-class affine model ``z = (0, a.x + b)`` and mid-grey images whose margins ``a.x + b``
    are set by hand; the box never binds, so the exact minimum L2 is ``|margin| / ||a||``."""
    g = torch.Generator().manual_seed(seed)
    a = 0.5 + torch.rand(784, generator=g)  # w1 - w0, all positive
    base = 0.3 + 0.4 * torch.rand(784, generator=g)
    margins = torch.tensor([-15.0, -30.0, -7.0, 12.0, 25.0, 4.0])
    images = (base[None] + margins[:, None] / a.sum()).reshape(6, 1, 28, 28)  # a.x_i = a.base + m_i
    linear = nn.Linear(784, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.zeros(784), a]))
        linear.bias.copy_(torch.tensor([0.0, -float(a @ base)]))
    return nn.Sequential(nn.Flatten(), linear).eval(), images, a


def test_two_class_attack_matches_the_closed_form_and_the_exact_oracle() -> None:
    model, images, a = _two_class_linear()
    with torch.no_grad():
        logits = model(images)
    labels = logits.argmax(1)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    bias = float(model[1].bias[1].detach())  # type: ignore[index]
    margin = (images.flatten(1).double() @ a.double() + bias).abs()  # in float64
    closed_form = margin / a.double().norm() / 28.0  # RMS per pixel = L2 / sqrt(784)
    step = margin[:, None] * a.double()[None] / a.double().norm() ** 2
    assert float(step.abs().max()) < 0.3  # the box is inactive: the hyperplane distance is exact
    exact = exact_linear_attack(model, images, labels, progress=False)
    torch.testing.assert_close(exact.distortion, closed_form, rtol=1e-7, atol=1e-10)
    result = LBFGS(mode="untargeted", threads=1)(model, images, labels)
    assert bool(result.success.all())
    assert torch.equal(result.predicted, 1 - labels)
    ratio = result.distortion.double() / closed_form
    assert float(ratio.min()) >= 1.0 - 1e-4  # never below the optimum
    assert float(ratio.max()) <= 1.01  # and within 1% of it


# ------------------------------------------------------------------------------- statistics


def test_statistics_helpers() -> None:
    out = mean_median_ci([0.1, 0.2, 0.3, 0.4], resamples=500, seed=0)
    assert out["mean"] == pytest.approx(0.25) and out["median"] == pytest.approx(0.25)
    assert out["mean_ci"][0] <= 0.25 <= out["mean_ci"][1]
    assert mean_median_ci([0.2, 0.2], resamples=100, seed=0)["mean_ci"] == [0.2, 0.2]
    assert mean_median_ci([], resamples=100, seed=0)["mean"] is None
    ratio = ratio_of_means_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], resamples=200, seed=0)
    assert ratio["ratio"] == pytest.approx(2.0)
    assert ratio["ratio_ci"] == pytest.approx([2.0, 2.0])
    assert wilson(0, 0) is None
    low, high = wilson(5, 10) or [0.0, 0.0]
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


# ------------------------------------------------------------------------------ end to end


def _fake_encoder(name: str, dataset: str, data_dir: Any) -> tuple[dict[str, torch.Tensor], str]:
    g = torch.Generator().manual_seed(1)
    return {"weight": 0.05 * torch.randn(24, 784, generator=g), "bias": torch.zeros(24)}, "fake"


TINY = {
    "tasks": ("3v8", "all"),
    "n": 6,
    "updates": 40,
    "train_limit": 600,
    "bootstrap": 200,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("classes") / "run"
    doc = run_classes(ClassesConfig(**TINY), out, encoder_loader=_fake_encoder)  # type: ignore[arg-type]
    return out, doc


def test_tiny_run_end_to_end(tiny_run: tuple[Path, dict]) -> None:
    out, doc = tiny_run
    stored = json.loads((out / "results.json").read_text())
    assert stored["rows"] == doc["rows"]
    rows = {(r["task"], r["family"]): r for r in doc["rows"]}
    assert len(rows) == 8
    for (task, family), row in rows.items():
        assert row["num_classes"] == (2 if task == "3v8" else 10)
        assert row["n_train"] == 600
        if family == "mlp-b":
            assert "distortion" not in row
            continue
        assert row["n_attacked"] == 6 and row["success_rate"] == 1.0
        assert 0 < row["distortion"]["mean"] < 0.5
        assert set(row["transfer"]) == {"softmax", "mlp", "ae-probe", "mlp-b"} - {family}
        assert ("restricted" in row) == (task == "3v8")
    softmax = rows[("3v8", "softmax")]
    assert softmax["lbfgs_over_exact"] >= 1.0 - 1e-4
    restricted = softmax["restricted"]
    exact = restricted["exact"]
    # a restricted target set can only make the exact optimum larger (or equal)
    assert exact["all_restricted_mean"] >= exact["all_untargeted_mean"] - 1e-12
    # the attacked images of a 2-class task are its own digits
    attack = json.loads((out / "steps/attack/3v8/softmax.json").read_text())["result"]
    assert set(attack["labels"]) <= {0, 1}


def test_tiny_run_resumes_without_recomputing(tiny_run: tuple[Path, dict]) -> None:
    out, doc = tiny_run
    again = run_classes(ClassesConfig(**TINY), out, encoder_loader=_fake_encoder)  # type: ignore[arg-type]
    assert again["timings"]["steps_reused"] == again["timings"]["steps_total"]
    assert again["rows"] == doc["rows"]
    record = out / "steps/transfer/all/mlp.json"
    record.unlink()
    third = run_classes(ClassesConfig(**TINY), out, encoder_loader=_fake_encoder)  # type: ignore[arg-type]
    assert third["timings"]["steps_reused"] == third["timings"]["steps_total"] - 1
    assert third["rows"] == doc["rows"]


def test_report_from_the_tiny_run(tiny_run: tuple[Path, dict]) -> None:
    out, _ = tiny_run
    paths = write_classes_report(out)
    text = paths["markdown"].read_text()
    assert "**Verdict.**" in text and "| 3v8 | 2 | mlp |" in text
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"
    # the updates are rounded up to whole epochs per task, and --n is an upper limit (a probe
    # found "the same for every task" and "the first 70000 test images" above 878 attacked)
    assert "rounded up to whole epochs" in text and "on up to the first" in text
    assert "the same for every task" not in text


# ---------------------------------------------------------------------------------- report


def _doc(d2: float, d10: float, success: float = 1.0) -> dict[str, Any]:
    def row(task: str, k: int, mean: float) -> dict[str, Any]:
        return {
            "task": task,
            "num_classes": k,
            "family": "mlp",
            "success_rate": success,
            "distortion": {"mean": mean},
        }

    return {
        "schema": "intriguing.classes/1",
        "families": {"mlp": "x"},
        "tasks": [{"name": "3v8", "num_classes": 2}, {"name": "all", "num_classes": 10}],
        "rows": [row("3v8", 2, d2), row("all", 10, d10)],
    }


def test_a_one_family_run_says_there_is_no_transfer() -> None:
    """One family per task: the transfer section printed its heading and an empty table (a probe)."""
    doc = _doc(0.06, 0.03)
    doc["config"] = {
        "updates": 100,
        "batch_size": 50,
        "n": 10,
        "dataset": "mnist",
        "seed": 0,
        "bootstrap": 100,
    }
    for task in doc["tasks"]:
        task["description"] = task["name"]
    for row in doc["rows"]:
        row.update(train_error=0.01, test_error=0.02, attacked=True, n_attacked=10)
    text = classes_markdown(doc, figure=None)
    section = text.split("### Transfer between the task's models", 1)[1]
    assert section.lstrip().startswith("None: each task has one model family")
    assert "| task | K | made for |" not in text


def test_verdict_follows_the_numbers() -> None:
    assert distortion_ratios(_doc(0.06, 0.03)) == {("3v8", "mlp"): pytest.approx(2.0)}
    assert "less severe in size but not in kind" in verdict(_doc(0.06, 0.03))
    assert "about as severe in size" in verdict(_doc(0.031, 0.03))
    assert "more severe in size" in verdict(_doc(0.01, 0.03))
    assert "but not in kind" not in verdict(_doc(0.06, 0.03, success=0.5))
    single = _doc(0.06, 0.03)
    single["rows"] = single["rows"][:1]
    assert verdict(single).startswith("No verdict: the run needs tasks with at least two")


def test_no_verdict_says_when_the_fewest_class_models_were_never_fooled() -> None:
    """Both K were attacked, but the 2-class model was fooled on no image: the message said the run
    lacked two numbers of classes or an attacked family."""
    doc = _doc(0.06, 0.03)
    doc["rows"][0].update(success_rate=0.0, distortion={"mean": None})
    assert verdict(doc).startswith(
        "No verdict: no distortion ratio can be formed, as the 2-class models were fooled on no"
    )


def test_verdict_quotes_the_fewest_class_models_only() -> None:
    """A 5-class task with a larger distortion (0.0694) and a lower success: the sentence about
    'the 2-class models' quoted them (0.069, 'at least 50%')."""
    doc = _doc(0.061, 0.03)
    doc["tasks"].insert(1, {"name": "0-4", "num_classes": 5})
    doc["rows"].insert(
        1,
        {
            "task": "0-4",
            "num_classes": 5,
            "family": "mlp",
            "success_rate": 0.5,
            "distortion": {"mean": 0.0694},
        },
    )
    sentence = verdict(doc)
    assert "the 2-class models need" in sentence
    assert "fooled all of their correctly classified test images" in sentence
    assert "at most 0.061" in sentence and "0.0694" not in sentence and "0.069" not in sentence


def test_load_classes_results_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(IntriguingError, match="not the results of `intriguing classes`"):
        load_classes_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(IntriguingError, match="not valid JSON"):
        load_classes_results(tmp_path)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be"),
        ({"updates": -1}, "updates must be"),
        ({"train_limit": 1}, "train_limit"),
        ({"families": ("softmax", "cnn")}, "unknown model family"),
        ({"families": ("mlp-b",)}, "attacked family"),
        ({"families": ("mlp", "mlp")}, "twice"),
        ({"tasks": ("3v8", "9v9")}, "unknown task"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        ClassesConfig(**kwargs)


def test_run_refuses_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(IntriguingError, match="is a file"):
        run_classes(ClassesConfig(**TINY), target, encoder_loader=_fake_encoder)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "args",
    [
        ["--tasks", "3v3"],
        ["--tasks", "3v8,3v8"],
        ["--families", "softmax,cnn"],
        ["--n", "0"],
        ["--dataset", "imagenet"],
    ],
)
def test_cli_user_mistakes_exit_2(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["classes", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_out_is_a_file_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(cli, ["classes", "--out", str(target)])
    assert result.exit_code == 2
    assert "Error:" in result.output and "is a file" in result.output


def test_cli_tiny_run_writes_results_and_report(tmp_path: Path, mnist_dir: Path) -> None:
    out, copy = tmp_path / "run", tmp_path / "copy.json"
    args = [
        "classes",
        "--tasks",
        "3v8,0-4",
        "--families",
        "softmax,mlp",
        "--n",
        "4",
        "--updates",
        "20",
        "--train-limit",
        "300",
        "--out",
        str(out),
        "--json",
        str(copy),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(copy.read_text())
    assert [r["task"] for r in doc["rows"]] == ["3v8", "3v8", "0-4", "0-4"]
    assert all(not math.isnan(r["test_error"]) for r in doc["rows"])
    assert (out / "classes.md").exists() and (out / "classes.png").exists()
    assert "Fewer classes make the problem" in result.output
    assert np.isfinite(doc["rows"][0]["distortion"]["mean"])


def test_a_train_limit_that_misses_a_class_is_refused_before_the_run(
    tmp_path: Path, mnist_dir: Path
) -> None:
    """The first two 3v8 training images are both 3s: the "3v8" model learned one class (49%
    test error, 0% fooled) and was reported as a normal row."""
    out = tmp_path / "run"
    args = ["classes", "--tasks", "3v8", "--families", "softmax", "--n", "1"]
    result = CliRunner().invoke(cli, [*args, "--train-limit", "2", "--out", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "first 2 training images of task '3v8' hold no 8" in result.output
    assert not out.exists()
