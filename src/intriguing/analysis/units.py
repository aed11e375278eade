"""Unit analysis, measured: natural basis vs random directions (paper §3, Figures 1-4).

Szegedy et al. (2014, §3) showed the images ``x' = argmax_x <phi(x), v>`` of an image set for single
units ``v = e_i`` and for random directions ``v``, judged both sets "semantically coherent" by eye, and
concluded that "the natural basis is not better than a random basis". This module measures it:

1. ``phi`` -- ``(N, D)`` activations of one layer over the image set
   (:mod:`intriguing.analysis.activations`);
2. for each direction family (:mod:`intriguing.analysis.directions`) the ``k`` images with the largest
   projection ``<phi(x) - c, v>`` (``c = 0`` raw, ``c = mu`` mean-centred; optionally divided per unit
   by its standard deviation);
3. label purity, label entropy and pixel-space cosine of those ``k`` images, each against the
   random-k-subset null, and tests between families (:mod:`intriguing.analysis.coherence`);
4. the rotation curve: the same metrics for the rotated units ``Q^alpha e_i``, ``alpha`` from 0
   (natural basis) to 1 (a Haar-random orthonormal basis).

Note: subtracting the mean ``mu`` shifts every projection onto a fixed ``v`` by the same constant
``<mu, v>``, so it does *not* change which images are on top for the natural, random, rotation or
class-mean families; it changes only the PCA axes (covariance instead of second moment).
Standardising each unit (``standardise=True``) does change the random and rotated directions' top
images, because it re-weights the units.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from intriguing._io import json_safe
from intriguing.analysis import coherence as coh
from intriguing.analysis import directions as dirs
from intriguing.errors import InvalidInputError
from intriguing.progress import track

SCHEMA = "intriguing.units/1"
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class UnitsConfig:
    """Settings of one unit analysis.

    Attributes:
        families: direction families to evaluate (see :data:`directions.FAMILIES`).
        k: images kept per direction (the paper shows 8 per row).
        n_directions: directions per family (natural/rotation: that many units sampled without
            replacement, all units if the layer has fewer; pca: top axes; classmean: one per class).
        centre: subtract the mean activation (affects only the PCA axes; see the module docstring).
        standardise: divide each unit by its standard deviation over the image set.
        seed: seeds the unit sample, the random directions, the rotation and the null.
        alphas: rotation powers for the rotation curve (empty: no curve).
        n_null: random k-subsets in the Monte-Carlo null.
        n_resamples: permutations in the permutation tests.
    """

    families: tuple[str, ...] = dirs.FAMILIES
    k: int = 8
    n_directions: int = 100
    centre: bool = False
    standardise: bool = False
    seed: int = 0
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    n_null: int = 10000
    n_resamples: int = 9999

    def __post_init__(self) -> None:
        """Raise :class:`InvalidInputError` for settings that are wrong on any image set."""
        if isinstance(self.families, str):
            raise InvalidInputError(
                f"families must be a tuple of family names, got the string {self.families!r}; "
                f"write families=({self.families!r},)"
            )
        dirs.check_family_names(list(self.families))
        for name in ("k", "n_directions", "seed", "n_null", "n_resamples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidInputError(f"{name} must be an integer, got {value!r}")
        for name in ("centre", "standardise"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidInputError(
                    f"{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.seed < 0:
            raise InvalidInputError(f"seed must be >= 0, got {self.seed}")
        if self.k < 2:
            raise InvalidInputError(f"k must be at least 2 (pairwise metrics), got {self.k}")
        if self.n_directions < 2:
            raise InvalidInputError(
                f"need at least 2 directions per family, got {self.n_directions}"
            )
        if self.n_resamples < 99:
            raise InvalidInputError(f"use at least 99 permutations, got {self.n_resamples}")
        if self.n_null < 100:
            raise InvalidInputError(
                f"the null needs at least 100 random subsets, got {self.n_null}"
            )
        if isinstance(self.alphas, (str, bytes)) or any(
            isinstance(a, bool) or not isinstance(a, numbers.Real) or not np.isfinite(a)
            for a in self.alphas
        ):
            raise InvalidInputError(f"rotation alphas must be finite numbers, got {self.alphas!r}")

    def check_settings(self) -> None:
        """The checks of ``__post_init__`` again (kept for old callers; a made config passed them)."""
        self.__post_init__()

    def check_image_set(self, n_images: int, has_labels: bool) -> None:
        """Raise :class:`InvalidInputError` for settings that cannot work on this image set
        (``n_images`` images, labelled or not)."""
        if self.k >= n_images:
            raise InvalidInputError(
                f"k = {self.k} must be smaller than the image count ({n_images})"
            )
        if "classmean" in self.families and not has_labels:
            raise InvalidInputError(
                "the classmean family needs labels; drop it, or give labels (a labels file or class "
                "subfolders for --images, a 'labels' entry in a --tensors file)"
            )

    validate = check_image_set  # the old name

    def rotation_alphas(self) -> tuple[float, ...]:
        """The rotation powers drawn: the curve's alphas, and 1 for the rotation family."""
        wanted = [*self.alphas, *((1.0,) if "rotation" in self.families else ())]
        return tuple(dict.fromkeys(float(a) for a in wanted))

    def check_dimension(self, dim: int, n_images: int) -> None:
        """Raise :class:`InvalidInputError` for families that are infeasible on a ``dim``-wide layer
        over ``n_images`` images (checked before any activation is computed, where the CLI can)."""
        n_units = min(self.n_directions, int(dim))
        if "pca" in self.families:
            dirs.check_pca_size(n_images, dim)
        alphas = self.rotation_alphas()
        if alphas:
            dirs.check_rotation_size(int(dim), n_units, len(alphas))

    def as_dict(self) -> dict[str, Any]:
        """Every setting, in field order, as JSON (tuples as lists, alphas as floats)."""
        return {**json_safe(asdict(self)), "alphas": [float(a) for a in self.alphas]}


