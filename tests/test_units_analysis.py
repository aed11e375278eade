"""The §3 measurement end to end on synthetic activations with known answers, and its figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from intriguing.analysis.units import Projector, UnitsConfig, analyse_units, top_k
from intriguing.errors import InvalidInputError
from intriguing.report.units_figures import (
    render_units_figures,
    units_report_section,
    units_verdict,
)

FAST = {"n_null": 500, "n_resamples": 199}


def synthetic(n: int = 600, noise: float = 0.05, seed: int = 0):
    """Ten classes; units 0-9 are class indicators, units 10-19 pure noise; images show the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n // 10)
    phi = np.concatenate([np.eye(10)[labels], np.zeros((n, 10))], axis=1)
    phi += noise * rng.standard_normal(phi.shape)
    images = np.zeros((n, 1, 4, 5), dtype=np.float32)
    images.reshape(n, -1)[np.arange(n), labels * 2] = 1.0
    images += 0.05 * rng.random(images.shape).astype(np.float32)
    return phi, images, labels


def test_top_k_orders_by_score_and_flags_ties_and_dead_columns() -> None:
    scores = np.array([[0.1, 5.0, 2.0], [0.9, 5.0, 2.0], [0.5, 5.0, 2.0], [0.7, 1.0, 2.0]])
    idx, top, dead, tied = top_k(scores, 2)
    np.testing.assert_array_equal(idx, [[1, 3], [0, 1], [0, 1]])
    np.testing.assert_allclose(top, [[0.9, 0.7], [5.0, 5.0], [2.0, 2.0]])
    np.testing.assert_array_equal(tied, [False, True, True])  # ranks 2 and 3 tie
    np.testing.assert_array_equal(dead, [False, False, True])  # constant column
    # A tie-break order picks among the tied maximisers: image 2 before 0 before 1.
    idx, _, _, _ = top_k(scores, 2, tiebreak=np.array([1, 2, 0, 3]))
    np.testing.assert_array_equal(idx, [[1, 3], [2, 0], [2, 0]])
    with pytest.raises(InvalidInputError):
        top_k(scores, 4)


def test_centring_never_changes_the_top_images_of_a_fixed_direction() -> None:
    phi, _, _ = synthetic()
    phi = phi + 3.0
    v = np.random.default_rng(1).standard_normal((7, phi.shape[1]))
    raw = top_k(Projector(phi, centre=False, standardise=False).project(v), 8)[0]
    centred = top_k(Projector(phi, centre=True, standardise=False).project(v), 8)[0]
    np.testing.assert_array_equal(raw, centred)
    scaled = phi * np.linspace(0.1, 10, phi.shape[1])
    std_raw = top_k(Projector(scaled, centre=False, standardise=False).project(v), 8)[0]
    std_z = top_k(Projector(scaled, centre=False, standardise=True).project(v), 8)[0]
    assert not np.array_equal(std_raw, std_z)


def test_class_indicator_units_are_pure_and_noise_units_are_at_chance() -> None:
    phi, images, labels = synthetic()
    config = UnitsConfig(families=("natural", "classmean"), k=8, n_directions=20, alphas=(), **FAST)
    result = analyse_units(phi, images, labels, config)
    natural = result.families["natural"]
    purity = dict(zip(natural.ids, natural.metrics["purity"], strict=True))
    assert all(purity[f"unit {u}"] == 1.0 for u in range(10))
    noise_mean = np.mean([purity[f"unit {u}"] for u in range(10, 20)])
    assert noise_mean < 0.5  # chance: about 0.3 for k = 8
    assert np.all(result.families["classmean"].metrics["purity"] == 1.0)
    assert np.all(result.families["classmean"].metrics["entropy"] == 0.0)


def test_rotation_curve_starts_at_the_natural_basis_and_ends_at_the_rotation_family() -> None:
    phi, images, labels = synthetic()
    config = UnitsConfig(
        families=("natural", "rotation"), n_directions=12, alphas=(0.0, 0.5, 1.0), **FAST
    )
    result = analyse_units(phi, images, labels, config)
    curve = result.rotation_curve
    assert curve is not None
    for metric in ("purity", "entropy", "pixel_cosine"):
        assert curve[metric]["mean"][0] == pytest.approx(
            result.families["natural"].valid(metric).mean()
        )
        assert curve[metric]["mean"][-1] == pytest.approx(
            result.families["rotation"].valid(metric).mean()
        )
    assert curve["mean_abs_cos_to_unit"][0] == pytest.approx(1.0)
    assert curve["mean_abs_cos_to_unit"][-1] < 0.6


def test_json_is_complete_deterministic_and_nan_free() -> None:
    phi, images, labels = synthetic()
    config = UnitsConfig(n_directions=10, alphas=(0.0, 1.0), **FAST)
    first = analyse_units(phi, images, labels, config).to_json({"model": "toy", "layer": "x"})
    again = analyse_units(phi, images, labels, config).to_json({"model": "toy", "layer": "x"})
    text = json.dumps(first, allow_nan=False)
    assert text == json.dumps(again, allow_nan=False)
    assert first["schema"] == "intriguing.units/1" and set(first["families"]) == {
        "natural",
        "random",
        "rotation",
        "pca",
        "classmean",
    }
    assert first["null"]["purity_exact"]["mean"] == pytest.approx(0.3, abs=0.01)
    pairs = {(c["a"], c["b"], c["metric"]) for c in first["comparisons"]}
    assert ("natural", "random", "purity") in pairs and ("random", "rotation", "entropy") in pairs
    other = analyse_units(
        phi, images, labels, UnitsConfig(n_directions=10, alphas=(), seed=1, **FAST)
    )
    assert not np.array_equal(
        other.families["random"].directions, first_random(phi, images, labels)
    )


