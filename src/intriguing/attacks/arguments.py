"""One-line checks of numeric settings, shared by the attack's config and the optimiser.

Each raises :class:`~intriguing.errors.InvalidInputError` (a ``ValueError``) naming the setting and
the value it got; numpy scalars count as numbers, bools do not.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from intriguing.errors import InvalidInputError


def is_finite_number(value: object) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(float(value))
    )


def check_finite(name: str, value: object) -> None:
    """InvalidInputError unless ``value`` is a finite number."""
    if not is_finite_number(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")


def check_positive(name: str, value: object) -> None:
    """InvalidInputError unless ``value`` is a finite number > 0."""
    if not (is_finite_number(value) and float(value) > 0):  # type: ignore[arg-type]
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")


def check_count(name: str, value: object, least: int) -> None:
    """InvalidInputError unless ``value`` is an integer (numpy's too; not a bool) >= ``least``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
        raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
    if int(value) < least:
        raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
