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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intriguing.analysis.graph_rules import (
    FUNCTION_RULES,
    Ctx,
    is_input,
    node_arg,
    target_name,
)
from intriguing.analysis.layer_rules import BoundConfig, Shape, find_rule, no_rule_message
from intriguing.errors import InvalidInputError
from intriguing.models.user import eval_mode

PROBE_BATCH = 5  # the probe run uses five examples, so a node that mixes examples shows


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


class _InPlaceProxy(fx.Proxy):
    """A proxy that records ``x += y`` as ``operator.iadd`` (torch.fx's own falls back to
    ``x = x + y``). The graph then changes tensors in place where the model does, so a read of
    the old value through a view or another name (``v = h[:, :5]; v += t; return h``) is seen
    (:class:`_Recorder`) instead of bounding a graph that leaves ``h`` unchanged."""

    def __iadd__(self, other: Any) -> Any:
        return self.tracer.create_proxy("call_function", operator.iadd, (self, other), {})

    def __isub__(self, other: Any) -> Any:
        return self.tracer.create_proxy("call_function", operator.isub, (self, other), {})

    def __imul__(self, other: Any) -> Any:
        return self.tracer.create_proxy("call_function", operator.imul, (self, other), {})

    def __itruediv__(self, other: Any) -> Any:
        return self.tracer.create_proxy("call_function", operator.itruediv, (self, other), {})


class _Tracer(fx.Tracer):
    """Layers with a rule are leaves; user modules are traced through; remembers where it failed;
    augmented assignments are recorded in place (:class:`_InPlaceProxy`)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_in: str | None = None

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _InPlaceProxy(node, self)

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
    """One line for the first torch.nn layer that has no rule (an LSTM, attention, ...); used when
    tracing fails (a layer that is traced and used is refused at its node, an unused one never)."""
    for name, module in model.named_modules():
        if not name or isinstance(module, _CONTAINERS) or find_rule(module) is not None:
            continue
        if type(module).__module__.startswith(("torch.nn", "torch.ao.nn")):
            raise InvalidInputError(no_rule_message(name, module))


_HOOK_FIX = (
    "remove it (handle.remove(); for torch.nn.utils.weight_norm / spectral_norm call "
    "remove_weight_norm / remove_spectral_norm) or do its work in forward"
)


def refuse_forward_hooks(model: nn.Module, layers: Sequence[tuple[str, nn.Module]] = ()) -> None:
    """One line for the first forward (pre-)hook, or ``forward`` replaced on the instance, on
    ``model``, any sub-module or a ``layers=`` entry.

    A hook changes what a module computes, but the chain walk reads the layer's type and weights and
    torch.fx calls ``forward`` directly: the bound (section 4.3) would be of another map, possibly
    too small. Backward hooks do not change the forward map and are allowed.
    """
    global_hooks = nn.modules.module
    if global_hooks._global_forward_hooks or global_hooks._global_forward_pre_hooks:
        raise InvalidInputError(
            "a global forward hook (torch.nn.modules.module.register_module_forward_hook or "
            "register_module_forward_pre_hook) runs on every module and the spectral bound cannot "
            f"see it: {_HOOK_FIX}"
        )
    for name, module in [*layers, *model.named_modules(remove_duplicate=False)]:
        if "forward" in vars(module):
            where = f"layer {name!r}" if name else "the model"
            raise InvalidInputError(
                f"{where} ({type(module).__name__}) has its forward replaced on the instance "
                "(module.forward = ...), which the spectral bound cannot see: it bounds the class's "
                "forward; write the new forward in a subclass instead"
            )
        for kind, hooks in (
            ("forward pre-hook", module._forward_pre_hooks),
            ("forward hook", module._forward_hooks),
        ):
            if hooks:
                where = f"layer {name!r}" if name else "the model"
                hook = next(iter(hooks.values()))
                label = getattr(hook, "__qualname__", None) or type(hook).__name__
                raise InvalidInputError(
                    f"{where} ({type(module).__name__}) has a {kind} ({label}), which can change "
                    f"what it computes and which the spectral bound cannot see: {_HOOK_FIX}"
                )


def trace_model(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx graph (layers with rules kept whole); untraceable models refused in one line."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises many types; the user gets one line
        refuse_layers_without_rule(model)  # an LSTM etc. is the likelier cause: name it
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
    """Runs the graph and keeps every node's value; refuses a node that reads a tensor after an
    in-place operation changed it (the graph's edges carry values, the model's memory: such a
    read is invisible to the bound, which would come out too small)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.extra_traceback = False  # errors stay one line ("While executing ..." appended)
        self.values: dict[fx.Node, Any] = {}
        self._versions: dict[fx.Node, tuple[int, ...]] = {}  # version counters when made
        self._changed_by: dict[fx.Node, fx.Node] = {}

    def run_node(self, n: fx.Node) -> Any:
        self._refuse_stale_reads(n)
        out = super().run_node(n)
        self.values[n] = out
        for node, versions in self._versions.items():  # views share their base's counter
            if node not in self._changed_by and _versions(self.values[node]) != versions:
                self._changed_by[node] = n
        versions = _versions(out)
        if versions:
            self._versions[n] = versions
        return out

    def _refuse_stale_reads(self, n: fx.Node) -> None:
        read: list[fx.Node] = []
        fx.node.map_arg((n.args, n.kwargs), read.append)
        for arg in read:
            if arg in self._changed_by:
                where = "the output" if n.op == "output" else f"node {n.name!r}"
                raise InvalidInputError(
                    f"{where} reads {arg.name!r} after {self._changed_by[arg].name!r} changed it "
                    "in place (x += ..., inplace=True, a method ending in _, on it or a view of "
                    "it), which a spectral bound of the graph cannot follow; make that operation "
                    "out of place (x = x + ..., inplace=False)"
                )


