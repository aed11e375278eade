"""Layer-wise Lipschitz bounds and the network product bound (paper §4.3, Table 5)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
import torch
from torch import nn

from intriguing.analysis import (
    BoundOptions,
    NetworkBound,
    explicit_operator_matrix,
    network_bounds,
    register_layer_rule,
    sequential_layers,
)
from intriguing.errors import InvalidInputError
from intriguing.models.preprocessing import Normalize as PackageNormalize


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def mlp() -> nn.Sequential:
    seeded()
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 30),
        nn.Sigmoid(),
        nn.Linear(30, 20),
        nn.Sigmoid(),
        nn.Linear(20, 10),
    ).eval()


def conv_net() -> nn.Sequential:
    """Every supported layer kind, in a network that runs on (1, 28, 28)."""
    seeded(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(
            nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="reflect"), nn.BatchNorm2d(6)
        ),
        nn.Tanh(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular", groups=2),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, stride=1),
        nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(24, 10),
    )
    bn = model[3][1]
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(-2.0, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def conv_bound() -> tuple[nn.Sequential, NetworkBound]:
    model = conv_net()
    return model, network_bounds(model, (1, 28, 28))


def layer_operator_norms(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """Singular values of an affine layer's linear part from its explicit matrix (oracle)."""
    layer = copy.deepcopy(module).double()
    zero = layer(torch.zeros((1, *shape), dtype=torch.float64)).detach()
    matrix = explicit_operator_matrix(lambda x: layer(x).detach() - zero, shape)
    return torch.linalg.svdvals(matrix)


def test_mlp_bound_is_product_of_weight_norms_and_sigmoid_quarters() -> None:
    model = mlp()
    bound = network_bounds(model, (1, 28, 28))
    norms = [float(torch.linalg.svdvals(model[i].weight.detach().double())[0]) for i in (1, 3, 5)]
    assert [layer.name for layer in bound.layers] == [str(i) for i in range(6)]
    assert bound.lipschitz == pytest.approx(math.prod(norms) / 16, rel=1e-12)
    assert bound.layers[1].lower == pytest.approx(
        float(torch.linalg.svdvals(model[1].weight.detach().double())[-1])
    )
    assert bound.layers[1].size == "784x30" and bound.layers[1].output_shape == (30,)


def test_every_layer_upper_bounds_its_explicit_operator(
    conv_bound: tuple[nn.Sequential, NetworkBound],
) -> None:
    model, bound = conv_bound
    named = dict(sequential_layers(model))
    for layer in bound.layers:
        if layer.kind not in ("Conv2d", "BatchNorm2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear"):
            continue
        values = layer_operator_norms(named[layer.name], layer.input_shape)
        assert layer.upper >= float(values[0]) * (1 - 1e-9), layer.name
        if layer.exact is not None:
            assert layer.exact == pytest.approx(float(values[0]), rel=1e-5), layer.name
        if layer.kind in ("AvgPool2d", "AdaptiveAvgPool2d", "Linear"):
            assert layer.upper == pytest.approx(float(values[0]), rel=1e-9), layer.name


def test_circular_padded_conv_is_exact() -> None:
    conv_layer = conv_net()[6]
    bound = network_bounds(nn.Sequential(conv_layer), (6, 6, 6))
    values = layer_operator_norms(conv_layer, (6, 6, 6))
    assert bound.layers[0].upper == pytest.approx(float(values[0]), rel=1e-9)
    assert bound.layers[0].lower == pytest.approx(float(values[-1]), rel=1e-6, abs=1e-9)


def test_batchnorm_bounds_are_the_extreme_scales() -> None:
    bn = conv_net()[3][1]
    bound = network_bounds(nn.Sequential(bn), (6, 3, 3))
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs().detach().double()
    assert bound.layers[0].upper == pytest.approx(float(scale.max()))
    assert bound.layers[0].lower == pytest.approx(float(scale.min()))


def test_nested_sequential_names_and_constants(
    conv_bound: tuple[nn.Sequential, NetworkBound],
) -> None:
    bound = conv_bound[1]
    by_name = {layer.name: layer for layer in bound.layers}
    assert "3.0" in by_name and "3.1" in by_name
    assert by_name["1"].upper == 1.0 and by_name["4"].upper == 1.0
    assert by_name["7"].upper == 1.0  # LeakyReLU(0.1)
    assert by_name["2"].upper == 1.0  # non-overlapping max pooling
    assert by_name["5"].upper == 2.0  # 3x3 stride 2: some pixels lie in 4 windows
    assert by_name["11"].upper == 1.0 and by_name["11"].identity


