"""The §3 (units) and §4.3 (spectral) parts of ``reproduce``: specs, graph wiring, claims, rendering.

Fast tests on hand-built inputs (the claims' and the renderer's oracles are the numbers put in);
the end-to-end checks on a real tiny run are in tests/test_report.py, which already has one.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from intriguing.errors import IntriguingError
from intriguing.experiments import analysis_steps as an
from intriguing.experiments.specs import (
    SIZES,
    ReproduceSpec,
    SpectralSpec,
    UnitsSpec,
    make_spec,
)
from intriguing.report.render import sandwich_blocks, spectral_blocks, to_markdown, units_blocks


# ------------------------------------------------------------------------------------- specs
def test_unit_analysis_sizes() -> None:
    for size in ("default", "full"):
        spec = make_spec(size)
        assert spec.units.models == ("Conv", "N100-100-10")
        assert spec.units.n_directions >= 50 and spec.units.split == "test"
    quick, tiny = make_spec("quick").units, make_spec("tiny").units
    assert 2 <= quick.n_directions < 50 and 2 <= tiny.n_directions < quick.n_directions
    assert make_spec("quick").units.models == ("Conv", "N100-100-10")


def test_spectral_models_cover_the_run_and_the_units_models() -> None:
    quick = make_spec("quick")
    models = quick.spectral_models()
    assert set(models) >= {*quick.models(), "Conv"}
    assert len(models) == len(set(models))
    assert quick.spectral.sandwich_models == ("softmax1", "N100-100-10")
    for size in SIZES:
        assert set(make_spec(size).spectral.sandwich_models) <= set(
            make_spec(size).spectral_models()
        )


def test_spec_rejects_bad_analysis_settings() -> None:
    with pytest.raises(IntriguingError, match="one per model"):
        ReproduceSpec(size="x", units=UnitsSpec(models=("Conv", "N100-100-10"), layers=("act2",)))
    with pytest.raises(IntriguingError, match="sandwich_examples"):
        ReproduceSpec(size="x", spectral=SpectralSpec(sandwich_examples=0))


def test_hidden_layer_comes_from_the_zoo() -> None:
    assert an.hidden_layer("Conv", None) == "act2"
    assert an.hidden_layer("N100-100-10", None) == "act2"
    assert an.hidden_layer("softmax1", "flatten") == "flatten"
    with pytest.raises(IntriguingError, match="no hidden layer"):
        an.hidden_layer("softmax1", None)


def test_json_safe_replaces_non_finite_floats() -> None:
    assert an.json_safe({"a": (1.0, float("inf")), "b": [float("nan")], 3: "x"}) == {
        "a": [1.0, None],
        "b": [None],
        "3": "x",
    }


def test_quick_graph_reuses_table1_attacks_for_the_sandwich(mnist_dir: Any) -> None:
    """At quick size both sandwich models are Table 1 models: their steps read its shards."""
    from intriguing.experiments.reproduce import build_steps
    from intriguing.experiments.steps import Workbench

    spec = make_spec("quick", dataset="mnist-5k")
    bench = Workbench(dataset="mnist-5k", data_dir=None, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = {s.key: s for s in build_steps(spec, bench, {"train": 5000, "test": 1000})}
    for model in ("softmax1", "N100-100-10"):
        step = steps[f"sandwich/{model}"]
        assert step.params["source"] == an.SOURCE_TABLE1
        assert step.params["summary"] == f"attacks/train/{model}/untargeted"
        assert step.params["shards"] == [f"attack/train/{model}/untargeted/shard-0000"]
        assert set(step.deps) >= {step.params["summary"], *step.params["shards"]}
    assert {f"units/{m}" for m in ("Conv", "N100-100-10")} <= steps.keys()
    assert steps["units/Conv"].params["layer"] == "act2"
    assert {f"spectral/{m}" for m in spec.spectral_models()} <= steps.keys()
    assert {"units/Conv", "sandwich/softmax1"} <= set(steps["claims"].deps)


# ------------------------------------------------------------------------------------- rendering
def test_sandwich_section_flags_violations_and_states_the_median() -> None:
    summary = {
        "used": 4,
        "examples": 5,
        "violations": 1,
        "mean_attack_distortion": 0.05,
        "mean_certified_global": 0.01,
        "mean_certified_pairwise": 0.02,
        "ratio_global_quantiles": {"q05": 3.0, "q50": 5.0, "q95": 7.0},
        "ratio_pairwise_quantiles": {"q05": 1.5, "q50": 2.5, "q95": 3.5},
    }
    entry = {
        "source": "table1",
        "split": "train",
        "ratio_form": "pairwise",
        "median_ratio": 2.5,
        "summary": summary,
    }
    md = to_markdown(sandwich_blocks({"m": entry}))
    assert (
        "| m | Table 1 attack (train) | 4/5 | **1** | 0.0500 | 0.0200 | pairwise | 1.5 | 2.5 | 3.5 |"
        in md
    )
    assert "m: the certified bound is ABOVE" in md and "median attack/certified ratio 2.5" in md


def test_spectral_and_units_sections_are_empty_without_data() -> None:
    assert spectral_blocks({}) == [] and sandwich_blocks({}) == [] and units_blocks({}, {}) == []
