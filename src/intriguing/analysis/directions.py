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
  ``Q^alpha = expm(alpha * logm(Q))`` -- the interpolation behind the rotation curve. Up to
  :data:`DENSE_ROTATION_DIM` dimensions ``Q`` is drawn and ``logm``/``expm`` are taken densely
  (``O(D^3)``); above it :class:`RotatedUnits` draws the same distribution without any ``D x D``
  matrix (see :func:`subspace_rotated_units`), in ``O(D r^2)`` for ``r = n * len(alphas)``;
- ``pca``: principal axes of phi over the image set (of the covariance if centred, of the
  uncentred second-moment matrix otherwise), largest variance first; only the leading axes are
  computed (a subset eigendecomposition of the ``D x D`` matrix, or of the ``N x N`` Gram matrix
  when there are fewer images than dimensions);
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
MAX_ROTATION_DIM = 4096  # the dense Q of :func:`haar_rotation`
DENSE_ROTATION_DIM = 512  # widest layer whose rotation is drawn densely (Q, logm, expm)
MAX_ROTATION_ELEMENTS = 2**28  # float64 numbers held by the subspace rotation (2 GiB)
MAX_PCA_DIM = 8192  # largest eigenproblem of the PCA family: min(N, D)


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


def haar_rotation_angles(dim: int, rng: np.random.Generator) -> np.ndarray:
    """The rotation angles ``theta_j in [0, pi]`` of a Haar-random ``Q in SO(dim)``: ``(dim // 2,)``.

    ``Q`` is conjugate to the block-diagonal rotation by these angles in ``dim // 2`` planes (and
    a fixed axis when ``dim`` is odd). Their joint law (Weyl) is proportional to
    ``prod_{j<k} (cos t_j - cos t_k)^2`` (times ``prod_j sin^2(t_j / 2)`` for odd ``dim``): in
    ``x = 2 cos t`` a beta = 2 Jacobi ensemble, drawn exactly as the eigenvalues of a tridiagonal
    matrix with independent Beta-distributed Verblunsky coefficients (Killip and Nenciu 2004,
    Theorem 2, via the Geronimus relations) in ``O(dim^2)``, no ``dim x dim`` matrix.
    """
    _check_positive(dim, "dimension")
    m = dim // 2
    if m == 0:
        return np.zeros(0)
    k = np.arange(2 * m - 1)
    upper = (2 * m - k + 1) / 2.0 if dim % 2 else (2 * m - k - 1) / 2.0  # weight (1 - a)^(s-1)
    lower = (2 * m - k - 1) / 2.0  # weight (1 + a)^(t-1)
    verblunsky = 2.0 * rng.beta(lower, upper) - 1.0
    a = np.concatenate([[-1.0], verblunsky])  # a[j + 1] = alpha_j, alpha_{-1} = -1
    even, odd_before = a[1::2], a[0:-1:2]  # alpha_{2i}, alpha_{2i-1} for i = 0..m-1
    previous = np.concatenate([[0.0], even[:-1]])  # alpha_{2i-2} (its factor is 0 for i = 0)
    diagonal = (1 - odd_before) * even - (1 + odd_before) * previous
    off = (1 - odd_before[:-1]) * (1 - even[:-1] ** 2) * (1 + a[2::2][: m - 1])
    off = np.sqrt(np.clip(off, 0.0, None))
    x = scipy.linalg.eigvalsh_tridiagonal(diagonal, off) if m > 1 else diagonal
    return np.arccos(np.clip(x / 2.0, -1.0, 1.0))


