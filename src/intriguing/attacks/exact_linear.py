"""The exact minimum-distortion adversarial perturbation of an affine classifier (paper section 4.1).

For a linear softmax model (Table 1's ``softmax1..3``) the logits are affine in the input,
``z = W x + b``, so the paper's box-constrained problem

    minimise ||r||_2  subject to  argmax z(x + r) = t,  x + r in [0, 1]^m

is, up to the closure of the strict inequalities, the convex quadratic program

    minimise 0.5 ||r||^2
    subject to  a_j . (x + r) + c_j >= 0   for every class j != t,   0 <= x + r <= 1,

with ``a_j = w_t - w_j`` and ``c_j = b_t - b_j - margin``. Its optimum is the yardstick that an
approximate attack (the batched L-BFGS of :mod:`intriguing.attacks`) is measured against; the
untargeted optimum is the minimum of the targeted optima over all targets ``t != label``.

Method (the K - 1 variable concave dual). Minimising the Lagrangian over the box is separable, so
for multipliers ``mu >= 0`` the inner minimiser is the clipped vector

    r(mu) = clip(x + A^T mu, 0, 1) - x,

and the dual function ``g(mu) = 0.5 ||r(mu)||^2 - mu . s(mu)`` with slacks
``s(mu) = A (x + r(mu)) + c`` is concave and differentiable with gradient ``-s(mu)``. We maximise
it by a safeguarded semismooth Newton method on the complementarity system ``min(mu, s(mu)) = 0``
started at ``mu = 0`` (the dual is piecewise quadratic, so Newton lands on the exact optimum once
the active sets are right); should that not certify optimality, scipy's L-BFGS-B on ``mu >= 0``
followed by the same Newton polish is used, and the better certified point is kept. Stationarity holds by construction of
``r(mu)``; the certificate is primal feasibility (``s >= 0``), dual feasibility (``mu >= 0``) and
complementarity (``mu . s = 0``, which is also the duality gap). A problem whose feasible set is
empty (the target cannot win anywhere in the box) is detected by a linear program and reported as
infeasible with an infinite distortion.

An independent primal solver (scipy's SLSQP on the m-dimensional problem) is provided for
cross-checking on small problems; it is far too slow for 784-pixel images in bulk.

All arithmetic is in float64. Distortion follows the paper: ``sqrt(sum_i r_i^2 / n)`` (RMS per
pixel, n pixels per image; on MNIST ``L2 = 28 * distortion``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog, minimize
from threadpoolctl import threadpool_limits
from torch import nn

from intriguing.attacks.checks import attack_dtype, check_nonnegative
from intriguing.errors import InvalidInputError
from intriguing.models.user import model_device
from intriguing.progress import track

#: Largest tolerated constraint violation (logit units) for a solution to count as feasible.
FEASIBILITY_TOL = 1e-7
#: Largest tolerated complementarity |mu_j s_j| (the duality gap's terms) of a certified optimum.
COMPLEMENTARITY_TOL = 1e-9
#: Largest tolerated |model(x) - (W x + b)| when checking that the model really is affine.
AFFINE_CHECK_TOL = 1e-4


@dataclass(frozen=True)
class AffineClassifier:
    """The parameters of an affine classifier ``z = W x + b`` in float64.

    Attributes:
        weight: (K, m) array, K classes, m = pixels per flattened image.
        bias: (K,) array.
    """

    weight: np.ndarray
    bias: np.ndarray

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return int(self.weight.shape[0])

    @property
    def num_inputs(self) -> int:
        """m, the number of input values per example."""
        return int(self.weight.shape[1])

    def logits(self, flat_images: np.ndarray) -> np.ndarray:
        """Logits (N, K) of flattened images (N, m)."""
        return np.asarray(flat_images @ self.weight.T + self.bias)


@dataclass(frozen=True)
class QPSolution:
    """The solution of one targeted QP, with its optimality certificate.

    Attributes:
        perturbation: (m,) the optimal r; ``x + r`` lies in [0, 1] exactly. All NaN if infeasible.
        l2: ``||r||_2`` (``inf`` if infeasible).
        multipliers: (K - 1,) the dual variables ``mu >= 0`` of the class constraints (j != t,
            in class order).
        max_violation: largest constraint violation ``max(0, -s_j)`` in logit units.
        complementarity: largest ``|mu_j s_j|`` (their sum is the duality gap).
        feasible: whether a point satisfying all constraints exists in the box and was found
            (violation <= :data:`FEASIBILITY_TOL`).
        method: ``"dual"`` or ``"slsqp"``.
    """

    perturbation: np.ndarray
    l2: float
    multipliers: np.ndarray
    max_violation: float
    complementarity: float
    feasible: bool
    method: str

    @property
    def kkt_residual(self) -> float:
        """``max(violation, complementarity)``: 0 at an exact optimum (stationarity is exact)."""
        return max(self.max_violation, self.complementarity)


def _constraints(
    classifier: AffineClassifier, target: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``a_j = w_t - w_j`` (K-1, m) and offsets ``c_j = b_t - b_j - margin`` (K-1,)."""
    others = [j for j in range(classifier.num_classes) if j != target]
    A = classifier.weight[target] - classifier.weight[others]
    c = classifier.bias[target] - classifier.bias[others] - margin
    return A, c