def test_overlapping_maxpool_bound_is_attained() -> None:
    """A spike under four overlapping 3x3/2 windows moves four outputs: ratio 2 = sqrt(4)."""
    pool = nn.MaxPool2d(3, stride=2)
    bound = network_bounds(nn.Sequential(pool), (1, 7, 7))
    x = torch.zeros((1, 1, 7, 7))
    spike = x.clone()
    spike[0, 0, 2, 2] = 1.0
    ratio = float((pool(spike) - pool(x)).norm() / (spike - x).norm())
    assert ratio == pytest.approx(2.0)
    assert bound.layers[0].upper == pytest.approx(2.0)


def test_maxpool_bound_holds_on_random_pairs() -> None:
    pool = nn.MaxPool2d(3, stride=1, padding=1, dilation=1)
    bound = network_bounds(nn.Sequential(pool), (2, 9, 9))
    assert bound.layers[0].details["max_windows_per_pixel"] == 9
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn((2, 50, 2, 9, 9), generator=generator)
    ratios = (pool(x) - pool(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratios.max()) <= bound.layers[0].upper


def test_product_bound_exceeds_local_jacobian_norms(
    conv_bound: tuple[nn.Sequential, NetworkBound],
) -> None:
    model, bound = conv_bound
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.rand((1, 1, 28, 28), generator=generator)
        jacobian = torch.autograd.functional.jacobian(model, x).reshape(10, -1)
        assert float(torch.linalg.matrix_norm(jacobian, ord=2)) <= bound.lipschitz


def test_avgpool_large_map_uses_schur_bound_and_power_iteration() -> None:
    pool = nn.AvgPool2d(3, stride=1)
    shape = (1, 12, 12)
    explicit = network_bounds(nn.Sequential(pool), shape).layers[0]
    large = network_bounds(
        nn.Sequential(pool), shape, options=BoundOptions(explicit_limit=10)
    ).layers[0]
    assert explicit.method == "svd-explicit" and large.method == "schur+power"
    assert large.upper >= explicit.upper * (1 - 1e-12)
    assert large.exact == pytest.approx(explicit.upper, rel=1e-6)


def test_normalize_layer_rule() -> None:
    class Normalize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mean, self.std = (0.5, 0.2, 0.3), (0.25, 0.5, 2.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = torch.tensor(self.mean).reshape(-1, 1, 1)
            return (x - mean) / torch.tensor(self.std).reshape(-1, 1, 1)

    # a user's class named Normalize is traced through its forward: (x - mean) / std
    traced = network_bounds(nn.Sequential(Normalize()).eval(), (3, 4, 4))
    assert traced.lipschitz == pytest.approx(4.0)
    assert [layer.kind for layer in traced.layers] == ["sub", "truediv"]
    # the package's Normalize (and torchvision's) take the diagonal rule: upper 1/min std, lower
    bound = network_bounds(
        nn.Sequential(PackageNormalize([0.5, 0.2, 0.3], [0.25, 0.5, 2.0])), (3, 4, 4)
    )
    assert bound.layers[0].upper == pytest.approx(4.0) and bound.layers[0].lower == pytest.approx(
        0.5
    )


def test_a_class_named_normalize_is_not_trusted_by_its_name() -> None:
    """``50 relu((x - mean) / std - 3)`` in a class called Normalize with ``std = 1``: the rule by
    name gave 1 for it (network bound 0.63, true norm 31)."""

    class Normalize(nn.Module):
        mean, std = 0.0, 1.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 50 * torch.relu((x - self.mean) / self.std - 3)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), Normalize(), nn.Linear(12, 2)).eval()
    bound = network_bounds(model, (3, 2, 2))
    weight_norm = float(torch.linalg.matrix_norm(model[2].weight.detach().double(), ord=2))
    assert bound.lipschitz == pytest.approx(50 * weight_norm, rel=1e-9)


