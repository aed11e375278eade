"""Coherence of a set of top-k images, its chance level, and tests between direction families (§3).

The paper judged by eye whether the images maximising ``<phi(x), v>`` "share semantic properties".
Here three numbers measure it for each direction's top-k images:

- **label purity**: the share of the most common label, in ``[1/k, 1]`` (1 = all one class);
- **label entropy**: Shannon entropy (bits) of the top-k label histogram, in ``[0, log2 k]``
  (0 = all one class);
- **pixel cosine** (label-free): mean pairwise cosine similarity of the top-k images as raw pixel
  vectors, in ``[-1, 1]`` (``[0, 1]`` for non-negative images). Pixels are an embedding independent of
  the network, so this needs no labels (the ImageNet-style path without a labels file).

The chance level of each metric is its distribution over *random k-subsets of the image set*: a
Monte-Carlo null (subsets drawn without replacement, as the top-k are distinct images) and, for purity,
an exact null for k labels drawn with replacement with the image set's class frequencies
(:func:`purity_null_exact`). Families of directions are compared with the Mann-Whitney U test and a
permutation test on the difference of means (``scipy.stats``), with the rank-biserial correlation as
the effect size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

from intriguing.errors import InvalidInputError

METRICS: tuple[str, ...] = ("purity", "entropy", "pixel_cosine")
#: +1 if a larger value means a more coherent top-k set, -1 if a smaller one does.
POLARITY: dict[str, int] = {"purity": 1, "entropy": -1, "pixel_cosine": 1}


# --------------------------------------------------------------------------- metrics per direction


def label_counts(topk_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Histogram of each row of integer labels ``(n, k)`` in ``[0, n_classes)``: ``(n, n_classes)``."""
    labels = np.asarray(topk_labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise InvalidInputError(
            f"top-k labels must have shape (n, k) with k >= 1, got {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise InvalidInputError(
            f"labels must lie in [0, {n_classes}), found {labels.min()}..{labels.max()}"
        )
    counts = np.zeros((labels.shape[0], n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(labels.shape[0]), labels.shape[1]), labels.ravel()), 1)
    return counts


