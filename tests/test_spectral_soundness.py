"""Spectral bounds (§4.3) of constructs that used to be bounded too low or crash: a layer applied
twice, tuple concatenation, module hooks, keyword arguments; and the no-rule message.

Every model is tiny and its Lipschitz constant known exactly; the expected bounds are worked out by
hand in each test (weight ``3 I`` applied twice: 9, and so on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from intriguing.analysis import BoundOptions, certified_radii, network_bounds, sequential_layers
from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError

FAST = BoundOptions(exact_method="none")


def scaled_identity(n: int, scale: float, bias: float = 0.0) -> nn.Linear:
    """``Linear(n, n)`` with weight ``scale * I`` and every bias ``bias``."""
    layer = nn.Linear(n, n)
    with torch.no_grad():
        layer.weight.copy_(scale * torch.eye(n))
        layer.bias.fill_(bias)
    return layer


def first_rows(rows: int, n: int, scale: float = 1.0) -> nn.Linear:
    """``Linear(n, rows)`` keeping the first ``rows`` inputs times ``scale`` (norm ``scale``)."""
    layer = nn.Linear(n, rows, bias=False)
    with torch.no_grad():
        layer.weight.copy_(scale * torch.eye(n)[:rows])
    return layer


def jacobian_norm(model: nn.Module, x: torch.Tensor) -> float:
    """``||J(x)||_2`` of one example ``x`` by torch.autograd.functional (an independent oracle)."""
    double = model.double()
    jac = torch.autograd.functional.jacobian(lambda z: double(z[None])[0], x.double())
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))


# ------------------------------------------------------------------ 1. a layer called twice
def tied_relu() -> nn.Sequential:
    """Flatten, lin, ReLU, lin with lin = 3 I - 2.999: at x = 1 both ReLUs pass, J = 9 I."""
    lin = scaled_identity(16, 3.0, -2.999)
    return nn.Sequential(nn.Flatten(), lin, nn.ReLU(), lin).eval()


def test_a_layer_used_twice_in_a_sequential_is_bounded_at_each_call() -> None:
    """Before: named_children() skipped the second `lin`, bound 3 < the Jacobian norm 9 at x = 1."""
    model = tied_relu()
    ones = torch.ones(1, 1, 4, 4)
    assert jacobian_norm(tied_relu(), ones[0]) == pytest.approx(9.0)
    bound = network_bounds(model, (1, 4, 4), options=FAST, samples=ones)
    assert [layer.name for layer in bound.layers] == ["0", "1", "2", "3"]
    assert [layer.kind for layer in bound.layers] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert bound.structure == "chain"
    assert bound.lipschitz == pytest.approx(9.0, rel=1e-12)  # 1 * 3 * 1 * 3
    assert bound.measured is not None and bound.measured.value == pytest.approx(9.0, rel=1e-9)


def test_the_repeated_block_idiom_counts_every_repetition() -> None:
    """``[Linear(2 I), ReLU] * 3`` then the first 10 rows of I: 2 * 2 * 2 * 1 = 8, attained for x > 0."""
    block = [scaled_identity(16, 2.0), nn.ReLU()]
    model = nn.Sequential(nn.Flatten(), *(block * 3), first_rows(10, 16)).eval()
    bound = network_bounds(model, (1, 4, 4), options=FAST)
    assert [layer.name for layer in bound.layers] == [str(i) for i in range(8)]
    assert bound.lipschitz == pytest.approx(8.0, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(8.0, rel=1e-9)


def test_a_shared_nested_sequential_is_expanded_at_each_use() -> None:
    inner = nn.Sequential(scaled_identity(16, 3.0), nn.ReLU())
    model = nn.Sequential(nn.Flatten(), inner, inner).eval()
    names = [name for name, _ in sequential_layers(model)]
    assert names == ["0", "1.0", "1.1", "2.0", "2.1"]
    bound = network_bounds(model, (1, 4, 4), options=FAST)
    assert bound.lipschitz == pytest.approx(9.0, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(9.0, rel=1e-9)


def test_the_pairwise_radius_uses_every_call_below_the_last_linear() -> None:
    """z = 9 x for x > 0 (lin = 3 I twice): margins 9 (x_y - x_j), rows differ by 3 sqrt 2, the
    features' constant is 3, so the radius is (x_y - x_j) / sqrt 2, over 4 = sqrt(16) in RMS."""
    lin = scaled_identity(16, 3.0)
    model = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), lin).eval()
    images = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05
    labels = images.flatten(1).argmax(dim=1)
    bound = network_bounds(model, (1, 4, 4), options=FAST)
    radii = certified_radii(model, images, labels, bound)
    assert radii.lipschitz_features == pytest.approx(3.0)
    top2 = images.flatten(1).double().topk(2, dim=1).values
    expected = (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0) / 4.0
    assert radii.pairwise is not None
    assert radii.pairwise.tolist() == pytest.approx(expected.tolist(), rel=1e-9)


