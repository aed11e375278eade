"""The sandwich: certified lower bounds on the minimum adversarial distortion beside an attack's
upper bounds (joins the paper's section 4.1 attack and section 4.3 spectral bound).

For an image ``x`` of label ``y`` that the network classifies correctly, with logits ``z(x)``:

- **Global form.** If ``z`` is ``L``-Lipschitz (``L`` the product bound of
  :func:`~intriguing.analysis.lipschitz.network_bounds`), each margin ``z_y - z_j`` is
  ``sqrt(2) L``-Lipschitz (``||e_y - e_j|| = sqrt 2``), so no perturbation with
  ``||r||_2 < (z_y - max_{j != y} z_j) / (sqrt(2) L)`` can change the class.
- **Pairwise form.** If the network ends with a linear layer ``z = W h(x) + b`` and ``h`` is
  ``L_h``-Lipschitz, then ``z_y - z_j = (W_y - W_j) h + (b_y - b_j)`` is
  ``||W_y - W_j||_2 L_h``-Lipschitz, so the class cannot change within
  ``min_{j != y} (z_y - z_j) / (||W_y - W_j||_2 L_h)``. This is never smaller than the global form.

Both radii bound the *unconstrained* minimum ``||r||_2``; the paper's box-constrained minimum (``x + r``
in ``[0, 1]``) is at least as large, and any successful attack's distortion is at least that. So
``certified <= true minimum <= attack distortion`` on every correctly classified example, and the
ratio ``attack / certified`` measures how loose the global spectral bound is. Distances are reported
in the paper's distortion measure (RMS per pixel: ``||r||_2 / sqrt(n)``, ``n`` values per image).
Logits and margins are computed in float64 on a float64 copy of the model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from intriguing.analysis.jacobian import (
    check_certified,
    float64_copy,
    jacobian_lower_bound,
    model_fingerprint,
)
from intriguing.analysis.lipschitz import NetworkBound, sequential_layers
from intriguing.errors import InvalidInputError
from intriguing.models.user import eval_mode

QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


class AttackLike(Protocol):
    """What the sandwich needs from an attack result: per-example ``distortion`` and ``success``."""

    distortion: torch.Tensor
    success: torch.Tensor


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], AttackLike]


@dataclass
class CertifiedRadii:
    """Per-example certified radii, as RMS distortion (``(N,)`` float64 numpy arrays).

    ``margin``: ``z_y - max_{j != y} z_j``; ``correct`` (``margin > 0``): the float64 model
    classifies the example correctly (radii are 0 otherwise). ``pairwise`` is ``None`` when the network does not end
    with a linear layer. ``lipschitz``: the certified constant of the logits used (before a final
    ``log_softmax``, which keeps margins); ``measured_lower``: the largest Jacobian norm measured at
    these images and at the bound's probes (never above ``lipschitz``).
    """

    margin: np.ndarray
    global_: np.ndarray
    pairwise: np.ndarray | None
    lipschitz: float
    lipschitz_features: float | None
    measured_lower: float | None = None

    @property
    def correct(self) -> np.ndarray:
        """``(N,)`` bool: classified correctly (a positive margin)."""
        return self.margin > 0


def certified_radii(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    bound: NetworkBound,
    *,
    layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None,
) -> CertifiedRadii:
    """Certified lower bounds on the minimum distortion of each ``(image, label)``.

    Args:
        model: the network (logits out); the same one ``bound`` was computed for.
        images: ``(N, *input_shape)`` float in ``[0, 1]``.
        labels: ``(N,)`` integer tensor (any integer dtype) in ``[0, K)``.
        bound: :func:`~intriguing.analysis.lipschitz.network_bounds` of ``model``.
        layers: the layers in call order, for non-Sequential models (as for ``network_bounds``).

    Returns:
        :class:`CertifiedRadii` (RMS distortion units).
    """
    images, labels = _check_inputs(images, labels, bound)
    _check_bound_is_of(model, bound)
    measured = _measured_at(model, images, bound)
    double = eval_mode(copy.deepcopy(model).double())
    with torch.no_grad():
        logits = double(images.double().cpu())
    if logits.dim() != 2 or int(labels.max()) >= logits.shape[1]:
        raise InvalidInputError(
            f"model must return (N, K) logits with K > max label, got {tuple(logits.shape)}"
        )
    labels = labels.cpu()
    true_logit = logits.gather(1, labels[:, None])
    others = logits.scatter(1, labels[:, None], -math.inf)
    margin = (true_logit[:, 0] - others.max(dim=1).values).numpy()
    correct = margin > 0
    n_values = math.prod(images.shape[1:])
    to_rms = 1.0 / math.sqrt(n_values)
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant model: bound 0, radius inf
        radius = margin / (math.sqrt(2.0) * bound.margin_bound)
    global_ = np.where(correct, radius, 0.0) * to_rms
    pairwise, l_features = _pairwise(model, layers, bound, logits, labels)
    if pairwise is not None:
        pairwise = np.where(correct, pairwise, 0.0) * to_rms
    return CertifiedRadii(
        margin=margin,
        global_=global_,
        pairwise=pairwise,
        lipschitz=bound.margin_bound,
        lipschitz_features=l_features,
        measured_lower=measured,
    )


def _check_bound_is_of(model: nn.Module, bound: NetworkBound) -> None:
    """A certified radius only from this model's own bound (structure and weights fingerprinted)."""
    if bound.fingerprint is None or bound.fingerprint != model_fingerprint(model):
        raise InvalidInputError(
            "the bound was computed for other layers or weights than this model's (or not by "
            "network_bounds); recompute it with network_bounds(model, ...)"
        )


