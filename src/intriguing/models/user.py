"""Models a user brings: ``package.module:factory`` specs for the CLI's MODEL arguments.

:func:`load_factory_model` (alias :func:`load_user_model`) builds them; :mod:`intriguing.inputs` is
the one way in that also resolves zoo names, checkpoints, weights, normalisation and devices.
``model_device`` and ``predict`` are small helpers for any model.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import numbers
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing.errors import InvalidInputError

MODEL_FORMS = (
    "a zoo name (see 'intriguing zoo'), package.module:factory or file.py:factory "
    "(the current directory is importable), or a zoo checkpoint (.safetensors/.json)"
)


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds, else ``model`` itself.

    The analyses need the network's own structure: ``spectral`` traces it, ``units --layer``
    names its layers, ``--weights`` loads its state dict (the wrapper prefixes every name with
    ``_orig_mod.``); and the attack calls it with ever-changing batch sizes, each a recompilation.
    """
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner
    return model


_FILE_MODULES = itertools.count()


def refuse_script_module(model: nn.Module, what: str) -> None:
    """InvalidInputError (one line) for a TorchScript module, which ``what`` (why it cannot be used)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise InvalidInputError(
            f"{type(model).__name__} is a TorchScript module, {what}; pass the original nn.Module "
            "(before torch.jit.script / torch.jit.trace)"
        )


def _import_file(path: Path, spec: str) -> Any:
    """Run ``file.py`` as the module ``<package>.<stem>`` of a private package whose path is the
    file's folder: its name never shadows another module (a ``random.py`` leaves ``random``
    alone), ``from . import sibling`` imports its siblings privately, and its folder is appended to
    ``sys.path`` so that ``import sibling`` works too (after every other entry: never shadowing)."""
    if not path.is_file():
        raise InvalidInputError(f"model {spec!r}: file {path} not found")
    folder = str(path.resolve().parent)
    package = _unused_module_name()
    loader_spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    if loader_spec is None or loader_spec.loader is None:
        raise InvalidInputError(f"model {spec!r}: cannot load {path}")
    parent = types.ModuleType(package)
    parent.__path__ = [folder]
    module = importlib.util.module_from_spec(loader_spec)
    if folder not in sys.path:
        sys.path.append(folder)
    sys.modules[package], sys.modules[loader_spec.name] = parent, module
    loader = loader_spec.loader
    try:
        _run_user_code(lambda: loader.exec_module(module), spec, "importing it")
    except InvalidInputError:
        _forget(package)
        raise
    return module


def _unused_module_name() -> str:
    """A top-level module name that nothing in ``sys.modules`` uses."""
    while (name := f"_intriguing_model_file_{next(_FILE_MODULES)}") in sys.modules:
        pass
    return name


def _forget(package: str) -> None:
    """Take ``package`` and its submodules (a failed import's own entries) out of sys.modules."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def _import_module(module_name: str, spec: str) -> Any:
    """Import ``module_name`` with the current directory importable, or a ``.py`` file
    (:func:`_import_file`)."""
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), spec)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = (
            f"run from the folder holding {module_name.split('.')[0]}.py or add it to PYTHONPATH"
            if exc.name == module_name.split(".")[0]
            else "a module it imports is missing"
        )
        raise InvalidInputError(
            f"model {spec!r}: cannot import {module_name!r} ({exc}); {hint}"
        ) from None
    except ImportError as exc:
        raise InvalidInputError(f"model {spec!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed
        raise InvalidInputError(f"model {spec!r}: importing it raised {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _run_user_code(call: Any, spec: str, what: str) -> Any:
    try:
        return call()
    except Exception as exc:  # user code can fail in any way; report it on one line
        raise InvalidInputError(f"model {spec!r}: {what} raised {first_line(exc)}") from None


def load_factory_model(spec: str) -> nn.Module:
    """Build ``package.module:factory`` (or ``file.py:factory``), called with no arguments; eval mode.

    Raises:
        InvalidInputError: a malformed spec, a module that cannot be imported, a missing or failing
            factory, or a factory that does not return an ``nn.Module``.
    """
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"model {spec!r}: expected {MODEL_FORMS}")
    module = _import_module(module_name, spec)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InvalidInputError(f"model {spec!r}: {module_name} has no callable {attr!r}")
    model = _run_user_code(factory, spec, "the factory")
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"model {spec!r}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    return eval_mode(model)


load_user_model = load_factory_model


def eval_mode(model: nn.Module) -> nn.Module:
    """``model`` switched to eval mode, in place. ``model.eval()``'s return value is not used: a
    ``train()`` override that forgets ``return self`` makes it None."""
    model.eval()
    return model


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` when it has none)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device(fallback)


def model_dtype(model: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (else ``fallback``)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return fallback


def model_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images`` on the model's device, in the dtype of its floating parameters (float64 models);
    never the caller's own tensor (a forward that changes its input in place, ``x.mul_(2)``, would
    change the caller's images)."""
    dtype = model_dtype(model, images.dtype) if images.is_floating_point() else images.dtype
    moved = images.to(device=model_device(model), dtype=dtype)
    return moved.clone() if moved.data_ptr() == images.data_ptr() else moved


def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 512, *, offset: int = 0
) -> torch.Tensor:
    """Predicted classes ``(N,)`` int64 on the CPU, batch by batch on the model's device;
    ``offset``: the index of ``images[0]`` in the user's data, for messages.

    Raises:
        InvalidInputError: a row of NaN or inf logits (argmax would read it as a class).
    """
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(model_input(model, images[start : start + batch_size]))
            finite = torch.isfinite(logits).flatten(1).all(1)
            if not bool(finite.all()):
                at = offset + start
                raise InvalidInputError(
                    f"the model returned NaN or inf logits for image {at + int((~finite).nonzero()[0])}"
                    f" (0-based) and {int((~finite).sum()) - 1} more of images {at}-"
                    f"{at + len(finite) - 1}; check the model and its inputs"
                )
            out.append(logits.argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def none_correct(n: int) -> InvalidInputError:
    """The error for ``n`` images none of which the model classifies correctly."""
    return InvalidInputError(
        f"none of the {n} images is classified correctly: check the labels, the model's weights "
        "and its input normalisation (--normalize)"
    )


def _is_count(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1


def _check_selection(images: object, labels: object, n: object, batch_size: object) -> None:
    """One line for what :func:`select_correct` cannot use (``n=-1`` kept all but the last correct
    example; labels ``(N, 1)`` broadcast into ``N x N`` "examples")."""
    if n is not None and not _is_count(n):
        raise InvalidInputError(f"n must be an integer >= 1 (or None for all), got {n!r}")
    if not _is_count(batch_size):
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise InvalidInputError("images and labels must be torch tensors")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InvalidInputError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.shape != (images.shape[0],):
        raise InvalidInputError(
            f"labels must have shape ({images.shape[0]},), one per image; got {tuple(labels.shape)}"
        )


def select_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    n: int | None,
    *,
    batch_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` examples the model classifies correctly: ``(images, labels, index)``.

    ``images`` ``(N, ...)`` in the model's input range, ``labels`` int64 ``(N,)``; ``index`` int64
    ``(n,)`` into them, ascending. ``n=None`` keeps every correct one (``len(index)`` is then the
    number classified correctly). Stops predicting once ``n`` are found. The model sees chunks of
    ``batch_size`` images from the start, argmax decides (the one selection of correctly classified
    examples: the CLI, the reproduction graph and the critics' experiments all call it).

    Raises:
        InvalidInputError: ``n`` not None nor an integer >= 1, ``batch_size`` not an integer >= 1,
            labels not integers of shape ``(N,)``, or fewer than ``n`` correct examples.
    """
    _check_selection(images, labels, n, batch_size)
    keep: list[torch.Tensor] = []
    found = 0
    for start in range(0, len(labels), batch_size):
        chunk = slice(start, start + batch_size)
        hit = predict(model, images[chunk], batch_size, offset=start) == labels[chunk].cpu()
        keep.append(hit)
        found += int(hit.sum())
        if n is not None and found >= n:
            break
    mask = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool)
    index = mask.nonzero().squeeze(1)
    if n is not None:
        index = index[:n]
        if len(index) == 0:
            raise none_correct(len(labels))
        if len(index) < n:
            raise InvalidInputError(
                f"only {len(index)} correctly classified images among {len(labels)}; "
                f"lower n (--n) to at most {len(index)} (or attack all images)"
            )
    return images[index], labels[index], index
