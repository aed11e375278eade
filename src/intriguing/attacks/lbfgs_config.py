"""The settings of the paper's attack (section 4.1) as one frozen dataclass.

:class:`LBFGSConfig` holds every keyword setting of :class:`~intriguing.attacks.lbfgs.LBFGS` except
the runtime ones (``threads``, ``progress``), validated once in ``__post_init__``. The experiment
specs (:class:`intriguing.experiments.specs.AttackConfig`) and the CLI reuse it, so the defaults are
declared here only. See :class:`~intriguing.attacks.lbfgs.LBFGS` for what each setting does.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intriguing.attacks.arguments import check_count, check_positive, is_finite_number
from intriguing.attacks.base import MODES
from intriguing.attacks.losses import check_loss
from intriguing.attacks.targets import check_target_choice
from intriguing.errors import InvalidInputError

# Every constant the attack's search sets stays in C_RANGE. Beyond it the distance term is already 0
# or everything at the scale of the loss and its gradient (a pixel moves by ~1/c), and the full
# gradient ``g + 2 c (x - x0)`` overflows float32 near 1e38 (nonsense trial points that the model
# would be blamed for). From c = 5 the default search reaches 5 * 3**-55 ~ 3e-26 at the least.
C_RANGE = (1e-30, 1e30)
# the targets untargeted mode takes: none (the untargeted loss or its candidates) or every class
UNTARGETED_TARGETS = (None, "best")


@dataclass(frozen=True)
class LBFGSConfig:
    """Every non-runtime setting of the box-constrained L-BFGS attack (paper section 4.1).

    Fields, ranges: ``mode`` in ``MODES``; ``target`` a chooser name, a class index or ``None``
    (targeted ``None`` becomes ``"random"``); ``c_init`` ``None`` (untargeted candidates start at
    their estimated constants, every other problem at 5) or in [1e-30, 1e30]; ``c_rtol`` > 0; ``c_factor`` > 1;
    ``search_steps``, ``memory``, ``max_iter``, ``batch_size`` integers >= 1; ``candidates`` an
    integer >= 0; ``candidate_ratio`` >= 1; ``kappa`` finite >= 0; ``pgtol``, ``ftol`` finite > 0;
    ``seed`` an integer in [0, 2**63); ``refine`` a bool. Raises InvalidInputError (one line)
    otherwise.
    """

    mode: str = "untargeted"
    target: str | int | None = None
    loss: str = "ce"
    kappa: float = 0.0
    temperature: float | None = None
    c_init: float | None = None
    c_factor: float = 3.0
    search_steps: int = 10
    c_rtol: float = 0.05
    memory: int = 5
    max_iter: int = 100
    pgtol: float = 1e-5
    ftol: float = 1e-3
    batch_size: int = 512
    seed: int = 0
    refine: bool = True
    candidates: int = 3
    candidate_ratio: float = 1.2

    def __post_init__(self) -> None:
        self._check_goal()
        check_loss(self.loss, self.kappa, 1.0 if self.temperature is None else self.temperature)
        if self.c_init is not None:
            check_positive("c_init", self.c_init)
            low, high = C_RANGE
            if not low <= self.c_init <= high:
                raise InvalidInputError(
                    f"c_init must lie in [{low:g}, {high:g}] (beyond, the distance term is 0 or "
                    f"everything at float32 precision), got {self.c_init!r}"
                )
        check_positive("c_rtol", self.c_rtol)
        check_positive("pgtol", self.pgtol)
        check_positive("ftol", self.ftol)
        if not is_finite_number(self.kappa):  # check_loss: >= 0
            raise InvalidInputError(f"kappa must be a finite number >= 0, got {self.kappa!r}")
        if not (is_finite_number(self.c_factor) and self.c_factor > 1.0):
            raise InvalidInputError(f"c_factor must be a finite number > 1, got {self.c_factor!r}")
        if not isinstance(self.refine, bool | np.bool_):
            raise InvalidInputError(f"refine must be True or False, got {self.refine!r}")
        check_count("seed", self.seed, 0)
        if self.seed >= 2**63:
            raise InvalidInputError(f"seed must be below 2**63, got {self.seed!r}")
        for name in ("search_steps", "memory", "max_iter", "batch_size"):
            check_count(name, getattr(self, name), 1)
        check_count("candidates", self.candidates, 0)
        ratio = self.candidate_ratio
        if not (isinstance(ratio, numbers.Real) and not isinstance(ratio, bool) and ratio >= 1.0):
            raise InvalidInputError(f"candidate_ratio must be >= 1, got {self.candidate_ratio!r}")
        self._normalise()

    @classmethod
    def check_names(cls, settings: Iterable[str], *, also: Sequence[str] = ()) -> None:
        """Refuse setting names that are not fields (nor ``also``) in one line listing the valid
        ones (instead of the dataclass's raw TypeError).

        Raises:
            InvalidInputError: an unknown name.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names) - set(also))
        if unknown:
            raise InvalidInputError(
                f"unknown LBFGS setting(s) {', '.join(map(repr, unknown))}; valid settings: "
                f"{', '.join([*names, *also])}"
            )

    def _check_goal(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "untargeted" and self.target not in UNTARGETED_TARGETS:
            raise InvalidInputError(
                f"target={self.target!r} needs mode='targeted'; untargeted mode takes target=None "
                "or 'best'"
            )
        if self.target is not None:
            check_target_choice(self.target)

    def _normalise(self) -> None:
        """Floats as floats, ``refine`` as a bool, targeted ``target=None`` as ``"random"``."""
        values: dict[str, Any] = {
            name: float(getattr(self, name))
            for name in (
                "kappa",
                "c_factor",
                "c_rtol",
                "pgtol",
                "ftol",
                "candidate_ratio",
            )
        }
        for name in ("temperature", "c_init"):
            if getattr(self, name) is not None:
                values[name] = float(getattr(self, name))
        values["refine"] = bool(self.refine)
        for name in ("search_steps", "memory", "max_iter", "batch_size", "seed", "candidates"):
            values[name] = int(getattr(self, name))  # numpy integers as Python ints
        if self.mode == "targeted" and self.target is None:
            values["target"] = "random"
        for name, value in values.items():
            object.__setattr__(self, name, value)
