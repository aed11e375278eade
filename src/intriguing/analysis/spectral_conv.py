"""Singular values of 2-D convolution operators (paper section 4.3, Table 5).

A convolution layer is a linear operator from ``(C, H, W)`` images to ``(D, H', W')`` feature maps.
Its operator norm (largest singular value, the upper frame bound) bounds the layer's Lipschitz
constant; its smallest singular value is the lower frame bound. This module computes them three ways:

1. **Circular boundary, exact, by FFT** (:func:`circular_conv_singular_values`). With periodic
   boundary on an ``N_h x N_w`` grid and stride ``s`` dividing ``N`` (``M = N / s``), the operator is
   block-diagonalised by the unitary 2-D DFT: for each frequency ``xi`` in ``{0..M_h-1} x {0..M_w-1}``

       A(xi)[d, (c, l)] = w_hat[d, c](xi + l * M) / sqrt(s_h * s_w),   l in {0..s_h-1} x {0..s_w-1},

   with ``w_hat`` numpy's unnormalised ``N_h x N_w`` DFT of the zero-padded (and, for dilation,
   zero-stuffed) kernel. The singular values of the operator are exactly the union over ``xi`` of the
   singular values of the ``D x (C s_h s_w)`` matrices ``A(xi)``; all of them are obtained with one
   batched :func:`torch.linalg.svdvals` call. (The paper prints a ``Delta^-2`` factor that belongs to
   another Fourier normalisation; with numpy's FFT that factor gives a value ``s`` times too small.)
   Groups make the operator block-diagonal over groups, which only adds a batch dimension.

2. **Zero padding, certified upper bound** (:func:`conv_operator_bounds`). A zero-padded (or
   ``valid``) convolution on ``N`` equals ``P_out . C . E`` where ``E`` embeds the image isometrically
   into a zero-extended grid ``N' >= N + 2p`` (rounded up to a multiple of the stride), ``C`` is the
   circular convolution on ``N'`` and ``P_out`` keeps the valid outputs (none of which wraps around).
   Hence ``||conv|| <= ||C||``: the circular value on ``N'`` is a certified upper bound.

3. **Zero padding, exact from below** (:func:`power_iteration`). Power iteration on ``A^T A`` with
   ``F.conv2d`` / ``F.conv_transpose2d``. Every iterate ``||A v|| / ||v||`` is at most ``||A||``, so
   the value returned is a certified lower bound that converges to the exact norm.

:func:`explicit_operator_matrix` builds the dense matrix of any linear map by applying it to basis
images; it is the oracle for small sizes (tests, benchmarks).

Tensor conventions: weights are PyTorch ``(D, C / groups, k_h, k_w)`` cross-correlation kernels; all
computations run in float64 unless a dtype is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from intriguing.errors import InvalidInputError

Pair = tuple[int, int]

# Largest number of complex entries of the batched per-frequency matrices handled by one svdvals
# call; beyond it the batch is split into chunks (AlexNet's layers all fit in one call).
_MAX_BATCH_ENTRIES = 32_000_000


def _pair(value: int | tuple[int, ...], name: str) -> Pair:
    """``value`` as an ``(h, w)`` pair of positive ints; a one-line error otherwise."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise InvalidInputError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return (pair[0], pair[1])


def _check_weight(weight: torch.Tensor) -> None:
    if weight.dim() != 4:
        raise InvalidInputError(
            f"convolution weight must have shape (D, C/groups, kh, kw), got {tuple(weight.shape)}"
        )
    if not torch.isfinite(weight).all():
        raise InvalidInputError("convolution weight contains NaN or infinite values")


def dilate_kernel(weight: torch.Tensor, dilation: int | tuple[int, int]) -> torch.Tensor:
    """The dense kernel equal to ``weight`` with dilation ``(d_h, d_w)``.

    ``(D, Cg, k_h, k_w)`` -> ``(D, Cg, (k_h - 1) d_h + 1, (k_w - 1) d_w + 1)`` with the taps at
    multiples of the dilation and zeros between them: a dilated kernel is a larger sparse kernel.
    """
    _check_weight(weight)
    dh, dw = _pair(dilation, "dilation")
    d_out, c_in, kh, kw = weight.shape
    dense = weight.new_zeros((d_out, c_in, (kh - 1) * dh + 1, (kw - 1) * dw + 1))
    dense[:, :, ::dh, ::dw] = weight
    return dense


