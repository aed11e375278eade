"""The pool trainer of adversarial training (paper §4.2): configs, the pool, the refill attacks,
the layer-wise split, checkpoints and resumption."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intriguing.attacks.fgm import fgm_l2
from intriguing.errors import CheckpointError, InvalidInputError
from intriguing.models.architectures import sigmoid_mlp
from intriguing.training import TrainConfig
from intriguing.training.adversarial import (
    CHECKPOINT_FORMAT,
    AdvTrainConfig,
    Pool,
    PoolConfig,
    _Run,
    adversarial_train,
    check_box,
    refill_attack,
    split_model,
)
from intriguing.training.checkpoint import load_state

SGD = TrainConfig(optimizer="sgd", lr=0.2, epochs=3, batch_size=50, weight_decay={"fc1": 1e-4})


def blobs(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated classes of 1x4x4 'images' in [0, 1] (class k bright in block k)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.15 * torch.rand(n, 1, 4, 4, generator=g)
    for k in range(3):
        images[labels == k, 0, k, :] += 0.7
    return images.clamp(0, 1), labels


def param(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter ``name`` (``"fc1.weight"``) of ``model``."""
    return model.get_parameter(name)


def small_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(16, 12)),
                ("act1", nn.Sigmoid()),
                ("fc2", nn.Linear(12, 12)),
                ("act2", nn.Sigmoid()),
                ("out", nn.Linear(12, 3)),
            ]
        )
    )


