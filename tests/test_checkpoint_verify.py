"""Issue 16, items 2, 3 and 6: the checkpoint cache is verified on every load.

Each test reproduces a case of the issue that was silently wrong (or a traceback) before: another
model's checkpoint copied over an entry, NaN weights with an updated hash, a non-integer seed,
metrics copied from the sidecar, an unverified explicit --data-dir, a weights hash that depended on
the file's metadata order, and training whose thread count depended on the command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.errors import CheckpointError, DataError
from intriguing.models import linear_softmax, register_model, unregister_model
from intriguing.training import TrainConfig, load_checkpoint, train_model
from intriguing.training import api as api_module
from intriguing.training.checkpoint import file_sha256, tensors_sha256
from intriguing.training.trainer import DEFAULT_THREADS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

A, B = "test-verify-a", "test-verify-b"


@pytest.fixture(scope="module", autouse=True)
def two_models() -> Iterator[None]:
    for name, decay in ((A, 1e-4), (B, 1e-2)):
        register_model(
            name,
            linear_softmax,
            description="softmax, 3 L-BFGS iterations (tests)",
            train_config=TrainConfig(iterations=3, weight_decay={"out": decay}),
        )
    yield
    unregister_model(A)
    unregister_model(B)


@pytest.fixture()
def entry_a() -> api_module.TrainedModel:
    return train_model(A, dataset="mnist-5k", retrain=True)


def _write_sidecar(path: Path, **changes: object) -> None:
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.update(changes)
    path.with_suffix(".json").write_text(json.dumps(sidecar))


def test_another_models_checkpoint_copied_over_an_entry_is_refused(
    entry_a: api_module.TrainedModel,
) -> None:
    b = train_model(B, dataset="mnist-5k")
    shutil.copyfile(b.path, entry_a.path)
    shutil.copyfile(b.path.with_suffix(".json"), entry_a.path.with_suffix(".json"))
    with pytest.raises(CheckpointError, match="does not match this cache entry") as info:
        train_model(A, dataset="mnist-5k")
    message = str(info.value)
    assert entry_a.path.name in message and "delete" in message and "\n" not in message


def test_the_cli_turns_a_replaced_entry_into_one_error_line(
    entry_a: api_module.TrainedModel,
) -> None:
    _write_sidecar(entry_a.path, config={**entry_a.sidecar["config"], "iterations": 4})
    result = CliRunner().invoke(cli, ["eval", A, "--dataset", "mnist-5k"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'config'" in errors[0]
    assert "Traceback" not in result.output


def _poison(path: Path) -> None:
    """NaN weights, with the sidecar's hash updated so that only the finiteness check can tell."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors["out.weight"][0, 0] = float("nan")
    save_file(tensors, str(path))
    _write_sidecar(path, weights_sha256=tensors_sha256(tensors))


def test_nan_weights_are_refused_by_every_loader(entry_a: api_module.TrainedModel) -> None:
    _poison(entry_a.path)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        train_model(A, dataset="mnist-5k")
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_checkpoint(entry_a.path)


@pytest.mark.parametrize("seed", ["0", 1.5, True, None])
def test_non_integer_seed_in_a_sidecar_is_a_clean_error(
    entry_a: api_module.TrainedModel, seed: object
) -> None:
    _write_sidecar(entry_a.path, seed=seed)
    with pytest.raises(CheckpointError, match="not an integer"):
        load_checkpoint(entry_a.path)


@pytest.mark.parametrize(("name", "value"), [("wall_time_s", "abc"), ("test_error", -0.1)])
def test_a_sidecar_metric_that_is_not_a_number_is_refused(
    entry_a: api_module.TrainedModel, name: str, value: object
) -> None:
    """``train`` printed an edited ``wall_time_s: abc`` and wrote it to --json (a probe)."""
    metrics = dict(load_checkpoint(entry_a.path).sidecar["metrics"])
    metrics[name] = value
    _write_sidecar(entry_a.path, metrics=metrics)
    with pytest.raises(CheckpointError, match=f"sidecar metric '{name}' is .*not a number >= 0"):
        load_checkpoint(entry_a.path)


def test_a_sidecar_seed_edited_away_from_its_config_is_refused(
    entry_a: api_module.TrainedModel,
) -> None:
    """The edited seed was accepted, then used to refuse --seed with the true one."""
    true_seed = load_checkpoint(entry_a.path).sidecar["config"]["seed"]
    _write_sidecar(entry_a.path, seed=true_seed + 5)
    with pytest.raises(CheckpointError, match="differs from its config's seed"):
        load_checkpoint(entry_a.path)


def test_train_shows_measured_errors_not_the_sidecars(entry_a: api_module.TrainedModel) -> None:
    measured = entry_a.sidecar["metrics"]["test_error"]
    _write_sidecar(entry_a.path, metrics={**entry_a.sidecar["metrics"], "test_error": 0.5})
    out = Path("train.json")
    with CliRunner().isolated_filesystem():
        result = CliRunner().invoke(cli, ["train", A, "--dataset", "mnist-5k", "--json", str(out)])
        assert result.exit_code == 0, result.output
        shown = json.loads(out.read_text())
    assert shown["cached"] is True
    assert shown["test_error"] == pytest.approx(measured) and shown["test_error"] != 0.5


