"""The L-BFGS attack (section 4.1): closed-form cases, batch consistency, modes, real-MNIST checks."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, AttackResult, AttackWarning, lbfgs_attack
from intriguing.errors import IntriguingError, InvalidInputError

if TYPE_CHECKING:
    from conftest import FitOnMnist

pytestmark = pytest.mark.usefixtures("one_thread")


TIGHT = {"c_rtol": 1e-3, "ftol": 1e-10, "pgtol": 1e-9, "search_steps": 40, "progress": False}


def two_class_linear(w: tuple[float, float], bias: float) -> nn.Module:
    """Logits (0, w.x + bias) on 2-pixel images (N, 2): class 1 wins where w.x + bias > 0."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], list(w)]))
        model.bias.copy_(torch.tensor([0.0, bias]))
    return model.eval()


def test_closed_form_interior_optimum() -> None:
    """w = (2, 1), x = (0.3, 0.4), bias -2: r* = (0.4, 0.2), |r*| = 1/sqrt(5), inside the box."""
    model = two_class_linear((2.0, 1.0), -2.0)
    x = torch.tensor([[0.3, 0.4]])
    exact_l2 = 1 / math.sqrt(5)
    for mode in ("untargeted", "targeted"):
        kwargs = {"targets": torch.tensor([1])} if mode == "targeted" else {}
        res = LBFGS(mode=mode, **TIGHT)(model, x, torch.tensor([0]), **kwargs)
        assert bool(res.success.all())
        assert float(res.l2[0]) == pytest.approx(exact_l2, rel=2e-3)
        assert float(res.l2[0]) >= exact_l2 * (1 - 1e-6)
        assert float(res.distortion[0]) == pytest.approx(float(res.l2[0]) / math.sqrt(2), rel=1e-6)
        torch.testing.assert_close(res.adversarial[0], torch.tensor([0.7, 0.6]), atol=2e-3, rtol=0)


def test_closed_form_with_active_box_constraint() -> None:
    """x = (0.9, 0.2), w = (2, 1), bias -2.6: the free optimum leaves the box; r* = (0.1, 0.4)."""
    model = two_class_linear((2.0, 1.0), -2.6)
    x = torch.tensor([[0.9, 0.2]])
    res = LBFGS(mode="targeted", **TIGHT)(model, x, torch.tensor([0]), targets=torch.tensor([1]))
    assert bool(res.success.all())
    assert float(res.adversarial[0, 0]) == 1.0  # pinned exactly on the bound
    assert float(res.l2[0]) == pytest.approx(math.sqrt(0.17), rel=2e-3)
    assert float(res.l2[0]) > 0.3  # the unconstrained optimum (0.268) is not reachable
    default = LBFGS(mode="targeted", progress=False)(
        model, x, torch.tensor([0]), targets=torch.tensor([1])
    )
    assert float(default.l2[0]) == pytest.approx(math.sqrt(0.17), rel=1e-2)