@pytest.fixture(scope="module")
def trained() -> nn.Sequential:
    """A small sigmoid net trained on the blobs (about 0% error)."""
    model = small_mlp()
    adversarial_train(model, *blobs(300), AdvTrainConfig(train=SGD.replace(lr=0.5, epochs=10)))
    return model.eval()


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "changes",
    [
        {"layers": ()},
        {"layers": ("input", "input")},
        {"size": 0},
        {"refresh_fraction": 0.0},
        {"refresh_fraction": 1.5},
        {"refresh_every": 0},
        {"mix": 0.0},
        {"mix": math.nan},
        {"attack": "pgd"},
        {"epsilon": -1.0},
        {"warmup_epochs": -1},
        {"lbfgs_steps": 0},
    ],
)
def test_pool_config_rejects_bad_settings(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        PoolConfig(**changes)  # type: ignore[arg-type]


def test_adv_config_rejects_full_batch_lbfgs_and_bad_dropout() -> None:
    with pytest.raises(InvalidInputError, match="minibatch"):
        AdvTrainConfig(train=TrainConfig(optimizer="lbfgs"))
    with pytest.raises(InvalidInputError, match="dropout"):
        AdvTrainConfig(train=SGD, dropout={"act1": 1.0})
    with pytest.raises(InvalidInputError, match="frozen"):
        AdvTrainConfig(train=SGD.replace(frozen=("fc1",)))


def test_config_round_trips_through_dict() -> None:
    config = AdvTrainConfig(
        train=SGD, dropout={"act1": 0.2}, pool=PoolConfig(layers=("act1", "act2"), size=7)
    )
    assert AdvTrainConfig.from_dict(config.to_dict()) == config
    assert AdvTrainConfig.from_dict(AdvTrainConfig(train=SGD).to_dict()).pool is None
    with pytest.raises(InvalidInputError, match="unknown"):
        AdvTrainConfig.from_dict({**config.to_dict(), "extra": 1})
    data = config.to_dict()
    data["pool"]["bogus"] = 1
    with pytest.raises(InvalidInputError, match="PoolConfig"):
        AdvTrainConfig.from_dict(data)


def test_refresh_count_is_the_fraction_of_the_size() -> None:
    assert PoolConfig(size=5000, refresh_fraction=0.02).refresh_count == 100
    assert PoolConfig(size=10, refresh_fraction=0.01).refresh_count == 1


# ----------------------------------------------------------------------------- split and box
def test_split_model_composes_to_the_model() -> None:
    model = sigmoid_mlp(10, 8).eval()
    x = torch.rand(5, 1, 28, 28)
    for layer in ("input", "flatten", "fc1", "act1", "act2"):
        below, above = split_model(model, layer)
        assert torch.allclose(above(below(x)), model(x), atol=1e-6)
    below, _ = split_model(model, "act1")
    assert below(x).shape == (5, 10)


def test_split_model_refuses_bad_layers() -> None:
    with pytest.raises(InvalidInputError, match="not a child"):
        split_model(sigmoid_mlp(4, 4), "act9")
    with pytest.raises(InvalidInputError, match="last layer"):
        split_model(sigmoid_mlp(4, 4), "out")

    class Wrapped(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(InvalidInputError, match=r"nn\.Sequential"):
        split_model(Wrapped(), "act1")
    below, wrapped = split_model(Wrapped(), "input")  # the input space works for any model
    assert isinstance(below, nn.Identity) and isinstance(wrapped, Wrapped)


def test_check_box_refuses_unbounded_outputs() -> None:
    check_box(torch.tensor([[0.0, 1.0, 0.5]]), "act1")
    with pytest.raises(InvalidInputError, match="relu"):
        check_box(torch.tensor([[0.0, 2.5]]), "relu")
    with pytest.raises(InvalidInputError, match="NaN"):
        check_box(torch.tensor([[math.nan]]), "act1")


# ----------------------------------------------------------------------------- refill attacks
def test_fgm_l2_matches_the_hand_computed_step() -> None:
    """Linear model: grad_x CE = W^T (softmax(Wx+b) - onehot(y)); the step is eps*sqrt(D)*g/|g|."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 3).eval()
    x = torch.full((4, 6), 0.5)
    y = torch.tensor([0, 1, 2, 0])
    eps = 0.01
    p = torch.softmax(lin(x), dim=1)
    g = (p - F.one_hot(y, 3).float()) @ lin.weight
    expected = x + eps * math.sqrt(6) * g / g.norm(dim=1, keepdim=True)
    got = fgm_l2(lin, x, y, eps)
    assert torch.allclose(got, expected, atol=1e-6)
    rms = (got - x).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.full((4,), eps), atol=1e-6)  # the step's RMS is epsilon


def test_fgm_l2_stays_in_the_box_and_raises_the_loss() -> None:
    model = small_mlp().eval()
    x, y = blobs(40)
    adv = fgm_l2(model, x, y, 0.3)
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


@pytest.mark.parametrize("attack", ["lbfgs", "fgm"])
def test_refill_attack_works_on_a_hidden_layer(attack: str, trained: nn.Sequential) -> None:
    """The attack accepts (N, D) hidden outputs in [0, 1] and attacks the sub-network above."""
    x, y = blobs(30)
    below, above = split_model(trained, "act1")
    with torch.no_grad():
        h = below(x)
    adv, success = refill_attack(
        PoolConfig(attack=attack, epsilon=0.5, lbfgs_steps=10, lbfgs_iterations=50)
    )(above.eval(), h, y)
    assert adv.shape == h.shape and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert torch.equal(above(adv).argmax(1) != y, success)
    if attack == "lbfgs":  # the minimum-distortion attack fools (nearly) every example
        assert success.float().mean() > 0.9


# ----------------------------------------------------------------------------- the pool
def test_pool_appends_then_replaces_random_distinct_entries() -> None:
    g = torch.Generator().manual_seed(0)
    pool = Pool("input", 5, torch.zeros(0, dtype=torch.long), torch.zeros(0))
    pool.insert(torch.arange(3), torch.ones(3, 2), g)
    assert len(pool) == 3
    pool.insert(torch.arange(3, 6), 2 * torch.ones(3, 2), g)  # 2 appended, 1 replaces one
    assert len(pool) == 5
    kept = pool.source.tolist()
    assert len(set(kept)) == 5 and set(kept) <= set(range(6)) and 5 in kept
    pool.insert(torch.arange(10, 14), 3 * torch.ones(4, 2), g)  # 4 distinct slots replaced
    assert sorted(s for s in pool.source.tolist() if s >= 10) == [10, 11, 12, 13]
    assert int((pool.delta[:, 0] == 3).sum()) == 4
    src, delta = pool.sample(7, g)
    assert src.shape == (7,) and delta.shape == (7, 2)


# ----------------------------------------------------------------------------- training
def test_hidden_pool_trains_only_the_layers_above() -> None:
    x, y = blobs(100)
    model = small_mlp()
    config = AdvTrainConfig(
        train=SGD, pool=PoolConfig(layers=("act2",), size=20, refresh_fraction=0.5)
    )
    run = _Run(model, x, y, config)
    run.refresh({"new": 0.0, "success": 0.0, "distortion": 0.0})
    assert len(run.pools["act2"]) == 10
    loss, count = run.pool_loss()
    assert count == 25  # mix 0.5 of batch 50
    loss.backward()
    assert param(model, "fc1.weight").grad is None and param(model, "fc2.weight").grad is None
    out_grad = param(model, "out.weight").grad
    assert out_grad is not None and out_grad.abs().sum() > 0


def test_input_pool_examples_are_the_stored_adversarials(trained: nn.Sequential) -> None:
    x, y = blobs(60)
    model = copy.deepcopy(trained)
    config = AdvTrainConfig(train=SGD, pool=PoolConfig(size=10, refresh_fraction=1.0))
    run = _Run(model, x, y, config)
    run.refresh({"new": 0.0, "success": 0.0, "distortion": 0.0})
    pool = run.pools["input"]
    adv = x[pool.source] + pool.delta
    model.eval()
    with torch.no_grad():  # the stored examples are the attack's: misclassified
        assert float((model(adv).argmax(1) != y[pool.source]).float().mean()) > 0.9
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6


def test_training_learns_and_reports_the_pool() -> None:
    x, y = blobs(300)
    tx, ty = blobs(150, seed=1)
    config = AdvTrainConfig(
        train=SGD.replace(epochs=10, lr=0.5),
        pool=PoolConfig(layers=("input", "act1"), size=40, refresh_every=2, refresh_fraction=0.25),
    )
    metrics = adversarial_train(small_mlp(), x, y, config, test_images=tx, test_labels=ty)
    assert metrics.test_error is not None and metrics.test_error < 0.1
    assert metrics.steps == 10 * 6
    first, last = metrics.history[0], metrics.history[-1]
    assert first["refreshes"] == 0 and first["pool_success"] is None  # warm-up epoch: clean
    assert last["pool_size"] == {"input": 40, "act1": 40}
    assert last["refreshes"] == 3 and 0 <= last["pool_success"] <= 1


def test_dropout_keeps_the_architecture_and_changes_training() -> None:
    x, y = blobs(200)
    plain, dropped = small_mlp(), small_mlp()
    keys = set(plain.state_dict())
    adversarial_train(plain, x, y, AdvTrainConfig(train=SGD))
    adversarial_train(dropped, x, y, AdvTrainConfig(train=SGD, dropout={"act1": 0.5}))
    assert set(dropped.state_dict()) == keys
    assert not torch.equal(param(plain, "fc1.weight"), param(dropped, "fc1.weight"))
    assert not any(m._forward_hooks for m in dropped.modules())  # hooks removed
    with pytest.raises(InvalidInputError, match="act7"):
        adversarial_train(small_mlp(), x, y, AdvTrainConfig(train=SGD, dropout={"act7": 0.1}))


@pytest.mark.parametrize(
    "pool,dropout",
    [(PoolConfig(layers=("input", "act1"), size=30, refresh_every=3), {}), (None, {"act1": 0.3})],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, pool: PoolConfig | None, dropout: dict[str, float]
) -> None:
    x, y = blobs(200)
    config = AdvTrainConfig(train=SGD, pool=pool, dropout=dropout)
    whole = small_mlp()
    expected = adversarial_train(whole, x, y, config)
    path = tmp_path / "run.safetensors"
    adversarial_train(small_mlp(), x, y, config, checkpoint=path, stop_after=1)
    adversarial_train(small_mlp(seed=5), x, y, config, checkpoint=path, stop_after=1)
    resumed_model = small_mlp(seed=9)  # different initial weights: all must come from the file
    resumed = adversarial_train(resumed_model, x, y, config, checkpoint=path)
    assert resumed.resumed_from == 2
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    strip = ("time_s", "cpu_s")
    assert [{k: v for k, v in h.items() if k not in strip} for h in resumed.history] == [
        {k: v for k, v in h.items() if k not in strip} for h in expected.history
    ]
    _, meta = load_state(path, CHECKPOINT_FORMAT)
    assert meta["epoch"] == 3


def test_checkpoint_errors(tmp_path: Path) -> None:
    x, y = blobs(100)
    config = AdvTrainConfig(train=SGD.replace(epochs=1))
    path = tmp_path / "run.safetensors"
    adversarial_train(small_mlp(), x, y, config, checkpoint=path)
    with pytest.raises(CheckpointError, match="another config"):
        adversarial_train(small_mlp(), x, y, config.replace(dropout={"act1": 0.1}), checkpoint=path)
    with pytest.raises(CheckpointError, match="other training data"):
        adversarial_train(small_mlp(), x[:50], y[:50], config, checkpoint=path)
    plain = AdvTrainConfig(train=SGD.replace(epochs=1, weight_decay={}))
    other = tmp_path / "other.safetensors"
    adversarial_train(small_mlp(), x, y, plain, checkpoint=other)
    linear = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("out", nn.Linear(16, 3))]))
    with pytest.raises(CheckpointError, match="does not fit"):
        adversarial_train(linear, x, y, plain, checkpoint=other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        adversarial_train(small_mlp(), x, y, config, checkpoint=broken)


def test_bad_training_data_is_refused() -> None:
    x, y = blobs(20)
    config = AdvTrainConfig(train=SGD)
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        adversarial_train(small_mlp(), x * 3, y, config)
    nan = x.clone()
    nan[0, 0, 0, 0] = math.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        adversarial_train(small_mlp(), nan, y, config)
    with pytest.raises(InvalidInputError, match="both"):
        adversarial_train(small_mlp(), x, y, config, test_images=x)
    with pytest.raises(InvalidInputError, match="labels"):
        adversarial_train(small_mlp(), x, y[:5], config)


def test_hidden_pool_on_an_unbounded_layer_is_refused() -> None:
    x, y = blobs(60)
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(16, 8)),
                ("relu", nn.ReLU()),
                ("out", nn.Linear(8, 3)),
            ]
        )
    )
    with torch.no_grad():
        param(model, "fc1.bias").fill_(3.0)  # ReLU outputs well above 1
    config = AdvTrainConfig(
        train=SGD.replace(weight_decay={}), pool=PoolConfig(layers=("relu",), warmup_epochs=0)
    )
    with pytest.raises(InvalidInputError, match="'relu' outputs"):
        adversarial_train(model, x, y, config)
