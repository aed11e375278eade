"""Direction families in activation space (paper §3): which ``v`` to maximise ``<phi(x), v>`` along.

Every family returns a float64 matrix ``V`` of shape ``(n, D)`` whose rows are unit vectors in the
``D``-dimensional activation space of one layer:

- ``natural``: the natural basis vectors ``e_i`` (single units) -- the paper's Figures 1 and 3;
- ``random``: directions uniform on the unit sphere ``S^{D-1}`` (a standard Gaussian vector divided by
  its norm). The paper's Figures 2 and 4 say only "a random direction v in R^n" and never name the
  distribution; the uniform one on the sphere is the rotation-invariant choice, so it is used here;
- ``rotation``: the columns ``Q^alpha e_i`` of a fractional power of a Haar-random rotation
  ``Q in SO(D)``. ``alpha = 0`` gives the natural basis, ``alpha = 1`` a Haar-random orthonormal basis
  (each column is then uniform on the sphere), values between move along the geodesic
  ``Q^alpha = expm(alpha * logm(Q))`` -- the interpolation behind the rotation curve;
- ``pca``: principal axes of phi over the image set (of the covariance if centred, of the
  uncentred second-moment matrix otherwise), largest variance first;
- ``classmean``: ``mu_c - mu`` for each class ``c`` (mean activation of the class minus the overall
  mean), a positive control that uses the labels and so should give label-pure top images.

The sign of a direction matters (the top images maximise ``<phi, v>``, not ``|<phi, v>|``). The
natural, random, rotation and class-mean families have their own sign; PCA axes have none, so each is
oriented to make the projections' third central moment non-negative (the longer tail on top).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.linalg
import scipy.stats

from intriguing.errors import InvalidInputError

FAMILIES: tuple[str, ...] = ("natural", "random", "rotation", "pca", "classmean")
MAX_ROTATION_DIM = 4096
MAX_PCA_DIM = 8192


def check_family_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """Validate a list of family names (order kept, duplicates dropped)."""
    out: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key not in FAMILIES:
            raise InvalidInputError(
                f"unknown direction family {name!r}; choose from {', '.join(FAMILIES)}"
            )
        if key not in out:
            out.append(key)
    if not out:
        raise InvalidInputError(f"no direction family given; choose from {', '.join(FAMILIES)}")
    return out


def pick_units(dim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``min(n, dim)`` units: all of them in order if ``n >= dim``, else a sorted sample."""
    _check_positive(dim, "dimension")
    _check_positive(n, "number of directions")
    if n >= dim:
        return np.arange(dim)
    return np.sort(rng.choice(dim, size=n, replace=False))


def natural_basis(dim: int, units: np.ndarray) -> np.ndarray:
    """Rows ``e_i`` for ``i`` in ``units``: shape ``(len(units), dim)``."""
    basis = np.zeros((len(units), dim))
    basis[np.arange(len(units)), units] = 1.0
    return basis


