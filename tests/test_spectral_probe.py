"""Adversarial probes of the spectral bound (paper section 4.3): each test failed before its fix.

A certified bound is compared with values measured independently of the rules (an explicit operator
matrix, a finite difference across a jump); an operation without a sound bound must be refused in
one line naming the layer or node.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intriguing.analysis.lipschitz import BoundConfig, network_bounds
from intriguing.analysis.spectral_conv import explicit_operator_matrix
from intriguing.errors import InvalidInputError

FAST = BoundConfig(exact_method="none", probe_iterations=30)


class _Fn(nn.Module):
    """A traced model ``forward(x) = fn(self, x)`` with the given submodules."""

    def __init__(self, fn, **modules: nn.Module) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def _refused(model: nn.Module, shape: tuple[int, ...], *words: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        network_bounds(model.double().eval(), shape, options=FAST)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def _jump_ratio(fn, at: float) -> float:  # type: ignore[no-untyped-def]
    """``|f(at + h) - f(at - h)| / 2h`` for a tiny ``h``: a jump makes it huge."""
    h = 1e-9
    x = torch.tensor([at - h, at + h], dtype=torch.float64)
    y = fn(x)
    return float((y[1] - y[0]).abs() / (2 * h))


def test_celu_with_negative_alpha_is_refused_not_bounded_by_one() -> None:
    """CELU(alpha < 0) has slope e^(-x/|alpha|) for x < 0: unbounded (it was bounded by 1)."""
    celu = nn.CELU(alpha=-1.0)
    x = torch.tensor([-3.0], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(celu(x).sum(), x)
    assert float(slope) > 10  # far above the old constant 1
    torch.manual_seed(0)
    _refused(nn.Sequential(nn.Linear(4, 3), nn.CELU(alpha=-1.0)), (4,), "'1'", "CELU", "alpha")
    graph = _Fn(lambda s, x: F.celu(s.a(x), -0.5), a=nn.Linear(4, 3))
    _refused(graph, (4,), "node 'celu'", "alpha")
    # a positive alpha keeps its constant 1, above the explicit norm of the linear layer's image
    bound = network_bounds(nn.Sequential(nn.Linear(4, 3), nn.CELU(2.0)).double().eval(), (4,))
    assert bound.layers[1].upper == 1.0


@pytest.mark.parametrize("threshold", [0.5, 1.0, 5.0])
def test_softplus_with_a_low_threshold_jumps_and_is_refused(threshold: float) -> None:
    """Softplus switches to x at beta x > threshold: a jump, which no Lipschitz constant covers."""
    ratio = _jump_ratio(lambda x: F.softplus(x, 1.0, threshold), threshold)
    assert ratio > 1e3  # measured across the switch: far above the old constant 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softplus(threshold=threshold))
    _refused(model, (4,), "'1'", "Softplus", "threshold")
    graph = _Fn(lambda s, x: F.softplus(s.a(x), threshold=threshold), a=nn.Linear(4, 3))
    _refused(graph, (4,), "node 'softplus'", "threshold")


def test_default_softplus_is_still_bounded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softplus(beta=3.0)).double().eval()
    bound = network_bounds(model, (4,), options=FAST)
    assert bound.layers[1].upper == 1.0
    assert bound.lipschitz >= bound.measured.value  # type: ignore[union-attr]


def test_hardsigmoid_bound_attained_exactly_is_not_a_certification_error() -> None:
    """Hardsigmoid's bound 1/6 * ||W|| is attained; autograd's float32 slope 1/6 measured 3e-8 above
    it and raised CertificationError ("internal error") on a correct bound."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    with torch.no_grad():
        linear.bias.zero_()
    model = nn.Sequential(linear, nn.Hardsigmoid()).double().eval()
    bound = network_bounds(model, (6,), options=FAST)
    norm = float(torch.linalg.matrix_norm(linear.weight.detach().double(), ord=2))
    assert bound.lipschitz == pytest.approx(norm / 6, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(norm / 6, rel=1e-6)
    graph = _Fn(lambda s, x: F.hardsigmoid(s.a(x)), a=linear)
    assert network_bounds(graph.double().eval(), (6,), options=FAST).lipschitz == pytest.approx(
        norm / 6, rel=1e-12
    )


def test_negative_divisor_override_large_avgpool_is_above_its_norm() -> None:
    """Beyond the explicit limit the Schur bound used signed row sums: AvgPool2d(divisor_override=-1)
    got 2 while the operator's norm is about 4."""
    pool = nn.AvgPool2d(2, 1, padding=1, divisor_override=-1)
    shape = (1, 20, 20)
    matrix = explicit_operator_matrix(lambda x: pool(x), shape)
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    options = BoundConfig(exact_method="none", explicit_limit=100, probe_iterations=30)
    bound = network_bounds(nn.Sequential(pool).double().eval(), shape, options=options)
    assert bound.layers[0].method.startswith("schur")
    assert bound.layers[0].upper >= norm * (1 - 1e-12)


@pytest.mark.parametrize("var, eps", [(-0.5, 1e-5), (0.0, 0.0)])
def test_batchnorm_with_non_positive_variance_is_refused_in_one_line(
    var: float, eps: float
) -> None:
    """var + eps <= 0 gives NaN/inf outputs; it crashed with a LinAlgError traceback."""
    bn = nn.BatchNorm2d(2, eps=eps).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([var, 1.0]))
    _refused(nn.Sequential(nn.Conv2d(1, 2, 3), bn), (1, 5, 5), "'1'", "BatchNorm2d", "running_var")
    graph = _Fn(
        lambda s, x: F.batch_norm(s.c(x), s.bn.running_mean, s.bn.running_var, eps=eps),
        c=nn.Conv2d(1, 2, 3),
        bn=bn,
    )
    _refused(graph, (1, 5, 5), "node 'batch_norm'", "running_var")


