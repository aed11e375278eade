"""One way in for models and data, shared by every command and the Python API (issue 14).

MODEL (:func:`load_any_model`, :func:`resolve_model`) is one of

- a zoo name (``intriguing zoo`` lists them; trained and cached on first use),
- ``package.module:factory`` or ``path/to/file.py:factory``: a callable with no arguments returning
  an ``nn.Module``; the current directory is importable, as with ``python -m``,
- a zoo checkpoint file (``.safetensors`` beside its ``.json`` sidecar);

optionally with ``weights=`` (a ``.safetensors`` state dict whose keys and shapes must match the
model; pickles are never read), ``preprocessing=(mean, std)`` (per channel; the model is wrapped as
``Preprocessed(Normalize(mean, std), model)`` so that attacks, distortions and budgets stay in [0, 1]
pixel space and the spectral bound includes it) and ``device="cpu"|"cuda"|"auto"``.

DATA (:func:`open_data`) is MNIST (``dataset="mnist"|"mnist-5k"``, a split), a folder of images
(flat with an optional labels file, or one subfolder per class as torchvision's ImageFolder), or a
tensor file (``.safetensors`` / ``.npz`` with ``images`` float ``(N, ...)`` in [0, 1]: images
``(N, C, H, W)``, signals ``(N, C, L)``, feature vectors ``(N, D)``; and optional ``labels`` int
``(N,)``). :func:`check_model_input` runs one probe forward before any work;
:func:`select_correct` is the one way to pick correctly classified examples.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack, get_args

import numpy as np
import torch
from torch import nn

from intriguing.attacks.checks import (
    check_images,
    check_not_meta,
    check_repeatable,
    check_same_logits,
    logits_shape_problem,
)
from intriguing.errors import InvalidInputError, UnknownModelError
from intriguing.models.user import (
    MODEL_FORMS,
    eval_mode,
    first_line,
    load_factory_model,
    model_device,  # noqa: F401  (re-exported: intriguing.inputs.model_device)
    model_input,
    none_correct,
    predict,
    select_correct,
    uncompiled,
)

if TYPE_CHECKING:
    from intriguing.training.api import ZooTraining

Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = get_args(Device)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar")
TENSOR_SUFFIXES = (".safetensors", ".npz")


# --------------------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """``cpu``, ``cuda`` (refused when CUDA is absent) or ``auto`` (cuda if available)."""
    if isinstance(device, torch.device):
        return device
    text = (device or "cpu").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device {text!r}: CUDA is not available here; use --device cpu or auto"
            )
        return torch.device(text)
    if text != "cpu":
        raise InvalidInputError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """A resolved MODEL: the module (eval mode), its kind and a one-line description."""

    model: nn.Module
    kind: str  # "zoo" | "factory" | "checkpoint"
    description: str
    name: str


def resolve_model(
    spec: str, *, trained: bool = True, **training: Unpack[ZooTraining]
) -> LoadedModel:
    """The model named by ``spec`` (see the module docstring), in eval mode, on the CPU.

    ``trained=False`` builds a zoo architecture untrained (for ``weights=``) instead of training it;
    a zoo model is trained (or loaded from the cache) by :func:`intriguing.training.train_model`
    with ``training``: ``dataset``, ``data_dir``, ``seed``
    (:class:`~intriguing.training.api.ZooTraining`).

    Raises:
        UnknownModelError: ``spec`` is none of the forms (the message lists them).
        InvalidInputError, CheckpointError: the form is right but the model cannot be built, or
            ``spec`` is not a string (an ``nn.Module`` is refused in one line).
    """
    text = _spec_text(spec)
    if Path(text).suffix.lower() in (".safetensors", ".json"):
        from intriguing.training.api import load_checkpoint

        loaded = load_checkpoint(Path(text))
        name = f"checkpoint {Path(text).name} ({loaded.name})"
        return LoadedModel(loaded.model.eval(), "checkpoint", name, loaded.name)
    if ":" in text:
        return LoadedModel(load_factory_model(text), "factory", f"factory {text}", text)
    from intriguing.models import build_model, get_entry

    try:
        entry = get_entry(text)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{exc}. MODEL is {MODEL_FORMS}") from None
    if not trained:
        return LoadedModel(
            build_model(entry.name).eval(), "zoo", f"zoo model {entry.name}", entry.name
        )
    from intriguing.training.api import train_model

    done = train_model(entry.name, **training)
    description = f"zoo model {done.name} ({training.get('dataset', 'mnist')})"
    return LoadedModel(done.model.eval(), "zoo", description, done.name)


def _spec_text(spec: object) -> str:
    """``spec`` as stripped text; an ``nn.Module`` or any other non-string raises one line."""
    if isinstance(spec, nn.Module):
        raise InvalidInputError(
            f"MODEL must be a spec string, got a {type(spec).__name__} module; pass the module "
            "directly to the analysis functions, or give a 'module:factory' spec"
        )
    if not isinstance(spec, str | os.PathLike):
        raise InvalidInputError(
            f"MODEL must be a spec string, got {type(spec).__name__}; give {MODEL_FORMS}"
        )
    return str(os.fspath(spec)).strip()


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a ``.safetensors`` state dict into ``model`` after checking every key and shape.

    Raises:
        InvalidInputError: not a ``.safetensors`` file (pickles are never read), unreadable, keys
            missing or unexpected, a shape that differs, or non-finite values.
    """
    file = Path(path)
    if file.suffix.lower() != ".safetensors":
        why = (
            " (pickles can run code and are never read)"
            if file.suffix.lower() in PICKLE_SUFFIXES
            else ""
        )
        raise InvalidInputError(
            f"--weights {file}: only .safetensors state dicts are read{why}; save one with "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        )
    if not file.is_file():
        raise InvalidInputError(f"--weights {file}: file not found")
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise InvalidInputError(
            f"--weights {file}: not a readable safetensors file ({first_line(exc)})"
        ) from None
    expected = model.state_dict()
    _check_state(file, expected, state)
    # a model built on the meta device (shapes only) takes the file's tensors as its own, in the
    # dtypes it was built with (as load_state_dict's copy gives any other model)
    on_meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    if on_meta:
        state = {key: value.to(expected[key].dtype) for key, value in state.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_state(
    file: Path, expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(unexpected)}"] if unexpected else []
        )
        raise InvalidInputError(
            f"--weights {file}: keys do not match the model: {'; '.join(parts)}"
        )
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise InvalidInputError(
                f"--weights {file}: {key} has shape {tuple(got.shape)} in the file but "
                f"{tuple(want.shape)} in the model"
            )
        if want.is_floating_point() and not got.is_floating_point():
            raise InvalidInputError(
                f"--weights {file}: {key} is {got.dtype} in the file but {want.dtype} in the "
                "model; save the model's floating weights"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise InvalidInputError(f"--weights {file}: {key} holds NaN or infinite values")


def parse_normalize(text: str) -> tuple[list[float], list[float]]:
    """``"MEAN,STD"`` per channel: ``"0.1307,0.3081"`` or ``"m_r,m_g,m_b,s_r,s_g,s_b"``.

    The first half of the numbers are the means, the second half the standard deviations
    (finite, stds > 0: checked here, before any model is trained).
    """
    if not text.strip():
        raise InvalidInputError(
            "--normalize is empty; give the means then the stds, one of each per channel "
            "(e.g. 0.1307,0.3081 or 0.5,0.5,0.5,0.2,0.2,0.2), or leave the option out"
        )
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--normalize {text!r}: expected comma-separated numbers, means then stds "
            "(e.g. 0.1307,0.3081 or 0.5,0.5,0.5,0.2,0.2,0.2)"
        ) from None
    if not values or len(values) % 2:
        raise InvalidInputError(
            f"--normalize {text!r}: give one mean and one std per channel, means first "
            "(e.g. 0.1307,0.3081 or 0.5,0.5,0.5,0.2,0.2,0.2)"
        )
    half = len(values) // 2
    means, stds = values[:half], values[half:]
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"--normalize {text!r}: every mean and std must be a finite number")
    if any(s <= 0 for s in stds):
        raise InvalidInputError(
            f"--normalize {text!r}: every std (the second half of the numbers) must be > 0"
        )
    return means, stds


