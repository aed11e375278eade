"""The L-BFGS attack against its exact oracle: on a linear softmax model the optimum is a convex QP.

Issue 3's oracle test: on a linear softmax model with weight decay (softmax1-like, fitted here on a
subset of real MNIST), the attack's targeted distortion is within 0.5% of the QP optimum on average
and never below it (beyond float32 rounding); the untargeted distortion likewise against the minimum
of the QP optima over all targets.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, AttackResult
from intriguing.attacks.exact_linear import ExactLinearResult, exact_linear_attack

#: Largest allowed mean excess of the attack's distortion over the exact optimum (issue 3).
MEAN_GAP = 0.005
#: The default untargeted mode does not try every class: on a few images it lands in a farther
#: class than the nearest one (solving that class almost exactly). Over 200+ images its mean excess
#: is within MEAN_GAP (slow test; +0.24% on 1000 softmax1 images in benchmarks/); on a 60-image
#: sample a handful of such images can push it above, so the fast test allows this much.
UNTARGETED_SAMPLE_GAP = 0.015
#: The attack works in float32; on the boundary its distortion may undercut the float64 optimum by
#: rounding only. Relative and absolute slack for "never below the optimum".
BELOW_RTOL = 1e-4
BELOW_ATOL = 1e-6


def fit_linear_softmax(
    images: torch.Tensor, labels: torch.Tensor, weight_decay: float
) -> nn.Module:
    """Flatten + Linear fitted by full-batch L-BFGS on cross-entropy + wd * sum(W^2) / K."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(images[0].numel(), 10))
    optimiser = torch.optim.LBFGS(
        model.parameters(), max_iter=100, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        weight = model[1].weight
        loss = nn.functional.cross_entropy(model(images), labels)
        loss = loss + weight_decay * weight.pow(2).sum() / weight.shape[0]
        loss.backward()
        return loss

    optimiser.step(closure)
    return model.eval()


def correctly_classified(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` of ``images`` that ``model`` classifies correctly."""
    with torch.no_grad():
        keep = model(images).argmax(1) == labels
    return images[keep][:n], labels[keep][:n]


@pytest.fixture(scope="module")
def softmax_model(mnist_dir: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A softmax1-like model (weight decay 1e-4) fitted on 5000 MNIST training images."""
    from intriguing.data import load_mnist

    data = load_mnist(mnist_dir)
    model = fit_linear_softmax(data.train_images[:5000], data.train_labels[:5000], 1e-4)
    return model, data.test_images[:2000], data.test_labels[:2000]


def assert_matches_oracle(
    attack: AttackResult, oracle: ExactLinearResult, mean_gap_limit: float = MEAN_GAP
) -> None:
    """All succeed; mean gap <= 0.5%; no example below the optimum beyond rounding.

    The failure message says how many examples ended in another class than the optimum's target
    (untargeted: a different, farther decision region; targeted: always 0).
    """
    assert bool(attack.success.all())
    assert bool(oracle.feasible.all())
    found = attack.distortion.double()
    optimum = oracle.distortion
    assert bool((found >= optimum * (1 - BELOW_RTOL) - BELOW_ATOL).all()), (
        f"attack beats the exact optimum: min ratio {float((found / optimum).min()):.8f}"
    )
    mean_gap = float(found.mean() / optimum.mean()) - 1.0
    other_class = int((attack.predicted.cpu() != oracle.target).sum())
    assert mean_gap <= mean_gap_limit, (
        f"mean distortion {mean_gap:.2%} above the exact optimum; {other_class} of "
        f"{len(attack)} examples ended in another class than the optimal target"
    )


def run_oracle_comparison(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
    n: int,
    mode: str,
    mean_gap_limit: float = MEAN_GAP,
) -> None:
    model, pool, pool_labels = softmax_model
    images, labels = correctly_classified(model, pool, pool_labels, n)
    if mode == "targeted":
        targets = (labels + 1) % 10
        attack = LBFGS(mode="targeted", progress=False)(model, images, labels, targets=targets)
        oracle = exact_linear_attack(model, images, targets=targets, progress=False)
        assert torch.equal(attack.predicted, targets)
    else:
        target = "best" if mode == "untargeted-best" else None
        attack = LBFGS(mode="untargeted", target=target, progress=False)(model, images, labels)
        oracle = exact_linear_attack(model, images, labels, progress=False)
        assert bool((attack.predicted != labels).all())
    assert_matches_oracle(attack, oracle, mean_gap_limit)


@pytest.mark.parametrize(
    ("mode", "n", "limit"),
    [
        ("targeted", 60, MEAN_GAP),
        ("untargeted-best", 30, MEAN_GAP),  # every target tried: the exact minimum over targets
        ("untargeted", 60, UNTARGETED_SAMPLE_GAP),
    ],
)
def test_attack_reaches_the_exact_optimum(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor], mode: str, n: int, limit: float
) -> None:
    run_oracle_comparison(softmax_model, n, mode, limit)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["targeted", "untargeted"])
def test_attack_reaches_the_exact_optimum_200(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor], mode: str
) -> None:
    run_oracle_comparison(softmax_model, 200, mode)


def test_oracle_is_a_lower_bound_for_a_weak_attack(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    """The comparison can fail: a crippled attack (one c stage, few iterations) is caught."""
    model, pool, pool_labels = softmax_model
    images, labels = correctly_classified(model, pool, pool_labels, 10)
    targets = (labels + 1) % 10
    weak = LBFGS(mode="targeted", search_steps=1, c_init=1e-3, max_iter=5, progress=False)
    attack = weak(model, images, labels, targets=targets)
    oracle = exact_linear_attack(model, images, targets=targets, progress=False)
    with pytest.raises(AssertionError):
        assert_matches_oracle(attack, oracle)


def scaled_copy(model: nn.Module, factor: float) -> nn.Module:
    """A copy of the affine ``model`` with weights and bias times ``factor``: logits ``factor``
    times larger, the same decisions and the same exact optimum."""
    import copy

    small = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in small.parameters():
            parameter.mul_(factor)
    return small.eval()


#: Logits 100 times smaller than this model's own (largest |logit| about 0.2 instead of 20) are
#: scaled up to the reference 3 for the loss, not back to 20, and the attack is looser there: 1.25%
#: above the optimum on these 60 images (0.20% at the model's own scale; softmax3 with its logits
#: tripled +0.67%, docs/attack.md "Small logits"); without the scale-up 12%.
SMALL_LOGIT_GAP = 0.02


def test_small_logits_stay_near_the_exact_optimum(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    """Logits 100 times smaller, the same decisions and optimum: the loss sees them scaled up
    (``logit_scales``), and the targeted attack stays within SMALL_LOGIT_GAP of the optimum."""
    model, pool, pool_labels = softmax_model
    small = (scaled_copy(model, 0.01), pool, pool_labels)
    run_oracle_comparison(small, 60, "targeted", SMALL_LOGIT_GAP)


def test_small_logits_without_the_scale_up_miss_the_optimum(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above can fail: with the scale-up switched off (every factor 1) the same
    attack on the same small logits ends further above the optimum."""
    from intriguing.attacks import lbfgs

    monkeypatch.setattr(lbfgs, "LOGIT_REFERENCE", 0.0)
    model, pool, pool_labels = softmax_model
    small = (scaled_copy(model, 0.01), pool, pool_labels)
    with pytest.raises(AssertionError, match="above the exact optimum"):
        run_oracle_comparison(small, 60, "targeted", SMALL_LOGIT_GAP)


@pytest.mark.parametrize("factor", [1e12, 1e20])
def test_large_logits_stay_near_the_exact_optimum(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor], factor: float
) -> None:
    """Logits 1e12 or 1e20 times larger: the same decisions and optimum (the oracle of the model
    itself); the loss sees them scaled down to LOGIT_CEILING and the c-search starts at the scaled
    estimate. Before, at 1e20 no example was fooled after 1805 evaluations each."""
    model, pool, pool_labels = softmax_model
    images, labels = correctly_classified(model, pool, pool_labels, 30)
    oracle = exact_linear_attack(model, images, labels, progress=False)
    attack = LBFGS(mode="untargeted", progress=False)(scaled_copy(model, factor), images, labels)
    assert bool(attack.success.all())
    assert_matches_oracle(attack, oracle, UNTARGETED_SAMPLE_GAP)


@pytest.mark.parametrize("ceiling", [None, 1e3])
def test_logits_a_hundred_times_larger_keep_the_targeted_attack_near_the_optimum(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    ceiling: float | None,
) -> None:
    """Logits 100 times the model's (largest |logit| in the hundreds, as a net trained without
    weight decay may have): the targeted attack stays within SMALL_LOGIT_GAP of the optimum. The
    comparison can fail: with the former scale-down threshold of 1000 it ends further above."""
    from intriguing.attacks import lbfgs

    model, pool, pool_labels = softmax_model
    large = (scaled_copy(model, 100.0), pool, pool_labels)
    if ceiling is None:
        run_oracle_comparison(large, 60, "targeted", SMALL_LOGIT_GAP)
        return
    monkeypatch.setattr(lbfgs, "LOGIT_CEILING", ceiling)
    with pytest.raises(AssertionError, match="above the exact optimum"):
        run_oracle_comparison(large, 60, "targeted", SMALL_LOGIT_GAP)


def test_large_logits_without_the_scale_down_are_not_fooled(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above can fail: without the scale-down the c-search cannot reach constants
    1e20 times the usual within its stages. Shown on the torch step, the one a GPU runs: the fused
    CPU kernels accumulate their dot products in float64, where ``g'd`` of such gradients does
    not overflow, and get through."""
    from intriguing.attacks import lbfgs, optim

    monkeypatch.setattr(lbfgs, "LOGIT_CEILING", math.inf)
    monkeypatch.setattr(optim, "_fused_supported", lambda device, dtype: False)
    model, pool, pool_labels = softmax_model
    images, labels = correctly_classified(model, pool, pool_labels, 10)
    attack = LBFGS(mode="untargeted", progress=False)(scaled_copy(model, 1e20), images, labels)
    assert not bool(attack.success.all())


def test_tiny_logits_are_warned_about_and_usual_ones_are_not(
    softmax_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    """Logits 1e-6 times the model's (largest about 2e-5): the success rule's lead of 1e-4 logits
    dwarfs them, so the attack says so; at 0.01 times (largest about 0.2) it does not."""
    from intriguing.attacks import AttackWarning

    model, pool, pool_labels = softmax_model
    images, labels = correctly_classified(model, pool, pool_labels, 4)
    quick = LBFGS(mode="untargeted", progress=False, search_steps=2, max_iter=5)
    with pytest.warns(AttackWarning, match=r"4 example\(s\) have logits below 0.01"):
        quick(scaled_copy(model, 1e-6), images, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        quick(scaled_copy(model, 0.01), images, labels)


def _many_class_comparison(mnist_dir: Path) -> float:
    """Mean ratio of the untargeted attack's distortion to the exact optimum toward the class it
    reached (with the lead AIM_FACTOR margins it aims for), on a random affine 1000-class model whose logits are about 0.6 (scaled up to
    LOGIT_REFERENCE inside the loss), 8 MNIST test images."""
    from intriguing.attacks.metrics import AIM_FACTOR, success_margin
    from intriguing.data import load_mnist

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 1000)).eval()
    images = load_mnist(mnist_dir).test_images[:8]
    with torch.no_grad():
        logits = model(images)
    attack = LBFGS(mode="untargeted", progress=False)(model, images, logits.argmax(1))
    assert bool(attack.success.all())
    margin = success_margin(logits)

    def optimum(lead: float) -> torch.Tensor:  # toward the reached class, leading by lead margins
        return torch.tensor(
            [
                float(
                    exact_linear_attack(
                        model,
                        images[i : i + 1],
                        targets=attack.predicted[i : i + 1],
                        margin=lead * float(margin[i]),
                        progress=False,
                    ).distortion[0]
                )
                for i in range(len(images))
            ],
            dtype=torch.float64,
        )

    found = attack.distortion.double()
    assert bool((found >= optimum(1.0) * (1 - BELOW_RTOL)).all())  # the success rule's optimum
    return float((found / optimum(AIM_FACTOR)).mean())  # the lead the attack aims for


def test_a_thousand_near_tied_classes_stay_near_the_exact_optimum(mnist_dir: Path) -> None:
    """The cross-entropy's softened maximum of 999 competitors sits up to T ln 999 above the
    largest: with the temperatures tuned at 10 classes the attack stopped that far past the
    boundary (mean 2.8%, worst 14% above the optimum); they are divided by ln 999 / ln 9."""
    assert _many_class_comparison(mnist_dir) - 1 <= MEAN_GAP


def test_a_thousand_classes_at_the_ten_class_temperatures_miss_the_optimum(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intriguing.attacks import lbfgs

    monkeypatch.setattr(lbfgs, "class_temperature_factor", lambda classes: 1.0)
    assert _many_class_comparison(mnist_dir) - 1 > 2 * MEAN_GAP


def test_the_class_temperature_factor_by_hand() -> None:
    from intriguing.attacks.lbfgs import class_temperature_factor

    assert class_temperature_factor(2) == class_temperature_factor(10) == 1.0
    assert class_temperature_factor(1000) == pytest.approx(math.log(9) / math.log(999))
