"""Fused CPU kernels for :class:`~intriguing.attacks.optim.BoxLBFGS`'s per-step work (issue 18).

On a CPU the eager torch step of the optimiser costs several times the model's own forward and
backward pass on small models: dozens of elementwise passes over the ``(B, D)`` state, two batched
products with the ``(B, 2m, D)`` curvature memory that BLAS runs far below its speed on such thin
matrices, and hundreds of small operator calls (docs/attack.md, "Fused CPU kernels"). These
kernels do the same arithmetic one slot at a time, each slot's rows and memory read while they
sit in the cache, compiled by numba:

- :func:`trial_sq_distances`: ``||xt - anchor||^2`` of the evaluated slots;
- :func:`observe_rows`: :meth:`BoxLBFGS.observe` for the evaluated slots (the pair ``(s, y_L)``
  and its products, the Armijo test, the move to the trial point, the gradient, free-variable mask
  and projected gradient there, the stage's end or a backtracking step);
- :func:`direction_rows`: the pending pairs into the memory (and their Gram rows), the L-BFGS
  direction in the compact form, the first step length and the new trial point.

They implement the formulas of :mod:`intriguing.attacks.optim` (its docstring is the reference)
and make the same decisions; sums round differently (row dot products accumulate in float64 here,
memory products in float32 in a different order than BLAS), so iterates agree to rounding, and an
attack's results to about 1e-4 relative (``tests/test_optim_fused.py`` holds them to the torch
step). Arrays are the optimiser's tensors seen through ``Tensor.numpy()`` (no copies) and are
written in place. Only the ``reassoc`` and ``contract`` fast-math flags are set: NaN and infinity
keep their meaning, so non-finite losses and gradients are still caught. Compiled code is cached
on disk by numba (first use: a few seconds).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"}, boundscheck=False)


@_jit
def trial_sq_distances(xt, anchor, rows, out):
    """``out[b] = ||xt[b] - anchor[b]||^2`` (float64) for ``b`` in ``rows``."""
    D = xt.shape[1]
    for b in rows:
        acc = 0.0
        for j in range(D):
            r = np.float64(xt[b, j] - anchor[b, j])
            acc += r * r
        out[b] = acc


@_jit
def observe_rows(
    rows,
    L,
    G,
    state,
    counters,
    flags,
    settings,
    events,
):
    """One evaluation's bookkeeping for the evaluated ``rows`` (``BoxLBFGS.observe``).

    ``L`` ``(b,)`` and ``G`` ``(b, D)``: the loss and its gradient at the trial points, in the
    order of ``rows``. The optimiser's arrays come grouped (every one over all slots, written in
    place): ``state = (x, xt, d, gl, anchor, pair, g, free, c, r2t, fl, r2, gtd, alpha,
    ftol_slot)``, ``counters = (evaluations, iterations, stage_iters, ls_steps)``, ``flags =
    (fresh, need_dir, pair_due, waiting, g_valid)``, ``settings = (lower, upper, eta, eps, pgtol,
    max_iter, max_ls)``. ``events`` ``(3, b)`` bool receives accepted, converged, finite.

    Per row: the pair ``s = xt - x``, ``y_L = G - gl`` into ``pair[b, :2]`` and its products; a
    finite trial is accepted at a stage's first point or under Armijo's condition, and the row
    moves there; a pair enters the memory (at the next direction) when ``s'y > eps y'y > 0`` for
    ``y = y_L + 2 c s``; the gradient ``g``, free-variable mask ``free`` (1.0 where a projected
    gradient step moves the variable) and projected gradient's infinity norm at the new ``x``;
    the stage ends at a small relative decrease, a small projected gradient, ``max_iter``
    iterations or ``max_ls`` rejected trials; a rejected trial backtracks by safeguarded
    quadratic interpolation into ``[0.1, 0.5]`` of its step.
    """
    x, xt, d, gl, anchor, pair, g, free, c, r2t, fl, r2, gtd, alpha, ftol_slot = state
    evaluations, iterations, stage_iters, ls_steps = counters
    fresh, need_dir, pair_due, waiting, g_valid = flags
    lower, upper, eta, eps, pgtol, max_iter, max_ls = settings
    D = x.shape[1]
    dt = x.dtype.type
    lo, hi = dt(lower), dt(upper)
    for k in range(len(rows)):
        b = rows[k]
        ss = 0.0
        syl = 0.0
        ylyl = 0.0
        for j in range(D):
            s = xt[b, j] - x[b, j]
            yl = G[k, j] - gl[b, j]
            pair[b, 0, j] = s
            pair[b, 1, j] = yl
            s64 = np.float64(s)
            yl64 = np.float64(yl)
            ss += s64 * s64
            syl += s64 * yl64
            ylyl += yl64 * yl64
        cb = c[b]
        f_new = L[k] + cb * r2t[b]
        f_old = fl[b] + cb * r2[b]
        finite = math.isfinite(f_new) and math.isfinite(ylyl)
        accepted = finite and (fresh[b] or f_new <= f_old + eta * gtd[b])
        stepped = accepted and not fresh[b]
        evaluations[b] += 1
        sy = syl + 2.0 * cb * ss
        yy = ylyl + 4.0 * cb * syl + 4.0 * cb * cb * ss
        pair_due[b] = stepped and sy > eps * yy and sy > 0
        if accepted:
            for j in range(D):
                x[b, j] = xt[b, j]
                gl[b, j] = G[k, j]
            fl[b] = L[k]
            r2[b] = r2t[b]
            fresh[b] = False
            ls_steps[b] = 0
        else:
            ls_steps[b] += 1
        if stepped:
            iterations[b] += 1
            stage_iters[b] += 1
        top = _gradient_row(b, cb, x, gl, anchor, g, free, lo, hi)
        g_valid[b] = True
        scale = max(abs(f_old), abs(f_new), 1.0)
        done = (stepped and f_old - f_new <= ftol_slot[b] * scale) or top <= pgtol
        done = done or stage_iters[b] >= max_iter
        converged = (accepted and done) or (not accepted and ls_steps[b] >= max_ls)
        if accepted and not done:
            need_dir[b] = True
        if converged:
            waiting[b] = True
        elif not accepted:
            _backtrack(b, f_old, f_new, x, xt, d, g, alpha, gtd, lo, hi)
        events[0, k] = accepted
        events[1, k] = converged
        events[2, k] = finite


@_jit
def _gradient_row(b, cb, x, gl, anchor, g, free, lo, hi):
    """Row ``b``'s full gradient ``g = gl + 2 c (x - anchor)`` and free-variable mask (1.0 where
    a projected gradient step moves the variable, else 0.0); returns the projected gradient's
    infinity norm ``max |clip(x - g) - x|``."""
    dt = x.dtype.type
    two_c = dt(2.0 * cb)
    top = dt(0.0)
    for j in range(x.shape[1]):
        xj = x[b, j]
        gj = gl[b, j] + two_c * (xj - anchor[b, j])
        g[b, j] = gj
        p = abs(min(max(xj - gj, lo), hi) - xj)
        free[b, j] = dt(p > 0)
        top = max(top, p)
    return top


@_jit
def _set_trial_row(b, step, x, xt, d, g, alpha, gtd, lo, hi):
    """Row ``b``'s step length ``alpha = step``, trial point ``xt = clip(x + alpha d)`` and
    ``gtd = g'(xt - x)``."""
    alpha[b] = step
    step_t = x.dtype.type(step)
    acc = 0.0
    for j in range(x.shape[1]):
        xj = x[b, j]
        t = min(max(xj + step_t * d[b, j], lo), hi)
        xt[b, j] = t
        acc += np.float64(g[b, j]) * np.float64(t - xj)
    gtd[b] = acc


