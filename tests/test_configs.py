"""Settings dataclasses (issue 17): one suffix, validated in ``__post_init__``, defaults not copied."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from intriguing.analysis.rarity import RarityConfig
from intriguing.attacks import LBFGS
from intriguing.errors import InvalidInputError
from intriguing.experiments import specs


def test_attack_config_defaults_are_the_attacks_own() -> None:
    """The run's attack settings read LBFGS's defaults instead of re-declaring them."""
    signature = inspect.signature(LBFGS.__init__).parameters
    for f in dataclasses.fields(specs.AttackConfig):
        assert f.default == signature[f.name].default, f.name
    kwargs = specs.AttackConfig().kwargs()
    assert LBFGS(**kwargs).settings()["max_iter"] == signature["max_iter"].default


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: specs.AttackConfig(max_iter=0), "max_iter"),
        (lambda: specs.Table1Config(split="validation"), "table1.split"),
        (lambda: specs.Table3Config(split="nope"), "table3.split"),
        (lambda: specs.UnitsRunConfig(split="x"), "units.split"),
        (lambda: specs.SpectralRunConfig(exact_method="svd"), "exact_method"),
        (lambda: specs.ReproduceConfig(size="quick", dataset="cifar"), "dataset"),
        (lambda: RarityConfig(box="wrap"), "box mode"),
    ],
)
def test_bad_settings_are_refused_when_made(build: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        build()  # type: ignore[operator]


def test_old_names_stay_importable_and_frozen() -> None:
    assert specs.ReproduceSpec is specs.ReproduceConfig
    assert specs.AttackSettings is specs.AttackConfig
    assert specs.Table1Spec is specs.Table1Config
    config = specs.make_spec("quick", dataset="mnist-5k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert specs.SIZES == ("tiny", "quick", "default", "full")
