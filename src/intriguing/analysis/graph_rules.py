"""Lipschitz rules of the functions and tensor methods in a traced graph (paper section 4.3).

Each rule gets a :class:`Ctx` (the fx node, the probe values of its arguments, the constants ``L_u``
of the nodes before it) and returns ``(local, L_v, L_v_exact, method)``: the node's own factor, its
certified constant with respect to the model input, the same with exact layer norms, and the rule's
name. Rules for layers (``call_module``) are in :mod:`intriguing.analysis.layer_rules`; the walk is
:mod:`intriguing.analysis.trace`. Every constant is derived in ``docs/spectral.md``.

Arguments are read by position or by name (``F.linear(input=x, weight=W)``), and every argument
other than the one a rule bounds must not depend on the input. A tuple or list of tensors (the
output of ``chunk``, ``split``, their concatenation ``a + b`` or repetition ``a * k``, a literal
``(x, y)``) has the constant of its concatenation, ``sqrt(sum_i L_i^2)`` at most, and each of its
elements keeps its own constant ``L_i`` (:attr:`Ctx.elements`), which indexing reads.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intriguing.analysis.layer_rules import (
    BoundConfig,
    Shape,
    batchnorm_scale,
    celu_constant,
    find_rule,
    gelu_constant,
    log_softmax_constant,
    prelu_constant,
    silu_constant,
    softmax_constant,
    softplus_constant,
)
from intriguing.errors import InvalidInputError

Lips = tuple[float, float]  # (certified constant, the same with exact layer norms)


def node_arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of ``node`` if given by position, else the keyword ``name`` (else
    ``default``): the one way the rules read a call's arguments."""
    if index < len(node.args):
        return node.args[index]
    return node.kwargs.get(name, default)