def test_register_layer_rule_extends_the_walk() -> None:
    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    register_layer_rule(Double)(
        lambda module, shape, out, options: {"upper": 2.0, "method": "custom"}
    )
    bound = network_bounds(nn.Sequential(Double(), nn.Flatten()), (1, 2, 2))
    assert bound.lipschitz == 2.0 and bound.layers[0].method == "custom"


def test_explicit_layer_list_for_non_sequential_models() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    net = Net().eval()
    norm = float(torch.linalg.matrix_norm(net.fc.weight.detach().double(), ord=2))
    traced = network_bounds(net, (1, 2, 2))  # traced with torch.fx
    assert traced.structure == "graph" and traced.lipschitz == pytest.approx(norm, rel=1e-12)
    bound = network_bounds(net, (1, 2, 2), layers=[("flatten", nn.Flatten()), ("fc", net.fc)])
    assert [layer.name for layer in bound.layers] == ["flatten", "fc"]
    assert bound.structure == "chain" and bound.lipschitz == pytest.approx(norm, rel=1e-12)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3)).eval(), "LayerNorm"),
        (nn.Sequential(nn.Flatten(), nn.Mish()).eval(), "Mish"),
        (nn.Sequential(nn.Dropout(0.5).train()), "training mode"),
        (nn.Sequential(nn.BatchNorm2d(1).train()), "training mode"),
        (nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False).eval()), "track_running_stats"),
        (nn.Sequential(nn.Linear(5, 3)), "cannot take input"),
    ],
)
def test_refusals_are_one_line(model: nn.Module, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        network_bounds(model, (1, 2, 2))
    assert "\n" not in str(info.value)


def test_bad_input_shape_and_empty_layer_list() -> None:
    with pytest.raises(InvalidInputError, match="input_shape"):
        network_bounds(mlp(), (0, 28, 28))
    with pytest.raises(InvalidInputError, match="empty"):
        network_bounds(mlp(), (1, 28, 28), layers=[])


def test_to_dict_is_strict_json(conv_bound: tuple[nn.Sequential, NetworkBound]) -> None:
    bound = conv_bound[1]
    data = json.loads(json.dumps(bound.to_dict(), allow_nan=False))
    assert data["lipschitz_upper"] == pytest.approx(bound.lipschitz)
    conv = data["layers"][0]
    assert conv["size"] == "1x5x5x4" and conv["stride"] == "1"
    assert conv["details"]["exact_norm"]["converged"] is True
    assert bound.lipschitz_exact_norms <= bound.lipschitz


def test_markdown_table_lists_every_layer_and_the_product() -> None:
    model = mlp()
    bound = network_bounds(model, (1, 28, 28))
    lines = bound.to_markdown().strip().splitlines()
    assert len(lines) == 2 + len(bound.layers) + 1
    assert lines[3].startswith("| 1 | Linear | 784x30 |")
    assert f"{bound.lipschitz:.4g}" in lines[-1]


def test_exact_method_options() -> None:
    model = conv_net()[:1]
    lanczos = network_bounds(
        model, (1, 28, 28), options=BoundOptions(exact_method="lanczos")
    ).layers[0]
    none = network_bounds(model, (1, 28, 28), options=BoundOptions(exact_method="none")).layers[0]
    values = layer_operator_norms(model[0], (1, 28, 28))
    assert lanczos.exact == pytest.approx(float(values[0]), rel=1e-8)
    assert (
        lanczos.method == "fft-circular+lanczos"
        and lanczos.details["exact_norm"]["method"] == "lanczos"
    )
    assert none.exact is None and none.method == "fft-circular" and none.upper == lanczos.upper
    with pytest.raises(InvalidInputError, match="exact_method"):
        BoundOptions(exact_method="svd")
    with pytest.raises(InvalidInputError, match="power_iterations"):
        BoundOptions(power_iterations=0)


def test_subclasses_with_their_own_forward_are_traced_not_trusted() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 100 * super().forward(x)

    class Reversed(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for module in reversed(self):
                x = module(x)
            return x

    scaled = Scaled(4, 3)
    norm = float(torch.linalg.matrix_norm(scaled.weight.detach().double(), ord=2))
    bound = network_bounds(nn.Sequential(nn.Flatten(), scaled).eval(), (1, 2, 2))
    assert bound.structure == "graph" and bound.lipschitz == pytest.approx(100 * norm, rel=1e-12)
    linear = nn.Linear(3, 3)
    reversed_net = Reversed(linear, nn.Unflatten(1, (3, 1))).eval()  # runs Unflatten first: fails
    with pytest.raises(InvalidInputError, match="cannot take input") as info:
        network_bounds(reversed_net, (3,))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layers", [False, True])
def test_training_mode_statistics_are_refused_before_any_forward_pass(layers: bool) -> None:
    """A training-mode norm layer was run once (the shape probe, or the ``layers=`` check) before
    its rule refused it: the user's running statistics changed in place (BatchNorm1d on one
    example: a raw ValueError instead)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 1, 4) if layers else torch.rand(8, 4))
    before = copy.deepcopy(net.state_dict())
    named = list(net.named_children()) if layers else None
    with pytest.raises(InvalidInputError, match=r"layer '2' \(BatchNorm1d\) is in training mode"):
        network_bounds(net, (4,), layers=named)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "compile_", [torch.jit.script, lambda m: torch.jit.trace(m, torch.rand(2, 4))]
)
def test_torchscript_models_are_refused_with_the_right_advice(compile_: Any) -> None:
    """A scripted model was refused as one whose forward was "replaced on the instance", a traced
    one with advice about torch.fx."""
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with pytest.raises(
        InvalidInputError, match=r"TorchScript module.*pass the original nn\.Module"
    ):
        network_bounds(compile_(net), (4,))


@pytest.mark.parametrize(
    ("conv", "lower_known"),
    [
        (nn.Conv2d(2, 3, 1), True),  # pointwise: the circular operator is the layer
        (nn.Conv2d(2, 3, 3), False),  # valid padding: a restriction of the circular operator
        (nn.Conv2d(2, 3, 3, padding=1), False),
        (nn.Conv2d(2, 3, 1, stride=2), False),
    ],
)
def test_a_convolutions_lower_is_its_own_smallest_singular_value_or_none(
    conv: nn.Conv2d, lower_known: bool
) -> None:
    """The circular stand-in's smallest singular value was reported as the layer's lower frame
    bound: 0.28 for an unpadded Conv1d whose own was 0.042, neither a bound nor the value."""
    torch.manual_seed(0)
    shape = (2, 6, 6)
    layer = network_bounds(nn.Sequential(conv).eval(), shape).layers[0]
    jac = torch.autograd.functional.jacobian(
        lambda x: conv(x[None])[0].flatten(), torch.rand(shape)
    ).reshape(-1, math.prod(shape))
    svd = torch.linalg.svdvals(jac.double())
    assert layer.upper >= float(svd[0]) * (1 - 1e-9)
    if lower_known:
        assert layer.lower == pytest.approx(float(svd[min(jac.shape) - 1]), rel=1e-9)
    else:
        assert layer.lower is None and "circular_lower" in layer.details


class _CastsToFloat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float())


def test_a_cast_in_forward_is_named_not_blamed_on_the_shape() -> None:
    """``x.float()`` broke the float64 copy's next layer, refused as "cannot take input of shape
    (4,)", a shape that is fine."""
    with pytest.raises(InvalidInputError, match=r"fails on float64 inputs .*remove casts such as"):
        network_bounds(_CastsToFloat().eval(), (4,))


class _PlainTensorKernel(nn.Module):
    """A blur kernel kept as a plain attribute, not a buffer: ``.double()`` leaves it float32."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.ones(1, 1, 3, 3) / 9
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.conv2d(x, self.k, padding=1).flatten(1))


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.detach() * 5)


def test_a_plain_tensor_attribute_and_a_detach_name_their_cause() -> None:
    """Both were refused with the wrong cause (a probe): the float32 attribute as "cannot take
    input of shape (1, 4, 4)", the ``.detach()`` as an in-place operation to make out of place."""
    model = _PlainTensorKernel().eval()
    assert model(torch.rand(2, 1, 4, 4)).shape == (2, 2)  # the shape is fine
    with pytest.raises(InvalidInputError, match=r"float64 inputs .*register_buffer") as info:
        network_bounds(model, (1, 4, 4))
    assert "input of shape" not in str(info.value)
    with pytest.raises(InvalidInputError, match=r"cut off from its input: remove \.detach\(\)"):
        network_bounds(_Detached().eval(), (4,))