class TiedGraph(nn.Module):
    """The same layer twice in forward (the traced walk): one node per call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = scaled_identity(16, 3.0, -2.999)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(F.relu(self.lin(x.flatten(1))))


def test_a_layer_called_twice_in_a_traced_graph_counts_twice() -> None:
    bound = network_bounds(TiedGraph().eval(), (1, 4, 4), options=FAST)
    assert bound.structure == "graph"
    assert [layer.name for layer in bound.layers].count("lin") == 2
    assert bound.lipschitz == pytest.approx(9.0, rel=1e-12)


# ------------------------------------------------------------------ 2. tuple concatenation
class TupleIndex(nn.Module):
    """``parts = x.chunk(2, dim=1) + (10 x,)``, then ``scale * relu(parts[index] - shift)``."""

    def __init__(self, index: int, scale: float = 1.0, shift: float = 9.999) -> None:
        super().__init__()
        self.index, self.scale, self.shift = index, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(2, dim=1) + (10 * x,)  # noqa: RUF005 (the construct under test)
        return self.scale * F.relu(parts[self.index] - self.shift).flatten(1)


@pytest.mark.parametrize(
    ("index", "scale", "shift", "expected"),
    [
        (2, 1.0, 9.999, 10.0),  # 10 x, passed by the ReLU at x = 1: 10 (before: 1)
        (-1, 1.0, 9.999, 10.0),  # the same element, counted from the end
        (0, 3.0, 0.0, 3.0),  # 3 x[:, :1]: 3
        (1, 3.0, 0.0, 3.0),  # 3 x[:, 1:]: 3
    ],
)
def test_indexing_a_concatenated_tuple_keeps_each_elements_constant(
    index: int, scale: float, shift: float, expected: float
) -> None:
    ones = torch.ones(1, 2, 2, 2)
    model = TupleIndex(index, scale, shift).eval()
    assert jacobian_norm(TupleIndex(index, scale, shift), ones[0]) == pytest.approx(expected)
    bound = network_bounds(model, (2, 2, 2), options=FAST, samples=ones)
    assert bound.lipschitz == pytest.approx(expected, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(expected)


class CatOfTuples(nn.Module):
    """``torch.cat`` of a tuple built by slicing, concatenation or repetition of ``chunk``."""

    def __init__(self, build: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> None:
        super().__init__()
        self.build = build

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.build(x), 1).flatten(1)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # (x_2, x_1, x): every coordinate twice, J^T J = 2 I: sqrt 2 (before: refused)
        (lambda x: x.chunk(2, dim=1)[::-1] + (x,), math.sqrt(2.0)),  # noqa: RUF005
        # (x_1, x_2, x_1, x_2): sqrt 2 as well
        (lambda x: x.chunk(2, dim=1) * 2, math.sqrt(2.0)),
        # (3 x, x_1, x_2): J^T J = 9 I + I: sqrt 10
        (lambda x: (3 * x,) + x.chunk(2, dim=1), math.sqrt(10.0)),  # noqa: RUF005
    ],
)
def test_a_concatenated_tuple_is_one_concatenation(
    build: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], expected: float
) -> None:
    bound = network_bounds(CatOfTuples(build).eval(), (2, 2, 2), options=FAST)
    assert bound.lipschitz == pytest.approx(expected, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(expected)


# ------------------------------------------------------------------ 3. hooks
def prehook_scaled() -> nn.Sequential:
    """A pre-hook multiplies the Linear's input by 10: the map is 10 relu(x - 0.9999) at x = 1."""
    lin = scaled_identity(8, 1.0, -9.999)
    lin.register_forward_pre_hook(lambda module, args: (args[0] * 10,))
    return nn.Sequential(nn.Flatten(), lin, nn.ReLU()).eval()


def posthook_scaled() -> nn.Sequential:
    lin = scaled_identity(8, 1.0)
    lin.register_forward_hook(lambda module, args, output: output * 10)
    return nn.Sequential(nn.Flatten(), lin, nn.ReLU()).eval()


