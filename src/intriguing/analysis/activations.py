"""Activations phi(x) of any layer of any ``nn.Module``, captured with a forward hook (paper §3).

Section 3 of Szegedy et al. (2014) studies ``phi(x)``, the activation vector of one layer, over an
"image set" (the MNIST test set, the ImageNet validation set). This module computes it for any
``torch.nn.Module`` and any sub-module chosen by its dotted name (``model.named_modules()``):

- a layer is named by any of its dotted names, aliases included (``self.dec = self.enc`` makes
  ``dec`` a second name of ``enc``);
- images are fed in batches; the forward pass stops as soon as the chosen layer has produced its
  output (the layers above it are not run), except once: a full forward pass on a few images counts
  the layer's calls (a layer called twice, e.g. a shared activation or tied weights, has two
  activation vectors per image, so it is refused) and checks with a batch of another size that its
  output is batch-first (row ``i`` belongs to image ``i``; a ``(features, batch)`` output is refused);
- each output is flattened to ``(B, D)`` (a convolutional map ``(B, C, H, W)`` gives
  ``D = C * H * W``) or, with ``reduce="mean"``/``"max"``, pooled over space to ``(B, C)``;
- the result is an ``(N, D)`` float32 array in memory or, for large image sets, a float16/float32
  ``.npy`` file written atomically and memory-mapped back.

Images must be float tensors in ``[0, 1]`` with no NaN (the project's convention); anything else is an
:class:`~intriguing.errors.InvalidInputError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from rich.progress import Progress, TaskID
from torch import nn

from intriguing._io import atomic_path
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.models.user import model_input, refuse_script_module
from intriguing.progress import make_progress
from intriguing.training.trainer import eval_mode

Reduce = Literal["flatten", "mean", "max"]
REDUCTIONS: tuple[str, ...] = ("flatten", "mean", "max")
STORE_DTYPES: tuple[str, ...] = ("float16", "float32")


class ImageSource(Protocol):
    """Anything that can hand out image batches: ``len()`` images, ``batch(start, stop)`` of them.

    ``batch`` returns a float32 tensor ``(stop - start, C, H, W)`` with values in ``[0, 1]``.
    A plain ``torch.Tensor`` of images is accepted wherever an ``ImageSource`` is.
    """

    def __len__(self) -> int: ...

    def batch(self, start: int, stop: int) -> torch.Tensor: ...


class TensorSource:
    """An :class:`ImageSource` over an in-memory image tensor ``(N, C, H, W)``."""

    def __init__(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = (
                tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            )
            raise InvalidInputError(f"images must be a tensor of shape (N, C, H, W), got {shape}")
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, start: int, stop: int) -> torch.Tensor:
        return self.images[start:stop]


class _StopForwardError(Exception):
    """Raised inside the hook to stop the forward pass once the chosen layer has run."""


def _named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every dotted name of every sub-module (the root excluded), aliases included."""
    return [(name, m) for name, m in model.named_modules(remove_duplicate=False) if name]


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of all sub-modules of ``model`` (the root itself excluded), in registration
    order; a module registered under several names (an alias, tied weights) is listed under each."""
    return [name for name, _ in _named_layers(model)]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (an alias resolves to the module it names); an unknown name
    raises an error listing the valid ones."""
    modules = dict(_named_layers(model))
    if not name or name not in modules:
        names = layer_names(model)
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        raise InvalidInputError(f"layer {name!r} not found in the model; available layers: {shown}")
    return modules[name]


def check_images(images: torch.Tensor, *, where: str = "images") -> torch.Tensor:
    """Return ``images`` as float32 after checking shape ``(B, C, H, W)``, finiteness and ``[0, 1]``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InvalidInputError(f"{where} must be a tensor of shape (N, C, H, W)")
    if not images.is_floating_point():
        raise InvalidInputError(f"{where} must be floating point in [0, 1], got {images.dtype}")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise InvalidInputError(f"{where} contain NaN or infinite values; clean the data first")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidInputError(f"{where} must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]")
    return images


def _run_model(model: nn.Module, batch: torch.Tensor) -> None:
    """One forward pass; a model that cannot take these images is a one-line user error."""
    try:
        model(batch)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"the model failed on images of shape {tuple(batch.shape[1:])}: {first}"
        ) from None


def _as_source(images: torch.Tensor | ImageSource) -> ImageSource:
    if isinstance(images, torch.Tensor):
        return TensorSource(images)
    if not (callable(getattr(images, "batch", None)) and hasattr(images, "__len__")):
        raise InvalidInputError(
            f"images must be a torch tensor (N, C, H, W) or an image source, got "
            f"{type(images).__name__}; e.g. torch.from_numpy(array)"
        )
    return images


def _first_tensor(output: object, layer: str = "the chosen layer") -> torch.Tensor:
    """The layer's output tensor (the first element of a tuple output, when it is a tensor)."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise InvalidInputError(
            f"layer {layer!r} returned a {type(output).__name__} whose first element is not a "
            "tensor; choose one of its sub-modules whose output is a tensor (see layer_names)"
            if isinstance(output, (tuple, list))
            else f"layer {layer!r} returned a {type(output).__name__}, not a tensor; choose one "
            "of its sub-modules whose output is a tensor (see layer_names)"
        )
    return output


