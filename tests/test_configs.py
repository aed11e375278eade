"""Settings dataclasses (issue 17): one suffix, validated in ``__post_init__``, defaults not copied."""

from __future__ import annotations

import dataclasses

import pytest

from intriguing.analysis.rarity import RarityConfig
from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.errors import InvalidInputError
from intriguing.experiments import specs


def test_attack_config_defaults_are_the_attacks_own() -> None:
    """The run's attack settings are LBFGSConfig's fields and defaults, not a re-declared subset."""
    ours = {f.name: f.default for f in dataclasses.fields(specs.AttackConfig)}
    assert ours == {f.name: f.default for f in dataclasses.fields(LBFGSConfig)}
    kwargs = specs.AttackConfig().kwargs()
    per_step = set(specs.PER_STEP_ATTACK_FIELDS)
    assert set(kwargs) == (set(ours) - per_step) | {"threads", "progress"}
    assert {"candidates", "candidate_ratio"} <= set(kwargs)
    settings = LBFGS(**kwargs).settings()
    assert {k: settings[k] for k in ours if k not in per_step} == {
        k: v for k, v in kwargs.items() if k not in ("threads", "progress")
    }
    with pytest.raises(InvalidInputError, match=r"attack\.seed is set per attack step"):
        specs.AttackConfig(seed=3)


def test_lbfgs_keeps_its_keyword_api_and_settings_come_from_the_config() -> None:
    config = LBFGSConfig(max_iter=50, mode="targeted")
    assert config.target == "random" and config.c_init is None  # None: estimated per problem
    assert isinstance(LBFGSConfig(c_init=5).c_init, float)
    attack = LBFGS(config, candidates=0, threads=None)
    assert attack.max_iter == 50 and attack.candidates == 0 and attack.mode == "targeted"
    assert attack.settings() == {
        "attack": "LBFGS",
        **dataclasses.asdict(dataclasses.replace(config, candidates=0)),
        "threads": None,
    }
    assert LBFGS(max_iter=7).settings() == LBFGS(LBFGSConfig(max_iter=7)).settings()
    with pytest.raises(InvalidInputError, match="candidates"):
        LBFGS(candidates=-1)
    with pytest.raises(InvalidInputError, match="threads"):
        LBFGS(threads=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_iter = 1  # type: ignore[misc]


def _shard_fingerprint(attack: specs.AttackConfig) -> str:
    from intriguing.experiments.graph import fingerprint
    from intriguing.experiments.steps import attack_steps

    steps, _ = attack_steps(
        None,  # type: ignore[arg-type]  # the bench is only bound, never called here
        model="softmax1",
        split="test",
        mode="untargeted",
        n=4,
        select="select/test/softmax1",
        shard_size=4,
        attack=attack.kwargs(),
        seed=0,
    )
    return fingerprint(steps[0], ["dep"])


def test_every_attack_setting_is_in_the_attack_step_fingerprint() -> None:
    """Changing a setting that the old 5-field spec left out (candidates) recomputes the shards."""
    base = _shard_fingerprint(specs.AttackConfig())
    assert _shard_fingerprint(specs.AttackConfig()) == base
    assert _shard_fingerprint(specs.AttackConfig(candidates=1)) != base
    assert _shard_fingerprint(specs.AttackConfig(candidate_ratio=1.5)) != base


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


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"c_factor": float("inf")}, "c_factor must be a finite number > 1"),
        ({"ftol": float("nan")}, "ftol must be a finite number > 0"),
        ({"ftol": -1.0}, "ftol must be a finite number > 0"),
        ({"pgtol": -1.0}, "pgtol must be a finite number > 0"),
        ({"kappa": float("inf")}, "kappa must be a finite number >= 0"),
        ({"refine": "no"}, "refine must be True or False"),
        ({"seed": "a"}, "seed must be an integer >= 0"),
        ({"seed": 2**70}, "seed must be below 2\\*\\*63"),
    ],
)
def test_attack_settings_that_ran_long_or_wrong_are_refused_when_made(
    setting: dict[str, object], match: str
) -> None:
    """ftol=nan ran 4428 evaluations per example (35 by default); c_factor=inf 'succeeded' at
    6x the distortion; kappa=inf failed every example after 1805; refine='no' meant True; a
    string seed failed inside the call."""
    with pytest.raises(InvalidInputError, match=match) as info:
        LBFGSConfig(**setting)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
