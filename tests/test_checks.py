"""Input/model checks of intriguing.attacks.checks and their use by the attack."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, AttackWarning
from intriguing.attacks.checks import (
    check_eval_mode,
    check_images,
    check_input_gradient,
    check_labels,
    check_logits,
    warn_zero_gradients,
)
from intriguing.errors import InvalidInputError


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.full((2, 6), 1.5), r"must lie in \[0, 1\], found values in \[1\.5"),
        (torch.full((2, 6), -0.1), "must lie in"),
        (torch.tensor([[0.5, float("nan")]]), "NaN or inf in 1 image"),
        (torch.tensor([[0.5, float("inf")]]), "NaN or inf"),
        (torch.tensor([[0.5, -float("inf")], [0.2, 0.3]]), "NaN or inf in 1 image"),
        (torch.tensor([[float("nan"), 1.5], [0.2, float("nan")]]), "NaN or inf in 2 image"),
        (torch.zeros(6), r"shape \(N, \.\.\.\)"),
        (torch.zeros(0, 6), "N >= 1"),
        (torch.zeros(5, 1, 0, 28), r"no values: shape \(5, 1, 0, 28\)"),
        (torch.zeros(2, 0), r"no values: shape \(2, 0\)"),
        (torch.zeros(2, 6, dtype=torch.uint8), "divide uint8 pixels by 255"),
        (torch.zeros(2, 6).numpy(), "must be a torch.Tensor"),
    ],
)
def test_bad_images_are_refused(images: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_images(images)
    with pytest.raises(InvalidInputError, match=message):
        LBFGS(progress=False)(small_model(), images)  # type: ignore[arg-type]


def test_good_images_pass_unchanged() -> None:
    x = torch.rand(3, 1, 2, 3)
    assert check_images(x) is x


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.zeros(3, dtype=torch.long), r"shape \(2,\)"),
        (torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.tensor([0, 3]), "must be < 3"),
        (torch.tensor([-1, 0]), ">= 0"),
        ([0, 1], "torch.Tensor"),
    ],
)
def test_bad_labels_are_refused(labels: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_labels(labels, 2, num_classes=3)
    with pytest.raises(InvalidInputError, match=message):
        LBFGS(progress=False)(small_model(), torch.rand(2, 6), labels)  # type: ignore[arg-type]


def test_check_labels_converts_to_int64() -> None:
    out = check_labels(torch.tensor([1, 2], dtype=torch.int32), 2, num_classes=3)
    assert out.dtype == torch.long and out.tolist() == [1, 2]


def test_training_mode_is_refused_with_the_fix() -> None:
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
    model.train()
    with pytest.raises(InvalidInputError, match=r"training mode .*call model\.eval\(\)"):
        check_eval_mode(model)
    with pytest.raises(InvalidInputError, match="training mode"):
        LBFGS(progress=False)(model, torch.rand(2, 6))
    model[1].eval()
    model.training = False
    with pytest.raises(InvalidInputError, match="training mode"):  # a submodule still training
        model[0].train()
        check_eval_mode(model)


def test_probability_outputs_are_refused() -> None:
    model = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=1)).eval()
    with pytest.raises(
        InvalidInputError, match=r"look like probabilities.*remove the final softmax"
    ):
        LBFGS(progress=False)(model, torch.rand(4, 6))
    log_probs = nn.Sequential(nn.Linear(6, 3), nn.LogSoftmax(dim=1)).eval()
    result = LBFGS(progress=False)(log_probs, torch.rand(2, 6))  # log-probabilities are logits
    assert len(result) == 2


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (torch.zeros(2, 1), r"one output per image .* binary classifier .* torch\.cat\(\[-z, z\]"),
        (torch.zeros(2), "K >= 2"),
        (
            torch.zeros(3, 4),
            r"shape \(3, 4\) for a batch of 2 images; it must return logits \(2, K\)",
        ),
        (torch.zeros(2, 3, 1), "shape"),
        (torch.tensor([[0.0, float("nan")], [0.0, 1.0]]), "NaN or inf outputs"),
    ],
)
def test_bad_outputs_are_refused(outputs: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_logits(outputs, 2)


def test_zero_gradient_warning_counts_examples() -> None:
    grad = torch.zeros(3, 5)
    grad[1, 2] = 0.1
    with pytest.warns(AttackWarning, match="2 example"):
        assert warn_zero_gradients(grad) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_zero_gradients(torch.ones(2, 5)) == 0


def test_target_errors() -> None:
    model = small_model()
    x = torch.rand(3, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(InvalidInputError, match="mode='targeted'"):
        LBFGS(progress=False)(model, x, y, targets=(y + 1) % 3)
    with pytest.raises(InvalidInputError, match="equal their label"):
        LBFGS(mode="targeted", progress=False)(model, x, y, targets=y)
    with pytest.raises(InvalidInputError, match=r"targets must have shape \(3,\)"):
        LBFGS(mode="targeted", progress=False)(model, x, y, targets=y[:2])
    with pytest.raises(InvalidInputError, match="out of range"):
        LBFGS(mode="targeted", target=7, progress=False)(model, x, y)
    with pytest.raises(InvalidInputError, match="already have label"):
        LBFGS(mode="targeted", target=int(y[0]), progress=False)(model, x, y)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "sideways"}, "unknown mode"),
        ({"mode": "targeted", "target": "closest"}, "unknown target chooser"),
        ({"target": "next"}, "needs mode='targeted'"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"kappa": -1.0}, "kappa"),
        ({"temperature": 0.0}, "temperature"),
        ({"c_init": 0.0}, "c_init"),
        ({"c_factor": 1.0}, "c_factor"),
        ({"batch_size": 0}, "batch_size"),
        ({"memory": 2.5}, "memory"),
        ({"mode": "targeted", "target": -1}, ">= 0"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        LBFGS(**settings)  # type: ignore[arg-type]


def test_non_module_model_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"nn\.Module"):
        LBFGS(progress=False)(lambda x: x, torch.rand(2, 6))  # type: ignore[arg-type]


class Squeezed(nn.Module):
    """``net(x).squeeze()``: logits (N, 3) for N >= 2, but (3,) for one image (found by a robustness
    probe: every check passed, then success_margin raised IndexError mid-attack)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze()