@dataclass
class Ctx:
    """What a function rule sees: the node, the probe values and the constants found so far.

    ``elements``: for nodes whose value is a tuple or list of tensors, each element's constants
    (shared by every node of one graph; a container without an entry bounds each element by its own
    constant, which bounds the whole concatenation).
    """

    node: fx.Node
    values: dict[fx.Node, Any]
    bounds: dict[fx.Node, Lips]
    options: BoundConfig
    elements: dict[fx.Node, list[Lips]] = field(default_factory=dict)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` if given by position, else the keyword ``name`` (else ``default``)."""
        return node_arg(self.node, index, name, default)

    def input_and_others(self) -> tuple[Any, list[Any]]:
        """The first argument (positional, or the keyword ``input``/``tensor``) and all the others."""
        args, kwargs = list(self.node.args), dict(self.node.kwargs)
        if args:
            return args[0], args[1:] + list(kwargs.values())
        key = next((k for k in ("input", "tensor", "tensors", "self") if k in kwargs), None)
        first = kwargs.pop(key) if key is not None else None
        return first, list(kwargs.values())

    def only_input_varies(self) -> Any:
        """The first argument, after refusing any other argument that depends on the input."""
        x, others = self.input_and_others()
        if x is None or any(self.dependent(a) for a in others):
            raise self.refuse("only its first argument may depend on the input")
        return x

    def value(self, a: Any) -> Any:
        """The probe value of an argument (a node's value, or the literal itself)."""
        return (
            fx.node.map_arg(a, lambda n: self.values[n])
            if isinstance(a, fx.Node | list | tuple)
            else a
        )

    def dependent(self, a: Any) -> bool:
        found: list[bool] = []
        fx.node.map_arg(
            a, lambda n: found.append(self.bounds.get(n, (0.0, 0.0))[0] > 0 or is_input(n))
        )
        return any(found)

    def lip(self, a: Any) -> Lips:
        """Constants of an argument: a node's; a tuple or list literal's concatenation (the root
        of the sum of its elements' squares); 0 for anything else (a constant)."""
        if isinstance(a, fx.Node):
            return self.bounds.get(a, (0.0, 0.0))
        if isinstance(a, list | tuple):
            return _root_sum_squares([self.lip(item) for item in a])
        return 0.0, 0.0

    def element_lips(self, a: Any) -> list[Lips]:
        """Each element's constants of a tuple or list (a node's value, or a literal)."""
        if isinstance(a, list | tuple):
            return [self.lip(item) for item in a]
        if not isinstance(a, fx.Node):
            return []
        recorded = self.elements.get(a)
        return list(recorded) if recorded is not None else [self.lip(a)] * len(self.values[a])

    def is_sequence(self, a: Any) -> bool:
        """True when the argument's value is a tuple or list (not a tensor)."""
        return isinstance(self.value(a), list | tuple)

    def constant(self, a: Any) -> torch.Tensor:
        """A constant argument as a detached float64 tensor."""
        value = self.value(a)
        if isinstance(value, torch.Tensor):
            return value.detach().to(torch.float64)
        return torch.as_tensor(value, dtype=torch.float64)  # a Python float stays exact

    def shape(self, a: Any) -> Shape:
        value = self.value(a)
        return tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else ()

    def refuse(self, why: str) -> InvalidInputError:
        return InvalidInputError(f"node {self.node.name!r} ({describe(self.node)}): {why}")


def _root_sum_squares(parts: list[Lips]) -> Lips:
    """``(sqrt(sum L_i^2), sqrt(sum E_i^2))``: the constants of a concatenation of the parts."""
    return (
        math.sqrt(sum(p[0] ** 2 for p in parts)),
        math.sqrt(sum(p[1] ** 2 for p in parts)),
    )


def is_input(n: fx.Node) -> bool:
    return n.op == "placeholder" and not n.args


Rule = Callable[[Ctx], tuple[float, float, float, str]]  # local, L, L_exact, method
FUNCTION_RULES: dict[Any, Rule] = {}


def function_rule(*targets: Any) -> Callable[[Rule], Rule]:
    """Register a rule for call_function targets (callables) and call_method names (strings)."""

    def decorate(rule: Rule) -> Rule:
        for target in targets:
            FUNCTION_RULES[target] = rule
        return rule

    return decorate


def describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    target = node.target
    name = getattr(target, "__name__", str(target))
    module = getattr(target, "__module__", None) or ""
    return f"function {module + '.' if module and 'built' not in module else ''}{name}"


def target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


# ---------------------------------------------------------------------------------------------
# Function rules
# ---------------------------------------------------------------------------------------------


def _unary(ctx: Ctx, constant: float, method: str = "constant") -> tuple[float, float, float, str]:
    """``f(x, constants...)`` with ``Lip(f) <= constant``: only the first argument may vary."""
    x = ctx.only_input_varies()
    lip, exact = ctx.lip(x)
    return constant, constant * lip, constant * exact, method


def _constant_rule(constant: float, method: str = "constant") -> Rule:
    return lambda ctx: _unary(ctx, constant, method)


_RELU_LIKE = (F.relu, torch.relu, "relu", F.relu6, F.hardtanh, torch.tanh, F.tanh, "tanh")
function_rule(*_RELU_LIKE, F.softsign, torch.abs, "abs", torch.clamp, "clamp")(_constant_rule(1.0))
function_rule(torch.clip, "clip", operator.neg, torch.neg, "neg", "relu_")(_constant_rule(1.0))
function_rule(torch.sigmoid, F.sigmoid, "sigmoid")(_constant_rule(0.25))
function_rule(F.hardsigmoid)(_constant_rule(1.0 / 6.0))
function_rule(F.hardswish)(_constant_rule(1.5))
function_rule(F.selu)(_constant_rule(1.0507009873554805 * 1.6732632423543772))
function_rule(F.silu)(lambda ctx: _unary(ctx, silu_constant(), "grid"))
function_rule(F.gelu)(
    lambda ctx: _unary(ctx, gelu_constant(str(ctx.arg(1, "approximate", "none"))))
)
function_rule(F.softmax, torch.softmax, "softmax", F.softmin)(
    lambda ctx: _unary(ctx, softmax_constant(), "gershgorin")
)
# isometries: reshapes, permutations, copies
_ISOMETRIES = (
    torch.flatten, "flatten", "view", "reshape", torch.reshape, "permute", torch.permute,
    "transpose", torch.transpose, "contiguous", "squeeze", torch.squeeze, "unsqueeze",
    torch.unsqueeze, "clone", torch.clone, "view_as", "reshape_as", "float", "double", "detach",
    operator.pos, "type_as",
)  # fmt: skip
function_rule(*_ISOMETRIES)(_constant_rule(1.0, "isometry"))


@function_rule(F.leaky_relu)
def _leaky(ctx: Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, max(1.0, abs(float(ctx.arg(1, "negative_slope", 0.01)))))


@function_rule(F.softplus)
def _softplus(ctx: Ctx) -> tuple[float, float, float, str]:
    beta, threshold = float(ctx.arg(1, "beta", 1.0)), float(ctx.arg(2, "threshold", 20.0))
    return _unary(ctx, softplus_constant(beta, threshold))


@function_rule(F.prelu, torch.prelu, "prelu")
def _prelu(ctx: Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, prelu_constant(ctx.constant(ctx.arg(1, "weight"))))


@function_rule(F.celu)
def _celu(ctx: Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, celu_constant(float(ctx.arg(1, "alpha", 1.0))))


@function_rule(F.elu)
def _elu(ctx: Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, max(1.0, abs(float(ctx.arg(1, "alpha", 1.0)))))


@function_rule(F.log_softmax, torch.log_softmax, "log_softmax")
def _log_softmax(ctx: Ctx) -> tuple[float, float, float, str]:
    dim = ctx.arg(1, "dim")
    if not isinstance(dim, int):
        raise ctx.refuse("log_softmax needs an explicit integer dim")
    full = ctx.values[ctx.node].shape
    return _unary(ctx, log_softmax_constant(int(full[dim])), "triangle")


@function_rule(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout)
def _dropout(ctx: Ctx) -> tuple[float, float, float, str]:
    if ctx.arg(2, "training", True) is not False:
        raise ctx.refuse("dropout in training mode is random: call model.eval()")
    return _unary(ctx, 1.0, "identity")


@function_rule(operator.getitem, "narrow", torch.narrow, "select", torch.select)
def _slice(ctx: Ctx) -> tuple[float, float, float, str]:
    """Taking some coordinates (a projection) is 1-Lipschitz; repeated indices would copy, refused.
    An element of a tuple or list has its own constant (:func:`_take`)."""
    index = ctx.arg(1, "index")
    source = ctx.arg(0, "input")
    if ctx.node.target is operator.getitem and ctx.is_sequence(source):
        return _take(ctx, source, index)
    if ctx.node.target is operator.getitem and isinstance(ctx.value(source), torch.Tensor):
        items = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, int | slice | type(None) | type(Ellipsis)) for i in items):
            raise ctx.refuse(
                "indexing with tensors or lists can repeat values; only slices are supported"
            )
    return _unary(ctx, 1.0, "projection")


def _take(ctx: Ctx, source: Any, index: Any) -> tuple[float, float, float, str]:
    """``source[index]`` of a tuple or list: one element's own constants; a slice keeps its
    elements' (its concatenation: at most the source's and the root of their squares' sum)."""
    if ctx.dependent(index):
        raise ctx.refuse("an index computed from the input is not Lipschitz")
    parts = ctx.element_lips(source)
    if isinstance(index, int) and -len(parts) <= index < len(parts):
        lip, exact = parts[index]
        return 1.0, lip, exact, "element"
    whole = ctx.lip(source)
    if not isinstance(index, slice):  # an index we cannot read: every element is within the whole
        return 1.0, whole[0], whole[1], "elements"
    chosen = parts[index]
    ctx.elements[ctx.node] = chosen
    lip, exact = _root_sum_squares(chosen)
    return 1.0, min(lip, whole[0]), min(exact, whole[1]), "elements"


@function_rule(torch.split, "split", torch.chunk, "chunk", torch.unbind, "unbind")
def _split(ctx: Ctx) -> tuple[float, float, float, str]:
    """Pieces partitioning ``x``: together (their concatenation) and each one, ``L_x``."""
    local, lip, exact, method = _unary(ctx, 1.0, "projection")
    ctx.elements[ctx.node] = [(lip, exact)] * len(ctx.values[ctx.node])
    return local, lip, exact, method


@function_rule(torch.mean, "mean", torch.sum, "sum")
def _reduce(ctx: Ctx) -> tuple[float, float, float, str]:
    """Sum of ``k`` values: ``sqrt(k)``; mean: ``1 / sqrt(k)`` (Cauchy-Schwarz, attained)."""
    x = ctx.only_input_varies()
    k = math.prod(ctx.shape(x)) / max(1, math.prod(ctx.shape(ctx.node)))
    mean = target_name(ctx.node.target) == "mean"
    return _unary(ctx, 1.0 / math.sqrt(k) if mean else math.sqrt(k), "reduction")


@function_rule(torch.amax, "amax", torch.amin, "amin")
def _extreme(ctx: Ctx) -> tuple[float, float, float, str]:
    """Max (min) over dimensions: each output is the max of its own group of inputs, the groups
    disjoint, and ``|max_G x - max_G x'| <= ||x_G - x'_G||_2``: 1 (attained by moving one maximum)."""
    return _unary(ctx, 1.0, "reduction")


def _broadcast_factor(ctx: Ctx, a: Any) -> float:
    """``sqrt(k)`` when operand ``a`` is broadcast to ``k`` times its size in the output."""
    return math.sqrt(math.prod(ctx.shape(ctx.node)) / max(1, math.prod(ctx.shape(a))))


@function_rule(
    operator.add, torch.add, "add", operator.iadd, operator.sub, torch.sub, "sub", operator.isub
)
def _sum(ctx: Ctx) -> tuple[float, float, float, str]:
    """``a +- alpha b``: ``L_a + |alpha| L_b`` (triangle inequality), broadcast copies included.
    ``a + b`` of tuples or lists is their concatenation (:func:`_sequence_sum`)."""
    a, b = ctx.arg(0, "input"), ctx.arg(1, "other")
    if ctx.is_sequence(ctx.node):
        return _sequence_sum(ctx, a, b)
    alpha = abs(float(ctx.constant(ctx.node.kwargs.get("alpha", 1.0))))
    lip = exact = 0.0
    for operand, weight in ((a, 1.0), (b, alpha)):
        if not isinstance(operand, fx.Node):
            if ctx.dependent(operand):
                raise ctx.refuse("an operand is a tuple or list of input-dependent tensors")
            continue  # a constant
        factor = weight * _broadcast_factor(ctx, operand)
        lip += factor * ctx.lip(operand)[0]
        exact += factor * ctx.lip(operand)[1]
    return 1.0, lip, exact, "sum of branches"


def _sequence_sum(ctx: Ctx, a: Any, b: Any) -> tuple[float, float, float, str]:
    """``a + b`` of tuples or lists (``x.chunk(2, 1) + (y,)``): the elements of both, each with its
    own constants; the concatenation's constant is ``sqrt(L_a^2 + L_b^2)``."""
    ctx.elements[ctx.node] = ctx.element_lips(a) + ctx.element_lips(b)
    lip, exact = _root_sum_squares([ctx.lip(a), ctx.lip(b)])
    return 1.0, lip, exact, "tuple concatenation"


def _sequence_repeat(ctx: Ctx, a: Any, b: Any) -> tuple[float, float, float, str]:
    """``a * k`` of a tuple or list: each element ``k`` times, the concatenation ``sqrt(k) L_a``."""
    sequence, times = (a, b) if ctx.is_sequence(a) else (b, a)
    if ctx.dependent(times):
        raise ctx.refuse("a repetition count computed from the input is not Lipschitz")
    count = max(0, int(ctx.value(times)))
    ctx.elements[ctx.node] = ctx.element_lips(sequence) * count
    lip, exact = ctx.lip(sequence)
    factor = math.sqrt(count)
    return factor, factor * lip, factor * exact, "tuple repetition"


@function_rule(
    operator.mul,
    torch.mul,
    "mul",
    operator.imul,
    operator.truediv,
    torch.div,
    "div",
    operator.itruediv,
)
def _scale(ctx: Ctx) -> tuple[float, float, float, str]:
    """A product with (or quotient by) a constant: ``max |c|`` (``1 / min |c|``); a tuple or list
    times ``k`` repeats it (:func:`_sequence_repeat`)."""
    a, b = ctx.arg(0, "input"), ctx.arg(1, "other")
    if ctx.is_sequence(ctx.node):
        return _sequence_repeat(ctx, a, b)
    divide = target_name(ctx.node.target) in ("truediv", "div", "itruediv")
    if ctx.node.kwargs.get("rounding_mode") is not None:
        raise ctx.refuse("rounded division is not Lipschitz")
    if divide and ctx.dependent(b):
        raise ctx.refuse("division by an input-dependent tensor has no global Lipschitz bound")
    if ctx.dependent(a) and ctx.dependent(b):
        raise ctx.refuse("a product of two input-dependent tensors has no global Lipschitz bound")
    x, c = (a, b) if ctx.dependent(a) else (b, a)
    magnitude = ctx.constant(c).abs()
    factor = 1.0 / float(magnitude.min()) if divide else float(magnitude.max())
    factor *= _broadcast_factor(ctx, x)
    lip, exact = ctx.lip(x)
    return factor, factor * lip, factor * exact, "constant factor"


@function_rule(torch.cat, torch.concat, torch.concatenate, torch.stack)
def _cat(ctx: Ctx) -> tuple[float, float, float, str]:
    """``sqrt(sum_i L_i^2)``: the squared distance of a concatenation is the sum of its parts'.
    A tuple node (``torch.cat(x.chunk(2, 1) + (y,))``) brings its concatenation's constant."""
    parts = ctx.only_input_varies()
    if not ctx.is_sequence(parts):
        raise ctx.refuse("expected a list of tensors")
    lip, exact = ctx.lip(parts)
    return 1.0, lip, exact, "sqrt of sum of squares"


@function_rule(F.linear)
def _linear(ctx: Ctx) -> tuple[float, float, float, str]:
    """``x W^T + b`` with constant ``W`` and ``b``: ``||W||_2``."""
    weight = ctx.arg(1, "weight")
    if ctx.dependent(weight):
        raise ctx.refuse("an input-dependent weight has no global Lipschitz bound")
    x = ctx.only_input_varies()
    norm = float(torch.linalg.matrix_norm(ctx.constant(weight), ord=2))
    lip, exact = ctx.lip(x)
    return norm, norm * lip, norm * exact, "svd"


@function_rule(operator.matmul, torch.matmul, "matmul", torch.mm, "mm")
def _matmul(ctx: Ctx) -> tuple[float, float, float, str]:
    """``x @ W`` or ``W @ x`` with a constant 2-D ``W``: copies of ``W`` on independent slices, ``||W||_2``."""
    second = "mat2" if target_name(ctx.node.target) == "mm" else "other"
    a, b = ctx.arg(0, "input"), ctx.arg(1, second)
    if ctx.dependent(a) == ctx.dependent(b):
        raise ctx.refuse("a product of two input-dependent tensors has no global Lipschitz bound")
    x, w = (a, b) if ctx.dependent(a) else (b, a)
    matrix = ctx.constant(w)
    if matrix.dim() != 2:
        raise ctx.refuse("only a constant 2-D matrix is supported")
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    lip, exact = ctx.lip(x)
    return norm, norm * lip, norm * exact, "svd"


def _module_rule_as_function(ctx: Ctx, module: nn.Module) -> tuple[float, float, float, str]:
    """The function bounded by the rule of ``module``, the layer with the same arguments; every
    argument but the input (a bias too) must be constant."""
    x = ctx.only_input_varies()
    fields = find_rule(module)(module, ctx.shape(x), ctx.shape(ctx.node), ctx.options)  # type: ignore[misc]
    local = float(fields["upper"])
    exact = fields.get("exact")
    lip, lip_exact = ctx.lip(x)
    return (
        local,
        local * lip,
        (exact if exact is not None else local) * lip_exact,
        str(fields.get("method")),
    )


@function_rule(F.conv2d, F.conv1d)
def _conv(ctx: Ctx) -> tuple[float, float, float, str]:
    """Functional convolutions with a constant weight: the Conv1d/Conv2d layer rules."""
    weight = ctx.arg(1, "weight")
    if ctx.dependent(weight):
        raise ctx.refuse("an input-dependent weight has no global Lipschitz bound")
    w = ctx.constant(weight)
    two_d = ctx.node.target is F.conv2d
    cls = nn.Conv2d if two_d else nn.Conv1d
    kernel: Any = tuple(w.shape[2:])
    conv = cls(
        w.shape[1] * int(ctx.arg(6, "groups", 1)),
        w.shape[0],
        kernel,
        stride=ctx.arg(3, "stride", 1),
        padding=ctx.arg(4, "padding", 0),
        dilation=ctx.arg(5, "dilation", 1),
        groups=int(ctx.arg(6, "groups", 1)),
        bias=False,
    ).double()
    with torch.no_grad():
        conv.weight.copy_(w)
    return _module_rule_as_function(ctx, conv)


@function_rule(F.max_pool2d)
def _max_pool(ctx: Ctx) -> tuple[float, float, float, str]:
    return _max_pool_as(ctx, nn.MaxPool2d)


@function_rule(F.max_pool1d)
def _max_pool_1d(ctx: Ctx) -> tuple[float, float, float, str]:
    return _max_pool_as(ctx, nn.MaxPool1d)


def _max_pool_as(
    ctx: Ctx, cls: type[nn.MaxPool1d] | type[nn.MaxPool2d]
) -> tuple[float, float, float, str]:
    """``F.max_pool1d/2d`` (the same arguments) bounded by the rule of their layer ``cls``."""
    if ctx.arg(6, "return_indices", False):
        raise ctx.refuse("return_indices=True is not supported")
    pool = cls(
        ctx.arg(1, "kernel_size"),
        stride=ctx.arg(2, "stride"),
        padding=ctx.arg(3, "padding", 0),
        dilation=ctx.arg(4, "dilation", 1),
        ceil_mode=bool(ctx.arg(5, "ceil_mode", False)),
    )
    return _module_rule_as_function(ctx, pool)


@function_rule(F.avg_pool2d)
def _avg_pool(ctx: Ctx) -> tuple[float, float, float, str]:
    return _avg_pool_as(ctx, nn.AvgPool2d, divisor_override=ctx.arg(6, "divisor_override"))


@function_rule(F.avg_pool1d)
def _avg_pool_1d(ctx: Ctx) -> tuple[float, float, float, str]:
    return _avg_pool_as(ctx, nn.AvgPool1d)


def _avg_pool_as(
    ctx: Ctx, cls: type[nn.AvgPool1d] | type[nn.AvgPool2d], **extra: Any
) -> tuple[float, float, float, str]:
    """``F.avg_pool1d/2d`` (the same leading arguments; 2-D adds ``divisor_override`` in
    ``extra``) bounded by the rule of their layer ``cls``."""
    pool = cls(
        ctx.arg(1, "kernel_size"),
        stride=ctx.arg(2, "stride"),
        padding=ctx.arg(3, "padding", 0),
        ceil_mode=bool(ctx.arg(4, "ceil_mode", False)),
        count_include_pad=bool(ctx.arg(5, "count_include_pad", True)),
        **extra,
    )
    return _module_rule_as_function(ctx, pool)


@function_rule(F.adaptive_avg_pool2d)
def _adaptive_avg_pool(ctx: Ctx) -> tuple[float, float, float, str]:
    return _module_rule_as_function(ctx, nn.AdaptiveAvgPool2d(ctx.arg(1, "output_size")))


@function_rule(F.adaptive_avg_pool1d)
def _adaptive_avg_pool_1d(ctx: Ctx) -> tuple[float, float, float, str]:
    return _module_rule_as_function(ctx, nn.AdaptiveAvgPool1d(ctx.arg(1, "output_size")))


@function_rule(F.pad)
def _pad(ctx: Ctx) -> tuple[float, float, float, str]:
    """Constant padding embeds the image (an isometry plus a constant); other modes copy pixels."""
    if ctx.arg(2, "mode", "constant") != "constant":
        raise ctx.refuse(
            "only mode='constant' padding is supported as a function (use padding_mode)"
        )
    x = ctx.only_input_varies()  # an input-dependent padding value is refused here
    lip, exact = ctx.lip(x)
    return 1.0, lip, exact, "isometry"


@function_rule(F.adaptive_max_pool2d)
def _adaptive_max_pool(ctx: Ctx) -> tuple[float, float, float, str]:
    if ctx.arg(2, "return_indices", False):
        raise ctx.refuse("return_indices=True is not supported")
    return _module_rule_as_function(ctx, nn.AdaptiveMaxPool2d(ctx.arg(1, "output_size")))


@function_rule(F.adaptive_max_pool1d)
def _adaptive_max_pool_1d(ctx: Ctx) -> tuple[float, float, float, str]:
    if ctx.arg(2, "return_indices", False):
        raise ctx.refuse("return_indices=True is not supported")
    return _module_rule_as_function(ctx, nn.AdaptiveMaxPool1d(ctx.arg(1, "output_size")))


@function_rule(F.batch_norm)
def _batch_norm(ctx: Ctx) -> tuple[float, float, float, str]:
    """Eval-mode batch norm: the diagonal ``weight / sqrt(running_var + eps)``: its largest entry."""
    if ctx.arg(5, "training", False) is not False:
        raise ctx.refuse("batch norm in training mode uses batch statistics: call model.eval()")
    var, weight = ctx.arg(2, "running_var"), ctx.arg(3, "weight")
    if var is None or ctx.dependent(var) or ctx.dependent(weight):
        raise ctx.refuse("batch norm needs constant running statistics and weight")
    scale = batchnorm_scale(ctx.constant(var), float(ctx.arg(7, "eps", 1e-5)))
    if weight is not None:
        scale = scale * ctx.constant(weight)
    return _unary(ctx, float(scale.abs().max()), "diagonal")
