"""``intriguing attack``: summary, JSON, saved result, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.attacks import AttackResult
from intriguing.cli import attack_cmd
from intriguing.cli.main import cli
from intriguing.inputs import LoadedModel


def tiny_model() -> nn.Module:
    """A fixed random linear model on MNIST images (about chance accuracy, logits out)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


@pytest.fixture
def patched_loader(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake(spec: str, **kwargs: Any) -> LoadedModel:
        calls.append(spec)
        return LoadedModel(tiny_model(), "zoo", f"zoo model {spec}", spec)

    monkeypatch.setattr("intriguing.inputs.resolve_model", fake)
    return calls


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_untargeted_summary_and_json(
    patched_loader: list[str], mnist_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "attack.json"
    code, output = run(
        ["attack", "tiny", "--n", "4", "--data-dir", str(mnist_dir), "--json", str(out)]
    )
    assert code == 0, output
    assert patched_loader == ["tiny"]
    assert "success rate        100.0%" in output
    payload = json.loads(out.read_text())
    summary = payload["summary"]
    assert summary["n"] == 4 and summary["success_rate"] == 1.0
    for key in ("mean_distortion", "median_distortion", "examples_per_s", "grad_evals_per_example"):
        assert summary[key] > 0
    assert payload["split"] == "test" and payload["correct_only"] is True
    assert payload["settings"]["mode"] == "untargeted"


def test_targeted_fixed_class_and_saved_result(
    patched_loader: list[str], mnist_dir: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "res.safetensors"
    code, output = run(
        [
            "attack",
            "tiny",
            "--n",
            "3",
            "--mode",
            "targeted",
            "--target",
            "next",
            "--split",
            "train",
            "--all-images",
            "--data-dir",
            str(mnist_dir),
            "--save",
            str(saved),
        ]
    )
    assert code == 0, output
    result = AttackResult.load(saved)
    assert torch.equal(result.targets, (result.labels + 1) % 10)
    assert bool(result.success.all())
    assert result.settings["target"] == "next"


def test_a_fixed_target_class_passes_over_the_images_of_that_class(
    patched_loader: list[str], mnist_dir: Path, tmp_path: Path
) -> None:
    from intriguing.inputs import open_data

    labels = open_data(dataset="mnist", data_dir=mnist_dir, split="test").labels
    assert labels is not None
    target = int(labels[0])  # the first image is of the target class: it must be passed over
    out, saved = tmp_path / "a.json", tmp_path / "a.safetensors"
    code, output = run(["attack", "tiny", "--n", "6", "--mode", "targeted", "--target",
                        str(target), "--all-images", "--data-dir", str(mnist_dir), "--json",
                        str(out), "--save", str(saved)])  # fmt: skip
    assert code == 0, output
    assert f"images of class {target} (the target) passed over" in output
    payload = json.loads(out.read_text())
    expected = (labels != target).nonzero().squeeze(1)[:6].tolist()
    assert payload["indices"] == expected and payload["skipped_label"] == target
    result = AttackResult.load(saved)
    assert bool((result.labels != target).all()) and bool((result.targets == target).all())
    # more images asked for than the data holds outside the target class: one line, exit 2
    others = int((labels != target).sum())
    code, output = run(["attack", "tiny", "--n", str(others + 1), "--mode", "targeted",
                        "--target", str(target), "--all-images", "--data-dir", str(mnist_dir)])  # fmt: skip
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert f"only {others} suitable images not of class {target} (the target)" in output
    # every image of the target class: no count to lower, another target to choose
    from safetensors.torch import save_file

    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        predicted = tiny_model()(images).argmax(1)
    save_file({"images": images[predicted == predicted[0]]}, str(tmp_path / "same.safetensors"))
    code, output = run(["attack", "tiny", "--mode", "targeted", "--target", str(int(predicted[0])),
                        "--tensors", str(tmp_path / "same.safetensors"), "--n", "1"])  # fmt: skip
    assert code == 2 and "is of class" in output and "choose another target" in output, output
    assert "at most 0" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "next"], "--target next needs --mode targeted"),
        (["--target", "3"], "--target 3 needs --mode targeted"),
        (["--mode", "targeted", "--target", "closest"], "unknown target chooser"),
        (["--mode", "targeted", "--target", "12"], "out of range"),
        (["--n", "100000"], "lower n (--n)"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    patched_loader: list[str], mnist_dir: Path, args: list[str], message: str
) -> None:
    code, output = run(["attack", "tiny", "--data-dir", str(mnist_dir), *args])
    assert code == 2
    assert "Error:" in output and message in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_click_usage_errors_exit_2() -> None:
    code, output = run(["attack", "tiny", "--n", "0"])
    assert code == 2 and "Traceback" not in output
    code, output = run(["attack", "tiny", "--mode", "sideways"])
    assert code == 2


def test_unknown_zoo_model_exits_2(mnist_dir: Path) -> None:
    code, output = run(["attack", "no-such-model", "--data-dir", str(mnist_dir)])
    assert code == 2 and "Error:" in output and "Traceback" not in output


def test_missing_data_dir_exits_2(patched_loader: list[str], tmp_path: Path) -> None:
    code, output = run(["attack", "tiny", "--data-dir", str(tmp_path / "nowhere")])
    assert code == 2 and "Error:" in output and "Traceback" not in output


def test_parse_target() -> None:
    assert attack_cmd.parse_target(None) is None
    assert attack_cmd.parse_target("7") == 7
    assert attack_cmd.parse_target("least-likely") == "least-likely"


@pytest.mark.parametrize("command", ["attack", "eval", "units", "spectral", "curves", "figure5"])
@pytest.mark.parametrize("text", ["", "  ", "0.5,"])
def test_an_empty_or_odd_normalize_is_refused_before_any_work(
    patched_loader: list[str], command: str, text: str
) -> None:
    """``--normalize ""`` was ignored silently: the model ran unnormalised (found by a robustness
    probe). Every command with --normalize refuses it while parsing, before loading the model."""
    code, output = run([command, "tiny", "--normalize", text])
    assert code == 2, output
    assert output.startswith("Error:") and "--normalize" in output, output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
    assert patched_loader == []


def test_none_of_the_images_correct_says_so(patched_loader: list[str], tmp_path: Path) -> None:
    """Before: 'only 0 correctly classified images among 4; lower --n to at most 0'."""
    from safetensors.torch import save_file

    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        wrong = (tiny_model()(images).argmax(1) + 1) % 10
    save_file({"images": images, "labels": wrong}, str(tmp_path / "d.safetensors"))
    code, output = run(["attack", "tiny", "--tensors", str(tmp_path / "d.safetensors"), "--n", "2"])
    assert code == 2
    assert output.startswith("Error: none of the 4 images is classified correctly"), output
