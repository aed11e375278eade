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

These rules, and more (GELU, SiLU, Softmax, LogSoftmax, Conv1d, AdaptiveMaxPool2d, ...), live in
:mod:`intriguing.analysis.layer_rules`; register a rule with :func:`register_layer_rule`.

Which walk: a plain ``nn.Sequential`` whose every layer has a rule is walked as a chain (the bound
is the product, Table 5). A ``layers=`` list is walked as a chain too, after checking on random
inputs (and the given samples) that it computes ``model(x)``. Any other model is traced with
torch.fx and bounded over its graph (residual sums, concatenations, functions; see
:mod:`intriguing.analysis.trace`). In every case the certified bound is compared with a measured
lower bound, the largest Jacobian norm found by power iteration at sample inputs
(:mod:`intriguing.analysis.jacobian`); a certified bound below it raises
:class:`~intriguing.analysis.jacobian.CertificationError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.analysis.jacobian import (
    CertificationError,
    MeasuredLowerBound,
    check_batch_independent,
    check_certified,
    check_chain,
    float64_copy,
    jacobian_lower_bound,
    model_fingerprint,
    probe_inputs,
)
from intriguing.analysis.layer_rules import (
    BoundConfig,
    BoundOptions,
    LayerRule,
    Shape,
    find_rule,
    no_rule_message,
    register_layer_rule,
    supported_layers,
)
from intriguing.analysis.trace import GraphBound, NodeBound, graph_bound, refuse_forward_hooks
from intriguing.attacks.checks import check_not_meta
from intriguing.errors import InvalidInputError
from intriguing.models.user import refuse_script_module, uncompiled

__all__ = [
    "BoundConfig",
    "BoundOptions",
    "CertificationError",
    "LayerBound",
    "LayerRule",
    "MeasuredLowerBound",
    "NetworkBound",
    "network_bounds",
    "register_layer_rule",
    "sequential_layers",
    "supported_layers",
]


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
    """Per-layer bounds of a network and its certified Lipschitz bound ``lipschitz``.

    ``structure``: ``"chain"`` (``lipschitz = prod(upper)``, Table 5) or ``"graph"`` (a traced DAG:
    ``lipschitz`` combines the nodes' constants, see :mod:`intriguing.analysis.trace`; ``layers``
    then holds one entry per input-dependent node, ``details["lipschitz_so_far"]`` its constant;
    ``graph`` the traced bounds these are read from: the network's constant, the constant of the
    map whose differences are the class margins (the logits before a final ``log_softmax``), and
    ``final_linear`` / ``features_lipschitz``, the Linear layer producing them and its input's
    constant (graphs only; chains read them off ``layers``).
    ``measured``: the measured lower bound (largest Jacobian norm at probe inputs), never above
    ``lipschitz``. ``fingerprint``: :func:`~intriguing.analysis.jacobian.model_fingerprint` of the model.
    """

    layers: list[LayerBound]
    input_shape: Shape
    structure: str = "chain"
    measured: MeasuredLowerBound | None = None
    fingerprint: str | None = None
    graph: GraphBound | None = field(default=None, repr=False, compare=False)

    @property
    def lipschitz(self) -> float:
        """Certified upper bound on the network's Lipschitz constant (input L2 -> output L2)."""
        if self.graph is not None:
            return self.graph.lipschitz
        return math.prod(layer.upper for layer in self.layers)

    @property
    def lipschitz_exact_norms(self) -> float:
        """The bound with each layer's exact norm where known (``exact``), else its ``upper``.

        Still an upper bound on the Lipschitz constant when the exact norms are exact; power iteration
        approaches them from below, so this value is not certified.
        """
        if self.graph is not None:
            return self.graph.lipschitz_exact
        return math.prod(
            layer.exact if layer.exact is not None else layer.upper for layer in self.layers
        )

    @property
    def margin_bound(self) -> float:
        """Certified constant of the logits whose differences are the class margins."""
        return self.graph.margin_lipschitz if self.graph is not None else self.lipschitz

    @property
    def final_linear(self) -> str | None:
        """Graphs: the name of the Linear module producing the logits, if one does."""
        return None if self.graph is None else self.graph.final_linear

    @property
    def features_lipschitz(self) -> float | None:
        """Graphs: the certified constant of :attr:`final_linear`'s input."""
        return None if self.graph is None else self.graph.features_lipschitz

    @property
    def margin_module(self) -> nn.Module | None:
        """Graphs: the map to the logits whose differences are the margins, when it is not the
        network itself (a final ``log_softmax`` dropped)."""
        return None if self.graph is None else self.graph.margin_module

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
        label = "product" if self.structure == "chain" else "network (graph)"
        measured = f" measured >= {_short(self.measured.value)}" if self.measured else ""
        lines.append(f"| **{label}** | | | | **{_short(self.lipschitz)}** | |{measured} | |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "structure": self.structure,
            "lipschitz_upper": self.lipschitz,
            "lipschitz_exact_norms": self.lipschitz_exact_norms,
            "margin_lipschitz": self.margin_bound,
            "measured_lower": self.measured.value if self.measured else None,
            "measured": self.measured.to_dict() if self.measured else None,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _short(value: float | None) -> str:
    """4 significant digits; '-' for none."""
    if value is None:
        return "-"
    return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


# ---------------------------------------------------------------------------------------------
# Walking a model
# ---------------------------------------------------------------------------------------------


def sequential_layers(
    model: nn.Module, layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None
) -> list[tuple[str, nn.Module]]:
    """The model's layers in call order as ``(dotted name, module)``; nested Sequentials expanded.

    ``model`` must be an ``nn.Sequential`` unless ``layers`` lists its layers in call order (modules
    or ``(name, module)`` pairs); anything else is refused, since the call order of a general
    ``forward`` cannot be read off the module tree. A module the Sequential holds more than once
    (tied weights, ``[block] * 3``) is listed at every position it is called from, under that
    position's name: each call is one factor of the product (section 4.3).
    """
    if layers is not None:
        named = [
            item if isinstance(item, tuple) else (str(i), item) for i, item in enumerate(layers)
        ]
        if not named:
            raise InvalidInputError("layers= is empty: list the model's layers in call order")
    elif _is_plain_sequential(model):
        named = _every_call(model)
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


def _every_call(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, child)`` for every entry of ``model._modules``, the order ``Sequential.forward``
    calls them in; unlike ``named_children()``, a child held twice is listed twice."""
    return [(name, child) for name, child in model._modules.items() if child is not None]


def _is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` whose ``forward`` is Sequential's own (calls its children in order),
    also on the instance."""
    return (
        isinstance(module, nn.Sequential)
        and type(module).forward is nn.Sequential.forward
        and "forward" not in vars(module)
    )


def network_bounds(
    model: nn.Module,
    input_shape: Shape | Sequence[int] | int,
    *,
    layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None,
    options: BoundConfig | None = None,
    progress: Callable[[str], None] | None = None,
    samples: torch.Tensor | None = None,
) -> NetworkBound:
    """Certified Lipschitz bound of ``model`` on inputs of shape ``input_shape`` (no batch dimension).

    Args:
        model: any ``nn.Module`` mapping ``(N, *input_shape)`` to ``(N, ...)`` (logits): a plain
            ``nn.Sequential`` is walked as a chain, anything else traced with torch.fx.
        input_shape: one example's shape, e.g. ``(1, 28, 28)`` for MNIST, ``(3, 224, 224)``: a
            tuple, list or ``torch.Size`` of positive ints; a single int ``d`` means ``(d,)``.
        layers: optionally the layers in call order; checked against ``model(x)`` first.
        options: :class:`BoundConfig`.
        progress: called with each layer's name before it is analysed (chains).
        samples: optional ``(M, *input_shape)`` inputs (e.g. test images in [0, 1]) used, with
            ``options.probe_inputs`` random ones, to check ``layers=`` and to measure the lower bound.

    Returns:
        :class:`NetworkBound`; its ``measured`` lower bound is at most its certified ``lipschitz``.

    Raises:
        InvalidInputError: one line, for a layer or node without rule, an untraceable model, a
            ``layers=`` list that is not the model, a bad shape, a module with a forward hook.
        CertificationError: the certified bound is below the measured one (a bug).
    """
    shape = _check_input_shape(input_shape)
    options = options or BoundConfig()
    model = uncompiled(model)  # a torch.compile wrapper: bound the network it holds
    check_not_meta(model)
    refuse_script_module(model, "whose layers cannot be traced")
    refuse_training_statistics(model)
    named = sequential_layers(model, layers) if layers is not None else []
    refuse_forward_hooks(model, named)
    probes = probe_inputs(shape, _check_samples(samples, shape), options.probe_inputs)
    if layers is not None:
        check_chain(model, named, probes)
        bound = _chain_bound(named, shape, options, progress)
    elif (
        _is_plain_sequential(model)
        and all(find_rule(m) is not None for _, m in sequential_layers(model))
        and not any(isinstance(m, nn.LogSoftmax) for _, m in sequential_layers(model))
    ):  # a final LogSoftmax keeps every margin: the graph bounds the logits before it apart
        bound = _chain_bound(sequential_layers(model), shape, options, progress)
    else:
        bound = _from_graph(graph_bound(model, shape, options), shape)
    bound.fingerprint = model_fingerprint(model)
    check_batch_independent(model, probes)
    _measure(bound, model, probes, options)
    return bound


# layers whose training mode uses batch statistics (updating running ones) or randomness
_TRAINING_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def refuse_training_statistics(model: nn.Module) -> None:
    """InvalidInputError (one line) for a normalisation or dropout layer in training mode, before
    any forward pass: one would update the user's running statistics in place. Also for an
    in-place LeakyReLU with a negative slope, which torch's autograd cannot differentiate (the
    measured lower bound would fail after the bound's work)."""
    for name, module in model.named_modules():
        if module.training and isinstance(module, _TRAINING_DEPENDENT):
            raise InvalidInputError(
                f"layer {name!r} ({type(module).__name__}) is in training mode: call model.eval() "
                "before bounding"
            )
        if isinstance(module, nn.LeakyReLU) and module.inplace and module.negative_slope < 0:
            raise InvalidInputError(
                f"layer {name!r} (LeakyReLU, negative_slope={module.negative_slope:g}, "
                "inplace=True) cannot be differentiated by torch's autograd; use inplace=False"
            )