def first_random(phi: np.ndarray, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    config = UnitsConfig(families=("random",), n_directions=10, alphas=(), **FAST)
    return analyse_units(phi, images, labels, config).families["random"].directions


def test_without_labels_only_the_label_free_metric_and_no_classmean() -> None:
    phi, images, _ = synthetic()
    config = UnitsConfig(families=("natural", "random"), n_directions=5, alphas=(0.0,), **FAST)
    result = analyse_units(phi, images, None, config)
    assert result.metrics == ("pixel_cosine",)
    assert set(result.families["natural"].metrics) == {"pixel_cosine"}
    with pytest.raises(InvalidInputError, match="classmean family needs labels"):
        analyse_units(phi, images, None, UnitsConfig(families=("classmean",), **FAST))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"k": 1}, "k must be at least 2"),
        ({"k": 600}, "smaller than the image count"),
        ({"n_directions": 1}, "at least 2 directions"),
        ({"n_null": 10}, "at least 100"),
        ({"alphas": (float("nan"),)}, "finite"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    """Settings wrong on any image set are refused when the config is made; the rest by the run."""
    phi, images, labels = synthetic()
    with pytest.raises(InvalidInputError, match=message):
        analyse_units(phi, images, labels, UnitsConfig(**settings))


def test_mismatched_inputs_are_rejected() -> None:
    phi, images, labels = synthetic()
    with pytest.raises(InvalidInputError, match="images but"):
        analyse_units(phi, images[:10], labels)
    with pytest.raises(InvalidInputError, match="labels must be integers"):
        analyse_units(phi, images, labels.astype(float))


def test_dead_units_are_left_out_and_saturated_units_get_random_ties() -> None:
    phi, images, labels = synthetic()
    phi[:, 15] = 0.0  # dead
    phi[:, 3] = np.where(labels == 3, 1.0, phi[:, 3])  # saturated on all 60 images of class 3
    config = UnitsConfig(families=("natural",), n_directions=20, alphas=(), **FAST)
    family = analyse_units(phi, images, labels, config).families["natural"]
    assert family.dead.sum() == 1 and family.dead[family.ids.index("unit 15")]
    assert family.valid("purity").size == 19
    row = family.ids.index("unit 3")
    assert family.tied[row] and np.all(labels[family.topk[row]] == 3)
    # The tie is broken by a seeded random order, not by the lowest image indices.
    assert not np.array_equal(np.sort(family.topk[row]), np.arange(180, 188))


def test_figures_are_written_as_valid_pngs(tmp_path: Path) -> None:
    phi, images, labels = synthetic()
    config = UnitsConfig(
        families=("natural", "random", "pca"), n_directions=6, alphas=(0.0, 0.5, 1.0), **FAST
    )
    payload = analyse_units(phi, images, labels, config).to_json({"model": "toy", "layer": "x"})
    paths = render_units_figures(payload, images, tmp_path, labels=labels, stem="toy", n_rows=3)
    assert set(paths) == {"topk", "topk_all", "rotation", "distributions"}
    for path in paths.values():
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(p).name for p in paths.values()
    )


def test_report_section_and_verdict_follow_the_stored_numbers() -> None:
    phi, images, labels = synthetic()
    config = UnitsConfig(families=("natural", "random"), n_directions=10, alphas=(0.0, 1.0), **FAST)
    payload = analyse_units(phi, images, labels, config).to_json({"model": "toy", "layer": "x"})
    text = units_report_section([payload])
    assert text.startswith("## Unit analysis") and "| natural | 10 | 0 |" in text
    assert "**Verdict.** toy/x: natural-basis directions" in text
    test = next(c for c in payload["comparisons"] if c["metric"] == "purity")
    for p_value, effect, phrase in (
        (0.5, 0.1, "statistically indistinguishable from"),
        (0.001, 0.4, "significantly more coherent than"),
        (0.001, -0.4, "significantly less coherent than"),
        (0.0864, 0.61, "not significantly different from, though by an effect favouring them"),
    ):
        test.update(p_mannwhitney=p_value, rank_biserial=effect)
        assert phrase in units_verdict(payload)
    test.update(n_a=3, n_b=3, p_mannwhitney=0.1, rank_biserial=1.0)  # the best 3 vs 3 can do
    assert "too few to be compared" in units_verdict(payload)


def test_a_layer_constant_over_the_images_is_refused_in_one_line() -> None:
    """Every direction of a constant layer is dead: the summary held only NaN and the CLI crashed
    formatting the rotation curve's missing means (a TypeError after the work)."""
    rng = np.random.default_rng(0)
    images = rng.random((20, 1, 4, 4)).astype(np.float32)
    labels = np.arange(20) % 2
    phi = np.full((20, 6), 0.3, dtype=np.float32)
    with pytest.raises(
        InvalidInputError, match=r"same for all 20 images .*every direction is dead"
    ):
        analyse_units(
            phi, images, labels, UnitsConfig(k=2, n_directions=4, n_null=100, n_resamples=99)
        )
    phi[7, 3] = 0.31  # one image differs: analysed
    analyse_units(phi, images, labels, UnitsConfig(k=2, n_directions=4, n_null=100, n_resamples=99))
