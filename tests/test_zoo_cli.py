"""``intriguing zoo`` / ``train`` / ``eval`` through click's CliRunner (mnist-5k, tiny configs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.models import linear_softmax, register_model, unregister_model
from intriguing.training import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = "test-cli-tiny"


@pytest.fixture(scope="module", autouse=True)
def tiny_model() -> Iterator[None]:
    register_model(
        TINY,
        linear_softmax,
        description="softmax, 5 L-BFGS iterations (CLI tests)",
        train_config=TrainConfig(iterations=5, weight_decay={"out": 1e-4}),
    )
    yield
    unregister_model(TINY)


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _assert_one_line_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and fragment in error_lines[0], result.output


def test_zoo_lists_every_model_with_paper_numbers(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["zoo"])
    assert result.exit_code == 0, result.output
    for name in (
        "softmax1",
        "softmax3",
        "N100-100-10",
        "N200-200-10",
        "AE400-10",
        "Conv",
        "M1'",
        "M2",
    ):
        assert name in result.output
    assert "7.40%" in result.output  # softmax1's test error in the paper


def test_zoo_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["zoo", "--json"])
    rows = json.loads(result.output)
    by_name = {row["name"]: row for row in rows}
    assert by_name["M1'"]["aliases"] == ["M1p", "M1prime"]
    assert by_name["N100-100-10"]["hidden_layer"] == "act2"
    assert by_name["softmax2"]["train_config"]["weight_decay"] == {"out": 0.01}


def test_train_prints_and_writes_results(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    result = runner.invoke(cli, ["train", TINY, "--dataset", "mnist-5k", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["model"] == TINY and data["dataset"] == "mnist-5k"
    assert 0.0 <= data["test_error"] < 0.5 and 0.0 <= data["train_error"] < 0.5
    assert data["wall_time_s"] > 0
    assert Path(data["checkpoint"]).exists()
    assert "test_error" in result.output and data["checkpoint"] in result.output
    again = runner.invoke(cli, ["train", TINY, "--dataset", "mnist-5k", "--json", str(out)])
    assert again.exit_code == 0
    assert json.loads(out.read_text())["cached"] is True


def test_eval_reports_every_split(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = runner.invoke(cli, ["eval", TINY, "--dataset", "mnist-5k", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"train_error", "test_error", "p1_error", "p2_error"} <= set(data)
    # P1 and P2 halve the training set: the train error is their mean (2000 images each)
    assert data["train_error"] == pytest.approx((data["p1_error"] + data["p2_error"]) / 2)
    # a model trained on P1: train_error is P1's, as `train` and the paper's Table 3 mean it
    p1 = runner.invoke(cli, ["eval", "M1'", "--dataset", "mnist-5k", "--json", str(out)])
    assert p1.exit_code == 0, p1.output
    on_p1 = json.loads(out.read_text())
    assert on_p1["train_split"] == "p1" and on_p1["train_error"] == on_p1["p1_error"]
    trained = runner.invoke(cli, ["train", "M1'", "--dataset", "mnist-5k", "--json", str(out)])
    assert json.loads(out.read_text())["train_error"] == on_p1["train_error"], trained.output
    by_path = runner.invoke(
        cli, ["eval", "--checkpoint", data["checkpoint"], "--dataset", "mnist-5k"]
    )
    assert by_path.exit_code == 0, by_path.output
    assert f"{100 * data['test_error']:.2f}%" in by_path.output


def test_eval_takes_a_checkpoint_as_model(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    trained = runner.invoke(cli, ["train", TINY, "--dataset", "mnist-5k", "--json", str(out)])
    assert trained.exit_code == 0, trained.output
    checkpoint = json.loads(out.read_text())["checkpoint"]
    by_option = runner.invoke(cli, ["eval", "--checkpoint", checkpoint, "--dataset", "mnist-5k"])
    assert by_option.exit_code == 0, by_option.output
    for given in (checkpoint, str(Path(checkpoint).with_suffix(".json"))):
        as_model = runner.invoke(cli, ["eval", given, "--dataset", "mnist-5k"])
        assert as_model.exit_code == 0, as_model.output
        assert as_model.stdout == by_option.stdout
    both = runner.invoke(cli, ["eval", checkpoint, "--checkpoint", checkpoint])
    _assert_one_line_error(both, "not both")
    missing = runner.invoke(cli, ["eval", str(tmp_path / "none.safetensors")])
    _assert_one_line_error(missing, "not found")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_unknown_model_exits_2_with_one_line(runner: CliRunner, command: str) -> None:
    result = runner.invoke(cli, [command, "N100-100", "--dataset", "mnist-5k"])
    _assert_one_line_error(result, "did you mean 'N100-100-10'")


def test_bad_data_dir_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["train", "softmax1", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_dataset_option_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["train", TINY, "--dataset", "cifar"])
    assert result.exit_code == 2
    assert "cifar" in result.output


def test_bad_checkpoint_path_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["eval", "--checkpoint", str(tmp_path / "x.safetensors")])
    _assert_one_line_error(result, "not found")


def test_corrupt_checkpoint_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text("{")
    result = runner.invoke(cli, ["eval", "--checkpoint", str(bad)])
    _assert_one_line_error(result, "corrupt sidecar")


def test_eval_needs_a_name_or_checkpoint(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["eval"])
    _assert_one_line_error(result, "give a model NAME or --checkpoint")


def test_train_needs_a_name(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["train"])
    assert result.exit_code == 2


def test_the_paper_s_table3_errors_print_as_percentages() -> None:
    """eval printed the paper's P2 error 2.4% as 'err_p2 0.024' beside our '2.61%'."""
    from intriguing.cli.zoo_cmds import _paper_value

    assert _paper_value("err_p2", 0.024) == "2.40%"
    assert _paper_value("err_p1", 0) == "0.00%"
    assert _paper_value("test_error", 0.02) == "2.00%"
    assert _paper_value("distortion", 0.062) == "0.062"
