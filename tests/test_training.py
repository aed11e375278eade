"""Training: config validation, the weight-decay objective, L-BFGS / Adam, freezing, pre-training."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intriguing.errors import InvalidInputError
from intriguing.models import build_model
from intriguing.training import SparseAutoencoderConfig, TrainConfig, error_rate, train
from intriguing.training.autoencoder import kl_sparsity, sparse_autoencoder_loss
from intriguing.training.trainer import decay_terms, weight_penalty


def _blobs(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] whose class (0..9) is a bright 4-pixel patch at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = 0.2 * torch.rand(n, 1, 28, 28, generator=g)
    for i, label in enumerate(labels.tolist()):
        row, col = 2 + 2 * label, 3 + 2 * label
        images[i, 0, row : row + 2, col : col + 2] = 1.0
    return images, labels.to(torch.int64)


def _softmax() -> nn.Sequential:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), out=nn.Linear(784, 10)))


# ---------------------------------------------------------------- config


def test_config_roundtrip_through_dict() -> None:
    config = TrainConfig(
        optimizer="adam",
        epochs=3,
        weight_decay={"fc1": 1e-5},
        frozen=("fc1",),
        pretrain=SparseAutoencoderConfig(epochs=2),
        seed=4,
    )
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"iterations": 0}, "iterations must be positive"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"weight_decay": {"out": -1.0}}, "weight_decay"),
        ({"decay_divisor": "3"}, "decay_divisor"),
        ({"schedule": "step"}, "schedule"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(InvalidInputError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"optimiser": "lbfgs"})


def test_sparse_autoencoder_config_validation() -> None:
    with pytest.raises(InvalidInputError, match="sparsity"):
        SparseAutoencoderConfig(sparsity=1.5)


# ---------------------------------------------------------------- weight decay


@pytest.mark.parametrize(("divisor", "k"), [("2", 2.0), ("1", 1.0), ("units", 100.0)])
def test_weight_penalty_matches_hand_computation(divisor: str, k: float) -> None:
    model = build_model("N100-100-10")
    config = TrainConfig(weight_decay={"fc1": 1e-3, "out": 0.5}, decay_divisor=divisor)
    penalty = weight_penalty(decay_terms(model, config))
    k_out = 10.0 if divisor == "units" else k
    expected = (
        1e-3 * model.fc1.weight.pow(2).sum() / k + 0.5 * model.out.weight.pow(2).sum() / k_out
    )
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weight_decay_on_a_missing_layer_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="'fc9'"):
        decay_terms(_softmax(), TrainConfig(weight_decay={"fc9": 1.0}))


def test_lbfgs_reaches_the_regularised_optimum() -> None:
    """At the optimum of mean CE + lambda/2 ||W||^2 the gradient vanishes (oracle: KKT)."""
    images, labels = _blobs()
    torch.manual_seed(0)
    model = _softmax()
    config = TrainConfig(optimizer="lbfgs", iterations=300, weight_decay={"out": 0.1})
    metrics = train(model, images, labels, config)
    loss = F.cross_entropy(model(images), labels) + 0.05 * model.out.weight.pow(2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert max(g.abs().max().item() for g in grads) < 1e-4
    assert metrics.loss == pytest.approx(loss.item(), rel=1e-4)
    assert metrics.train_error == 0.0
    assert not model.training


def test_stronger_decay_gives_smaller_weights() -> None:
    images, labels = _blobs()
    norms = []
    for lam in (1e-4, 1.0):
        torch.manual_seed(0)
        model = _softmax()
        train(model, images, labels, TrainConfig(iterations=100, weight_decay={"out": lam}))
        norms.append(model.out.weight.norm().item())
    assert norms[1] < 0.5 * norms[0]


def test_adam_learns_and_records_history() -> None:
    images, labels = _blobs()
    torch.manual_seed(0)
    model = _softmax()
    config = TrainConfig(optimizer="adam", epochs=5, lr=1e-2, batch_size=20, schedule="constant")
    metrics = train(model, images, labels, config)
    assert metrics.train_error < 0.05
    assert metrics.steps == 5 * 10
    assert [row["epoch"] for row in metrics.history] == [1, 2, 3, 4, 5]
    assert metrics.history[-1]["loss"] < metrics.history[0]["loss"]


def test_sgd_with_dropout_trains_the_conv_net() -> None:
    images, labels = _blobs(100)
    torch.manual_seed(0)
    model = build_model("Conv")
    metrics = train(
        model,
        images,
        labels,
        TrainConfig(optimizer="sgd", epochs=5, lr=0.05, batch_size=10, schedule="constant"),
    )
    assert metrics.train_error < 0.2
    assert math.isfinite(metrics.loss)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_training_is_deterministic_given_the_seed(optimizer: str) -> None:
    images, labels = _blobs(100)
    states = []
    for _ in range(2):
        torch.manual_seed(1)
        model = build_model("Conv")
        config = TrainConfig(
            optimizer=optimizer,
            iterations=5,
            epochs=1,
            lr=1e-3 if optimizer == "adam" else 1.0,
            batch_size=20,
            seed=7,
        )
        torch.manual_seed(12345 + len(states))  # unrelated global RNG use must not matter
        train(model, images, labels, config)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_frozen_layers_do_not_change() -> None:
    images, labels = _blobs(100)
    torch.manual_seed(0)
    model = build_model("AE400-10")
    before = model.fc1.weight.clone()
    config = TrainConfig(iterations=10, frozen=("fc1",), weight_decay={"out": 1e-6})
    train(model, images, labels, config)
    assert torch.equal(model.fc1.weight, before)
    assert error_rate(model, images, labels) < 0.5


def test_frozen_prefix_gives_the_same_result_as_full_forward() -> None:
    """Caching the frozen encoder's output must not change the optimisation (oracle: no caching)."""
    images, labels = _blobs(100)
    config = TrainConfig(iterations=15, frozen=("fc1",), weight_decay={"out": 1e-3})
    torch.manual_seed(0)
    cached = build_model("AE400-10")
    train(cached, images, labels, config)
    torch.manual_seed(0)
    plain = build_model("AE400-10")
    plain.fc1.requires_grad_(False)  # optimise the output layer by hand through the full model
    opt = torch.optim.LBFGS(
        plain.out.parameters(),
        max_iter=15,
        max_eval=15 * 25,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
        history_size=20,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(plain(images), labels) + 1e-3 / 2 * plain.out.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(cached.out.weight, plain.out.weight, atol=1e-4)


def test_pretraining_trains_the_encoder_then_freezes_it() -> None:
    images, labels = _blobs(100)
    torch.manual_seed(0)
    model = build_model("AE400-10")
    before = model.fc1.weight.clone()
    config = TrainConfig(
        iterations=5,
        frozen=("fc1",),
        pretrain=SparseAutoencoderConfig(layer="fc1", epochs=2, batch_size=50),
    )
    train(model, images, labels, config)
    assert not torch.equal(model.fc1.weight, before)
    assert not model.fc1.weight.requires_grad


def test_kl_sparsity_matches_hand_value() -> None:
    rho_hat = torch.tensor([0.1, 0.5])
    expected = 0.1 * math.log(0.1 / 0.5) + 0.9 * math.log(0.9 / 0.5)
    assert kl_sparsity(0.1, rho_hat).item() == pytest.approx(expected, rel=1e-6)


def test_sparse_autoencoder_loss_terms() -> None:
    encoder, decoder = nn.Linear(4, 3), nn.Linear(3, 4)
    for layer in (encoder, decoder):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    config = SparseAutoencoderConfig(sparsity=0.5, sparsity_weight=2.0, weight_decay=1.0)
    # all activations are sigmoid(0) = 0.5: reconstruction 0.5 * 4 * 0.25, KL(0.5||0.5) = 0, decay 0
    assert sparse_autoencoder_loss(encoder, decoder, x, config).item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.full((4, 1, 28, 28), 2.0), torch.zeros(4, dtype=torch.int64), r"\[0, 1\]"),
        (torch.full((4, 1, 28, 28), math.nan), torch.zeros(4, dtype=torch.int64), "NaN"),
        (torch.zeros(4, 1, 28, 28), torch.zeros(3, dtype=torch.int64), "labels must have shape"),
        (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int32), "int64"),
        (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), "float"),
    ],
)
def test_bad_training_data_is_rejected(
    images: torch.Tensor, labels: torch.Tensor, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        train(_softmax(), images, labels, TrainConfig(iterations=1))


def test_config_naming_missing_layers_is_rejected() -> None:
    images, labels = _blobs(10)
    with pytest.raises(InvalidInputError, match="'enc'"):
        train(_softmax(), images, labels, TrainConfig(frozen=("enc",)))