class HookedInside(nn.Module):
    """A user module (traced walk) whose layer carries a forward hook."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = scaled_identity(8, 1.0)
        self.fc.register_forward_hook(lambda module, args, output: output * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + x.flatten(1)


def hooked_root() -> nn.Module:
    model = HookedInside()
    model.fc._forward_hooks.clear()
    model.register_forward_pre_hook(lambda module, args: (args[0] * 10,))
    return model


@pytest.mark.parametrize(
    ("factory", "where", "kind"),
    [
        (prehook_scaled, "'1' (Linear)", "forward pre-hook"),
        (posthook_scaled, "'1' (Linear)", "forward hook"),
        (HookedInside, "'fc' (Linear)", "forward hook"),
        (hooked_root, "the model (HookedInside)", "forward pre-hook"),
    ],
)
def test_a_module_with_a_forward_hook_is_refused_in_one_line(
    factory: Callable[[], nn.Module], where: str, kind: str
) -> None:
    """Before: prehook_scaled got 1 while its Jacobian norm at x = 1 is 10."""
    with pytest.raises(InvalidInputError) as info:
        network_bounds(factory().eval(), (2, 2, 2), options=FAST)
    message = str(info.value)
    assert "\n" not in message and where in message and kind in message
    assert "remove" in message and "forward" in message


def test_a_hooked_layer_in_a_layers_list_is_refused() -> None:
    model = prehook_scaled()
    with pytest.raises(InvalidInputError, match=r"'fc' \(Linear\) has a forward pre-hook"):
        network_bounds(model, (2, 2, 2), layers=[("flat", model[0]), ("fc", model[1])])


def test_a_global_forward_hook_is_refused() -> None:
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out)
    try:
        with pytest.raises(InvalidInputError, match="register_module_forward_hook"):
            network_bounds(nn.Sequential(nn.Flatten()), (2, 2, 2), options=FAST)
    finally:
        handle.remove()


def test_backward_hooks_do_not_change_the_forward_map_and_are_allowed() -> None:
    lin = scaled_identity(8, 2.0)
    lin.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    bound = network_bounds(nn.Sequential(nn.Flatten(), lin).eval(), (2, 2, 2), options=FAST)
    assert bound.lipschitz == pytest.approx(2.0, rel=1e-12)


def patched_relu() -> nn.Sequential:
    """The ReLU's forward replaced on the instance by ``100 relu(x - 5)``: Jacobian norm 100 at
    x = 6, and the class's rule gave 1."""
    relu = nn.ReLU()
    relu.forward = lambda x: 100 * torch.relu(x - 5)  # type: ignore[method-assign]
    return nn.Sequential(nn.Flatten(), scaled_identity(6, 1.0), relu).eval()


class PatchedInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = scaled_identity(6, 1.0)
        self.fc.forward = lambda x: 7 * F.linear(x, self.fc.weight)  # type: ignore[method-assign]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def patched_sequential() -> nn.Sequential:
    """A Sequential whose forward was replaced: its children are not a chain any more."""
    model = nn.Sequential(nn.Flatten(), scaled_identity(6, 1.0))
    model.forward = lambda x: 3 * model[1](model[0](x))  # type: ignore[method-assign]
    return model.eval()


@pytest.mark.parametrize(
    ("make", "where"),
    [
        (patched_relu, "layer '2' (ReLU)"),
        (lambda: PatchedInside().eval(), "layer 'fc' (Linear)"),
        (patched_sequential, "the model (Sequential)"),
    ],
    ids=["sequential-layer", "traced-layer", "sequential-itself"],
)
def test_a_forward_replaced_on_the_instance_is_refused(
    make: Callable[[], nn.Module], where: str
) -> None:
    model = make()
    assert jacobian_norm(model, torch.full((1, 6), 6.0)) > 2.0  # what a class rule would miss
    with pytest.raises(InvalidInputError, match="forward replaced on the instance") as caught:
        network_bounds(model, (6,), options=FAST)
    assert where in str(caught.value)


HOOKED_FILE = """
import torch
from torch import nn


def prehook_scaled():
    lin = nn.Linear(8, 8)
    lin.register_forward_pre_hook(lambda module, args: (args[0] * 10,))
    return nn.Sequential(nn.Flatten(), lin, nn.ReLU())
"""


def test_the_cli_prints_the_hook_refusal_as_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "hooked.py"
    path.write_text(HOOKED_FILE)
    args = [
        "spectral",
        f"{path}:prehook_scaled",
        "--input-shape",
        "2,2,2",
        "--exact-method",
        "none",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "forward pre-hook" in lines[0]


# ------------------------------------------------------------------ 4. keyword arguments
class Fn(nn.Module):
    """``forward(x) = fn(x, w).flatten(1)``: functional calls written with keyword arguments; ``w``
    is a buffer (it follows the model to float64)."""

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], w: torch.Tensor
    ) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.w).flatten(1)