def _flatten_output(output: torch.Tensor, reduce: Reduce, layer: str) -> torch.Tensor:
    """``(B, ...)`` layer output -> ``(B, D)`` float32; ``reduce`` mean/max pools each channel of
    an output with positions ``(B, C, ...)``, and is refused for a ``(B, D)`` one (it would do
    nothing)."""
    if reduce != "flatten" and output.ndim <= 2:
        raise InvalidInputError(
            f"layer {layer!r} returns {tuple(output.shape[1:])} values per image, no positions to "
            f"pool: reduce={reduce!r} would do nothing; use 'flatten' (drop --reduce)"
        )
    out = output.detach().float().cpu()
    if reduce != "flatten" and out.ndim > 2:
        spatial = out.flatten(2)
        out = spatial.mean(dim=2) if reduce == "mean" else spatial.amax(dim=2)
    return out.reshape(out.shape[0], -1)


class _Capture:
    """A forward hook keeping the chosen layer's outputs; ``stop`` ends the forward pass at the
    first call (the layers above are not run)."""

    def __init__(self) -> None:
        self.outputs: list[object] = []
        self.stop = True

    def __call__(self, _module: nn.Module, _inputs: object, output: object) -> None:
        self.outputs.append(output)
        if self.stop:
            raise _StopForwardError


def _layer_output(
    model: nn.Module, capture: _Capture, batch: torch.Tensor, layer: str
) -> torch.Tensor:
    """The output tensor ``(B, ...)`` of ``layer`` for ``batch`` ``(B, C, H, W)``, batch-first."""
    capture.outputs.clear()
    with torch.inference_mode(), contextlib.suppress(_StopForwardError):
        _run_model(model, model_input(model, batch))  # float64/bf16 models too
    if not capture.outputs:
        raise InvalidInputError(f"layer {layer!r} was never called in the model's forward pass")
    output = _first_tensor(capture.outputs[0], layer)
    _check_batch_first(output, len(batch), layer)
    return output


def _check_batch_first(output: torch.Tensor, size: int, layer: str) -> None:
    """Refuse an output whose first dimension is not the batch (``size`` images)."""
    if output.dim() == 0 or output.shape[0] != size:
        raise InvalidInputError(
            f"layer {layer!r} returned shape {tuple(output.shape)} for a batch of {size}: its "
            "first dimension must be the batch (one row per image); choose a layer whose output "
            "is (batch, ...), e.g. the module after a transpose, or use batch_first=True"
        )


def _probe_size(size: int, shape: tuple[int, ...]) -> int:
    """The smallest batch size that is neither ``size`` nor any dimension of ``shape``."""
    return next(n for n in range(1, size + len(shape) + 2) if n != size and n not in shape)


def _check_one_call(
    model: nn.Module, capture: _Capture, layer: str, batch: torch.Tensor, shape: tuple[int, ...]
) -> None:
    """One full forward pass on a batch of another size than ``batch`` and than any dimension of
    the first output's ``shape``: the layer must be called once and its output be batch-first
    (row ``i`` is image ``i``, section 3). Layers above it that fail on these images (a feature
    extractor used on images the head does not take) end the count there."""
    size = _probe_size(len(batch), shape)
    probe = batch[torch.arange(size) % len(batch)]
    capture.outputs.clear()
    capture.stop = False
    try:
        with torch.inference_mode(), contextlib.suppress(Exception):
            model(model_input(model, probe))
    finally:
        capture.stop = True
    calls = len(capture.outputs)
    if calls > 1:
        module = get_layer(model, layer)
        aliases = [n for n, m in _named_layers(model) if m is module and n != layer]
        also = f" (also named {', '.join(map(repr, aliases))})" if aliases else ""
        raise InvalidInputError(
            f"layer {layer!r}{also} is called {calls} times in one forward pass, so its "
            "activations are ambiguous: wrap each use in its own module (e.g. "
            "nn.Sequential(shared) per call) and choose one of those"
        )
    if calls == 1:
        _check_batch_first(_first_tensor(capture.outputs[0], layer), size, layer)


def iter_activations(
    model: nn.Module,
    layer: str,
    images: torch.Tensor | ImageSource,
    *,
    batch_size: int = 500,
    reduce: Reduce = "flatten",
) -> Generator[torch.Tensor, None, None]:
    """Yield ``phi(x)`` of ``layer`` batch by batch as float32 tensors ``(B, D)``.

    Each forward pass runs under ``torch.inference_mode`` in eval mode (dropout off) with a hook on
    ``layer``; after each pass (so also while the generator is paused between batches) the hook is
    removed and every sub-module's own train/eval flag is restored. The hook stops each forward pass at ``layer``; before
    the first batch is yielded, one full pass on a few of its images checks that ``layer`` is called
    once and returns ``(batch, ...)``.

    Raises:
        InvalidInputError: unknown layer, bad images, a layer never called or called more than once
            per forward pass, an output whose first dimension is not the batch.
    """
    if reduce not in REDUCTIONS:
        raise InvalidInputError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be at least 1, got {batch_size}")
    refuse_script_module(model, "whose layers take no forward hooks")
    module = get_layer(model, layer)
    source = _as_source(images)
    capture = _Capture()
    for start in range(0, len(source), batch_size):
        batch = check_images(source.batch(start, min(start + batch_size, len(source))))
        with _hooked(model, module, capture):
            output = _layer_output(model, capture, batch, layer)
            if start == 0:
                _check_one_call(model, capture, layer, batch, tuple(output.shape))
        capture.outputs.clear()
        yield _flatten_output(output, reduce, layer)