def test_max_pool_with_indices_is_refused_in_one_line() -> None:
    """MaxPool2d(return_indices=True) crashed with AttributeError/IndexError tracebacks."""
    _refused(nn.Sequential(nn.MaxPool2d(2, return_indices=True)), (1, 4, 4), "'0'", "tuple")
    graph = _Fn(lambda s, x: s.p(x)[0], p=nn.MaxPool2d(2, return_indices=True))
    _refused(graph, (1, 4, 4), "return_indices")
    graph = _Fn(lambda s, x: s.p(x)[0], p=nn.AdaptiveMaxPool2d(2, return_indices=True))
    _refused(graph, (1, 4, 4), "return_indices")


def test_float64_chain_with_parameter_free_batchnorm_is_bounded() -> None:
    """A float64 BatchNorm2d(affine=False) has buffers but no parameters: the chain ran it on float32
    zeros and refused the model ("mixed dtype")."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(2, affine=False)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.25, 4.0]))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), bn).double().eval()
    bound = network_bounds(model, (1, 5, 5), options=FAST)
    scale = 1 / (0.25 + bn.eps) ** 0.5
    assert bound.layers[1].upper == pytest.approx(scale)
    assert bound.lipschitz >= bound.measured.value  # type: ignore[union-attr]


def test_circular_conv_with_kernel_wider_than_the_image_is_bounded() -> None:
    """A circular 5x5 kernel on a 3x3 image wraps; it was refused with an unnamed error."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 5, padding=2, padding_mode="circular").double()
    shape = (2, 3, 3)
    matrix = explicit_operator_matrix(lambda x: conv(x) - conv(torch.zeros_like(x)), shape)
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    bound = network_bounds(nn.Sequential(conv).eval(), shape, options=FAST)
    assert bound.layers[0].upper >= norm * (1 - 1e-12)


def test_two_input_model_is_refused_as_such() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.a(y)

    _refused(Two(), (4,), "2 tensors", "exactly one input")


class _FunctionalPReLU(nn.Module):
    def __init__(self, slopes: torch.Tensor) -> None:
        super().__init__()
        self.slopes = nn.Parameter(slopes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.slopes)


@pytest.mark.parametrize("functional", [False, True])
def test_prelu_is_bounded_by_its_largest_slope_which_is_attained(functional: bool) -> None:
    """Before: PReLU (layer and F.prelu) was refused as having no rule. Slopes -4, 0.5 per channel:
    the bound is 4, and the Jacobian at an all-negative input (diag of the slopes) has norm 4."""
    slopes = torch.tensor([-4.0, 0.5], dtype=torch.float64)
    if functional:
        model: nn.Module = _FunctionalPReLU(slopes.clone())
    else:
        model = nn.PReLU(2).double()
        with torch.no_grad():
            model.weight.copy_(slopes)
    bound = network_bounds(model.eval(), (2, 3, 3))
    assert bound.lipschitz == pytest.approx(4.0)
    x = -torch.ones(1, 2, 3, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: model(t).flatten(), x).reshape(18, 18)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(4.0)


def _spike_jacobian_norm(pool: nn.Module, shape: tuple[int, ...], at: int) -> float:
    """``||J||_2`` of ``pool`` at an input whose only large entry is ``at`` (of the flat input):
    that entry is the max of every window holding it, so its column has one 1 per such window."""
    x = torch.rand(shape, dtype=torch.float64) * 0.1
    x.view(-1)[at] = 10.0
    jac = torch.autograd.functional.jacobian(lambda v: pool(v[None])[0], x)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))


