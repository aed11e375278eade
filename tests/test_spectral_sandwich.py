"""The sandwich: certified lower bounds on the minimum distortion never exceed any attack's distortion."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from intriguing.analysis import certified_radii, network_bounds, sandwich, sandwich_markdown
from intriguing.errors import InvalidInputError

SHAPE = (1, 28, 28)


def linear_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.mul_(3.0)
    return model.eval()


def sigmoid_mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 40),
        nn.Sigmoid(),
        nn.Linear(40, 40),
        nn.Sigmoid(),
        nn.Linear(40, 10),
        nn.Dropout(0.2),
    ).eval()


def images_and_predictions(model: nn.Module, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return images, model(images).argmax(1)


@dataclass
class Found:
    distortion: torch.Tensor
    success: torch.Tensor


def gradient_walk(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Found:
    """An independent attack: small steps along the runner-up margin's gradient inside [0, 1]."""
    x = images.clone()
    done = torch.zeros(len(images), dtype=torch.bool)
    for _ in range(400):
        x.requires_grad_(True)
        logits = model(x)
        runner_up = logits.scatter(1, labels[:, None], -math.inf).argmax(1)
        gap = (logits.gather(1, labels[:, None]) - logits.gather(1, runner_up[:, None])).sum()
        (grad,) = torch.autograd.grad(gap, x)
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
        with torch.no_grad():
            x = torch.where(done.reshape(-1, 1, 1, 1), x, (x - 0.05 * step).clamp(0, 1))
            done = model(x).argmax(1) != labels
        if bool(done.all()):
            break
    distortion = (x.detach() - images).flatten(1).norm(dim=1) / math.sqrt(784)
    return Found(distortion=distortion, success=done)


def test_pairwise_radius_is_exact_for_a_linear_model() -> None:
    """For z = Wx + b the smallest unconstrained change is min_j gap_j / ||W_y - W_j||: attained."""
    model = linear_model()
    images, labels = images_and_predictions(model)
    radii = certified_radii(model, images, labels, network_bounds(model, SHAPE))
    assert radii.pairwise is not None and radii.correct.all()
    weight, bias = model[1].weight.detach().double(), model[1].bias.detach().double()
    flat = images.flatten(1).double()
    double = copy.deepcopy(model).double()
    for i in range(len(images)):
        z = weight @ flat[i] + bias
        y = int(labels[i])
        dists = [(z[y] - z[j]) / (weight[y] - weight[j]).norm() for j in range(10) if j != y]
        j_best = [j for j in range(10) if j != y][int(torch.stack(dists).argmin())]
        expected = float(min(dists))
        assert radii.pairwise[i] * 28 == pytest.approx(expected, rel=1e-9)
        direction = weight[y] - weight[j_best]
        step = -(1 + 1e-6) * (z[y] - z[j_best]) / direction.norm() ** 2 * direction
        crossed = double((flat[i] + step).reshape(1, *SHAPE)).argmax(1)
        assert int(crossed) != y  # the bound is attained: no certified radius can be larger
    assert (radii.global_ <= radii.pairwise + 1e-15).all()


def test_certified_below_exact_box_constrained_minimum_for_linear_model() -> None:
    exact_linear = pytest.importorskip("intriguing.attacks.exact_linear")
    model = linear_model()
    images, labels = images_and_predictions(model, n=6)
    bound = network_bounds(model, SHAPE)
    exact = exact_linear.exact_linear_attack(model, images, labels, progress=False)
    result = sandwich(model, images, labels, bound, attack_result=_as_found(exact))
    assert result.violations == 0
    assert (result.radii.pairwise <= exact.distortion.numpy() * (1 + 1e-9)).all()


def _as_found(exact: object) -> Found:
    return Found(distortion=exact.distortion, success=exact.feasible)  # type: ignore[attr-defined]