def _box_minimiser(x: np.ndarray, A: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``r(mu) = clip(x + A^T mu, 0, 1) - x`` and the mask of pixels strictly inside the box."""
    y = x + A.T @ mu
    free = (y > 0.0) & (y < 1.0)
    return np.clip(y, 0.0, 1.0) - x, free


def _slacks(x: np.ndarray, A: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Constraint slacks ``s = A (x + r) + c`` (K-1,); feasible where all are >= 0."""
    return np.asarray(A @ (x + r) + c)


def _negative_dual(
    mu: np.ndarray, x: np.ndarray, A: np.ndarray, c: np.ndarray
) -> tuple[float, np.ndarray]:
    """``-g(mu)`` and its gradient ``s(mu)`` (the dual is maximised, so this is minimised)."""
    r, _ = _box_minimiser(x, A, mu)
    s = _slacks(x, A, c, r)
    return float(mu @ s - 0.5 * r @ r), s


def _natural_residual(mu: np.ndarray, s: np.ndarray) -> float:
    """``||min(mu, s)||_inf``: zero exactly at a KKT point of the bound-constrained dual."""
    return float(np.max(np.abs(np.minimum(mu, s)))) if mu.size else 0.0


def _newton_polish(
    mu: np.ndarray, x: np.ndarray, A: np.ndarray, c: np.ndarray, max_steps: int = 50
) -> np.ndarray:
    """Semismooth Newton on ``min(mu, s(mu)) = 0`` with a backtracking safeguard.

    Within one pattern of clipped pixels ``s`` is affine in ``mu`` with Jacobian ``A_F A_F^T``
    (F = free pixels), so a step that fixes the inactive multipliers at 0 and solves the active
    slacks to 0 is exact once the active sets are right. A step is accepted only if it lowers the
    natural residual; otherwise its length is halved (and the best point seen is returned).
    """
    mu = np.maximum(mu, 0.0)
    r, free = _box_minimiser(x, A, mu)
    s = _slacks(x, A, c, r)
    residual = _natural_residual(mu, s)
    for _ in range(max_steps):
        if residual <= 1e-15 * (1.0 + float(np.max(np.abs(c), initial=0.0))):
            break
        active = s < mu
        target_mu = np.zeros_like(mu)
        if active.any():
            A_act = A[active][:, free]
            H = A_act @ A_act.T
            # s_J(mu') ~ s_J(mu) + H_J,: (mu' - mu) = 0 with mu'_I = 0.
            rhs = -s[active] + (A[active][:, free] @ A[~active][:, free].T) @ mu[~active]
            rhs += H @ mu[active]
            target_mu[active] = np.linalg.lstsq(H, rhs, rcond=None)[0]
        step = target_mu - mu
        improved = False
        for halving in range(30):
            candidate = np.maximum(mu + step / (2.0**halving), 0.0)
            r_c, free_c = _box_minimiser(x, A, candidate)
            s_c = _slacks(x, A, c, r_c)
            res_c = _natural_residual(candidate, s_c)
            if res_c < residual:
                mu, free, s, residual = candidate, free_c, s_c, res_c
                improved = True
                break
        if not improved:
            break
    return mu


def _box_feasible(x: np.ndarray, A: np.ndarray, c: np.ndarray) -> bool:
    """Whether some ``y`` in [0, 1]^m has ``A y + c >= 0`` (a linear program: max min-slack)."""
    m, k = x.size, A.shape[0]
    # Variables (y, t): maximise t subject to A y + c >= t, t <= 1, 0 <= y <= 1.
    cost = np.zeros(m + 1)
    cost[-1] = -1.0
    A_ub = np.hstack([-A, np.ones((k, 1))])
    bounds = [(0.0, 1.0)] * m + [(None, 1.0)]
    result = linprog(cost, A_ub=A_ub, b_ub=c, bounds=bounds, method="highs")
    return bool(result.status == 0 and -result.fun >= -FEASIBILITY_TOL)


def _certificate(
    x: np.ndarray, A: np.ndarray, c: np.ndarray, mu: np.ndarray, r: np.ndarray, method: str
) -> QPSolution:
    """Package ``r`` with its KKT figures (violation, complementarity)."""
    s = _slacks(x, A, c, r)
    violation = float(np.max(np.maximum(-s, 0.0), initial=0.0))
    complementarity = float(np.max(np.abs(mu * s), initial=0.0)) if mu.size else 0.0
    return QPSolution(
        perturbation=r,
        l2=float(np.linalg.norm(r)),
        multipliers=mu,
        max_violation=violation,
        complementarity=complementarity,
        feasible=violation <= FEASIBILITY_TOL,
        method=method,
    )


def _infeasible(m: int, k: int, method: str) -> QPSolution:
    """The result of a QP whose feasible set is empty."""
    return QPSolution(
        perturbation=np.full(m, np.nan),
        l2=math.inf,
        multipliers=np.full(k, np.nan),
        max_violation=math.inf,
        complementarity=0.0,
        feasible=False,
        method=method,
    )


def _dual_solution(x: np.ndarray, A: np.ndarray, c: np.ndarray, mu: np.ndarray) -> QPSolution:
    """The primal point ``r(mu)`` of dual variables ``mu`` with its certificate."""
    r, _ = _box_minimiser(x, A, mu)
    return _certificate(x, A, c, mu, r, "dual")


def _certified(solution: QPSolution) -> bool:
    """Whether the KKT figures prove optimality to the module's tolerances."""
    return solution.feasible and solution.complementarity <= COMPLEMENTARITY_TOL


def solve_targeted_qp(
    x: np.ndarray, classifier: AffineClassifier, target: int, *, margin: float = 0.0
) -> QPSolution:
    """Exact minimum-L2 perturbation taking ``x`` to class ``target`` inside the box (dual method).

    Args:
        x: (m,) flattened image, values in [0, 1] (float64 is used internally).
        classifier: the affine classifier's parameters.
        target: the class to reach, 0 <= target < K.
        margin: required logit lead of the target over every other class (0: the closure of the
            decision region; the optimum then lies on its boundary, where the target ties).

    Returns:
        The optimum with its KKT certificate; ``feasible`` is False (and ``l2`` infinite) when no
        point of the box gives the target the lead.
    """
    check_nonnegative("margin", margin, "the target's required logit lead")
    x = np.asarray(x, dtype=np.float64)
    A, c = _constraints(classifier, target, margin)
    mu0 = np.zeros(A.shape[0])
    if np.all(_slacks(x, A, c, np.zeros_like(x)) >= 0.0):
        return _certificate(x, A, c, mu0, np.zeros_like(x), "dual")
    solution = _dual_solution(x, A, c, _newton_polish(mu0, x, A, c))
    if _certified(solution):
        return solution
    if not _box_feasible(x, A, c):  # an empty feasible set makes the dual unbounded
        return _infeasible(x.size, A.shape[0], "dual")
    fit = minimize(
        _negative_dual,
        mu0,
        args=(x, A, c),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * A.shape[0],
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20},
    )
    polished = _newton_polish(np.asarray(fit.x, dtype=np.float64), x, A, c)
    return min(solution, _dual_solution(x, A, c, polished), key=lambda s: s.kkt_residual)


