"""Bad inputs and bad read-back state found by probing reproduce / report / train / eval / data.

Each test failed before its fix: a silently reused result of other data, a silently ignored
option, a number measured on the wrong data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.models import linear_softmax, register_model, unregister_model
from intriguing.training import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = "test-state-probe-tiny"


def _one_line_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def _tensors_data(name: str, seed: int):  # type: ignore[no-untyped-def]
    from intriguing.data import MNIST

    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(40, 1, 28, 28, generator=g) for _ in range(2)]
    labels = [torch.arange(40) % 10 for _ in range(2)]
    return MNIST.from_tensors(name, images[0], labels[0], images[1], labels[1])


def test_a_run_directory_reused_with_other_data_recomputes_the_reference_distance(
    tmp_path: Path,
) -> None:
    """``reproduce --out DIR`` on a directory of another --dataset: ``reference/test`` (no model
    dependency, its params did not name the data) kept the other data's distance, which the
    claims then compared this run's distortions with."""
    from intriguing.experiments import RunStore, run_graph
    from intriguing.experiments.reproduce import build_steps
    from intriguing.experiments.specs import make_spec
    from intriguing.experiments.steps import Workbench

    spec = make_spec("tiny", seed=0, dataset="mnist-5k")
    store = RunStore(tmp_path)
    results = []
    for name, seed in (("first", 1), ("second", 2)):
        bench = Workbench(
            dataset="mnist-5k", data_dir=None, seed=0, _data=_tensors_data(name, seed)
        )
        steps = build_steps(spec, bench, {"train": 40, "test": 40})
        reference = [s for s in steps if s.key == "reference/test"]
        assert reference and not reference[0].deps
        results.append(run_graph(reference, store)["reference/test"])
        fresh = run_graph(reference, RunStore(tmp_path / name))["reference/test"]
        assert results[-1] == fresh  # what this data gives, not what the directory held
    assert results[0] != results[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 5-iteration softmax trained on mnist-5k with seed 0 (in the tests' private cache)."""
    register_model(
        TINY,
        linear_softmax,
        description="softmax, 5 L-BFGS iterations (state-probe tests)",
        train_config=TrainConfig(iterations=5, weight_decay={"out": 1e-4}),
    )
    try:
        js = tmp_path_factory.mktemp("tiny") / "train.json"
        result = CliRunner().invoke(
            cli, ["train", TINY, "--dataset", "mnist-5k", "--json", str(js)]
        )
        assert result.exit_code == 0, result.output
        import json

        yield Path(json.loads(js.read_text())["checkpoint"])
    finally:
        unregister_model(TINY)


def test_eval_of_a_checkpoint_refuses_another_dataset(tiny_checkpoint: Path) -> None:
    """``eval --checkpoint`` of an mnist-5k model without ``--dataset mnist-5k`` printed its
    "train_error" measured on the full MNIST, images it was never trained on."""
    runner = CliRunner()
    _one_line_error(
        runner.invoke(cli, ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "mnist"]),
        "pass --dataset mnist-5k",
    )
    ok = runner.invoke(cli, ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "mnist-5k"])
    assert ok.exit_code == 0, ok.output
    assert "train_error" in ok.output


def test_eval_of_a_checkpoint_without_dataset_uses_its_own(tiny_checkpoint: Path) -> None:
    """No ``--dataset``: its default (mnist) was refused, the message quoting "--dataset mnist",
    an option never given; the checkpoint's own dataset is used (as its seed is)."""
    runner = CliRunner()
    own = runner.invoke(cli, ["eval", "--checkpoint", str(tiny_checkpoint)])
    assert own.exit_code == 0, own.output
    assert "dataset: mnist-5k" in own.stdout and own.stderr.count("NOT match the paper") == 1
    same = runner.invoke(
        cli, ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "mnist-5k"]
    )
    assert own.stdout == same.stdout
    _one_line_error(
        runner.invoke(cli, ["eval", "--checkpoint", str(tiny_checkpoint), "--data-dir", "/x"]),
        "trained on mnist-5k, which reads no folder: --data-dir does nothing",
    )


def test_eval_of_a_checkpoint_refuses_a_seed_it_would_ignore(tiny_checkpoint: Path) -> None:
    """``eval --checkpoint CK --seed 5`` silently evaluated the seed-0 checkpoint."""
    runner = CliRunner()
    base = ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "mnist-5k"]
    _one_line_error(runner.invoke(cli, [*base, "--seed", "5"]), "--seed 5 does not apply")
    same = runner.invoke(cli, [*base, "--seed", "0"])  # the checkpoint's own seed: fine
    assert same.exit_code == 0, same.output


def test_reproduce_refuses_a_directory_holding_another_commands_results(tmp_path: Path) -> None:
    """``reproduce --out DIR`` where DIR holds another command's results.json overwrote it."""
    out = tmp_path / "classes-run"
    out.mkdir()
    foreign = '{"schema": "intriguing.classes/1", "rows": []}\n'
    (out / "results.json").write_text(foreign)
    result = CliRunner().invoke(
        cli, ["reproduce", "--quick", "--dataset", "mnist-5k", "--out", str(out)]
    )
    _one_line_error(result, "holds the results of another command")
    assert (out / "results.json").read_text() == foreign
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # nothing else written


def test_a_cache_entry_without_its_sidecar_says_to_delete_it(tiny_checkpoint: Path) -> None:
    """A cached model whose .json sidecar was deleted: ``train`` told the user to "pass a
    checkpoint written by intriguing" (there is nothing to pass); now: delete it and rerun."""
    sidecar = tiny_checkpoint.with_suffix(".json")
    saved = sidecar.read_bytes()
    sidecar.unlink()
    try:
        result = CliRunner().invoke(cli, ["train", TINY, "--dataset", "mnist-5k"])
        _one_line_error(result, f"delete {tiny_checkpoint} and rerun")
    finally:
        sidecar.write_bytes(saved)


@pytest.mark.parametrize("command", ["recurrent", "advtrain", "classes"])
def test_the_other_run_commands_refuse_a_directory_holding_reproduces_results(
    tmp_path: Path, command: str
) -> None:
    """The same refusal for every command with a run directory: nothing is overwritten."""
    out = tmp_path / "run"
    out.mkdir()
    foreign = '{"schema": "intriguing.reproduce/1"}\n'
    (out / "results.json").write_text(foreign)
    result = CliRunner().invoke(cli, [command, "--out", str(out)])
    _one_line_error(result, "holds the results of another command")
    assert (out / "results.json").read_text() == foreign
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


@pytest.mark.parametrize("kind", ["file", "empty"])
def test_report_names_a_file_or_an_empty_run_dir_for_what_it_is(tmp_path: Path, kind: str) -> None:
    """Before: a file was 'no such run directory', and '' silently meant the current directory."""
    target = tmp_path / "results.txt"
    target.write_text("x")
    arg, words = (str(target), "is a file") if kind == "file" else ("", "RUN_DIR is empty")
    _one_line_error(CliRunner().invoke(cli, ["report", arg]), words)


@pytest.mark.parametrize("factory", ["mynets:soft", "mynets.py:soft"])
def test_eval_of_a_checkpoint_with_a_factory_names_the_mix_up(
    tiny_checkpoint: Path, factory: str
) -> None:
    """It said "unknown model 'mynets:soft'; available: softmax1, ..." about a working factory."""
    result = CliRunner().invoke(cli, ["eval", factory, "--checkpoint", str(tiny_checkpoint)])
    _one_line_error(result, "is a model factory")
    assert "--weights" in result.output and "unknown model" not in result.output