def _is_size(d: object) -> bool:
    return isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) >= 1


def _check_input_shape(input_shape: object) -> Shape:
    """``input_shape`` as a tuple of positive ints (a single int ``d`` is ``(d,)``), or one line."""
    if _is_size(input_shape):
        return (int(input_shape),)  # type: ignore[call-overload]
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise InvalidInputError(
            f"input_shape must be a tuple of positive ints without the batch, e.g. (1, 28, 28), "
            f"got {input_shape!r}"
        )
    if not all(_is_size(d) for d in input_shape):
        raise InvalidInputError(
            f"input_shape must hold positive ints (sizes without the batch), e.g. (1, 28, 28), "
            f"got {tuple(input_shape)!r}"
        )
    return tuple(int(d) for d in input_shape)


def _check_samples(samples: torch.Tensor | None, shape: Shape) -> torch.Tensor | None:
    if samples is None:
        return None
    if not isinstance(samples, torch.Tensor) or tuple(samples.shape[1:]) != shape:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InvalidInputError(
            f"samples must have shape (M, {', '.join(map(str, shape))}), got {got}"
        )
    if not bool(torch.isfinite(samples).all()):
        raise InvalidInputError("samples must be finite")
    return samples[:64]


def _measure(
    bound: NetworkBound, model: nn.Module, probes: torch.Tensor, options: BoundConfig
) -> None:
    """Attach the measured lower bound and refuse a certified bound below it."""
    iterations, tol = options.probe_iterations, options.probe_tol
    bound.measured = jacobian_lower_bound(
        float64_copy(model), probes, iterations=iterations, tol=tol
    )
    check_certified(bound.lipschitz, bound.measured, type(model).__name__)
    margin_module = bound.margin_module
    if margin_module is not None:  # the logits before log_softmax are bounded separately
        check_certified(
            bound.margin_bound,
            jacobian_lower_bound(margin_module, probes, iterations=iterations, tol=tol),
            f"{type(model).__name__}'s logits",
        )