def label_purity(topk_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of the most common label in each row ``(n, k)``: values in ``[1/k, 1]``, shape ``(n,)``."""
    counts = label_counts(topk_labels, n_classes)
    return counts.max(axis=1) / counts.sum(axis=1)


def label_entropy(topk_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Shannon entropy in bits of each row's label histogram: values in ``[0, log2 k]``, ``(n,)``."""
    counts = label_counts(topk_labels, n_classes).astype(np.float64)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.asarray(terms.sum(axis=1) + 0.0)


def unit_rows(images_flat: np.ndarray) -> np.ndarray:
    """Rows of ``(N, P)`` scaled to unit L2 norm (an all-zero row stays zero), float32."""
    x = np.asarray(images_flat, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def pixel_cosine(unit_images: np.ndarray, topk: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine similarity of each row's images, ``(n,)``; needs ``k >= 2``.

    Args:
        unit_images: ``(N, P)`` image vectors already scaled to unit norm (:func:`unit_rows`).
        topk: ``(n, k)`` image indices.
    """
    idx = np.asarray(topk)
    if idx.ndim != 2 or idx.shape[1] < 2:
        raise InvalidInputError(
            f"pixel cosine needs k >= 2 images per direction, got shape {idx.shape}"
        )
    k = idx.shape[1]
    out = np.empty(idx.shape[0])
    # rows per block from a byte budget: (rows, k, P) float64 (256 fixed rows of 3x224x224
    # images held 2.4 GB and, over a null of 1000 draws, ran out of memory)
    rows = max(1, min(256, PIXEL_COSINE_BYTES // max(1, k * unit_images.shape[1] * 8)))
    for start in range(0, idx.shape[0], rows):
        sel = unit_images[idx[start : start + rows]].astype(np.float64)  # (b, k, P)
        gram = np.einsum("nip,njp->nij", sel, sel)
        off_diagonal = gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)
        out[start : start + rows] = off_diagonal / (k * (k - 1))
    return out


PIXEL_COSINE_BYTES = 64 * 2**20  # the largest block pixel_cosine gathers at once


# --------------------------------------------------------------------------- null distributions


def purity_null_exact(k: int, class_probs: np.ndarray) -> np.ndarray:
    """Exact distribution of the top count among ``k`` labels drawn i.i.d. with ``class_probs``.

    Uses ``P(max count <= m) = k! [x^k] prod_c sum_{j<=m} (p_c x)^j / j!`` (the exponential
    generating function of the multinomial). Returns ``pmf`` of shape ``(k + 1,)`` with
    ``pmf[m] = P(max count == m)`` (purity ``m / k``).
    """
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    p = np.asarray(class_probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise InvalidInputError("class probabilities must be a non-negative vector summing to 1")
    log_fact = np.array([math.lgamma(j + 1) for j in range(k + 1)])
    cdf = np.zeros(k + 1)
    for m in range(1, k + 1):
        poly = np.zeros(k + 1)
        poly[0] = 1.0
        j = np.arange(m + 1)
        for pc in p:
            with np.errstate(divide="ignore"):
                term = np.exp(j * np.log(pc) - log_fact[: m + 1]) if pc > 0 else (j == 0) * 1.0
            poly = np.convolve(poly, term)[: k + 1]
        cdf[m] = math.exp(log_fact[k]) * poly[k] if k < 170 else _big_k_coefficient(poly[k], k)
    cdf = np.clip(cdf, 0.0, 1.0)
    cdf[k] = 1.0
    return np.diff(np.concatenate([[0.0], cdf]))


def _big_k_coefficient(coefficient: float, k: int) -> float:
    return math.exp(math.log(coefficient) + math.lgamma(k + 1)) if coefficient > 0 else 0.0


def discrete_quantile(values: np.ndarray, pmf: np.ndarray, q: float) -> float:
    """Smallest ``values[i]`` with ``sum(pmf[: i + 1]) >= q`` (``values`` ascending)."""
    cdf = np.cumsum(pmf)
    index = int(np.searchsorted(cdf, q - 1e-12, side="left"))
    return float(values[min(index, len(values) - 1)])


def purity_null_summary(k: int, class_probs: np.ndarray) -> dict[str, float]:
    """Mean, 95th and 99th percentile of the exact purity null (:func:`purity_null_exact`)."""
    pmf = purity_null_exact(k, class_probs)
    purity = np.arange(k + 1) / k
    return {
        "mean": float(pmf @ purity),
        "p95": discrete_quantile(purity, pmf, 0.95),
        "p99": discrete_quantile(purity, pmf, 0.99),
    }


@dataclass(frozen=True)
class NullSample:
    """Metric values of ``n`` random k-subsets of the image set (the chance level), each ``(n,)``."""

    purity: np.ndarray | None
    entropy: np.ndarray | None
    pixel_cosine: np.ndarray

    def values(self, metric: str) -> np.ndarray | None:
        return {"purity": self.purity, "entropy": self.entropy, "pixel_cosine": self.pixel_cosine}[
            metric
        ]


def random_subsets(n_images: int, k: int, n_subsets: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_subsets, k)`` image indices, each row ``k`` distinct images drawn uniformly."""
    if k > n_images:
        raise InvalidInputError(f"k = {k} exceeds the number of images ({n_images})")
    if 4 * k > n_images:
        return np.stack([rng.choice(n_images, size=k, replace=False) for _ in range(n_subsets)])
    # Rejection: ordered k-tuples with distinct entries are uniform, hence so are their sets.
    subsets = rng.integers(0, n_images, size=(n_subsets, k))
    while True:
        sorted_rows = np.sort(subsets, axis=1)
        bad = np.flatnonzero((np.diff(sorted_rows, axis=1) == 0).any(axis=1))
        if bad.size == 0:
            return subsets
        subsets[bad] = rng.integers(0, n_images, size=(bad.size, k))


def monte_carlo_null(
    labels: np.ndarray | None,
    unit_images: np.ndarray,
    k: int,
    n_subsets: int,
    rng: np.random.Generator,
    n_classes: int | None = None,
) -> NullSample:
    """The metrics of ``n_subsets`` random k-subsets (without replacement) of the image set."""
    subsets = random_subsets(unit_images.shape[0], k, n_subsets, rng)
    cos = pixel_cosine(unit_images, subsets) if k >= 2 else np.full(n_subsets, np.nan)
    if labels is None:
        return NullSample(purity=None, entropy=None, pixel_cosine=cos)
    classes = int(n_classes if n_classes is not None else labels.max() + 1)
    sub_labels = np.asarray(labels)[subsets]
    return NullSample(
        purity=label_purity(sub_labels, classes),
        entropy=label_entropy(sub_labels, classes),
        pixel_cosine=cos,
    )


# --------------------------------------------------------------------------- summaries and tests


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and quantiles of a sample (NaN-free), as plain floats."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(q[0]),
        "q05": float(q[1]),
        "q25": float(q[2]),
        "median": float(q[3]),
        "q75": float(q[4]),
        "q95": float(q[5]),
        "max": float(q[6]),
    }


def null_thresholds(null_values: np.ndarray, metric: str) -> dict[str, float]:
    """The null's mean and its 95th/99th percentiles *in the coherent direction* of ``metric``.

    For entropy (lower = more coherent) the "p95" threshold is the 5th percentile, and so on.
    """
    v = np.asarray(null_values, dtype=np.float64)
    if POLARITY[metric] > 0:
        p95, p99 = (
            np.quantile(v, 0.95, method="inverted_cdf"),
            np.quantile(v, 0.99, method="inverted_cdf"),
        )
    else:
        p95, p99 = (
            np.quantile(v, 0.05, method="inverted_cdf"),
            np.quantile(v, 0.01, method="inverted_cdf"),
        )
    return {"mean": float(v.mean()), "p95": float(p95), "p99": float(p99)}


def beyond(values: np.ndarray, threshold: float, metric: str) -> np.ndarray:
    """Boolean mask: values strictly more coherent than ``threshold``."""
    v = np.asarray(values)
    return v > threshold if POLARITY[metric] > 0 else v < threshold


def versus_null(values: np.ndarray, null_values: np.ndarray, metric: str) -> dict[str, Any]:
    """How one family's values compare with the random-subset null for ``metric``.

    Returns the null thresholds, the share of directions beyond the null's 95th/99th percentile
    (chance: at most 5% / 1%), and a one-sided Mann-Whitney test "family more coherent than null".
    """
    v = np.asarray(values, dtype=np.float64)
    thresholds = null_thresholds(null_values, metric)
    out: dict[str, Any] = {"null": thresholds, "n": int(v.size)}
    if v.size == 0:
        return out
    alternative = "greater" if POLARITY[metric] > 0 else "less"
    test = scipy.stats.mannwhitneyu(v, null_values, alternative=alternative)
    out.update(
        frac_beyond_null_p95=float(beyond(v, thresholds["p95"], metric).mean()),
        frac_beyond_null_p99=float(beyond(v, thresholds["p99"], metric).mean()),
        mean_minus_null_mean=float(v.mean() - thresholds["mean"]),
        mannwhitney_u=float(test.statistic),
        p_value=float(test.pvalue),
        alternative=f"family {alternative} than null",
    )
    return out


def rank_biserial(u_statistic: float, n_a: int, n_b: int) -> float:
    """Rank-biserial correlation ``2 U / (n_a n_b) - 1`` in ``[-1, 1]`` (> 0: sample a tends larger)."""
    return 2.0 * u_statistic / (n_a * n_b) - 1.0


def compare_samples(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_resamples: int = 9999,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Two-sided Mann-Whitney U and permutation test (difference of means) between samples a and b.

    Returns ``mannwhitney_u`` (U of sample a), ``p_mannwhitney``, ``rank_biserial`` (effect size,
    > 0 when a tends to exceed b), ``mean_a``, ``mean_b``, ``mean_diff`` (a - b), ``p_permutation``.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise InvalidInputError("each sample needs at least 2 values for a comparison")
    mw = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")
    perm = scipy.stats.permutation_test(
        (x, y),
        lambda s, t, axis: np.mean(s, axis=axis) - np.mean(t, axis=axis),
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=n_resamples,
        vectorized=True,
        rng=rng if rng is not None else np.random.default_rng(0),
    )
    return {
        "n_a": int(x.size),
        "n_b": int(y.size),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": float(x.mean() - y.mean()),
        "mannwhitney_u": float(mw.statistic),
        "p_mannwhitney": float(mw.pvalue),
        "rank_biserial": rank_biserial(float(mw.statistic), x.size, y.size),
        "p_permutation": float(perm.pvalue),
    }


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a normal-approximation confidence interval ``(mean, lo, hi)``."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = float(scipy.stats.norm.ppf(0.5 + level / 2) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half
