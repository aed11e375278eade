"""Convolution operator norms (paper §4.3): FFT and power iteration against explicit matrices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intriguing.analysis.spectral_conv import (
    ConvGeometry,
    circular_conv_frame_bounds,
    circular_conv_singular_values,
    conv_operator_bounds,
    dilate_kernel,
    exact_norm,
    explicit_operator_matrix,
    lanczos_norm,
    power_iteration,
    zero_padded_conv,
    zero_padded_conv_transpose,
)
from intriguing.errors import InvalidInputError

FILTER = [[2.0, 7.0, -1.0], [1.0, 3.0, -8.0], [5.0, -3.0, 1.0]]
ONES = [[1.0] * 3] * 3
LAPLACIAN = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]
SOBEL_X = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]


def kernel(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(1, 1, 3, 3)


def circular_conv(
    weight: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int
):
    """The circular-boundary operator built independently: wrap-pad, then a valid strided conv."""
    kh = (weight.shape[-2] - 1) * dilation[0] + 1
    kw = (weight.shape[-1] - 1) * dilation[1] + 1

    def forward(x: torch.Tensor) -> torch.Tensor:
        wrapped = F.pad(x, (0, kw - 1, 0, kh - 1), mode="circular")
        return F.conv2d(wrapped, weight, stride=stride, dilation=dilation, groups=groups)

    return forward


@pytest.mark.parametrize(
    ("rows", "grid", "expected"),
    [
        (FILTER, 8, 22.013357),
        (FILTER, 20, 22.912213),
        (FILTER, 32, 22.965110),
        (ONES, 8, 9.0),
        (LAPLACIAN, 16, 8.0),
        (LAPLACIAN, 15, 7.912590),
        (SOBEL_X, 16, 8.0),
    ],
)
def test_known_circular_values(rows: list[list[float]], grid: int, expected: float) -> None:
    upper, _ = circular_conv_frame_bounds(kernel(rows), grid)
    assert upper == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("rows", "expected"), [(ONES, 8.796837), (LAPLACIAN, 7.931892), (SOBEL_X, 7.796837)]
)
def test_known_zero_padded_values(rows: list[list[float]], expected: float) -> None:
    weight = kernel(rows)
    geometry = ConvGeometry((16, 16), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    explicit = torch.linalg.svdvals(
        explicit_operator_matrix(zero_padded_conv(weight, geometry), (1, 16, 16))
    )
    bounds = conv_operator_bounds(weight, geometry, tol=1e-10, power_iterations=5000)
    assert float(explicit[0]) == pytest.approx(expected, abs=1e-5)
    assert bounds.exact == pytest.approx(expected, abs=1e-5)
    assert bounds.exact <= float(explicit[0]) + 1e-9  # power iteration approaches from below
    assert bounds.upper >= float(explicit[0]) - 1e-9


# (out channels, in channels per group, kernel h, kernel w, stride, dilation, groups, grid)
CASES = [
    (1, 1, 3, 3, (1, 1), (1, 1), 1, (8, 8)),
    (3, 2, 3, 3, (2, 2), (1, 1), 1, (8, 8)),
    (4, 3, 2, 2, (3, 3), (1, 1), 1, (9, 9)),
    (2, 4, 5, 5, (4, 4), (1, 1), 1, (8, 8)),
    (4, 2, 3, 3, (2, 2), (2, 2), 2, (12, 12)),
    (6, 1, 3, 3, (1, 1), (1, 1), 3, (6, 6)),
    (5, 2, 3, 2, (2, 1), (1, 2), 1, (8, 6)),
    (3, 3, 11, 11, (4, 4), (1, 1), 1, (12, 12)),
]


@pytest.mark.parametrize(
    ("d_out", "c_group", "kh", "kw", "stride", "dilation", "groups", "grid"), CASES
)
def test_fft_equals_explicit_circular_matrix(
    d_out: int,
    c_group: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    grid: tuple[int, int],
) -> None:
    weight = torch.randn(
        (d_out, c_group, kh, kw),
        generator=torch.Generator().manual_seed(kh * d_out),
        dtype=torch.float64,
    )
    values = circular_conv_singular_values(
        weight, grid, stride=stride, dilation=dilation, groups=groups
    )
    matrix = explicit_operator_matrix(
        circular_conv(weight, stride, dilation, groups), (c_group * groups, *grid)
    )
    explicit = torch.linalg.svdvals(matrix)
    assert values.numel() == min(matrix.shape)
    torch.testing.assert_close(values, explicit[: values.numel()], rtol=1e-9, atol=1e-9)


# (out, in per group, kernel, stride, dilation, padding, groups, input size)
ZERO_PADDED = [
    (3, 2, 3, 2, 1, 1, 1, (9, 9)),
    (4, 2, 3, 3, 2, 2, 2, (11, 11)),
    (5, 3, 2, 2, 1, 0, 1, (7, 7)),
    (2, 3, 5, 1, 1, 2, 1, (10, 8)),
    (4, 1, 3, 2, 1, 1, 4, (8, 8)),
]


@pytest.mark.parametrize(
    ("d_out", "c_group", "k", "stride", "dilation", "pad", "groups", "hw"), ZERO_PADDED
)
def test_zero_padded_operator(
    d_out: int,
    c_group: int,
    k: int,
    stride: int,
    dilation: int,
    pad: int,
    groups: int,
    hw: tuple[int, int],
) -> None:
    torch.manual_seed(d_out * 100 + k * 10 + stride)  # reproducible kernels, whatever ran before
    conv = nn.Conv2d(
        c_group * groups,
        d_out,
        k,
        stride=stride,
        dilation=dilation,
        padding=pad,
        groups=groups,
        bias=False,
    ).double()
    geometry = ConvGeometry.from_conv(conv, hw)
    shape = (c_group * groups, *hw)
    forward = zero_padded_conv(conv.weight.detach(), geometry)
    matrix = explicit_operator_matrix(forward, shape)
    # the operator is the layer itself, and the adjoint is its transpose
    torch.testing.assert_close(matrix, explicit_operator_matrix(lambda x: conv(x).detach(), shape))
    out_shape = tuple(forward(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
    transpose = explicit_operator_matrix(
        zero_padded_conv_transpose(conv.weight.detach(), geometry), out_shape
    )
    torch.testing.assert_close(transpose, matrix.T)
    exact = float(torch.linalg.svdvals(matrix)[0])
    bounds = conv_operator_bounds(conv.weight, geometry, tol=1e-10, power_iterations=5000)
    assert bounds.upper >= exact * (1 - 1e-12)
    assert bounds.exact is not None and bounds.power is not None
    assert bounds.exact == pytest.approx(exact, rel=1e-6)
    assert bounds.exact <= exact * (1 + 1e-12)
    assert bounds.power.converged and bounds.power.iterations >= 2


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_geometry_matches_layer() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2), bias=False).double()
    geometry = ConvGeometry.from_conv(conv, (7, 9))
    shape = (2, 7, 9)
    ours = explicit_operator_matrix(zero_padded_conv(conv.weight.detach(), geometry), shape)
    torch.testing.assert_close(ours, explicit_operator_matrix(lambda x: conv(x).detach(), shape))


def test_dilated_kernel_is_a_larger_sparse_kernel() -> None:
    weight = torch.randn((2, 3, 3, 2), dtype=torch.float64)
    dense = dilate_kernel(weight, (2, 3))
    assert dense.shape == (2, 3, 5, 4)
    x = torch.randn((1, 3, 12, 12), dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(x, weight, dilation=(2, 3)), F.conv2d(x, dense))


def test_torch_spectral_norm_is_not_the_operator_norm() -> None:
    """torch.nn.utils.spectral_norm reshapes the kernel to (D, C k k): 3 for the 3x3 ones filter."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    conv = nn.utils.parametrizations.spectral_norm(conv, n_power_iterations=50)
    conv.train()
    conv(torch.zeros(1, 1, 16, 16))
    original = conv.parametrizations.weight.original
    reshaped_sigma = float((original[0, 0, 0, 0] / conv.weight[0, 0, 0, 0]).detach())
    assert reshaped_sigma == pytest.approx(3.0, rel=1e-5)
    circular, _ = circular_conv_frame_bounds(original.detach(), 16)
    assert circular == pytest.approx(9.0)
    geometry = ConvGeometry((16, 16), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    exact = conv_operator_bounds(
        original.detach(), geometry, tol=1e-10, power_iterations=5000
    ).exact
    assert exact == pytest.approx(8.796837, abs=1e-5)
    assert exact is not None and exact > 2.9 * reshaped_sigma


def test_power_iteration_reports_non_convergence() -> None:
    weight = kernel(ONES)
    geometry = ConvGeometry((16, 16), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    result = power_iteration(
        zero_padded_conv(weight, geometry),
        zero_padded_conv_transpose(weight, geometry),
        (1, 16, 16),
        max_iter=3,
        tol=1e-14,
    )
    assert result.iterations == 3 and not result.converged
    assert result.sigma < 8.796837


def test_power_iteration_of_a_zero_operator() -> None:
    result = power_iteration(lambda x: 0 * x, lambda y: 0 * y, (2, 3))
    assert result.sigma == 0.0


@pytest.mark.parametrize(
    ("weight", "grid", "stride", "groups", "message"),
    [
        (torch.ones(1, 1, 3, 3), 9, 2, 1, "multiple of the stride"),
        (torch.ones(1, 1, 5, 5), 4, 1, 1, "larger than the grid"),
        (torch.ones(1, 3, 3), 8, 1, 1, "shape"),
        (torch.full((1, 1, 3, 3), float("nan")), 8, 1, 1, "NaN"),
        (torch.ones(3, 1, 3, 3), 8, 1, 2, "groups"),
        (torch.ones(1, 1, 3, 3), 8, 0, 1, "stride"),
    ],
)
def test_bad_input_is_one_line_error(
    weight: torch.Tensor, grid: int, stride: int, groups: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        circular_conv_singular_values(weight, grid, stride=stride, groups=groups)
    assert "\n" not in str(info.value)


def test_bad_power_iteration_settings() -> None:
    with pytest.raises(InvalidInputError, match="max_iter"):
        power_iteration(lambda x: x, lambda y: y, (2,), max_iter=0)


@pytest.mark.parametrize(
    ("d_out", "c_group", "k", "stride", "dilation", "pad", "groups", "hw"), ZERO_PADDED
)
def test_lanczos_equals_explicit_norm(
    d_out: int,
    c_group: int,
    k: int,
    stride: int,
    dilation: int,
    pad: int,
    groups: int,
    hw: tuple[int, int],
) -> None:
    torch.manual_seed(d_out * 100 + k * 10 + stride)  # reproducible kernels, whatever ran before
    conv = nn.Conv2d(
        c_group * groups,
        d_out,
        k,
        stride=stride,
        dilation=dilation,
        padding=pad,
        groups=groups,
        bias=False,
    ).double()
    geometry = ConvGeometry.from_conv(conv, hw)
    weight = conv.weight.detach()
    shape = (c_group * groups, *hw)
    exact = float(
        torch.linalg.svdvals(explicit_operator_matrix(zero_padded_conv(weight, geometry), shape))[0]
    )
    result = lanczos_norm(
        zero_padded_conv(weight, geometry), zero_padded_conv_transpose(weight, geometry), shape
    )
    assert result.method == "lanczos" and result.converged
    assert result.sigma == pytest.approx(exact, rel=1e-9)
    bounds = conv_operator_bounds(weight, geometry, exact_method="lanczos")
    assert bounds.exact == pytest.approx(exact, rel=1e-9) and bounds.upper >= exact * (1 - 1e-12)


def test_lanczos_on_a_tiny_operator_and_unknown_method() -> None:
    result = lanczos_norm(lambda x: 3 * x, lambda y: 3 * y, (1, 2))
    assert result.sigma == pytest.approx(3.0)
    assert exact_norm(lambda x: x, lambda y: y, (2,), method="none") is None
    with pytest.raises(InvalidInputError, match="unknown exact-norm method"):
        exact_norm(lambda x: x, lambda y: y, (2,), method="svd")
