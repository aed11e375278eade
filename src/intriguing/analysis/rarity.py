"""How rare are adversarial pockets? Random perturbations at the adversarial's own distance.

The paper (section 4.1, "Intriguing properties", discussion of the adversarial set) says that
adversarial examples have "extremely low probability" yet are "dense"; the summary-and-critique
notes "little evidence for extremely low probability of adversarial inputs". This module measures
it for one model and a set of adversarial examples ``x' = x + r`` (``x`` correctly classified):

1. **Flip probability on the sphere.** For each example, draw ``K`` directions ``u`` uniformly on the
   unit sphere of ``R^D`` (normalised standard Gaussians), move ``x`` by exactly the adversarial's L2
   distance ``rho = ||x' - x||_2`` (times an optional scale) along each direction while staying in
   ``[0, 1]^D``, and count how many of these points change the model's prediction. The per-example
   and pooled rates get exact Clopper-Pearson intervals (:func:`scipy.stats.binomtest`).
2. **Random-direction distance to the decision boundary.** Along ``M`` random directions, the L2
   distance at which the prediction first changes (a geometric grid scan, then bisection), compared
   with the adversarial's distance ``rho``.

How the box is kept (``box="rescale"``, the default). ``x + rho * u`` leaves ``[0, 1]^D`` almost
surely on MNIST (about 80% of the pixels are exactly 0 or 1, and half of the directions' coordinates
point out of the box there), so the point is taken on the *clipped ray*
``p(s) = clip(x + s * u, 0, 1)``, ``s >= 0``, at the ``s`` where ``||p(s) - x||_2 = rho`` exactly.
``||p(s) - x||^2 = sum_i min(s |u_i|, cap_i)^2`` (``cap_i = 1 - x_i`` where ``u_i > 0``, ``x_i``
where ``u_i < 0``) is continuous, non-decreasing and piecewise quadratic in ``s``, so the ``s`` is
solved in closed form between sorted breakpoints (:class:`ClippedRays`), not by iteration. Why:

- plain clipping (``box="clip"``, kept for comparison; it reports the achieved norm) throws away the
  components that point out of the box, about 40% of the norm on MNIST digits, so the random points
  would sit much closer to ``x`` than the adversarial and the flip rate would be biased low, i.e. it
  would overstate the rarity;
- rejection sampling of the uniform law on (sphere ∩ box) is hopeless: a uniform direction keeps all
  ~600 saturated pixels inside with probability about ``2^-600``;
- when the box is not active (every ``|s u_i|`` below its ``cap_i``, e.g. ``x`` strictly inside and
  ``rho < min_i cap_i``) the point is exactly ``x + rho u``: uniform on the sphere. This is the case
  the closed-form oracle tests (the spherical-cap fraction of a hyperplane at distance ``d``:
  ``P = I_{1 - (d/rho)^2}((D - 1)/2, 1/2) / 2``).

The sampled law is thus the image of the uniform direction law under the clipped-ray map: uniform
over directions, at exactly the adversarial's L2 distance, inside the box. A direction whose whole
clipped ray stays shorter than ``rho`` (it ends at a corner of the box) is *unreachable*, counted
apart and left out of the rates (it does not happen at MNIST's adversarial distances; the counts are
reported).

Conventions: images ``(N, C, H, W)`` (or any ``(N, ...)``) float32 in [0, 1]; ``D`` values per image
(784 on MNIST); distances are L2 in the JSON (``rms = l2 / sqrt(D)``, the paper's distortion, is
given as well). "Changes the label" is the package's one success rule,
:func:`intriguing.attacks.metrics.success_mask`: another class's logit leads the clean prediction's
(the true label on the correctly classified examples used) by at least ``1e-4 * max(1, max |z|)``,
so a near-tie is not a flip, as for the attack's own successes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from scipy.stats import binomtest
from torch import nn

from intriguing._io import finite_or_none
from intriguing.attacks.checks import check_eval_mode, check_image_pair, check_labels
from intriguing.attacks.metrics import median, success_mask
from intriguing.errors import InvalidInputError
from intriguing.models.user import model_dtype
from intriguing.progress import track

BoxMode = Literal["rescale", "clip"]
BOX_MODES: tuple[str, ...] = get_args(BoxMode)
# the defaults shared by RarityConfig and the functions it drives
GRID = 48  # geometric grid points of the scan along each ray
BISECT_STEPS = 30  # bisection halvings after the scan
CHUNK = 4096  # images per forward pass


# ----------------------------------------------------------------------------- statistics
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / n`` via scipy.

    Returns ``(low, high)``; ``(0.0, 1.0)`` when ``n == 0`` (nothing observed).
    """
    if n < 0 or k < 0 or k > n:
        raise InvalidInputError(f"binomial counts need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def cap_probability(d: float, rho: float, dim: int) -> float:
    """Probability that ``x + rho * u`` (``u`` uniform on the unit sphere of ``R^dim``) lies beyond a
    hyperplane at distance ``d >= 0`` from ``x``: the normalised area of a spherical cap,
    ``I_{1 - (d/rho)^2}((dim - 1)/2, 1/2) / 2`` (0 when ``d >= rho``)."""
    from scipy.special import betainc

    if dim < 2 or d < 0 or rho <= 0:
        raise InvalidInputError(
            f"cap_probability needs dim >= 2, d >= 0, rho > 0; got {dim}, {d}, {rho}"
        )
    if d >= rho:
        return 0.0
    return float(0.5 * betainc((dim - 1) / 2.0, 0.5, 1.0 - (d / rho) ** 2))


# ----------------------------------------------------------------------------- directions
def uniform_directions(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, dim)`` float64 unit vectors, uniform on the sphere (normalised Gaussians)."""
    g = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


RAY_BYTES = 512 * 2**20  # the most memory one block of clipped rays may hold
RAY_ARRAYS = 13  # (K, D) float64-sized arrays a ClippedRays block holds at once


# torch's CPU normal sampler fills 16 values at a time: blocks of a multiple of 16 values draw
# exactly the numbers of one draw (and leave the generator in the same state)
_NORMAL_GROUP = 16


def direction_blocks(count: int, dim: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """:func:`uniform_directions` ``(count, dim)`` drawn in consecutive blocks of rows, each within
    :data:`RAY_BYTES`: the same directions, bit for bit, as one draw, without holding them all
    (1000 directions of 3x224x224 take 1.2 GB; MNIST's fit in one block)."""
    rows = max(1, RAY_BYTES // (RAY_ARRAYS * 8 * dim)) // _NORMAL_GROUP * _NORMAL_GROUP
    rows = max(rows, _NORMAL_GROUP)
    start = 0
    while start < count:
        take = min(rows, count - start)
        if 0 < (count - start - take) * dim < _NORMAL_GROUP:
            take = count - start  # a last block under 16 values would be drawn differently
        yield uniform_directions(take, dim, generator)
        start += take


def ray_blocks(x: torch.Tensor, count: int, generator: torch.Generator) -> Iterator[ClippedRays]:
    """:class:`ClippedRays` from ``x`` along ``count`` uniform directions, block by block
    (:func:`direction_blocks`: 32 at a time for 3x224x224 images, where all 1000 at once held
    16 GB)."""
    for directions in direction_blocks(count, int(x.numel()), generator):
        yield ClippedRays(x, directions)


def _merged_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`flip_counts` of several blocks of directions as one (a single block unchanged)."""
    if len(parts) == 1:
        return parts[0]
    valid = sum(int(p["valid"]) for p in parts)
    norm_sum = sum(float(p["mean_norm"]) * int(p["valid"]) for p in parts if p["valid"])
    return {
        "flips": sum(int(p["flips"]) for p in parts),
        "valid": valid,
        "unreachable": sum(int(p["unreachable"]) for p in parts),
        "mean_norm": norm_sum / valid if valid else None,
    }


class ClippedRays:
    """The clipped rays ``p_k(s) = clip(x + s * u_k, 0, 1)`` from one image, parameterised by L2 norm.

    Precomputes, per direction, the sorted saturation breakpoints of
    ``g_k(s)^2 = ||p_k(s) - x||^2 = sum_i min(s |u_ki|, cap_ki)^2`` so that :meth:`at` returns the
    point at an exact L2 distance ``rho`` in closed form.

    Args:
        x: one image, any shape with ``D`` values in [0, 1].
        directions: ``(K, D)`` directions (any non-zero norm; used as given, not normalised).
    """

    def __init__(self, x: torch.Tensor, directions: torch.Tensor) -> None:
        self.shape = tuple(x.shape)
        self.x = x.reshape(-1).double()
        u = directions.double()
        if u.ndim != 2 or u.shape[1] != self.x.numel():
            raise InvalidInputError(
                f"directions must have shape (K, {self.x.numel()}), got {tuple(u.shape)}"
            )
        self.u = u
        a = u.abs()
        cap = torch.where(u > 0, 1.0 - self.x, self.x).expand_as(u)
        moving = a > 0
        t = torch.where(moving, cap / torch.where(moving, a, 1.0), torch.inf)
        t_sorted, order = torch.sort(t, dim=1)
        cap_sorted = cap.gather(1, order)
        a2_sorted = a.gather(1, order).pow(2)
        zeros = torch.zeros(u.shape[0], 1, dtype=torch.float64)
        finite = torch.isfinite(t_sorted)  # the moving coordinates; the others sort last
        # C_j: energy of the first j (saturated) coordinates; U_j: squared speed of the others
        # (a reversed cumulative sum, so that U_j is exact where few coordinates still move).
        self._c = torch.cat([zeros, torch.where(finite, cap_sorted.pow(2), 0.0).cumsum(1)], 1)
        self._u2 = torch.cat([a2_sorted.flip(1).cumsum(1).flip(1), zeros], 1)
        t_safe = torch.where(finite, t_sorted, 0.0)
        self._g2_break = torch.where(
            finite, self._c[:, 1:] + t_safe.pow(2) * self._u2[:, 1:], torch.inf
        )
        n_moving = finite.sum(1, keepdim=True)
        # (K,) L2 norm of the ray's end, the box corner where every moving pixel has saturated
        self.max_norm = self._c.gather(1, n_moving).squeeze(1).sqrt()

    def scale_for(self, rho: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray parameters ``s`` ``(K,)`` reaching L2 distance ``rho`` (scalar or ``(K,)``), and a
        ``(K,)`` bool mask of the reachable ones (``s`` is ``inf`` where unreachable)."""
        r2 = torch.as_tensor(rho, dtype=torch.float64).expand(self.u.shape[0]).pow(2)
        j = (self._g2_break <= r2[:, None]).sum(1)
        c_j = self._c.gather(1, j[:, None]).squeeze(1)
        u_j = self._u2.gather(1, j[:, None]).squeeze(1)
        reachable = (r2 <= self.max_norm.pow(2)) & (u_j > 0)
        s = torch.where(
            reachable, ((r2 - c_j).clamp_min(0.0) / u_j.clamp_min(1e-300)).sqrt(), torch.inf
        )
        return s, reachable

    def at(self, rho: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Points ``(K, *image_shape)`` float32 at L2 distance ``rho`` along each ray, and the
        reachable mask ``(K,)``; an unreachable ray returns its end (the box corner)."""
        s, reachable = self.scale_for(rho)
        s_finite = torch.where(reachable, s, 1e6)
        points = (self.x + s_finite[:, None] * self.u).clamp(0.0, 1.0)
        return points.float().reshape(-1, *self.shape), reachable

    def clipped(self, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain clipping ``clip(x + rho * u)``: points ``(K, *shape)`` and achieved L2 norms ``(K,)``."""
        points = (self.x + rho * self.u).clamp(0.0, 1.0)
        return points.float().reshape(-1, *self.shape), (points - self.x).norm(dim=1)


# ----------------------------------------------------------------------------- model helpers
@torch.no_grad()
def _changed(model: nn.Module, points: torch.Tensor, label: int, chunk: int) -> torch.Tensor:
    """``(K,)`` bool: the model's prediction on ``points`` is no longer strictly ``label``."""
    out = []
    points = points.to(dtype=model_dtype(model, points.dtype))  # the rays are float32
    for i in range(0, points.shape[0], chunk):
        logits = model(points[i : i + chunk])
        labels = torch.full((logits.shape[0],), label, dtype=torch.int64)
        out.append(success_mask(logits, labels, None))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


# ----------------------------------------------------------------------------- per example
@dataclass(frozen=True)
class RarityConfig:
    """Settings of :func:`measure_rarity`.

    Attributes:
        samples: directions per example for the flip probability (``K``).
        scales: radii as multiples of each adversarial's L2 distance (1.0: the paper's question).
        ray_directions: directions per example for the boundary distance (``M``; 0 skips it).
        grid: geometric grid points of the scan along each ray.
        bisect_steps: bisection halvings after the scan (relative bracket ``2^-steps``).
        box: ``"rescale"`` (exact norm on the clipped ray) or ``"clip"`` (see the module docstring).
        confidence: level of the Clopper-Pearson intervals.
        seed: seed of the directions (example ``i`` uses ``seed + i``: reproducible per example).
        chunk: images per forward pass.
    """

    samples: int = 1000
    scales: tuple[float, ...] = (1.0,)
    ray_directions: int = 100
    grid: int = GRID
    bisect_steps: int = BISECT_STEPS
    box: BoxMode = "rescale"
    confidence: float = 0.95
    seed: int = 0
    chunk: int = CHUNK

    def __post_init__(self) -> None:
        """Raise InvalidInputError on an unusable setting (at construction, before any work)."""
        for name in ("samples", "ray_directions", "grid", "bisect_steps", "seed", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidInputError(f"{name} must be an integer, got {value!r}")
        if not isinstance(self.scales, tuple | list) or not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) for s in self.scales
        ):
            raise InvalidInputError(f"scales must be a tuple of numbers, got {self.scales!r}")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, numbers.Real):
            raise InvalidInputError(f"confidence must be a number, got {self.confidence!r}")
        if self.samples < 1:
            raise InvalidInputError(f"samples must be >= 1, got {self.samples}")
        if not self.scales or any(not (math.isfinite(s) and s > 0) for s in self.scales):
            raise InvalidInputError(f"scales must be positive numbers, got {list(self.scales)}")
        if len({f"{s:g}" for s in self.scales}) != len(self.scales):
            # each scale's counts are keyed by f"{scale:g}": a repeat counted its directions twice
            raise InvalidInputError(
                f"scales list a value twice (as %g): {list(self.scales)}; give each once"
            )
        if self.ray_directions < 0 or self.grid < 2 or self.bisect_steps < 1:
            raise InvalidInputError(
                "ray_directions must be >= 0, grid >= 2 and bisect_steps >= 1; "
                f"got {self.ray_directions}, {self.grid}, {self.bisect_steps}"
            )
        if self.box not in BOX_MODES:
            raise InvalidInputError(
                f"unknown box mode {self.box!r}; choose one of {', '.join(BOX_MODES)}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise InvalidInputError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.chunk < 1:
            raise InvalidInputError(f"chunk must be >= 1, got {self.chunk}")

    def check(self) -> None:
        """The checks of construction again (kept for callers before issue 17)."""
        self.__post_init__()


def flip_counts(
    model: nn.Module,
    rays: ClippedRays,
    label: int,
    rho: float,
    *,
    box: str = "rescale",
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """How many of the points at L2 distance ``rho`` from ``x`` along the rays change the label.

    Args:
        model: eval-mode model returning logits.
        rays: :class:`ClippedRays` of one image ``x`` (values in [0, 1]) and ``K`` unit directions.
        label: the class the model gives ``x``.
        rho: L2 radius (> 0).
        box: see the module docstring.

    Returns:
        ``{"flips", "valid", "unreachable", "mean_norm"}``: label changes among the ``valid``
        (reachable) points, unreachable directions, and the mean achieved L2 norm of the points.
    """
    if box == "rescale":
        points, reachable = rays.at(rho)
        norms = torch.full((points.shape[0],), float(rho), dtype=torch.float64)
    else:
        points, norms = rays.clipped(rho)
        reachable = torch.ones(points.shape[0], dtype=torch.bool)
    changed = _changed(model, points, label, chunk) & reachable
    return {
        "flips": int(changed.sum()),
        "valid": int(reachable.sum()),
        "unreachable": int((~reachable).sum()),
        "mean_norm": float(norms[reachable].mean()) if bool(reachable.any()) else None,
    }


def ray_boundary_distances(
    model: nn.Module,
    rays: ClippedRays,
    label: int,
    *,
    start: float,
    grid: int = GRID,
    bisect_steps: int = BISECT_STEPS,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """L2 distance ``(M,)`` float64 from ``x`` to the first label change along each clipped ray
    (``rays``: :class:`ClippedRays` of ``x`` and ``M`` directions).

    Scans the geometric grid ``start * q^k`` up to the largest end of the rays (a corner of the box;
    every point beyond a ray's end is that end), then bisects the first bracket ``[previous, first
    changed]`` ``bisect_steps`` times and returns its upper end. ``inf`` where the label never
    changes up to the ray's end. A crossing that enters and leaves between two grid points is not
    seen (the first crossing at the grid's resolution).
    """
    if start <= 0:
        raise InvalidInputError(f"start must be > 0, got {start}")
    far = rays.max_norm.clamp_max(float(math.sqrt(rays.x.numel())))  # the box's diameter bounds it
    top = float(far.max())
    m = rays.u.shape[0]
    if top <= start:
        grid_norms = torch.tensor([top], dtype=torch.float64)
    else:
        grid_norms = torch.logspace(math.log10(start), math.log10(top), grid, dtype=torch.float64)
    low = torch.zeros(m, dtype=torch.float64)
    high = torch.full((m,), torch.inf, dtype=torch.float64)
    open_ = torch.ones(m, dtype=torch.bool)
    for rho in grid_norms:
        rho_k = torch.minimum(rho.expand(m), far)
        points, _ = rays.at(rho_k)
        idx = torch.nonzero(open_).flatten()
        if idx.numel() == 0:
            break
        changed = _changed(model, points[idx], label, chunk)
        high[idx[changed]] = rho_k[idx[changed]]
        low[idx[~changed]] = rho_k[idx[~changed]]
        open_[idx[changed]] = False
    found = torch.isfinite(high)
    idx = torch.nonzero(found).flatten()
    for _ in range(bisect_steps if idx.numel() else 0):
        mid = 0.5 * (low[idx] + high[idx])
        rho_all = low.clone()
        rho_all[idx] = mid
        points, _ = rays.at(rho_all)
        changed = _changed(model, points[idx], label, chunk)
        high[idx[changed]] = mid[changed]
        low[idx[~changed]] = mid[~changed]
    return high


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float | None]:
    if values.numel() == 0:
        return [None for _ in qs]
    # inf counts as larger than every finite value (a censored distance)
    ordered = torch.sort(torch.where(torch.isfinite(values), values, torch.inf)).values
    out: list[float | None] = []
    for q in qs:
        k = min(values.numel() - 1, max(0, math.ceil(q * values.numel()) - 1))
        v = float(ordered[k])
        out.append(finite_or_none(v))
    return out


def measure_rarity(
    model: nn.Module,
    originals: torch.Tensor,
    adversarials: torch.Tensor,
    labels: torch.Tensor,
    config: RarityConfig | None = None,
) -> dict[str, Any]:
    """Flip probabilities at the adversarial distance and random-direction boundary distances.

    Args:
        model: eval-mode model returning logits ``(N, K)``.
        originals: ``(N, ...)`` float in [0, 1], each classified as ``labels``.
        adversarials: ``(N, ...)`` float in [0, 1], the adversarial examples of ``originals``.
        labels: ``(N,)`` int64, the model's class of each original.
        config: :class:`RarityConfig`.

    Returns:
        A JSON-ready dict: ``per_example`` lists (L2 distance, flips and CIs per scale, ray
        distances' median and share below the adversarial distance), ``pooled`` rates with
        Clopper-Pearson intervals per scale, and ``rays`` summaries.
    """
    cfg = config or RarityConfig()
    check_eval_mode(model)
    originals, adversarials = check_image_pair(originals, adversarials)
    dtype = model_dtype(model, originals.dtype)  # a float64 model gets float64 images
    originals, adversarials = originals.to(dtype=dtype), adversarials.to(dtype=dtype)
    n = originals.shape[0]
    labels = check_labels(labels, n)
    dim = originals[0].numel()
    with torch.no_grad():
        clean_pred = torch.cat(
            [model(originals[i : i + cfg.chunk]).argmax(1) for i in range(0, n, cfg.chunk)]
        )
    if bool((clean_pred != labels).any()):
        bad = int((clean_pred != labels).sum())
        raise InvalidInputError(
            f"{bad} original(s) are not classified as their label; pass correctly classified examples"
        )
    l2 = (adversarials - originals).flatten(1).double().norm(dim=1)
    if bool((l2 <= 0).any()):
        raise InvalidInputError(
            f"{int((l2 <= 0).sum())} adversarial(s) equal their original; drop failed attacks first"
        )
    per: list[dict[str, Any]] = []
    ray_all: list[torch.Tensor] = []
    for i in track(range(n), total=n, description="rarity"):
        gen = torch.Generator().manual_seed(cfg.seed + i)
        rho = float(l2[i])
        entry: dict[str, Any] = {"l2": rho, "rms": rho / math.sqrt(dim), "scales": {}}
        parts: dict[float, list[dict[str, Any]]] = {scale: [] for scale in cfg.scales}
        for rays in ray_blocks(originals[i], cfg.samples, gen):
            for scale in cfg.scales:
                parts[scale].append(
                    flip_counts(
                        model, rays, int(labels[i]), rho * scale, box=cfg.box, chunk=cfg.chunk
                    )
                )
        for scale in cfg.scales:
            counts = _merged_counts(parts[scale])
            lo, hi = clopper_pearson(counts["flips"], counts["valid"], cfg.confidence)
            entry["scales"][f"{scale:g}"] = {**counts, "ci": [lo, hi]}
        if cfg.ray_directions:
            dist = torch.cat(
                [
                    ray_boundary_distances(
                        model,
                        ray_set,
                        int(labels[i]),
                        start=rho / 4.0,
                        grid=cfg.grid,
                        bisect_steps=cfg.bisect_steps,
                        chunk=cfg.chunk,
                    )
                    for ray_set in ray_blocks(originals[i], cfg.ray_directions, gen)
                ]
            )
            ray_all.append(dist / rho)
            med = _quantiles(dist, [0.5])[0]
            entry["ray"] = {
                "median_l2": med,
                "min_l2": float(dist.min()) if bool(torch.isfinite(dist).any()) else None,
                "median_ratio": None if med is None else med / rho,
                "below_adversarial": int((dist <= rho).sum()),
                "censored": int((~torch.isfinite(dist)).sum()),
            }
        per.append(entry)
    return {
        "n": n,
        "dim": dim,
        "config": {
            "samples": cfg.samples,
            "scales": list(cfg.scales),
            "ray_directions": cfg.ray_directions,
            "grid": cfg.grid,
            "bisect_steps": cfg.bisect_steps,
            "box": cfg.box,
            "confidence": cfg.confidence,
            "seed": cfg.seed,
        },
        "adversarial_rms": _summary([e["rms"] for e in per]),
        "pooled": {f"{s:g}": _pooled(per, f"{s:g}", cfg.confidence) for s in cfg.scales},
        "rays": _ray_summary(ray_all, cfg.ray_directions),
        "per_example": per,
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    t = torch.tensor(values, dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "median": median(t),
        "min": float(t.min()),
        "max": float(t.max()),
    }


def _pooled(per: list[dict[str, Any]], scale: str, confidence: float) -> dict[str, Any]:
    """Pooled flip rate over examples (CP interval conditional on the examples), and the share of
    examples with at least one flip (CP interval over the examples with a reachable direction at
    this scale, ``examples_measured``: one whose every direction is unreachable measured nothing)."""
    flips = sum(e["scales"][scale]["flips"] for e in per)
    valid = sum(e["scales"][scale]["valid"] for e in per)
    any_flip = sum(1 for e in per if e["scales"][scale]["flips"] > 0)
    measured = sum(1 for e in per if e["scales"][scale]["valid"] > 0)  # a reachable direction
    rates = [
        e["scales"][scale]["flips"] / e["scales"][scale]["valid"]
        for e in per
        if e["scales"][scale]["valid"]
    ]
    return {
        "flips": flips,
        "valid": valid,
        "unreachable": sum(e["scales"][scale]["unreachable"] for e in per),
        "rate": flips / valid if valid else None,
        "ci": list(clopper_pearson(flips, valid, confidence)),
        "examples_with_flip": any_flip,
        "examples_measured": measured,
        "examples_with_flip_ci": list(clopper_pearson(any_flip, measured, confidence)),
        "max_example_rate": max(rates) if rates else None,
        "mean_example_rate": sum(rates) / len(rates) if rates else None,
    }


def _ray_summary(ratios: list[torch.Tensor], m: int) -> dict[str, Any]:
    """Pooled random-direction distance / adversarial distance over every (example, direction)."""
    if not ratios:
        return {"directions": 0}
    r = torch.cat(ratios)
    finite = torch.isfinite(r)
    # a censored median (no boundary within reach) is larger than every finite one, not dropped
    medians = [_quantiles(x, [0.5])[0] for x in ratios]
    example_medians = torch.tensor(
        [math.inf if v is None else v for v in medians], dtype=torch.float64
    )
    q10, q50, q90 = _quantiles(r, [0.1, 0.5, 0.9])
    return {
        "directions": int(r.numel()),
        "per_example_directions": m,
        "ratio_min": float(r[finite].min()) if bool(finite.any()) else None,
        "ratio_q10": q10,
        "ratio_median": q50,
        "ratio_q90": q90,
        "median_of_example_medians": _quantiles(example_medians, [0.5])[0],
        "below_adversarial": int((r <= 1.0).sum()),
        "censored": int((~finite).sum()),
        "ratios_sample": [
            None if not math.isfinite(v) else round(v, 4) for v in r[:20000].tolist()
        ],
    }
