"""Layer-wise Lipschitz (frame) bounds of a network and their product (paper section 4.3, Table 5).

For a network ``phi = phi_K o ... o phi_1`` each layer is Lipschitz in the Euclidean norm with constant
``L_k`` and the network with ``L <= prod_k L_k``. :func:`network_bounds` walks a model layer by layer,
propagating the input shape (convolution bounds depend on the image size), and returns one
:class:`LayerBound` per layer: a certified upper bound ``upper`` on ``L_k`` and, for linear layers,
the smallest singular value ``lower`` (the lower frame bound of the paper's Table 5).

Rules (each justified in ``docs/spectral.md``):

- ``Linear``: exact SVD of the weight.
- ``Conv2d``: circular operator on a grid ``N'`` by FFT (upper: certified; exact if the layer is
  circular) and the true operator by power iteration (exact from below); see
  :mod:`intriguing.analysis.spectral_conv`. Other padding modes multiply the circular bound by the
  padding operator's norm.
- ``Sigmoid`` 1/4; ``ReLU``, ``ReLU6``, ``Tanh``, ``Hardtanh``, ``Softplus`` 1; ``LeakyReLU``
  ``max(1, |slope|)``; ``ELU`` ``max(1, alpha)``.
- ``Flatten``, ``Unflatten``, ``Identity``, ``Dropout`` (eval mode): 1 (isometries).
- ``MaxPool2d``: ``sqrt(c)`` with ``c`` the largest number of pooling windows containing one input
  pixel (1 when windows do not overlap).
- ``AvgPool2d``, ``AdaptiveAvgPool2d``: the exact norm of their linear operator (explicit SVD for
  maps up to ``explicit_limit`` pixels, else power iteration and the Schur bound).
- ``BatchNorm1d/2d`` (eval mode): ``max |gamma / sqrt(var + eps)|`` (lower: the minimum).
- Input normalisation (a module named ``Normalize`` with ``std``, e.g. torchvision's): ``max 1/|std|``.

Any other layer is refused with a one-line :class:`~intriguing.errors.InvalidInputError`; register a
rule with :func:`register_layer_rule` to support it. Non-``Sequential`` models need an explicit
``layers=`` list in call order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
class BoundOptions:
    """Settings of :func:`network_bounds`.

    ``exact_method``: how the exact norms of zero-padded convolutions (and large average pools) are
    found, ``"power"`` (power iteration), ``"lanczos"`` (ARPACK) or ``"none"`` (skipped);
    ``power_iterations`` / ``tol``: its iteration limit and tolerance; ``explicit_limit``: largest
    single-channel pixel count for which a pooling operator's matrix is built explicitly.
    """

    power_iterations: int = 2000
    tol: float = 1e-8
    exact_method: str = "power"
    explicit_limit: int = 4096

    def __post_init__(self) -> None:
        if self.exact_method not in EXACT_METHODS:
            raise InvalidInputError(
                f"unknown exact_method {self.exact_method!r}; choose one of {', '.join(EXACT_METHODS)}"
            )
        if self.power_iterations < 1 or not self.tol > 0 or self.explicit_limit < 0:
            raise InvalidInputError(
                "power_iterations must be >= 1, tol > 0 and explicit_limit >= 0"
            )


@dataclass
class LayerBound:
    """Bounds of one layer acting on ``input_shape`` (one example, no batch dimension).

    ``upper``: certified upper bound on the layer's Lipschitz constant (L2 -> L2).
    ``lower``: smallest singular value of the layer's linear operator (``None`` for non-linear
    layers). ``exact``: the exact operator norm when it is below ``upper`` (zero-padded
    convolutions: power iteration, a certified lower bound on the norm). ``method`` names the rule;
    ``details`` holds its diagnostics (power-iteration counts, circular grid, ...).
    """

    name: str
    kind: str
    size: str
    stride: str
    input_shape: Shape
    output_shape: Shape
    upper: float
    lower: float | None
    exact: float | None
    method: str
    identity: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "stride": self.stride,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "upper": self.upper,
            "lower": self.lower,
            "exact": self.exact,
            "method": self.method,
            "details": self.details,
        }


@dataclass
class NetworkBound:
    """Per-layer bounds of a network and the product bound ``lipschitz = prod(upper)``."""

    layers: list[LayerBound]
    input_shape: Shape

    @property
    def lipschitz(self) -> float:
        """Certified upper bound on the network's Lipschitz constant (input L2 -> output L2)."""
        return math.prod(layer.upper for layer in self.layers)

    @property
    def lipschitz_exact_norms(self) -> float:
        """The product with each layer's exact norm where known (``exact``), else its ``upper``.

        Still an upper bound on the Lipschitz constant when the exact norms are exact; power iteration
        approaches them from below, so this product is not certified.
        """
        return math.prod(
            layer.exact if layer.exact is not None else layer.upper for layer in self.layers
        )

    def to_markdown(self) -> str:
        """The per-layer table (Table 5's columns plus exact norm and method) as Markdown."""
        lines = [
            "| layer | type | size | stride | upper | exact | lower | method |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for layer in self.layers:
            cells = (
                layer.name,
                layer.kind,
                layer.size,
                layer.stride,
                _short(layer.upper),
                _short(layer.exact),
                _short(layer.lower),
                layer.method,
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"| **product** | | | | **{_short(self.lipschitz)}** | | | |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "lipschitz_upper": self.lipschitz,
            "lipschitz_exact_norms": self.lipschitz_exact_norms,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _short(value: float | None) -> str:
    """4 significant digits; '-' for none."""
    if value is None:
        return "-"
    return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


LayerRule = Callable[[nn.Module, Shape, Shape, BoundOptions], dict[str, Any]]
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


def _find_rule(module: nn.Module) -> LayerRule | None:
    """The rule for exactly this type: a subclass may override ``forward``, so it needs its own."""
    rule = _RULES.get(type(module))
    if rule is not None:
        return rule
    if type(module).__name__ == "Normalize" and hasattr(module, "std"):
        return _normalize_rule
    return None


# ---------------------------------------------------------------------------------------------
# Walking a model
# ---------------------------------------------------------------------------------------------


def sequential_layers(
    model: nn.Module, layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None
) -> list[tuple[str, nn.Module]]:
    """The model's layers in call order as ``(dotted name, module)``; nested Sequentials expanded.

    ``model`` must be an ``nn.Sequential`` unless ``layers`` lists its layers in call order (modules
    or ``(name, module)`` pairs); anything else is refused, since the call order of a general
    ``forward`` cannot be read off the module tree.
    """
    if layers is not None:
        named = [
            item if isinstance(item, tuple) else (str(i), item) for i, item in enumerate(layers)
        ]
        if not named:
            raise InvalidInputError("layers= is empty: list the model's layers in call order")
    elif _is_plain_sequential(model):
        named = list(model.named_children())
    else:
        raise InvalidInputError(
            f"{type(model).__name__} is not an nn.Sequential: pass layers=[...] (its layers in call order)"
        )
    out: list[tuple[str, nn.Module]] = []
    for name, module in named:
        if _is_plain_sequential(module):
            out.extend((f"{name}.{sub}", m) for sub, m in sequential_layers(module))
        else:
            out.append((name, module))
    return out


def _is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` whose ``forward`` is Sequential's own (calls its children in order)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def network_bounds(
    model: nn.Module,
    input_shape: Shape,
    *,
    layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None,
    options: BoundOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> NetworkBound:
    """Bounds of every layer of ``model`` on inputs of shape ``input_shape`` (no batch dimension).

    Args:
        model: an ``nn.Sequential`` (nested allowed), or any module with ``layers`` given.
        input_shape: one example's shape, e.g. ``(1, 28, 28)`` for MNIST, ``(3, 224, 224)``.
        layers: the layers in call order, for non-Sequential models.
        options: :class:`BoundOptions`.
        progress: called with each layer's name before it is analysed.

    Returns:
        :class:`NetworkBound` with a :class:`LayerBound` per layer and the product bound.
    """
    options = options or BoundOptions()
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise InvalidInputError(
            f"input_shape must be positive sizes without batch, got {input_shape}"
        )
    shape: Shape = tuple(int(d) for d in input_shape)
    results = []
    for name, module in sequential_layers(model, layers):
        rule = _find_rule(module)
        if rule is None:
            raise InvalidInputError(
                f"layer {name!r} ({type(module).__name__}) has no Lipschitz rule; supported: "
                f"{', '.join(supported_layers())} (add one with register_layer_rule)"
            )
        if progress is not None:
            progress(name)
        out_shape = _output_shape(module, name, shape)
        fields = rule(module, shape, out_shape, options)
        results.append(
            LayerBound(
                name=name,
                kind=type(module).__name__,
                size=fields.pop("size", "-"),
                stride=fields.pop("stride", "-"),
                input_shape=shape,
                output_shape=out_shape,
                upper=float(fields.pop("upper")),
                lower=fields.pop("lower", None),
                exact=fields.pop("exact", None),
                method=fields.pop("method", "constant"),
                identity=fields.pop("identity", False),
                details=fields.pop("details", {}),
            )
        )
        shape = out_shape
    return NetworkBound(layers=results, input_shape=tuple(int(d) for d in input_shape))


def _output_shape(module: nn.Module, name: str, shape: Shape) -> Shape:
    """Shape of ``module``'s output for one input of ``shape`` (run on zeros)."""
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, *shape), dtype=dtype, device=device))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"layer {name!r} cannot take input of shape {shape}: {first}"
        ) from None
    return tuple(out.shape[1:])


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
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
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
def _conv_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
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
            "injective": math.prod(out) >= math.prod(shape),
        }
        if bounds.power is not None:
            details["exact_norm"] = bounds.power.to_dict()
        return {
            "upper": bounds.upper,
            "lower": bounds.circular_lower,
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
    module: nn.Conv2d, geometry: ConvGeometry, shape: Shape, out: Shape, options: BoundOptions
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
    exact_circular = (
        mode == "circular" and h % sh == 0 and w % sw == 0 and out[1:] == (h // sh, w // sw)
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


@register_layer_rule(nn.AvgPool2d, nn.AdaptiveAvgPool2d)
def _avgpool_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    """Average pooling acts on each channel alike: bound the single-channel operator."""
    if len(shape) != 3:
        raise InvalidInputError(f"{type(module).__name__} expects (C, H, W) inputs, got {shape}")
    single = (1, shape[1], shape[2])

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
    row_sums = forward(ones)  # nonnegative matrix: ||A||_2 <= sqrt(||A||_1 ||A||_inf) (Schur test)
    col_sums = adjoint(torch.ones_like(row_sums))
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
    options: BoundOptions,
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
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        return {"size": f"adaptive {module.output_size}"}
    kernel = _as_pair(getattr(module, "kernel_size"))  # noqa: B009 - untyped pooling attributes
    stride = _as_pair(getattr(module, "stride"))  # noqa: B009
    return {"size": "x".join(str(k) for k in kernel), "stride": _fmt_pair(stride)}


@register_layer_rule(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    """Eval-mode BatchNorm is the diagonal map ``x -> gamma (x - mean) / sqrt(var + eps) + beta``."""
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    _require_eval(module, "batch statistics would be used")
    if module.running_var is None:
        raise InvalidInputError(
            f"{type(module).__name__} has track_running_stats=False: it normalises by batch statistics, "
            "which is not a fixed layer map"
        )
    scale = 1.0 / torch.sqrt(module.running_var.detach().double().cpu() + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().double().cpu()
    return {
        "upper": float(scale.abs().max()),
        "lower": float(scale.abs().min()),
        "method": "diagonal",
        "size": str(module.num_features),
    }


def _normalize_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    """Input normalisation ``(x - mean) / std`` per channel: a diagonal map with entries ``1/std``."""
    std = torch.as_tensor(module.std, dtype=torch.float64).flatten()
    if not torch.isfinite(std).all() or bool((std == 0).any()):
        raise InvalidInputError(
            f"{type(module).__name__}.std must be finite and non-zero, got {std.tolist()}"
        )
    inverse = 1.0 / std.abs()
    return {"upper": float(inverse.max()), "lower": float(inverse.min()), "method": "diagonal"}


# ---------------------------------------------------------------------------------------------
# Rules: non-linear and shape layers
# ---------------------------------------------------------------------------------------------


def _constant(value: float, *, lower: float | None = None, identity: bool = False) -> LayerRule:
    def rule(module: nn.Module, shape: Shape, out: Shape, options: BoundOptions) -> dict[str, Any]:
        return {"upper": value, "lower": lower, "method": "constant", "identity": identity}

    return rule


register_layer_rule(nn.Sigmoid)(_constant(0.25))  # sigma' = sigma (1 - sigma) <= 1/4
register_layer_rule(nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus)(_constant(1.0))
register_layer_rule(nn.Flatten, nn.Unflatten, nn.Identity)(_constant(1.0, lower=1.0, identity=True))


@register_layer_rule(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
def _dropout_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    _require_eval(module, "dropout is random in training mode")
    return {"upper": 1.0, "lower": 1.0, "method": "constant", "identity": True}


@register_layer_rule(nn.LeakyReLU)
def _leaky_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    assert isinstance(module, nn.LeakyReLU)
    return {"upper": max(1.0, abs(module.negative_slope)), "method": "constant"}


@register_layer_rule(nn.ELU)
def _elu_rule(module: nn.Module, shape: Shape, out: Shape, options: BoundOptions) -> dict[str, Any]:
    assert isinstance(module, nn.ELU)
    return {"upper": max(1.0, abs(module.alpha)), "method": "constant"}


@register_layer_rule(nn.MaxPool2d)
def _maxpool_rule(
    module: nn.Module, shape: Shape, out: Shape, options: BoundOptions
) -> dict[str, Any]:
    """Max pooling: ``sqrt(c)``, ``c`` the most windows that contain one input pixel.

    ``|max_W x - max_W x'| <= ||x_W - x'_W||_2`` for each window ``W``, so
    ``||y - y'||^2 <= sum_W ||x_W - x'_W||^2 = sum_i c_i (x_i - x'_i)^2 <= max_i c_i ||x - x'||^2``.
    Non-overlapping windows give ``c = 1`` (and 1 is then exact).
    """
    assert isinstance(module, nn.MaxPool2d)
    if len(shape) != 3:
        raise InvalidInputError(f"MaxPool2d expects (C, H, W) inputs, got {shape}")
    kernel = _as_pair(module.kernel_size)
    stride = _as_pair(module.stride)
    padding = _as_pair(module.padding)
    dilation = _as_pair(module.dilation)
    coverage = 1
    for dim in range(2):
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


def _as_pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


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
