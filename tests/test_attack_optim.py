"""The batched projected L-BFGS (intriguing.attacks.optim) against scipy and an explicit BFGS matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from intriguing.attacks.optim import NO_TIME, BoxLBFGS, _apply_inverse_hessian, minimize_box


def random_box_qps(batch: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex quadratics 0.5 x'Qx + b'x with minimisers partly outside [0, 1]^dim."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, dim, generator=gen, dtype=torch.float64)
    q = a @ a.transpose(1, 2) / dim + 0.1 * torch.eye(dim, dtype=torch.float64)
    b = 2.0 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return q, b


def scipy_box_qp(q: np.ndarray, b: np.ndarray, x0: np.ndarray) -> float:
    res = scipy.optimize.minimize(
        lambda z: (0.5 * z @ q @ z + b @ z, q @ z + b),
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * len(x0),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    return float(res.fun)


@pytest.mark.parametrize("c", [0.0, 0.7])
def test_matches_scipy_lbfgsb_on_box_qps(c: float) -> None:
    q, b = random_box_qps(12, 25, seed=1)
    anchor = torch.rand(12, 25, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def fun(idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx = (q[idx] @ x[:, :, None]).squeeze(2)
        return 0.5 * (x * qx).sum(1) + (b[idx] * x).sum(1), qx + b[idx]

    x0 = torch.full((12, 25), 0.5, dtype=torch.float64)
    res = minimize_box(fun, x0, c=c, anchor=anchor, pgtol=1e-10, ftol=1e-15, max_iter=2000)
    assert bool(((res.x >= 0) & (res.x <= 1)).all())
    for i in range(12):
        qi = q[i].numpy() + 2 * c * np.eye(25)
        bi = b[i].numpy() - 2 * c * anchor[i].numpy()
        const = c * float(anchor[i] @ anchor[i])
        expected = scipy_box_qp(qi, bi, x0[i].numpy()) + const
        assert float(res.f[i]) == pytest.approx(expected, abs=1e-9)
    assert bool((res.evaluations >= res.iterations).all())
    assert bool(((res.x == 0) | (res.x == 1)).any()), "the box should be active somewhere"


def test_each_problem_independent_of_batch_mates() -> None:
    q, b = random_box_qps(6, 15, seed=3)

    def fun(idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx = (q[idx] @ x[:, :, None]).squeeze(2)
        return 0.5 * (x * qx).sum(1) + (b[idx] * x).sum(1), qx + b[idx]

    x0 = torch.full((6, 15), 0.3, dtype=torch.float64)
    together = minimize_box(fun, x0, pgtol=1e-9, ftol=1e-14)
    for i in range(6):
        alone = minimize_box(
            lambda idx, x, i=i: fun(idx + i, x), x0[i : i + 1], pgtol=1e-9, ftol=1e-14
        )
        assert torch.allclose(alone.x[0], together.x[i], atol=1e-10)
        assert int(alone.iterations[0]) == int(together.iterations[i])


def explicit_bfgs_inverse(pairs: list[tuple[np.ndarray, np.ndarray]], gamma: float) -> np.ndarray:
    """H from H0 = gamma I and the textbook BFGS inverse update, oldest pair first."""
    dim = len(pairs[0][0])
    h = gamma * np.eye(dim)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        v = np.eye(dim) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def test_compact_form_equals_explicit_bfgs_with_ring_order_and_c() -> None:
    """Pairs stored out of order (ring buffer), y = yl + 2 c s: H v equals the explicit matrix."""
    gen = torch.Generator().manual_seed(5)
    m, dim, c = 4, 9, 0.3
    s = torch.randn(m, dim, generator=gen, dtype=torch.float64)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    hess = a @ a.T + torch.eye(dim, dtype=torch.float64)
    yl = s @ hess  # curvature pairs of a convex quadratic loss
    time = torch.tensor([3, 1, 4, 2])  # slot 1 is the oldest pair
    mem = torch.cat((s, yl))[None]
    v = torch.randn(1, dim, generator=gen, dtype=torch.float64)
    SS, SYl, YlYl = s @ s.T, s @ yl.T, yl @ yl.T
    dv = (mem[0] @ v[0])[None]
    hv, has = _apply_inverse_hessian(
        v,
        dv,
        torch.tensor([c], dtype=torch.float64),
        SS[None],
        SYl[None],
        YlYl[None],
        time[None],
        mem,
    )
    y = yl + 2 * c * s
    order = torch.argsort(time).tolist()
    pairs = [(s[i].numpy(), y[i].numpy()) for i in order]
    newest = order[-1]
    gamma = float(s[newest] @ y[newest] / (y[newest] @ y[newest]))
    expected = explicit_bfgs_inverse(pairs, gamma) @ v[0].numpy()
    assert bool(has[0])
    np.testing.assert_allclose(hv[0].numpy(), expected, rtol=1e-9, atol=1e-10)


def test_invalid_pairs_are_ignored() -> None:
    """An empty slot and a pair failing the curvature test drop out of H."""
    gen = torch.Generator().manual_seed(6)
    m, dim = 3, 6
    s = torch.randn(m, dim, generator=gen, dtype=torch.float64)
    yl = s.clone() * 2.0
    yl[1] = -s[1]  # s'y < 0: invalid
    time = torch.tensor([1, 2, NO_TIME])
    mem = torch.cat((s, yl))[None]
    v = torch.randn(1, dim, generator=gen, dtype=torch.float64)
    dv = (mem[0] @ v[0])[None]
    hv, _ = _apply_inverse_hessian(
        v,
        dv,
        torch.zeros(1, dtype=torch.float64),
        (s @ s.T)[None],
        (s @ yl.T)[None],
        (yl @ yl.T)[None],
        time[None],
        mem,
    )
    expected = explicit_bfgs_inverse([(s[0].numpy(), yl[0].numpy())], 0.5) @ v[0].numpy()
    np.testing.assert_allclose(hv[0].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_set_c_warm_start_reaches_the_new_optimum() -> None:
    """Changing c mid-way keeps memory and iterate; the result is the new problem's optimum."""
    q, b = random_box_qps(3, 10, seed=7)
    opt = BoxLBFGS(3, 10, pgtol=1e-10, ftol=1e-15, max_iter=500, dtype=torch.float64)
    anchor = torch.full((3, 10), 0.5, dtype=torch.float64)
    slots = torch.arange(3)
    opt.load(slots, anchor, anchor, torch.full((3,), 5.0, dtype=torch.float64))
    changed = False
    while True:
        idx, x = opt.trial()
        if len(idx) == 0:
            if changed:
                break
            opt.set_c(slots, torch.full((3,), 0.2, dtype=torch.float64))
            changed = True
            continue
        qx = (q[idx] @ x[:, :, None]).squeeze(2)
        opt.observe(0.5 * (x * qx).sum(1) + (b[idx] * x).sum(1), qx + b[idx])
    for i in range(3):
        qi = q[i].numpy() + 0.4 * np.eye(10)
        bi = b[i].numpy() - 0.4 * anchor[i].numpy()
        expected = scipy_box_qp(qi, bi, anchor[i].numpy()) + 0.2 * float(anchor[i] @ anchor[i])
        got = float(opt.fl[i] + opt.c[i] * opt.r2[i])
        assert got == pytest.approx(expected, abs=1e-9)