@_jit
def _backtrack(b, f_old, f_new, x, xt, d, g, alpha, gtd, lo, hi):
    """Shrink row ``b``'s step by safeguarded quadratic interpolation into ``[0.1, 0.5]`` of it
    and set its new trial point (:func:`_set_trial_row`)."""
    a, slope = alpha[b], gtd[b]
    denom = 2.0 * (f_new - f_old - slope)
    interp = -slope * a / denom if denom != 0.0 else math.inf
    new = interp if math.isfinite(interp) and denom > 0 else 0.5 * a
    _set_trial_row(b, min(max(new, 0.1 * a), 0.5 * a), x, xt, d, g, alpha, gtd, lo, hi)


@_jit
def _inverse_hessian_coefficients(b, m, c, dv, SS, SYl, YlYl, time, eps, order, coef):
    """The compact-form coefficients of ``H v = gamma v + sum_i coef_i M_i`` for slot ``b``
    (``dv = M v``, ``(2m,)``; the memory rows ``M = [S; Y_L]``), in ``coef`` ``(2m,)``; returns
    ``gamma > 0``, or -1.0 where no pair passes the curvature test (then ``H = I``).

    Pairs are re-expressed for the slot's current ``c`` (``y = y_L + 2 c s``); the upper
    triangular ``R`` (in time order) is solved by substitution in the valid pairs' time order."""
    cc = c[b]
    n = 0
    for i in range(m):
        sy = SYl[b, i, i] + 2.0 * cc * SS[b, i, i]
        yy = YlYl[b, i, i] + 4.0 * cc * SYl[b, i, i] + 4.0 * cc * cc * SS[b, i, i]
        if time[b, i] >= 0 and sy > eps * yy and sy > 0:
            # insertion into order[:n] by time (ascending)
            pos = n
            while pos > 0 and time[b, order[pos - 1]] > time[b, i]:
                order[pos] = order[pos - 1]
                pos -= 1
            order[pos] = i
            n += 1
    if n == 0:
        return -1.0
    newest = order[n - 1]
    sy_n = SYl[b, newest, newest] + 2.0 * cc * SS[b, newest, newest]
    yy_n = (
        YlYl[b, newest, newest]
        + 4.0 * cc * SYl[b, newest, newest]
        + 4.0 * cc * cc * SS[b, newest, newest]
    )
    gamma = sy_n / max(yy_n, 1e-300)
    u = np.zeros(m)
    w = np.zeros(m)
    p = np.zeros(m)
    # u = R^-1 a, back substitution from the newest pair (R[i, j] = s_i' y_j, i older than j)
    for kk in range(n - 1, -1, -1):
        i = order[kk]
        acc = dv[i]
        for ll in range(kk + 1, n):
            j = order[ll]
            acc -= (SYl[b, i, j] + 2.0 * cc * SS[b, i, j]) * u[j]
        u[i] = acc / (SYl[b, i, i] + 2.0 * cc * SS[b, i, i])
    # w = D u + gamma (Y'Y u - Y'v)
    for kk in range(n):
        i = order[kk]
        yyu = 0.0
        for ll in range(n):
            j = order[ll]
            yy_ij = (
                YlYl[b, i, j]
                + 2.0 * cc * (SYl[b, i, j] + SYl[b, j, i])
                + 4.0 * cc * cc * SS[b, i, j]
            )
            yyu += yy_ij * u[j]
        yv = dv[m + i] + 2.0 * cc * dv[i]
        sy_i = SYl[b, i, i] + 2.0 * cc * SS[b, i, i]
        w[i] = sy_i * u[i] + gamma * (yyu - yv)
    # p = R^-T w, forward substitution from the oldest pair
    for kk in range(n):
        i = order[kk]
        acc = w[i]
        for ll in range(kk):
            j = order[ll]
            acc -= (SYl[b, j, i] + 2.0 * cc * SS[b, j, i]) * p[j]
        p[i] = acc / (SYl[b, i, i] + 2.0 * cc * SS[b, i, i])
    for i in range(2 * m):
        coef[i] = 0.0
    for kk in range(n):
        i = order[kk]
        q = -u[i]
        coef[i] = p[i] + 2.0 * cc * gamma * q
        coef[m + i] = gamma * q
    return gamma


