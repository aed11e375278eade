"""The model registry: named, documented architectures with their training recipe (robustbench-style).

A :class:`ZooEntry` ties a name (``"N100-100-10"``) to an architecture factory, the
:class:`~intriguing.training.TrainConfig` that trains it, the split it is trained on (``train``,
``p1`` or ``p2``), the paper's reported numbers, and the name of its last hidden layer (for the
unit analysis of §3). The paper's models are registered in :mod:`intriguing.models.zoo`; add your
own with :func:`register_model`::

    @register_model("my-net", description="784-50-10 sigmoid net", hidden_layer="act1",
                    train_config=TrainConfig(optimizer="adam", epochs=5, lr=1e-3))
    def my_net() -> nn.Sequential:
        return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(784, 50),
                                         act1=nn.Sigmoid(), out=nn.Linear(50, 10)))
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from torch import nn

from intriguing.errors import InvalidInputError, UnknownModelError
from intriguing.models.recipe import TrainConfig
from intriguing.models.user import first_line

ModelFactory = Callable[[], nn.Module]
TRAIN_SPLITS: tuple[str, ...] = ("train", "p1", "p2")


@dataclass(frozen=True)
class ZooEntry:
    """One registered model.

    Attributes:
        name: canonical name (e.g. ``"softmax1"``, ``"M1'"``).
        description: one or two sentences: architecture, weight decay, training recipe.
        factory: ``() -> nn.Module`` building an untrained model ((N,1,28,28) in [0,1] -> logits).
        train_config: how :func:`intriguing.training.load_model` trains it.
        train_split: the training split: ``"train"`` (60000), ``"p1"`` or ``"p2"`` (30000 each).
        paper: the paper's numbers, e.g. ``{"table": "1", "train_error": 0.067, "test_error":
            0.074, "distortion": 0.062}`` (errors as fractions); empty when the paper has none.
        hidden_layer: name of the last hidden layer's module (its output is the representation the
            unit analysis of §3 probes); None for models without a hidden layer.
        aliases: other accepted names (e.g. ``"M1p"`` for ``"M1'"``).
    """

    name: str
    description: str
    factory: ModelFactory
    train_config: TrainConfig = field(default_factory=TrainConfig)
    train_split: str = "train"
    paper: Mapping[str, Any] = field(default_factory=dict)
    hidden_layer: str | None = None
    aliases: tuple[str, ...] = ()

    def build(self) -> nn.Module:
        """A fresh, untrained instance (initialised from the global torch RNG).

        Raises:
            InvalidInputError: the factory raises, or returns something that is not an
                ``nn.Module`` (one line naming the model).
        """
        try:
            model = self.factory()
        except InvalidInputError:
            raise
        except Exception as exc:  # user code can fail in any way; report it on one line
            raise InvalidInputError(
                f"model {self.name!r}: its factory raised {first_line(exc)}; fix the factory "
                "registered with register_model"
            ) from None
        if not isinstance(model, nn.Module):
            raise InvalidInputError(
                f"model {self.name!r}: its factory returned {type(model).__name__}, not an "
                "nn.Module; fix the factory registered with register_model"
            )
        return model


_REGISTRY: dict[str, ZooEntry] = {}
_ALIASES: dict[str, str] = {}  # lower-cased name or alias -> canonical name


@overload
def register_model(
    name: str,
    factory: None = None,
    *,
    description: str,
    train_config: TrainConfig | None = None,
    train_split: str = "train",
    paper: Mapping[str, Any] | None = None,
    hidden_layer: str | None = None,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> Callable[[ModelFactory], ModelFactory]: ...


@overload
def register_model(
    name: str,
    factory: ModelFactory,
    *,
    description: str,
    train_config: TrainConfig | None = None,
    train_split: str = "train",
    paper: Mapping[str, Any] | None = None,
    hidden_layer: str | None = None,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> ZooEntry: ...


def register_model(
    name: str,
    factory: ModelFactory | None = None,
    *,
    description: str,
    train_config: TrainConfig | None = None,
    train_split: str = "train",
    paper: Mapping[str, Any] | None = None,
    hidden_layer: str | None = None,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> ZooEntry | Callable[[ModelFactory], ModelFactory]:
    """Register a model: as a decorator on a factory, or called with the factory.

    Args:
        name: the model's name (case-insensitively unique among names and aliases).
        factory: ``() -> nn.Module``; omit it to use ``register_model`` as a decorator.
        description: shown by ``intriguing zoo``.
        train_config: training recipe (default: ``TrainConfig()``, full-batch L-BFGS).
        train_split: ``"train"``, ``"p1"`` or ``"p2"``.
        paper: the paper's numbers for this model, if any.
        hidden_layer: the module name of the last hidden layer, if any.
        aliases: alternative names.
        replace: allow overwriting an existing registration of ``name``.

    Returns:
        The :class:`ZooEntry` when called with a factory; the decorator otherwise (it returns the
        factory unchanged).

    Raises:
        InvalidInputError: a clash with an existing name or alias, an unknown split, or an argument
            of the wrong type (a blank or non-string name, a non-callable factory, ``aliases`` given
            as one string, a ``train_config`` that is not a ``TrainConfig``, ...).
    """
    alias_names = _check_registration(
        name, description, train_config, train_split, paper, hidden_layer, aliases, replace
    )
    if factory is not None:
        _check_factory(name, factory)

    def make(fn: ModelFactory) -> ZooEntry:
        entry = ZooEntry(
            name=name,
            description=description,
            factory=fn,
            train_config=train_config if train_config is not None else TrainConfig(),
            train_split=train_split,
            paper=dict(paper or {}),
            hidden_layer=hidden_layer,
            aliases=alias_names,
        )
        _add(entry, replace=replace)
        return entry

    if factory is not None:
        return make(factory)

    def decorator(fn: ModelFactory) -> ModelFactory:
        _check_factory(name, fn)
        make(fn)
        return fn

    return decorator


def _blank(value: object) -> bool:
    """Whether ``value`` is not a non-blank string."""
    return not isinstance(value, str) or not value.strip()


def _check_registration(
    name: object,
    description: object,
    train_config: object,
    train_split: object,
    paper: object,
    hidden_layer: object,
    aliases: object,
    replace: object,
) -> tuple[str, ...]:
    """Refuse unusable :func:`register_model` arguments with one line each; returns the aliases
    as a tuple."""
    if _blank(name):
        raise InvalidInputError(f"model name must be a non-blank string, got {name!r}")
    if not isinstance(description, str):
        raise InvalidInputError(
            f"model {name!r}: description must be a string, got {type(description).__name__}"
        )
    if train_config is not None and not isinstance(train_config, TrainConfig):
        raise InvalidInputError(
            f"model {name!r}: train_config must be a TrainConfig, got "
            f"{type(train_config).__name__}; pass TrainConfig(**settings)"
        )
    if train_split not in TRAIN_SPLITS:
        raise InvalidInputError(
            f"train_split must be one of {', '.join(TRAIN_SPLITS)}; got {train_split!r}"
        )
    if paper is not None and not isinstance(paper, Mapping):
        raise InvalidInputError(
            f"model {name!r}: paper must be a dict of the paper's numbers, got "
            f"{type(paper).__name__}"
        )
    if hidden_layer is not None and _blank(hidden_layer):
        raise InvalidInputError(
            f"model {name!r}: hidden_layer must be a module name (a non-blank string) or None, "
            f"got {hidden_layer!r}"
        )
    if isinstance(aliases, str | bytes) or not isinstance(aliases, Iterable):
        raise InvalidInputError(
            f"model {name!r}: aliases must be a list or tuple of names, got {aliases!r}; "
            f"write aliases=[{aliases!r}] for one alias"
        )
    names = tuple(aliases)
    bad = [alias for alias in names if _blank(alias)]
    if bad:
        raise InvalidInputError(
            f"model {name!r}: every alias must be a non-blank string, got {bad[0]!r}"
        )
    if not isinstance(replace, bool):
        raise InvalidInputError(f"replace must be True or False, got {replace!r}")
    return names


def _check_factory(name: str, factory: object) -> None:
    if not callable(factory):
        raise InvalidInputError(
            f"model {name!r}: factory must be a callable () -> nn.Module, got "
            f"{type(factory).__name__}"
        )


def _add(entry: ZooEntry, *, replace: bool) -> None:
    keys = [entry.name, *entry.aliases]
    for key in keys:
        owner = _ALIASES.get(key.lower())
        if owner is not None and not (replace and owner == entry.name):
            raise InvalidInputError(
                f"model name {key!r} is already registered (by {owner!r}); "
                "choose another name or pass replace=True"
            )
    if entry.name in _REGISTRY:
        unregister_model(entry.name)
    _REGISTRY[entry.name] = entry
    for key in keys:
        _ALIASES[key.lower()] = entry.name


def unregister_model(name: str) -> None:
    """Remove a registered model and its aliases.

    Raises:
        UnknownModelError: ``name`` is not registered.
    """
    entry = get_entry(name)
    del _REGISTRY[entry.name]
    for key in [entry.name, *entry.aliases]:
        _ALIASES.pop(key.lower(), None)


def model_names() -> list[str]:
    """Canonical names of all registered models, in registration order."""
    return list(_REGISTRY)


def list_entries() -> list[ZooEntry]:
    """All registered entries, in registration order."""
    return list(_REGISTRY.values())


def get_entry(name: str) -> ZooEntry:
    """The entry registered as ``name`` (or one of its aliases; case-insensitive).

    Raises:
        UnknownModelError: no such model; the message lists close matches or all names.
    """
    canonical = _ALIASES.get(str(name).lower())
    if canonical is None:
        raise UnknownModelError(_unknown_message(str(name)))
    return _REGISTRY[canonical]


def build_model(name: str) -> nn.Module:
    """A fresh, untrained model ``name`` (weights drawn from the global torch RNG).

    Raises:
        UnknownModelError: no such model.
    """
    return get_entry(name).build()


def _unknown_message(name: str) -> str:
    candidates = {key: canonical for key, canonical in _ALIASES.items()}
    close = difflib.get_close_matches(name.lower(), list(candidates), n=3, cutoff=0.5)
    suggestions = list(dict.fromkeys(candidates[key] for key in close))
    if suggestions:
        hint = "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    else:
        hint = "available: " + ", ".join(_REGISTRY)
    return f"unknown model {name!r}; {hint} (see `intriguing zoo`)"