def test_trial_sq_distance_is_the_squared_distance_of_the_evaluated_points() -> None:
    q, b = random_box_qps(4, 6, seed=3)
    opt = BoxLBFGS(4, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="without a preceding trial"):
        opt.trial_sq_distance()
    anchor = torch.full((4, 6), 0.5, dtype=torch.float64)
    opt.load(torch.arange(4), anchor, anchor, torch.full((4,), 1.0, dtype=torch.float64))
    for _ in range(5):  # the first trial is the anchor itself; later ones have moved
        idx, x = opt.trial()
        if len(idx) == 0:
            break
        expected = ((x - anchor[idx]) ** 2).sum(1)
        assert torch.allclose(opt.trial_sq_distance(), expected, rtol=1e-12, atol=1e-15)
        qx = (q[idx] @ x[:, :, None]).squeeze(2)
        opt.observe(0.5 * (x * qx).sum(1) + (b[idx] * x).sum(1), qx + b[idx])
    assert float(opt.r2.max()) > 0.0


def test_negated_inverse_hessian_is_exactly_minus_h_v() -> None:
    """``negate=True`` (the direction's form, one pass cheaper) is bit for bit ``-(H v)``, also for
    a row without memory (``H = I``)."""
    gen = torch.Generator().manual_seed(11)
    m, dim = 3, 40
    s = torch.rand(2, m, dim, generator=gen)
    yl = s * 1.5 + 0.1 * torch.rand(2, m, dim, generator=gen)
    mem = torch.cat((s, yl), 1)
    time = torch.tensor([[2, 0, 1], [NO_TIME, NO_TIME, NO_TIME]])  # row 1: empty memory
    v = torch.randn(2, dim, generator=gen)
    grams = (
        (s @ s.transpose(1, 2)).double(),
        (s @ yl.transpose(1, 2)).double(),
        (yl @ yl.transpose(1, 2)).double(),
    )
    dv = (mem @ v[:, :, None]).squeeze(2).double()
    c = torch.tensor([0.3, 0.3], dtype=torch.float64)
    hv, has = _apply_inverse_hessian(v, dv, c, *grams, time, mem)
    neg, has_neg = _apply_inverse_hessian(v, dv, c, *grams, time, mem, negate=True)
    assert has.tolist() == [True, False] and torch.equal(has, has_neg)
    assert torch.equal(neg, -hv)
    assert torch.equal(neg[1], -v[1])
    assert neg.data_ptr() != v.data_ptr()  # a fresh tensor: the caller may scale it in place


