"""Spectral bounds of any traceable model: its torch.fx graph, one Lipschitz rule per node (§4.3).

The model is traced with :func:`torch.fx.symbolic_trace` semantics into a DAG of module calls,
functions and tensor methods. Each node ``v`` gets a certified constant ``L_v`` with
``||v(x) - v(x')|| <= L_v ||x - x'||`` for the model input ``x`` (Euclidean norms, per example):

- the input: 1; nodes that do not depend on the input (weights, constants, ``x.size(0)``): 0;
- a layer or element-wise map ``f`` of one node ``u``: ``L_v = Lip(f) L_u`` (the layer rules of
  :mod:`intriguing.analysis.layer_rules`, the function rules below);
- a sum or difference ``a + alpha b``: ``L_v <= L_a + |alpha| L_b`` (triangle inequality); an operand
  broadcast to ``k`` times its size is copied ``k`` times, which multiplies its constant by
  ``sqrt(k)``;
- a concatenation (``torch.cat``/``torch.stack``) of ``u_1..u_m``: ``||v(x) - v(x')||^2 =
  sum_i ||u_i(x) - u_i(x')||^2 <= sum_i L_i^2 ||x - x'||^2``, so ``L_v = sqrt(sum_i L_i^2)``; this
  holds whether or not the branches share layers;
- a product with a constant ``c``: ``max |c|``; a quotient by a constant: ``1 / min |c|``.

Anything else that depends on the input, and anything torch.fx cannot trace, is refused with one
line naming the node (:class:`~intriguing.errors.InvalidInputError`).
"""

from __future__ import annotations

import math
import operator
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intriguing.analysis.layer_rules import (
    BoundOptions,
    Shape,
    find_rule,
    gelu_constant,
    log_softmax_constant,
    silu_constant,
    softmax_constant,
    supported_layers,
)
from intriguing.errors import InvalidInputError

PROBE_BATCH = 2  # the probe run uses two examples, so a node that mixes examples shows


@dataclass
class NodeBound:
    """One traced node's bounds: ``local`` (its own factor, for the table) and the constants ``L_v``
    (``lipschitz``: certified; ``exact``: with exact layer norms where known, not certified)."""

    name: str
    kind: str
    local: float
    lipschitz: float
    exact: float
    method: str
    inputs: list[str]
    input_shape: Shape
    output_shape: Shape
    fields: dict[str, Any]


@dataclass
class GraphBound:
    """Bounds of every input-dependent node, the network's constant and the class-margin map's."""

    nodes: list[NodeBound]
    lipschitz: float
    lipschitz_exact: float
    margin_lipschitz: float
    margin_node: str
    final_linear: str | None
    features_lipschitz: float | None
    graph_module: fx.GraphModule
    margin_module: fx.GraphModule | None


# ---------------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------------

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


