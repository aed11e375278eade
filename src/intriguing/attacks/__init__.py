"""Adversarial attacks (paper section 4.1) and the paper's noise baselines.

- :class:`LBFGS` / :func:`lbfgs_attack` (settings: :class:`LBFGSConfig`): the batched box-constrained L-BFGS minimum-distortion attack;
- :class:`AttackResult`: its structured result (adversarial images, success, distortion, ...);
- :func:`gaussian_noise`, :func:`amplify`: the baselines of Tables 2 and 4;
- :func:`exact_linear_attack`: the exact minimum-distortion perturbation of a linear model (a QP);
- :func:`rms_distortion`, :func:`l2_distance`, :func:`success_mask` (the one success rule, with
  its logit margin :func:`success_margin`), :func:`success_lead`: measures;
- the checks of :mod:`intriguing.attacks.checks`, reusable by other analyses;
- :class:`BoxLBFGS`, :func:`minimize_box`: the batched projected L-BFGS optimiser itself;
- :class:`Attack`, :class:`AttackBatch`, :class:`RawAttack`: to write another attack (implement
  ``run(batch) -> RawAttack``; the base class checks inputs and re-verifies the result).
"""

from __future__ import annotations

from intriguing.attacks.base import Attack, AttackBatch, RawAttack
from intriguing.attacks.checks import (
    AttackWarning,
    check_eval_mode,
    check_images,
    check_labels,
    check_logits,
    warn_zero_gradients,
)
from intriguing.attacks.exact_linear import ExactLinearResult, exact_linear_attack
from intriguing.attacks.lbfgs import LBFGS, lbfgs_attack
from intriguing.attacks.lbfgs_config import LBFGSConfig
from intriguing.attacks.losses import LOSSES, attack_loss
from intriguing.attacks.metrics import (
    SUCCESS_MARGIN,
    l2_distance,
    rms_distortion,
    success_lead,
    success_margin,
    success_mask,
)
from intriguing.attacks.noise import Perturbed, amplify, gaussian_noise
from intriguing.attacks.optim import BoxLBFGS, minimize_box
from intriguing.attacks.result import AttackResult
from intriguing.attacks.targets import TARGET_CHOICES, all_targets, choose_targets

__all__ = [
    "LBFGS",
    "LOSSES",
    "SUCCESS_MARGIN",
    "TARGET_CHOICES",
    "Attack",
    "AttackBatch",
    "AttackResult",
    "AttackWarning",
    "BoxLBFGS",
    "ExactLinearResult",
    "LBFGSConfig",
    "Perturbed",
    "RawAttack",
    "all_targets",
    "amplify",
    "attack_loss",
    "check_eval_mode",
    "check_images",
    "check_labels",
    "check_logits",
    "choose_targets",
    "exact_linear_attack",
    "gaussian_noise",
    "l2_distance",
    "lbfgs_attack",
    "minimize_box",
    "rms_distortion",
    "success_lead",
    "success_margin",
    "success_mask",
    "warn_zero_gradients",
]
