"""Lipschitz rules of single layers (paper section 4.3, Table 5): one certified bound per layer type.

A rule ``rule(module, input_shape, output_shape, options) -> fields`` returns the layer's certified
upper bound ``upper`` on its Lipschitz constant (Euclidean norm, one example, no batch dimension) and
optionally ``lower`` (smallest singular value of a linear layer), ``exact`` (its exact norm from below),
``method``, ``size``, ``stride``, ``identity`` and ``details``. Each rule is justified in
``docs/spectral.md``; :mod:`intriguing.analysis.lipschitz` walks chains of layers with them and
:mod:`intriguing.analysis.trace` walks traced graphs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from intriguing.analysis.spectral_conv import (
    EXACT_METHODS,
    ConvGeometry,
    PowerIterationResult,
    circular_conv_frame_bounds,
    conv_operator_bounds,
    exact_norm,
    explicit_operator_matrix,
)
from intriguing.errors import InvalidInputError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BoundConfig:
    """Settings of :func:`network_bounds`.

    ``exact_method``: how the exact norms of zero-padded convolutions (and large average pools) are
    found, ``"power"`` (power iteration), ``"lanczos"`` (ARPACK) or ``"none"`` (skipped);
    ``power_iterations`` / ``tol``: its iteration limit and tolerance; ``explicit_limit``: largest
    single-channel pixel count for which a pooling operator's matrix is built explicitly;
    ``probe_inputs`` / ``probe_iterations`` / ``probe_tol``: random inputs in [0, 1], power iterations
    and tolerance of the measured lower bound (largest Jacobian norm, :mod:`~intriguing.analysis.jacobian`).
    """

    power_iterations: int = 2000
    tol: float = 1e-8
    exact_method: str = "power"
    explicit_limit: int = 4096
    probe_inputs: int = 4
    probe_iterations: int = 100
    probe_tol: float = 1e-7

    def __post_init__(self) -> None:
        if self.exact_method not in EXACT_METHODS:
            raise InvalidInputError(
                f"unknown exact_method {self.exact_method!r}; choose one of {', '.join(EXACT_METHODS)}"
            )
        if self.power_iterations < 1 or not self.tol > 0 or self.explicit_limit < 0:
            raise InvalidInputError(
                "power_iterations must be >= 1, tol > 0 and explicit_limit >= 0"
            )
        if self.probe_inputs < 1 or self.probe_iterations < 1 or not self.probe_tol > 0:
            raise InvalidInputError(
                "probe_inputs and probe_iterations must be >= 1 and probe_tol > 0 (the measured "
                "lower bound is never skipped)"
            )


BoundOptions = BoundConfig  # the old name

LayerRule = Callable[[nn.Module, Shape, Shape, BoundConfig], dict[str, Any]]
_RULES: dict[type[nn.Module], LayerRule] = {}


def register_layer_rule(*types: type[nn.Module]) -> Callable[[LayerRule], LayerRule]:
    """Register ``rule(module, input_shape, output_shape, options) -> fields`` for layer types.

    ``fields`` must hold ``upper`` and may hold ``lower``, ``exact``, ``method``, ``size``,
    ``stride``, ``identity`` and ``details`` (see :class:`LayerBound`).
    """

    def decorate(rule: LayerRule) -> LayerRule:
        for layer_type in types:
            _RULES[layer_type] = rule
        return rule

    return decorate


def supported_layers() -> list[str]:
    """Names of the layer types that have a rule."""
    return sorted(t.__name__ for t in _RULES)


def no_rule_message(name: str, module: nn.Module) -> str:
    """One line for layer ``name`` that has no rule: what to do, then the supported types."""
    kind = type(module).__name__
    return (
        f"layer {name!r} ({kind}) has no Lipschitz rule: register a certified bound with "
        f"intriguing.analysis.register_layer_rule({kind})(rule) (from the command line: in the file "
        f"that defines the model; see docs/spectral.md), or replace the layer; supported layers: "
        f"{', '.join(supported_layers())}"
    )


def find_rule(module: nn.Module) -> LayerRule | None:
    """The rule for exactly this type: a subclass may override ``forward``, so it needs its own."""
    kind = type(module)
    rule = _RULES.get(kind)
    if rule is not None:
        return rule
    if (kind.__module__, kind.__qualname__) in NORMALIZE_CLASSES:
        return _normalize_rule
    return None


# ``(x - mean) / std`` modules by where they are defined, never by name alone: a user's class called
# Normalize may compute anything (it is traced through its forward instead)
NORMALIZE_CLASSES = frozenset(
    {
        ("intriguing.models.preprocessing", "Normalize"),
        ("torchvision.transforms.transforms", "Normalize"),
    }
)


def _require_eval(module: nn.Module, what: str) -> None:
    if module.training:
        raise InvalidInputError(
            f"{type(module).__name__} is in training mode: call model.eval() before bounding ({what})"
        )


def _fmt_pair(pair: tuple[int, ...]) -> str:
    return str(pair[0]) if len(set(pair)) == 1 else "x".join(str(p) for p in pair)


# ---------------------------------------------------------------------------------------------
# Rules: linear operators
# ---------------------------------------------------------------------------------------------


@register_layer_rule(nn.Linear)
def _linear_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    assert isinstance(module, nn.Linear)
    weight = module.weight.detach().to(dtype=torch.float64, device="cpu")
    if not torch.isfinite(weight).all():
        raise InvalidInputError("Linear weight contains NaN or infinite values")
    values = torch.linalg.svdvals(weight)
    details: dict[str, Any] = {"injective": weight.shape[0] >= weight.shape[1]}
    if len(shape) != 1:  # Linear on (..., features): block-diagonal copies, same singular values
        details["note"] = f"applied to {math.prod(shape[:-1])} rows independently"
    return {
        "upper": float(values[0]),
        "lower": float(values[-1]),
        "method": "svd",
        "size": f"{module.in_features}x{module.out_features}",
        "details": details,
    }


@register_layer_rule(nn.Conv2d)
def _conv_rule(module: nn.Module, shape: Shape, out: Shape, options: BoundConfig) -> dict[str, Any]:
    assert isinstance(module, nn.Conv2d)
    if len(shape) != 3:
        raise InvalidInputError(f"Conv2d expects (C, H, W) inputs, got shape {shape}")
    geometry = ConvGeometry.from_conv(module, (shape[1], shape[2]))
    kh, kw = module.kernel_size
    size = f"{module.in_channels}x{kh}x{kw}x{module.out_channels}"
    stride = _fmt_pair(tuple(module.stride))
    if module.padding_mode == "zeros":
        bounds = conv_operator_bounds(
            module.weight,
            geometry,
            power_iterations=options.power_iterations,
            tol=options.tol,
            exact_method=options.exact_method,
        )
        details: dict[str, Any] = {
            "circular_grid": list(bounds.circular_grid),
            # the circular stand-in's smallest singular value: not a bound on the layer's own
            "circular_lower": bounds.circular_lower,
            "injective": math.prod(out) >= math.prod(shape),
        }
        if bounds.power is not None:
            details["exact_norm"] = bounds.power.to_dict()
        pointwise = tuple(module.weight.shape[-2:]) == (1, 1) and geometry.stride == (1, 1)
        same_operator = pointwise and geometry.pad_before == geometry.pad_after == (0, 0)
        return {
            "upper": bounds.upper,
            "lower": bounds.circular_lower if same_operator else None,
            "exact": bounds.exact,
            "method": f"fft-circular+{bounds.power.method}" if bounds.power else "fft-circular",
            "size": size,
            "stride": stride,
            "details": details,
        }
    return _padded_conv_rule(module, geometry, shape, out, options) | {
        "size": size,
        "stride": stride,
    }


def _padded_conv_rule(
    module: nn.Conv2d, geometry: ConvGeometry, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Conv2d with circular/reflect/replicate padding: ``conv_valid o pad``.

    Upper bound ``||C_{N'}|| * ||pad||`` with ``||pad|| = sqrt(max copies of one pixel)``; exact
    when the layer is itself a circular convolution on its input grid (circular padding, output
    ``N / s``); the true norm by power iteration with an autograd adjoint.
    """
    weight = module.weight.detach().to(dtype=torch.float64, device="cpu")
    pb, pa = geometry.pad_before, geometry.pad_after
    pad_arg = (pb[1], pa[1], pb[0], pa[0])
    mode = module.padding_mode

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, pad_arg, mode=mode),
            weight,
            stride=geometry.stride,
            dilation=geometry.dilation,
            groups=geometry.groups,
        )

    (h, w), (sh, sw) = geometry.input_hw, geometry.stride
    (dh, dw), (kh, kw) = geometry.dilation, weight.shape[-2:]
    exact_circular = (  # a dilated kernel wider than the image wraps: the general bound below
        mode == "circular"
        and h % sh == 0
        and w % sw == 0
        and out[1:] == (h // sh, w // sw)
        and (kh - 1) * dh < h
        and (kw - 1) * dw < w
    )
    if exact_circular:
        upper, lower = circular_conv_frame_bounds(
            weight,
            (h, w),
            stride=geometry.stride,
            dilation=geometry.dilation,
            groups=geometry.groups,
        )
        grid: tuple[int, int] = (h, w)
        pad_norm = 1.0
    else:
        unpadded = ConvGeometry(
            (h + sum((pb[0], pa[0])), w + sum((pb[1], pa[1]))),
            geometry.stride,
            geometry.dilation,
            (0, 0),
            (0, 0),
            geometry.groups,
        )
        grid = unpadded.circular_grid((weight.shape[-2], weight.shape[-1]))
        upper, lower = circular_conv_frame_bounds(
            weight, grid, stride=geometry.stride, dilation=geometry.dilation, groups=geometry.groups
        )
        pad_norm = _padding_norm(pad_arg, mode, (h, w))
        upper *= pad_norm
    details: dict[str, Any] = {"circular_grid": list(grid), "padding_norm": pad_norm}
    exact = None
    power = (
        None if exact_circular else _exact(forward, _vjp_adjoint(forward, shape), shape, options)
    )
    if power is not None:
        details["exact_norm"] = power.to_dict()
        exact = power.sigma
    return {
        "upper": upper,
        "lower": lower if exact_circular else None,
        "exact": exact,
        "method": "fft-circular" if exact_circular else f"fft-circular*pad-{mode}",
        "details": details,
    }


def _padding_norm(pad_arg: tuple[int, int, int, int], mode: str, hw: tuple[int, int]) -> float:
    """``||pad||`` for a copy-padding mode: ``sqrt`` of the most copies any pixel gets."""
    x = torch.zeros((1, 1, *hw), dtype=torch.float64, requires_grad=True)
    F.pad(x, pad_arg, mode=mode).sum().backward()
    assert x.grad is not None
    return math.sqrt(float(x.grad.max()))


def _vjp_adjoint(
    forward: Callable[[torch.Tensor], torch.Tensor], shape: Shape
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The transpose of a linear ``forward`` via autograd (``A^T u = grad_x <A x, u>``)."""

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        x = torch.zeros((1, *shape), dtype=u.dtype, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(forward(x), x, grad_outputs=u)
        return grad

    return adjoint


_POOLS_1D = (nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.MaxPool1d, nn.AdaptiveMaxPool1d)


def _pool_dims(module: nn.Module, shape: Shape) -> int:
    """1 or 2 spatial dimensions of a pooling layer; InvalidInputError for another input rank."""
    dims = 1 if isinstance(module, _POOLS_1D) else 2
    if len(shape) != dims + 1:
        layout = "(C, L)" if dims == 1 else "(C, H, W)"
        raise InvalidInputError(f"{type(module).__name__} expects {layout} inputs, got {shape}")
    return dims


@register_layer_rule(nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d)
def _avgpool_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Average pooling acts on each channel alike: bound the single-channel operator."""
    _pool_dims(module, shape)
    single = (1, *shape[1:])

    def forward(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(torch.float64))

    size = _pool_size(module)
    if math.prod(single) <= options.explicit_limit:
        values = torch.linalg.svdvals(explicit_operator_matrix(forward, single))
        return {
            "upper": float(values[0]),
            "lower": float(values[-1]),
            "method": "svd-explicit",
            **size,
        }
    adjoint = _vjp_adjoint(forward, single)
    ones = torch.ones((1, *single), dtype=torch.float64)
    # every entry has the sign of the divisor (a negative divisor_override flips them all), so the
    # absolute row and column sums are |A 1| and |A^T 1|: ||A||_2 <= sqrt(||A||_1 ||A||_inf) (Schur)
    row_sums = forward(ones).abs()
    col_sums = adjoint(torch.ones_like(row_sums)).abs()
    schur = math.sqrt(float(row_sums.max()) * float(col_sums.max()))
    details: dict[str, Any] = {"schur_bound": schur}
    exact = None
    power = _exact(forward, adjoint, single, options)
    if power is not None:
        details["exact_norm"] = power.to_dict()
        exact = power.sigma
    method = f"schur+{power.method}" if power is not None else "schur"
    return {"upper": schur, "exact": exact, "method": method, "details": details, **size}


def _exact(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    shape: Shape,
    options: BoundConfig,
) -> PowerIterationResult | None:
    return exact_norm(
        forward,
        adjoint,
        shape,
        method=options.exact_method,
        max_iter=options.power_iterations,
        tol=options.tol,
    )


def _pool_size(module: nn.Module) -> dict[str, str]:
    adaptive = (
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool2d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveMaxPool1d,
    )
    if isinstance(module, adaptive):
        return {"size": f"adaptive {module.output_size}"}
    dims = 1 if isinstance(module, _POOLS_1D) else 2
    kernel = _as_tuple(getattr(module, "kernel_size"), dims)  # noqa: B009 - untyped attributes
    stride = _as_tuple(getattr(module, "stride"), dims)  # noqa: B009
    return {"size": "x".join(str(k) for k in kernel), "stride": _fmt_pair(stride)}


@register_layer_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batchnorm_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Eval-mode BatchNorm is the diagonal map ``x -> gamma (x - mean) / sqrt(var + eps) + beta``."""
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    _require_eval(module, "batch statistics would be used")
    if module.running_var is None:
        raise InvalidInputError(
            f"{type(module).__name__} has track_running_stats=False: it normalises by batch statistics, "
            "which is not a fixed layer map"
        )
    scale = batchnorm_scale(module.running_var, module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().double().cpu()
    return {
        "upper": float(scale.abs().max()),
        "lower": float(scale.abs().min()),
        "method": "diagonal",
        "size": str(module.num_features),
    }


def batchnorm_scale(running_var: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / sqrt(running_var + eps)`` in float64; refused where ``var + eps`` is not positive and
    finite (the layer's output is then NaN or infinite, no Lipschitz map)."""
    var = running_var.detach().double().cpu() + float(eps)
    if not bool(torch.isfinite(var).all()) or bool((var <= 0).any()):
        raise InvalidInputError(
            f"running_var + eps must be positive and finite (min {float(var.min()):.3g}): "
            "the normalisation divides by its square root; fix or recompute the running statistics"
        )
    return 1.0 / torch.sqrt(var)


def _normalize_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Input normalisation ``(x - mean) / std`` per channel: a diagonal map with entries ``1/std``."""
    std = torch.as_tensor(module.std, dtype=torch.float64).flatten()
    if not torch.isfinite(std).all() or bool((std == 0).any()):
        raise InvalidInputError(
            f"{type(module).__name__}.std must be finite and non-zero, got {std.tolist()}"
        )
    if tuple(out) != tuple(shape):  # a std broadcasting the input to more channels copies it
        raise InvalidInputError(
            f"{type(module).__name__} maps shape {shape} to {out}: the channels of mean/std must match "
            "the input's"
        )
    inverse = 1.0 / std.abs()
    return {"upper": float(inverse.max()), "lower": float(inverse.min()), "method": "diagonal"}


# ---------------------------------------------------------------------------------------------
# Rules: non-linear and shape layers
# ---------------------------------------------------------------------------------------------


def _constant(value: float, *, lower: float | None = None, identity: bool = False) -> LayerRule:
    def rule(module: nn.Module, shape: Shape, out: Shape, options: BoundConfig) -> dict[str, Any]:
        return {"upper": value, "lower": lower, "method": "constant", "identity": identity}

    return rule


register_layer_rule(nn.Sigmoid)(_constant(0.25))  # sigma' = sigma (1 - sigma) <= 1/4
register_layer_rule(nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh)(_constant(1.0))
register_layer_rule(nn.Flatten, nn.Unflatten, nn.Identity)(_constant(1.0, lower=1.0, identity=True))


@register_layer_rule(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
def _dropout_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    _require_eval(module, "dropout is random in training mode")
    return {"upper": 1.0, "lower": 1.0, "method": "constant", "identity": True}


@register_layer_rule(nn.LeakyReLU)
def _leaky_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    assert isinstance(module, nn.LeakyReLU)
    return {"upper": max(1.0, abs(module.negative_slope)), "method": "constant"}


@register_layer_rule(nn.ELU)
def _elu_rule(module: nn.Module, shape: Shape, out: Shape, options: BoundConfig) -> dict[str, Any]:
    assert isinstance(module, nn.ELU)
    return {"upper": max(1.0, abs(module.alpha)), "method": "constant"}


@register_layer_rule(nn.MaxPool2d, nn.MaxPool1d)
def _maxpool_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Max pooling: ``sqrt(c)``, ``c`` the most windows that contain one input pixel.

    ``|max_W x - max_W x'| <= ||x_W - x'_W||_2`` for each window ``W``, so
    ``||y - y'||^2 <= sum_W ||x_W - x'_W||^2 = sum_i c_i (x_i - x'_i)^2 <= max_i c_i ||x - x'||^2``.
    Non-overlapping windows give ``c = 1`` (and 1 is then exact).
    """
    assert isinstance(module, nn.MaxPool2d | nn.MaxPool1d)
    _refuse_indices(module)
    dims = _pool_dims(module, shape)
    kernel = _as_tuple(module.kernel_size, dims)
    stride = _as_tuple(module.stride, dims)
    padding = _as_tuple(module.padding, dims)
    dilation = _as_tuple(module.dilation, dims)
    coverage = 1
    for dim in range(dims):
        coverage *= _max_window_count(
            shape[1 + dim], out[1 + dim], kernel[dim], stride[dim], padding[dim], dilation[dim]
        )
    return {
        "upper": math.sqrt(coverage),
        "method": "window-count",
        "size": "x".join(str(k) for k in kernel),
        "stride": _fmt_pair(stride),
        "details": {"max_windows_per_pixel": coverage},
    }


def _refuse_indices(module: nn.Module) -> None:
    """A max pool with ``return_indices=True`` returns the argmax positions too: not Lipschitz."""
    if getattr(module, "return_indices", False):
        raise InvalidInputError(
            f"{type(module).__name__}(return_indices=True) also returns argmax indices, which are not "
            "Lipschitz: bound the model with return_indices=False"
        )


def _as_pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _as_tuple(value: Any, dims: int) -> tuple[int, ...]:
    """A pooling size (an int, or a tuple with one entry per spatial dimension) as ``dims`` ints."""
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value[:dims])


def _max_window_count(
    size: int, n_out: int, kernel: int, stride: int, padding: int, dilation: int
) -> int:
    """Most 1-D pooling windows (``n_out`` of them, as the layer produced) holding one input index."""
    counts = [0] * size
    for j in range(n_out):
        for t in range(kernel):
            index = j * stride - padding + t * dilation
            if 0 <= index < size:
                counts[index] += 1
    return max(counts) if counts else 1


# ---------------------------------------------------------------------------------------------
# Rules: smooth activations, softmax, 1-D layers
# ---------------------------------------------------------------------------------------------


def gelu_constant(approximate: str = "none") -> float:
    """Lipschitz constant of GELU: ``sup |d/dx x Phi(x)|``.

    Exact GELU: ``g' = Phi(x) + x phi(x)`` and ``g'' = phi(x) (2 - x^2)``, so ``g'`` has its extrema at
    ``x = +-sqrt 2``: ``g'(sqrt 2) = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.12890`` and
    ``g'(-sqrt 2) = 1 - g'(sqrt 2)``; the limits are 0 and 1. The tanh approximation is bounded on a
    grid (:func:`sup_abs_derivative`).
    """
    if approximate == "none":
        root2 = math.sqrt(2.0)
        phi = math.exp(-1.0) / math.sqrt(2.0 * math.pi)
        return 0.5 * (1.0 + math.erf(1.0)) + root2 * phi
    if approximate == "tanh":
        return sup_abs_derivative(lambda x: F.gelu(x, approximate="tanh"))
    raise InvalidInputError(f"GELU approximate={approximate!r} has no Lipschitz rule")


_SUP_CACHE: dict[str, float] = {}


def sup_abs_derivative(
    fn: Callable[[torch.Tensor], torch.Tensor], *, half_width: float = 40.0, step: float = 1e-4
) -> float:
    """A certified bound on ``sup_x |fn'(x)|`` for a smooth scalar activation.

    ``fn'`` is evaluated by autograd on a grid of spacing ``step`` over ``[-half_width, half_width]``
    and ``step / 2`` is added: every ``x`` is within ``step / 2`` of a grid point and the activations
    used here (SiLU, tanh-GELU) have ``|fn''| <= 1``. Outside the grid their derivatives are within
    1e-15 of their limits 0 and 1, which the grid's ends already reach.
    """
    key = getattr(fn, "__name__", repr(fn)) + f"{half_width}:{step}"
    if key not in _SUP_CACHE:
        x = torch.arange(-half_width, half_width + step, step, dtype=torch.float64)
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        _SUP_CACHE[key] = float(grad.abs().max()) + step / 2
    return _SUP_CACHE[key]


def silu_constant() -> float:
    """Lipschitz constant of SiLU ``x sigma(x)`` (1.0998 at ``x = 2.3994``), certified on a grid."""
    return sup_abs_derivative(F.silu)


def _activation(value: Callable[[nn.Module], float]) -> LayerRule:
    def rule(module: nn.Module, shape: Shape, out: Shape, options: BoundConfig) -> dict[str, Any]:
        return {"upper": value(module), "method": "constant"}

    return rule


register_layer_rule(nn.GELU)(_activation(lambda m: gelu_constant(str(getattr(m, "approximate")))))  # noqa: B009
register_layer_rule(nn.SiLU)(_activation(lambda m: silu_constant()))
# SELU: scale * max(1, alpha e^x) for x <= 0, so scale * max(1, alpha); CELU: e^(x/alpha) <= 1
register_layer_rule(nn.SELU)(_activation(lambda m: 1.0507009873554805 * 1.6732632423543772))
register_layer_rule(nn.Softsign)(_activation(lambda m: 1.0))


def prelu_constant(weight: torch.Tensor) -> float:
    """PReLU ``max(0, x) + a min(0, x)`` with slopes ``a`` (one, or one per channel): its slope is
    1 or ``a`` at every point, so ``max(1, max |a|)`` (attained where the largest ``|a|`` acts)."""
    return max(1.0, float(weight.detach().double().abs().max()))


@register_layer_rule(nn.PReLU)
def _prelu_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    assert isinstance(module, nn.PReLU)
    return {"upper": prelu_constant(module.weight), "method": "constant"}


def softplus_constant(beta: float, threshold: float) -> float:
    """Softplus ``log(1 + e^(beta x)) / beta``, switched to ``x`` where ``beta x > threshold``: slope
    ``sigmoid(beta x) <= 1`` on both pieces, but the switch is a jump of ``log1p(e^-threshold) / |beta|``
    and a jump has no Lipschitz constant. It is refused unless below float32 rounding of the value at
    the switch (the default threshold 20 jumps by ``2e-9``, far below it); then the constant is 1.
    """
    if not beta or not math.isfinite(beta) or not math.isfinite(threshold):
        raise InvalidInputError(f"Softplus needs a finite non-zero beta, got {beta}")
    jump = math.log1p(math.exp(-threshold)) / abs(beta) if threshold > -700 else math.inf
    if jump > 2.0**-24 * max(1.0, abs(threshold / beta)):
        raise InvalidInputError(
            f"Softplus(beta={beta}, threshold={threshold}) jumps by {jump:.3g} where it switches "
            "to x, so it has no Lipschitz constant; use threshold >= 20 (the default)"
        )
    return 1.0


def celu_constant(alpha: float) -> float:
    """CELU ``max(0, x) + min(0, alpha (e^(x / alpha) - 1))``: slope ``e^(x / alpha) <= 1`` for
    ``x < 0`` when ``alpha > 0``; a negative ``alpha`` makes it ``e^(-x / |alpha|)``, unbounded: refused."""
    if not alpha > 0:
        raise InvalidInputError(
            f"CELU with alpha={alpha} has an unbounded slope for x < 0 (no Lipschitz "
            "constant); use alpha > 0"
        )
    return 1.0


@register_layer_rule(nn.Softplus)
def _softplus_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    assert isinstance(module, nn.Softplus)
    return {"upper": softplus_constant(module.beta, module.threshold), "method": "constant"}


@register_layer_rule(nn.CELU)
def _celu_rule(module: nn.Module, shape: Shape, out: Shape, options: BoundConfig) -> dict[str, Any]:
    assert isinstance(module, nn.CELU)
    return {"upper": celu_constant(module.alpha), "method": "constant"}


register_layer_rule(nn.Hardsigmoid)(_activation(lambda m: 1.0 / 6.0))
register_layer_rule(nn.Hardswish)(_activation(lambda m: 1.5))  # x/3 + 1/2 on (-3, 3): at most 3/2


def softmax_constant() -> float:
    """Softmax is 1/2-Lipschitz: its Jacobian ``diag(p) - p p^T`` is symmetric positive semi-definite
    and row ``i`` has diagonal ``p_i (1 - p_i)`` and off-diagonal absolute sum ``p_i (1 - p_i)``, so
    by Gershgorin every eigenvalue is at most ``max_i 2 p_i (1 - p_i) <= 1/2``.
    """
    return 0.5


def log_softmax_constant(classes: int) -> float:
    """``log_softmax`` over ``classes`` values: Jacobian ``I - 1 p^T``, norm ``<= 1 + sqrt(classes)``
    (``||1 p^T|| = ||1|| ||p|| <= sqrt(classes)``).
    """
    return 1.0 + math.sqrt(classes)


@register_layer_rule(nn.Softmax, nn.Softmin)
def _softmax_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    return {"upper": softmax_constant(), "method": "gershgorin"}


@register_layer_rule(nn.LogSoftmax)
def _log_softmax_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    dim = getattr(module, "dim", None)
    if dim is None:
        raise InvalidInputError("LogSoftmax without dim has no Lipschitz rule: give dim=1")
    classes = shape[dim - 1 if dim > 0 else dim]  # shapes have no batch dimension
    return {"upper": log_softmax_constant(classes), "method": "triangle"}


def conv1d_as_conv2d(module: nn.Conv1d) -> nn.Conv2d:
    """The same operator as a Conv2d on ``(C, 1, L)``: kernel ``(1, k)``, stride ``(1, s)``, ..."""
    if isinstance(module.padding, str):
        padding: Any = module.padding
    else:
        padding = (0, int(module.padding[0]))
    conv = nn.Conv2d(
        module.in_channels,
        module.out_channels,
        (1, int(module.kernel_size[0])),
        stride=(1, int(module.stride[0])),
        padding=padding,
        dilation=(1, int(module.dilation[0])),
        groups=module.groups,
        bias=False,
        padding_mode=module.padding_mode,
    )
    with torch.no_grad():
        conv.weight.copy_(module.weight.detach()[:, :, None, :])
    return conv


@register_layer_rule(nn.Conv1d)
def _conv1d_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Conv1d on ``(C, L)`` is a Conv2d on ``(C, 1, L)`` with a ``1 x k`` kernel: the same bounds."""
    assert isinstance(module, nn.Conv1d)
    if len(shape) != 2:
        raise InvalidInputError(f"Conv1d expects (C, L) inputs, got shape {shape}")
    conv = conv1d_as_conv2d(module).to(module.weight.device)
    fields = _conv_rule(conv, (shape[0], 1, shape[1]), (out[0], 1, out[1]), options)
    k = int(module.kernel_size[0])
    fields["size"] = f"{module.in_channels}x{k}x{module.out_channels}"
    return fields


@register_layer_rule(nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)
def _adaptive_maxpool_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundConfig
) -> dict[str, Any]:
    """Adaptive max pooling: ``sqrt(c)`` as for MaxPool2d; output ``i`` of ``n`` over ``m`` inputs
    reads ``[floor(i m / n), ceil((i + 1) m / n))``, windows that overlap when ``n`` does not divide ``m``.
    """
    _refuse_indices(module)
    dims = _pool_dims(module, shape)
    coverage = 1
    for dim in range(dims):
        size, n_out = shape[1 + dim], out[1 + dim]
        counts = [0] * size
        for i in range(n_out):
            for index in range((i * size) // n_out, -((-(i + 1) * size) // n_out)):
                counts[index] += 1
        coverage *= max(counts)
    return {
        "upper": math.sqrt(coverage),
        "method": "window-count",
        "details": {"max_windows_per_pixel": coverage},
        **_pool_size(module),
    }
