"""The attacks our L-BFGS attack is benchmarked against (issue 3).

- foolbox 3.3.4 (optional extra ``bench``): DDN (100 steps), FMN-L2 (100 steps) and Carlini-Wagner L2
  (9 binary-search steps x 10000), untargeted, run as minimisation attacks (``epsilons=None``).
- adv-lib 0.2.8 (optional extra ``advlib``, installed with ``pip install --no-deps adv-lib==0.2.8``):
  ALMA (100 and 1000 steps), DDN (100 steps), FMN-L2 (100 steps), FAB-L2 (100 iterations),
  untargeted, library defaults otherwise. adv-lib imports torchvision (its LPIPS distance) and visdom
  (its progress logger) at import time for parts we never call; torchvision has no CPU build here,
  so :func:`adv_lib_shim` puts empty stand-in modules for those two names (and tqdm, which
  ``--no-deps`` also leaves out) into ``sys.modules``
  before importing adv-lib, inside the benchmark process only (never in the package).
- Two scipy L-BFGS-B baselines of the paper's attack, "what existing L-BFGS attacks do":
  *per-example* (one ``scipy.optimize.minimize`` per image and constant, as a loop over images) and
  *joint* (the whole batch flattened into one scipy problem per constant, with one shared line
  search and stopping test, as advertorch's ``LBFGSAttack`` does). Both minimise the same objective
  as ours, ``c * ||x' - x||^2 + CE(f(x'), t)`` over the box, with the same per-example bracketing and
  geometric-bisection search over ``c`` (c_init 1, factor 10), 9 constants of at most 100 L-BFGS-B
  iterations each, restarting from the original image at each constant (no warm start), and keep
  the smallest-distortion adversarial point seen at any evaluation.

Every runner returns a :class:`PeerRun`; success and distortion are measured afterwards, the same
way for all methods, by :mod:`bench_attack`.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn
from torch.nn import functional as F

from intriguing.progress import track

FOOLBOX_VERSION = "3.3.4"
FOOLBOX_ATTACKS = ("DDN", "FMN-L2", "CW-L2")
ADV_LIB_VERSION = "0.2.8"
#: adv-lib attacks by table name: (function name, keyword arguments).
ADV_LIB_ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "ALMA-1000": ("alma", {"num_steps": 1000, "distance": "l2"}),
    "ALMA-100": ("alma", {"num_steps": 100, "distance": "l2"}),
    "DDN-100": ("ddn", {"steps": 100}),
    "FMN-100": ("fmn", {"norm": 2, "steps": 100}),
    "FAB-100": ("fab", {"norm": 2, "n_iter": 100}),
}


@dataclass
class PeerRun:
    """A peer's adversarial images and cost on ``n`` images.

    Attributes:
        name: the method's label in tables.
        adversarial: float32 (n, *image_shape), clipped to [0, 1].
        elapsed_s: wall-clock seconds.
        grad_evals: forward+backward evaluations per example (None where the library hides it).
    """

    name: str
    adversarial: torch.Tensor
    elapsed_s: float
    grad_evals: float | None = None


def foolbox_missing() -> str | None:
    """None when foolbox 3.3.4 is importable, else a one-line reason (the rows are skipped)."""
    if importlib.util.find_spec("foolbox") is None:
        return (
            "foolbox is not installed: pip install -c constraints.txt "
            f"foolbox=={FOOLBOX_VERSION} (or pip install -e '.[bench]')"
        )
    import foolbox

    if foolbox.__version__ != FOOLBOX_VERSION:
        return f"foolbox {foolbox.__version__} found, the benchmark pins {FOOLBOX_VERSION}"
    return None


def _foolbox_attack(name: str) -> Any:
    """The foolbox attack object for ``name`` with the issue's settings."""
    import foolbox

    if name == "DDN":
        return foolbox.attacks.DDNAttack(steps=100)
    if name == "FMN-L2":
        return foolbox.attacks.L2FMNAttack(steps=100)
    if name == "CW-L2":
        return foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=9, steps=10000)
    raise ValueError(f"unknown foolbox attack {name!r}; choose one of {FOOLBOX_ATTACKS}")