def random_sphere(dim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` directions uniform on the unit sphere in ``R^dim`` (normalised Gaussians): ``(n, dim)``."""
    _check_positive(dim, "dimension")
    _check_positive(n, "number of directions")
    g = rng.standard_normal((n, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def haar_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random rotation ``Q in SO(dim)`` (orthogonal, ``det Q = +1``): ``(dim, dim)``."""
    _check_positive(dim, "dimension")
    if dim > MAX_ROTATION_DIM:
        raise InvalidInputError(
            f"a full {dim}x{dim} rotation is too large (limit {MAX_ROTATION_DIM}); "
            "use --reduce mean or a smaller layer for the rotation family"
        )
    if dim == 1:
        return np.ones((1, 1))
    return np.asarray(scipy.stats.special_ortho_group.rvs(dim, random_state=rng), dtype=np.float64)


def rotation_generator(rotation: np.ndarray) -> np.ndarray:
    """The real skew-symmetric ``S = logm(Q)`` (principal branch) of a rotation ``Q``.

    ``expm(alpha * S)`` is then the fractional rotation ``Q^alpha``. A rotation with an eigenvalue
    -1 (probability zero for a Haar sample) has no unique real logarithm and is rejected.
    """
    q = np.asarray(rotation, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise InvalidInputError(f"a rotation must be a square matrix, got shape {q.shape}")
    if not np.allclose(q @ q.T, np.eye(q.shape[0]), atol=1e-8) or np.linalg.det(q) < 0:
        raise InvalidInputError("the matrix is not a rotation (orthogonal with determinant +1)")
    eig = np.linalg.eigvals(q)
    if np.any(np.abs(eig + 1.0) < 1e-6):
        raise InvalidInputError(
            "the rotation has an eigenvalue -1: its fractional powers are ambiguous"
        )
    log_q = scipy.linalg.logm(q)
    log_q = np.real_if_close(log_q, tol=1e6)
    skew = np.real(log_q)
    return 0.5 * (skew - skew.T)


def fractional_rotation(generator: np.ndarray, alpha: float) -> np.ndarray:
    """``Q^alpha = expm(alpha * S)`` for the generator ``S = logm(Q)``: an orthogonal ``(D, D)`` matrix.

    ``alpha = 0`` gives the identity, ``alpha = 1`` gives ``Q``; ``Q^a Q^b = Q^(a+b)``.
    """
    if not np.isfinite(alpha):
        raise InvalidInputError(f"rotation alpha must be a finite number, got {alpha}")
    return np.asarray(scipy.linalg.expm(float(alpha) * generator), dtype=np.float64)


def rotated_basis(generator: np.ndarray, alpha: float, units: np.ndarray) -> np.ndarray:
    """Rows ``(Q^alpha e_i)^T`` for ``i`` in ``units``: the rotated unit directions, ``(n, D)``."""
    rot = fractional_rotation(generator, alpha)
    return np.ascontiguousarray(rot[:, units].T)


def row_chunks(phi: np.ndarray, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Consecutive float64 row blocks of ``phi`` (works on memory-mapped float16 arrays too)."""
    for start in range(0, phi.shape[0], chunk):
        yield np.asarray(phi[start : start + chunk], dtype=np.float64)


def column_mean(phi: np.ndarray) -> np.ndarray:
    """Mean activation ``mu`` over the image set: ``(D,)`` float64."""
    total = np.zeros(phi.shape[1])
    for block in row_chunks(phi):
        total += block.sum(axis=0)
    return total / phi.shape[0]


def pca_directions(phi: np.ndarray, n: int, *, centre: bool = True) -> np.ndarray:
    """The top ``min(n, D)`` principal axes of ``phi`` (``(N, D)``), oriented by positive skew.

    With ``centre`` the axes are eigenvectors of the covariance; without, of the uncentred
    second-moment matrix ``phi^T phi / N`` (whose first axis then points roughly along the mean
    activation). The ``D x D`` matrix is accumulated in row blocks, so ``phi`` may be memory-mapped.
    """
    _check_positive(n, "number of directions")
    if phi.shape[1] > MAX_PCA_DIM:
        raise InvalidInputError(
            f"PCA of {phi.shape[1]} dimensions is too large (limit {MAX_PCA_DIM}); "
            "use --reduce mean or drop the pca family"
        )
    mean = column_mean(phi)
    second = np.zeros((phi.shape[1], phi.shape[1]))
    for block in row_chunks(phi):
        second += block.T @ block
    second /= phi.shape[0]
    if centre:
        second -= np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(second)
    order = np.argsort(eigvals)[::-1][: min(n, phi.shape[1])]
    axes = eigvecs[:, order].T
    third = np.zeros(axes.shape[0])
    for block in row_chunks(phi):
        third += (((block - mean) @ axes.T) ** 3).sum(axis=0)
    signs = np.where(third < 0, -1.0, 1.0)
    return np.ascontiguousarray(axes * signs[:, None])


def classmean_directions(phi: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along ``mu_c - mu`` for each class present: ``(C, D)`` and the class ids ``(C,)``.

    A class whose mean equals the overall mean (a zero vector) is dropped.
    """
    y = np.asarray(labels)
    if y.shape != (phi.shape[0],):
        raise InvalidInputError(f"labels must have shape ({phi.shape[0]},), got {y.shape}")
    classes = np.unique(y)
    sums = np.zeros((classes.size, phi.shape[1]))
    start = 0
    for block in row_chunks(phi):
        block_labels = y[start : start + block.shape[0]]
        start += block.shape[0]
        for i, c in enumerate(classes):
            sums[i] += block[block_labels == c].sum(axis=0)
    counts = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    mean = sums.sum(axis=0) / phi.shape[0]
    rows, kept = [], []
    for i, c in enumerate(classes):
        diff = sums[i] / counts[i] - mean
        norm = np.linalg.norm(diff)
        if norm > 1e-12 * max(1.0, float(np.linalg.norm(mean))):
            rows.append(diff / norm)
            kept.append(c)
    if not rows:
        raise InvalidInputError(
            "all class means coincide with the overall mean; no class-mean directions"
        )
    return np.stack(rows), np.asarray(kept)


def mean_abs_cosine_to_basis(directions: np.ndarray, units: np.ndarray) -> float:
    """Mean of ``|<v_j, e_{units[j]}>|``: 1 for the natural basis, about ``sqrt(2/(pi D))`` at random."""
    return float(np.mean(np.abs(directions[np.arange(len(units)), units])))


def _check_positive(value: int, what: str) -> None:
    if int(value) < 1:
        raise InvalidInputError(f"{what} must be at least 1, got {value}")