@contextlib.contextmanager
def _hooked(model: nn.Module, module: nn.Module, capture: _Capture) -> Iterator[None]:
    """One forward pass's setting: ``model`` in eval mode with ``capture`` hooked on ``module``;
    afterwards the hook is removed and every sub-module's train/eval flag restored. Used around each
    forward pass only, never across a ``yield``, so the caller's model is untouched between batches."""
    handle = module.register_forward_hook(capture)
    try:
        with eval_mode(model):
            yield
    finally:
        handle.remove()


def compute_activations(
    model: nn.Module,
    layer: str,
    images: torch.Tensor | ImageSource,
    *,
    batch_size: int = 500,
    reduce: Reduce = "flatten",
    out_path: str | os.PathLike[str] | None = None,
    dtype: str = "float32",
    description: str = "activations",
) -> np.ndarray:
    """``phi(x)`` for every image: an ``(N, D)`` array (row ``i`` belongs to image ``i``).

    Args:
        model: any module; run in eval mode.
        layer: dotted sub-module name (see :func:`layer_names`).
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``, or an :class:`ImageSource`.
        batch_size: images per forward pass.
        reduce: ``"flatten"`` keeps every coordinate; ``"mean"``/``"max"`` pool conv maps per channel.
        out_path: if given, stream the rows into this ``.npy`` file (atomic: written to a temporary
            file, renamed when complete) and return it memory-mapped read-only.
        dtype: ``"float32"`` or ``"float16"`` (storage type of the array).
        description: progress-bar label.

    Raises:
        InvalidInputError: unknown layer, bad images, empty image set, NaN activations.
    """
    if dtype not in STORE_DTYPES:
        raise InvalidInputError(f"unknown dtype {dtype!r}; choose one of {', '.join(STORE_DTYPES)}")
    refuse_script_module(model, "whose layers take no forward hooks")  # before the bar
    source = _as_source(images)
    n = len(source)
    if n == 0:
        raise InvalidInputError("the image set is empty")
    batches = iter_activations(model, layer, source, batch_size=batch_size, reduce=reduce)
    with make_progress() as bar:
        task = bar.add_task(description, total=n)
        first = next(batches)
        bar.advance(task, first.shape[0])
        rest = _progress_batches(batches, bar, task)
        if out_path is None:
            phi = np.concatenate([first.numpy(), *(b.numpy() for b in rest)], axis=0)
            result = _cast(phi, dtype)
            _check_finite(result, layer, dtype)
            return result
        return _stream_to_npy(first, rest, n, Path(out_path), dtype, layer)


def _progress_batches(
    batches: Iterator[torch.Tensor], bar: Progress, task: TaskID
) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch
        bar.advance(task, batch.shape[0])


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as ``dtype``; an overflow (float16 beyond 65504) becomes inf, which
    :func:`_check_finite` refuses with its own message rather than numpy's warning."""
    with np.errstate(over="ignore"):
        return values.astype(dtype, copy=False)


def _check_finite(phi: np.ndarray, layer: str, dtype: str = "float32") -> None:
    """Refuse NaN or infinite activations (in ``dtype``: float16 overflows beyond 65504)."""
    if not np.isfinite(phi).all():
        hint = "; they exceed float16's range: drop --float16" if dtype == "float16" else ""
        raise InvalidInputError(
            f"activations of layer {layer!r} contain NaN or infinite values{hint}"
        )


def _stream_to_npy(
    first: torch.Tensor,
    rest: Iterator[torch.Tensor],
    n: int,
    path: Path,
    dtype: str,
    layer: str,
) -> np.ndarray:
    """Write ``(n, D)`` rows into ``path`` atomically and return it memory-mapped (read-only)."""
    dim = int(first.shape[1])
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, dim))
        row = 0
        for batch in _chain(first, rest):
            values = _cast(batch.numpy(), dtype)
            _check_finite(values, layer, dtype)
            array[row : row + values.shape[0]] = values
            row += values.shape[0]
        array.flush()
        del array
    return load_activations(path)


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


def load_activations(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map an activation file written by :func:`compute_activations` (read-only, ``(N, D)``)."""
    try:
        array = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise IntriguingError(f"{path}: activation file not found") from None
    except (ValueError, OSError) as exc:
        raise IntriguingError(
            f"{path}: not a valid .npy activation file ({exc}); delete it"
        ) from None
    if array.ndim != 2:
        raise IntriguingError(f"{path}: expected a 2-D (N, D) array, found shape {array.shape}")
    return array