def _versions(value: Any) -> tuple[int, ...]:
    """The version counters of a tensor, or of the tensors of a tuple or list (``chunk``)."""
    if isinstance(value, torch.Tensor):
        return (value._version,)
    if isinstance(value, list | tuple):
        return tuple(v._version for v in value if isinstance(v, torch.Tensor))
    return ()


def probe_values(gm: fx.GraphModule, shape: Shape) -> dict[fx.Node, Any]:
    """Every node's value on ``PROBE_BATCH`` seeded random float64 inputs in [0, 1]."""
    x = torch.rand(
        (PROBE_BATCH, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(x)
    except InvalidInputError:
        raise
    except Exception as exc:  # the user's forward can fail in any way on a wrong shape
        raise forward_failure("the model", shape, exc) from None
    return recorder.values


def forward_failure(what: str, shape: Shape, exc: Exception) -> InvalidInputError:
    """The one-line error for a forward pass of the float64 copy that failed: a dtype clash (a
    cast such as ``x.float()`` in forward, or a float32 tensor kept as a plain attribute, which
    ``.double()`` does not convert) is named as such, anything else as a shape problem."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    clash = "dtype" in first or "scalar type" in first or "Float" in first
    if clash and ("Double" in first or "double" in first):
        return InvalidInputError(
            f"{what} fails on float64 inputs ({first}): the bound runs a float64 copy of the "
            "model; remove casts such as x.float() from forward, and register tensors that "
            "forward uses as buffers (self.register_buffer) so that the copy converts them"
        )
    return InvalidInputError(f"{what} cannot take input of shape {shape}: {first}")


def check_trace_matches(model: nn.Module, gm: fx.GraphModule, shape: Shape) -> None:
    """The traced graph must compute ``model(x)`` (tracing fixes Python-level branches)."""
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    try:
        with torch.no_grad():
            expected, got = model(x.clone()), gm(x.clone())  # forward may change x in place
    except Exception as exc:  # the user's forward can fail in any way on a wrong shape
        raise forward_failure(type(model).__name__, shape, exc) from None
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        raise InvalidInputError("the model must return one tensor (logits) for a spectral bound")
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or float((got - expected).abs().max()) > 1e-9 * scale:
        raise InvalidInputError(
            f"the traced graph of {type(model).__name__} does not compute model(x): its forward "
            "depends on state torch.fx cannot see; pass layers=[...] in call order"
        )


def graph_bound(model: nn.Module, shape: Shape, options: BoundConfig) -> GraphBound:
    """Trace ``model`` and bound every input-dependent node (see the module docstring)."""
    if any(m.training for m in model.modules()):
        raise InvalidInputError(
            f"{type(model).__name__} is in training mode: call model.eval() before bounding"
        )
    double_model = _double(model)  # the graph module shares its layers: never touch the user's
    gm = trace_model(double_model)
    _refuse_called_layers_without_rule(gm)
    inputs = [n for n in gm.graph.nodes if is_input(n)]
    if len(inputs) != 1:  # before running it: a second input would fail as a missing argument
        raise InvalidInputError(
            f"{type(model).__name__}.forward takes {len(inputs)} tensors without defaults; "
            "a spectral bound needs exactly one input"
        )
    check_trace_matches(double_model, gm, shape)
    values = probe_values(gm, shape)
    bounds: dict[fx.Node, tuple[float, float]] = {}
    elements: dict[fx.Node, list[tuple[float, float]]] = {}  # tuple nodes: each element's
    nodes: list[NodeBound] = []
    output: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "output":
            output = _output_node(node)
            continue
        result = _bound_node(node, gm, values, bounds, options, elements)
        if result is not None:
            nodes.append(result)
    assert output is not None
    return _finish(gm, output, nodes, bounds, values)


def _refuse_called_layers_without_rule(gm: fx.GraphModule) -> None:
    """A called layer without rule (an LSTM, ...) is refused before anything runs."""
    for node in gm.graph.nodes:
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if module is not None and find_rule(module) is None:
            raise InvalidInputError(no_rule_message(str(node.target), module))


def _double(model: nn.Module) -> nn.Module:
    import copy

    return eval_mode(copy.deepcopy(model).to(device="cpu", dtype=torch.float64))


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
    options: BoundConfig,
    elements: dict[fx.Node, list[tuple[float, float]]],
) -> NodeBound | None:
    ctx = Ctx(node, values, bounds, options, elements)
    if is_input(node):
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
                + ", ".join(sorted({target_name(t) for t in FUNCTION_RULES}))
            )
        try:
            local, lip, exact, method = rule(ctx)
        except InvalidInputError as exc:  # name the node, once
            message = str(exc)
            raise (exc if message.startswith("node ") else ctx.refuse(message)) from None
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


def _kind(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    return target_name(node.target)


def _carries_input(ctx: Ctx) -> bool:
    """True when the node's value is a tensor (or tensors) computed from the input."""
    value = ctx.values.get(ctx.node)
    tensors = isinstance(value, torch.Tensor) or (
        isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value)
    )
    return tensors and any(ctx.dependent(a) for a in ctx.node.all_input_nodes)


def _check_batch(ctx: Ctx) -> None:
    value = ctx.values[ctx.node]
    parts = value if isinstance(value, list | tuple) else [value]
    for part in parts:
        if isinstance(part, torch.Tensor) and (part.dim() == 0 or part.shape[0] != PROBE_BATCH):
            raise ctx.refuse(
                f"its output has shape {tuple(part.shape)} for a batch of {PROBE_BATCH}: it mixes the "
                "examples of a batch, so no per-example bound applies"
            )


def _module_node(ctx: Ctx, gm: fx.GraphModule) -> tuple[float, float, float, str, dict[str, Any]]:
    node = ctx.node
    module = gm.get_submodule(str(node.target))
    rule = find_rule(module)
    if rule is None:
        raise ctx.refuse(f"{type(module).__name__} has no Lipschitz rule")
    if len(node.args) != 1 or node.kwargs:
        raise ctx.refuse("a layer with a rule must be called with one tensor")
    (x,) = node.args
    try:
        fields = rule(module, ctx.shape(x), ctx.shape(node), ctx.options)
    except InvalidInputError as exc:  # name the node the rule refused
        raise ctx.refuse(str(exc)) from None
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
        source = node_arg(node, 0, "input")
        if not isinstance(source, fx.Node) or not _keeps_margins(node, gm, values):
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
        return node_arg(node, 1, "dim") in (1, -1) and values[node].dim() == 2
    if node.target is F.dropout:
        return node_arg(node, 2, "training", True) is False
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