def test_a_model_that_drops_the_batch_axis_for_one_image_is_refused() -> None:
    x = torch.rand(4, 6)
    with pytest.raises(InvalidInputError, match=r"returned shape \(3,\) for a batch of 1") as info:
        check_input_gradient(Squeezed().eval(), x)
    assert "(1, K)" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match=r"returned shape \(3,\) for a batch of 1"):
        LBFGS(progress=False)(Squeezed().eval(), x, torch.zeros(4, dtype=torch.long))


class SqrtInput(nn.Module):
    """Finite logits, but an infinite input gradient wherever a pixel is 0 (sqrt at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 10))
        torch.manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.sqrt(x))


def _attack_warnings(model: nn.Module, x: torch.Tensor) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LBFGS(search_steps=2, max_iter=20, progress=False)(model.eval(), x)
    return [str(w.message) for w in caught if issubclass(w.category, AttackWarning)]


def test_non_finite_input_gradients_are_warned_about_once() -> None:
    """Before: 0% success after the whole search, no word why (found by a robustness probe)."""
    torch.manual_seed(0)
    x = torch.rand(3, 6)
    x[:, 0] = 0.0  # a zero pixel: an infinite gradient at the clean image
    messages = _attack_warnings(SqrtInput(), x)
    assert len(messages) == 1, messages
    assert messages[0].startswith("3 example(s) have a NaN or infinite input gradient")
    assert "sqrt" in messages[0] and "\n" not in messages[0]
    assert _attack_warnings(SqrtInput().net, x) == []  # the same model without sqrt: no warning


def test_a_problem_with_a_non_finite_start_stops_after_one_evaluation() -> None:
    """No constant moves a problem whose loss gradient at its start point is NaN or infinite:
    every direction from it is NaN and every line-search step evaluated it again (or a point
    along a stale direction from the slot's previous problem). Before: 1805 evaluations per
    example untargeted (every candidate, then every fallback class, 10 stages each of 20 line
    search steps), 200 targeted; now one per problem, plus the class estimate."""
    torch.manual_seed(0)
    x = torch.rand(5, 6)
    x[:, 0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttackWarning)
        targeted = LBFGS(mode="targeted", progress=False)(SqrtInput().eval(), x)
        untargeted = LBFGS(progress=False)(SqrtInput().eval(), x)
    assert targeted.grad_evals.tolist() == [1] * 5
    assert not targeted.success.any() and not untargeted.success.any()
    # the estimate (at most 5 classes) and one evaluation per class tried (9)
    assert int(untargeted.grad_evals.max()) <= 5 + 9


def test_the_zero_gradient_warning_is_given_once_per_attack() -> None:
    """With 10 classes the untargeted attack runs its candidates, then a fallback search for the
    classes they did not try: each search warned, so the warning printed twice."""
    model = nn.Linear(6, 10)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.arange(10.0))
    messages = _attack_warnings(model, torch.rand(3, 6))
    assert messages == [
        "3 example(s) have an exactly zero input gradient at the clean image (saturated model); "
        "the attack cannot move them"
    ]


@pytest.mark.parametrize("config", [{"mode": "targeted"}, "targeted"])
def test_a_config_that_is_not_an_lbfgs_config_is_one_line(config: object) -> None:
    """``LBFGS("targeted")`` raised dataclasses' "must be called with a dataclass type"."""
    with pytest.raises(InvalidInputError, match=r"config must be an LBFGSConfig.*keywords") as info:
        LBFGS(config)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
