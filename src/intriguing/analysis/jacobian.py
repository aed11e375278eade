"""Checks that keep a certified Lipschitz bound honest (paper section 4.3).

- :func:`jacobian_lower_bound`: a *measured* lower bound on a model's Lipschitz constant, the largest
  Jacobian spectral norm ``||J(x)||_2`` found by power iteration at sample inputs. Every iterate
  ``||J(x) v||`` with ``||v|| = 1`` is at most ``||J(x)||_2``, which is at most the Lipschitz constant,
  so the value is a lower bound whether or not the iteration converged.
- :func:`check_certified`: a certified upper bound below that measurement is a bug; it raises
  :class:`CertificationError` instead of letting a wrong certified radius out.
- :func:`check_chain`: a user's ``layers=`` list must compute ``model(x)``.
- :func:`model_fingerprint`: which model (structure and weights) a bound belongs to.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.models.user import eval_mode

Shape = tuple[int, ...]
EXPLICIT_OUTPUTS = 64  # outputs per example up to which the Jacobian is built whole (exact at x)


class CertificationError(IntriguingError):
    """A certified upper bound fell below a measured lower bound: a bug; nothing certified is reported."""


@dataclass
class MeasuredLowerBound:
    """Largest Jacobian spectral norm found at ``inputs`` inputs (a lower bound on the Lipschitz
    constant, input L2 -> output L2). ``per_input[i]``: the value at input ``i`` (random inputs in
    [0, 1] first, then the given samples); ``converged[i]``: whether power iteration met its tolerance.
    """

    value: float
    per_input: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "inputs": len(self.per_input),
            "per_input": self.per_input,
            "iterations": self.iterations,
            "converged": self.converged,
        }


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64, CPU, eval-mode deep copy of ``model`` (the original is untouched), its
    parameters without gradients: only input gradients are measured, and autograd would refuse
    a residual ``x += f(x)`` that it would have to save for the weights' gradients."""
    return eval_mode(copy.deepcopy(model).to(device="cpu", dtype=torch.float64)).requires_grad_(
        False
    )


def probe_inputs(
    shape: Shape, samples: torch.Tensor | None, n_random: int, seed: int = 0
) -> torch.Tensor:
    """``(n_random + len(samples), *shape)`` float64: uniform random in [0, 1] (seeded), then samples."""
    generator = torch.Generator().manual_seed(seed)
    parts = [torch.rand((n_random, *shape), generator=generator, dtype=torch.float64)]
    if samples is not None:
        parts.append(samples.detach().to(device="cpu", dtype=torch.float64))
    return torch.cat(parts)


def jacobian_lower_bound(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    *,
    iterations: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
    explicit_outputs: int = EXPLICIT_OUTPUTS,
) -> MeasuredLowerBound:
    """Largest ``||J_fn(x)||_2`` over ``inputs`` ``(M, *shape)``.

    ``fn`` (float64) must treat the examples of a batch independently (``network_bounds`` checks
    this first). Up to ``explicit_outputs`` outputs per example (logits) ``J(x)`` is built whole and
    its norm is exact at ``x``; otherwise power iteration on ``J^T J`` runs on all inputs at once:
    ``J v`` comes from the double-backward trick (``g(u) = J^T u`` is linear in ``u``, so
    ``J v = d<g(u), v>/du``) and ``J^T w`` from one backward pass. Each input's value is the largest
    iterate ``||J v||`` seen (``||v|| = 1``), a lower bound on ``||J(x)||_2`` converged or not.
    """
    result = MeasuredLowerBound(value=0.0)
    with torch.no_grad():
        outputs = int(fn(inputs[:1].clone()).numel())  # a forward may change its input in place
    try:
        if outputs <= explicit_outputs:
            result.per_input = [_explicit_norm(fn, x[None], outputs) for x in inputs]
            result.iterations = [0] * len(inputs)
            result.converged = [True] * len(inputs)
        else:
            generator = torch.Generator().manual_seed(seed)
            best, its, converged = _power_iteration(fn, inputs, iterations, tol, generator)
            result.per_input, result.converged = best, converged
            result.iterations = [its] * len(inputs)
    except RuntimeError as exc:  # autograd refusing an in-place operation of the forward, ...
        from intriguing.models.user import first_line

        cause = first_line(exc)
        fix = (
            "its output is cut off from its input: remove .detach(), torch.no_grad() or "
            "non-differentiable steps (argmax, .item()) from its forward"
            if "does not require grad" in cause
            else "make the in-place operations of its forward out of place"
        )
        raise InvalidInputError(
            f"torch's autograd cannot differentiate the model for the measured lower bound "
            f"({cause}); {fix}"
        ) from None
    if not all(math.isfinite(v) for v in result.per_input):
        bad = next(i for i, v in enumerate(result.per_input) if not math.isfinite(v))
        raise InvalidInputError(
            f"the model's Jacobian is not finite at probe input {bad} (a NaN or infinite output or "
            "gradient): no Lipschitz bound applies; check its weights and statistics"
        )
    result.value = max(result.per_input, default=0.0)
    return result