def test_certified_below_an_independent_attack_on_a_sigmoid_net() -> None:
    model = sigmoid_mlp()
    images, labels = images_and_predictions(model)
    bound = network_bounds(model, SHAPE)
    result = sandwich(model, images, labels, bound, attack=gradient_walk)
    assert result.used.sum() == len(images)  # every example attacked successfully
    assert result.violations == 0
    assert (result.radii.pairwise >= result.radii.global_).all()
    assert (result.ratio_global >= 1).all() and (result.ratio_pairwise >= 1).all()
    summary = result.summary()
    assert summary["ratio_global_quantiles"]["q50"] >= summary["ratio_pairwise_quantiles"]["q50"]
    assert summary["lipschitz_features"] == pytest.approx(bound.lipschitz / bound.layers[5].upper)


def test_certified_below_lbfgs_on_trained_net(mnist_dir: Path) -> None:
    """The real attack on a (briefly) trained MNIST net: certified <= L-BFGS distortion everywhere."""
    attacks = pytest.importorskip("intriguing.attacks")
    from intriguing.data import load_mnist

    images, labels = load_mnist(mnist_dir).split("test")
    images, labels = images[:400], labels[:400]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Sigmoid(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    bound = network_bounds(model, SHAPE)
    subset, sublabels = images[:30], labels[:30]
    result = sandwich(
        model, subset, sublabels, bound, attack=attacks.LBFGS(max_iter=50, search_steps=6)
    )
    assert result.used.sum() >= 20
    assert result.violations == 0
    used = result.used
    assert (result.radii.pairwise[used] <= result.attack_distortion[used]).all()
    assert (result.radii.global_[used] <= result.attack_distortion[used]).all()


def test_misclassified_examples_get_zero_radius() -> None:
    model = sigmoid_mlp()
    images, predicted = images_and_predictions(model, n=8)
    wrong = (predicted + 1) % 10
    radii = certified_radii(model, images, wrong, network_bounds(model, SHAPE))
    assert not radii.correct.any()
    assert (radii.global_ == 0).all() and radii.pairwise is not None and (radii.pairwise == 0).all()


def test_no_pairwise_form_when_the_net_does_not_end_linearly() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Tanh()).eval()
    images, labels = images_and_predictions(model, n=4)
    radii = certified_radii(model, images, labels, network_bounds(model, SHAPE))
    assert radii.pairwise is None and (radii.global_ > 0).all()


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.full((2, *SHAPE), 1.5), torch.zeros(2, dtype=torch.int64), r"\[0, 1\]"),
        (torch.full((2, *SHAPE), float("nan")), torch.zeros(2, dtype=torch.int64), "NaN or inf"),
        (torch.rand((2, 1, 14, 14)), torch.zeros(2, dtype=torch.int64), "shape"),
        (torch.rand((2, *SHAPE)), torch.zeros(3, dtype=torch.int64), "labels"),
        (torch.rand((2, *SHAPE)), torch.zeros(2, dtype=torch.float32), "labels"),
        (torch.rand((2, *SHAPE)), torch.full((2,), 12, dtype=torch.int64), "logits"),
    ],
)
def test_bad_inputs_are_refused(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    model = linear_model()
    with pytest.raises(InvalidInputError, match=message) as info:
        certified_radii(model, images, labels, network_bounds(model, SHAPE))
    assert "\n" not in str(info.value)


def test_attack_result_of_wrong_length_is_refused() -> None:
    model = linear_model()
    images, labels = images_and_predictions(model, n=4)
    bad = Found(distortion=torch.ones(3), success=torch.ones(3, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="one distortion"):
        sandwich(model, images, labels, network_bounds(model, SHAPE), attack_result=bad)


def test_summary_and_rows_are_json_ready() -> None:
    model = sigmoid_mlp()
    images, labels = images_and_predictions(model, n=6)
    found = Found(distortion=torch.full((6,), 0.5), success=torch.ones(6, dtype=torch.bool))
    result = sandwich(model, images, labels, network_bounds(model, SHAPE), attack_result=found)
    json.dumps({"summary": result.summary(), "rows": result.per_example()}, allow_nan=False)
    quantiles = result.summary()["ratio_global_quantiles"]
    assert list(quantiles) == ["q00", "q05", "q25", "q50", "q75", "q95", "q100"]
    assert np.isclose(quantiles["q00"], float(np.min(result.ratio_global)))


def test_sandwich_markdown() -> None:
    model = sigmoid_mlp()
    images, labels = images_and_predictions(model, n=6)
    found = Found(distortion=torch.full((6,), 0.5), success=torch.ones(6, dtype=torch.bool))
    result = sandwich(model, images, labels, network_bounds(model, SHAPE), attack_result=found)
    text = sandwich_markdown(result.summary())
    assert "| global |" in text and "| pairwise |" in text and "6 of 6 examples" in text


def test_bound_of_another_model_is_refused() -> None:
    model = sigmoid_mlp()
    images, labels = images_and_predictions(model, n=4)
    other = network_bounds(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), SHAPE)
    with pytest.raises(InvalidInputError, match="other layers"):
        certified_radii(model, images, labels, other)


def test_a_model_with_a_zero_lipschitz_bound_has_infinite_radii_without_numpy_warnings() -> None:
    """Zero weights and a bias that prefers class 3: no input changes the decision, so the certified
    radius is infinite; it used to leak numpy's 'invalid value encountered in divide'."""
    import warnings

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0) == 3)
    images = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, 3, 0, 3])
    bound = network_bounds(model, SHAPE)
    assert bound.margin_bound == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radii = certified_radii(model, images, labels, bound)
    assert radii.global_.tolist() == [math.inf, math.inf, 0.0, math.inf]


