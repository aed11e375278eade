"""Coherence metrics, their random-subset null and the family tests (§3, REFERENCE.md values)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from intriguing.analysis import coherence as coh
from intriguing.errors import InvalidInputError


def test_purity_and_entropy_by_hand() -> None:
    labels = np.array([[0, 0, 0, 1], [2, 2, 2, 2], [0, 1, 2, 3]])
    np.testing.assert_allclose(coh.label_purity(labels, 4), [0.75, 1.0, 0.25])
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    np.testing.assert_allclose(coh.label_entropy(labels, 4), [expected, 0.0, 2.0])


def test_label_metrics_reject_out_of_range_labels() -> None:
    with pytest.raises(InvalidInputError, match="labels must lie in"):
        coh.label_purity(np.array([[0, 10]]), 10)
    with pytest.raises(InvalidInputError):
        coh.label_entropy(np.zeros((3,), dtype=int), 10)


def test_pixel_cosine_identical_and_orthogonal_images() -> None:
    images = coh.unit_rows(np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 0, 3.0]]))
    got = coh.pixel_cosine(images, np.array([[0, 1], [0, 2], [2, 3]]))
    np.testing.assert_allclose(got, [1.0, 0.0, 0.0])
    three = coh.pixel_cosine(images, np.array([[0, 1, 2]]))  # pairs: 1, 0, 0
    np.testing.assert_allclose(three, [1 / 3])


def test_pixel_cosine_blocks_by_bytes_give_the_same_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blocks sized by a byte budget (one row at a time here) equal one block of all rows."""
    rng = np.random.default_rng(0)
    images = coh.unit_rows(rng.random((40, 50)))
    topk = rng.integers(0, 40, (30, 4))
    whole = coh.pixel_cosine(images, topk)
    monkeypatch.setattr(coh, "PIXEL_COSINE_BYTES", 4 * 50 * 8)  # one row of (4, 50) float64
    np.testing.assert_array_equal(coh.pixel_cosine(images, topk), whole)
    wide = images.astype(np.float64)
    expected = [  # every ordered pair of positions i != j (a repeated image counts as 1)
        np.mean(
            [
                float(np.dot(wide[row[i]], wide[row[j]]))
                for i in range(4)
                for j in range(4)
                if i != j
            ]
        )
        for row in topk
    ]
    np.testing.assert_allclose(whole, expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("k", "mean", "p95", "p99"),
    [(10, 0.274, 0.40, 0.50), (25, 0.206, 0.28, 0.32), (100, 0.151, 0.18, 0.20)],
)
def test_exact_purity_null_reproduces_reference_values(
    k: int, mean: float, p95: float, p99: float
) -> None:
    got = coh.purity_null_summary(k, np.full(10, 0.1))
    assert got["mean"] == pytest.approx(mean, abs=1.5e-3)
    assert got["p95"] == pytest.approx(p95)
    assert got["p99"] == pytest.approx(p99)


def test_exact_purity_null_matches_brute_force_enumeration() -> None:
    probs = np.array([0.5, 0.3, 0.2])
    k = 4
    pmf = np.zeros(k + 1)
    for seq in itertools.product(range(3), repeat=k):
        pmf[np.bincount(seq, minlength=3).max()] += np.prod(probs[list(seq)])
    np.testing.assert_allclose(coh.purity_null_exact(k, probs), pmf, atol=1e-12)


def test_monte_carlo_null_agrees_with_exact_null_on_balanced_labels() -> None:
    labels = np.repeat(np.arange(10), 1000)
    images = coh.unit_rows(np.random.default_rng(0).random((10000, 5)))
    null = coh.monte_carlo_null(labels, images, 10, 20000, np.random.default_rng(1), 10)
    assert null.purity is not None and null.entropy is not None
    assert null.purity.mean() == pytest.approx(0.274, abs=0.003)
    thresholds = coh.null_thresholds(null.purity, "purity")
    assert thresholds["p95"] == pytest.approx(0.40) and thresholds["p99"] == pytest.approx(0.50)
    # Entropy is lower-is-coherent: its thresholds are lower quantiles.
    ent = coh.null_thresholds(null.entropy, "entropy")
    assert ent["p99"] <= ent["p95"] < ent["mean"]


def test_random_subsets_are_distinct_and_uniform() -> None:
    subsets = coh.random_subsets(50, 5, 20000, np.random.default_rng(2))
    assert subsets.shape == (20000, 5)
    assert all(len(set(row)) == 5 for row in subsets[:2000].tolist())
    counts = np.bincount(subsets.ravel(), minlength=50)
    assert counts.min() > 0.85 * 2000 and counts.max() < 1.15 * 2000
    dense = coh.random_subsets(6, 5, 100, np.random.default_rng(3))
    assert all(len(set(row)) == 5 for row in dense.tolist())
    with pytest.raises(InvalidInputError, match="exceeds"):
        coh.random_subsets(3, 5, 10, np.random.default_rng(0))


def test_compare_samples_detects_a_shift_and_gives_the_effect_size() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 60)
    result = coh.compare_samples(a, b, n_resamples=2000, rng=np.random.default_rng(0))
    assert result["p_mannwhitney"] < 1e-4 and result["p_permutation"] < 1e-3
    assert 0.3 < result["rank_biserial"] < 0.8
    separated = coh.compare_samples(np.arange(10.0) + 100, np.arange(10.0), n_resamples=500)
    assert separated["rank_biserial"] == pytest.approx(1.0)
    same = coh.compare_samples(a, a.copy(), n_resamples=500)
    assert same["p_mannwhitney"] == pytest.approx(1.0) and same["rank_biserial"] == pytest.approx(
        0.0
    )


def test_versus_null_counts_directions_beyond_the_threshold() -> None:
    null = np.linspace(0, 1, 1001)
    values = np.array([0.99, 0.97, 0.5, 0.1])
    result = coh.versus_null(values, null, "purity")
    assert result["null"]["p95"] == pytest.approx(0.95)
    assert result["frac_beyond_null_p95"] == pytest.approx(0.5)
    low = coh.versus_null(np.array([0.01, 0.9]), null, "entropy")
    assert low["frac_beyond_null_p95"] == pytest.approx(0.5) and low["alternative"].endswith(
        "less than null"
    )


def test_summary_and_mean_ci() -> None:
    s = coh.summarise(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["n"] == 4
    mean, lo, hi = coh.mean_ci(np.array([1.0, 2.0, 3.0]))
    assert (
        mean == 2.0 and lo == pytest.approx(2.0 - 1.959964 / math.sqrt(3), rel=1e-5) and hi > mean
    )
