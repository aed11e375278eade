"""Input validation and model-state hygiene of the analysis API (one-line InvalidInputError)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from intriguing.analysis import (
    UnitsConfig,
    analyse_units,
    certified_radii,
    compute_activations,
    iter_activations,
    network_bounds,
)
from intriguing.analysis.curves import budget_for_rate, model_robust_accuracy, robust_accuracy
from intriguing.analysis.recovery import recover_and_detect
from intriguing.attacks import LBFGS
from intriguing.errors import InvalidInputError
from intriguing.training.trainer import error_rate, eval_mode


def _mlp(d: int = 8, k: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k)).eval()


def _mixed_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    net.train()
    net[1].eval()  # frozen batch-norm statistics while fine-tuning
    return net


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


# --- defect 1: per-submodule train/eval flags are restored ------------------------------------


def test_compute_activations_keeps_every_submodule_mode() -> None:
    net = _mixed_net()
    before = _modes(net)
    compute_activations(net, "0", torch.rand(6, 1, 8, 8))
    assert _modes(net) == before


def test_error_rate_and_eval_mode_keep_every_submodule_mode() -> None:
    net = _mixed_net()
    before = _modes(net)
    error_rate(net, torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.long))
    assert _modes(net) == before
    inverse = _mixed_net().eval()
    inverse[1].train()
    before = _modes(inverse)
    with eval_mode(inverse):
        assert not any(_modes(inverse))
    assert _modes(inverse) == before


# --- defect 2: iter_activations leaves the model alone between yields ---------------------------


def test_iter_activations_paused_generator_leaves_model_usable() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 3)).train()
    x = torch.rand(10, 1, 8, 8)
    batches = iter_activations(net, "1", x, batch_size=5)
    first = next(batches)
    assert net.training
    assert net(x).shape == (10, 3)  # no hook left behind
    assert compute_activations(net, "3", x).shape == (10, 3)
    rest = list(batches)
    assert torch.cat([first, *rest]).shape == (10, 72)
    pairs = list(
        zip(
            iter_activations(net, "1", x, batch_size=5),
            iter_activations(net, "3", x, batch_size=5),
            strict=True,
        )
    )
    assert [(a.shape[1], b.shape[1]) for a, b in pairs] == [(72, 3), (72, 3)]
    assert net.training and not net[0]._forward_hooks


def test_iter_activations_values_unchanged_by_restructure() -> None:
    net = _mixed_net()
    x = torch.rand(7, 1, 8, 8)
    got = torch.cat(list(iter_activations(net, "1", x, batch_size=3)))
    with torch.no_grad(), eval_mode(net):
        expected = net[1](net[0](x)).flatten(1)
    torch.testing.assert_close(got, expected)


# --- defect 3: curves ----------------------------------------------------------------------------


def _attacked() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = _mlp()
    x = torch.rand(4, 8)
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (lambda y: torch.where(torch.arange(4) == 3, 9, y), "must be < 3"),
        (lambda y: y[:2], "shape \\(4,\\)"),
        (lambda y: y.tolist(), "torch.Tensor"),
    ],
)
def test_model_robust_accuracy_refuses_bad_labels(labels: object, message: str) -> None:
    model, x, y = _attacked()
    with pytest.raises(InvalidInputError, match=message):
        model_robust_accuracy(model, x, labels(y), [0.1], attack=LBFGS(max_iter=5))  # type: ignore[operator]


def test_model_robust_accuracy_refuses_bad_budgets_before_attacking() -> None:
    model, x, y = _attacked()

    def never(*_args: object, **_kw: object) -> None:
        raise AssertionError("attack must not run")

    with pytest.raises(InvalidInputError, match="budgets"):
        model_robust_accuracy(model, x, y, [-1.0], attack=never)
    with pytest.raises(InvalidInputError, match="confidence"):
        model_robust_accuracy(model, x, y, [0.1], attack=never, confidence=1.5)


def test_robust_accuracy_flags_and_rate() -> None:
    correct = torch.tensor([True, True, False, True])
    distortion = torch.tensor([0.1, 0.5, 0.0, 0.2])
    success = torch.tensor([True, False, False, True])
    expected = robust_accuracy(correct, distortion, success, [0.15, 1.0])
    as_float = robust_accuracy(correct, distortion, success.float(), [0.15, 1.0])
    torch.testing.assert_close(as_float, expected)
    with pytest.raises(InvalidInputError, match="success must be a bool"):
        robust_accuracy(correct, distortion, torch.tensor([0.5, 0.0, 0.0, 1.0]), [0.1])
    with pytest.raises(InvalidInputError, match="rate must be a number"):
        budget_for_rate(distortion, success, "0.5")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rate must be a number"):
        budget_for_rate(distortion, success, True)


# --- defect 4: certified_radii inputs -------------------------------------------------------------


def _linear_bound() -> tuple[nn.Module, torch.Tensor, torch.Tensor, object]:
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(4, 8)
    return lin, x, lin(x).argmax(1), network_bounds(lin, (8,))


def test_certified_radii_refuses_bad_inputs_in_one_line() -> None:
    lin, x, y, bound = _linear_bound()
    with pytest.raises(InvalidInputError, match="no images"):
        certified_radii(lin, x[:0], y[:0], bound)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"labels must be a torch\.Tensor"):
        certified_radii(lin, x, y.tolist(), bound)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="numpy"):
        certified_radii(lin, x.numpy(), y, bound)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="integer"):
        certified_radii(lin, x, y.float(), bound)  # type: ignore[arg-type]


def test_certified_radii_accepts_any_integer_label_dtype() -> None:
    lin, x, y, bound = _linear_bound()
    ref = certified_radii(lin, x, y, bound)  # type: ignore[arg-type]
    got = certified_radii(lin, x, y.int(), bound)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got.global_, ref.global_)


# --- defect 5: network_bounds input_shape and meta models ------------------------------------------


@pytest.mark.parametrize("shape", ["8", "1,28,28", (8.7,), (True,) * 8, (), (0,), None, 8.0])
def test_network_bounds_refuses_bad_input_shape(shape: object) -> None:
    with pytest.raises(InvalidInputError, match="input_shape"):
        network_bounds(_mlp(), shape)  # type: ignore[arg-type]


def test_network_bounds_single_int_and_list_shapes() -> None:
    model = _mlp()
    ref = network_bounds(model, (8,))
    for shape in (8, [8], torch.Size([8]), np.int64(8)):
        bound = network_bounds(model, shape)  # type: ignore[arg-type]
        assert bound.input_shape == (8,) and bound.lipschitz == ref.lipschitz


def test_network_bounds_refuses_meta_model() -> None:
    with pytest.raises(InvalidInputError, match="meta device"):
        network_bounds(_mlp().to("meta"), (8,))


# --- defect 6: units configuration and phi ---------------------------------------------------------

_FAST: dict[str, Any] = dict(families=("natural", "random"), n_null=100, n_resamples=99, alphas=())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"k": 2.5, "n_directions": 2}, "k must be an integer"),
        ({"k": 2, "n_directions": 2.5}, "n_directions must be an integer"),
        ({"k": 2, "n_directions": 2, "seed": -1}, "seed must be >= 0"),
        ({"k": 2, "n_directions": 2, "seed": 1.5}, "seed must be an integer"),
        ({"k": True, "n_directions": 2}, "k must be an integer"),
    ],
)
def test_units_config_refuses_non_integers(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        UnitsConfig(**{**_FAST, **settings})


def test_units_config_refuses_bad_families_and_alphas() -> None:
    with pytest.raises(InvalidInputError, match="families must be a tuple"):
        UnitsConfig(families="natural")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="alphas"):
        UnitsConfig(alphas=("a",))  # type: ignore[arg-type]


def test_analyse_units_refuses_list_and_nan_phi() -> None:
    rng = np.random.default_rng(0)
    phi, images, labels = rng.random((12, 5)), rng.random((12, 1, 4, 4)), np.arange(12) % 3
    config = UnitsConfig(k=2, n_directions=2, **_FAST)
    with pytest.raises(InvalidInputError, match="numpy array"):
        analyse_units(phi.tolist(), images, labels, config)
    bad = phi.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"NaN.*row 3"):
        analyse_units(bad, images, labels, config)
    assert analyse_units(phi, images, labels, config).families  # valid input still works


# --- defect 7: recover_and_detect options validated up front --------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"amplify": (0.5,)}, "amplification factors"),
        ({"amplify": 2.0}, "amplify must be a tuple"),
        ({"amplify": ("3",)}, "amplification factors"),
        ({"attack": {"nonsense": 1}}, "nonsense"),
        ({"attack": {"max_iter": 0}}, "max_iter"),
        ({"attack": [("max_iter", 5)]}, "dict of LBFGS settings"),
        ({"clean_statistic": torch.zeros(3)}, "clean_statistic"),
    ],
)
def test_recover_and_detect_refuses_options_before_attacking(
    options: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _mlp()
    torch.manual_seed(1)
    x = torch.rand(4, 8)
    y = model(x).argmax(1)
    adversarial = x.clone()
    ran: list[bool] = []
    monkeypatch.setattr(LBFGS, "__call__", lambda *a, **k: ran.append(True))
    with pytest.raises(InvalidInputError, match=message):
        recover_and_detect(model, x, adversarial, y, **options)  # type: ignore[arg-type]
    assert not ran