def solve_targeted_qp_slsqp(
    x: np.ndarray, classifier: AffineClassifier, target: int, *, margin: float = 0.0
) -> QPSolution:
    """The same QP solved on the primal with scipy's SLSQP: an independent check for small m.

    Its cost grows like m^3 per iteration, so use it on small problems (tests, a few images); the
    multipliers are recovered from the active constraints by least squares on the free pixels.
    """
    check_nonnegative("margin", margin, "the target's required logit lead")
    x = np.asarray(x, dtype=np.float64)
    A, c = _constraints(classifier, target, margin)
    fit = minimize(
        lambda r: (0.5 * r @ r, r),
        np.zeros_like(x),
        jac=True,
        method="SLSQP",
        bounds=list(zip(-x, 1.0 - x, strict=True)),
        constraints=[{"type": "ineq", "fun": lambda r: A @ (x + r) + c, "jac": lambda r: A}],
        options={"maxiter": 1000, "ftol": 1e-16},
    )
    r = np.clip(x + fit.x, 0.0, 1.0) - x
    s = _slacks(x, A, c, r)
    mu = np.zeros(A.shape[0])
    active = s <= 1e-7
    free = (x + r > 1e-9) & (x + r < 1.0 - 1e-9)
    if active.any() and free.any():
        coeffs = np.linalg.lstsq(A[active][:, free].T, r[free], rcond=None)[0]
        mu[active] = np.maximum(coeffs, 0.0)
    solution = _certificate(x, A, c, mu, r, "slsqp")
    if solution.max_violation <= 1e-6 or _box_feasible(x, A, c):
        return solution
    return _infeasible(x.size, A.shape[0], "slsqp")


