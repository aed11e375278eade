"""Shared statistics for judging claims: proportions, paired tests, means and verdict rules.

Every function is pure (numbers in, numbers out) and uses :mod:`scipy.stats`; it is the one place
for the intervals and tests that the claims of a reproduce run (docs/claims.md) and the other
experiments rely on. Conventions:

* proportions are ``k`` successes out of ``n`` trials, intervals at ``confidence`` (default 95%),
  two-sided unless an ``alternative`` says otherwise;
* a paired 2x2 table compares condition A with condition B on the same items: ``a_only`` items are
  "positive" (e.g. misclassified) under A only, ``b_only`` under B only (the discordant pairs);
* verdicts are ``"holds"``, ``"fails"`` or ``"inconclusive"`` (:data:`VERDICTS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.stats

from intriguing.errors import InvalidInputError

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS: tuple[str, ...] = (HOLDS, FAILS, INCONCLUSIVE)
ALPHA = 0.05
Alternative = Literal["two-sided", "greater", "less"]


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise InvalidInputError(f"need 0 <= k <= n, got k={k}, n={n}")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval ``(lo, hi)`` in [0, 1] for ``k`` of ``n``.

    ``n == 0`` gives the uninformative ``(0.0, 1.0)``.
    """
    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for ``k`` of ``n`` (``(0, 1)`` when ``n == 0``)."""
    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def binom_p(k: int, n: int, p0: float, alternative: Alternative = "two-sided") -> float:
    """Exact binomial test p-value of ``k`` of ``n`` against proportion ``p0`` (1.0 if ``n == 0``)."""
    _check_counts(k, n)
    if n == 0:
        return 1.0
    return float(scipy.stats.binomtest(k, n, p0, alternative=alternative).pvalue)


def mcnemar_p(a_only: int, b_only: int, alternative: Alternative = "greater") -> float:
    """Exact McNemar p-value from the discordant pairs of a paired 2x2 table.

    Under H0 each discordant pair is A-only with probability 1/2; ``alternative="greater"`` tests
    "A positive more often than B" (binomial test of ``a_only`` of ``a_only + b_only``). No
    discordant pair gives p = 1.
    """
    return binom_p(a_only, a_only + b_only, 0.5, alternative)


def fisher_p(k_a: int, n_a: int, k_b: int, n_b: int, alternative: Alternative = "greater") -> float:
    """Fisher's exact test p-value that proportion ``k_a/n_a`` exceeds ``k_b/n_b`` (unpaired)."""
    _check_counts(k_a, n_a)
    _check_counts(k_b, n_b)
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    return float(scipy.stats.fisher_exact(table, alternative=alternative).pvalue)


@dataclass(frozen=True)
class Paired:
    """A paired 2x2 table: ``n`` items, how many are positive under A and under B, and discordant.

    Build it with :func:`paired_counts` from boolean vectors, or from stored counts.
    """

    n: int
    a: int
    b: int
    a_only: int
    b_only: int

    def __post_init__(self) -> None:
        both = self.a - self.a_only
        if (
            min(self.n, self.a, self.b, self.a_only, self.b_only) < 0
            or both != self.b - self.b_only
            or both < 0
            or self.a + self.b_only > self.n
        ):
            raise InvalidInputError(f"inconsistent paired counts {self}")

    @property
    def diff(self) -> float:
        """Proportion under A minus proportion under B (0 when there are no items)."""
        return (self.a - self.b) / self.n if self.n else 0.0

    def p_greater(self) -> float:
        """Exact one-sided McNemar: A positive more often than B."""
        return mcnemar_p(self.a_only, self.b_only, "greater")

    def p_less(self) -> float:
        """Exact one-sided McNemar: A positive less often than B."""
        return mcnemar_p(self.a_only, self.b_only, "less")

    def diff_ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wald interval (with the Agresti-Min +1/2 correction) for the paired difference."""
        if self.n == 0:
            return -1.0, 1.0
        n = self.n + 2.0
        b, c = self.a_only + 0.5, self.b_only + 0.5
        d = (b - c) / n
        se = math.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
        z = float(scipy.stats.norm.ppf(0.5 + confidence / 2))
        return max(-1.0, d - z * se), min(1.0, d + z * se)

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n, "a": self.a, "b": self.b, "a_only": self.a_only, "b_only": self.b_only}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Paired:
        return cls(int(d["n"]), int(d["a"]), int(d["b"]), int(d["a_only"]), int(d["b_only"]))


def paired_counts(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> Paired:
    """The paired table of two boolean vectors of the same length (True = positive)."""
    va, vb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if va.shape != vb.shape or va.ndim != 1:
        raise InvalidInputError(f"paired vectors need one equal length, got {va.shape}, {vb.shape}")
    return Paired(
        n=int(va.size),
        a=int(va.sum()),
        b=int(vb.sum()),
        a_only=int((va & ~vb).sum()),
        b_only=int((~va & vb).sum()),
    )


def mannwhitney_smallest_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney test of samples of sizes ``n_a`` and
    ``n_b`` can give (complete separation: ``2 / C(n_a + n_b, n_a)``, at most 1). When it is not
    below a level, the test cannot reject at that level whatever the data: 3 vs 3 gives 0.1."""
    if n_a < 1 or n_b < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


UNITS_EFFECT = 0.3  # §3: a non-significant rank-biserial >= this is "underpowered", not "equal"


