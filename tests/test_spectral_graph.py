"""Spectral bounds of any model (issue 14): torch.fx graphs, oracles, measured lower bounds, refusals."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from intriguing.analysis import (
    BoundOptions,
    NetworkBound,
    certified_radii,
    network_bounds,
    register_layer_rule,
    sandwich,
)
from intriguing.analysis.jacobian import CertificationError, jacobian_lower_bound
from intriguing.analysis.layer_rules import gelu_constant, silu_constant
from intriguing.errors import InvalidInputError
from intriguing.models.preprocessing import Normalize, Preprocessed

FAST = BoundOptions(exact_method="none")


def spectral(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.detach().double(), ord=2))


def explicit_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The whole Jacobian at ``x`` (one example) by torch.autograd.functional (an independent oracle)."""
    double = model.double()
    jac = torch.autograd.functional.jacobian(double, x.double()[None])
    out = jac.shape[: jac.dim() - x.dim() - 1]
    return jac.reshape(math.prod(out), -1)


def pair_ratios(model: nn.Module, shape: tuple[int, ...], n: int = 64) -> float:
    """Largest ``||f(x) - f(x')|| / ||x - x'||`` over random nearby pairs (a measured lower bound)."""
    generator = torch.Generator().manual_seed(5)
    x = torch.rand((n, *shape), generator=generator, dtype=torch.float64)
    y = (x + 1e-3 * torch.randn(x.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    with torch.no_grad():
        double = model.double()
        num = (double(x) - double(y)).flatten(1).norm(dim=1)
    return float((num / (x - y).flatten(1).norm(dim=1)).max())


# ------------------------------------------------------------------------------ user-style models
class LinearNet(nn.Module):
    def __init__(self, n_in: int = 12, n_out: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class NormalizedLinear(nn.Module):
    """``(x - 0.1307) / 0.3081`` inside forward, as in PyTorch's MNIST example."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten((x - 0.1307) / 0.3081, 1))


class Residual(nn.Module):
    def __init__(self, n: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, padding=2)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.1307) / 0.3081
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(self.conv2(x).relu(), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class ColourCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.c2(F.relu(self.c1(x))))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(F.relu(self.stem(x))).mean(dim=(2, 3)))


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 12)
        self.b = nn.Linear(64, 6)
        self.out = nn.Linear(18, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = torch.cat([torch.tanh(self.a(x)), F.silu(self.b(x))], dim=1)
        return F.log_softmax(self.out(h), dim=1)


class Functional(nn.Module):
    """Functions and methods rather than layers: every function rule in one net."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 2, 3, 3) * 0.5)
        self.conv1d = nn.Conv1d(4, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(18, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(F.conv2d(x, self.weight, padding=1), 0.2)
        y = F.max_pool2d(y, 3, stride=2) - 0.5 * F.avg_pool2d(y, 3, 2)
        y = F.elu(F.adaptive_avg_pool2d(y, (3, 3)) / 2.0)
        z = self.conv1d(y.reshape(y.shape[0], 4, 9))
        z = torch.cat([F.softmax(z, dim=1).flatten(1), z.mean(dim=1)], dim=1)
        z = F.dropout(z, 0.5, training=self.training)
        return self.fc(F.pad(z, (0, 18 - z.shape[1])))


ARCHITECTURES = [
    (LeNet, (1, 24, 24)),
    (ColourCNN, (3, 32, 32)),
    (ResNet, (1, 12, 12)),
    (CatNet, (1, 8, 8)),
    (Functional, (2, 8, 8)),
]


def build(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = cls()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_var.uniform_(0.3, 2.0)
    return model.eval()


# ----------------------------------------------------------------------------------------- oracles
def test_linear_map_bound_is_its_spectral_norm() -> None:
    model = build(LinearNet)
    bound = network_bounds(model, (3, 4))
    exact = spectral(model.fc.weight)
    assert bound.structure == "graph" and bound.lipschitz == pytest.approx(exact, rel=1e-12)
    assert bound.measured is not None and bound.measured.value == pytest.approx(exact, rel=1e-9)
    assert (
        model.fc.weight.dtype == torch.float32 and model(torch.rand(2, 3, 4)).dtype == torch.float32
    )


@pytest.mark.parametrize("wrapped", [False, True])
def test_linear_net_with_normalisation_is_the_exact_product(wrapped: bool) -> None:
    torch.manual_seed(3)
    if wrapped:  # the package's wrapper: Normalize then the model
        model: nn.Module = Preprocessed(Normalize([0.1307], [0.3081]), LinearNet(16, 10)).eval()
        weight, std = model.model.fc.weight, float(model.normalize.std)  # a float32 buffer
    else:  # the normalisation written in forward
        model = NormalizedLinear().eval()
        weight, std = model.fc.weight, 0.3081
    bound = network_bounds(model, (1, 4, 4))
    exact = spectral(weight) / std  # the Jacobian is W / std everywhere
    assert bound.lipschitz == pytest.approx(exact, rel=1e-9)
    assert bound.measured is not None and bound.measured.value == pytest.approx(exact, rel=1e-9)


def test_per_channel_normalisation_bound_covers_the_exact_norm() -> None:
    torch.manual_seed(4)
    model = Preprocessed(Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.5]), LinearNet(12, 4)).eval()
    bound = network_bounds(model, (3, 2, 2))
    exact = spectral(explicit_jacobian(model, torch.rand(3, 2, 2)))
    smallest = float(model.normalize.std.min())
    assert bound.lipschitz == pytest.approx(spectral(model.model.fc.weight) / smallest, rel=1e-12)
    assert bound.lipschitz >= exact * (1 - 1e-9)
    assert bound.measured is not None and bound.measured.value == pytest.approx(exact, rel=1e-9)


def test_residual_bound_is_one_plus_norm_and_covers_the_exact_value() -> None:
    torch.manual_seed(5)
    model = Residual().eval()
    weight = model.fc.weight.detach().double()
    exact = spectral(torch.eye(8, dtype=torch.float64) + weight)  # ||I + W||
    bound = network_bounds(model, (8,))
    assert bound.lipschitz == pytest.approx(1 + spectral(weight), rel=1e-12)
    assert bound.lipschitz >= exact
    assert bound.measured is not None and bound.measured.value == pytest.approx(exact, rel=1e-7)


def test_a_broadcast_operand_counts_its_copies() -> None:
    class Broadcast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.fc(x)
            return z[:, :1] + z  # the first value is added to all six

    torch.manual_seed(6)
    model = Broadcast().eval()
    bound = network_bounds(model, (6,))
    exact = spectral(explicit_jacobian(model, torch.rand(6)))
    norm = spectral(model.fc.weight)
    assert bound.lipschitz == pytest.approx(norm * (1 + math.sqrt(6)), rel=1e-12)
    assert bound.lipschitz >= exact


@pytest.mark.parametrize(
    ("cls", "shape"), ARCHITECTURES, ids=[c.__name__ for c, _ in ARCHITECTURES]
)
def test_every_architecture_is_above_its_measured_lower_bounds(
    cls: type[nn.Module], shape: tuple[int, ...]
) -> None:
    model = build(cls)
    bound = network_bounds(model, shape, options=FAST)
    assert bound.structure == "graph" and bound.measured is not None
    assert bound.lipschitz >= bound.measured.value > 0
    assert bound.lipschitz >= pair_ratios(model, shape)  # independent of the Jacobian code
    assert bound.lipschitz_exact_norms <= bound.lipschitz * (1 + 1e-12)
    assert "\n" not in bound.to_markdown().splitlines()[-1]


def test_graph_layers_name_the_nodes_and_their_constants() -> None:
    model = build(ResNet)
    bound = network_bounds(model, (1, 12, 12), options=FAST)
    names = [layer.name for layer in bound.layers]
    assert names[:3] == ["stem", "relu", "block.c1"] and "add" in names
    add = bound.layers[names.index("add")]
    c2 = bound.layers[names.index("block.c2")]
    relu = bound.layers[names.index("relu")]
    assert add.details["lipschitz_so_far"] == pytest.approx(
        relu.details["lipschitz_so_far"] + c2.details["lipschitz_so_far"], rel=1e-12
    )
    assert bound.to_dict()["structure"] == "graph"


def test_cat_bound_is_the_root_sum_of_squares() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(5, 3, bias=False)
            self.b = nn.Linear(5, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x)], dim=1)

    torch.manual_seed(7)
    model = Two().eval()
    bound = network_bounds(model, (5,))
    la, lb = spectral(model.a.weight), spectral(model.b.weight)
    exact = spectral(torch.cat([model.a.weight, model.b.weight]))  # the stacked map
    assert bound.lipschitz == pytest.approx(math.hypot(la, lb), rel=1e-12)
    assert exact <= bound.lipschitz * (1 + 1e-12) and bound.lipschitz < la + lb


LOG_SOFTMAX_FORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "positional": lambda z: F.log_softmax(z, 1),
    "dim keyword": lambda z: F.log_softmax(z, dim=1),
    "all keywords": lambda z: F.log_softmax(input=z, dim=-1),
    "method": lambda z: z.log_softmax(dim=1),
    "torch, keywords": lambda z: torch.log_softmax(input=z, dim=1),
}


@pytest.mark.parametrize("form", LOG_SOFTMAX_FORMS.values(), ids=LOG_SOFTMAX_FORMS.keys())
def test_log_softmax_keeps_margins_so_radii_use_the_logits_bound(
    form: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    class LogLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return form(self.fc(x.flatten(1)))

    torch.manual_seed(8)
    model = LogLinear().eval()
    bound = network_bounds(model, (1, 4, 4))
    norm = spectral(model.fc.weight)
    assert bound.margin_bound == pytest.approx(norm, rel=1e-12)
    assert bound.lipschitz == pytest.approx(norm * (1 + math.sqrt(10)), rel=1e-12)
    images = torch.rand((6, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(images).argmax(1)
    radii = certified_radii(model, images, labels, bound)
    # pairwise radius of a linear model: exactly min_j (z_y - z_j) / ||W_y - W_j|| (RMS units)
    w = model.fc.weight.detach().double()
    z = model.double()(images.double()).detach()
    expected = []
    for i, y in enumerate(labels.tolist()):
        gaps = [(z[i, y] - z[i, j]) / (w[y] - w[j]).norm() for j in range(10) if j != y]
        expected.append(float(min(gaps)) / 4.0)
    assert radii.pairwise is not None
    assert radii.pairwise.tolist() == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------- layers= checked, refusals
def normalised_chain() -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    torch.manual_seed(9)
    inner = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 10))
    model = Preprocessed(Normalize([0.1307], [0.3081]), inner).eval()
    return model, [(f"model.{name}", layer) for name, layer in inner.named_children()]


def test_full_chain_is_accepted_and_equals_the_walk() -> None:
    model, layers = normalised_chain()
    full = [("normalize", model.normalize), *layers]
    given_chain = network_bounds(model, (1, 4, 4), layers=full, options=FAST)
    walked = network_bounds(model, (1, 4, 4), options=FAST)
    assert given_chain.lipschitz == pytest.approx(walked.lipschitz, rel=1e-12)


def test_chain_without_the_normalisation_is_refused() -> None:
    model, layers = normalised_chain()
    with pytest.raises(InvalidInputError, match="layers= is not the model") as info:
        network_bounds(model, (1, 4, 4), layers=layers, options=FAST)
    assert "\n" not in str(info.value) and "normalisation" in str(info.value)


def test_chain_with_a_swapped_conv_is_refused() -> None:
    model, layers = normalised_chain()
    torch.manual_seed(10)
    swapped = [("normalize", model.normalize), ("conv", nn.Conv2d(1, 3, 3, padding=1)), *layers[1:]]
    with pytest.raises(InvalidInputError, match="layers= is not the model") as info:
        network_bounds(model, (1, 4, 4), layers=swapped, options=FAST)
    assert "\n" not in str(info.value)


def test_chain_is_checked_on_the_given_samples_too() -> None:
    class Clipped(nn.Module):  # equals its chain on [0, 1], not beyond
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.clamp(max=1.0))

    model = Clipped().eval()
    network_bounds(model, (4,), layers=[model.fc])  # random inputs in [0, 1] agree
    with pytest.raises(InvalidInputError, match="probe input 4"):
        network_bounds(model, (4,), layers=[model.fc], samples=torch.full((1, 4), 3.0))


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return x
        return -x


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(x))