_PREPROCESSING_USAGE = (
    "give preprocessing=(mean, std) with one number per channel in each, e.g. ([0.1307], "
    "[0.3081]), or the text '0.1307,0.3081'"
)


def preprocessing_pair(
    preprocessing: tuple[Sequence[float], Sequence[float]] | str,
) -> tuple[list[float], list[float]]:
    """``(mean, std)`` as two lists of floats, from a pair of sequences or ``"MEAN,STD"`` text.

    Raises:
        InvalidInputError: not a pair, a part that is a single number or text, or a value that is
            not a number (one line). Lengths, finiteness and ``std > 0`` are checked by
            :class:`~intriguing.models.preprocessing.Normalize`.
    """
    if isinstance(preprocessing, str):
        return parse_normalize(preprocessing)
    if not isinstance(preprocessing, tuple | list) or len(preprocessing) != 2:
        size = f" of length {len(preprocessing)}" if isinstance(preprocessing, tuple | list) else ""
        raise InvalidInputError(
            f"preprocessing must be a (mean, std) pair, got a {type(preprocessing).__name__}{size}; "
            + _PREPROCESSING_USAGE
        )
    parts: list[list[float]] = []
    for name, part in zip(("mean", "std"), preprocessing, strict=True):
        if isinstance(part, str | bytes) or not isinstance(
            part, Sequence | np.ndarray | torch.Tensor
        ):
            raise InvalidInputError(
                f"preprocessing's {name} must be a sequence of numbers (one per channel), got "
                f"{part!r}; " + _PREPROCESSING_USAGE
            )
        values = part.tolist() if isinstance(part, np.ndarray | torch.Tensor) else list(part)
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise InvalidInputError(
                f"preprocessing's {name} must hold numbers only, got {values!r}; "
                + _PREPROCESSING_USAGE
            )
        parts.append([float(v) for v in values])
    return parts[0], parts[1]