def _measured_at(model: nn.Module, images: torch.Tensor, bound: NetworkBound) -> float:
    """Largest Jacobian norm at (up to 16 of) these images and the bound's probes; checked against
    the certified constants (a certified constant below it raises CertificationError)."""
    probes = images[:16].detach().double().cpu()
    measured = jacobian_lower_bound(float64_copy(model), probes)
    check_certified(bound.lipschitz, measured, type(model).__name__)
    if bound.margin_module is not None:
        check_certified(
            bound.margin_bound,
            jacobian_lower_bound(bound.margin_module, probes),
            f"{type(model).__name__}'s logits",
        )
    return max(measured.value, bound.measured.value if bound.measured else 0.0)


def _check_inputs(
    images: object, labels: object, bound: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels as int64)`` after checking them against ``bound`` (one line otherwise):
    images a float tensor ``(N, *input_shape)`` with ``N >= 1``, finite and in ``[0, 1]``; labels
    an integer tensor ``(N,)`` of any integer dtype, ``>= 0``."""
    from intriguing.attacks.checks import check_images, check_labels

    if not isinstance(bound, NetworkBound):
        raise InvalidInputError(
            f"bound must be the NetworkBound of network_bounds(model, ...), got {type(bound).__name__}"
        )
    if isinstance(images, np.ndarray):
        raise InvalidInputError(
            "images must be a torch.Tensor, got a numpy array; convert it with torch.from_numpy"
        )
    if isinstance(images, torch.Tensor) and images.ndim >= 1 and images.shape[0] == 0:
        raise InvalidInputError("no images given: pass at least one (image, label) pair")
    images = check_images(images)
    if tuple(images.shape[1:]) != tuple(bound.input_shape):
        raise InvalidInputError(
            f"images have shape {tuple(images.shape[1:])} per example, the bound was computed for "
            f"{tuple(bound.input_shape)}"
        )
    if isinstance(labels, np.ndarray):
        raise InvalidInputError(
            "labels must be a torch.Tensor, got a numpy array; convert it with torch.from_numpy"
        )
    return images, check_labels(labels, int(images.shape[0]))


def _pairwise(
    model: nn.Module,
    layers: Sequence[nn.Module | tuple[str, nn.Module]] | None,
    bound: NetworkBound,
    logits: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[np.ndarray | None, float | None]:
    """``min_j (z_y - z_j) / (||W_y - W_j|| L_h)`` in L2 units, if the network ends linearly."""
    if bound.structure == "graph":
        if bound.final_linear is None or bound.features_lipschitz is None:
            return None, None
        linear = model.get_submodule(bound.final_linear)
        assert isinstance(linear, nn.Linear)
        return _pairwise_radii(linear, bound.features_lipschitz, logits, labels)
    named = sequential_layers(model, layers)
    if [name for name, _ in named] != [layer.name for layer in bound.layers]:
        raise InvalidInputError(
            "the bound was computed for other layers than this model's; recompute it"
        )
    last = _last_linear_index(bound)
    if last is None:
        return None, None
    linear = named[last][1]
    if not isinstance(linear, nn.Linear) or linear.out_features != logits.shape[1]:
        return None, None
    l_features = math.prod(layer.upper for layer in bound.layers[:last])
    return _pairwise_radii(linear, l_features, logits, labels)


def _pairwise_radii(
    linear: nn.Linear, l_features: float, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[np.ndarray | None, float | None]:
    if linear.out_features != logits.shape[1]:
        return None, None
    weight = linear.weight.detach().double().cpu()
    # (K, K) ||W_y - W_j||, computed directly (the matmul shortcut loses precision)
    pair_norms = torch.cdist(weight, weight, compute_mode="donot_use_mm_for_euclid_dist")
    diff_norms = pair_norms[labels]  # (N, K)
    gaps = logits.gather(1, labels[:, None]) - logits  # (N, K)
    ratio = gaps / (diff_norms * l_features)
    ratio = torch.where(diff_norms > 0, ratio, torch.where(gaps > 0, math.inf, 0.0))
    ratio.scatter_(1, labels[:, None], math.inf)  # j = y is no competitor
    return ratio.min(dim=1).values.numpy(), l_features


def _last_linear_index(bound: NetworkBound) -> int | None:
    """Index of the last Linear layer if every layer after it is an identity map."""
    for index in range(len(bound.layers) - 1, -1, -1):
        layer = bound.layers[index]
        if layer.kind == "Linear":
            return index
        if not layer.identity:
            return None
    return None


@dataclass
class SandwichResult:
    """Certified radii beside an attack's distortions, per example, with ratio quantiles.

    ``used``: the examples that are correctly classified and successfully attacked.
    ``ratio_global`` / ``ratio_pairwise``: ``attack distortion / certified radius`` over them.
    ``violations``: examples where a certified radius exceeds the attack's distortion (must be 0).
    """

    radii: CertifiedRadii
    attack_distortion: np.ndarray
    attack_success: np.ndarray

    @property
    def used(self) -> np.ndarray:
        """``(N,)`` bool: correctly classified and successfully attacked."""
        return self.radii.correct & self.attack_success

    @property
    def ratio_global(self) -> np.ndarray:
        """``attack distortion / global radius`` on the ``used`` examples."""
        return self._ratios(self.radii.global_)

    @property
    def ratio_pairwise(self) -> np.ndarray | None:
        """``attack distortion / pairwise radius`` on the ``used`` examples (None: no such form)."""
        pairwise = self.radii.pairwise
        return None if pairwise is None else self._ratios(pairwise)

    @property
    def violations(self) -> int:
        """Used examples whose certified radius (the larger form) exceeds the attack's distortion."""
        radii = self.radii
        certified = radii.pairwise if radii.pairwise is not None else radii.global_
        certified = np.maximum(certified, radii.global_)
        used = self.used
        return int((certified[used] > self.attack_distortion[used]).sum())

    def _ratios(self, certified: np.ndarray) -> np.ndarray:
        used = self.used
        with np.errstate(divide="ignore"):
            return self.attack_distortion[used] / certified[used]

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts, mean distortions and ratio quantiles."""
        used = self.used
        out: dict[str, Any] = {
            "examples": len(used),
            "correct": int(self.radii.correct.sum()),
            "attack_success": int(self.attack_success.sum()),
            "used": int(used.sum()),
            "violations": self.violations,
            "lipschitz_upper": self.radii.lipschitz,
            "lipschitz_features": self.radii.lipschitz_features,
            "lipschitz_measured_lower": self.radii.measured_lower,
            "mean_attack_distortion": _mean(self.attack_distortion[used]),
            "mean_certified_global": _mean(self.radii.global_[used]),
            "mean_certified_pairwise": (
                _mean(self.radii.pairwise[used]) if self.radii.pairwise is not None else None
            ),
            "ratio_global_quantiles": _quantiles(self.ratio_global),
            "ratio_pairwise_quantiles": (
                _quantiles(self.ratio_pairwise) if self.ratio_pairwise is not None else None
            ),
        }
        return out

    def per_example(self) -> list[dict[str, Any]]:
        """One JSON-ready row per example."""
        rows = []
        pairwise = self.radii.pairwise
        for i in range(len(self.used)):
            rows.append(
                {
                    "correct": bool(self.radii.correct[i]),
                    "margin": float(self.radii.margin[i]),
                    "certified_global": float(self.radii.global_[i]),
                    "certified_pairwise": float(pairwise[i]) if pairwise is not None else None,
                    "attack_distortion": float(self.attack_distortion[i]),
                    "attack_success": bool(self.attack_success[i]),
                }
            )
        return rows


def sandwich_markdown(summary: dict[str, Any]) -> str:
    """Quantiles of ``attack distortion / certified radius`` (a :meth:`SandwichResult.summary`) as Markdown."""
    quantiles = summary["ratio_global_quantiles"] or {}
    lines = ["| form | " + " | ".join(quantiles) + " |", "|---|" + "---:|" * len(quantiles)]
    for form in ("global", "pairwise"):
        values = summary[f"ratio_{form}_quantiles"]
        if values:
            lines.append(f"| {form} | " + " | ".join(f"{v:.3g}" for v in values.values()) + " |")
    lines.append("")
    lines.append(
        f"{summary['used']} of {summary['examples']} examples (correctly classified and successfully "
        f"attacked); certified > attack on {summary['violations']}; certified Lipschitz bound "
        f"{summary['lipschitz_upper']:.4g}"
        + (
            f" (measured Jacobian norm >= {summary['lipschitz_measured_lower']:.4g})."
            if summary.get("lipschitz_measured_lower") is not None
            else "."
        )
    )
    return "\n".join(lines) + "\n"


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return {f"q{round(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES}


def sandwich(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    bound: NetworkBound,
    *,
    attack: Attack | None = None,
    attack_result: AttackLike | None = None,
    layers: Sequence[nn.Module | tuple[str, nn.Module]] | None = None,
) -> SandwichResult:
    """Certified radii and an (untargeted) attack's distortions on the same examples.

    Args:
        model, images, labels, bound, layers: as for :func:`certified_radii`.
        attack: ``attack(model, images, labels) -> result`` with ``.distortion`` and ``.success``;
            by default :class:`intriguing.attacks.LBFGS` with its default (untargeted) settings.
        attack_result: an already computed result on these examples (then ``attack`` is unused).

    Returns:
        :class:`SandwichResult`.
    """
    images, labels = _check_inputs(images, labels, bound)
    radii = certified_radii(model, images, labels, bound, layers=layers)
    if attack_result is None:
        attack = attack or _default_attack()
        attack_result = attack(model, images, labels)
    distortion = attack_result.distortion.detach().double().cpu().numpy()
    success = attack_result.success.detach().cpu().numpy().astype(bool)
    if distortion.shape != (images.shape[0],) or success.shape != (images.shape[0],):
        raise InvalidInputError("attack result must hold one distortion and success flag per image")
    _check_same_examples(attack_result, images, labels)
    return SandwichResult(radii=radii, attack_distortion=distortion, attack_success=success)


def _check_same_examples(result: AttackLike, images: torch.Tensor, labels: torch.Tensor) -> None:
    """InvalidInputError (one line) when a result that records its mode, labels or adversarials
    (an :class:`~intriguing.attacks.AttackResult`) was not an untargeted attack on these examples."""
    mode = getattr(result, "mode", None)
    if mode not in (None, "untargeted"):
        raise InvalidInputError(
            f"attack_result is a {mode} attack's; the sandwich compares the certified radii with "
            "untargeted distortions: pass an untargeted result"
        )
    given = getattr(result, "labels", None)
    if isinstance(given, torch.Tensor) and not torch.equal(given.cpu().long(), labels.cpu().long()):
        raise InvalidInputError(
            "attack_result's labels differ from labels: it was computed on other examples"
        )
    adversarial = getattr(result, "adversarial", None)
    if isinstance(adversarial, torch.Tensor) and adversarial.numel() == images.numel():
        flat = images.detach().double().cpu().reshape(images.shape[0], -1)
        moved = adversarial.detach().double().cpu().reshape(flat.shape) - flat
        measured = moved.pow(2).mean(1).sqrt()
        stated = result.distortion.detach().double().cpu()
        if not torch.allclose(measured, stated, rtol=1e-3, atol=1e-6):
            raise InvalidInputError(
                "attack_result's distortions are not those of its adversarials from images: it was "
                "computed on other images"
            )


def _default_attack() -> Attack:
    import importlib

    try:
        lbfgs = importlib.import_module("intriguing.attacks").LBFGS
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            f"the L-BFGS attack is not available ({exc}); pass attack=..."
        ) from None
    attack: Attack = lbfgs()
    return attack