W = 4.0 * torch.eye(8)[:3]  # the first 3 of 8 inputs times 4: norm 4
TAPS = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # a 1x1 conv 3 x_1 + 4 x_2: norm 5
Keyword = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KEYWORD_CASES: list[tuple[str, Keyword, torch.Tensor, float]] = [
    ("F.linear", lambda x, w: F.linear(input=x.flatten(1), weight=w), W, 4.0),
    ("torch.add", lambda x, w: torch.add(input=x, other=x, alpha=2), W, 3.0),
    ("torch.sub", lambda x, w: torch.sub(input=2 * x, other=x, alpha=-1), W, 3.0),
    ("torch.mul", lambda x, w: torch.mul(input=x, other=3.0), W, 3.0),
    ("torch.div", lambda x, w: torch.div(input=x, other=0.25), W, 4.0),
    ("torch.matmul", lambda x, w: torch.matmul(input=x.flatten(1), other=w.T), W, 4.0),
    ("torch.mm", lambda x, w: torch.mm(input=x.flatten(1), mat2=w.T), W, 4.0),
    (
        "torch.mean",
        lambda x, w: torch.mean(input=x.flatten(1), dim=1, keepdim=True),
        W,
        1 / math.sqrt(8),
    ),
    ("torch.sum", lambda x, w: torch.sum(input=x.flatten(1), dim=1, keepdim=True), W, math.sqrt(8)),
    ("F.relu", lambda x, w: F.relu(input=2 * x), W, 2.0),
    ("torch.clamp", lambda x, w: torch.clamp(input=3 * x, min=0.0), W, 3.0),
    ("torch.cat", lambda x, w: torch.cat(tensors=[x, 2 * x], dim=1), W, math.sqrt(5.0)),
    ("F.pad", lambda x, w: F.pad(input=x, pad=(1, 1)), W, 1.0),
    ("F.conv2d", lambda x, w: F.conv2d(input=x, weight=w), TAPS, 5.0),
    ("F.avg_pool2d", lambda x, w: F.avg_pool2d(input=x, kernel_size=2), W, 0.5),
    ("F.max_pool2d", lambda x, w: F.max_pool2d(input=3 * x, kernel_size=2), W, 3.0),
]


@pytest.mark.parametrize(
    ("fn", "w", "expected"), [c[1:] for c in KEYWORD_CASES], ids=[c[0] for c in KEYWORD_CASES]
)
def test_keyword_arguments_are_read_by_name(fn: Keyword, w: torch.Tensor, expected: float) -> None:
    """Before: F.linear(input=..., weight=...) and torch.add(input=..., other=...) raised IndexError.
    Expected constants: W keeps 3 inputs times 4 (4); x + 2 x (3); 2 x - (-1) x (3); a 1x1 conv
    3 x_1 + 4 x_2 (5); a 2x2 average of 4 values (1/2); a sum of 8 (sqrt 8), their mean (1/sqrt 8)."""
    bound = network_bounds(Fn(fn, w).eval(), (2, 2, 2), options=FAST)
    assert bound.lipschitz == pytest.approx(expected, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(expected)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, w: F.linear(x.flatten(1), w, 10 * x.flatten(1)[:, :3]),
        lambda x, w: F.linear(input=x.flatten(1), weight=w, bias=10 * x.flatten(1)[:, :3]),
    ],
    ids=["positional", "keyword"],
)
def test_an_input_dependent_bias_is_refused_not_read_as_a_constant(fn: Keyword) -> None:
    """F.linear(x, W, b(x)) is (W + 10 P) x: its bias was read as a constant (bound 4, true 14)."""
    with pytest.raises(InvalidInputError, match="only its first argument may depend on the input"):
        network_bounds(Fn(fn, W).eval(), (2, 2, 2), options=FAST)


# ------------------------------------------------------------------ 7. layers without a rule
@pytest.mark.parametrize("walk", ["traced", "layers="])
def test_a_layer_without_rule_says_how_to_add_one(walk: str) -> None:
    model = nn.Sequential(nn.Flatten(), nn.LayerNorm(8)).eval()
    layers = [("flat", model[0]), ("norm", model[1])] if walk == "layers=" else None
    with pytest.raises(InvalidInputError) as info:
        network_bounds(model, (2, 2, 2), options=FAST, layers=layers)
    message = str(info.value)
    assert "\n" not in message and "(LayerNorm) has no Lipschitz rule" in message
    assert "register_layer_rule(LayerNorm)" in message


@pytest.mark.parametrize(
    "layer",
    [nn.GroupNorm(2, 2), nn.ConvTranspose2d(2, 2, 3), nn.Upsample(scale_factor=2)],
    ids=["GroupNorm", "ConvTranspose2d", "Upsample"],
)
def test_a_traced_layer_without_rule_says_how_to_add_one(layer: nn.Module) -> None:
    model = nn.Sequential(layer, nn.Flatten()).eval()
    with pytest.raises(InvalidInputError) as info:
        network_bounds(model, (2, 4, 4), options=FAST)
    message = str(info.value)
    assert "\n" not in message and type(layer).__name__ in message
    assert "register_layer_rule" in message and "supported layers:" in message
