"""load_model / train_model and the checkpoint cache, on the offline mnist-5k subset with tiny configs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import intriguing
from intriguing.errors import CheckpointError, UnknownModelError
from intriguing.models import linear_softmax, register_model, sigmoid_mlp, unregister_model
from intriguing.paths import models_dir
from intriguing.training import TrainConfig, error_rate, load_checkpoint, load_model, train_model
from intriguing.training import api as api_module

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = "test-tiny-softmax"
TINY_P1 = "test-tiny-mlp-p1"


@pytest.fixture(scope="module", autouse=True)
def tiny_models() -> Iterator[None]:
    register_model(
        TINY,
        linear_softmax,
        description="softmax, 5 L-BFGS iterations (tests)",
        train_config=TrainConfig(iterations=5, weight_decay={"out": 1e-4}),
    )
    register_model(
        TINY_P1,
        lambda: sigmoid_mlp(8, 8),
        description="8-8-10 sigmoid net on P1, 1 Adam epoch (tests)",
        train_config=TrainConfig(optimizer="adam", epochs=1, lr=1e-2, batch_size=100),
        train_split="p1",
        hidden_layer="act2",
    )
    yield
    unregister_model(TINY)
    unregister_model(TINY_P1)


@pytest.fixture(scope="module")
def trained() -> api_module.TrainedModel:
    return train_model(TINY, dataset="mnist-5k")


def test_load_model_returns_a_trained_model_in_eval_mode(trained: api_module.TrainedModel) -> None:
    model = load_model(TINY, dataset="mnist-5k")
    assert not model.training
    images = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(images), trained.model(images))
    assert intriguing.load_model is load_model


def test_first_call_trains_and_writes_a_checkpoint(trained: api_module.TrainedModel) -> None:
    assert not trained.cached
    assert trained.path.parent == models_dir()
    assert trained.path.suffix == ".safetensors" and trained.path.exists()
    assert trained.path.with_suffix(".json").exists()


def test_sidecar_records_everything(trained: api_module.TrainedModel) -> None:
    from intriguing.data import load_mnist

    sidecar = json.loads(trained.path.with_suffix(".json").read_text())
    data = load_mnist(dataset="mnist-5k")
    assert sidecar["model"] == TINY
    assert sidecar["seed"] == 0
    assert sidecar["dataset"] == data.identity
    assert TrainConfig.from_dict(sidecar["config"]) == TrainConfig(
        iterations=5, weight_decay={"out": 1e-4}
    )
    assert set(sidecar["versions"]) >= {"torch", "numpy", "safetensors", "python"}
    assert sidecar["created"].endswith("+00:00")
    test_error = error_rate(trained.model, data.test_images, data.test_labels)
    assert sidecar["metrics"]["test_error"] == pytest.approx(test_error)
    assert 0.0 <= sidecar["metrics"]["train_error"] < 0.5


def test_second_call_reuses_the_checkpoint(
    trained: api_module.TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training should not run for a cached model")

    monkeypatch.setattr(api_module, "train", no_training)
    again = train_model(TINY, dataset="mnist-5k")
    assert again.cached and again.path == trained.path
    state, cached_state = trained.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(state[k], cached_state[k]) for k in state)


def test_same_seed_gives_identical_weights_and_new_seed_a_new_checkpoint(
    trained: api_module.TrainedModel,
) -> None:
    retrained = train_model(TINY, dataset="mnist-5k", retrain=True)
    assert not retrained.cached and retrained.path == trained.path
    a, b = trained.model.state_dict(), retrained.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_model(TINY, dataset="mnist-5k", seed=1)
    assert other.path != trained.path
    assert not torch.equal(other.model.out.weight, trained.model.out.weight)


def test_model_trained_on_p1_records_its_split() -> None:
    result = train_model(TINY_P1, dataset="mnist-5k")
    assert result.sidecar["train_split"] == "p1"
    assert result.sidecar["metrics"]["steps"] == 20  # 2000 P1 images / batch 100


def test_load_checkpoint_from_an_explicit_path(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    for path in (trained.path, trained.path.with_suffix(".json")):
        loaded = load_checkpoint(path)
        assert loaded.name == TINY
        assert torch.equal(loaded.model.out.weight, trained.model.out.weight)
        assert not loaded.model.training


def _copy_checkpoint(trained: api_module.TrainedModel, directory: Path) -> Path:
    weights = directory / trained.path.name
    weights.write_bytes(trained.path.read_bytes())
    weights.with_suffix(".json").write_bytes(trained.path.with_suffix(".json").read_bytes())
    return weights


def test_truncated_weights_raise_checkpoint_error(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    weights = _copy_checkpoint(trained, tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checksum") as info:
        load_checkpoint(weights)
    assert "\n" not in str(info.value)


def test_unreadable_weights_with_a_matching_checksum_raise_checkpoint_error(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    from intriguing.training.checkpoint import file_sha256

    weights = _copy_checkpoint(trained, tmp_path)
    weights.write_bytes(b"\x00" * 64)
    sidecar_path = weights.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["weights_sha256"] = file_sha256(weights)
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(weights)


def test_flipped_byte_is_detected(trained: api_module.TrainedModel, tmp_path: Path) -> None:
    weights = _copy_checkpoint(trained, tmp_path)
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(weights)


def test_corrupt_sidecar_raises_checkpoint_error(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    weights = _copy_checkpoint(trained, tmp_path)
    weights.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt sidecar"):
        load_checkpoint(weights)


def test_missing_files_raise_checkpoint_error(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    weights = _copy_checkpoint(trained, tmp_path)
    weights.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="sidecar not found"):
        load_checkpoint(weights)


def test_weights_of_another_architecture_raise_checkpoint_error(
    trained: api_module.TrainedModel, tmp_path: Path
) -> None:
    weights = _copy_checkpoint(trained, tmp_path)
    sidecar_path = weights.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["model"] = TINY_P1
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="architecture is not"):
        load_checkpoint(weights)
    del sidecar["architecture"], sidecar["key"]  # a hand-made sidecar: the weights do not fit
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_checkpoint(weights)


def test_corrupt_cache_entry_fails_clearly_and_retrain_repairs_it(
    trained: api_module.TrainedModel,
) -> None:
    original = trained.path.read_bytes()
    try:
        trained.path.write_bytes(original[: len(original) // 2])
        with pytest.raises(CheckpointError, match="retrain"):
            load_model(TINY, dataset="mnist-5k")
        repaired = train_model(TINY, dataset="mnist-5k", retrain=True)
        assert torch.equal(
            load_model(TINY, dataset="mnist-5k").out.weight, trained.model.out.weight
        )
        assert repaired.path == trained.path
    finally:
        if trained.path.stat().st_size < len(original):
            trained.path.write_bytes(original)


def test_unknown_model_in_sidecar(trained: api_module.TrainedModel, tmp_path: Path) -> None:
    weights = _copy_checkpoint(trained, tmp_path)
    sidecar_path = weights.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["model"] = "no-such-model"
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(UnknownModelError):
        load_checkpoint(weights)


def test_unknown_model_name() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'sofmax1'; did you mean 'softmax1'"):
        load_model("sofmax1", dataset="mnist-5k")


def test_no_temporary_files_are_left_behind(trained: api_module.TrainedModel) -> None:
    leftovers = [p for p in models_dir().iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_checkpoint_is_not_a_pickle(trained: api_module.TrainedModel) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(trained.path))
    assert set(tensors) == {"out.weight", "out.bias"}
    assert isinstance(nn.Module, type)


def test_concurrent_requests_train_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    calls: list[int] = []
    real_train = api_module.train

    def counting_train(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(api_module, "train", counting_train)
    results: list[api_module.TrainedModel] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(train_model(TINY, dataset="mnist-5k", seed=5))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.cached for r in results) == [False, True]


def test_full_mnist_checkpoint_loads_without_the_data(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intriguing.data import load_mnist
    from intriguing.data.mnist import published_identity

    assert load_mnist(mnist_dir).identity == published_identity()
    first = train_model(TINY, dataset="mnist", data_dir=mnist_dir)
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("INTRIGUING_DATA_DIR", str(empty))
    monkeypatch.setenv("INTRIGUING_NO_DOWNLOAD", "1")
    again = train_model(TINY, dataset="mnist")
    assert again.cached and again.path == first.path


def test_explicit_data_dir_without_the_files_is_an_error_even_when_cached(
    mnist_dir: Path, tmp_path: Path
) -> None:
    from intriguing.data import DataError

    train_model(TINY, dataset="mnist", data_dir=mnist_dir)
    with pytest.raises(DataError, match="--data-dir"):
        train_model(TINY, dataset="mnist", data_dir=tmp_path / "missing")