def finish_model(
    model: nn.Module,
    *,
    weights: str | os.PathLike[str] | None = None,
    preprocessing: tuple[Sequence[float], Sequence[float]] | str | None = None,
    device: str | torch.device | None = "cpu",
) -> nn.Module:
    """Load ``weights``, wrap ``preprocessing`` (``(mean, std)`` or ``"MEAN,STD"``), move to ``device``.

    A ``torch.compile`` wrapper is taken off first (:func:`uncompiled`).
    """
    from intriguing.models.preprocessing import with_preprocessing

    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    pair = None if preprocessing is None else preprocessing_pair(preprocessing)
    model = uncompiled(model)
    target = resolve_device(device)
    if weights is not None:
        load_weights(model, weights)
    check_not_meta(model, after_weights=weights is not None)
    if pair is not None:
        model = with_preprocessing(model, *pair)
    return eval_mode(model.to(target))


def load_any_model(
    spec: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    preprocessing: tuple[Sequence[float], Sequence[float]] | str | None = None,
    device: str | torch.device | None = "cpu",
    **training: Unpack[ZooTraining],
) -> nn.Module:
    """MODEL ``spec`` in eval mode on ``device``, with ``weights`` and ``preprocessing`` applied
    (a zoo model trained with ``training``: ``dataset``, ``data_dir``, ``seed``, as for
    :func:`resolve_model`).

    ``preprocessing=(mean, std)`` (one value per channel) wraps the model as
    ``Preprocessed(Normalize(mean, std), model)``: it then takes images in [0, 1].
    """
    target = resolve_device(device)  # refuse a bad device before any training
    if preprocessing is not None:
        preprocessing = preprocessing_pair(preprocessing)  # and bad preprocessing
    loaded = resolve_model(spec, trained=weights is None, **training)
    return finish_model(loaded.model, weights=weights, preprocessing=preprocessing, device=target)


# ----------------------------------------------------------------------------- model/data checks
_CONVOLUTIONS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_FIRST_LAYERS = (*_CONVOLUTIONS, nn.Linear)  # lazy versions included (subclasses)
_INPUTS = {1: "signals (N, C, L)", 2: "images (N, C, H, W)", 3: "volumes (N, C, D, H, W)"}


def expected_channels(model: nn.Module) -> int | None:
    """Input channels the model states: its first Normalize (more than one channel) or
    convolution (not a lazy one, whose channels follow the data)."""
    from intriguing.models.preprocessing import Normalize

    for module in model.modules():
        if isinstance(module, Normalize) and module.mean.numel() > 1:
            return int(module.mean.numel())
        if isinstance(module, _CONVOLUTIONS):
            return int(module.in_channels) or None
        if isinstance(module, nn.Linear):
            return None
    return None


def _normalize_channels(model: nn.Module) -> int | None:
    """The number of means of the model's first Normalize (``--normalize``), else None."""
    from intriguing.models.preprocessing import Normalize

    for module in model.modules():
        if isinstance(module, Normalize):
            return int(module.mean.numel())
    return None


def first_layer(model: nn.Module, probe: torch.Tensor | None = None) -> nn.Module | None:
    """The model's first convolution or linear layer: the first one its forward calls on
    ``probe`` (:func:`first_call`; even if the forward then fails), else (no probe, or none
    called) the first one registered."""
    call = None if probe is None else first_call(model, probe)
    if call is not None:
        return call.layer
    return next((m for m in model.modules() if isinstance(m, _FIRST_LAYERS)), None)


@dataclass
class FirstCall:
    """The first convolution or linear layer a forward calls, and the tensor it received."""

    layer: nn.Module
    received: torch.Tensor  # its input, detached

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.received.shape)


class _StopForwardError(Exception):
    """Raised by the pre-hook: nothing after the first layer matters."""


def first_call(model: nn.Module, probe: torch.Tensor) -> FirstCall | None:
    """Run ``model`` on ``probe`` up to its first convolution or linear module; None when it calls
    none (or its forward fails before, or it cannot be hooked, as a TorchScript module)."""
    found: list[FirstCall] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        first = inputs[0] if inputs else None
        if isinstance(first, torch.Tensor):
            found.append(FirstCall(module, first.detach().clone()))
        raise _StopForwardError

    layers = [m for m in model.modules() if isinstance(m, _FIRST_LAYERS)]
    try:
        hooks = [m.register_forward_pre_hook(hook) for m in layers]
    except Exception:  # TorchScript modules take no Python hooks
        return None
    try:
        with torch.no_grad():
            model(probe)
    except Exception:  # _StopForwardError, or the forward failed before any layer
        pass
    finally:
        for handle in hooks:
            handle.remove()
    return found[0] if found else None


class InputWarning(UserWarning):
    """Data that the model accepts but that may not be what it was made for."""


