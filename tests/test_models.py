"""The model zoo: the paper's architectures, names, hidden layers and the registry's behaviour."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from intriguing.errors import InvalidInputError, UnknownModelError
from intriguing.models import (
    build_model,
    get_entry,
    list_entries,
    model_names,
    register_model,
    unregister_model,
)
from intriguing.training import TrainConfig

PAPER_MODELS = [
    "softmax1",
    "softmax2",
    "softmax3",
    "N100-100-10",
    "N200-200-10",
    "AE400-10",
    "Conv",
    "M1",
    "M1'",
    "M2",
]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_paper_models_are_registered_in_order() -> None:
    assert model_names()[: len(PAPER_MODELS)] == PAPER_MODELS


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_models_map_images_to_logits(name: str) -> None:
    model = build_model(name).eval()
    images = torch.rand(3, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (3, 10)
    assert logits.dtype == torch.float32
    assert isinstance(model, nn.Sequential)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # hand-counted weights + biases
        ("softmax1", 784 * 10 + 10),
        ("N100-100-10", 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),
        ("N200-200-10", 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10),
        ("M1'", 784 * 123 + 123 + 123 * 456 + 456 + 456 * 10 + 10),
        ("AE400-10", 784 * 400 + 400 + 400 * 10 + 10),
        ("Conv", 32 * 25 + 32 + 32 * 12 * 12 * 128 + 128 + 128 * 10 + 10),
    ],
)
def test_architectures_have_the_papers_sizes(name: str, expected: int) -> None:
    assert _n_params(build_model(name)) == expected


def test_sigmoid_net_layer_names_and_activations() -> None:
    model = build_model("N100-100-10")
    names = [n for n, _ in model.named_children()]
    assert names == ["flatten", "fc1", "act1", "fc2", "act2", "out"]
    assert isinstance(model.act1, nn.Sigmoid) and isinstance(model.act2, nn.Sigmoid)


def test_conv_layers_follow_the_paper() -> None:
    names = [n for n, _ in build_model("Conv").named_children()]
    assert names == ["conv1", "act1", "pool1", "flatten", "fc1", "act2", "dropout", "out"]


@pytest.mark.parametrize("entry", list_entries()[: len(PAPER_MODELS)], ids=lambda e: e.name)
def test_hidden_layer_names_a_module_of_the_model(entry) -> None:  # type: ignore[no-untyped-def]
    model = entry.build()
    layers = dict(model.named_modules())
    if entry.hidden_layer is None:
        assert entry.name.startswith("softmax")
        return
    assert entry.hidden_layer in layers
    # the hidden layer is the last activation before the output layer
    outputs: list[torch.Tensor] = []
    layers[entry.hidden_layer].register_forward_hook(lambda m, i, o: outputs.append(o))
    model.eval()(torch.rand(2, 1, 28, 28))
    assert outputs[0].shape[1] == model.out.in_features


def test_weight_decays_are_the_papers() -> None:
    assert get_entry("softmax1").train_config.weight_decay == {"out": 1e-4}
    assert get_entry("softmax2").train_config.weight_decay == {"out": 1e-2}
    assert get_entry("softmax3").train_config.weight_decay == {"out": 1.0}
    for name in ("N100-100-10", "N200-200-10", "M1", "M1'", "M2"):
        assert get_entry(name).train_config.weight_decay == {"fc1": 1e-5, "fc2": 1e-5, "out": 1e-6}
    ae = get_entry("AE400-10").train_config
    assert ae.weight_decay == {"out": 1e-6}
    assert ae.frozen == ("fc1",) and ae.pretrain is not None


def test_training_splits_of_table3() -> None:
    assert get_entry("M1").train_split == "p1"
    assert get_entry("M1'").train_split == "p1"
    assert get_entry("M2").train_split == "p2"
    assert get_entry("N100-100-10").train_split == "train"


def test_paper_numbers_are_recorded() -> None:
    assert get_entry("softmax1").paper["test_error"] == pytest.approx(0.074)
    assert get_entry("N200-200-10").paper["test_error"] == pytest.approx(0.0154)
    assert get_entry("M2").paper["err_p1"] == pytest.approx(0.023)
    assert get_entry("Conv").paper == {}


@pytest.mark.parametrize("alias", ["M1p", "m1prime", "m1'", "n100", "softMAX1"])
def test_aliases_and_case_insensitive_names(alias: str) -> None:
    assert get_entry(alias).name in PAPER_MODELS


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'N100-100-10'") as info:
        get_entry("N100-100")
    assert "\n" not in str(info.value)


def test_unknown_name_without_close_match_lists_all() -> None:
    with pytest.raises(UnknownModelError, match="available: softmax1, softmax2"):
        get_entry("zzzzzz")


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(), fc1=nn.Linear(784, 5), act1=nn.Tanh(), out=nn.Linear(5, 10)
        )
    )


def test_register_model_as_decorator_and_call() -> None:
    @register_model("test-deco", description="tiny", hidden_layer="act1")
    def deco() -> nn.Sequential:
        return _tiny()

    try:
        entry = get_entry("test-deco")
        assert entry.factory is deco
        assert entry.train_config == TrainConfig()
        assert build_model("test-deco")(torch.rand(1, 1, 28, 28)).shape == (1, 10)
        called = register_model("test-call", _tiny, description="tiny", aliases=("tc",))
        assert get_entry("tc") is called
    finally:
        unregister_model("test-deco")
        unregister_model("test-call")
    with pytest.raises(UnknownModelError):
        get_entry("tc")


def test_register_model_rejects_clashes_and_bad_splits() -> None:
    with pytest.raises(InvalidInputError, match="already registered"):
        register_model("SOFTMAX1", _tiny, description="clash")
    with pytest.raises(InvalidInputError, match="train_split"):
        register_model("test-split", _tiny, description="x", train_split="p3")
    assert "test-split" not in model_names()


def test_register_model_replace() -> None:
    register_model("test-rep", _tiny, description="one")
    try:
        register_model("test-rep", _tiny, description="two", replace=True)
        assert get_entry("test-rep").description == "two"
    finally:
        unregister_model("test-rep")


def test_build_is_seeded_by_the_global_rng() -> None:
    torch.manual_seed(3)
    a = build_model("N100-100-10").state_dict()
    torch.manual_seed(3)
    b = build_model("N100-100-10").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