class _Tracer(fx.Tracer):
    """Layers with a rule are leaves; user modules are traced through; remembers where it failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return find_rule(m) is not None or super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m) or type(m).__name__
            raise


def refuse_layers_without_rule(model: nn.Module) -> None:
    """One line for the first torch.nn layer that has no rule (an LSTM, attention, ...)."""
    for name, module in model.named_modules():
        if not name or isinstance(module, _CONTAINERS) or find_rule(module) is not None:
            continue
        if type(module).__module__.startswith(("torch.nn", "torch.ao.nn")):
            raise InvalidInputError(
                f"layer {name!r} ({type(module).__name__}) has no Lipschitz rule; supported layers: "
                f"{', '.join(supported_layers())}"
            )


def trace_model(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx graph (layers with rules kept whole); untraceable models refused in one line."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises many types; the user gets one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f" in module {tracer.failed_in!r}" if tracer.failed_in else ""
        raise InvalidInputError(
            f"cannot trace {type(model).__name__} for a spectral bound{where}{_user_line(exc)}: "
            f"{first}; make forward traceable by torch.fx (no if/for on tensor values) or pass "
            "layers=[...] in call order"
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _user_line(exc: BaseException) -> str:
    """`` (file.py:12)`` for the innermost frame outside torch and this module, if any."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "/torch/" not in f.filename and not f.filename.endswith("analysis/trace.py")
    ]
    return f" ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def probe_values(gm: fx.GraphModule, shape: Shape) -> dict[fx.Node, Any]:
    """Every node's value on ``PROBE_BATCH`` seeded random float64 inputs in [0, 1]."""
    x = torch.rand(
        (PROBE_BATCH, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(x)
    except Exception as exc:  # the user's forward can fail in any way on a wrong shape
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"the model cannot take input of shape {shape}: {first}") from None
    return recorder.values


def check_trace_matches(model: nn.Module, gm: fx.GraphModule, shape: Shape) -> None:
    """The traced graph must compute ``model(x)`` (tracing fixes Python-level branches)."""
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    try:
        with torch.no_grad():
            expected, got = model(x), gm(x)
    except Exception as exc:  # the user's forward can fail in any way on a wrong shape
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(
            f"{type(model).__name__} cannot take input of shape {shape}: {first}"
        ) from None
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        raise InvalidInputError("the model must return one tensor (logits) for a spectral bound")
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or float((got - expected).abs().max()) > 1e-9 * scale:
        raise InvalidInputError(
            f"the traced graph of {type(model).__name__} does not compute model(x): its forward "
            "depends on state torch.fx cannot see; pass layers=[...] in call order"
        )


# ---------------------------------------------------------------------------------------------
# Propagation over the DAG
# ---------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """What a function rule sees: the node, the probe values and the constants found so far."""

    node: fx.Node
    values: dict[fx.Node, Any]
    bounds: dict[fx.Node, tuple[float, float]]
    options: BoundOptions

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if index < len(self.node.args):
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

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
            a, lambda n: found.append(self.bounds.get(n, (0.0, 0.0))[0] > 0 or _is_input(n))
        )
        return any(found)

    def lip(self, a: Any) -> tuple[float, float]:
        return self.bounds.get(a, (0.0, 0.0)) if isinstance(a, fx.Node) else (0.0, 0.0)

    def constant(self, a: Any) -> torch.Tensor:
        """A constant argument as a detached float64 tensor."""
        return torch.as_tensor(self.value(a)).detach().to(torch.float64)

    def shape(self, a: Any) -> Shape:
        value = self.value(a)
        return tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else ()

    def refuse(self, why: str) -> InvalidInputError:
        return InvalidInputError(f"node {self.node.name!r} ({_describe(self.node)}): {why}")


def _is_input(n: fx.Node) -> bool:
    return n.op == "placeholder" and not n.args


Rule = Callable[[_Ctx], tuple[float, float, float, str]]  # local, L, L_exact, method
FUNCTION_RULES: dict[Any, Rule] = {}


def function_rule(*targets: Any) -> Callable[[Rule], Rule]:
    """Register a rule for call_function targets (callables) and call_method names (strings)."""

    def decorate(rule: Rule) -> Rule:
        for target in targets:
            FUNCTION_RULES[target] = rule
        return rule

    return decorate


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    target = node.target
    name = getattr(target, "__name__", str(target))
    module = getattr(target, "__module__", None) or ""
    return f"function {module + '.' if module and 'built' not in module else ''}{name}"


def graph_bound(model: nn.Module, shape: Shape, options: BoundOptions) -> GraphBound:
    """Trace ``model`` and bound every input-dependent node (see the module docstring)."""
    if any(m.training for m in model.modules()):
        raise InvalidInputError(
            f"{type(model).__name__} is in training mode: call model.eval() before bounding"
        )
    refuse_layers_without_rule(model)
    gm = trace_model(model).to(device="cpu", dtype=torch.float64)
    double_model = _double(model)
    check_trace_matches(double_model, gm, shape)
    values = probe_values(gm, shape)
    inputs = [n for n in gm.graph.nodes if _is_input(n)]
    if len(inputs) != 1:
        raise InvalidInputError(
            f"{type(model).__name__}.forward takes {len(inputs)} tensors without defaults; "
            "a spectral bound needs exactly one input"
        )
    bounds: dict[fx.Node, tuple[float, float]] = {}
    nodes: list[NodeBound] = []
    output: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "output":
            output = _output_node(node)
            continue
        result = _bound_node(node, gm, values, bounds, options)
        if result is not None:
            nodes.append(result)
    assert output is not None
    return _finish(gm, output, nodes, bounds, values)