def _describe_layer(layer: nn.Module) -> str:
    name = type(layer).__name__
    if isinstance(layer, nn.Linear):
        if not layer.in_features:  # LazyLinear before its first call
            return f"flattened inputs (first layer {name}, its size inferred)"
        size = layer.in_features
        return f"{size} inputs per image (first layer {name}({size}, ...))"
    if not isinstance(layer, _CONVOLUTIONS):
        return f"another input shape (first layer {name})"
    kind = _INPUTS.get(len(layer.kernel_size), "inputs")
    if not layer.in_channels:  # a lazy convolution before its first call
        return f"{kind} (first layer {name}, its channels inferred)"
    return f"{layer.in_channels}-channel {kind} (first layer {name}({layer.in_channels}, ...))"


def describe_expected(model: nn.Module, probe: torch.Tensor | None = None) -> str:
    """What the model's first layer (:func:`first_layer`) says about its input, for messages."""
    layer = first_layer(model, probe)
    if layer is not None:
        return _describe_layer(layer)
    channels = expected_channels(model)
    return f"{channels}-channel images" if channels else "another input shape"


def check_model_input(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None
) -> int:
    """Probe forwards of ``images[:2]`` and ``images[:1]``: the model must return finite logits
    ``(B, K)`` for both batch sizes, the same for the first image in both
    (:func:`~intriguing.attacks.checks.check_same_logits`).

    Returns the number of classes ``K``. Raises a one-line :class:`InvalidInputError` naming the
    model's expected input and the data's shape on any mismatch, and when a label is ``>= K``.
    """
    shape = shape_text(images)
    check_not_meta(model)
    _check_channels(model, images, shape)
    probe = model_input(model, images[:2])
    logits = _logits(_probe(model, probe.clone(), shape), len(probe), shape)
    if not bool(torch.isfinite(logits).all()):
        raise InvalidInputError(f"the model returned NaN or infinite logits on the data ({shape})")
    check_repeatable(logits, _logits(_probe(model, probe.clone(), shape), len(probe), shape))
    _warn_if_spread(model, probe.clone(), shape)
    # batches of one image too (an attack's, an evaluation's last chunk); the first and the last
    # image alone: a forward that mixes the batch may spare its first row (net(x[:1]).expand)
    for row in {0, len(probe) - 1}:
        alone = _logits(_probe_one(model, probe[row : row + 1].clone()), 1, shape)
        check_same_logits(logits[row], alone[0])
    classes = int(logits.shape[1])
    if labels is not None and len(labels) and int(labels.max()) >= classes:
        raise InvalidInputError(
            f"label {int(labels.max())} is out of range for a model with {classes} outputs"
        )
    return classes


def shape_text(images: torch.Tensor) -> str:
    """One example's shape with its axes named: ``3x32x33 (C x H x W)``, ``2x4096 (C x L)``,
    ``10000 (D)``."""
    axes = {3: " (C x H x W)", 2: " (C x L)", 1: " (D)"}.get(images.ndim - 1, "")
    return "x".join(map(str, images.shape[1:])) + axes


def _check_channels(model: nn.Module, images: torch.Tensor, shape: str) -> None:
    """Refuse data whose channels differ from the model's normalisation (which would broadcast one
    grey channel to three without an error)."""
    means = _normalize_channels(model)
    if means is not None and means > 1 and images.ndim >= 2 and images.shape[1] != means:
        if images.ndim == 4 and images.shape[3] == means:
            raise InvalidInputError(
                f"the normalisation has {means} channels but the data is {shape}: the data looks "
                "channels-last (N, H, W, C); store (N, C, H, W), e.g. images.permute(0, 3, 1, 2)"
            )
        raise InvalidInputError(
            f"the normalisation has {means} channels (means, stds) but the data has "
            f"{images.shape[1]} ({shape}); give one mean and one std per data channel, or one "
            "of each for every channel (e.g. --normalize 0.1307,0.3081 for grey images, six "
            "numbers for RGB)"
        )


def _channel_problem(
    model: nn.Module, probe: torch.Tensor, shape: str, call: FirstCall | None
) -> str | None:
    """Why images ``probe`` ``(N, C, H, W)`` cannot be the input of the model's first convolution,
    with a hint, or None. Asked after the forward failed: the channels are blamed when the first
    convolution module called received the data's channels and wanted others (a forward may
    reshape its input, or convolve it functionally, first), or, when the forward failed before
    any module layer, when the data looks channels-last for the first registered convolution.
    ``call``: :func:`first_call` on ``probe``."""
    if probe.ndim != 4:
        return None
    if call is None:
        layer = first_layer(model)
        if isinstance(layer, _CONVOLUTIONS) and layer.in_channels:
            channels = int(layer.in_channels)
            if probe.shape[1] != channels and probe.shape[3] == channels:
                return _channel_message(layer, probe, shape)
        return None
    if not isinstance(call.layer, _CONVOLUTIONS) or not call.layer.in_channels:
        return None
    received = call.shape[1] if len(call.shape) > 1 else -1
    if received == call.layer.in_channels or received != probe.shape[1]:
        return None
    return _channel_message(call.layer, probe, shape)