@pytest.mark.parametrize(
    ("pool", "length", "windows"),
    [
        (nn.MaxPool1d(3, 1), 12, 3),  # every inner index in 3 windows
        (nn.MaxPool1d(2), 12, 1),  # disjoint windows
        (nn.MaxPool1d(3, 2, padding=1, dilation=2), 13, 3),  # odd index 3: windows 0, 1, 2
        (nn.AdaptiveMaxPool1d(4), 10, 2),  # [0,3) [2,5) [5,8) [7,10): indices 2 and 7 twice
    ],
)
def test_1d_max_pools_are_bounded_by_the_window_count_which_a_spike_attains(
    pool: nn.Module, length: int, windows: int
) -> None:
    """Conv1d was bounded but its pools were refused ("no Lipschitz rule")."""
    shape = (2, length)
    bound = network_bounds(nn.Sequential(pool).double().eval(), shape, options=FAST)
    assert bound.lipschitz == pytest.approx(windows**0.5, rel=1e-12)
    attained = max(_spike_jacobian_norm(pool, shape, at) for at in range(length))
    assert attained == pytest.approx(windows**0.5, rel=1e-9)


@pytest.mark.parametrize(
    "pool", [nn.AvgPool1d(3, 2, padding=1), nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(3)]
)
def test_1d_average_pools_are_bounded_by_their_operator_norm(pool: nn.Module) -> None:
    shape = (1, 11)
    norm = float(
        torch.linalg.matrix_norm(explicit_operator_matrix(lambda x: pool(x), shape), ord=2)
    )
    for options in (FAST, BoundConfig(exact_method="none", explicit_limit=5)):  # SVD, Schur
        bound = network_bounds(nn.Sequential(pool).double().eval(), shape, options=options)
        assert bound.lipschitz >= norm * (1 - 1e-12)
    assert network_bounds(nn.Sequential(pool).double().eval(), shape, options=FAST).lipschitz == (
        pytest.approx(norm, rel=1e-9)
    )


def test_a_1d_cnn_with_pools_is_bounded_above_its_measured_jacobian() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool1d(3, 2), nn.AvgPool1d(2),
        nn.AdaptiveMaxPool1d(3), nn.Flatten(), nn.Linear(12, 5),
    ).double().eval()  # fmt: skip
    bound = network_bounds(net, (2, 30), options=FAST)
    assert [layer.kind for layer in bound.layers][2:5] == [
        "MaxPool1d", "AvgPool1d", "AdaptiveMaxPool1d"
    ]  # fmt: skip
    assert bound.measured is not None and bound.lipschitz >= bound.measured.value > 0


def test_1d_pools_as_functions_match_their_layers() -> None:
    torch.manual_seed(1)
    conv = nn.Conv1d(2, 3, 3)
    layers = (
        nn.Sequential(
            conv,
            nn.MaxPool1d(3, 1),
            nn.AvgPool1d(2),
            nn.AdaptiveMaxPool1d(5),
            nn.AdaptiveAvgPool1d(4),
        )
        .double()
        .eval()
    )
    graph = (
        _Fn(
            lambda s, x: F.adaptive_avg_pool1d(
                F.adaptive_max_pool1d(F.avg_pool1d(F.max_pool1d(s.c(x), 3, 1), 2), 5), 4
            ),
            c=conv,
        )
        .double()
        .eval()
    )
    a = network_bounds(layers, (2, 20), options=FAST).lipschitz
    b = network_bounds(graph, (2, 20), options=FAST).lipschitz
    assert b == pytest.approx(a, rel=1e-12)


def test_global_max_over_a_dim_is_one_lipschitz() -> None:
    """A text-CNN's global max pooling, ``x.amax(dim=-1)`` (was refused: no rule for amax)."""
    torch.manual_seed(2)
    conv, fc = nn.Conv1d(3, 4, 3), nn.Linear(4, 2)
    graph = _Fn(lambda s, x: s.fc(torch.relu(s.conv(x)).amax(dim=-1)), conv=conv, fc=fc)
    layers = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), fc)
    a = network_bounds(graph.double().eval(), (3, 16), options=FAST)
    b = network_bounds(layers.double().eval(), (3, 16), options=FAST)
    assert a.lipschitz == pytest.approx(b.lipschitz, rel=1e-12)
    assert a.measured is not None and a.lipschitz >= a.measured.value > 0
    jac = torch.autograd.functional.jacobian(
        lambda v: v.amax(dim=-1), torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    )
    assert float(torch.linalg.matrix_norm(jac.reshape(2, 6), ord=2)) == 1.0  # attained
