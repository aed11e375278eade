"""The exact oracle of the linear attack: hand-solved cases, two independent solvers, KKT, batch API."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from intriguing.attacks.exact_linear import (
    AffineClassifier,
    QPSolution,
    affine_parameters,
    exact_linear_attack,
    solve_targeted_qp,
    solve_targeted_qp_slsqp,
)
from intriguing.errors import InvalidInputError

Solver = Callable[..., QPSolution]
SOLVERS = [
    pytest.param(solve_targeted_qp, id="dual"),
    pytest.param(solve_targeted_qp_slsqp, id="slsqp"),
]


def two_class(a: tuple[float, ...], c: float) -> AffineClassifier:
    """Class 1 wins where a . y + c >= 0 (class 0 has zero weights and bias)."""
    weight = np.array([np.zeros(len(a)), np.array(a)])
    return AffineClassifier(weight=weight, bias=np.array([0.0, c]))


# (x, classifier, target, expected r), each solved by hand in the comments.
HAND_CASES = [
    # a.x + c = 1.5 - 2.5 = -1; r = 1/||a||^2 * a = (0.2, 0.4); x + r = (0.7, 0.9): box inactive.
    pytest.param((0.5, 0.5), two_class((1.0, 2.0), -2.5), 1, (0.2, 0.4), id="box-inactive"),
    # Unboxed r = 0.14 (1, 2) overshoots y2 = 1.08 > 1; with y2 clipped to 1 (r2 = 0.2) the
    # constraint y1 + 2 >= 2.8 needs y1 = 0.8, r1 = 0.3 (r = clip(x + 0.3 a) - x, mu = 0.3).
    pytest.param((0.5, 0.8), two_class((1.0, 2.0), -2.8), 1, (0.3, 0.2), id="box-partly-active"),
    # y1 + y2 >= 2 in the unit square: only the corner (1, 1).
    pytest.param((0.5, 0.9), two_class((1.0, 1.0), -2.0), 1, (0.5, 0.1), id="box-corner"),
    # Already on the target's side: nothing to do.
    pytest.param((0.9, 0.9), two_class((1.0, 1.0), -1.0), 1, (0.0, 0.0), id="already-target"),
    # Three classes, target 0; constraints y1 >= 0.7 and y2 >= 0.6 are both active.
    pytest.param(
        (0.5, 0.5),
        AffineClassifier(
            weight=np.array([[0.0, 0.0], [-1.0, 0.0], [0.0, -1.0]]), bias=np.array([0.0, 0.7, 0.6])
        ),
        0,
        (0.2, 0.1),
        id="two-constraints-active",
    ),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("x", "classifier", "target", "expected"), HAND_CASES)
def test_hand_solved_cases(
    solver: Solver,
    x: tuple[float, float],
    classifier: AffineClassifier,
    target: int,
    expected: tuple[float, float],
) -> None:
    solution = solver(np.array(x), classifier, target)
    assert solution.feasible
    np.testing.assert_allclose(solution.perturbation, expected, atol=1e-7)
    assert solution.l2 == pytest.approx(math.hypot(*expected), abs=1e-7)
    assert solution.kkt_residual < 1e-7


def test_hand_case_multiplier() -> None:
    solution = solve_targeted_qp(np.array([0.5, 0.8]), two_class((1.0, 2.0), -2.8), 1)
    np.testing.assert_allclose(solution.multipliers, [0.3], atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_infeasible_target_is_reported(solver: Solver) -> None:
    # y1 + y2 >= 2.5 has no solution in the unit square.
    solution = solver(np.array([0.5, 0.5]), two_class((1.0, 1.0), -2.5), 1)
    assert not solution.feasible
    assert solution.l2 == math.inf
    assert np.isnan(solution.perturbation).all()


def random_instance(
    rng: np.random.Generator, m: int = 30, k: int = 5, scale: float = 1.0
) -> tuple[np.ndarray, AffineClassifier, int]:
    """A random image, an affine classifier with K classes, and a target other than argmax."""
    x = rng.uniform(0.0, 1.0, m)
    classifier = AffineClassifier(weight=rng.normal(size=(k, m)), bias=scale * rng.normal(size=k))
    predicted = int(np.argmax(classifier.logits(x[None])[0]))
    target = int(rng.choice([t for t in range(k) if t != predicted]))
    return x, classifier, target


@pytest.mark.parametrize("seed", range(12))
def test_dual_and_primal_agree_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Large biases push the boundary far away, so that many pixels hit the box.
    x, classifier, target = random_instance(rng, scale=1.0 + 4.0 * (seed % 3))
    dual = solve_targeted_qp(x, classifier, target)
    primal = solve_targeted_qp_slsqp(x, classifier, target)
    assert dual.feasible == primal.feasible
    if not dual.feasible:
        return
    assert dual.l2 == pytest.approx(primal.l2, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(dual.perturbation, primal.perturbation, atol=1e-5)
    assert dual.max_violation < 1e-9
    assert dual.complementarity < 1e-9
    assert np.all(dual.multipliers >= 0.0)


def test_random_instances_hit_the_box() -> None:
    """The random family above really exercises the box (otherwise the box code is untested)."""
    clipped = 0
    for seed in range(12):
        x, classifier, target = random_instance(
            np.random.default_rng(seed), scale=1.0 + 4.0 * (seed % 3)
        )
        solution = solve_targeted_qp(x, classifier, target)
        if solution.feasible:
            y = x + solution.perturbation
            clipped += int(np.sum((y <= 0.0) | (y >= 1.0)))
    assert clipped > 0


@pytest.mark.parametrize("seed", [102, 103, 104, 105, 106])  # draws whose target is reachable
def test_no_feasible_point_is_closer(seed: int) -> None:
    """Random feasible points (the optimum pushed in random directions, projected) are never closer."""
    rng = np.random.default_rng(seed)
    x, classifier, target = random_instance(rng, m=10, k=4, scale=3.0)
    solution = solve_targeted_qp(x, classifier, target)
    assert solution.feasible
    others = [j for j in range(4) if j != target]
    for _ in range(2000):
        y = np.clip(x + solution.perturbation + 0.05 * rng.normal(size=x.size), 0.0, 1.0)
        z = classifier.logits(y[None])[0]
        if np.all(z[target] >= z[others]):
            assert np.linalg.norm(y - x) >= solution.l2 - 1e-12


def test_margin_gives_a_strict_lead() -> None:
    x, classifier, target = random_instance(np.random.default_rng(7))
    plain = solve_targeted_qp(x, classifier, target)
    strict = solve_targeted_qp(x, classifier, target, margin=0.5)
    z = classifier.logits((x + strict.perturbation)[None])[0]
    assert z[target] - np.delete(z, target).max() >= 0.5 - 1e-9
    assert strict.l2 > plain.l2


# --- the batch API on nn.Modules ---------------------------------------------------------------


def linear_model(seed: int = 0, side: int = 4, k: int = 5) -> nn.Sequential:
    """Flatten + Linear on (N, 1, side, side) images, random weights."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, k))
    return model.eval()