@dataclass
class FamilyResult:
    """Top-k images and their coherence for the directions of one family.

    Attributes:
        name: the family name.
        ids: one label per direction (``"unit 17"``, ``"random 3"``, ``"pc 1"``, ``"class 7"``).
        directions: ``(n, D)`` unit vectors (in the possibly standardised activation space).
        topk: ``(n, k)`` image indices, largest projection first.
        scores: ``(n, k)`` their projections.
        dead: ``(n,)`` True where the projection is constant over the image set (e.g. a dead ReLU
            unit): no image is preferred, so these are left out of the summaries and tests.
        tied: ``(n,)`` True where the k-th and (k+1)-th scores tie (e.g. a sigmoid unit saturated
            at 1.0 in float32 on more than k images); the tie is broken by a seeded random order of
            the images, so the top-k is a random draw from the tied maximisers.
        metrics: metric name -> ``(n,)`` values (purity/entropy only when labels are given).
    """

    name: str
    ids: list[str]
    directions: np.ndarray
    topk: np.ndarray
    scores: np.ndarray
    dead: np.ndarray
    tied: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def valid(self, metric: str) -> np.ndarray:
        """The metric's values over the directions that are not dead."""
        return self.metrics[metric][~self.dead]


@dataclass
class UnitsResult:
    """Everything one unit analysis measured; :meth:`to_json` gives the documented schema."""

    config: UnitsConfig
    n_images: int
    dim: int
    units: np.ndarray
    families: dict[str, FamilyResult]
    null: coh.NullSample
    null_exact_purity: dict[str, float] | None
    comparisons: list[dict[str, Any]]
    rotation_curve: dict[str, Any] | None
    metrics: tuple[str, ...]

    def to_json(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-ready dict (schema ``intriguing.units/1``, documented in ``docs/units.md``)."""
        return {
            "schema": SCHEMA,
            **(meta or {}),
            "n_images": self.n_images,
            "dim": self.dim,
            "config": self.config.as_dict(),
            "metrics": list(self.metrics),
            "null": self._null_json(),
            "families": {name: self._family_json(f) for name, f in self.families.items()},
            "comparisons": self.comparisons,
            "rotation_curve": self.rotation_curve,
        }

    def _null_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "random k-subsets of the image set, without replacement",
            "n_subsets": self.config.n_null,
        }
        for metric in self.metrics:
            values = self.null.values(metric)
            if values is not None:
                out[metric] = {
                    **coh.summarise(values),
                    **_prefixed(coh.null_thresholds(values, metric)),
                }
        if self.null_exact_purity is not None:
            out["purity_exact"] = {
                "kind": "k labels i.i.d. with the image set's class frequencies (exact)",
                **self.null_exact_purity,
            }
        return out

    def _family_json(self, family: FamilyResult) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for metric in self.metrics:
            values = family.valid(metric)
            null_values = self.null.values(metric)
            if null_values is None:
                continue
            summary[metric] = {
                **coh.summarise(values),
                "vs_null": coh.versus_null(values, null_values, metric),
            }
        rows = []
        for i, ident in enumerate(family.ids):
            row: dict[str, Any] = {
                "id": ident,
                "dead": bool(family.dead[i]),
                "tied": bool(family.tied[i]),
                "top_k": family.topk[i].tolist(),
                "scores": [float(s) for s in family.scores[i]],
            }
            for metric in self.metrics:
                row[metric] = float(family.metrics[metric][i])
            rows.append(row)
        return {
            "n_directions": len(family.ids),
            "n_dead": int(family.dead.sum()),
            "n_tied": int(family.tied.sum()),
            "summary": summary,
            "directions": rows,
        }


# --------------------------------------------------------------------------- core steps


def top_k(
    scores: np.ndarray, k: int, tiebreak: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-k images of each column of ``scores`` ``(N, n)``.

    Args:
        scores: projections, one column per direction.
        k: images kept per direction, ``1 <= k < N``.
        tiebreak: ``(N,)`` distinct ranks; among equal scores the image with the smaller rank
            comes first (default: the image index; pass a seeded permutation for random ties).

    Returns:
        ``(indices (n, k), top scores (n, k), dead (n,), tied (n,))``: indices by decreasing score;
        ``dead`` marks constant columns, ``tied`` columns whose k-th and (k+1)-th scores are equal.
    """
    s = np.asarray(scores)
    if s.ndim != 2 or not 1 <= k < s.shape[0]:
        raise InvalidInputError(
            f"top-k needs 1 <= k < N for scores of shape {s.shape}, got k = {k}"
        )
    ranks = np.arange(s.shape[0]) if tiebreak is None else np.asarray(tiebreak)
    keys = np.broadcast_to(ranks[:, None], s.shape)
    order = np.lexsort((keys, -s), axis=0)[: k + 1].T  # (n, k + 1)
    ranked = np.take_along_axis(s.T, order, axis=1)
    dead = s.max(axis=0) == s.min(axis=0)
    tied = ranked[:, k - 1] == ranked[:, k]
    return order[:, :k], ranked[:, :k], dead, tied


class Projector:
    """Projects ``phi`` (possibly memory-mapped) onto directions, after optional centring/scaling."""

    def __init__(self, phi: np.ndarray, *, centre: bool, standardise: bool) -> None:
        self.phi = phi
        mean = dirs.column_mean(phi)
        self.offset = mean if (centre or standardise) else np.zeros_like(mean)
        self.scale = np.ones_like(mean)
        if standardise:
            var = np.zeros_like(mean)
            for block in dirs.row_chunks(phi):
                var += ((block - mean) ** 2).sum(axis=0)
            std = np.sqrt(var / phi.shape[0])
            self.scale = np.where(std > 0, std, 1.0)

    def transformed_chunks(self) -> Iterator[np.ndarray]:
        """Row blocks of ``(phi - offset) / scale`` as float64."""
        for block in dirs.row_chunks(self.phi):
            yield (block - self.offset) / self.scale

    def transformed(self) -> np.ndarray:
        """The transformed activations as one float64 array (for PCA/class means)."""
        return np.concatenate(list(self.transformed_chunks()), axis=0)

    def project(self, directions: np.ndarray) -> np.ndarray:
        """Scores ``(N, n)``: ``<(phi(x) - c) / s, v_j>`` for each direction row ``v_j``."""
        return np.concatenate([b @ directions.T for b in self.transformed_chunks()], axis=0)


def _prefixed(thresholds: dict[str, float]) -> dict[str, float]:
    return {f"threshold_{key}": value for key, value in thresholds.items()}


def _build_family(
    name: str,
    projector: Projector,
    labels: np.ndarray | None,
    units: np.ndarray,
    config: UnitsConfig,
    rng: np.random.Generator,
    rotated: dirs.RotatedUnits | None,
) -> tuple[np.ndarray, list[str]]:
    """The ``(n, D)`` directions of family ``name`` and their ids."""
    dim = projector.phi.shape[1]
    if name == "natural":
        return dirs.natural_basis(dim, units), [f"unit {u}" for u in units]
    if name == "random":
        vectors = dirs.random_sphere(dim, config.n_directions, rng)
        return vectors, [f"random {i}" for i in range(len(vectors))]
    if name == "rotation":
        if rotated is None:
            rotated = dirs.RotatedUnits(dim, units, (1.0,), rng)
        return rotated.basis(1.0), [f"Q e_{u}" for u in units]
    if name == "pca":
        vectors = dirs.pca_directions(
            projector.transformed(), config.n_directions, centre=config.centre
        )
        return vectors, [f"pc {i + 1}" for i in range(len(vectors))]
    if labels is None:
        raise InvalidInputError(
            "the classmean family needs labels; drop it, or give labels (a labels file or class "
            "subfolders for --images, a 'labels' entry in a --tensors file)"
        )
    vectors, classes = dirs.classmean_directions(projector.transformed(), labels)
    return vectors, [f"class {c}" for c in classes]


@dataclass(frozen=True)
class ImageSet:
    """What every family is evaluated against: the projected activations, labels and pixels.

    Attributes:
        projector: projects phi onto directions (after optional centring/standardising).
        labels: ``(N,)`` int64 labels or None.
        unit_images: ``(N, P)`` unit-norm pixel vectors (the label-free embedding).
        n_classes: number of classes (``labels.max() + 1``; 0 without labels).
        k: images kept per direction.
        tiebreak: ``(N,)`` a seeded permutation ordering tied images.
    """

    projector: Projector
    labels: np.ndarray | None
    unit_images: np.ndarray
    n_classes: int
    k: int
    tiebreak: np.ndarray

    def evaluate(self, name: str, vectors: np.ndarray, ids: list[str]) -> FamilyResult:
        """Top-k images of each direction (rows of ``vectors``) and their coherence metrics."""
        topk, scores, dead, tied = top_k(self.projector.project(vectors), self.k, self.tiebreak)
        metrics: dict[str, np.ndarray] = {"pixel_cosine": coh.pixel_cosine(self.unit_images, topk)}
        if self.labels is not None:
            metrics["purity"] = coh.label_purity(self.labels[topk], self.n_classes)
            metrics["entropy"] = coh.label_entropy(self.labels[topk], self.n_classes)
        return FamilyResult(name, ids, vectors, topk, scores, dead, tied, metrics)


def _comparisons(
    families: dict[str, FamilyResult],
    metrics: tuple[str, ...],
    config: UnitsConfig,
) -> list[dict[str, Any]]:
    """Natural basis vs every other family (and random vs rotation), per metric."""
    pairs = [("natural", other) for other in families if other != "natural"]
    if "random" in families and "rotation" in families:
        pairs.append(("random", "rotation"))
    out = []
    for a, b in pairs:
        if a not in families:
            continue
        for metric in metrics:
            va, vb = families[a].valid(metric), families[b].valid(metric)
            if va.size < 2 or vb.size < 2:
                continue
            rng = np.random.default_rng([config.seed, 7])
            result = coh.compare_samples(va, vb, n_resamples=config.n_resamples, rng=rng)
            out.append({"a": a, "b": b, "metric": metric, **result})
    return out


def rotation_curve(
    image_set: ImageSet,
    units: np.ndarray,
    alphas: tuple[float, ...],
    generator: np.ndarray | dirs.RotatedUnits,
) -> dict[str, Any]:
    """Coherence of the rotated units ``Q^alpha e_i`` for each ``alpha`` in ``config.alphas``.

    ``generator`` is a :class:`directions.RotatedUnits` drawn for these alphas, or ``logm(Q)`` of
    the rotation (:func:`directions.rotation_generator`).
    Returns per metric the mean and a 95% normal confidence interval over the non-dead
    directions, and ``mean_abs_cos_to_unit``: the mean ``|<Q^alpha e_i, e_i>|`` (1 at ``alpha = 0``).
    """
    curve: dict[str, Any] = {
        "alphas": [float(a) for a in alphas],
        "mean_abs_cos_to_unit": [],
    }
    curve["n_dead"] = []
    curve["n_tied"] = []
    labelled = image_set.labels is not None
    for metric in (*(("purity", "entropy") if labelled else ()), "pixel_cosine"):
        curve[metric] = {"mean": [], "lo": [], "hi": []}
    for alpha in track(alphas, description="rotation curve"):
        if isinstance(generator, dirs.RotatedUnits):
            vectors = generator.basis(alpha)
        else:
            vectors = dirs.rotated_basis(generator, alpha, units)
        family = image_set.evaluate("rotation", vectors, [f"Q^{alpha:g} e_{u}" for u in units])
        curve["mean_abs_cos_to_unit"].append(dirs.mean_abs_cosine_to_basis(vectors, units))
        curve["n_dead"].append(int(family.dead.sum()))
        curve["n_tied"].append(int(family.tied.sum()))
        for metric in family.metrics:
            values = family.valid(metric)
            mean, lo, hi = coh.mean_ci(values) if values.size else (None, None, None)
            curve[metric]["mean"].append(mean)
            curve[metric]["lo"].append(lo)
            curve[metric]["hi"].append(hi)
    return curve


def check_inputs(
    phi: np.ndarray, labels: np.ndarray | None, images: np.ndarray
) -> tuple[np.ndarray | None, int]:
    """Check shapes/values; return the labels as int64 (or None) and the number of classes.

    ``phi`` must be a numeric numpy array ``(N, D)`` (memory-mapped is fine) with no NaN or infinite
    value (checked block by block), ``images`` a numeric numpy array ``(N, ...)`` with finite values.
    """
    for name, array in (("activations phi", phi), ("images", images)):
        if not isinstance(array, np.ndarray):
            raise InvalidInputError(
                f"{name} must be a numpy array, got {type(array).__name__}; "
                "convert it with np.asarray (or tensor.numpy())"
            )
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InvalidInputError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if phi.ndim != 2 or phi.shape[0] == 0 or phi.shape[1] == 0:
        raise InvalidInputError(
            f"activations must have shape (N, D) with N, D >= 1, got {phi.shape}"
        )
    if images.ndim < 1 or images.shape[0] != phi.shape[0]:
        n_images = images.shape[0] if images.ndim else 0
        raise InvalidInputError(f"{n_images} images but {phi.shape[0]} activation rows")
    for start, block in zip(range(0, phi.shape[0], 4096), dirs.row_chunks(phi), strict=True):
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise InvalidInputError(
                f"activations contain NaN or infinite values (first in row {row}); "
                "recompute them or drop those images"
            )
    if not np.isfinite(images).all():
        raise InvalidInputError("images contain NaN or infinite values; clean the data first")
    if labels is None:
        return None, 0
    y = np.asarray(labels)
    if y.shape != (phi.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError(
            f"labels must be integers of shape ({phi.shape[0]},), got {y.dtype} {y.shape}"
        )
    if y.min() < 0:
        raise InvalidInputError("labels must be non-negative class indices")
    return y.astype(np.int64), int(y.max()) + 1


def _refuse_constant(phi: np.ndarray, block: int = 4096) -> None:
    """InvalidInputError (one line) when every image has the same activations: every direction is
    then dead, and no statistic is defined (the summary held only NaN, then the CLI crashed)."""
    first = np.asarray(phi[:1], dtype=np.float64)
    for start in range(0, phi.shape[0], block):  # blocks: phi may be memory-mapped
        if not np.array_equal(
            np.asarray(phi[start : start + block], dtype=np.float64),
            np.broadcast_to(first, (min(block, phi.shape[0] - start), phi.shape[1])),
        ):
            return
    raise InvalidInputError(
        f"the layer's activations are the same for all {phi.shape[0]} images (every direction "
        "is dead: a constant layer?); choose another layer or other images"
    )


def analyse_units(
    phi: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray | None,
    config: UnitsConfig | None = None,
) -> UnitsResult:
    """Run the whole §3 measurement on precomputed activations.

    Args:
        phi: ``(N, D)`` activations (float16/32/64; may be memory-mapped).
        images: ``(N, ...)`` the images themselves, any shape per image, values in ``[0, 1]``
            (used only for the label-free pixel-cosine metric).
        labels: ``(N,)`` integer class labels, or None (then only the label-free metric).
        config: settings (defaults: all families, k = 8, 100 directions, raw phi, seed 0).
    """
    config = config or UnitsConfig()
    y, n_classes = check_inputs(phi, labels, images)
    config.check_image_set(phi.shape[0], y is not None)
    config.check_dimension(phi.shape[1], phi.shape[0])
    _refuse_constant(phi)
    families_wanted = dirs.check_family_names(list(config.families))
    unit_images = coh.unit_rows(np.asarray(images, dtype=np.float32).reshape(images.shape[0], -1))
    projector = Projector(phi, centre=config.centre, standardise=config.standardise)
    units = dirs.pick_units(
        phi.shape[1], config.n_directions, np.random.default_rng([config.seed, 1])
    )
    rotated = None
    if "rotation" in families_wanted or config.alphas:
        rotated = dirs.RotatedUnits(
            phi.shape[1], units, config.rotation_alphas(), np.random.default_rng([config.seed, 4])
        )
    tiebreak = np.random.default_rng([config.seed, 5]).permutation(phi.shape[0])
    image_set = ImageSet(projector, y, unit_images, n_classes, config.k, tiebreak)
    families: dict[str, FamilyResult] = {}
    for name in track(families_wanted, description="direction families"):
        family_rng = np.random.default_rng([config.seed, 2, dirs.FAMILIES.index(name)])
        vectors, ids = _build_family(name, projector, y, units, config, family_rng, rotated)
        families[name] = image_set.evaluate(name, vectors, ids)
    metrics = coh.METRICS if y is not None else ("pixel_cosine",)
    null = coh.monte_carlo_null(
        y, unit_images, config.k, config.n_null, np.random.default_rng([config.seed, 3]), n_classes
    )
    exact = None
    if y is not None:
        exact = coh.purity_null_summary(config.k, np.bincount(y, minlength=n_classes) / y.size)
    curve = None
    if config.alphas and rotated is not None:
        curve = rotation_curve(image_set, units, config.alphas, rotated)
    return UnitsResult(
        config=config,
        n_images=int(phi.shape[0]),
        dim=int(phi.shape[1]),
        units=units,
        families=families,
        null=null,
        null_exact_purity=exact,
        comparisons=_comparisons(families, metrics, config),
        rotation_curve=curve,
        metrics=metrics,
    )