def test_weights_hash_is_over_the_tensors_not_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.float64)}
    first, second = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    save_file(tensors, str(first), metadata={"x": "1", "y": "2"})
    save_file(dict(reversed(tensors.items())), str(second), metadata={"y": "2", "x": "1", "z": ""})
    assert file_sha256(first) != file_sha256(second)
    assert tensors_sha256(tensors) == tensors_sha256(dict(reversed(tensors.items())))
    changed = {**tensors, "b": torch.tensor([0.0, 1.0, 2.5])}
    assert tensors_sha256(changed) != tensors_sha256(tensors)
    as_float32 = {**tensors, "a": torch.ones(2, 2)}
    assert tensors_sha256(as_float32) != tensors_sha256(tensors)  # dtype is part of the hash


def test_retraining_gives_the_same_fingerprint(entry_a: api_module.TrainedModel) -> None:
    again = train_model(A, dataset="mnist-5k", retrain=True)
    assert again.sidecar["weights_sha256"] == entry_a.sidecar["weights_sha256"]
    assert (
        train_model(A, dataset="mnist-5k").sidecar["weights_sha256"]
        == (entry_a.sidecar["weights_sha256"])
    )


def test_sidecars_with_a_file_hash_still_load(entry_a: api_module.TrainedModel) -> None:
    """Entries written before the tensor hash keep loading when their file hash verifies."""
    _write_sidecar(entry_a.path, weights_sha256=file_sha256(entry_a.path))
    loaded = train_model(A, dataset="mnist-5k")
    assert loaded.cached
    assert loaded.sidecar["weights_sha256"] == entry_a.sidecar["weights_sha256"]  # the tensor hash


def test_training_uses_the_default_thread_count_whatever_the_caller_set() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trained = train_model(A, dataset="mnist-5k", retrain=True)
        assert trained.sidecar["metrics"]["torch_threads"] == DEFAULT_THREADS
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)


def test_every_command_runs_with_the_default_thread_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert CliRunner().invoke(cli, ["zoo", "--json"]).exit_code == 0
        assert torch.get_num_threads() == DEFAULT_THREADS
    finally:
        torch.set_num_threads(before)


def test_an_explicit_data_dir_is_verified_even_when_the_model_is_cached(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "mnist"
    bad.mkdir()
    for source in sorted(mnist_dir.iterdir()):
        if source.name.endswith(("idx3-ubyte.gz", "idx1-ubyte.gz", "idx3-ubyte", "idx1-ubyte")):
            (bad / source.name).symlink_to(source)
    labels = next(bad.glob("t10k-labels*"))
    labels.unlink()
    labels.write_bytes((mnist_dir / labels.name).read_bytes()[:-7])  # truncated
    existing = tmp_path / "cached.safetensors"
    existing.touch()
    cached = api_module.TrainedModel(linear_softmax(), A, existing, {}, cached=True)
    monkeypatch.setattr(api_module, "checkpoint_paths", lambda *a: (existing, existing))
    monkeypatch.setattr(api_module, "_load_cached", lambda *a: cached)  # "the model is cached"
    assert train_model(A, dataset="mnist").cached  # the set-up: cached, nothing read
    with pytest.raises(DataError):
        train_model(A, dataset="mnist", data_dir=bad)
    result = CliRunner().invoke(cli, ["train", A, "--data-dir", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_weights_do_not_depend_on_the_callers_thread_count() -> None:
    """Issue 16, item 6: `train` (2 threads before) and `reproduce` (1) wrote one key differently."""
    before = torch.get_num_threads()
    try:
        hashes = []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            hashes.append(
                train_model(A, dataset="mnist-5k", retrain=True).sidecar["weights_sha256"]
            )
        assert hashes[0] == hashes[1]
    finally:
        torch.set_num_threads(before)


def test_training_states_are_verified_on_load(tmp_path: Path) -> None:
    """The resumable adversarial-training state: hash checked, NaN/Inf refused both ways."""
    from safetensors.torch import load_file, save_file

    from intriguing.training.checkpoint import load_state, save_state

    path = tmp_path / "state.safetensors"
    save_state(path, {"w": torch.ones(3)}, {"format": 1, "step": 4})
    tensors, meta = load_state(path, 1)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta == {"format": 1, "step": 4}
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        save_state(path, {"w": torch.tensor([float("inf")])}, {"format": 1})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({"w": torch.full((3,), 2.0)}, str(path), metadata=metadata)  # replaced tensor
    with pytest.raises(CheckpointError, match="recorded hash"):
        load_state(path, 1)
    save_file({"w": torch.tensor([float("nan")])}, str(path), metadata={"state": '{"format": 1}'})
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_state(path, 1)
    assert load_file(str(path))["w"].isnan().all()


def test_an_edited_sidecar_config_is_refused_on_an_explicit_path(
    entry_a: api_module.TrainedModel,
) -> None:
    _write_sidecar(entry_a.path, config={**entry_a.sidecar["config"], "iterations": 99})
    with pytest.raises(CheckpointError, match="do not give its key"):
        load_checkpoint(entry_a.path)


def test_a_results_file_given_as_a_checkpoint_is_not_to_be_deleted(tmp_path: Path) -> None:
    """``eval results.json`` (eval's own --json output) said "sidecar lacks [...]; delete the
    checkpoint and retrain": the user's results file is no checkpoint to delete."""
    results = tmp_path / "e1.json"
    results.write_text(json.dumps({"model": "softmax1", "test_error": 0.07}))
    with pytest.raises(CheckpointError, match=r"is not a checkpoint's sidecar .*intriguing train"):
        load_checkpoint(results)