def units_direction(test: Mapping[str, Any]) -> tuple[str, str]:
    """(direction, verdict) of one natural-vs-random test: ``more`` / ``less`` coherent (two-sided
    p < ALPHA) or ``equally`` (no significant difference; ``inconclusive`` when the effect
    favouring units, rank-biserial >= :data:`UNITS_EFFECT`, is too large to call them equal).

    ``untested`` (inconclusive) when the test cannot fail: too few directions for the exact test
    to give p < ALPHA whatever the data (:func:`mannwhitney_smallest_p`; 3 vs 3 gives at best
    0.1), or a p-value or effect that is not a number."""
    p, r = float(test["p_mannwhitney"]), float(test["rank_biserial"])
    smallest = mannwhitney_smallest_p(int(test["n_a"]), int(test["n_b"]))
    if not (math.isfinite(p) and math.isfinite(r)) or smallest >= ALPHA:
        return "untested", INCONCLUSIVE
    if p < ALPHA:
        return ("more", FAILS) if r > 0 else ("less", HOLDS)
    if r >= UNITS_EFFECT:
        return "equally", INCONCLUSIVE
    return "equally", HOLDS


def mean_ci(mean: float, sd: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean from its summary (``sd``: sample standard deviation).

    ``n < 2`` gives ``(-inf, inf)``: one value says nothing about the spread.
    """
    if n < 2:
        return -math.inf, math.inf
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def summarise(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """``{"n", "mean", "sd"}`` of ``values`` (sample sd; None where undefined)."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
    }


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, *, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap (BCa) interval for the mean of ``values`` (at least 2 values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise InvalidInputError("a bootstrap interval needs at least 2 values")
    if float(v.max()) == float(v.min()):
        return float(v[0]), float(v[0])
    res = scipy.stats.bootstrap(
        (v,),
        np.mean,
        confidence_level=confidence,
        n_resamples=2000,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def share_verdict(
    agree: int, total: int, *, threshold: float = 0.5
) -> tuple[str, tuple[float, float]]:
    """Verdict of a many-cell claim from the number of cells that significantly agree.

    Rule (docs/claims.md): with the Clopper-Pearson 95% interval ``(lo, hi)`` of ``agree/total``,
    ``holds`` if ``lo >= threshold`` (a significant majority of cells agrees), ``fails`` if
    ``hi < threshold`` (a significant minority does), else ``inconclusive``. Returns the verdict and
    the interval; no cells is inconclusive.
    """
    lo, hi = clopper_pearson(agree, total)
    if total == 0:
        return INCONCLUSIVE, (lo, hi)
    if lo >= threshold:
        return HOLDS, (lo, hi)
    if hi < threshold:
        return FAILS, (lo, hi)
    return INCONCLUSIVE, (lo, hi)


def interval_verdict(lo: float, hi: float, bound: float, *, below: bool = True) -> str:
    """``holds`` when the whole interval is on the claimed side of ``bound``, ``fails`` when it
    is wholly on the other side, ``inconclusive`` when it straddles the bound.

    ``below=True`` claims the quantity is below ``bound`` (``hi < bound`` holds); ``below=False``
    claims it is at least ``bound`` (``lo >= bound`` holds).
    """
    if below:
        return HOLDS if hi < bound else FAILS if lo >= bound else INCONCLUSIVE
    return HOLDS if lo >= bound else FAILS if hi < bound else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """All parts of a claim together: ``fails`` if any part fails, ``holds`` if all hold, else
    ``inconclusive`` (an empty list is inconclusive)."""
    if not verdicts:
        return INCONCLUSIVE
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


# ------------------------------------------------------------------ moved here by issue 17
# (from experiments/classes and experiments/advtrain: one home for the statistics helpers)
def mean_median_ci(
    values: Sequence[float], *, resamples: int, seed: int, confidence: float = 0.95
) -> dict[str, Any]:
    """Mean and median of ``values`` with percentile-bootstrap intervals (None when n < 2).

    Returns ``{"n", "mean", "median", "mean_ci", "median_ci"}``; a constant sample gets the
    degenerate interval ``[v, v]``.
    """
    data = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": int(data.size), "mean": None, "median": None}
    if data.size == 0:
        return {**out, "mean_ci": None, "median_ci": None}
    out["mean"], out["median"] = float(data.mean()), float(np.median(data))
    for name, stat in (("mean", np.mean), ("median", np.median)):
        if data.size < 2 or np.ptp(data) == 0:
            out[f"{name}_ci"] = [out[name], out[name]] if data.size >= 2 else None
            continue
        res = scipy.stats.bootstrap(
            (data,),
            stat,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        out[f"{name}_ci"] = [
            float(res.confidence_interval.low),
            float(res.confidence_interval.high),
        ]
    return out


def ratio_of_means_ci(
    num: Sequence[float],
    den: Sequence[float],
    *,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """``mean(num) / mean(den)`` over paired values with a paired percentile-bootstrap interval.

    Returns ``{"n", "ratio", "ratio_ci"}`` (None where undefined: no values, ``mean(den) <= 0``,
    or fewer than 2 pairs for the interval).
    """
    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if a.size == 0 or b.mean() <= 0:
        return {"n": int(a.size), "ratio": None, "ratio_ci": None}
    ratio = float(a.mean() / b.mean())
    if a.size < 2:
        return {"n": int(a.size), "ratio": ratio, "ratio_ci": None}

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(x.mean(axis=axis) / y.mean(axis=axis))

    res = scipy.stats.bootstrap(
        (a, b),
        stat,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"n": int(a.size), "ratio": ratio, "ratio_ci": [low, high]}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of ``values`` (None for fewer than 2 values)."""
    import statistics

    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    sem = statistics.stdev(values) / math.sqrt(len(values))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sem
    return mean - half, mean + half


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float | None]:
    """Welch's t-test of mean(a) != mean(b): ``{"t", "p", "difference"}`` (None when undefined)."""
    import statistics

    difference = statistics.fmean(a) - statistics.fmean(b) if a and b else None
    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return {"t": None, "p": None, "difference": difference}
    test = scipy.stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(test.statistic), "p": float(test.pvalue), "difference": difference}
