"""Batched projected L-BFGS for box-constrained problems, written in torch (used by section 4.1's attack).

:class:`BoxLBFGS` holds ``B`` independent problems ("slots"), each

    minimise_x  F_b(x) = L_b(x) + c_b * ||x - a_b||^2     subject to  lower <= x <= upper  (x in R^D)

where the caller evaluates the loss ``L_b`` and its gradient (the model's forward and backward pass) and
the optimiser adds the quadratic term with its own per-slot constant ``c_b`` and anchor ``a_b``. Every
slot has its own curvature memory, line search, step length and convergence test; slots that have
converged leave the evaluated set, and the caller may load a new problem into a free slot or change a
slot's ``c`` at any time (warm start: the iterate and the curvature memory are kept, see below).

The method is a projected quasi-Newton method in the spirit of L-BFGS-B (Byrd, Lu, Nocedal, Zhu 1995)
and of Kim, Sra and Dhillon's projected quasi-Newton (2010):

1. Free variables: a variable at a bound whose gradient points out of the box is frozen for the step;
   ``v = free * g``.
2. Direction: ``d = -free * (H v)`` with ``H`` the L-BFGS inverse-Hessian approximation built from the
   slot's last ``m`` pairs ``(s, y)``, in the compact representation of Byrd, Nocedal and Schnabel
   (1994): ``H v = gamma v + S p + gamma Y q`` where ``u = R^-1 S'v``, ``q = -u`` and
   ``p = R^-T ((D + gamma Y'Y) u - gamma Y'v)``, with ``R`` the upper triangle (in time order) of
   ``S'Y``, ``D`` its diagonal and ``gamma = s'y / y'y`` of the newest pair. The memory
   ``(B, 2m, D)`` is read twice per iteration, by batched matrix products only: once for
   ``M [s; y_L; v]`` (the new pair, stored lazily at the next direction, and ``v``) and once for
   ``M' coef``; the small ``m x m`` systems are solved in float64.
   ``g' d = -(free g)' H (free g) < 0``: a descent direction.
3. Projected backtracking line search, per slot: trial ``x(a) = clip(x + a d)``, accepted when
   ``F(x(a)) <= F(x) + eta * g'(x(a) - x)`` (Armijo along the projection arc); otherwise ``a`` shrinks
   by safeguarded quadratic interpolation into ``[0.1 a, 0.5 a]``. The first step of a slot without
   memory has ``a = min(1, 1 / ||v||_2)`` (as L-BFGS-B), later steps ``a = 1``.
4. Curvature test: a pair is stored only when ``s'y > eps * y'y`` (``eps = 1e-10``) and ``s'y > 0``.
5. Convergence (per slot and stage): ``max |clip(x - g) - x| <= pgtol`` (projected gradient), or a
   relative decrease ``(F_old - F_new) <= ftol * max(|F_old|, |F_new|, 1)``, or ``max_iter``
   iterations in the stage, or ``max_ls`` rejected trials in one line search.

Every trial point costs one evaluation of the loss and its gradient: backtracking is rare with a
quasi-Newton direction, and evaluating value and gradient together keeps every model call one batched
forward+backward over all unfinished slots.

Changing ``c`` keeps the memory valid: the stored ``y`` is split as ``y = y_L + 2 c s`` with ``y_L`` the
loss-gradient difference, so a slot's pairs are re-expressed for the new ``c`` from ``S`` and ``Y_L``
(and their small Gram matrices) without touching the ``(B, m, D)`` tensors; pairs that fail the
curvature test under the new ``c`` are ignored.

On a CPU the per-slot work of :meth:`BoxLBFGS.observe` and of the directions runs in the compiled
kernels of :mod:`intriguing.attacks.fused` (``fused=True``, the default there): the same formulas
and decisions, one slot at a time while its rows are in the cache, several times faster than the
eager torch step on small models; elsewhere (GPU) the torch step below runs.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from intriguing.attacks.arguments import check_count, check_finite, check_positive
from intriguing.errors import InvalidInputError

ETA = 1e-4  # Armijo sufficient-decrease constant
CURVATURE_EPS = 1e-10
NO_TIME = -1


@dataclass
class StepEvents:
    """What :meth:`BoxLBFGS.observe` saw for the evaluated slots (all ``(b,)`` bool, b = evaluated).

    Attributes:
        accepted: the trial point became the slot's iterate (its evaluation is the iterate's).
        converged: the slot's stage ended; the caller must :meth:`~BoxLBFGS.set_c`,
            :meth:`~BoxLBFGS.load` or :meth:`~BoxLBFGS.release` it before the next :meth:`trial`.
        finite: the loss and the gradient were finite (a non-finite trial is rejected).
    """

    accepted: torch.Tensor
    converged: torch.Tensor
    finite: torch.Tensor


class BoxLBFGS:
    """State of ``capacity`` independent box-constrained L-BFGS problems of dimension ``dim``.

    Usage (the caller owns the loop)::

        opt = BoxLBFGS(capacity, dim, device=dev)
        opt.load(slots, x0, anchor, c)
        while True:
            idx, xt = opt.trial()                    # (b,), (b, D): slots to evaluate, trial points
            if len(idx) == 0: break
            loss, grad = evaluate(xt)                # (b,), (b, D): L(xt) and dL/dx at xt
            events = opt.observe(loss, grad)
            ...                                      # events.converged: set_c / load / release

    All per-step updates are dense over the ``capacity`` slots with masks (no per-example Python
    loops, no gathers of the ``(B, 2m, D)`` memory); :meth:`compact` shrinks the state when most
    slots are free.

    Args:
        capacity: number of slots ``B``.
        dim: number of variables ``D`` per problem.
        memory: L-BFGS memory ``m`` (pairs kept per slot).
        lower, upper: the box, the same for every variable.
        max_iter: iterations per stage (a stage ends at convergence or at a ``c`` change).
        max_ls: rejected trials allowed in one line search before the stage ends.
        pgtol: projected-gradient infinity-norm tolerance.
        ftol: relative-decrease tolerance (per slot: :meth:`set_ftol` changes it until the next
            :meth:`load`).
        device, dtype: of the ``(B, D)`` state (float32 for images).
        fused: run the step's dense work in the compiled CPU kernels of
            :mod:`~intriguing.attacks.fused` (same formulas, several times faster on a CPU; sums
            round differently). ``None`` (default): on a CPU with float32 or float64 state.

    Raises:
        ValueError: ``capacity`` < 0, ``dim``, ``memory``, ``max_iter`` or ``max_ls`` < 1 (or
            not integers), a box without ``lower < upper`` (finite), ``pgtol`` or ``ftol`` not
            finite and > 0, or ``fused=True`` where the kernels cannot run.
    """

    _STATE = (
        "active",
        "waiting",
        "fresh",
        "need_dir",
        "pair_due",
        "x",
        "xt",
        "d",
        "anchor",
        "gl",
        "fl",
        "r2",
        "c",
        "ftol_slot",
        "alpha",
        "gtd",
        "ls_steps",
        "stage_iters",
        "iterations",
        "evaluations",
        "mem",
        "pair",
        "time",
        "clock",
        "SS",
        "SYl",
        "YlYl",
        "_g_valid",
    )

    def __init__(
        self,
        capacity: int,
        dim: int,
        *,
        memory: int = 10,
        lower: float = 0.0,
        upper: float = 1.0,
        max_iter: int = 100,
        max_ls: int = 20,
        pgtol: float = 1e-5,
        ftol: float = 1e-6,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        fused: bool | None = None,
    ) -> None:
        _check_settings(capacity, dim, memory, lower, upper, max_iter, max_ls, pgtol, ftol)
        self.capacity, self.dim, self.m = capacity, dim, memory
        self.lower, self.upper = float(lower), float(upper)
        self.max_iter, self.max_ls, self.pgtol, self.ftol = max_iter, max_ls, pgtol, ftol
        dev = torch.device(device)
        supported = _fused_supported(dev, dtype)
        if fused and not supported:
            raise ValueError(
                "fused=True needs a CPU device, float32 or float64 state and a working numba, "
                f"got {dev} {dtype}"
            )
        self.fused = supported if fused is None else bool(fused)
        f64, i64, flag = torch.float64, torch.long, torch.bool

        def zeros(*shape: int, kind: torch.dtype = dtype) -> torch.Tensor:
            return torch.zeros(*shape, device=dev, dtype=kind)

        B, D, m = capacity, dim, memory
        self.active = zeros(B, kind=flag)
        self.waiting = zeros(B, kind=flag)  # converged, not yet handled
        self.fresh = zeros(B, kind=flag)  # trial is the stage's start point
        self.need_dir = zeros(B, kind=flag)  # direction due before the trial
        self.pair_due = zeros(B, kind=flag)  # a pair in ``pair`` waits to enter the memory
        self.x = zeros(B, D)
        self.xt = zeros(B, D)
        self.d = zeros(B, D)
        self.anchor = zeros(B, D)
        self.gl = zeros(B, D)  # loss gradient at x
        self.fl = zeros(B, kind=f64)  # loss at x
        self.r2 = zeros(B, kind=f64)  # ||x - anchor||^2
        self.c = zeros(B, kind=f64)
        self.ftol_slot = zeros(B, kind=f64) + ftol  # per-slot relative-decrease tolerance
        self.alpha = zeros(B, kind=f64) + 1.0
        self.gtd = zeros(B, kind=f64)  # g'(xt - x) of the current trial
        self.ls_steps = zeros(B, kind=i64)
        self.stage_iters = zeros(B, kind=i64)
        self.iterations = zeros(B, kind=i64)  # since load
        self.evaluations = zeros(B, kind=i64)  # since load
        self.mem = zeros(B, 2 * m, D)  # rows [0, m): S, rows [m, 2m): Y_L
        self.pair = zeros(B, 3, D)  # the last step's s, yl, and the next direction's v (work)
        self.time = zeros(B, m, kind=i64) + NO_TIME
        self.clock = zeros(B, kind=i64)
        self.SS = zeros(B, m, m, kind=f64)
        self.SYl = zeros(B, m, m, kind=f64)  # [i, j] = s_i' yl_j
        self.YlYl = zeros(B, m, m, kind=f64)
        self._evaluated: torch.Tensor | None = None
        self._r2t: torch.Tensor | None = None  # ||xt - anchor||^2 (B,) of the current trial
        self._buffers: dict[str, torch.Tensor] = {}
        # observe() leaves the full gradient at x in _buf("g") and the free-variable mask in
        # _buf("free"); rows whose x or c changed since (load, set_c) are recomputed when needed
        self._g_valid = zeros(B, kind=flag)

    # ----------------------------------------------------------------------------------- control
    def load(
        self, slots: torch.Tensor, x0: torch.Tensor, anchor: torch.Tensor, c: torch.Tensor
    ) -> None:
        """Start new problems in ``slots`` ``(k,)`` from ``x0`` ``(k, D)`` (clipped to the box).

        The next :meth:`trial` evaluates ``x0`` itself; memory and counters are cleared.
        """
        x0 = x0.reshape(len(slots), self.dim).to(self.x.dtype).clamp(self.lower, self.upper)
        self.x[slots] = x0
        self.xt[slots] = x0
        self.anchor[slots] = anchor.reshape(len(slots), self.dim).to(self.x.dtype)
        self.c[slots] = c.to(self.c.dtype)
        self.ftol_slot[slots] = self.ftol
        self.active[slots] = True
        self.waiting[slots] = False
        self._g_valid[slots] = False
        self.fresh[slots] = True
        self.need_dir[slots] = False
        self.pair_due[slots] = False
        self.time[slots] = NO_TIME
        for counter in (
            self.ls_steps,
            self.stage_iters,
            self.iterations,
            self.evaluations,
            self.clock,
        ):
            counter[slots] = 0

    def set_ftol(self, slots: torch.Tensor, ftol: torch.Tensor | float) -> None:
        """Relative-decrease tolerance of ``slots`` from now on (default: the constructor's)."""
        self.ftol_slot[slots] = torch.as_tensor(ftol, dtype=self.ftol_slot.dtype)

    def set_c(self, slots: torch.Tensor, c: torch.Tensor) -> None:
        """Start a new stage in ``slots`` with constants ``c`` ``(k,)``, warm-started at the iterate.

        The objective value and gradient at the iterate follow from the stored loss and loss gradient,
        so no evaluation is needed; the memory is kept (re-expressed for the new ``c``).
        """
        self.c[slots] = c.to(self.c.dtype)
        self._g_valid[slots] = False
        self.waiting[slots] = False
        self.stage_iters[slots] = 0
        self.ls_steps[slots] = 0
        self.need_dir[slots] = True

    def release(self, slots: torch.Tensor) -> None:
        """Mark ``slots`` free: they are no longer evaluated."""
        self.active[slots] = False
        self.waiting[slots] = False

    def pending(self) -> torch.Tensor:
        """Slots to evaluate: active and not waiting for the caller, ``(b,)`` int64."""
        return (self.active & ~self.waiting).nonzero().squeeze(1)

    def trial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots to evaluate ``(b,)`` and their trial points ``(b, D)`` (a view when all are).

        Directions due (after an accepted step or a ``c`` change) are computed here, all at once.
        """
        due = self.need_dir & self.active & ~self.waiting
        if self.fused:
            self._direction_fused(due)
        elif bool(due.any()):
            rows = due.nonzero().squeeze(1)
            if 8 * len(rows) <= self.capacity:
                self._flush_pairs()
                self._direction_for(rows)
            else:
                self._direction_dense(due)
        else:
            self._flush_pairs()
        self.need_dir.zero_()
        idx = self.pending()
        self._evaluated = idx
        self._r2t = None
        if len(idx) == self.capacity:
            return idx, self.xt
        return idx, self.xt[idx]

    def trial_sq_distance(self) -> torch.Tensor:
        """``||xt - anchor||^2`` ``(b,)`` float64 of the trial points of the last :meth:`trial`
        (computed once: :meth:`observe` reuses it)."""
        idx = self._evaluated
        if idx is None:
            raise RuntimeError("trial_sq_distance() called without a preceding trial()")
        r2t = self._trial_r2(idx)
        return r2t if len(idx) == self.capacity else r2t[idx]

    def _trial_r2(self, idx: torch.Tensor) -> torch.Tensor:
        """``||xt - anchor||^2`` ``(B,)`` float64 (over all slots; with ``fused``, over the
        evaluated slots ``idx`` only, the others 0), cached until the next trial."""
        if self._r2t is None:
            if self.fused:
                self._r2t = torch.zeros(self.capacity, dtype=torch.float64)
                _kernels().trial_sq_distances(
                    self.xt.numpy(), self.anchor.numpy(), idx.numpy(), self._r2t.numpy()
                )
            else:
                rt = torch.sub(self.xt, self.anchor, out=self._buf("r"))
                self._r2t = _dot(rt, rt)
        return self._r2t

    def compaction_pays(self, free: int) -> bool:
        """Whether :meth:`compact` would save work with ``free`` slots free: the torch step works
        densely over every slot, so at half occupancy; the fused kernels visit only the slots
        they evaluate, so never."""
        return not self.fused and 2 * (self.capacity - free) <= self.capacity

    def compact(self) -> torch.Tensor:
        """Drop the free slots from the state; returns the kept slots' old indices ``(k,)``."""
        keep = self.active.nonzero().squeeze(1)
        for name in self._STATE:
            setattr(self, name, getattr(self, name)[keep])
        self.capacity = len(keep)
        self._buffers = {}
        self._g_valid.zero_()
        return keep

    def _buf(self, name: str) -> torch.Tensor:
        """A reusable ``(B, D)`` work tensor (fresh large allocations page-fault on every step)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] != self.capacity:
            buf = torch.empty(self.capacity, self.dim, device=self.x.device, dtype=self.x.dtype)
            self._buffers[name] = buf
        return buf

    # ----------------------------------------------------------------------------------- step
    def observe(self, loss: torch.Tensor, grad: torch.Tensor) -> StepEvents:
        """Feed the loss ``(b,)`` and loss gradient ``(b, D)`` at the trial points of :meth:`trial`."""
        idx = self._evaluated
        if idx is None:
            raise RuntimeError("observe() called without a preceding trial()")
        self._evaluated = None
        B, D = self.capacity, self.dim
        grad = grad.reshape(len(idx), D).to(self.x.dtype)
        loss = loss.detach().to(torch.float64)
        if self.fused:
            return self._observe_fused(idx, loss, grad)
        if len(idx) == B:
            G, L = grad, loss
            ev = torch.ones(B, device=grad.device, dtype=torch.bool)
        else:
            G = self._buf("G").zero_()
            G.index_copy_(0, idx, grad)
            L = torch.zeros(B, device=grad.device, dtype=torch.float64)
            L[idx] = loss
            ev = torch.zeros(B, device=grad.device, dtype=torch.bool)
            ev[idx] = True
        c = self.c
        r2t = self._trial_r2(idx)
        self._r2t = None
        f_new = L + c * r2t
        f_old = self.fl + c * self.r2

        # the pair (s, yl) of each step; y = yl + 2 c s is the full gradient difference
        s = torch.sub(self.xt, self.x, out=self.pair[:, 0])
        yl = torch.sub(G, self.gl, out=self.pair[:, 1])
        ss, syl, ylyl = _dot(s, s), _dot(s, yl), _dot(yl, yl)
        # gl is finite, so yl'yl is finite exactly when the new gradient is
        finite = torch.isfinite(f_new) & torch.isfinite(ylyl)
        armijo = f_new <= f_old + ETA * self.gtd
        accepted = ev & finite & (self.fresh | armijo)
        rejected = ev & ~accepted
        stepped = accepted & ~self.fresh
        self.evaluations += ev.long()
        sy = syl + 2.0 * c * ss
        yy = ylyl + 4.0 * c * syl + 4.0 * c * c * ss
        store = stepped & (sy > CURVATURE_EPS * yy) & (sy > 0)
        decrease = f_old - f_new
        scale = torch.maximum(torch.maximum(f_old.abs(), f_new.abs()), torch.ones_like(f_new))

        kept = (~accepted).nonzero().squeeze(1)
        self._accept_trials(accepted, kept)
        _assign_rows(self.gl, accepted, G)
        self.fl = torch.where(accepted, L, self.fl)
        self.r2 = torch.where(accepted, r2t, self.r2)
        self.fresh &= ~accepted
        self.iterations += stepped.long()
        self.stage_iters += stepped.long()
        self.ls_steps = torch.where(
            accepted, torch.zeros_like(self.ls_steps), self.ls_steps + rejected.long()
        )

        diff = self._buf("r")  # x - anchor: _trial_r2 left xt - anchor here; redo the kept rows
        if len(kept):
            diff[kept] = self.x.index_select(0, kept).sub_(self.anchor.index_select(0, kept))
        g = _gradient(self.gl, diff, c, out=self._buf("g"))
        pg = torch.sub(self.x, g, out=self._buf("p")).clamp_(self.lower, self.upper).sub_(self.x)
        pg.abs_()
        # free (1.0) where a projected gradient step would move the variable, else 0.0: the
        # next direction's mask (a float mask: bool comparisons and products are far slower on CPU)
        torch.sign(pg, out=self._buf("free"))
        self._g_valid.fill_(True)
        done = (stepped & (decrease <= self.ftol_slot * scale)) | (pg.amax(1) <= self.pgtol)
        done |= self.stage_iters >= self.max_iter
        conv_acc = accepted & done
        go_on = accepted & ~done
        give_up = rejected & (self.ls_steps >= self.max_ls)
        retry = rejected & ~give_up
        converged = conv_acc | give_up

        self.pair_due = store  # enters the memory in the next trial(), in one pass with M v
        self.need_dir |= go_on
        if bool(retry.any()):
            self._backtrack(retry, f_old, f_new, g)
        self.waiting |= converged
        return StepEvents(accepted=accepted[idx], converged=converged[idx], finite=finite[idx])

    def _observe_fused(
        self, idx: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor
    ) -> StepEvents:
        """:meth:`observe` in one call of :func:`fused.observe_rows` (the same decisions); the
        kernel reads ``loss`` and ``grad`` as contiguous arrays."""
        r2t = self._trial_r2(idx)
        self._r2t = None
        events = torch.zeros(3, len(idx), dtype=torch.bool)
        _kernels().observe_rows(
            idx.numpy(),
            loss.contiguous().numpy(),
            grad.detach().contiguous().numpy(),
            (
                *self._numpy("x", "xt", "d", "gl", "anchor", "pair"),
                self._buf("g").numpy(),
                self._buf("free").numpy(),
                self.c.numpy(),
                r2t.numpy(),
                *self._numpy("fl", "r2", "gtd", "alpha", "ftol_slot"),
            ),
            self._numpy("evaluations", "iterations", "stage_iters", "ls_steps"),
            self._numpy("fresh", "need_dir", "pair_due", "waiting", "_g_valid"),
            (
                self.lower,
                self.upper,
                ETA,
                CURVATURE_EPS,
                float(self.pgtol),
                int(self.max_iter),
                int(self.max_ls),
            ),
            events.numpy(),
        )
        return StepEvents(accepted=events[0], converged=events[1], finite=events[2])

    def _numpy(self, *names: str) -> tuple[Any, ...]:
        """The named state tensors seen as NumPy arrays (shared memory, for the kernels)."""
        return tuple(getattr(self, name).numpy() for name in names)

    def _direction_fused(self, due: torch.Tensor) -> None:
        """The pending pairs into the memory and the directions and trial points of the ``due``
        slots ``(B,)``, in :func:`fused.direction_rows` (:meth:`trial`'s work with ``fused``)."""
        if not bool((due | self.pair_due).any()):
            return
        _kernels().direction_rows(
            due.numpy(),
            *self._numpy("pair_due", "x", "xt", "d", "anchor", "gl"),
            self._buf("g").numpy(),
            self._buf("free").numpy(),
            *self._numpy("_g_valid", "pair", "mem", "time", "clock", "SS", "SYl", "YlYl"),
            *self._numpy("c", "alpha", "gtd"),
            self.lower,
            self.upper,
            CURVATURE_EPS,
        )
        self.pair_due.zero_()

    def _accept_trials(self, accepted: torch.Tensor, kept: torch.Tensor) -> None:
        """``x <- xt`` in the ``accepted`` rows ``(B,)`` (``kept`` ``(k,)``: the others). Mostly
        accepted: the buffers swap and the ``kept`` rows swap back (``xt``'s stale rows are rewritten
        by the next direction, backtrack or :meth:`load` before any use)."""
        if 2 * len(kept) > self.capacity:
            _assign_rows(self.x, accepted, self.xt)
            return
        self.x, self.xt = self.xt, self.x
        if len(kept):
            old_x = self.xt.index_select(0, kept)
            self.xt.index_copy_(0, kept, self.x.index_select(0, kept))
            self.x.index_copy_(0, kept, old_x)

    # ----------------------------------------------------------------------------------- internals
    def _flush_pairs(self) -> None:
        """Put the pending pairs (``pair_due``) into the memory (see :meth:`_insert_pairs`)."""
        if bool(self.pair_due.any()):
            self._insert_pairs(self.pair[:, :2])

    def _flush_pairs_and_mem_dot_v(self) -> torch.Tensor:
        """Flush the pending pairs and return ``M v`` ``(B, 2m)`` float64 against the updated
        memory for ``v = pair[:, 2]`` ``(B, D)``, sharing one pass over the memory."""
        if bool(self.pair_due.any()):
            return self._insert_pairs(self.pair)[:, 2]
        return _mem_dot(self.mem, self.pair[:, 2])

    def _insert_pairs(self, vectors: torch.Tensor) -> torch.Tensor:
        """Put each pending slot's pair ``(s, yl) = pair[:, 0], pair[:, 1]`` into its oldest memory
        position and update the Gram matrices; returns ``M w`` ``(B, r, 2m)`` float64 for the rows
        ``w`` of ``vectors`` ``(B, r, D)`` (``r >= 2``, starting with ``s, yl``), after the insertion.

        Deferred from :meth:`observe` to the next :meth:`trial` so that the pair's products and the
        direction's ``M v`` come from one batched product (one pass over the ``(B, 2m, D)`` memory).
        """
        m = self.m
        rows = self.pair_due.nonzero().squeeze(1)
        self.pair_due = torch.zeros_like(self.pair_due)
        k = self.time[rows].argmin(1)  # empty positions (time -1) first, else the oldest
        # row copies through flat views (index_select / index_copy_ are several times faster on
        # CPU than the equivalent advanced indexing): s -> row k, yl -> row m + k of each slot
        B, D = self.capacity, self.dim
        src = torch.stack((3 * rows, 3 * rows + 1), 1).view(-1)
        dst = torch.stack((2 * m * rows + k, 2 * m * rows + m + k), 1).view(-1)
        self.mem.view(B * 2 * m, D).index_copy_(
            0, dst, self.pair.view(B * 3, D).index_select(0, src)
        )
        products = torch.bmm(vectors, self.mem.transpose(1, 2)).double()  # (B, r, 2m)
        ps = products[rows, 0]  # (n, 2m): S's, Y_L's with the new pair in place
        py = products[rows, 1]  # (n, 2m): S'yl, Y_L'yl
        s_S, s_Y = ps[:, :m], ps[:, m:]
        y_S, y_Y = py[:, :m], py[:, m:]
        self.SS[rows, :, k] = s_S
        self.SS[rows, k, :] = s_S
        self.SYl[rows, :, k] = y_S
        self.SYl[rows, k, :] = s_Y
        self.YlYl[rows, :, k] = y_Y
        self.YlYl[rows, k, :] = y_Y
        self.clock[rows] += 1
        self.time[rows, k] = self.clock[rows]
        return products

    def _direction_dense(self, mask: torch.Tensor) -> None:
        """New direction and trial point for the slots in ``mask``, dense over all slots."""
        g, free = self._gradient_and_free()
        v = torch.mul(g, free, out=self.pair[:, 2])
        neg_hv, has_memory = _apply_inverse_hessian(
            v,
            self._flush_pairs_and_mem_dot_v(),
            self.c,
            self.SS,
            self.SYl,
            self.YlYl,
            self.time,
            self.mem,
            negate=True,
        )
        d = neg_hv.mul_(free)
        alpha, d, reset = _first_step(v, d, g, has_memory)
        reset &= mask
        if bool(reset.any()):
            self.time[reset] = NO_TIME
        if bool(mask.all()):
            self.d = d  # a fresh tensor: adopt it rather than copy
        else:
            _assign_rows(self.d, mask, d)
        self._set_trial(mask, alpha, g)

    def _gradient_and_free(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full gradient at ``x`` ``(B, D)`` and the free-variable mask ``(B, D)`` (1.0 free,
        0.0 frozen), from :meth:`observe`'s buffers, recomputed for the rows whose ``x`` or ``c``
        changed since."""
        g, free = self._buf("g"), self._buf("free")
        stale = (~self._g_valid).nonzero().squeeze(1)
        if len(stale):
            x = self.x[stale]
            gs = _gradient(self.gl[stale], x - self.anchor[stale], self.c[stale])
            g[stale] = gs
            free[stale] = (x - gs).clamp_(self.lower, self.upper).sub_(x).abs_().sign_()
            self._g_valid[stale] = True
        return g, free

    def _direction_for(self, slots: torch.Tensor) -> None:
        """New direction and trial point for ``slots`` (a few; gathers their memory)."""
        x, c = self.x[slots], self.c[slots]
        g = _gradient(self.gl[slots], x - self.anchor[slots], c)
        free = (x - g).clamp_(self.lower, self.upper) != x
        v = g * free
        mem = self.mem[slots]
        neg_hv, has_memory = _apply_inverse_hessian(
            v,
            _mem_dot(mem, v),
            c,
            self.SS[slots],
            self.SYl[slots],
            self.YlYl[slots],
            self.time[slots],
            mem,
            negate=True,
        )
        d = neg_hv * free
        alpha, d, reset = _first_step(v, d, g, has_memory)
        if bool(reset.any()):
            self.time[slots[reset]] = NO_TIME
        self.d[slots] = d
        xt = (x + alpha.to(x.dtype)[:, None] * d).clamp_(self.lower, self.upper)
        self.xt[slots] = xt
        self.alpha[slots] = alpha
        self.gtd[slots] = _dot(g, xt - x)

    def _set_trial(self, mask: torch.Tensor, alpha: torch.Tensor, g: torch.Tensor) -> None:
        """``xt = clip(x + alpha d)`` and its ``g'(xt - x)`` for the slots in ``mask``."""
        self.alpha = torch.where(mask, alpha, self.alpha)
        dtype = self.x.dtype
        if bool(mask.all()):
            xt = torch.addcmul(self.x, self.alpha.to(dtype)[:, None], self.d, out=self.xt)
            xt.clamp_(self.lower, self.upper)
            self.gtd = _dot(g, torch.sub(xt, self.x, out=self._buf("r")))
            return
        rows = mask.nonzero().squeeze(1)  # only these rows: backtracking often touches a few
        x = self.x.index_select(0, rows)
        step = self.alpha.index_select(0, rows).to(dtype)[:, None]
        xt = torch.addcmul(x, step, self.d.index_select(0, rows)).clamp_(self.lower, self.upper)
        self.xt.index_copy_(0, rows, xt)
        self.gtd = self.gtd.index_copy(0, rows, _dot(g.index_select(0, rows), xt.sub_(x)))

    def _backtrack(
        self, mask: torch.Tensor, f_old: torch.Tensor, f_new: torch.Tensor, g: torch.Tensor
    ) -> None:
        """Shrink the step of the slots in ``mask`` by safeguarded quadratic interpolation."""
        alpha, gtd = self.alpha, self.gtd
        denom = 2.0 * (f_new - f_old - gtd)
        interp = -gtd * alpha / denom
        ok = torch.isfinite(interp) & (denom > 0)
        new = torch.where(ok, interp, 0.5 * alpha)
        new = torch.minimum(torch.maximum(new, 0.1 * alpha), 0.5 * alpha)
        self._set_trial(mask, new, g)


def _check_settings(
    capacity: int,
    dim: int,
    memory: int,
    lower: float,
    upper: float,
    max_iter: int,
    max_ls: int,
    pgtol: float,
    ftol: float,
) -> None:
    """InvalidInputError (a ValueError; one line) for settings no optimiser state can hold:
    ``memory = 0`` sized the fused kernels' work arrays at nothing, and they wrote past them (a
    crashed interpreter)."""
    check_count("capacity", capacity, 0)
    for name, count in (
        ("dim", dim),
        ("memory", memory),
        ("max_iter", max_iter),
        ("max_ls", max_ls),
    ):
        check_count(name, count, 1)
    check_finite("lower", lower)
    check_finite("upper", upper)
    if not lower < upper:
        raise InvalidInputError(
            f"the box needs lower < upper, got lower={lower!r}, upper={upper!r}"
        )
    check_positive("pgtol", pgtol)
    check_positive("ftol", ftol)


def _fused_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :mod:`~intriguing.attacks.fused`'s kernels can hold this state (CPU, float32/64)
    and can be imported."""
    return device.type == "cpu" and dtype in (torch.float32, torch.float64) and _fused_importable()


@functools.cache
def _fused_importable() -> bool:
    """Whether the kernels import (numba installed and working, a writable cache for its
    compiled code); warns once when they do not."""
    try:
        _kernels()
    except (ImportError, RuntimeError, OSError) as exc:  # numba missing or broken; no cache
        warnings.warn(
            f"the optimiser's fused CPU kernels are unavailable ({type(exc).__name__}: {exc}); "
            "it runs its torch step, the same results several times slower on small models: "
            "install numba (python -m pip install -c constraints.txt numba) or, if its cache "
            "cannot be written, point NUMBA_CACHE_DIR at a writable folder",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def _kernels() -> Any:
    """The compiled kernels' module, imported on first use (numba's import and first compilation
    cost about a second; later runs load the compiled code from numba's cache)."""
    return importlib.import_module("intriguing.attacks.fused")


def _gradient(
    gl: torch.Tensor, diff: torch.Tensor, c: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Full gradient ``gl + 2 c diff`` ``(n, D)`` with ``diff = x - anchor`` (into ``out``)."""
    return torch.addcmul(gl, (2.0 * c).to(gl.dtype)[:, None], diff, out=out)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products ``(B, D), (B, D) -> (B,)`` in float64."""
    return torch.linalg.vecdot(a, b).double()


def _mem_dot(mem: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``M v`` for memories ``(n, 2m, D)`` and vectors ``(n, D)``: ``(n, 2m)`` float64.

    Written as a row-vector product ``v' M'``: CPU BLAS runs this orientation several times faster.
    """
    return torch.bmm(v[:, None, :], mem.transpose(1, 2)).squeeze(1).double()


def _assign_rows(dst: torch.Tensor, mask: torch.Tensor, src: torch.Tensor) -> None:
    """``dst[mask] = src[mask]`` for a row mask ``(n,)`` over ``(n, D)`` tensors, in place."""
    if bool(mask.all()):
        dst.copy_(src)
        return
    rows = mask.nonzero().squeeze(1)
    if len(rows):
        dst.index_copy_(0, rows, src.index_select(0, rows))


def _first_step(
    v: torch.Tensor, d: torch.Tensor, g: torch.Tensor, has_memory: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial step lengths ``(B,)`` (1 with memory, else ``min(1, 1 / ||v||)``, computed for those
    rows only); ``d`` with non-descent rows replaced by ``-v``; those rows."""
    # numerically not a descent direction (g'd >= 0, or NaN where the curvature memory over- or
    # underflows, as at an absurdly small c): fall back to steepest descent
    bad = ~(_dot(g, d) < 0)
    alpha = torch.ones_like(has_memory, dtype=torch.float64)
    short = (~has_memory | bad).nonzero().squeeze(1)
    if len(short):
        vnorm = v.index_select(0, short).norm(dim=1).double()
        first = torch.where(vnorm > 0, 1.0 / vnorm, torch.ones_like(vnorm)).clamp(max=1.0)
        alpha.index_copy_(0, short, first)
    if bool(bad.any()):
        d = torch.where(bad[:, None], -v, d)
    return alpha, d, bad


def _apply_inverse_hessian(
    v: torch.Tensor,
    dv: torch.Tensor,
    c: torch.Tensor,
    SS: torch.Tensor,
    SYl: torch.Tensor,
    YlYl: torch.Tensor,
    time: torch.Tensor,
    mem: torch.Tensor,
    *,
    negate: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``H v`` ``(n, D)`` for each row's L-BFGS matrix (compact form) and whether ``H != I`` ``(n,)``.

    ``dv = M v`` ``(n, 2m)`` (``M = [S; Y_L]`` the memory ``(n, 2m, D)``), ``c`` ``(n,)``, the Gram
    matrices ``S'S``, ``S'Y_L``, ``Y_L'Y_L`` ``(n, m, m)`` and the pairs' times ``(n, m)`` (-1: empty).
    ``negate``: return exactly ``-(H v)`` as a fresh tensor, one pass cheaper (the coefficients are
    negated before the product, which rounds symmetrically)."""
    sign = -1.0 if negate else 1.0
    m = time.shape[1]
    cc = c[:, None, None]
    SY = SYl + 2.0 * cc * SS
    YY = YlYl + 2.0 * cc * (SYl + SYl.transpose(1, 2)) + 4.0 * cc * cc * SS
    diag_sy = SY.diagonal(dim1=1, dim2=2)
    diag_yy = YY.diagonal(dim1=1, dim2=2)
    valid = (time >= 0) & (diag_sy > CURVATURE_EPS * diag_yy) & (diag_sy > 0)
    has_memory = valid.any(1)
    if not bool(has_memory.any()):
        return v * sign, has_memory
    newest = torch.where(valid, time, torch.full_like(time, NO_TIME - 1)).argmax(1, keepdim=True)
    gamma = (diag_sy.gather(1, newest) / diag_yy.gather(1, newest).clamp(min=1e-300)).squeeze(1)
    gamma = torch.where(has_memory, gamma, torch.ones_like(gamma))
    pair = valid[:, :, None] & valid[:, None, :]
    upper = time[:, :, None] <= time[:, None, :]
    eye = torch.eye(m, device=v.device, dtype=torch.float64).expand_as(SY)
    R = torch.where(pair & upper, SY, torch.zeros_like(SY)) + eye * (~valid)[:, :, None].double()
    validf = valid.double()
    a = dv[:, :m] * validf
    b = (dv[:, m:] + 2.0 * c[:, None] * dv[:, :m]) * validf
    u = torch.linalg.solve(R, a)
    w = diag_sy * validf * u + gamma[:, None] * (
        (YY * pair.double()).bmm(u[:, :, None]).squeeze(2) - b
    )
    p = torch.linalg.solve(R.transpose(1, 2), w) * validf
    q = -u * validf
    coef = torch.cat((p + 2.0 * c[:, None] * gamma[:, None] * q, gamma[:, None] * q), dim=1)
    if negate:
        coef, gamma = -coef, -gamma
    hv = coef.to(v.dtype)[:, None, :].bmm(mem).squeeze(1).addcmul_(gamma.to(v.dtype)[:, None], v)
    plain = (~has_memory).nonzero().squeeze(1)  # H = I: the result is (-)v
    if len(plain):
        hv.index_copy_(0, plain, v.index_select(0, plain).mul_(sign))
    return hv, has_memory


@dataclass
class MinimizeResult:
    """Outcome of :func:`minimize_box`: ``x`` ``(B, D)``, ``f`` ``(B,)`` and per-problem counters."""

    x: torch.Tensor
    f: torch.Tensor
    iterations: torch.Tensor
    evaluations: torch.Tensor


MINIMIZE_DEFAULTS = {"max_iter": 500, "pgtol": 1e-6, "ftol": 1e-10}  # tighter than the attack's


def minimize_box(
    fun: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    c: float | torch.Tensor = 0.0,
    anchor: torch.Tensor | None = None,
    **options: Any,
) -> MinimizeResult:
    """Minimise ``B`` independent problems ``fun_b(x) + c_b ||x - anchor_b||^2`` over ``[lower, upper]^D``.

    Args:
        fun: ``fun(idx, x)`` maps the problems' indices ``idx`` ``(b,)`` and their trial points
            ``x`` ``(b, D)`` to values ``(b,)`` and gradients ``(b, D)`` (unfinished problems only).
        x0: ``(B, D)`` starting points.
        c, anchor: the optional quadratic term (scalar or ``(B,)``; anchor defaults to ``x0``).
        options: :class:`BoxLBFGS`'s keyword settings (``memory``, ``lower``, ``upper``,
            ``max_iter``, ``max_ls``, ``pgtol``, ``ftol``, ``fused``); ``max_iter``, ``pgtol`` and ``ftol``
            default to :data:`MINIMIZE_DEFAULTS` (run to convergence), the rest to BoxLBFGS's.

    Returns:
        The final iterates, objective values and per-problem iteration/evaluation counts.

    Raises:
        ValueError: ``x0`` not ``(B, D)`` or not finite, or a setting :class:`BoxLBFGS` refuses.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must be (B, D): one row per problem, got shape {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 holds NaN or infinite values; start from finite points")
    B, D = x0.shape
    settings = {**MINIMIZE_DEFAULTS, **options}
    opt = BoxLBFGS(B, D, device=x0.device, dtype=x0.dtype, **settings)
    slots = torch.arange(B, device=x0.device)
    cc = torch.as_tensor(c, dtype=torch.float64, device=x0.device).expand(B).clone()
    opt.load(slots, x0, x0 if anchor is None else anchor, cc)
    while len(opt.pending()):
        idx, xt = opt.trial()
        value, grad = fun(idx, xt)
        opt.observe(value, grad)
    f = opt.fl + opt.c * opt.r2
    return MinimizeResult(opt.x.clone(), f, opt.iterations.clone(), opt.evaluations.clone())