def test_untraceable_model_is_refused_in_one_line_naming_the_module() -> None:
    with pytest.raises(InvalidInputError, match="cannot trace Gated") as info:
        network_bounds(Gated().eval(), (4,))
    message = str(info.value)
    assert "\n" not in message and "'gate'" in message and "test_spectral_graph.py" in message


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (lambda m, x: m.fc(x) * m.fc(x), "node 'mul'.*two input-dependent"),
        (lambda m, x: torch.exp(m.fc(x)), "node 'exp'.*no Lipschitz rule"),
        (lambda m, x: m.fc(x) / m.fc(x).sum(dim=1, keepdim=True), "division by an input-dependent"),
        (lambda m, x: m.fc(x)[:, [0, 0, 1]], "slices"),
        (lambda m, x: m.fc(x).sum(dim=0, keepdim=True), "mixes the examples"),
    ],
)
def test_unsupported_operations_are_refused_naming_the_node(forward: object, message: str) -> None:
    class Op(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(self, x)  # type: ignore[operator]

    with pytest.raises(InvalidInputError, match=message) as info:
        network_bounds(Op().eval(), (4,))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.LSTM(4, 3)).eval(), "'1' \\(LSTM\\) has no Lipschitz rule"),
        (LinearNet(4, 2).train(), "training mode"),
        (LinearNet(5, 2).eval(), "cannot take input"),
    ],
)
def test_other_refusals(model: nn.Module, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        network_bounds(model, (1, 2, 2))
    assert "\n" not in str(info.value)


def test_a_wrong_rule_is_caught_by_the_measured_lower_bound() -> None:
    class Triple(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 3 * x

    register_layer_rule(Triple)(lambda module, shape, out, options: {"upper": 1.0})
    with pytest.raises(CertificationError, match="below the Jacobian norm measured") as info:
        network_bounds(nn.Sequential(nn.Flatten(), Triple()), (1, 2, 2))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- sandwich and identity
def test_sandwich_on_a_graph_model_and_only_with_its_own_bound() -> None:
    model = build(ResNet)
    bound = network_bounds(model, (1, 12, 12), options=FAST)
    images = torch.rand((5, 1, 12, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = model(images).argmax(1)
    far = torch.full((5,), 10.0)  # no radius may exceed a true distance; 10 RMS is beyond [0, 1]
    result = sandwich(
        model, images, labels, bound, attack_result=_Found(far, torch.ones(5, dtype=torch.bool))
    )
    summary = result.summary()
    assert summary["violations"] == 0 and summary["lipschitz_measured_lower"] > 0
    assert result.radii.pairwise is not None  # ends in the Linear 'fc'
    assert (result.radii.pairwise >= result.radii.global_ - 1e-15).all()
    other = build(ResNet, seed=1)  # same layers, other weights
    with pytest.raises(InvalidInputError, match="other layers or weights"):
        certified_radii(other, images, labels, bound)
    hand_made = NetworkBound(layers=bound.layers, input_shape=bound.input_shape)
    with pytest.raises(InvalidInputError, match="not by network_bounds"):
        certified_radii(model, images, labels, hand_made)


class _Found:
    def __init__(self, distortion: torch.Tensor, success: torch.Tensor) -> None:
        self.distortion = distortion
        self.success = success


# ------------------------------------------------------------------------------- activation constants
def test_activation_constants_against_dense_derivatives() -> None:
    x = torch.linspace(-12, 12, 200001, dtype=torch.float64, requires_grad=True)
    for fn, constant in ((F.gelu, gelu_constant()), (F.silu, silu_constant())):
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        assert float(grad.abs().max()) <= constant <= float(grad.abs().max()) + 1e-3
    assert gelu_constant() == pytest.approx(1.1289, abs=1e-4)
    tanh_gelu = gelu_constant("tanh")
    (grad,) = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)
    assert float(grad.abs().max()) <= tanh_gelu <= float(grad.abs().max()) + 1e-3


def test_softmax_half_is_attained_and_never_exceeded() -> None:
    logits = torch.randn((20, 7), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    measured = jacobian_lower_bound(lambda z: F.softmax(z, dim=1), logits * 3)
    assert measured.value <= 0.5
    at_tie = jacobian_lower_bound(lambda z: F.softmax(z, dim=1), torch.zeros((1, 2)).double())
    assert at_tie.value == pytest.approx(0.5, rel=1e-12)


# ------------------------------------------------------------------------------------ property test
@st.composite
def small_models(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    acts = [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.SiLU(), nn.LeakyReLU(0.3)]
    act = acts[draw(st.integers(0, len(acts) - 1))]
    if draw(st.booleans()):  # MLP with an optional skip connection
        n_in, width = draw(st.integers(2, 10)), draw(st.integers(2, 12))
        return _Mlp(n_in, width, act, draw(st.booleans())).eval(), (n_in,)
    channels, side = draw(st.integers(1, 3)), draw(st.integers(4, 8))
    kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    conv = nn.Conv2d(channels, 2, kernel, stride=stride, padding=kernel // 2)
    out_side = (side + 2 * (kernel // 2) - kernel) // stride + 1
    model = nn.Sequential(conv, act, nn.Flatten(), nn.Linear(2 * out_side**2, 3))
    scale = draw(st.floats(0.1, 5.0))
    with torch.no_grad():
        conv.weight.mul_(scale)
    return _Wrapped(model).eval(), (channels, side, side)


class _Mlp(nn.Module):
    def __init__(self, n_in: int, width: int, act: nn.Module, skip: bool) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = (
            nn.Linear(n_in, width),
            nn.Linear(width, width),
            nn.Linear(width, 3),
        )
        self.act, self.skip = act, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        h = h + self.act(self.fc2(h)) if self.skip else self.act(self.fc2(h))
        return self.out(h)


class _Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2.0


@settings(max_examples=20, deadline=None)
@given(small_models())
def test_property_bound_above_power_iteration_lower_bound(
    case: tuple[nn.Module, tuple[int, ...]],
) -> None:
    model, shape = case
    bound = network_bounds(model, shape, options=FAST)
    assert bound.measured is not None and bound.lipschitz >= bound.measured.value
    inputs = torch.rand(
        (3, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    power = jacobian_lower_bound(model.double(), inputs, explicit_outputs=0)  # power iteration
    explicit = jacobian_lower_bound(model, inputs)  # whole Jacobian (3 outputs)
    assert bound.lipschitz >= power.value and power.value <= explicit.value * (1 + 1e-9)
    assert bound.lipschitz >= pair_ratios(model, shape, n=16)


def test_adaptive_max_pool_bound_is_attained_by_a_spike() -> None:
    """5 -> 3 adaptive windows [0, 2), [1, 4), [3, 5) overlap: pixel (1, 1) is in four, ratio 2."""
    model = nn.Sequential(nn.AdaptiveMaxPool2d(3), nn.Flatten()).eval()
    bound = network_bounds(model, (1, 5, 5))
    spike = torch.zeros((1, 1, 5, 5))
    spike[0, 0, 1, 1] = 1.0
    ratio = float(model(spike).norm() / spike.norm())
    assert bound.lipschitz == pytest.approx(2.0) and ratio == pytest.approx(2.0)


def test_functional_batch_norm_equals_the_module_rule() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bn = self.bn
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False)

    model = Functional().eval()
    with torch.no_grad():
        model.bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.0, 0.25]))
        model.bn.weight.copy_(torch.tensor([1.0, -3.0, 0.5, 0.2]))
    functional = network_bounds(model, (4,)).lipschitz
    layer = network_bounds(nn.Sequential(model.bn).eval(), (4,)).lipschitz
    expected = 3.0 / math.sqrt(2.0 + 1e-5)
    assert functional == pytest.approx(expected, rel=1e-12) and layer == pytest.approx(expected)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
def test_conv1d_bounds_cover_its_explicit_operator(padding_mode: str) -> None:
    torch.manual_seed(11)
    conv = nn.Conv1d(2, 3, 3, stride=2, padding=1, padding_mode=padding_mode, bias=False).double()
    bound = network_bounds(nn.Sequential(conv).eval(), (2, 10))
    basis = torch.eye(20, dtype=torch.float64).reshape(20, 2, 10)
    matrix = conv(basis).detach().reshape(20, -1).T  # columns: images of the basis vectors
    exact = spectral(matrix)
    layer = bound.layers[0]
    assert layer.upper >= exact * (1 - 1e-9) and layer.size == "2x3x3"
    if layer.exact is not None:
        assert layer.exact == pytest.approx(exact, rel=1e-6)


def test_a_model_mixing_the_examples_of_a_batch_is_refused() -> None:
    class BatchSoftmax(nn.Module):  # softmax over the batch: per-example shapes look fine
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.softmax(self.fc(x), dim=0)

    with pytest.raises(InvalidInputError, match="examples of a batch") as info:
        network_bounds(BatchSoftmax().eval(), (4,))
    assert "\n" not in str(info.value)


def test_unused_layers_without_rules_do_not_matter() -> None:
    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.loss = nn.CrossEntropyLoss()  # held, never called in forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    model = WithLoss().eval()
    assert network_bounds(model, (4,)).lipschitz == pytest.approx(spectral(model.fc.weight))


# ------------------------------------------------------------------------------ in-place updates
class InPlace(nn.Module):
    """``forward(self, x)`` given as a function of the module's two layers."""

    def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU(inplace=True)
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)


def _view_add(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    first = h[:, :3]
    first += 100.0 * F.relu(x[:, :3] - 2.0)  # changes h; zero on [0, 1] inputs
    return h


def _alias_add(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    g = h
    g += 100.0 * F.relu(x - 2.0)
    return h


def _discarded_inplace(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    F.leaky_relu(h, 50.0, inplace=True)  # the result is dropped, h itself changed
    return h


def _method_inplace(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    y = h * 2
    h.mul_(50.0)
    return y + h


@pytest.mark.parametrize(
    ("forward", "changer"),
    [
        (_view_add, "iadd"),
        (_alias_add, "iadd"),
        (_discarded_inplace, "leaky_relu"),
        (_method_inplace, "mul_"),
    ],
)
def test_a_read_after_an_in_place_change_is_refused(
    forward: Callable[..., torch.Tensor], changer: str
) -> None:
    """torch.fx records ``v += t`` as ``v = v + t``: with ``v`` a view or another name of ``h``
    the graph left ``h`` unchanged, and the certified bound (0.6) sat far below the model's
    Lipschitz constant (42, measured by a difference quotient off the probes)."""
    model = InPlace(forward).eval()
    with pytest.raises(InvalidInputError, match=f"after '{changer}' changed it in place") as info:
        network_bounds(model, (6,), options=FAST)
    assert "\n" not in str(info.value) and "out of place" in str(info.value)


def _residual_in_place(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    out = m.fc(x)
    out += x  # torchvision's ResNet blocks: nothing reads the old value
    out /= 2.0
    return m.fc(m.act(out))


def _residual_out_of_place(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    out = (m.fc(x) + x) / 2.0
    return m.fc(F.relu(out))


def test_in_place_updates_nobody_reads_before_are_bounded_as_out_of_place() -> None:
    torch.manual_seed(0)
    in_place = InPlace(_residual_in_place).eval()
    out_of_place = InPlace(_residual_out_of_place).eval()
    out_of_place.load_state_dict(in_place.state_dict())
    a = network_bounds(in_place, (6,), options=FAST)
    b = network_bounds(out_of_place, (6,), options=FAST)
    assert a.lipschitz == pytest.approx(b.lipschitz, rel=1e-12)
    assert a.measured is not None and a.lipschitz >= a.measured.value


def test_an_in_place_leaky_relu_with_a_negative_slope_is_refused_before_any_work() -> None:
    """Its autograd fails: the measured lower bound raised a RuntimeError after the bound."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(-0.5, inplace=True), nn.Linear(4, 2))
    with pytest.raises(InvalidInputError, match=r"'1' \(LeakyReLU.*inplace=False"):
        network_bounds(model.eval(), (4,), options=FAST)


def _chunk_then_add(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    parts = h.chunk(2, 1)  # a tuple of views of h, read after h changes
    h += 100.0 * F.relu(x - 2.0)
    return torch.cat(parts, 1)


def test_a_stale_read_through_a_tuple_of_views_is_refused() -> None:
    """The guard watched tensors only: a tuple node (chunk, split, unbind) passed on whole was
    bounded without the change, then autograd failed after the work with a traceback."""
    with pytest.raises(InvalidInputError, match="reads 'chunk' after 'iadd' changed it"):
        network_bounds(InPlace(_chunk_then_add).eval(), (6,), options=FAST)


def _scale_input_in_place(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    x *= 2.0  # the model changes its own input
    return m.fc(x)


def _residual_augmented(m: InPlace, x: torch.Tensor) -> torch.Tensor:
    h = m.fc(x)
    h += m.fc(h)  # autograd saved h for the weights' gradients: measuring it failed
    return h


@pytest.mark.parametrize(
    ("forward", "factor"), [(_scale_input_in_place, 2.0), (_residual_augmented, None)]
)
def test_in_place_forwards_are_bounded_and_measured(
    forward: Callable[..., torch.Tensor], factor: float | None
) -> None:
    """``x *= 2`` on the input changed the shared probe between model(x) and the graph's run
    ('the traced graph does not compute model(x)'); ``h += f(h)`` made the measured lower bound
    an autograd traceback."""
    torch.manual_seed(0)
    model = InPlace(forward).eval()
    bound = network_bounds(model, (6,), options=FAST)
    assert bound.measured is not None and bound.lipschitz >= bound.measured.value > 0
    if factor is not None:
        assert bound.lipschitz == pytest.approx(factor * spectral(model.fc.weight), rel=1e-9)