@_jit
def direction_rows(
    due,
    pair_due,
    x,
    xt,
    d,
    anchor,
    gl,
    g,
    free,
    g_valid,
    pair,
    mem,
    time,
    clock,
    SS,
    SYl,
    YlYl,
    c,
    alpha,
    gtd,
    lower,
    upper,
    eps,
):
    """Pending pairs into the memory for the slots where ``pair_due``, then a new direction and
    trial point for the slots where ``due`` (``(B,)`` bool; see ``BoxLBFGS.trial``).

    A pending pair ``(s, y_L) = pair[b, 0], pair[b, 1]`` replaces the slot's oldest pair (or fills
    an empty position) and its products with the memory update the Gram matrices ``S'S``,
    ``S'Y_L``, ``Y_L'Y_L``. For a due slot: ``v = free * g`` (gradient and mask recomputed where
    ``g_valid`` is false), ``d = -free * (H v)``; where ``g'd`` is not negative (or NaN) the
    slot's memory is forgotten and ``d = -v``; the step is 1 with memory, else
    ``min(1, 1 / ||v||)``; ``xt = clip(x + alpha d)`` and ``gtd = g'(xt - x)``.

    One slot at a time: its memory is read from main memory once, for the pair's and ``v``'s
    products together, and again from the cache for ``H v``."""
    m = time.shape[1]
    B, D = x.shape
    dt = x.dtype.type
    lo, hi = dt(lower), dt(upper)
    v = np.zeros(D, dtype=x.dtype)
    dv = np.empty(2 * m)
    coef = np.empty(2 * m)
    coef_t = np.empty(2 * m, dtype=x.dtype)
    order = np.empty(m, dtype=np.int64)
    for b in range(B):
        insert, direct = pair_due[b], due[b]
        if not (insert or direct):
            continue
        vv = 0.0
        if direct:
            if not g_valid[b]:  # x or c changed since observe_rows
                _gradient_row(b, c[b], x, gl, anchor, g, free, lo, hi)
                g_valid[b] = True
            for j in range(D):
                vj = g[b, j] * free[b, j]
                v[j] = vj
                vv += np.float64(vj) * np.float64(vj)
        k = -1
        if insert:
            k = 0
            for i in range(1, m):
                if time[b, i] < time[b, k]:
                    k = i
            for j in range(D):
                mem[b, k, j] = pair[b, 0, j]
                mem[b, m + k, j] = pair[b, 1, j]
        # one pass over each memory row pair for whichever products are due (three loops rather
        # than one with all six sums, which would compute sums a slot with only a pair or only a
        # direction due does not need)
        for i in range(m):
            sS = dt(0.0)  # s' s_i
            sY = dt(0.0)  # s' yl_i
            yS = dt(0.0)  # yl' s_i
            yY = dt(0.0)  # yl' yl_i
            vS = dt(0.0)  # v' s_i
            vY = dt(0.0)  # v' yl_i
            if insert and direct:
                for j in range(D):
                    mS, mY = mem[b, i, j], mem[b, m + i, j]
                    s, yl, vj = pair[b, 0, j], pair[b, 1, j], v[j]
                    sS += s * mS
                    sY += s * mY
                    yS += yl * mS
                    yY += yl * mY
                    vS += vj * mS
                    vY += vj * mY
            elif insert:
                for j in range(D):
                    mS, mY = mem[b, i, j], mem[b, m + i, j]
                    s, yl = pair[b, 0, j], pair[b, 1, j]
                    sS += s * mS
                    sY += s * mY
                    yS += yl * mS
                    yY += yl * mY
            else:
                for j in range(D):
                    vS += v[j] * mem[b, i, j]
                    vY += v[j] * mem[b, m + i, j]
            dv[i] = vS
            dv[m + i] = vY
            if insert:
                SS[b, i, k] = sS
                SS[b, k, i] = sS
                SYl[b, i, k] = yS
                SYl[b, k, i] = sY
                YlYl[b, i, k] = yY
                YlYl[b, k, i] = yY
        if insert:
            clock[b] += 1
            time[b, k] = clock[b]
        if not direct:
            continue
        gamma = _inverse_hessian_coefficients(b, m, c, dv, SS, SYl, YlYl, time, eps, order, coef)
        has_memory = gamma > 0.0
        gd = 0.0
        if has_memory:
            for i in range(2 * m):
                coef_t[i] = dt(-coef[i])
            gamma_t = dt(-gamma)
            for j in range(D):
                d[b, j] = gamma_t * v[j]
            for i in range(2 * m):
                ci = coef_t[i]
                for j in range(D):
                    d[b, j] += ci * mem[b, i, j]
            for j in range(D):
                dj = d[b, j] * free[b, j]
                d[b, j] = dj
                gd += np.float64(g[b, j]) * np.float64(dj)
        else:
            for j in range(D):
                d[b, j] = -v[j]
                gd -= np.float64(g[b, j]) * np.float64(v[j])
        # numerically not a descent direction (g'd >= 0, or NaN where the curvature memory over-
        # or underflows): forget the memory and fall back to steepest descent
        bad = not (gd < 0.0)
        if bad:
            for j in range(D):
                d[b, j] = -v[j]
            for i in range(m):
                time[b, i] = -1
        step = 1.0
        if bad or not has_memory:
            norm = math.sqrt(vv)
            step = min(1.0 / norm, 1.0) if norm > 0 else 1.0
        _set_trial_row(b, step, x, xt, d, g, alpha, gtd, lo, hi)