def _chain_bound(
    named: list[tuple[str, nn.Module]],
    shape: Shape,
    options: BoundConfig,
    progress: Callable[[str], None] | None,
) -> NetworkBound:
    input_shape = shape
    results = []
    for name, module in named:
        rule = find_rule(module)
        if rule is None:
            raise InvalidInputError(no_rule_message(name, module))
        if progress is not None:
            progress(name)
        out_shape = _output_shape(module, name, shape)
        try:
            fields = rule(module, shape, out_shape, options)
        except InvalidInputError as exc:  # name the layer the rule refused
            raise InvalidInputError(f"layer {name!r} ({type(module).__name__}): {exc}") from None
        results.append(_layer_bound(name, type(module).__name__, shape, out_shape, fields))
        shape = out_shape
    return NetworkBound(layers=results, input_shape=input_shape)


def _layer_bound(
    name: str, kind: str, shape: Shape, out_shape: Shape, fields: dict[str, Any]
) -> LayerBound:
    return LayerBound(
        name=name,
        kind=kind,
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


def _from_graph(graph: GraphBound, shape: Shape) -> NetworkBound:
    layers = [_node_layer(node) for node in graph.nodes]
    return NetworkBound(layers=layers, input_shape=shape, structure="graph", graph=graph)


def _node_layer(node: NodeBound) -> LayerBound:
    fields = dict(node.fields)
    fields["upper"] = node.local
    fields.setdefault("method", node.method)
    details = dict(fields.pop("details", {}))
    details["inputs"] = node.inputs
    details["lipschitz_so_far"] = node.lipschitz
    fields["details"] = details
    return _layer_bound(node.name, node.kind, node.input_shape, node.output_shape, fields)


def _output_shape(module: nn.Module, name: str, shape: Shape) -> Shape:
    """Shape of ``module``'s output for one input of ``shape`` (run on zeros in the dtype and on the
    device of its first floating parameter or buffer: a parameter-free BatchNorm has buffers)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, *shape), dtype=dtype, device=device))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"layer {name!r} cannot take input of shape {shape}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise InvalidInputError(
            f"layer {name!r} ({type(module).__name__}) returns {type(out).__name__}, not one tensor: "
            "a chain of layers needs one tensor between layers"
        )
    return tuple(out.shape[1:])