def run_foolbox(
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    repeats: int = 1,
) -> PeerRun:
    """Untargeted foolbox minimisation attack ``name`` on ``images`` (processed in batches); the
    time is the median of ``repeats`` runs, the images those of the first."""
    import foolbox

    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
    attack = _foolbox_attack(name)
    walls: list[float] = []
    first: torch.Tensor | None = None
    for _ in range(repeats):
        chunks = []
        start = time.perf_counter()
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            criterion = foolbox.criteria.Misclassification(y)
            _, clipped, _ = attack(fmodel, x, criterion, epsilons=None)
            chunks.append(clipped.detach().clamp(0.0, 1.0))
        walls.append(time.perf_counter() - start)
        first = torch.cat(chunks) if first is None else first
    if first is None:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return PeerRun(name=f"foolbox {name}", adversarial=first, elapsed_s=statistics.median(walls))


# --------------------------------------------------------------------------- adv-lib


def adv_lib_shim() -> None:
    """Empty stand-ins for ``torchvision``, ``visdom`` and ``tqdm`` in ``sys.modules`` (benchmark only).

    adv-lib imports them at module level for its LPIPS distance (``torchvision.models``), its
    Visdom progress logger (``visdom.Visdom``) and its ``run_attack`` helper's progress bar
    (``tqdm``), none of which the benchmark uses (``--no-deps`` leaves them out); a real module of
    any of these names, when installed, is left alone.
    """
    for name in ("torchvision", "visdom", "tqdm"):
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        stub = types.ModuleType(name)
        stub.__doc__ = "empty stand-in installed by benchmarks/peers.py (adv-lib imports it unused)"
        if name == "torchvision":
            stub.models = types.ModuleType("torchvision.models")  # type: ignore[attr-defined]
            sys.modules["torchvision.models"] = stub.models  # type: ignore[attr-defined]
        elif name == "visdom":
            stub.Visdom = object  # type: ignore[attr-defined]
        else:
            stub.tqdm = lambda iterable=None, *args, **kwargs: iterable  # type: ignore[attr-defined]
        sys.modules[name] = stub


def adv_lib_missing() -> str | None:
    """None when adv-lib 0.2.8 is importable (with the shim), else a one-line reason."""
    if importlib.util.find_spec("adv_lib") is None:
        return (
            f"adv-lib is not installed: pip install --no-deps adv-lib=={ADV_LIB_VERSION} "
            "(or pip install --no-deps -e '.[advlib]')"
        )
    from importlib.metadata import version

    found = version("adv-lib")
    if found != ADV_LIB_VERSION:
        return f"adv-lib {found} found, the benchmark pins {ADV_LIB_VERSION}"
    return None


def run_adv_lib(
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
) -> PeerRun:
    """Untargeted adv-lib attack ``name`` (a key of :data:`ADV_LIB_ATTACKS`) on ``images`` in batches."""
    adv_lib_shim()
    import adv_lib.attacks as attacks

    function, kwargs = ADV_LIB_ATTACKS[name]
    attack = getattr(attacks, function)
    chunks = []
    start = time.perf_counter()
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        chunks.append(attack(model, x, y, **kwargs).detach().clamp(0.0, 1.0))
    elapsed = time.perf_counter() - start
    return PeerRun(name=f"adv-lib {name}", adversarial=torch.cat(chunks), elapsed_s=elapsed)


# --------------------------------------------------------------------------- scipy baselines


@dataclass
class _Best:
    """Per-example smallest-distortion adversarial point seen so far (float64 squared L2)."""

    x: np.ndarray  # (n, D)
    d2: np.ndarray  # (n,)

    @classmethod
    def empty(cls, originals: np.ndarray) -> _Best:
        return cls(x=originals.copy(), d2=np.full(originals.shape[0], math.inf))

    def observe(self, rows: np.ndarray, z: np.ndarray, d2: np.ndarray, success: np.ndarray) -> None:
        better = success & (d2 < self.d2[rows])
        self.x[rows[better]] = z[better]
        self.d2[rows[better]] = d2[better]