def circular_conv_singular_values(
    weight: torch.Tensor,
    grid: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """All singular values of the circular-boundary strided convolution on an ``N_h x N_w`` grid.

    The operator is ``y[d, i] = sum_{c, k} w[d, c, k] x[c, (s i + dil k) mod N]`` (PyTorch's
    cross-correlation with periodic boundary), mapping ``(C, N_h, N_w)`` to ``(D, N_h/s_h, N_w/s_w)``.

    Args:
        weight: ``(D, C / groups, k_h, k_w)`` real kernel.
        grid: ``N`` or ``(N_h, N_w)``; each must be a multiple of the stride and at least the dilated
            kernel size.
        stride, dilation, groups: as in :class:`torch.nn.Conv2d`.
        dtype: real dtype of the computation (float64 by default).

    Returns:
        1-D tensor (``dtype``) of the ``groups * M_h * M_w * min(D/groups, C/groups * s_h * s_w)``
        singular values of the operator, sorted in decreasing order; these are all of its singular
        values (``min(input size, output size)`` of them).
    """
    matrices, multiplicity, scale = _frequency_matrices(
        weight, grid, stride, dilation, groups, dtype
    )
    values = _batched_svdvals(matrices) * scale  # (frequencies kept * groups, min(m, n))
    values = values.repeat_interleave(multiplicity, dim=0)
    return torch.sort(values.flatten(), descending=True).values


def circular_conv_frame_bounds(
    weight: torch.Tensor,
    grid: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """``(largest, smallest)`` singular value of the circular convolution (see above); exact."""
    matrices, _, scale = _frequency_matrices(weight, grid, stride, dilation, groups, dtype)
    values = _batched_svdvals(matrices)
    return float(values.max()) * scale, float(values.min()) * scale


def _frequency_matrices(
    weight: torch.Tensor,
    grid: int | tuple[int, int],
    stride: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The matrices ``A(xi)`` (unscaled), their multiplicities, and the scale ``1 / sqrt(s_h s_w)``.

    A real kernel has ``w_hat(-eta) = conj(w_hat(eta))``, so ``A(-xi mod M)`` is ``conj(A(xi))`` with
    its columns permuted (``l -> s - 1 - l``, or ``-l mod s`` where ``xi = 0``): same singular values.
    Only one frequency of each pair ``{xi, -xi}`` is kept; ``multiplicity`` (2, or 1 for self-paired
    frequencies) restores the full list. Matrices: ``(kept * groups, D/g, C/g * s_h * s_w)``.
    """
    _check_weight(weight)
    nh, nw = _pair(grid, "grid")
    sh, sw = _pair(stride, "stride")
    dense = dilate_kernel(weight.detach().to(dtype=dtype, device="cpu"), dilation)
    d_out, c_group, kh, kw = dense.shape
    if groups < 1 or d_out % groups:
        raise InvalidInputError(f"groups={groups} must be positive and divide {d_out} out channels")
    if nh % sh or nw % sw:
        raise InvalidInputError(
            f"circular grid {nh}x{nw} must be a multiple of the stride {sh}x{sw}"
        )
    if kh > nh or kw > nw:
        raise InvalidInputError(f"dilated kernel {kh}x{kw} is larger than the grid {nh}x{nw}")
    mh, mw = nh // sh, nw // sw
    w_hat = torch.fft.fft2(dense, s=(nh, nw))  # (D, Cg, N_h, N_w); index l*M + xi
    w_hat = w_hat.reshape(groups, d_out // groups, c_group, sh, mh, sw, mw)
    # -> (M_h * M_w, g, D/g, Cg * s_h * s_w): one matrix per frequency and group.
    per_frequency = w_hat.permute(4, 6, 0, 1, 2, 3, 5).reshape(
        mh * mw, groups, d_out // groups, c_group * sh * sw
    )
    index = torch.arange(mh * mw)
    partner = ((-(index // mw)) % mh) * mw + (-(index % mw)) % mw
    keep = index <= partner
    multiplicity = torch.where(index[keep] == partner[keep], 1, 2).repeat_interleave(groups)
    matrices = per_frequency[keep].reshape(-1, d_out // groups, c_group * sh * sw)
    return matrices, multiplicity, 1.0 / math.sqrt(sh * sw)


def _batched_svdvals(matrices: torch.Tensor) -> torch.Tensor:
    """``svdvals`` of a ``(B, m, n)`` batch: one call, or chunks of one call when it is huge."""
    per_matrix = matrices.shape[1] * matrices.shape[2]
    chunk = max(1, _MAX_BATCH_ENTRIES // max(1, per_matrix))
    if matrices.shape[0] <= chunk:
        return torch.linalg.svdvals(matrices)
    return torch.cat([torch.linalg.svdvals(part) for part in matrices.split(chunk)])


# --------------------------------------------------------------------------------------------
# The true (zero-padded) convolution: geometry, certified upper bound, power iteration.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry:
    """Everything that defines a 2-D convolution operator apart from its kernel values.

    ``pad_before`` / ``pad_after`` are per-dimension zero paddings (``padding="same"`` may be
    asymmetric); ``input_hw`` is the spatial input size the operator acts on.
    """

    input_hw: Pair
    stride: Pair
    dilation: Pair
    pad_before: Pair
    pad_after: Pair
    groups: int

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv2d, input_hw: Pair) -> ConvGeometry:
        """Geometry of ``conv`` acting on ``input_hw`` images (handles ``"same"`` / ``"valid"``)."""
        kh, kw = conv.kernel_size
        dil = _pair(tuple(conv.dilation), "dilation")
        if conv.padding == "valid":
            before: Pair = (0, 0)
            after: Pair = (0, 0)
        elif conv.padding == "same":
            total = (dil[0] * (kh - 1), dil[1] * (kw - 1))
            before = (total[0] // 2, total[1] // 2)
            after = (total[0] - before[0], total[1] - before[1])
        else:
            pad = tuple(int(p) for p in conv.padding)
            before = after = (pad[0], pad[1])
        return cls(
            input_hw=input_hw,
            stride=_pair(tuple(conv.stride), "stride"),
            dilation=dil,
            pad_before=before,
            pad_after=after,
            groups=conv.groups,
        )

    def padded_hw(self) -> Pair:
        """Spatial size after padding."""
        return (
            self.input_hw[0] + self.pad_before[0] + self.pad_after[0],
            self.input_hw[1] + self.pad_before[1] + self.pad_after[1],
        )

    def circular_grid(self, kernel_hw: Pair) -> Pair:
        """Smallest grid ``N' >= padded size`` (and >= the dilated kernel), a multiple of the stride,
        on which the circular operator contains the true one without wrap-around."""
        padded = self.padded_hw()
        dense = (
            (kernel_hw[0] - 1) * self.dilation[0] + 1,
            (kernel_hw[1] - 1) * self.dilation[1] + 1,
        )
        return (
            _round_up(max(padded[0], dense[0]), self.stride[0]),
            _round_up(max(padded[1], dense[1]), self.stride[1]),
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def zero_padded_conv(
    weight: torch.Tensor, geometry: ConvGeometry
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The bias-free zero-padded convolution ``(B, C, H, W) -> (B, D, H', W')`` as a function."""
    pb, pa = geometry.pad_before, geometry.pad_after

    def forward(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (pb[1], pa[1], pb[0], pa[0]))
        return F.conv2d(
            padded,
            weight,
            stride=geometry.stride,
            dilation=geometry.dilation,
            groups=geometry.groups,
        )

    return forward


def zero_padded_conv_transpose(
    weight: torch.Tensor, geometry: ConvGeometry
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The adjoint of :func:`zero_padded_conv`: ``(B, D, H', W') -> (B, C, H, W)``.

    ``F.conv_transpose2d`` of the same kernel onto the padded grid (``output_padding`` restores the
    rows and columns the forward stride skipped), then the padding is cropped away.
    """
    ph, pw = geometry.padded_hw()
    kh, kw = weight.shape[-2:]
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    pb = geometry.pad_before
    h, w = geometry.input_hw

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        base_h = (y.shape[-2] - 1) * sh + (kh - 1) * dh + 1
        base_w = (y.shape[-1] - 1) * sw + (kw - 1) * dw + 1
        full = F.conv_transpose2d(
            y, weight, stride=(sh, sw), dilation=(dh, dw), groups=geometry.groups
        )
        full = F.pad(full, (0, pw - base_w, 0, ph - base_h))  # uncovered tail rows/columns: zero
        return full[..., pb[0] : pb[0] + h, pb[1] : pb[1] + w]

    return adjoint


@dataclass(frozen=True)
class PowerIterationResult:
    """Outcome of :func:`power_iteration` (``method="power"``) or :func:`lanczos_norm` (``"lanczos"``).

    ``sigma`` is a certified lower bound on the operator norm (exact up to rounding) that converges to
    it: for power iteration ``||A v||`` for the final unit vector ``v``, for Lanczos the largest Ritz
    value of ``A^T A`` (below its largest eigenvalue by Cauchy interlacing). ``iterations``: the number
    of ``A^T A`` applications. ``converged``: power iteration: the relative change of successive
    estimates fell below ``tol`` within ``max_iter`` iterations (``rel_change`` is the last one);
    Lanczos: ARPACK reached its relative accuracy ``tol`` (``rel_change`` is ``None``).
    """

    sigma: float
    iterations: int
    converged: bool
    tol: float
    rel_change: float | None
    method: str = "power"

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        return {
            "method": self.method,
            "sigma": self.sigma,
            "iterations": self.iterations,
            "converged": self.converged,
            "tol": self.tol,
            "rel_change": self.rel_change,
        }


EXACT_METHODS: tuple[str, ...] = ("power", "lanczos", "none")


def exact_norm(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    method: str = "power",
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> PowerIterationResult | None:
    """The operator norm of a linear map from below, by ``method`` in :data:`EXACT_METHODS`."""
    if method == "power":
        return power_iteration(forward, adjoint, input_shape, max_iter=max_iter, tol=tol)
    if method == "lanczos":
        return lanczos_norm(forward, adjoint, input_shape, max_iter=max_iter, tol=tol)
    if method == "none":
        return None
    raise InvalidInputError(
        f"unknown exact-norm method {method!r}; choose one of {', '.join(EXACT_METHODS)}"
    )


def lanczos_norm(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    max_iter: int = 1000,
    tol: float = 1e-10,
) -> PowerIterationResult:
    """Largest singular value by implicitly restarted Lanczos (scipy's ARPACK ``svds``, ``k=1``).

    Same maps and shapes as :func:`power_iteration` (float64). Far fewer operator applications than
    power iteration when the top singular values are close (dense spectra of large convolutions).
    """
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, svds

    with torch.no_grad():
        out_shape = tuple(forward(torch.zeros((1, *input_shape), dtype=torch.float64)).shape[1:])
    n_in, n_out = math.prod(input_shape), math.prod(out_shape)
    calls = [0]

    def apply(
        fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], v: np.ndarray
    ) -> np.ndarray:
        calls[0] += 1
        tensor = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(1, *shape))
        with torch.no_grad():
            return fn(tensor).numpy().ravel()

    operator = LinearOperator(
        (n_out, n_in),
        matvec=lambda v: apply(forward, input_shape, v),
        rmatvec=lambda u: apply(adjoint, out_shape, u),
        dtype=np.float64,
    )
    if min(n_in, n_out) < 3:  # ARPACK needs k < min(shape) - 1: decompose the tiny matrix instead
        matrix = explicit_operator_matrix(forward, input_shape)
        return PowerIterationResult(
            float(torch.linalg.matrix_norm(matrix, ord=2)), 0, True, tol, None, "lanczos"
        )
    start = np.random.default_rng(0).standard_normal(min(n_in, n_out))
    try:
        sigma = svds(
            operator, k=1, tol=tol, maxiter=max_iter, v0=start, return_singular_vectors=False
        )
        value, converged = float(sigma[0]), True
    except ArpackNoConvergence as exc:
        value, converged = (
            (float(np.sqrt(np.max(exc.eigenvalues))) if len(exc.eigenvalues) else 0.0),
            False,
        )
    return PowerIterationResult(value, calls[0] // 2, converged, tol, None, "lanczos")


def power_iteration(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    max_iter: int = 1000,
    tol: float = 1e-7,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> PowerIterationResult:
    """Largest singular value of the linear map ``forward`` by power iteration on ``A^T A``.

    Args:
        forward: the linear map, applied to ``(1, *input_shape)`` tensors.
        adjoint: its transpose (``A^T``), mapping outputs back to ``(1, *input_shape)``.
        input_shape: shape of one input, e.g. ``(C, H, W)``.
        max_iter: at most this many applications of ``A^T A``.
        tol: stop when ``|sigma_k - sigma_{k-1}| <= tol * sigma_k``.
        seed: seed of the random (Gaussian) start vector.
        dtype: dtype of the iteration; the maps must accept it.

    Returns:
        :class:`PowerIterationResult`; ``sigma`` never exceeds the true norm (up to rounding).
    """
    if max_iter < 1 or not tol > 0:
        raise InvalidInputError(
            f"power iteration needs max_iter >= 1 and tol > 0, got {max_iter}, {tol}"
        )
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *input_shape), generator=generator, dtype=dtype)
    v /= v.norm()
    sigma, rel_change, iterations = 0.0, math.inf, 0
    with torch.no_grad():
        for iterations in range(1, max_iter + 1):  # noqa: B007 - used after the loop
            image = forward(v)
            new_sigma = float(image.norm())
            rel_change = abs(new_sigma - sigma) / new_sigma if new_sigma > 0 else 0.0
            sigma = new_sigma
            if new_sigma == 0.0:
                break
            back = adjoint(image)
            norm = back.norm()
            if norm == 0:
                break
            v = back / norm
            if rel_change <= tol:
                break
    return PowerIterationResult(
        sigma=sigma,
        iterations=iterations,
        converged=rel_change <= tol,
        tol=tol,
        rel_change=rel_change,
    )


def explicit_operator_matrix(
    forward: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    chunk: int = 1024,
) -> torch.Tensor:
    """The dense matrix ``(output numel, input numel)`` of a linear map, from basis images.

    Column ``j`` is ``forward(e_j)`` flattened, ``e_j`` the ``j``-th standard basis image of shape
    ``input_shape``. Cost: ``prod(input_shape)`` applications of ``forward`` (batched by ``chunk``);
    meant for small sizes (oracles and benchmarks).
    """
    n_in = math.prod(input_shape)
    columns = []
    with torch.no_grad():
        for start in range(0, n_in, chunk):
            stop = min(n_in, start + chunk)
            basis = torch.zeros((stop - start, n_in), dtype=dtype)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            columns.append(forward(basis.reshape(-1, *input_shape)).reshape(stop - start, -1))
    return torch.cat(columns).T


@dataclass(frozen=True)
class ConvBounds:
    """Frame bounds of one convolution layer on a given input size.

    ``upper``: certified upper bound on the true (zero-padded) operator norm, the circular norm on
    ``circular_grid``. ``exact``: the true operator norm by power iteration or Lanczos (certified from
    below, see ``power``), or ``None`` when skipped. ``circular_lower``: smallest singular value of the
    circular operator on ``circular_grid`` (exact for it).
    """

    upper: float
    circular_lower: float
    circular_grid: Pair
    exact: float | None
    power: PowerIterationResult | None


def conv_operator_bounds(
    weight: torch.Tensor,
    geometry: ConvGeometry,
    *,
    power_iterations: int = 1000,
    tol: float = 1e-7,
    exact_method: str = "power",
) -> ConvBounds:
    """Frame bounds of the zero-padded convolution with ``weight`` and ``geometry`` (see module doc).

    ``exact_method``: ``"power"`` (power iteration, at most ``power_iterations`` steps, relative
    change ``tol``), ``"lanczos"`` (ARPACK, relative accuracy ``tol``) or ``"none"``.
    """
    weight64 = weight.detach().to(dtype=torch.float64, device="cpu")
    grid = geometry.circular_grid((weight.shape[-2], weight.shape[-1]))
    upper, lower = circular_conv_frame_bounds(
        weight64, grid, stride=geometry.stride, dilation=geometry.dilation, groups=geometry.groups
    )
    c_in = weight.shape[1] * geometry.groups
    power = exact_norm(
        zero_padded_conv(weight64, geometry),
        zero_padded_conv_transpose(weight64, geometry),
        (c_in, *geometry.input_hw),
        method=exact_method,
        max_iter=power_iterations,
        tol=tol,
    )
    return ConvBounds(
        upper=upper,
        circular_lower=lower,
        circular_grid=grid,
        exact=power.sigma if power else None,
        power=power,
    )