def affine_parameters(model: nn.Module) -> AffineClassifier:
    """Extract ``(W, b)`` from a model made of ``nn.Flatten`` (optional) and one ``nn.Linear``.

    Accepted: an ``nn.Linear``, or an ``nn.Sequential`` whose modules are ``nn.Flatten`` /
    ``nn.Identity`` followed by exactly one ``nn.Linear`` (the zoo's ``softmax1..3``; the softmax
    itself lives in the loss, the model returns logits).

    Raises:
        InvalidInputError: anything else (hidden layers, activations, convolutions, custom modules).
    """
    if isinstance(model, nn.Linear):
        layers: list[nn.Module] = [model]
    elif type(model) is nn.Sequential:
        layers = list(model.children())
    else:
        raise InvalidInputError(
            f"the exact oracle needs an affine model (nn.Sequential of Flatten + one Linear), "
            f"got {type(model).__name__}; use it only on linear softmax models such as softmax1"
        )
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    others = [
        type(layer).__name__
        for layer in layers
        if not isinstance(layer, nn.Linear | nn.Flatten | nn.Identity)
    ]
    if len(linears) != 1 or others or not isinstance(layers[-1], nn.Linear):
        found = ", ".join(type(layer).__name__ for layer in layers) or "nothing"
        raise InvalidInputError(
            f"the exact oracle needs Flatten + exactly one Linear (logits), found [{found}]; "
            f"use it only on linear softmax models such as softmax1"
        )
    linear = linears[0]
    weight = linear.weight.detach().to(torch.float64).cpu().numpy().copy()
    if linear.bias is None:
        bias = np.zeros(weight.shape[0])
    else:
        bias = linear.bias.detach().to(torch.float64).cpu().numpy().copy()
    return AffineClassifier(weight=weight, bias=bias)