def batch(seed: int = 0, n: int = 6, side: int = 4) -> torch.Tensor:
    """Random images in [0, 1] of shape (n, 1, side, side)."""
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def predicted(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def test_affine_parameters_match_the_module() -> None:
    model = linear_model()
    classifier = affine_parameters(model)
    images = batch()
    with torch.no_grad():
        logits = model(images).double().numpy()
    np.testing.assert_allclose(
        classifier.logits(images.reshape(6, -1).double().numpy()), logits, atol=1e-6
    )


def test_untargeted_is_the_minimum_over_targets() -> None:
    model, images = linear_model(), batch()
    labels = predicted(model, images)
    result = exact_linear_attack(model, images, labels, progress=False)
    assert result.per_target_distortion is not None
    for i in range(images.shape[0]):
        per_target = []
        for t in range(5):
            if t == int(labels[i]):
                assert result.per_target_distortion[i, t] == math.inf
                continue
            targeted = exact_linear_attack(
                model, images[i : i + 1], targets=torch.tensor([t]), progress=False
            )
            per_target.append(float(targeted.distortion[0]))
            assert float(result.per_target_distortion[i, t]) == pytest.approx(
                per_target[-1], rel=1e-12
            )
        assert float(result.distortion[i]) == pytest.approx(min(per_target), rel=1e-12)
        assert int(result.target[i]) != int(labels[i])


def test_batch_result_fields() -> None:
    model, images = linear_model(), batch()
    labels = predicted(model, images)
    result = exact_linear_attack(model, images, labels, progress=False)
    n = images[0].numel()
    assert result.feasible.all()
    assert result.adversarial.shape == images.shape and result.adversarial.dtype == torch.float32
    assert result.adversarial.min() >= 0.0 and result.adversarial.max() <= 1.0
    l2 = result.perturbation.flatten(1).norm(dim=1)
    torch.testing.assert_close(result.l2, l2)
    torch.testing.assert_close(result.distortion, l2 / math.sqrt(n))
    assert (result.kkt_residual < 1e-9).all()


def test_margin_examples_are_adversarial_for_the_model() -> None:
    model, images = linear_model(1), batch(1)
    labels = predicted(model, images)
    result = exact_linear_attack(model, images, labels, margin=1e-3, progress=False)
    torch.testing.assert_close(predicted(model, result.adversarial), result.target, rtol=0, atol=0)


def test_result_does_not_depend_on_batch_mates() -> None:
    model, images = linear_model(2), batch(2, n=5)
    targets = (predicted(model, images) + 1) % 5
    together = exact_linear_attack(model, images, targets=targets, progress=False)
    for i in range(5):
        alone = exact_linear_attack(
            model, images[i : i + 1], targets=targets[i : i + 1], progress=False
        )
        assert float(alone.l2[0]) == float(together.l2[i])


def test_plain_linear_module_is_accepted() -> None:
    linear = nn.Linear(16, 3)
    images = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    result = exact_linear_attack(linear, images, targets=torch.tensor([0, 1]), progress=False)
    assert result.distortion.shape == (2,)


# --- refusals ----------------------------------------------------------------------------------


def test_non_affine_model_is_refused() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 5))
    with pytest.raises(InvalidInputError, match="exactly one Linear"):
        exact_linear_attack(mlp, batch(), targets=torch.zeros(6, dtype=torch.long))