def _rotate_planes(vectors: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate the coordinate pairs ``(2j, 2j + 1)`` of the columns of ``vectors`` ``(D, n)`` by
    ``angles[j]``; a last odd coordinate is kept."""
    out = vectors.copy()
    m = angles.size
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    first, second = vectors[0 : 2 * m : 2], vectors[1 : 2 * m : 2]
    out[0 : 2 * m : 2] = c * first - s * second
    out[1 : 2 * m : 2] = s * first + c * second
    return out


def _haar_frame(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random ``(rows, cols)`` matrix with orthonormal columns (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def subspace_work(dim: int, n_units: int, n_alphas: int) -> int:
    """Float64 numbers :func:`subspace_rotated_units` holds at once (its memory bound)."""
    rank = min(n_units * n_alphas, max(dim - n_units, 0))
    return dim * (2 * rank + n_units * (n_alphas + 1))


def subspace_rotated_units(
    dim: int, units: np.ndarray, alphas: tuple[float, ...], rng: np.random.Generator
) -> dict[float, np.ndarray]:
    """``{alpha: (n, D) rows (Q^alpha e_i)^T for i in units}`` for one Haar-random ``Q in SO(D)``.

    Exactly the law of :func:`rotated_basis` of a :func:`haar_rotation` (jointly over the units
    and alphas), without a ``D x D`` matrix: write ``Q = W R(theta) W^T`` with ``theta`` the Weyl
    angles (:func:`haar_rotation_angles`) and ``W`` Haar on ``O(D)``, independent. Only
    ``F = W^T E`` (``E``: the chosen unit vectors, ``(D, n)``; ``F`` a Haar ``n``-frame) and ``W``
    on the span of the vectors ``R(alpha theta) F`` are needed; on ``F``'s complement ``W`` is a
    Haar-random isometry onto ``E``'s complement, drawn only on the ``r <= n * len(alphas)``
    dimensions those vectors span. Cost ``O(D r^2)``.
    """
    units = np.asarray(units)
    n = units.size
    theta = haar_rotation_angles(dim, rng)
    frame = _haar_frame(dim, n, rng)  # F = W^T E
    wanted = [float(a) for a in dict.fromkeys(float(a) for a in alphas)]
    moving = [a for a in wanted if a != 0.0]
    inner: dict[float, np.ndarray] = {}
    outer = []
    for alpha in moving:
        g = _rotate_planes(frame, alpha * theta)  # R(alpha theta) F, (D, n)
        inner[alpha] = frame.T @ g  # (n, n): the part W maps onto span(E)
        outer.append(g - frame @ inner[alpha])  # in F's complement, (D, n)
    out: dict[float, np.ndarray] = {}
    if 0.0 in wanted:
        out[0.0] = natural_basis(dim, units)
    if not moving:
        return out
    stacked = np.concatenate(outer, axis=1)  # (D, n * len(moving))
    if stacked.shape[1] < dim - n:
        basis, coefficients = np.linalg.qr(stacked)  # (D, r), (r, n * len(moving))
    else:  # the whole complement of F
        basis = np.linalg.qr(frame, mode="complete")[0][:, n:]
        coefficients = basis.T @ stacked
    others = np.setdiff1d(np.arange(dim), units)
    image = np.zeros((dim, basis.shape[1]))
    image[others] = _haar_frame(others.size, basis.shape[1], rng)  # W on span(basis)
    for j, alpha in enumerate(moving):
        rows = (image @ coefficients[:, j * n : (j + 1) * n]).T  # (n, D)
        rows[:, units] += inner[alpha].T
        out[alpha] = np.ascontiguousarray(rows)
    return out


class RotatedUnits:
    """The rotated units ``Q^alpha e_i`` of one Haar-random rotation ``Q``, for given alphas.

    Up to :data:`DENSE_ROTATION_DIM` dimensions ``Q`` comes from :func:`haar_rotation` and
    ``Q^alpha`` from ``expm(alpha * logm(Q))`` (any alpha works, as before); above it the rows are
    drawn for the given ``alphas`` only, from the same law, by :func:`subspace_rotated_units`.

    Args:
        dim: the layer width ``D``.
        units: ``(n,)`` indices of the rotated units.
        alphas: the powers that :meth:`basis` will be asked for (used above the dense limit).
        rng: draws ``Q`` (a different stream of draws on the two paths).
    """

    def __init__(
        self, dim: int, units: np.ndarray, alphas: tuple[float, ...], rng: np.random.Generator
    ) -> None:
        self.dim = int(dim)
        self.units = np.asarray(units)
        self.dense = self.dim <= DENSE_ROTATION_DIM
        self._generator: np.ndarray | None = None
        self._rows: dict[float, np.ndarray] = {}
        if self.dense:
            self._generator = rotation_generator(haar_rotation(self.dim, rng))
        else:
            check_rotation_size(self.dim, self.units.size, len(set(alphas)))
            self._rows = subspace_rotated_units(self.dim, self.units, alphas, rng)

    def basis(self, alpha: float) -> np.ndarray:
        """Rows ``(Q^alpha e_i)^T`` for the units: ``(n, D)``."""
        if self._generator is not None:
            return rotated_basis(self._generator, alpha, self.units)
        if float(alpha) not in self._rows:
            raise InvalidInputError(
                f"rotation power {alpha} was not drawn (drawn: {sorted(self._rows)})"
            )
        return self._rows[float(alpha)]


def check_rotation_size(dim: int, n_units: int, n_alphas: int) -> None:
    """Refuse a rotation family/curve whose subspace draw would exceed :data:`MAX_ROTATION_ELEMENTS`."""
    if dim <= DENSE_ROTATION_DIM:
        return
    need = subspace_work(dim, n_units, n_alphas)
    if need > MAX_ROTATION_ELEMENTS:
        raise InvalidInputError(
            f"the rotation family/curve for D = {dim}, {n_units} units and {n_alphas} alphas "
            f"needs {need * 8 / 2**30:.1f} GiB (limit {MAX_ROTATION_ELEMENTS * 8 / 2**30:.0f} "
            "GiB); use fewer --n-directions or --alphas, --reduce mean, or drop the rotation "
            "family and --alphas none"
        )


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
    activation). With ``D <= N`` the ``D x D`` matrix is accumulated in row blocks (``phi`` may be
    memory-mapped) and only its leading eigenvectors are computed; with ``N < D`` they come from
    the ``N x N`` Gram matrix (the right singular vectors), and axes of zero variance -- which
    have no defined direction -- are left out, so fewer than ``n`` axes may come back.
    """
    _check_positive(n, "number of directions")
    n_rows, dim = phi.shape
    check_pca_size(n_rows, dim)
    mean = column_mean(phi)
    count = min(n, dim)
    if dim <= n_rows:
        second = np.zeros((dim, dim))
        for block in row_chunks(phi):
            second += block.T @ block
        second /= n_rows
        if centre:
            second -= np.outer(mean, mean)
        axes = _leading_eigenvectors(second, count)[1].T
    else:
        x = np.concatenate([b - mean if centre else b for b in row_chunks(phi)], axis=0)
        x /= np.sqrt(n_rows)
        values, vectors = _leading_eigenvectors(x @ x.T, min(count, n_rows))
        keep = values > max(float(values[0]), 0.0) * n_rows * np.finfo(np.float64).eps * 10
        axes = (x.T @ (vectors[:, keep] / np.sqrt(values[keep]))).T
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    third = np.zeros(axes.shape[0])
    for block in row_chunks(phi):
        third += (((block - mean) @ axes.T) ** 3).sum(axis=0)
    signs = np.where(third < 0, -1.0, 1.0)
    return np.ascontiguousarray(axes * signs[:, None])


def check_pca_size(n_rows: int, dim: int) -> None:
    """Refuse a PCA whose eigenproblem (``min(N, D)`` square) exceeds :data:`MAX_PCA_DIM`."""
    size = min(int(n_rows), int(dim))
    if size > MAX_PCA_DIM:
        raise InvalidInputError(
            f"PCA of {dim} dimensions over {n_rows} images needs a {size}x{size} eigenproblem "
            f"(limit {MAX_PCA_DIM}); use --reduce mean, --limit {MAX_PCA_DIM} or fewer images, "
            "or drop the pca family"
        )


def _leading_eigenvectors(matrix: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` largest eigenvalues ``(count,)`` (decreasing) and eigenvectors ``(m, count)``
    of a symmetric ``(m, m)`` matrix; only those are computed when ``count < m``."""
    size = matrix.shape[0]
    if count >= size:
        values, vectors = np.linalg.eigh(matrix)
    else:
        values, vectors = scipy.linalg.eigh(
            matrix, subset_by_index=[size - count, size - 1], check_finite=False
        )
    order = np.argsort(values)[::-1][:count]
    return values[order], vectors[:, order]


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