@dataclass(frozen=True)
class ExactLinearResult:
    """Exact minimum-distortion perturbations for a batch (targeted or untargeted).

    Attributes:
        perturbation: float64 (N, *image_shape) optimal r (NaN where infeasible).
        adversarial: float32 (N, *image_shape) ``x + r`` clamped to [0, 1] (the original where
            infeasible; check ``feasible``). At margin 0 it lies on the decision boundary.
        distortion: float64 (N,) the paper's RMS per pixel ``||r|| / sqrt(n)`` (inf if infeasible).
        l2: float64 (N,) ``||r||_2`` (inf if infeasible).
        feasible: bool (N,) whether a certified optimum exists.
        target: int64 (N,) the target reached (for untargeted: the argmin over targets).
        kkt_residual: float64 (N,) max of constraint violation and complementarity (logit units).
        per_target_distortion: float64 (N, K) every target's optimum (inf for the label itself
            and for infeasible targets); only for untargeted runs, else None.
    """

    perturbation: torch.Tensor
    adversarial: torch.Tensor
    distortion: torch.Tensor
    l2: torch.Tensor
    feasible: torch.Tensor
    target: torch.Tensor
    kkt_residual: torch.Tensor
    per_target_distortion: torch.Tensor | None


def _check_batch(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    targets: torch.Tensor | None,
    classifier: AffineClassifier,
) -> None:
    """Refuse unusable inputs with a one-line message."""
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise InvalidInputError("images must be a tensor of shape (N, ...), e.g. (N, 1, 28, 28)")
    per_image = math.prod(images.shape[1:])
    if per_image != classifier.num_inputs:
        raise InvalidInputError(
            f"images have {per_image} values each but the model takes "
            f"{classifier.num_inputs}; pass images of the model's input shape"
        )
    if images.shape[0] == 0:
        raise InvalidInputError("images is an empty batch; pass at least one image")
    if not torch.isfinite(images).all():
        raise InvalidInputError("images contain NaN or infinite values; pass finite images")
    if images.min() < 0 or images.max() > 1:
        raise InvalidInputError("images must lie in [0, 1]; scale pixels by 1/255, no mean/std")
    k = classifier.num_classes
    for name, tensor in (("labels", labels), ("targets", targets)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise InvalidInputError(
                f"{name} must be an integer torch.Tensor of shape ({images.shape[0]},), got "
                f"{type(tensor).__name__}; wrap it with torch.tensor(...)"
            )
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise InvalidInputError(f"{name} must be an integer tensor, got {tensor.dtype}")
        if tensor.shape != (images.shape[0],) or tensor.dtype.is_floating_point:
            raise InvalidInputError(
                f"{name} must be an integer tensor of shape ({images.shape[0]},)"
            )
        if tensor.numel() and (tensor.min() < 0 or tensor.max() >= k):
            raise InvalidInputError(f"{name} must be class indices in 0..{k - 1}")
    if labels is None and targets is None:
        raise InvalidInputError("pass labels (untargeted) or targets (targeted)")
    if labels is not None and targets is not None:
        same = int((targets.long().cpu() == labels.long().cpu()).sum())
        if same:
            raise InvalidInputError(f"{same} target(s) equal their label; choose targets != labels")


def _check_affine(model: nn.Module, classifier: AffineClassifier, images: torch.Tensor) -> None:
    """Verify ``model(images) == W x + b`` on the batch (catches modules that are not affine)."""
    dtype = attack_dtype(model, images.dtype)  # a float64 model takes float64 probes
    probe = images[: min(16, images.shape[0])].to(model_device(model, images.device), dtype)
    with torch.no_grad():
        logits = model(probe).detach().to(torch.float64).cpu().numpy()
    flat = probe.reshape(probe.shape[0], -1).to(torch.float64).cpu().numpy()
    expected = classifier.logits(flat)
    if logits.shape != expected.shape or np.max(np.abs(logits - expected)) > AFFINE_CHECK_TOL * (
        1.0 + np.max(np.abs(expected))
    ):
        raise InvalidInputError(
            "the model's logits differ from W x + b of its Linear layer; "
            "the exact oracle applies only to affine models"
        )


def exact_linear_attack(
    model: nn.Module | AffineClassifier,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    targets: torch.Tensor | None = None,
    margin: float = 0.0,
    progress: bool = True,
) -> ExactLinearResult:
    """Exact minimum-distortion adversarial perturbations of an affine model, for a batch.

    Targeted when ``targets`` is given (the paper's D(x, l) for l = target); otherwise untargeted:
    for each image the minimum over all targets ``t != label`` (Table 1's "every example
    misclassified").

    Args:
        model: an affine ``nn.Module`` (see :func:`affine_parameters`) or its parameters.
        images: (N, ...) with values in [0, 1]; each flattens to the model's m inputs.
        labels: int64 (N,) true labels (required for untargeted).
        targets: int64 (N,) targets (targeted mode).
        margin: required logit lead of the target (0: the boundary, the infimum of the problem).
        progress: show a progress bar.

    The solvers' NumPy/SciPy BLAS calls run with ``torch.get_num_threads()`` threads
    (threadpoolctl), so ``torch.set_num_threads`` and the commands' ``--threads`` hold here too.

    Returns:
        An :class:`ExactLinearResult`.

    Raises:
        InvalidInputError: a non-affine or half-precision model, images/labels/targets of the wrong
            type, shape, dtype or range, targets equal to their labels, or a margin that is not a
            finite number >= 0.
    """
    check_nonnegative("margin", margin, "the target's required logit lead")
    classifier = model if isinstance(model, AffineClassifier) else affine_parameters(model)
    _check_batch(images, labels, targets, classifier)
    if isinstance(model, nn.Module):
        _check_affine(model, classifier, images)
    flat = images.detach().reshape(images.shape[0], -1).to(torch.float64).cpu().numpy()
    n, k = flat.shape[0], classifier.num_classes
    candidates = _candidate_targets(n, k, labels, targets)
    per_target = np.full((n, k), math.inf)
    best = [_infeasible(flat.shape[1], k - 1, "dual") for _ in range(n)]
    chosen = np.zeros(n, dtype=np.int64)
    if targets is not None:
        chosen[:] = targets.cpu().numpy()
    jobs = [(i, t) for i in range(n) for t in candidates[i]]
    iterator = track(jobs, description="exact QP") if progress else jobs
    # NumPy's and SciPy's BLAS start one thread per core whatever torch's setting: keep them to
    # torch's thread count, as every command sets it (a 1000-class model ran at 196% of a core
    # under torch.set_num_threads(1))
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        for i, t in iterator:
            solution = solve_targeted_qp(flat[i], classifier, t, margin=margin)
            per_target[i, t] = solution.l2 if solution.feasible else math.inf
            if solution.feasible and solution.l2 < best[i].l2:
                best[i], chosen[i] = solution, t
    return _package(images, flat, best, chosen, per_target if targets is None else None)


def _candidate_targets(
    n: int, k: int, labels: torch.Tensor | None, targets: torch.Tensor | None
) -> list[list[int]]:
    """Per example, the targets whose QPs are solved."""
    if targets is not None:
        return [[int(t)] for t in targets.tolist()]
    if labels is None:
        raise InvalidInputError("pass labels (untargeted) or targets (targeted)")
    return [[t for t in range(k) if t != int(label)] for label in labels.tolist()]


def _package(
    images: torch.Tensor,
    flat: np.ndarray,
    best: list[QPSolution],
    chosen: np.ndarray,
    per_target: np.ndarray | None,
) -> ExactLinearResult:
    """Turn per-example solutions into the batched result."""
    n, m = flat.shape
    perturbation = np.stack([solution.perturbation for solution in best]) if n else np.zeros((0, m))
    feasible = np.array([solution.feasible for solution in best], dtype=bool)
    l2 = np.array([solution.l2 for solution in best], dtype=np.float64)
    adversarial = np.where(
        feasible[:, None], np.clip(flat + np.nan_to_num(perturbation), 0, 1), flat
    )
    shape = tuple(images.shape)
    per_target_sq = None
    if per_target is not None:
        per_target_sq = torch.from_numpy(per_target / math.sqrt(m))
    return ExactLinearResult(
        perturbation=torch.from_numpy(perturbation).reshape(shape),
        adversarial=torch.from_numpy(adversarial).to(torch.float32).reshape(shape),
        distortion=torch.from_numpy(l2 / math.sqrt(m)),
        l2=torch.from_numpy(l2),
        feasible=torch.from_numpy(feasible),
        target=torch.from_numpy(chosen),
        kkt_residual=torch.tensor(
            [solution.kkt_residual for solution in best], dtype=torch.float64
        ),
        per_target_distortion=per_target_sq,
    )
