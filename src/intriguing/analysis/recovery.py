"""Recover the true label with the same optimisation, and a detector built on it.

The summary-and-critique asks, in its "Thoughts": "Can we use the same optimization to retrieve the
original label?" Starting from adversarial examples ``x' = x + r`` of the paper's attack (section
4.1; ``f(x) = y``, ``f(x') = t != y``), this module

1. runs the *targeted* box-constrained L-BFGS attack (:class:`intriguing.attacks.LBFGS`) from ``x'``
   back toward ``y``: ``x''`` with ``f(x'') = y`` when it succeeds. It reports the recovery rate, the
   distortion of the way back ``||x'' - x'||`` and how far the recovered image is from the original
   ``||x'' - x||``, beside the adversarial's own ``||x' - x||`` (the paper's RMS distortion);
2. asks whether "how far must I go to change the prediction" separates adversarial from clean
   inputs. The **detector statistic** needs no label: ``S(z)`` = the untargeted minimum distortion
   (same attack) that changes the current prediction ``f(z)``, computed on the clean ``x`` and on
   ``x'``; adversarial inputs sit just past a boundary, so a small ``S`` flags them. The
   **oracle statistic** uses the original label: ``O(x') = ||x'' - x'||`` (the way back to ``y``)
   and, for the clean input, ``O(x) =`` the targeted distortion from ``x`` to ``t`` (the same pair
   of classes, crossed from the other side). A detector that had the label would not need one,
   so ``O`` bounds what the recovery idea can give.

Separation is the ROC AUC ``P(S(x') < S(x)) + P(tie) / 2``, computed with the Mann-Whitney U
statistic (:func:`scipy.stats.mannwhitneyu`; ``AUC = U / (n_clean * n_adv)``), with a percentile
bootstrap interval (:func:`scipy.stats.bootstrap`) that resamples the clean and the adversarial
statistics independently (stratified; :func:`auc_confidence_interval` says why not by pairs), or
a score interval (:func:`auc_score_interval`) where every resample would give the same AUC. A
failed attack gives ``S = inf`` (no prediction change found: ranked as the most clean-looking).

Conventions: images ``(N, ...)`` float32 in [0, 1]; labels int64 ``(N,)``; distortion is the
paper's RMS per pixel ``sqrt(sum (a - b)^2 / n)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
from scipy import stats
from torch import nn

from intriguing._io import finite_or_none
from intriguing.attacks import LBFGS, AttackResult, LBFGSConfig
from intriguing.attacks.checks import (
    TINY_LOGITS,
    TINY_LOGITS_MESSAGE,
    AttackWarning,
    check_eval_mode,
    check_image_pair,
    check_labels,
)
from intriguing.attacks.metrics import median, rms_distortion
from intriguing.errors import InvalidInputError
from intriguing.models.user import model_dtype

CONFIDENCE = 0.95  # the default level of every interval here


class Bootstrap(TypedDict, total=False):
    """The percentile bootstrap's settings, passed on to :func:`auc_confidence_interval` (which
    holds the defaults): ``confidence`` (0.95), ``n_resamples`` (2000), ``seed`` (0)."""

    confidence: float
    n_resamples: int
    seed: int


# ----------------------------------------------------------------------------- ROC / AUC
def _as_scores(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InvalidInputError(f"{name} is empty: the AUC needs at least one value per class")
    if np.isnan(arr).any():
        raise InvalidInputError(f"{name} contains NaN; use inf for 'no prediction change found'")
    return arr


def auc_low_is_positive(clean: Any, adversarial: Any) -> float:
    """ROC AUC of the rule "small statistic = adversarial": ``P(adv < clean) + P(tie) / 2``.

    Computed as the Mann-Whitney ``U`` of ``clean`` over ``adversarial`` divided by
    ``n_clean * n_adv`` (scipy.stats.mannwhitneyu). ``inf`` values are allowed (ranked last).
    """
    c = _as_scores(clean, "clean statistic")
    a = _as_scores(adversarial, "adversarial statistic")
    u = stats.mannwhitneyu(c, a, alternative="two-sided").statistic
    return float(u) / (c.size * a.size)


def auc_confidence_interval(
    clean: Any,
    adversarial: Any,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc_low_is_positive`, resampling the clean and the
    adversarial statistics independently (stratified, as for any AUC).

    Not by (clean, adversarial) pairs of one image, although this module's design is paired: a
    pair drawn ``k`` times would count its own within-image comparison ``k^2`` times, pulling the
    resampled AUCs toward the within-image rate (an interval [0.435, 0.4625] around an AUC of
    0.475 was measured that way).

    Where every resample gives the same AUC (the samples are separated, or every value is tied)
    the percentile interval is a point; there, and where one side has a single value, the score
    interval :func:`auc_score_interval` is returned instead.
    """
    c = _as_scores(clean, "clean statistic")
    a = _as_scores(adversarial, "adversarial statistic")
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise InvalidInputError("confidence must be in (0, 1) and n_resamples >= 1")
    # rank transform first (AUC only depends on ranks): finite values for the bootstrap
    ranks = stats.rankdata(np.concatenate([c, a]))
    rc, ra = ranks[: c.size], ranks[c.size :]
    separated = np.all(rc > ra.max()) or np.all(rc < ra.min())
    if separated or np.ptp(ranks) == 0 or min(c.size, a.size) < 2:
        # separated or all tied: every resample gives the same AUC, and the percentile interval
        # is [AUC, AUC] (certainty from a handful of values); a single value on a side leaves
        # only the other side's resampling, too little to go by
        return auc_score_interval(auc_low_is_positive(c, a), a.size, c.size, confidence)

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        u = stats.mannwhitneyu(x, y, axis=axis, alternative="two-sided").statistic
        return np.asarray(u) / (x.shape[axis] * y.shape[axis])

    res = stats.bootstrap(
        (rc, ra),
        statistic,
        paired=False,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def auc_score_interval(
    auc: float, n_adversarial: int, n_clean: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Score interval of an AUC: every ``theta`` in [0, 1] with ``(auc - theta)^2 <= z^2 V(theta)``,
    ``V`` the Hanley-McNeil (1982) variance of the AUC evaluated at ``theta`` rather than at the
    estimate (the score idea of Wilson's binomial interval; Newcombe 2006 for the AUC):

        V(theta) = theta (1 - theta) [1 + (n_adv - 1)(1 - theta)/(2 - theta)
                                        + (n_clean - 1) theta/(1 + theta)] / (n_adv n_clean)

    Unlike the percentile bootstrap it does not collapse when the two samples are separated:
    1 vs 1 at AUC 1 gives ``[1 / (1 + z^2), 1] = [0.207, 1]``. Used by
    :func:`auc_confidence_interval` where every resample would give the same AUC.
    """
    if not 0.0 <= auc <= 1.0 or n_adversarial < 1 or n_clean < 1:
        raise InvalidInputError("auc must be in [0, 1] and each sample size >= 1")
    z = float(stats.norm.ppf(0.5 + confidence / 2))

    def gap(theta: Any) -> Any:  # <= 0 inside the interval
        t = np.asarray(theta, dtype=np.float64)
        spread = 1 + (n_adversarial - 1) * (1 - t) / (2 - t) + (n_clean - 1) * t / (1 + t)
        variance = t * (1 - t) * spread / (n_adversarial * n_clean)
        return (auc - t) ** 2 - z * z * variance

    grid = np.union1d(np.linspace(0.0, 1.0, 4001), [auc])
    inside = np.flatnonzero(gap(grid) <= 0.0)  # one run of points around auc (tested)
    first, last = int(inside[0]), int(inside[-1])
    lo = 0.0 if first == 0 else _root(gap, grid[first - 1], grid[first])
    hi = 1.0 if last == grid.size - 1 else _root(gap, grid[last], grid[last + 1])
    return lo, hi


def _root(f: Any, a: float, b: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(lambda t: float(f(t)), a, b, xtol=1e-12))


def roc_points(clean: Any, adversarial: Any, max_points: int = 201) -> dict[str, list[float]]:
    """ROC of "flag when statistic <= threshold": ``fpr``, ``tpr`` (from (0, 0) to (1, 1)).

    ``max_points`` caps the number of thresholds kept (evenly spaced along the sorted values).
    """
    c = _as_scores(clean, "clean statistic")
    a = _as_scores(adversarial, "adversarial statistic")
    thresholds = np.unique(np.concatenate([c, a]))
    if thresholds.size > max_points:
        keep = np.unique(np.linspace(0, thresholds.size - 1, max_points).round().astype(int))
        thresholds = thresholds[keep]
    c_sorted, a_sorted = np.sort(c), np.sort(a)
    fpr = np.searchsorted(c_sorted, thresholds, side="right") / c.size
    tpr = np.searchsorted(a_sorted, thresholds, side="right") / a.size
    return {
        "fpr": [0.0, *fpr.tolist()],
        "tpr": [0.0, *tpr.tolist()],
    }


def tpr_at_fpr(clean: Any, adversarial: Any, fpr: float = 0.05) -> float:
    """Largest true-positive rate over thresholds whose false-positive rate is at most ``fpr``."""
    c = np.sort(_as_scores(clean, "clean statistic"))
    a = np.sort(_as_scores(adversarial, "adversarial statistic"))
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([c, a]))])
    f = np.searchsorted(c, thresholds, side="right") / c.size
    t = np.searchsorted(a, thresholds, side="right") / a.size
    return float(t[f <= fpr + 1e-12].max())


def separation(clean: Any, adversarial: Any, **bootstrap: Unpack[Bootstrap]) -> dict[str, Any]:
    """AUC with its bootstrap interval (settings: :class:`Bootstrap`), TPR at 5% FPR, and medians
    of both statistics."""
    c = _as_scores(clean, "clean statistic")
    a = _as_scores(adversarial, "adversarial statistic")
    lo, hi = auc_confidence_interval(c, a, **bootstrap)
    return {
        "auc": auc_low_is_positive(c, a),
        "auc_ci": [lo, hi],
        "tpr_at_fpr_0.05": tpr_at_fpr(c, a, 0.05),
        "median_clean": finite_or_none(float(np.median(c))),
        "median_adversarial": finite_or_none(float(np.median(a))),
        "clean_inf": int(np.isinf(c).sum()),
        "adversarial_inf": int(np.isinf(a).sum()),
        "roc": roc_points(c, a),
    }


# ----------------------------------------------------------------------------- the attacks
def _statistic(result: AttackResult) -> torch.Tensor:
    """``(N,)`` float64: the distortion of each success, ``inf`` for each failure."""
    return torch.where(result.success.bool(), result.distortion.double(), torch.inf)


def _attack(kwargs: Mapping[str, Any], mode: str) -> LBFGS:
    settings = {k: v for k, v in kwargs.items() if k not in ("mode", "target")}
    return LBFGS(mode=mode, **settings)


_RUNTIME_SETTINGS = ("threads", "progress")


def _check_attack_settings(attack: object) -> dict[str, Any]:
    """``attack`` (LBFGS keyword settings or None) as a dict, after building both attacks once so
    that every unknown or out-of-range setting is refused before any work."""
    if attack is None:
        return {}
    if not isinstance(attack, Mapping):
        raise InvalidInputError(
            f"attack must be a dict of LBFGS settings such as {{'max_iter': 100}}, got "
            f"{type(attack).__name__}"
        )
    known = {f.name for f in dataclasses.fields(LBFGSConfig)} | set(_RUNTIME_SETTINGS)
    unknown = sorted(str(k) for k in attack if k not in known)
    if unknown:
        raise InvalidInputError(
            f"unknown LBFGS setting(s) {', '.join(map(repr, unknown))} in attack; valid ones: "
            f"{', '.join(sorted(known))}"
        )
    kw = dict(attack)
    for mode in ("targeted", "untargeted"):
        try:
            _attack(kw, mode)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(f"bad LBFGS settings in attack: {first}") from None
    return kw


def _check_amplify(amplify: object) -> tuple[float, ...]:
    """Amplification factors: a tuple or list of finite numbers > 1."""
    if not isinstance(amplify, (tuple, list)):
        raise InvalidInputError(
            f"amplify must be a tuple of factors > 1, e.g. (2.0,), got {amplify!r}"
        )
    for k in amplify:
        if (
            isinstance(k, bool)
            or not isinstance(k, numbers.Real)
            or not (math.isfinite(float(k)) and float(k) > 1.0)
        ):
            raise InvalidInputError(f"amplification factors must be finite numbers > 1, got {k!r}")
    return tuple(float(k) for k in amplify)


@contextlib.contextmanager
def _from_the_boundary(clean_logits: torch.Tensor) -> Iterator[None]:
    """Attacks that start at adversarial examples: near the decision boundary every logit of a
    two-class model is near 0, so the attack's tiny-logits warning (meant for a model whose output
    was scaled down) is silenced unless the clean examples' logits are tiny too."""
    with warnings.catch_warnings():
        if not bool((clean_logits.detach().abs().amax(1) < TINY_LOGITS).any()):
            warnings.filterwarnings("ignore", message=TINY_LOGITS_MESSAGE, category=AttackWarning)
        yield


def recover_and_detect(
    model: nn.Module,
    originals: torch.Tensor,
    adversarials: torch.Tensor,
    labels: torch.Tensor,
    *,
    attack: Mapping[str, Any] | None = None,
    clean_statistic: torch.Tensor | None = None,
    amplify: tuple[float, ...] = (),
) -> dict[str, torch.Tensor]:
    """Run the four attacks of this module; per-example tensors, all ``(N,)``.

    Args:
        model: eval-mode model returning logits.
        originals: ``(N, ...)`` in [0, 1], classified as ``labels``.
        adversarials: ``(N, ...)`` in [0, 1], classified as some class ``!= labels``.
        labels: ``(N,)`` int64 true labels.
        attack: :class:`~intriguing.attacks.LBFGS` keyword settings shared by every attack
            (``mode``/``target`` are set here).
        clean_statistic: the untargeted minimum distortion of the originals if already known from
            an attack *with the same settings* (e.g. the stored attack that made ``adversarials``);
            computed otherwise.
        amplify: factors ``k > 1``: the detector is also run on ``clip(x + k (x' - x), 0, 1)``,
            adversarials pushed past the boundary (an attacker who knows about the detector);
            key ``detector_amplified_<k>`` holds ``S`` there, NaN where the amplified image
            is no longer adversarial.

    Returns:
        ``adversarial_class`` (t), ``recovered`` (bool), ``adversarial_rms`` ``||x' - x||``,
        ``back_rms`` ``||x'' - x'||`` (``inf`` unless recovered), ``recovered_to_original_rms``
        ``||x'' - x||`` (``nan`` unless recovered), ``recovered_predicted``,
        ``detector_clean`` / ``detector_adversarial`` (``S``), ``oracle_clean`` / ``oracle_adversarial`` (``O``).
    """
    check_eval_mode(model)
    originals, adversarials = check_image_pair(originals, adversarials)
    dtype = model_dtype(model, originals.dtype)  # a float64 model gets float64 images
    originals, adversarials = originals.to(dtype=dtype), adversarials.to(dtype=dtype)
    n = originals.shape[0]
    labels = check_labels(labels, n)
    kw = _check_attack_settings(attack)
    factors = _check_amplify(amplify)
    if clean_statistic is not None:
        if not isinstance(clean_statistic, torch.Tensor):
            raise InvalidInputError(
                f"clean_statistic must be a tensor of shape ({n},), got "
                f"{type(clean_statistic).__name__}"
            )
        if tuple(clean_statistic.reshape(-1).shape) != (n,):
            raise InvalidInputError(
                f"clean_statistic must have shape ({n},), got {tuple(clean_statistic.shape)}"
            )
    with torch.no_grad():
        clean_logits = model(originals)
        clean_pred = clean_logits.argmax(1)
        adv_pred = model(adversarials).argmax(1)
    if bool((clean_pred != labels).any()):
        raise InvalidInputError(
            f"{int((clean_pred != labels).sum())} original(s) are misclassified; pass correctly classified examples"
        )
    if bool((adv_pred == labels).any()):
        raise InvalidInputError(
            f"{int((adv_pred == labels).sum())} adversarial(s) still have their true label; drop failed attacks first"
        )
    with _from_the_boundary(clean_logits):
        back = _attack(kw, "targeted")(model, adversarials, adv_pred, targets=labels)
        detect_adv = _attack(kw, "untargeted")(model, adversarials, adv_pred)
    if clean_statistic is None:
        clean_stat = _statistic(_attack(kw, "untargeted")(model, originals, labels))
    else:
        clean_stat = clean_statistic.double().reshape(-1)
        if clean_stat.shape != (n,):
            raise InvalidInputError(
                f"clean_statistic must have shape ({n},), got {tuple(clean_stat.shape)}"
            )
    oracle_clean = _statistic(_attack(kw, "targeted")(model, originals, labels, targets=adv_pred))
    ok = back.success.bool()
    to_original = rms_distortion(originals, back.adversarial).double()
    amplified: dict[str, torch.Tensor] = {}
    for k in factors:
        pushed = (originals + k * (adversarials - originals)).clamp(0.0, 1.0)
        with torch.no_grad():
            pushed_pred = model(pushed).argmax(1)
        still = pushed_pred != labels
        stat = torch.full((n,), torch.nan, dtype=torch.float64)
        if bool(still.any()):
            with _from_the_boundary(clean_logits):
                res = _attack(kw, "untargeted")(model, pushed[still], pushed_pred[still])
            stat[still] = _statistic(res)
        amplified[f"detector_amplified_{k:g}"] = stat
    return {
        "adversarial_class": adv_pred,
        "recovered": ok,
        "recovered_predicted": back.predicted,
        "adversarial_rms": rms_distortion(originals, adversarials).double(),
        "back_rms": _statistic(back),
        "recovered_to_original_rms": torch.where(ok, to_original, torch.nan),
        "detector_clean": clean_stat,
        "detector_adversarial": _statistic(detect_adv),
        "oracle_clean": oracle_clean,
        "oracle_adversarial": _statistic(back),
        **amplified,
    }


def summarise_recovery(
    per: Mapping[str, torch.Tensor], **bootstrap: Unpack[Bootstrap]
) -> dict[str, Any]:
    """JSON-ready summary of :func:`recover_and_detect`'s tensors (rates, medians, AUCs); the
    intervals' settings are ``bootstrap`` (:class:`Bootstrap`)."""
    from intriguing.analysis.rarity import clopper_pearson

    unknown = sorted(set(bootstrap) - set(Bootstrap.__annotations__))
    if unknown:
        raise InvalidInputError(
            f"unknown bootstrap setting(s) {', '.join(unknown)}; valid: "
            f"{', '.join(Bootstrap.__annotations__)}"
        )

    ok = per["recovered"].bool()
    n = int(ok.numel())
    adv = per["adversarial_rms"].double()
    back = per["back_rms"][ok].double()
    to_orig = per["recovered_to_original_rms"][ok].double()
    adv_ok = adv[ok]

    def med(t: torch.Tensor) -> float | None:
        return median(t) if t.numel() else None

    return {
        "n": n,
        "recovered": int(ok.sum()),
        "recovery_rate": float(ok.double().mean()) if n else None,
        "recovery_ci": list(
            clopper_pearson(int(ok.sum()), n, bootstrap.get("confidence", CONFIDENCE))
        ),
        "median_adversarial_rms": med(adv),
        "median_back_rms": med(back),
        "median_back_over_adversarial": med(back / adv_ok),
        "median_recovered_to_original_rms": med(to_orig),
        "median_recovered_to_original_over_adversarial": med(to_orig / adv_ok),
        "recovered_closer_than_adversarial": int((to_orig < adv_ok).sum()),
        "detector": separation(
            per["detector_clean"].numpy(), per["detector_adversarial"].numpy(), **bootstrap
        ),
        "oracle": separation(
            per["oracle_clean"].numpy(), per["oracle_adversarial"].numpy(), **bootstrap
        ),
        "detector_amplified": {
            key.removeprefix("detector_amplified_"): _amplified_separation(
                per["detector_clean"], value, bootstrap
            )
            for key, value in per.items()
            if key.startswith("detector_amplified_")
        },
    }


def _amplified_separation(
    clean: torch.Tensor, pushed: torch.Tensor, bootstrap: Bootstrap
) -> dict[str, Any]:
    """Detector separation on the pairs whose amplified image is still adversarial."""
    keep = ~torch.isnan(pushed)
    out: dict[str, Any] = {"still_adversarial": int(keep.sum()), "n": int(keep.numel())}
    if int(keep.sum()) == 0:
        return out
    sep = separation(clean[keep].numpy(), pushed[keep].numpy(), **bootstrap)
    return {**out, **sep}