def _explicit_norm(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, outputs: int
) -> float:
    """``||J(x)||_2`` exactly: all ``outputs`` rows of ``J`` from one backward pass over ``outputs``
    copies of ``x`` (examples of a batch are independent), then an SVD."""
    copies = x.expand(outputs, *x.shape[1:]).clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(copies.clone()).reshape(outputs, outputs)  # clone: a leaf cannot change in place
        (rows,) = torch.autograd.grad(
            y, copies, torch.eye(outputs, dtype=y.dtype), allow_unused=True
        )
    if rows is None:
        return 0.0
    if not bool(torch.isfinite(rows).all()):
        return math.nan
    return float(torch.linalg.matrix_norm(rows.reshape(outputs, -1), ord=2))


def _power_iteration(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    iterations: int,
    tol: float,
    generator: torch.Generator,
) -> tuple[list[float], int, list[bool]]:
    """Per-example power iteration on ``J_i^T J_i`` for the whole batch at once."""
    m = inputs.shape[0]
    x = inputs.clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x.clone())  # a leaf cannot change in place
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, x, u, create_graph=True, allow_unused=True)
    if g is None or not g.requires_grad:  # the output does not depend on the input
        return [0.0] * m, 0, [True] * m
    v = _unit_rows(torch.randn(x.shape, generator=generator, dtype=x.dtype))
    best = torch.zeros(m, dtype=torch.float64)
    previous = torch.zeros(m, dtype=torch.float64)
    done = torch.zeros(m, dtype=torch.bool)
    steps = 0
    while steps < iterations:
        steps += 1
        (jv,) = torch.autograd.grad(g, u, v, retain_graph=True)  # J_i v_i, row by row
        sigma = jv.detach().reshape(m, -1).norm(dim=1).double()
        best = torch.maximum(best, sigma)
        done |= (sigma - previous).abs() <= tol * sigma
        if bool(done.all()):
            break
        previous = sigma
        (w,) = torch.autograd.grad(y, x, jv, retain_graph=True)  # J_i^T J_i v_i
        v = _unit_rows(w.detach(), keep=v)
    return best.tolist(), steps, done.tolist()