def test_rejected_rows_keep_their_iterate_and_accepted_rows_move() -> None:
    """After a step where some trials are rejected (non-finite loss), the rejected rows keep their
    iterate and the accepted rows' iterate is exactly their trial point; with most rows rejected
    and with most accepted (the two ways the iterate is updated)."""
    dim = 6
    for rejected_rows in ([1], [0, 1, 2, 4]):
        opt = BoxLBFGS(5, dim, dtype=torch.float64)
        x0 = torch.full((5, dim), 0.5, dtype=torch.float64)
        opt.load(torch.arange(5), x0, x0, torch.zeros(5, dtype=torch.float64))
        _, xt = opt.trial()
        opt.observe((xt - 0.2).pow(2).sum(1), 2 * (xt - 0.2))  # fresh: every row accepted
        before = opt.x.clone()
        _, xt = opt.trial()
        trial = xt.clone()
        loss = (trial - 0.2).pow(2).sum(1)
        loss[rejected_rows] = float("inf")
        events = opt.observe(loss, 2 * (trial - 0.2))
        bad = torch.zeros(5, dtype=torch.bool)
        bad[rejected_rows] = True
        assert torch.equal(events.accepted, ~bad)
        assert torch.equal(opt.x[bad], before[bad])
        assert torch.equal(opt.x[~bad], trial[~bad])
        assert not torch.equal(trial[~bad], before[~bad])  # the accepted rows did move


def _quadratic(idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ((x - 2.0) ** 2).sum(1), 2 * (x - 2.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": 0}, "memory must be an integer >= 1"),  # crashed the interpreter (fused)
        ({"memory": -1}, "memory must be an integer >= 1"),
        ({"memory": 0, "fused": False}, "memory must be an integer >= 1"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"max_ls": 2.5}, "max_ls must be an integer >= 1"),
        ({"lower": 1.0, "upper": 0.0}, "lower < upper"),
        ({"lower": float("nan")}, "lower must be a finite number"),
        ({"pgtol": 0.0}, "pgtol must be a finite number > 0"),
        ({"ftol": float("inf")}, "ftol must be a finite number > 0"),
    ],
)
def test_settings_no_state_can_hold_are_refused(options: dict, message: str) -> None:
    """Found by a probe: ``memory=0`` sized the fused kernels' work arrays at nothing and they
    wrote past them (glibc aborted the interpreter); an empty box returned a point outside it."""
    with pytest.raises(ValueError, match=message) as info:
        minimize_box(_quadratic, torch.full((2, 3), 0.5), **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("x0", "message"),
    [
        (torch.tensor([0.5]), r"x0 must be \(B, D\)"),
        (torch.tensor([[float("nan"), 0.5]]), "NaN or infinite"),
    ],
)
def test_minimize_box_refuses_a_bad_start(x0: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        minimize_box(_quadratic, x0)
    assert minimize_box(_quadratic, torch.zeros(0, 3)).x.shape == (0, 3)  # no problems: fine
