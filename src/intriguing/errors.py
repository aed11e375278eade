"""Errors raised for user mistakes.

Every error a user can cause (a wrong path, an unknown model name, a corrupt file, a tensor outside
[0, 1], ...) is an :class:`IntriguingError` whose message is one line naming what is wrong and what
to do. The CLI prints that line and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations


class IntriguingError(Exception):
    """Base class of all user-facing errors: the message is one actionable line."""


class DataError(IntriguingError):
    """A dataset file is missing, truncated, corrupt or has the wrong checksum."""


class UnknownModelError(IntriguingError, KeyError):
    """A model name is not in the zoo."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidInputError(IntriguingError, ValueError):
    """A tensor or argument is out of range, NaN, of the wrong shape or otherwise unusable."""


class CheckpointError(IntriguingError):
    """A checkpoint is missing, corrupt, or does not match the requested model."""


class OutputError(IntriguingError):
    """An output path cannot be written (missing or read-only parent, a file where a folder must be)."""