def _channel_message(layer: nn.Module, probe: torch.Tensor, shape: str) -> str:
    channels = int(layer.in_channels)  # type: ignore[arg-type]
    hint = (
        "the data looks channels-last (N, H, W, C): store (N, C, H, W), e.g. "
        "images.permute(0, 3, 1, 2)"
        if probe.shape[3] == channels
        else f"store {channels}-channel images in a tensor file, or for an image folder set "
        "the colour mode (--mode, or --image-mode for attack)"
    )
    return f"the model expects {_describe_layer(layer)} but the data is {shape}; {hint}"


def _warn_if_spread(model: nn.Module, probe: torch.Tensor, shape: str) -> None:
    """Warn when one-channel images reach the model's first convolution as several channels that
    are each ``a_c y + b_c`` of the first (a normalisation with one mean per colour channel inside
    the model broadcasts grey images so, as does ``x.repeat(1, 3, 1, 1)`` on purpose): the model
    may be made for colour images. A warning, not a refusal: grey images are valid colour images,
    and the forward's intent cannot be told from its result."""
    if probe.ndim != 4 or probe.shape[1] != 1:
        return
    call = first_call(model, probe)
    if call is None or not isinstance(call.layer, _CONVOLUTIONS) or len(call.shape) != 4:
        return
    received = call.received
    channels = received.shape[1]
    if channels < 2:
        return
    tolerance = max(1e-4, 4 * torch.finfo(received.dtype).eps)
    values = received.double().transpose(0, 1).flatten(1)  # (C, everything else)
    spread = values.amax(1) - values.amin(1)
    values = values[spread > tolerance * (1.0 + values.abs().amax(1))]  # constant planes: masks
    if len(values) < 2:
        return
    first = values[0]
    design = torch.stack((first, torch.ones_like(first)), 1)
    fit = torch.linalg.lstsq(design, values[1:].T).solution  # (2, C - 1)
    residual = (design @ fit - values[1:].T).abs().amax(0)
    if bool((residual > tolerance * (1.0 + values[1:].abs().amax(1))).any()):
        return
    warnings.warn(
        f"the model's first convolution, {type(call.layer).__name__}({call.layer.in_channels}, "
        f"...), receives the {shape} data spread over {channels} channels by the forward (as a "
        f"normalisation with {channels} means inside the model does); if the model is made for "
        f"{channels}-channel images, give such images",
        InputWarning,
        stacklevel=3,
    )


def _probe(model: nn.Module, probe: torch.Tensor, shape: str) -> Any:
    """The model's output on ``probe``; a one-line error naming its expected input if it fails."""
    try:
        with torch.no_grad():
            return model(probe)
    except Exception as exc:  # any shape error of the user's model
        call = first_call(model, probe)
        problem = _channel_problem(model, probe, shape, call)
        expects = (
            "" if call is None or _took(call) else f" it expects {_describe_layer(call.layer)};"
        )
        raise InvalidInputError(
            problem
            or f"the model does not accept the data ({shape}):{expects} the probe forward "
            f"raised {_error_line(exc)}{_channels_last_note(model, probe, call)}"
        ) from None


def _channels_last_note(model: nn.Module, probe: torch.Tensor, call: FirstCall | None) -> str:
    """A hint after the forward's own error when it failed before any module layer on data shaped
    like ``H x W x C`` (C in 1, 3, 4) that the first registered convolution does not take as is."""
    if (
        call is not None
        or probe.ndim != 4
        or probe.shape[1] <= 4
        or probe.shape[3] not in (1, 3, 4)
    ):
        return ""
    layer = first_layer(model)
    if isinstance(layer, _CONVOLUTIONS) and layer.in_channels == probe.shape[1]:
        return ""
    return " (if the data is channels-last (N, H, W, C), store (N, C, H, W): images.permute(0, 3, 1, 2))"


def _took(call: FirstCall | None) -> bool:
    """Whether the first layer the forward called took the data as it came (the failure is then
    further on); True when none was called (PyTorch's message says more than ours could)."""
    if call is None:
        return True
    layer = call.layer
    if isinstance(layer, _CONVOLUTIONS):
        return len(call.shape) == len(layer.kernel_size) + 2 and call.shape[1] == layer.in_channels
    if isinstance(layer, nn.Linear):
        return len(call.shape) >= 1 and call.shape[-1] == layer.in_features
    return False


def _error_line(exc: BaseException) -> str:
    """The line of a forward's error that names the problem: the first, or for TorchScript's
    interpreter (whose first line only says that an operation failed) the last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and "TorchScript interpreter" in lines[0]:
        name = type(exc).__name__
        return lines[-1] if lines[-1].startswith(f"{name}:") else f"{name}: {lines[-1]}"
    return first_line(exc)


def _probe_one(model: nn.Module, probe: torch.Tensor) -> Any:
    """The model's output on one image (it ran on two); a one-line error if it fails."""
    try:
        with torch.no_grad():
            return model(probe)
    except Exception as exc:  # batch statistics (BatchNorm in training mode), reshapes, ...
        raise InvalidInputError(
            f"the model fails on a batch of 1 image ({first_line(exc)}) though it runs on 2; "
            "commands call it on batches of any size, down to 1"
        ) from None


