"""The fused CPU kernels of the optimiser (intriguing.attacks.fused) against the torch step and an
explicit BFGS matrix (issue 18: the kernels make the step several times cheaper on a CPU; they must
compute what the torch step computes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS
from intriguing.attacks.optim import NO_TIME, BoxLBFGS, minimize_box
from test_attack_optim import explicit_bfgs_inverse, random_box_qps

f64 = torch.float64


def one_direction(
    s: torch.Tensor, yl: torch.Tensor, time: torch.Tensor, g: torch.Tensor, c: float
) -> BoxLBFGS:
    """A one-slot fused optimiser at ``x = anchor = 0.5`` with memory ``(s, yl)`` at ``time`` and
    loss gradient ``g`` (small: no bound is active), after its next direction."""
    m, dim = s.shape
    opt = BoxLBFGS(1, dim, memory=m, dtype=f64, fused=True)
    x = torch.full((1, dim), 0.5, dtype=f64)
    opt.load(torch.arange(1), x, x, torch.tensor([c], dtype=f64))
    opt.mem[0] = torch.cat((s, yl))
    opt.time[0] = time
    opt.SS[0], opt.SYl[0], opt.YlYl[0] = s @ s.T, s @ yl.T, yl @ yl.T
    opt.gl[0] = g
    opt.fresh[0] = False
    opt.need_dir[0] = True
    opt.trial()
    return opt


def test_fused_direction_equals_explicit_bfgs_with_ring_order_and_c() -> None:
    """Pairs stored out of order (ring buffer), y = yl + 2 c s: the direction is -H g."""
    gen = torch.Generator().manual_seed(5)
    m, dim, c = 4, 9, 0.3
    s = 0.1 * torch.randn(m, dim, generator=gen, dtype=f64)
    a = torch.randn(dim, dim, generator=gen, dtype=f64)
    yl = s @ (a @ a.T + torch.eye(dim, dtype=f64))  # curvature pairs of a convex quadratic
    time = torch.tensor([3, 1, 4, 2])
    g = 0.01 * torch.randn(dim, generator=gen, dtype=f64)
    opt = one_direction(s, yl, time, g, c)
    y = yl + 2 * c * s
    order = torch.argsort(time).tolist()
    newest = order[-1]
    gamma = float(s[newest] @ y[newest] / (y[newest] @ y[newest]))
    h = explicit_bfgs_inverse([(s[i].numpy(), y[i].numpy()) for i in order], gamma)
    np.testing.assert_allclose(opt.d[0].numpy(), -h @ g.numpy(), rtol=1e-9, atol=1e-12)
    assert float(opt.alpha[0]) == 1.0  # a step of 1 with memory
    assert opt.time[0].tolist() == time.tolist()  # a descent direction keeps the memory


def test_fused_direction_ignores_invalid_pairs_and_starts_short_without_memory() -> None:
    gen = torch.Generator().manual_seed(6)
    m, dim = 3, 6
    s = 0.1 * torch.randn(m, dim, generator=gen, dtype=f64)
    yl = 2.0 * s
    yl[1] = -s[1]  # s'y < 0: fails the curvature test
    g = 0.01 * torch.randn(dim, generator=gen, dtype=f64)
    opt = one_direction(s, yl, torch.tensor([1, 2, NO_TIME]), g, 0.0)
    expected = -explicit_bfgs_inverse([(s[0].numpy(), yl[0].numpy())], 0.5) @ g.numpy()
    np.testing.assert_allclose(opt.d[0].numpy(), expected, rtol=1e-9, atol=1e-12)

    empty = one_direction(s, yl, torch.full((m,), NO_TIME), g, 0.0)
    assert torch.equal(empty.d[0], -g)
    assert float(empty.alpha[0]) == pytest.approx(min(1.0, 1.0 / float(g.norm())))


def quadratic(q: torch.Tensor, b: torch.Tensor):  # type: ignore[no-untyped-def]
    def fun(idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx = (q[idx] @ x[:, :, None]).squeeze(2)
        return 0.5 * (x * qx).sum(1) + (b[idx] * x).sum(1), qx + b[idx]

    return fun


def test_fused_step_equals_torch_step_in_every_decision() -> None:
    """Two optimisers, fused and torch, in float64 on the same box QPs, driven alike: loads into
    freed slots, c changes, rejected (non-finite) trials and backtracking. After every step their
    events, flags, counters and memory positions agree exactly, their iterates, step lengths and
    Gram matrices to rounding."""
    B, dim = 8, 12
    q, b = random_box_qps(20, dim, seed=9)
    quad = quadratic(q, b)

    def fun(idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # plus a quartic and a ripple: curvature pairs with s_i'y_j != s_j'y_i, some with s'y < 0
        value, grad = quad(idx, x)
        ripple = 0.4 * (7 * x).sin()
        return value + (x**4 + ripple).sum(1), grad + 4 * x**3 + 2.8 * (7 * x).cos()

    gen = torch.Generator().manual_seed(10)
    anchors = torch.rand(20, dim, generator=gen, dtype=f64)
    pair = [BoxLBFGS(B, dim, memory=3, max_iter=15, dtype=f64, fused=f) for f in (True, False)]
    problem = torch.full((B,), -1)
    queue, steps, stages = list(range(20)), 0, torch.zeros(B, dtype=torch.long)

    def load(slots: list[int]) -> None:
        for slot in slots:
            k = queue.pop(0)
            problem[slot] = k
            stages[slot] = 0
            for opt in pair:
                opt.load(
                    torch.tensor([slot]),
                    anchors[k : k + 1],
                    anchors[k : k + 1],
                    torch.tensor([0.5 + k / 10], dtype=f64),
                )

    load(list(range(B)))
    while True:
        trials = [opt.trial() for opt in pair]
        idx = trials[0][0]
        assert torch.equal(idx, trials[1][0])
        if len(idx) == 0:
            break
        torch.testing.assert_close(trials[0][1], trials[1][1], rtol=1e-7, atol=1e-9)
        loss, grad = fun(problem[idx], trials[0][1])
        if steps % 7 in (3, 5):  # some trials are rejected (non-finite, or too high): backtracks
            loss = loss.clone()
            loss[:2] = float("nan") if steps % 7 == 3 else loss[:2] + 10.0
        events = [opt.observe(loss, grad) for opt in pair]
        steps += 1
        for name in ("accepted", "converged", "finite"):
            assert torch.equal(getattr(events[0], name), getattr(events[1], name)), name
        fused, plain = pair
        for name in (
            "waiting",
            "need_dir",
            "fresh",
            "pair_due",
            "iterations",
            "evaluations",
            "ls_steps",
            "time",
        ):
            assert torch.equal(getattr(fused, name), getattr(plain, name)), name
        for name in ("x", "fl", "r2", "alpha", "gtd", "SS", "SYl", "YlYl"):
            torch.testing.assert_close(
                getattr(fused, name), getattr(plain, name), rtol=1e-5, atol=1e-9, msg=name
            )  # sums round differently
        done = idx[events[0].converged]
        restart = [int(s) for s in done if stages[s] < 2]
        if restart:
            stages[restart] += 1
            for opt in pair:
                opt.set_c(torch.tensor(restart), opt.c[restart] * 3.0)
        finished = [int(s) for s in done if stages[s] >= 2 and int(s) not in restart]
        for opt in pair:
            if finished:
                opt.release(torch.tensor(finished))
        if finished and queue:
            load(finished[: len(queue)])
    assert steps > 30 and not queue


@pytest.mark.parametrize("c", [0.0, 0.7])
def test_fused_and_torch_reach_the_same_optimum_in_float32(c: float) -> None:
    q, b = random_box_qps(10, 30, seed=4)
    fun = quadratic(q.float(), b.float())
    anchor = torch.rand(10, 30, generator=torch.Generator().manual_seed(3))
    results = [
        minimize_box(fun, anchor.clone(), c=c, anchor=anchor, fused=fused, pgtol=1e-6, ftol=1e-9)
        for fused in (True, False)
    ]
    torch.testing.assert_close(results[0].f, results[1].f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0].x, results[1].x, rtol=0, atol=2e-3)


def test_fused_needs_a_cpu_and_float_state() -> None:
    with pytest.raises(ValueError, match="fused=True needs a CPU"):
        BoxLBFGS(2, 3, dtype=torch.float16, fused=True)
    with pytest.raises(ValueError, match="fused=True needs a CPU"):
        BoxLBFGS(2, 3, device="meta", fused=True)
    assert BoxLBFGS(2, 3).fused  # the default on a CPU
    assert not BoxLBFGS(2, 3, dtype=torch.float16).fused
    assert not BoxLBFGS(2, 3, fused=False).fused


def test_only_the_torch_step_compacts() -> None:
    """The torch step works over every slot, so a half-empty pool pays to compact; the fused
    kernels visit only the evaluated slots."""
    assert BoxLBFGS(8, 3, fused=False).compaction_pays(free=4)
    assert not BoxLBFGS(8, 3, fused=False).compaction_pays(free=3)
    assert not BoxLBFGS(8, 3, fused=True).compaction_pays(free=8)


def test_attack_results_agree_with_the_torch_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole attack on a small trained MLP: the fused and torch steps find the same successes
    and distortions to within rounding's drift over a search."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    images = torch.rand(24, 1, 8, 8)
    labels = model(images).argmax(1)
    fused = LBFGS(progress=False)(model, images, labels)
    from intriguing.attacks import optim

    monkeypatch.setattr(optim, "_fused_supported", lambda device, dtype: False)
    plain = LBFGS(progress=False)(model, images, labels)
    assert torch.equal(fused.success, plain.success)
    torch.testing.assert_close(fused.distortion, plain.distortion, rtol=2e-3, atol=1e-6)
    assert float(fused.distortion.mean()) == pytest.approx(float(plain.distortion.mean()), rel=1e-3)


def test_without_numba_the_torch_step_runs_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken or missing numba (an ImportError) is not a crash: a warning, then the torch step."""
    import sys

    from intriguing.attacks import optim

    monkeypatch.setitem(sys.modules, "numba", None)  # "import numba" raises ImportError
    monkeypatch.delitem(sys.modules, "intriguing.attacks.fused", raising=False)
    optim._fused_importable.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="fused CPU kernels are unavailable"):
            assert not BoxLBFGS(2, 3).fused
        q, b = random_box_qps(3, 5, seed=2)
        x0 = torch.full((3, 5), 0.5, dtype=f64)
        res = minimize_box(quadratic(q, b), x0)  # no second warning, the torch step's result
        assert bool(((res.x >= 0) & (res.x <= 1)).all())
    finally:
        optim._fused_importable.cache_clear()


def test_kernels_that_cannot_cache_fall_back_to_the_torch_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba refuses ``cache=True`` with a RuntimeError where no cache folder is writable: the
    same warning and fallback, naming NUMBA_CACHE_DIR."""
    from intriguing.attacks import optim

    def no_locator() -> None:
        raise RuntimeError("cannot cache function 'observe_rows': no locator available")

    monkeypatch.setattr(optim, "_kernels", no_locator)
    optim._fused_importable.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
            assert not BoxLBFGS(2, 3).fused
    finally:
        optim._fused_importable.cache_clear()