def random_linear(dim: int = 20, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def random_images(n: int, dim: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["untargeted", "targeted"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_consistency(mode: str, dtype: torch.dtype) -> None:
    """An example's result does not depend on its batch-mates or on the number of slots.

    In float64 the results agree to rounding and the evaluation counts exactly. In float32 the
    model's batched and single-row matrix products round differently (different BLAS kernels); that
    can flip a discrete decision of the c-search (a stage's success right at the boundary), so most
    examples agree to 1e-3 and none differs by more than 5%.
    """
    model = random_linear().to(dtype)
    x = random_images(7).to(dtype)
    settings = {"mode": mode, "progress": False}
    if mode == "targeted":
        settings["target"] = "next"
    together = LBFGS(**settings)(model, x)
    few_slots = LBFGS(batch_size=3, **settings)(model, x)
    alone = [LBFGS(**settings)(model, x[i : i + 1]) for i in range(len(x))]
    single = torch.cat([res.distortion for res in alone]).double()
    evals = torch.cat([res.grad_evals for res in alone])
    for other in (together, few_slots):
        rel = (other.distortion.double() - single).abs() / single
        if dtype == torch.float64:
            assert float(rel.max()) < 1e-6
            assert torch.equal(other.grad_evals, evals)
        else:
            assert float(rel.median()) < 1e-3 and float(rel.max()) < 0.05


@pytest.fixture(scope="module")
def mnist_mlp(fit_on_mnist: FitOnMnist) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small sigmoid 784-32-10 net fitted for a few seconds on 5000 real MNIST images."""
    model, test_x, test_y = fit_on_mnist(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Sigmoid(), nn.Linear(32, 10)),
        5000,
        4,
    )
    with torch.no_grad():
        keep = model(test_x).argmax(1) == test_y
    assert float(keep.float().mean()) > 0.85
    return model, test_x[keep][:40], test_y[keep][:40]


def test_untargeted_misclassifies_every_example(
    mnist_mlp: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = mnist_mlp
    res = LBFGS(progress=False)(model, x, y)
    assert bool(res.success.all())
    with torch.no_grad():
        predicted = model(res.adversarial).argmax(1)
    assert bool((predicted != y).all())  # re-verified independently
    assert torch.equal(predicted, res.predicted)
    assert float(res.adversarial.min()) >= 0.0 and float(res.adversarial.max()) <= 1.0
    assert bool((res.distortion > 0).all()) and float(res.distortion.mean()) < 0.1
    torch.testing.assert_close(res.l2, 28 * res.distortion, rtol=1e-5, atol=1e-7)
    assert bool((res.targets == -1).all())
    assert bool((res.grad_evals >= res.iterations).all()) and bool((res.iterations > 0).all())
    assert bool(torch.isfinite(res.c).all())


def test_targeted_choosers_and_reverification(
    mnist_mlp: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = mnist_mlp
    x, y = x[:12], y[:12]
    with torch.no_grad():
        logits = model(x)
    expected = {
        "next": (y + 1) % 10,
        "least-likely": logits.argmin(1),
    }
    for chooser, targets in expected.items():
        res = LBFGS(mode="targeted", target=chooser, progress=False)(model, x, y)
        assert torch.equal(res.targets, targets)
        assert bool(res.success.all())
        with torch.no_grad():
            assert torch.equal(model(res.adversarial).argmax(1), targets)
    fixed = LBFGS(mode="targeted", target=3, progress=False)(model, x[y != 3], y[y != 3])
    assert bool((fixed.targets == 3).all()) and bool(fixed.success.all())


def test_random_targets_are_seeded(mnist_mlp: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = mnist_mlp
    x, y = x[:10], y[:10]
    first = LBFGS(mode="targeted", seed=3, progress=False)(model, x, y)
    again = LBFGS(mode="targeted", seed=3, progress=False)(model, x, y)
    other = LBFGS(mode="targeted", seed=4, progress=False)(model, x, y)
    assert torch.equal(first.targets, again.targets)
    assert torch.equal(first.adversarial, again.adversarial)
    assert not torch.equal(first.targets, other.targets)
    assert bool((first.targets != y).all())


def test_best_target_is_the_minimum_over_targets() -> None:
    model = random_linear(classes=4)
    x = random_images(3)
    with torch.no_grad():
        y = model(x).argmax(1)
    best = LBFGS(mode="targeted", target="best", progress=False)(model, x, y)
    per_target = []
    for t in range(4):
        targets = torch.full_like(y, t)
        ok = targets != y
        dist = torch.full((3,), math.inf)
        res = LBFGS(mode="targeted", progress=False)(model, x[ok], y[ok], targets=targets[ok])
        dist[ok] = res.distortion.double().float()
        per_target.append(dist)
    minimum, argmin = torch.stack(per_target, 1).min(1)
    torch.testing.assert_close(best.distortion, minimum, rtol=1e-4, atol=0)
    assert torch.equal(best.targets, argmin)
    untargeted_best = LBFGS(mode="untargeted", target="best", progress=False)(model, x, y)
    torch.testing.assert_close(untargeted_best.distortion, minimum, rtol=1e-4, atol=0)
    assert bool((untargeted_best.targets == -1).all())


def test_unreachable_target_is_reported_as_a_failure() -> None:
    """Class 2 can never win inside the box: success False, the attempt is not the original."""
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.1]]))
        model.bias.copy_(torch.tensor([0.0, 0.0, -5.0]))
    model.eval()
    x = torch.tensor([[0.9, 0.1, 0.5]])
    res = LBFGS(mode="targeted", search_steps=6, progress=False)(
        model, x, torch.tensor([0]), targets=torch.tensor([2])
    )
    assert not bool(res.success[0])
    assert res.summary()["success_rate"] == 0.0 and res.summary()["mean_distortion"] is None
    assert not torch.equal(res.adversarial, x)
    assert float(res.distortion[0]) > 0 and math.isfinite(float(res.distortion[0]))
    assert float(res.adversarial.min()) >= 0 and float(res.adversarial.max()) <= 1


def test_already_adversarial_examples_cost_one_evaluation() -> None:
    model = random_linear()
    x = random_images(4)
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 4
    res = LBFGS(progress=False)(model, x, wrong)
    assert bool(res.success.all())
    assert bool((res.distortion == 0).all())
    assert bool((res.grad_evals == 1).all())


def test_zero_gradients_warn_once_per_example() -> None:
    """Each of the 2 images is attacked as 2 candidate problems (3 classes): the warning counts
    the 2 images, not the 4 problems."""
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    model.eval()
    with pytest.warns(AttackWarning, match=r"^2 example\(s\) have an exactly zero input gradient"):
        res = LBFGS(search_steps=2, progress=False)(model, torch.full((2, 4), 0.5))
    assert not bool(res.success.any())


def test_zero_gradients_of_already_misclassified_images_do_not_warn() -> None:
    """A constant model that already misclassifies the images: solved at distortion 0, nothing is
    stuck, so no warning."""
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        res = LBFGS(progress=False)(model, torch.full((2, 4), 0.5), torch.tensor([1, 2]))
    assert bool(res.success.all()) and bool((res.distortion == 0).all())


def test_result_round_trip(tmp_path: Path) -> None:
    model = random_linear()
    x = random_images(5)
    res = lbfgs_attack(model, x, mode="targeted", target="next", progress=False)
    path = tmp_path / "res.safetensors"
    sidecar = res.save(path)
    assert sidecar.exists()
    back = AttackResult.load(path)
    for name in (
        "adversarial",
        "success",
        "distortion",
        "l2",
        "c",
        "iterations",
        "grad_evals",
        "labels",
        "predicted",
        "targets",
    ):
        assert torch.equal(getattr(back, name), getattr(res, name)), name
    assert back.settings == res.settings and back.mode == "targeted"
    summary = res.summary()
    assert summary["success_rate"] == 1.0 and summary["examples_per_s"] > 0
    assert summary["grad_evals_per_example"] == pytest.approx(float(res.grad_evals.double().mean()))
    path.write_bytes(b"garbage")
    with pytest.raises(IntriguingError, match="corrupt"):
        AttackResult.load(path)
    with pytest.raises(IntriguingError, match="not found"):
        AttackResult.load(tmp_path / "missing.safetensors")


def test_float64_model_and_images() -> None:
    model = random_linear().double()
    x = random_images(3).double()
    res = LBFGS(progress=False)(model, x)
    assert res.adversarial.dtype == torch.float64 and bool(res.success.all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    model = random_linear()
    x = random_images(6)
    cpu = LBFGS(progress=False)(model, x)
    gpu = LBFGS(progress=False)(model.cuda(), x.cuda())
    assert gpu.adversarial.device.type == "cuda"
    torch.testing.assert_close(gpu.distortion.cpu(), cpu.distortion, rtol=1e-3, atol=1e-6)


def test_no_warnings_on_a_normal_run() -> None:
    model = random_linear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LBFGS(progress=False)(model, random_images(3))


def test_threads_setting_is_applied_and_restored() -> None:
    seen: list[int] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = random_linear()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.inner(x)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        LBFGS(threads=1, progress=False)(Spy().eval(), random_images(2))
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InvalidInputError, match="threads"):
        LBFGS(threads=0)


def test_logit_scales_lift_only_small_logits() -> None:
    """Worked by hand: largest |logit| 1.5 -> 3 / 1.5 = 2; 0.003 -> 1000; 4 (above the reference
    3) -> exactly 1; all-zero logits -> the cap."""
    from intriguing.attacks.lbfgs import LOGIT_REFERENCE, MAX_LOGIT_SCALE, logit_scales

    assert LOGIT_REFERENCE == 3.0
    logits = torch.tensor(
        [[0.5, -1.5, 0.2], [0.001, -0.003, 0.0], [4.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
    )
    scales = logit_scales(logits)
    assert scales.dtype == torch.float64
    torch.testing.assert_close(scales[:2], torch.tensor([2.0, 1000.0], dtype=torch.float64))
    assert scales[2].item() == 1.0 and scales[3].item() == MAX_LOGIT_SCALE


def test_logit_scales_lower_only_huge_logits() -> None:
    """Worked by hand: largest |logit| 200 -> 50 / 200 = 0.25; 5e20 -> 1e-19; exactly the
    ceiling 50 and the usual 25 -> exactly 1."""
    from intriguing.attacks.lbfgs import LOGIT_CEILING, logit_scales

    assert LOGIT_CEILING == 50.0
    logits = torch.tensor([[200.0, -1.0], [5e20, 0.0], [50.0, 0.0], [-25.0, 3.0]])
    scales = logit_scales(logits)
    torch.testing.assert_close(scales[:2], torch.tensor([0.25, 1e-19], dtype=torch.float64))
    assert scales[2].item() == 1.0 and scales[3].item() == 1.0


def _flushing() -> bool:
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


class _FlushProbe(nn.Module):
    """A linear model that records whether subnormals are flushed while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.seen: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(_flushing())
        return self.linear(x)


@pytest.mark.parametrize("user_flush", [False, True])
def test_the_attack_flushes_subnormals_and_restores_the_mode(user_flush: bool) -> None:
    """Subnormal weights made the attack 7-8x slower on x86 (AE400-10); it now runs with them
    flushed to zero, and the caller's mode is left as it was."""
    if not torch.set_flush_denormal(user_flush):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        torch.manual_seed(0)
        model = _FlushProbe().eval()
        LBFGS(progress=False, search_steps=2)(model, torch.rand(3, 4))
        assert model.seen == {True}
        assert _flushing() == user_flush
    finally:
        torch.set_flush_denormal(False)