def _double(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()


def _output_node(node: fx.Node) -> fx.Node:
    result = node.args[0]
    if not isinstance(result, fx.Node):
        raise InvalidInputError(
            "the model must return one tensor (logits) for a spectral bound, not a tuple or dict"
        )
    return result


def _bound_node(
    node: fx.Node,
    gm: fx.GraphModule,
    values: dict[fx.Node, Any],
    bounds: dict[fx.Node, tuple[float, float]],
    options: BoundOptions,
) -> NodeBound | None:
    ctx = _Ctx(node, values, bounds, options)
    if _is_input(node):
        bounds[node] = (1.0, 1.0)
        return None
    if node.op in ("placeholder", "get_attr") or not _carries_input(ctx):
        return None  # a constant: L = 0
    _check_batch(ctx)
    if node.op == "call_module":
        local, lip, exact, method, fields = _module_node(ctx, gm)
    else:
        rule = FUNCTION_RULES.get(node.target)
        if rule is None:
            raise ctx.refuse(
                "has no Lipschitz rule; supported functions and methods: "
                + ", ".join(sorted({_target_name(t) for t in FUNCTION_RULES}))
            )
        local, lip, exact, method = rule(ctx)
        fields = {}
    if not math.isfinite(lip):
        raise ctx.refuse(f"its Lipschitz bound is not finite ({lip})")
    bounds[node] = (lip, exact)
    first = next((a for a in node.all_input_nodes if ctx.dependent(a)), None)
    return NodeBound(
        name=str(node.target) if node.op == "call_module" else node.name,
        kind=_kind(node, gm),
        local=local,
        lipschitz=lip,
        exact=exact,
        method=method,
        inputs=[a.name for a in node.all_input_nodes if ctx.dependent(a)],
        input_shape=ctx.shape(first) if first is not None else (),
        output_shape=ctx.shape(node),
        fields=fields,
    )


def _target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _kind(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    return _target_name(node.target)


def _carries_input(ctx: _Ctx) -> bool:
    """True when the node's value is a tensor (or tensors) computed from the input."""
    value = ctx.values.get(ctx.node)
    tensors = isinstance(value, torch.Tensor) or (
        isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value)
    )
    return tensors and any(ctx.dependent(a) for a in ctx.node.all_input_nodes)


def _check_batch(ctx: _Ctx) -> None:
    value = ctx.values[ctx.node]
    parts = value if isinstance(value, list | tuple) else [value]
    for part in parts:
        if isinstance(part, torch.Tensor) and (part.dim() == 0 or part.shape[0] != PROBE_BATCH):
            raise ctx.refuse(
                f"its output has shape {tuple(part.shape)} for a batch of {PROBE_BATCH}: it mixes the "
                "examples of a batch, so no per-example bound applies"
            )


def _module_node(ctx: _Ctx, gm: fx.GraphModule) -> tuple[float, float, float, str, dict[str, Any]]:
    node = ctx.node
    module = gm.get_submodule(str(node.target))
    rule = find_rule(module)
    if rule is None:
        raise ctx.refuse(f"{type(module).__name__} has no Lipschitz rule")
    if len(node.args) != 1 or node.kwargs:
        raise ctx.refuse("a layer with a rule must be called with one tensor")
    (x,) = node.args
    fields = rule(module, ctx.shape(x), ctx.shape(node), ctx.options)
    local = float(fields.pop("upper"))
    exact = fields.get("exact")
    lip, lip_exact = ctx.lip(x)
    method = str(fields.pop("method", "constant"))
    return local, local * lip, (exact if exact is not None else local) * lip_exact, method, fields


def _finish(
    gm: fx.GraphModule,
    output: fx.Node,
    nodes: list[NodeBound],
    bounds: dict[fx.Node, tuple[float, float]],
    values: dict[fx.Node, Any],
) -> GraphBound:
    lip, exact = bounds.get(output, (0.0, 0.0))
    logit = _margin_node(output, gm, values)
    final_linear, features = None, None
    if logit.op == "call_module" and type(gm.get_submodule(str(logit.target))) is nn.Linear:
        final_linear = str(logit.target)
        source = logit.args[0]
        features = bounds.get(source, (0.0, 0.0))[0] if isinstance(source, fx.Node) else 0.0
    return GraphBound(
        nodes=nodes,
        lipschitz=lip,
        lipschitz_exact=exact,
        margin_lipschitz=bounds.get(logit, (0.0, 0.0))[0],
        margin_node=logit.name,
        final_linear=final_linear,
        features_lipschitz=features,
        graph_module=gm,
        margin_module=_truncated(gm, logit) if logit is not output else None,
    )


def _margin_node(output: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> fx.Node:
    """Walk back from the output through maps that keep every class margin ``z_y - z_j``: identity
    layers, eval-mode dropout, and ``log_softmax`` over the classes (it subtracts one log-sum-exp
    from every logit of an example)."""
    node = output
    while True:
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if source is None or not _keeps_margins(node, gm, values):
            return node
        node = source


def _keeps_margins(node: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if type(module) in (nn.Identity, nn.Dropout):
            return True
        if type(module) is nn.LogSoftmax:
            return module.dim in (1, -1) and values[node].dim() == 2
        return False
    if node.target in (F.log_softmax, torch.log_softmax, "log_softmax"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return dim in (1, -1) and values[node].dim() == 2
    if node.target is F.dropout:
        return (node.args[2] if len(node.args) > 2 else node.kwargs.get("training", True)) is False
    return False


def _truncated(gm: fx.GraphModule, node: fx.Node) -> fx.GraphModule:
    """A copy of ``gm`` whose output is ``node`` (the logits before ``log_softmax``)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            break
        env[n] = graph.node_copy(n, lambda a: env[a])
        if n is node:
            break
    graph.output(env[node])
    return fx.GraphModule(gm, graph, "Logits")


# ---------------------------------------------------------------------------------------------
# Function rules
# ---------------------------------------------------------------------------------------------


def _unary(ctx: _Ctx, constant: float, method: str = "constant") -> tuple[float, float, float, str]:
    """``f(x, constants...)`` with ``Lip(f) <= constant``: only the first argument may vary."""
    x = ctx.node.args[0] if ctx.node.args else None
    others = list(ctx.node.args[1:]) + list(ctx.node.kwargs.values())
    if x is None or any(ctx.dependent(a) for a in others):
        raise ctx.refuse("only its first argument may depend on the input")
    lip, exact = ctx.lip(x)
    return constant, constant * lip, constant * exact, method


def _constant_rule(constant: float, method: str = "constant") -> Rule:
    return lambda ctx: _unary(ctx, constant, method)


_RELU_LIKE = (F.relu, torch.relu, "relu", F.relu6, F.hardtanh, torch.tanh, F.tanh, "tanh")
function_rule(*_RELU_LIKE, F.softplus, F.softsign, F.celu, torch.abs, "abs", torch.clamp, "clamp")(
    _constant_rule(1.0)
)
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
def _leaky(ctx: _Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, max(1.0, abs(float(ctx.arg(1, "negative_slope", 0.01)))))


@function_rule(F.elu)
def _elu(ctx: _Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, max(1.0, abs(float(ctx.arg(1, "alpha", 1.0)))))


@function_rule(F.log_softmax, torch.log_softmax, "log_softmax")
def _log_softmax(ctx: _Ctx) -> tuple[float, float, float, str]:
    dim = ctx.arg(1, "dim")
    if not isinstance(dim, int):
        raise ctx.refuse("log_softmax needs an explicit integer dim")
    full = ctx.values[ctx.node].shape
    return _unary(ctx, log_softmax_constant(int(full[dim])), "triangle")


@function_rule(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout)
def _dropout(ctx: _Ctx) -> tuple[float, float, float, str]:
    if ctx.arg(2, "training", True) is not False:
        raise ctx.refuse("dropout in training mode is random: call model.eval()")
    return _unary(ctx, 1.0, "identity")


@function_rule(operator.getitem, "narrow", torch.narrow, "select", torch.select)
def _slice(ctx: _Ctx) -> tuple[float, float, float, str]:
    """Taking some coordinates (a projection) is 1-Lipschitz; repeated indices would copy, refused."""
    index = ctx.node.args[1] if len(ctx.node.args) > 1 else None
    if ctx.node.target is operator.getitem and isinstance(
        ctx.value(ctx.node.args[0]), torch.Tensor
    ):
        items = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, int | slice | type(None) | type(Ellipsis)) for i in items):
            raise ctx.refuse(
                "indexing with tensors or lists can repeat values; only slices are supported"
            )
    return _unary(ctx, 1.0, "projection")


@function_rule(torch.split, "split", torch.chunk, "chunk", torch.unbind, "unbind")
def _split(ctx: _Ctx) -> tuple[float, float, float, str]:
    return _unary(ctx, 1.0, "projection")


@function_rule(torch.mean, "mean", torch.sum, "sum")
def _reduce(ctx: _Ctx) -> tuple[float, float, float, str]:
    """Sum of ``k`` values: ``sqrt(k)``; mean: ``1 / sqrt(k)`` (Cauchy-Schwarz, attained)."""
    x = ctx.node.args[0]
    k = math.prod(ctx.shape(x)) / max(1, math.prod(ctx.shape(ctx.node)))
    mean = _target_name(ctx.node.target) == "mean"
    return _unary(ctx, 1.0 / math.sqrt(k) if mean else math.sqrt(k), "reduction")


def _broadcast_factor(ctx: _Ctx, a: Any) -> float:
    """``sqrt(k)`` when operand ``a`` is broadcast to ``k`` times its size in the output."""
    return math.sqrt(math.prod(ctx.shape(ctx.node)) / max(1, math.prod(ctx.shape(a))))


@function_rule(
    operator.add, torch.add, "add", operator.iadd, operator.sub, torch.sub, "sub", operator.isub
)
def _sum(ctx: _Ctx) -> tuple[float, float, float, str]:
    """``a +- alpha b``: ``L_a + |alpha| L_b`` (triangle inequality), broadcast copies included."""
    a, b = ctx.node.args[0], ctx.arg(1, "other")
    alpha = abs(float(ctx.constant(ctx.node.kwargs.get("alpha", 1.0))))
    lip = exact = 0.0
    for operand, weight in ((a, 1.0), (b, alpha)):
        factor = weight * _broadcast_factor(ctx, operand) if isinstance(operand, fx.Node) else 0.0
        lip += factor * ctx.lip(operand)[0]
        exact += factor * ctx.lip(operand)[1]
    return 1.0, lip, exact, "sum of branches"


@function_rule(operator.mul, torch.mul, "mul", operator.imul, operator.truediv, torch.div, "div")
def _scale(ctx: _Ctx) -> tuple[float, float, float, str]:
    """A product with (or quotient by) a constant: ``max |c|`` (``1 / min |c|``)."""
    a, b = ctx.node.args[0], ctx.arg(1, "other")
    divide = _target_name(ctx.node.target) in ("truediv", "div")
    if ctx.node.kwargs.get("rounding_mode") is not None:
        raise ctx.refuse("rounded division is not Lipschitz")
    if ctx.dependent(a) and ctx.dependent(b):
        raise ctx.refuse("a product of two input-dependent tensors has no global Lipschitz bound")
    if divide and ctx.dependent(b):
        raise ctx.refuse("division by an input-dependent tensor has no global Lipschitz bound")
    x, c = (a, b) if ctx.dependent(a) else (b, a)
    magnitude = ctx.constant(c).abs()
    factor = 1.0 / float(magnitude.min()) if divide else float(magnitude.max())
    factor *= _broadcast_factor(ctx, x)
    lip, exact = ctx.lip(x)
    return factor, factor * lip, factor * exact, "constant factor"


@function_rule(torch.cat, torch.concat, torch.concatenate, torch.stack)
def _cat(ctx: _Ctx) -> tuple[float, float, float, str]:
    """``sqrt(sum_i L_i^2)``: the squared distance of a concatenation is the sum of its parts'."""
    parts = ctx.node.args[0]
    if not isinstance(parts, list | tuple):
        raise ctx.refuse("expected a list of tensors")
    lips = [ctx.lip(p) for p in parts]
    lip = math.sqrt(sum(p[0] ** 2 for p in lips))
    return 1.0, lip, math.sqrt(sum(p[1] ** 2 for p in lips)), "sqrt of sum of squares"


@function_rule(F.linear)
def _linear(ctx: _Ctx) -> tuple[float, float, float, str]:
    weight = ctx.arg(1, "weight")
    if ctx.dependent(weight):
        raise ctx.refuse("an input-dependent weight has no global Lipschitz bound")
    norm = float(torch.linalg.matrix_norm(ctx.constant(weight), ord=2))
    lip, exact = ctx.lip(ctx.node.args[0])
    return norm, norm * lip, norm * exact, "svd"


@function_rule(operator.matmul, torch.matmul, "matmul", torch.mm, "mm")
def _matmul(ctx: _Ctx) -> tuple[float, float, float, str]:
    """``x @ W`` or ``W @ x`` with a constant 2-D ``W``: copies of ``W`` on independent slices, ``||W||_2``."""
    a, b = ctx.node.args[0], ctx.node.args[1]
    if ctx.dependent(a) == ctx.dependent(b):
        raise ctx.refuse("a product of two input-dependent tensors has no global Lipschitz bound")
    x, w = (a, b) if ctx.dependent(a) else (b, a)
    matrix = ctx.constant(w)
    if matrix.dim() != 2:
        raise ctx.refuse("only a constant 2-D matrix is supported")
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    lip, exact = ctx.lip(x)
    return norm, norm * lip, norm * exact, "svd"


def _module_rule_as_function(ctx: _Ctx, module: nn.Module) -> tuple[float, float, float, str]:
    x = ctx.node.args[0]
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
def _conv(ctx: _Ctx) -> tuple[float, float, float, str]:
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
def _max_pool(ctx: _Ctx) -> tuple[float, float, float, str]:
    if ctx.arg(6, "return_indices", False):
        raise ctx.refuse("return_indices=True is not supported")
    pool = nn.MaxPool2d(
        ctx.arg(1, "kernel_size"),
        stride=ctx.arg(2, "stride"),
        padding=ctx.arg(3, "padding", 0),
        dilation=ctx.arg(4, "dilation", 1),
        ceil_mode=bool(ctx.arg(5, "ceil_mode", False)),
    )
    return _module_rule_as_function(ctx, pool)


@function_rule(F.avg_pool2d)
def _avg_pool(ctx: _Ctx) -> tuple[float, float, float, str]:
    pool = nn.AvgPool2d(
        ctx.arg(1, "kernel_size"),
        stride=ctx.arg(2, "stride"),
        padding=ctx.arg(3, "padding", 0),
        ceil_mode=bool(ctx.arg(4, "ceil_mode", False)),
        count_include_pad=bool(ctx.arg(5, "count_include_pad", True)),
        divisor_override=ctx.arg(6, "divisor_override"),
    )
    return _module_rule_as_function(ctx, pool)


@function_rule(F.adaptive_avg_pool2d)
def _adaptive_avg_pool(ctx: _Ctx) -> tuple[float, float, float, str]:
    return _module_rule_as_function(ctx, nn.AdaptiveAvgPool2d(ctx.arg(1, "output_size")))


@function_rule(F.pad)
def _pad(ctx: _Ctx) -> tuple[float, float, float, str]:
    """Constant padding embeds the image (an isometry plus a constant); other modes copy pixels."""
    if ctx.arg(2, "mode", "constant") != "constant":
        raise ctx.refuse(
            "only mode='constant' padding is supported as a function (use padding_mode)"
        )
    x = ctx.node.args[0]
    lip, exact = ctx.lip(x)
    if ctx.dependent(ctx.arg(3, "value", 0.0)):
        raise ctx.refuse("an input-dependent padding value is not supported")
    return 1.0, lip, exact, "isometry"