def _logits(output: Any, n: int, shape: str) -> torch.Tensor:
    """``output`` if it is floating logits ``(n, K)`` with ``K >= 2``; else a one-line error."""
    if isinstance(output, torch.Tensor) and n == 1:
        problem = logits_shape_problem(tuple(output.shape), 1)
        if problem is not None:
            raise InvalidInputError(problem)
    if not isinstance(output, torch.Tensor) or logits_shape_problem(tuple(output.shape), n):
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InvalidInputError(
            f"the model must return logits (N, classes) with at least 2 classes for images "
            f"{shape}; it returned {got}"
        )
    if not output.is_floating_point():
        raise InvalidInputError(
            f"the model must return floating logits for images {shape}; it returned "
            f"{output.dtype} (return the raw scores, not class indices)"
        )
    if output.device.type == "meta":
        raise InvalidInputError(
            "the model returned its logits on the meta device (no values); return them on the "
            "device of its input"
        )
    return output


# ------------------------------------------------------------------------------------------ data
@dataclass
class DataSource:
    """Images for a command: MNIST, a folder or a tensor file.

    ``images`` is a float32 ``(N, C, H, W)`` tensor in [0, 1] (MNIST, tensors) or a lazy
    :class:`~intriguing.analysis.imagefolder.ImageFolderSource`; ``labels`` is int64 ``(N,)`` or
    None (a folder without labels, a tensor file without ``labels``).
    """

    kind: str  # "mnist" | "folder" | "tensors"
    images: Any
    labels: torch.Tensor | None
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start:stop`` as float32 ``(B, C, H, W)`` in [0, 1]."""
        if isinstance(self.images, torch.Tensor):
            return self.images[start:stop]
        return self.images.batch(start, min(stop, len(self.images)))

    def take(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """The first ``n`` (all when None; else an integer >= 1, at most ``len(self)``) images,
        labels and names, decoded."""
        check_count_or_none("n", n)
        if n is not None and n > len(self):
            raise InvalidInputError(
                f"only {len(self)} images in {self.meta.get('path', 'the data')}; lower n (--n) "
                f"to at most {len(self)}"
            )
        count = len(self) if n is None else n
        labels = None if self.labels is None else self.labels[:count]
        return self.batch(0, count), labels, self.names[:count]

    def fit_to(self, model: nn.Module, *, labels: bool = True) -> int:
        """Choose the folder's colour mode from the model (when not given), then probe once.

        ``labels=False``: a command that uses no labels (figure5) does not check them against
        the model's classes. Returns the model's number of classes; raises one line on any
        mismatch.
        """
        if self.kind == "folder" and self.meta.get("mode") is None:
            self.images.mode = _mode_for(model, self.images)
            self.meta["mode"] = self.images.mode
        probe = self.batch(0, min(2, len(self)))
        return check_model_input(model, probe, self.labels if labels else None)


def _mode_for(model: nn.Module, source: Any) -> str:
    """``L`` or ``RGB`` for an image folder: the first that the model's forward accepts, ``RGB``
    first when the folder holds colour images or the model's first registered convolution takes
    3 channels (colour is never dropped where the model accepts it), else ``L`` first; a model
    with lazy layers, whose first forward fixes their size, gets the folder's own colour. When
    neither is accepted, the first tried (the probe then reports the error)."""
    native = _native_mode(source)
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return native
    colour_first = native == "RGB" or expected_channels(model) == 3
    order = ("RGB", "L") if colour_first else ("L", "RGB")
    for mode in order:
        source.mode = mode
        try:
            with torch.no_grad():
                model(model_input(model, source.batch(0, 1)))
        except Exception:  # this mode does not fit; try the other, then report the probe error
            continue
        return mode
    return order[0]


# image files whose header is read to tell a grey folder from a colour one
NATIVE_MODE_FILES = 256


def _native_mode(source: Any) -> str:
    """``RGB`` when any of the folder's first :data:`NATIVE_MODE_FILES` images is in colour (by
    its header), else ``L`` (modes 1, L, LA, I, F)."""
    from PIL import Image

    for file in source.files[:NATIVE_MODE_FILES]:
        try:
            with Image.open(file) as image:
                if image.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "F"):
                    return "RGB"
        except Exception:  # unreadable: decoding reports it in one line later
            continue
    return "L"


def open_data(
    *,
    images: str | os.PathLike[str] | None = None,
    tensors: str | os.PathLike[str] | None = None,
    labels_file: str | os.PathLike[str] | None = None,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    image_size: int | None = None,
    mode: str | None = None,
    tensor_labels: bool = True,
) -> DataSource:
    """The data a command works on; cheap checks only (files listed, tensors verified).

    ``mode=None`` lets :meth:`DataSource.fit_to` pick ``L`` or ``RGB`` from the model;
    ``tensor_labels=False`` leaves a tensor file's ``labels`` unread (a command that uses none).
    """
    if images is not None and tensors is not None:
        raise InvalidInputError("give --images or --tensors, not both")
    if (images is not None or tensors is not None) and split != "test":
        raise InvalidInputError(
            f"split={split!r} chooses an MNIST split and does nothing with "
            f"{'--images' if images is not None else '--tensors'}; leave the split out"
        )
    if labels_file is not None and images is None:
        raise InvalidInputError("--labels needs --images (a folder of images)")
    if images is None and (image_size is not None or mode is not None):
        raise InvalidInputError(
            "image_size and the colour mode (--image-size, --mode) apply to a folder of images "
            "(--images) only"
        )
    if images is not None:
        return _open_folder(Path(images), labels_file, image_size, mode)
    if tensors is not None:
        if image_size is not None:
            raise InvalidInputError(
                "--image-size applies to --images only; resize the tensors yourself"
            )
        return load_tensors(tensors, labels=tensor_labels)
    return _open_mnist(dataset, data_dir, split)


def _open_mnist(dataset: str, data_dir: str | os.PathLike[str] | None, split: str) -> DataSource:
    from intriguing.data import load_mnist

    data = load_mnist(data_dir, dataset)
    images, labels = data.split(split)
    meta = {"kind": "mnist", "dataset": dataset, "split": split, "identity": data.identity}
    names = [f"{split}[{i}]" for i in range(len(labels))]
    return DataSource("mnist", images, labels, names, meta)


def _open_folder(
    folder: Path, labels_file: str | os.PathLike[str] | None, size: int | None, mode: str | None
) -> DataSource:
    from intriguing.analysis.imagefolder import ImageFolderSource, folder_labels, read_labels

    if size is not None and size < 1:
        raise InvalidInputError(f"--image-size must be at least 1, got {size}")
    source = ImageFolderSource(folder, size=size, mode=mode or "RGB")
    found = (
        read_labels(labels_file, source.names)
        if labels_file
        else folder_labels(source.names, folder)
    )
    labels = None if found is None else torch.from_numpy(found[0])
    meta = {
        "kind": "folder",
        "path": str(folder),
        "labels_file": str(labels_file) if labels_file else None,
        "layout": "labels file" if labels_file else ("class subfolders" if found else "flat"),
        "classes": None if found is None else found[1],
        "image_size": size,
        "mode": mode,
    }
    return DataSource("folder", source, labels, source.names, meta)


TENSOR_KEYS = ("images", "labels")  # the entries of a --tensors file that are read


def load_tensors(path: str | os.PathLike[str], *, labels: bool = True) -> DataSource:
    """A ``.safetensors`` / ``.npz`` file with ``images`` ``(N, ...)`` in [0, 1] (images
    ``(N, C, H, W)``, signals ``(N, C, L)``, feature vectors ``(N, D)``) and ``labels`` ``(N,)``
    (neither read nor checked with ``labels=False``); other entries are left unread.

    Raises:
        InvalidInputError: another suffix, a missing ``images`` key, a wrong rank, dtype, range or
            length, or non-finite values.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise InvalidInputError(
            f"--tensors {file}: expected a .safetensors or .npz file (pickles are never read)"
        )
    if not file.is_file():
        raise InvalidInputError(f"--tensors {file}: file not found")
    arrays, names = _read_arrays(file, suffix, TENSOR_KEYS if labels else TENSOR_KEYS[:1])
    if "images" not in arrays:
        raise InvalidInputError(
            f"--tensors {file}: no 'images' entry (found: {', '.join(sorted(names)) or 'none'})"
        )
    images = _check_tensor_images(file, arrays["images"])
    stored = arrays.get("labels") if labels else None
    checked = _check_tensor_labels(file, stored, len(images))
    meta = {"kind": "tensors", "path": str(file), "n_images": len(images)}
    names = [f"{file.name}[{i}]" for i in range(len(images))]
    return DataSource("tensors", images, checked, names, meta)


