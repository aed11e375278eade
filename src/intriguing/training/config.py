"""Training configuration (paper §4.2), kept for its import path.

The classes live in :mod:`intriguing.models.recipe`: the zoo attaches a :class:`TrainConfig` to every
architecture, and models/ sits below training/ in the import rule (docs/architecture.md).
"""

from intriguing.models.recipe import (
    DECAY_DIVISORS,
    OPTIMIZERS,
    SCHEDULES,
    SparseAutoencoderConfig,
    TrainConfig,
)

__all__ = ["DECAY_DIVISORS", "OPTIMIZERS", "SCHEDULES", "SparseAutoencoderConfig", "TrainConfig"]