def _unit_rows(w: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Each example's vector scaled to norm 1 (zero or non-finite rows keep ``keep``'s)."""
    norms = w.reshape(w.shape[0], -1).norm(dim=1)
    ok = torch.isfinite(norms) & (norms > 0)
    shape = (-1,) + (1,) * (w.dim() - 1)
    unit = w / torch.where(ok, norms, 1.0).reshape(shape)
    if keep is None:
        return unit
    return torch.where(ok.reshape(shape), unit, keep)


# Relative slack of the comparison: autograd's derivative formulas may round their constants to
# float32 even in float64 (hardsigmoid's slope is 1/6 as a float32, 3e-8 above 1/6), so a bound that
# is attained exactly can measure a few 1e-8 above itself; a wrong rule is off by far more.
CERTIFIED_RTOL = 1e-6


def check_certified(certified: float, measured: MeasuredLowerBound, what: str) -> None:
    """Raise :class:`CertificationError` if ``certified`` is below ``measured.value`` (beyond
    :data:`CERTIFIED_RTOL`)."""
    if not math.isfinite(certified) or certified < measured.value * (1.0 - CERTIFIED_RTOL):
        index = max(range(len(measured.per_input)), key=measured.per_input.__getitem__)
        raise CertificationError(
            f"internal error: the certified Lipschitz bound of {what} ({certified:.6g}) is below the "
            f"Jacobian norm measured at probe input {index} ({measured.value:.6g}); no certified value "
            "is reported (this is a bug: please report it with the model)"
        )


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the module tree (types and names) and every parameter and buffer's values."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__qualname__};".encode())
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def check_chain(
    model: nn.Module,
    named: Sequence[tuple[str, nn.Module]],
    inputs: torch.Tensor,
    *,
    rtol: float = 1e-6,
) -> None:
    """Refuse (one line) a ``layers=`` chain that does not compute ``model(x)`` on ``inputs``.

    Both run in float64 on copies (the chain's modules that belong to ``model`` are copied together
    with it). A chain that leaves out, reorders or swaps a layer differs on random inputs.
    """
    double_model, modules = copy.deepcopy((model, [module for _, module in named]))
    double_model = eval_mode(double_model.to(device="cpu", dtype=torch.float64))
    modules = [m.to(device="cpu", dtype=torch.float64) for m in modules]
    with torch.no_grad():
        expected = double_model(inputs)
        got = inputs
        for (name, _), module in zip(named, modules, strict=True):
            try:
                got = module(got)
            except Exception as exc:  # a wrong chain can fail in any way; one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InvalidInputError(
                    f"layers= is not the model: layer {name!r} fails on the previous layer's output "
                    f"({first}); list every layer in call order"
                ) from None
    _compare_chain(expected, got, rtol)


def _compare_chain(expected: Any, got: torch.Tensor, rtol: float) -> None:
    if not isinstance(expected, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
        shape = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected)
        raise InvalidInputError(
            f"layers= is not the model: the chain returns shape {tuple(got.shape)}, model(x) {shape}"
        )
    difference = (got - expected).abs().flatten(1).max(dim=1).values
    scale = expected.abs().flatten(1).max(dim=1).values.clamp_min(1.0)
    worst = int(torch.argmax(difference / scale))
    if float(difference[worst]) > rtol * float(scale[worst]):
        raise InvalidInputError(
            f"layers= is not the model: on probe input {worst} the chain's output differs from "
            f"model(x) by {float(difference[worst]):.4g} (output scale {float(scale[worst]):.4g}); "
            "list every layer in call order, normalisation included, or leave layers= out"
        )


def check_batch_independent(model: nn.Module, inputs: torch.Tensor, *, rtol: float = 1e-9) -> None:
    """Refuse (one line) a model whose output for one example depends on the others in its batch:
    a per-example Lipschitz bound (and the batched Jacobian) assumes ``model(x)[i] = model(x[i:i+1])``.
    """
    double = float64_copy(model)
    with torch.no_grad():
        batched = double(inputs.clone())  # clones: a forward may change its input in place
        if not isinstance(batched, torch.Tensor) or batched.dim() == 0:
            raise InvalidInputError("the model must return one tensor with a batch dimension")
        single = torch.cat([double(inputs[i : i + 1].clone()) for i in range(len(inputs))])
    scale = max(1.0, float(batched.abs().max()))
    if single.shape != batched.shape or float((single - batched).abs().max()) > rtol * scale:
        raise InvalidInputError(
            f"{type(model).__name__} does not treat the examples of a batch independently (its output "
            "for one example changes with the others): no per-example Lipschitz bound applies"
        )