def _read_arrays(
    file: Path, suffix: str, keys: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's entries named in ``keys`` (those present) and the names of all its entries;
    other entries (class names, metadata) are never read."""
    import zipfile

    if suffix == ".npz" and not zipfile.is_zipfile(file):
        raise InvalidInputError(
            f"--tensors {file}: not an .npz (zip) archive; save one with "
            "numpy.savez(path, images=..., labels=...)"
        )
    try:
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as npz:
                names = list(npz.files)
                wanted = [key for key in keys if key in names]
                return {key: _npz_entry(file, key, npz) for key in wanted}, names
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            names = list(handle.keys())
            wanted = [key for key in keys if key in names]
            return {key: handle.get_tensor(key) for key in wanted}, names
    except InvalidInputError:
        raise
    except Exception as exc:  # corrupt zip/header, ...
        raise InvalidInputError(f"--tensors {file}: cannot read it ({first_line(exc)})") from None


def _npz_entry(file: Path, key: str, npz: Any) -> torch.Tensor:
    """One numeric ``.npz`` entry as a tensor (big-endian arrays converted to the native order)."""
    try:
        array = np.asarray(npz[key])
    except ValueError:  # numpy refuses object arrays without pickles
        array = None
    if array is None or array.dtype.kind not in "biuf":
        what = "an object array" if array is None else f"of dtype {array.dtype}"
        raise InvalidInputError(
            f"--tensors {file}: '{key}' is {what}; store numbers (float images in [0, 1], "
            "integer labels)"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))


def _check_tensor_images(file: Path, images: torch.Tensor) -> torch.Tensor:
    if images.ndim < 2:
        raise InvalidInputError(
            f"--tensors {file}: 'images' must have shape (N, ...), e.g. (N, C, H, W) images, "
            f"(N, C, L) signals or (N, D) feature vectors; got {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise InvalidInputError(f"--tensors {file}: 'images' holds no images")
    if not images.is_floating_point():
        raise InvalidInputError(
            f"--tensors {file}: 'images' is {images.dtype}; store floats in [0, 1] (divide by 255)"
        )
    return check_images(images.float(), name=f"--tensors {file}: 'images'").contiguous()


def _check_tensor_labels(file: Path, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if labels is None:
        return None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InvalidInputError(f"--tensors {file}: 'labels' must be integers, got {labels.dtype}")
    if labels.shape != (n,):
        raise InvalidInputError(
            f"--tensors {file}: 'labels' must have shape ({n},), got {tuple(labels.shape)}"
        )
    if labels.dtype == torch.uint64 and n and int(labels.numpy().max()) >= 2**63:
        raise InvalidInputError(
            f"--tensors {file}: 'labels' holds {int(labels.numpy().max())}, beyond any class "
            "index; store class indices 0..K-1"
        )
    labels = labels.long()  # first: comparisons are not implemented for uint16/32/64
    if bool((labels < 0).any()):
        raise InvalidInputError(f"--tensors {file}: 'labels' must be >= 0")
    return labels


def choose_examples(
    model: nn.Module,
    data: DataSource,
    n: int | None,
    *,
    correct_only: bool = True,
    chunk: int = 1024,
    count_option: str = "n (--n)",
    skip_label: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The first ``n`` examples of ``data`` (correctly classified ones when ``correct_only``).

    Decodes chunk by chunk and stops once ``n`` are found. Data without labels takes the model's
    predictions as labels. Returns ``(images, labels, index, label_source)`` with ``label_source``
    ``"labels"`` or ``"predictions"``. ``count_option`` names the setting ``n`` came from in the
    shortage message (``"--attack-n"`` where that limits it). ``skip_label``: examples with this
    label are passed over (a targeted attack toward that class has nothing to do on them).

    Raises:
        InvalidInputError: ``n`` not None or an integer >= 1, ``chunk`` not an integer >= 1, or
            fewer than ``n`` suitable examples.
    """
    check_count_or_none("n", n)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InvalidInputError(f"chunk must be an integer >= 1, got {chunk!r}")
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    found = 0
    for start in range(0, len(data), chunk):
        stop = min(start + chunk, len(data))
        x = data.batch(start, stop)
        y = predict(model, x, offset=start) if data.labels is None else data.labels[start:stop]
        index = torch.arange(start, stop)
        if correct_only and data.labels is not None:
            x, y, hit = select_correct(model, x, y, None)
            index = index[hit]
        if skip_label is not None:
            other = (y != skip_label).nonzero().squeeze(1)
            x, y, index = x[other], y[other], index[other]
        keep = len(index) if n is None else min(len(index), n - found)
        parts.append((x[:keep], y[:keep], index[:keep]))
        found += keep
        if n is not None and found >= n:
            break
    if n is not None and found < n:
        what = "correctly classified" if correct_only and data.labels is not None else "suitable"
        if found == 0 and what == "correctly classified" and skip_label is None:
            raise none_correct(len(data))
        if skip_label is not None and found == 0:
            raise InvalidInputError(
                f"every {what} image among {len(data)} is of class {skip_label}, the target; "
                "choose another target"
            )
        if skip_label is not None:
            raise InvalidInputError(
                f"only {found} {what} images not of class {skip_label} (the target) among "
                f"{len(data)}; lower {count_option} to at most {found} or choose another target"
            )
        raise InvalidInputError(
            f"only {found} {what} images among {len(data)}; lower {count_option} to at most {found}"
        )
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]).long()
    return (
        images,
        labels,
        torch.cat([p[2] for p in parts]),
        ("predictions" if data.labels is None else "labels"),
    )


def check_count_or_none(name: str, value: object) -> None:
    """InvalidInputError unless ``value`` is None (all) or an integer (not a bool) >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1 (or None for all), got {value!r}")