def _loss_and_grad(
    model: nn.Module, z: np.ndarray, shape: tuple[int, ...], targets: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row CE, its input gradient (rows, D) and the success flags (argmax == target)."""
    x = torch.from_numpy(z.astype(np.float32)).reshape(z.shape[0], *shape).requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        ce = F.cross_entropy(logits, targets, reduction="none")
        (grad,) = torch.autograd.grad(ce.sum(), x)
    success = (logits.argmax(1) == targets).numpy()
    return ce.detach().double().numpy(), grad.reshape(z.shape[0], -1).double().numpy(), success


@dataclass
class _CSearch:
    """Per-example bracketing + geometric bisection over c (same schedule as our attack)."""

    c: np.ndarray
    c_succ: np.ndarray
    c_fail: np.ndarray
    factor: float = 10.0

    @classmethod
    def start(cls, n: int, c_init: float = 1.0) -> _CSearch:
        return cls(c=np.full(n, c_init), c_succ=np.zeros(n), c_fail=np.full(n, math.inf))

    def update(self, success: np.ndarray) -> None:
        self.c_succ = np.where(success, np.maximum(self.c_succ, self.c), self.c_succ)
        self.c_fail = np.where(success, self.c_fail, np.minimum(self.c_fail, self.c))
        bracketed = (self.c_succ > 0) & np.isfinite(self.c_fail)
        stepped = np.where(success, self.c * self.factor, self.c / self.factor)
        middle = np.sqrt(self.c_succ * np.where(bracketed, self.c_fail, 1.0))
        self.c = np.where(bracketed, middle, stepped)


Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _lbfgsb(fun: Objective, x0: np.ndarray, max_iter: int) -> np.ndarray:
    """scipy L-BFGS-B on [0, 1]^D from ``x0`` (advertorch-like settings: m = 10, 100 iterations)."""
    bounds = np.stack([np.zeros_like(x0), np.ones_like(x0)], axis=1)
    fit = minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": max_iter}
    )
    return np.clip(np.asarray(fit.x), 0.0, 1.0)


def _stage_objective(
    model: nn.Module,
    originals: np.ndarray,
    targets: torch.Tensor,
    c: np.ndarray,
    rows: np.ndarray,
    shape: tuple[int, ...],
    best: _Best,
    counter: list[int],
) -> Objective:
    """Sum over ``rows`` of ``c ||z - x||^2 + CE``; every evaluation updates ``best``."""
    x = originals[rows]

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        z = flat.reshape(len(rows), -1)
        ce, grad, success = _loss_and_grad(model, z, shape, targets[rows])
        r = z - x
        d2 = np.einsum("ij,ij->i", r, r)
        best.observe(rows, z, d2, success)
        counter[0] += 1
        value = float(np.sum(c[rows] * d2 + ce))
        return value, (2.0 * c[rows, None] * r + grad).ravel()

    return fun


def scipy_lbfgs(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    joint: bool,
    stages: int = 9,
    max_iter: int = 100,
) -> PeerRun:
    """Targeted scipy L-BFGS-B baseline, per-example (``joint=False``) or joint (``joint=True``).

    Args:
        model: eval-mode classifier returning logits.
        images: float32 (n, *shape) in [0, 1].
        targets: int64 (n,).
        joint: flatten the batch into one scipy problem per constant.
        stages: constants tried per example (advertorch's 9 binary-search steps).
        max_iter: L-BFGS-B iterations per constant.
    """
    shape = tuple(images.shape[1:])
    originals = images.reshape(images.shape[0], -1).double().numpy()
    n = originals.shape[0]
    best = _Best.empty(originals)
    search = _CSearch.start(n)
    evals = [0]
    start = time.perf_counter()
    if joint:
        everyone = np.arange(n)
        for _ in track(range(stages), description="scipy joint"):
            fun = _stage_objective(
                model, originals, targets, search.c, everyone, shape, best, evals
            )
            z = _lbfgsb(fun, originals.ravel(), max_iter).reshape(n, -1)
            search.update(_loss_and_grad(model, z, shape, targets)[2])
        per_example_evals = float(evals[0])
    else:
        for i in track(range(n), description="scipy per-example"):
            row = np.array([i])
            for _ in range(stages):
                fun = _stage_objective(model, originals, targets, search.c, row, shape, best, evals)
                z = _lbfgsb(fun, originals[i], max_iter)[None]
                success = _loss_and_grad(model, z, shape, targets[row])[2]
                _update_one(search, i, bool(success[0]))
        per_example_evals = evals[0] / max(n, 1)
    elapsed = time.perf_counter() - start
    adversarial = torch.from_numpy(best.x).to(torch.float32).reshape(images.shape).clamp(0.0, 1.0)
    name = "scipy L-BFGS-B joint" if joint else "scipy L-BFGS-B per-example"
    return PeerRun(
        name=name, adversarial=adversarial, elapsed_s=elapsed, grad_evals=per_example_evals
    )


def _update_one(search: _CSearch, i: int, success: bool) -> None:
    """Advance example ``i``'s c-search only (the per-example loop)."""
    one = _CSearch(
        c=search.c[i : i + 1].copy(),
        c_succ=search.c_succ[i : i + 1].copy(),
        c_fail=search.c_fail[i : i + 1].copy(),
        factor=search.factor,
    )
    one.update(np.array([success]))
    search.c[i], search.c_succ[i], search.c_fail[i] = one.c[0], one.c_succ[0], one.c_fail[0]