def test_custom_module_is_refused() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(x.flatten(1)))

    with pytest.raises(InvalidInputError, match="affine model"):
        affine_parameters(Custom())


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (batch() * 2.0, r"\[0, 1\]"),
        (batch().masked_fill(torch.eye(4, dtype=torch.bool), float("nan")), "NaN"),
        (torch.rand(6, 1, 5, 5), "values each"),
        (torch.rand(0, 1, 4, 4), "empty batch"),
    ],
    ids=["out-of-range", "nan", "wrong-size", "empty"],
)
def test_bad_images_are_refused(images: torch.Tensor, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        exact_linear_attack(linear_model(), images, targets=torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize(
    ("labels", "targets", "match"),
    [
        (None, None, "pass labels"),
        (torch.zeros(5, dtype=torch.long), None, "shape"),
        (torch.zeros(6), None, "integer"),
        (None, torch.full((6,), 5), "class indices"),
    ],
    ids=["neither", "wrong-length", "float-labels", "target-out-of-range"],
)
def test_bad_labels_are_refused(
    labels: torch.Tensor | None, targets: torch.Tensor | None, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        exact_linear_attack(linear_model(), batch(), labels, targets=targets)


@pytest.mark.slow
def test_dual_and_primal_agree_on_mnist(mnist_dir: object) -> None:
    """Full 784-pixel MNIST instances of a least-squares linear classifier (SLSQP takes seconds)."""
    from intriguing.data import load_mnist

    data = load_mnist()
    images = data.train_images[:2000].reshape(2000, -1).double().numpy()
    onehot = np.eye(10)[data.train_labels[:2000].numpy()]
    design = np.hstack([images, np.ones((2000, 1))])
    coef = np.linalg.lstsq(design.T @ design + 1e-1 * np.eye(785), design.T @ onehot, rcond=None)[0]
    classifier = AffineClassifier(weight=coef[:-1].T.copy(), bias=coef[-1].copy())
    x = data.test_images[:3].reshape(3, -1).double().numpy()
    for i in range(3):
        target = (int(data.test_labels[i]) + 1) % 10
        dual = solve_targeted_qp(x[i], classifier, target)
        primal = solve_targeted_qp_slsqp(x[i], classifier, target)
        assert dual.l2 == pytest.approx(primal.l2, rel=1e-6)


def test_blas_threads_follow_torchs_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy/SciPy's BLAS ignores torch.set_num_threads: a 1000-class model ran at 196% of a core
    under one torch thread. The solver now runs with BLAS limited to torch's thread count."""
    from threadpoolctl import threadpool_info

    from intriguing.attacks import exact_linear

    seen: list[int] = []
    solve = exact_linear.solve_targeted_qp

    def spy(*args: object, **kwargs: object) -> object:
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return solve(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(exact_linear, "solve_targeted_qp", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(2, 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        exact_linear.exact_linear_attack(model, x, model(x).argmax(1), progress=False)
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
