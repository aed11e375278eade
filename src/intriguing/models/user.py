"""Models a user brings: ``package.module:factory`` specs for the CLI's MODEL arguments."""

from __future__ import annotations

import importlib

from torch import nn

from intriguing.errors import InvalidInputError


def load_user_model(spec: str) -> nn.Module:
    """Build a user's model from ``package.module:factory`` (the factory is called with no arguments).

    The model must take images in [0, 1] and return logits; it is returned in eval mode.

    Raises:
        InvalidInputError: a malformed spec, a module that cannot be imported, a missing or failing
            factory, or a factory that does not return an ``nn.Module``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"model {spec!r}: expected a zoo name or 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"model {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InvalidInputError(f"model {spec!r}: {module_name} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:  # a user's factory can fail in any way; report it on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InvalidInputError(
            f"model {spec!r}: the factory raised {type(exc).__name__}: {first}"
        ) from None
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"model {spec!r}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    return model.eval()