def test_an_attack_result_of_other_examples_is_refused() -> None:
    """Only the length was checked: a result on other images, other labels or a targeted attack
    gave a sandwich whose ratios belong to no pair of examples."""
    from intriguing.attacks import LBFGS

    model = sigmoid_mlp().eval()
    images, labels = images_and_predictions(model, n=6)
    bound = network_bounds(model, SHAPE)
    attack = LBFGS(progress=False, max_iter=20, search_steps=3)
    own = attack(model, images, labels)
    assert sandwich(model, images, labels, bound, attack_result=own).attack_success.all()
    shifted = (images + 0.1).clamp(0, 1)
    other = attack(model, shifted, labels)
    with pytest.raises(InvalidInputError, match="computed on other images"):
        sandwich(model, images, labels, bound, attack_result=other)
    with pytest.raises(InvalidInputError, match="labels differ from labels"):
        sandwich(model, images, (labels + 1) % 10, bound, attack_result=own)
    targeted = LBFGS(progress=False, mode="targeted", max_iter=20, search_steps=3)
    with pytest.raises(InvalidInputError, match=r"targeted attack's; .* untargeted"):
        sandwich(model, images, labels, bound, attack_result=targeted(model, images, labels))


def test_a_sequential_ending_in_log_softmax_keeps_the_logits_radii() -> None:
    """``nn.Sequential(..., nn.LogSoftmax(dim=1))`` was bounded as a chain: its radii were divided
    by the softmax's 1 + sqrt(K) and it had no pairwise radius, though log_softmax keeps every
    margin (docs/spectral.md, "Class margins"). By hand: global radius margin / (sqrt(2) sigma)."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(36, 5)).eval()
    with_log = nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.LogSoftmax(dim=1)).eval()
    with_log[1].load_state_dict(plain[1].state_dict())
    x = torch.rand(6, 1, 6, 6)
    with torch.no_grad():
        logits = plain(x)
    y = logits.argmax(1)
    sigma = float(torch.linalg.matrix_norm(plain[1].weight.double(), 2))
    top2 = logits.double().topk(2, dim=1).values
    by_hand = ((top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * sigma) / 6).numpy()  # RMS over 36
    radii = certified_radii(with_log, x, y, network_bounds(with_log, (1, 6, 6)))
    np.testing.assert_allclose(radii.global_, by_hand, rtol=1e-5)
    expected = certified_radii(plain, x, y, network_bounds(plain, (1, 6, 6)))
    assert radii.pairwise is not None and expected.pairwise is not None
    np.testing.assert_allclose(radii.pairwise, expected.pairwise, rtol=1e-9)
