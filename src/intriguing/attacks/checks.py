"""Input and model checks shared by the attacks and other analyses.

Every check raises a one-line :class:`~intriguing.errors.InvalidInputError` (or warns with an
:class:`AttackWarning`) naming what is wrong and what to do:

- images: a float tensor, at least 2-D ``(N, ...)``, no axis of size 0, no NaN/inf, every value
  inside [0, 1];
- labels / targets: int64-compatible ``(N,)`` matching the images, each in ``[0, num_classes)``;
- model: every submodule in eval mode (dropout and batch-norm make training-mode outputs random);
- outputs: one floating tensor of ``(N, K)`` logits with ``K >= 2`` (not a tuple or dict); rows that
  are non-negative and sum to 1 look like probabilities, which flatten the loss (softmax saturates)
  and are refused;
- gradients: the model must run on a single image with gradients enabled and its logits must be
  differentiable in the input (no argmax, ``.detach()`` or ``torch.no_grad()`` inside); an input
  gradient that is exactly zero (saturated model) is warned about;
- logit scale: clean logits all far below 1 in magnitude are warned about (the success rule's
  lead, ``SUCCESS_MARGIN * max(1, max |z|)``, is then a large share of their range).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from intriguing.errors import InvalidInputError
from intriguing.models.user import model_dtype


class AttackWarning(UserWarning):
    """A suspicious but usable situation during an attack (e.g. zero input gradients)."""


def check_images(images: object, *, name: str = "images") -> torch.Tensor:
    """Validate a batch of images ``(N, ...)`` in [0, 1]; returns it unchanged.

    Raises:
        InvalidInputError: not a floating tensor, fewer than 2 dimensions, empty (no images, or an
            axis of size 0), NaN/inf, or values outside [0, 1].
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    _refuse_meta(images, name)
    if not images.is_floating_point():
        raise InvalidInputError(
            f"{name} must be a floating tensor in [0, 1], got {images.dtype}; divide uint8 pixels by 255"
        )
    if images.ndim < 2 or images.shape[0] == 0:
        raise InvalidInputError(
            f"{name} must have shape (N, ...) with N >= 1, got {tuple(images.shape)}; "
            "add a batch dimension with images.unsqueeze(0)"
        )
    if images[0].numel() == 0:
        raise InvalidInputError(
            f"{name} have no values: shape {tuple(images.shape)} has an axis of size 0; every "
            "image needs at least one value (C, H, W >= 1)"
        )
    values = images.detach()  # statistics only: no autograd warning for images requiring grad
    # min and max propagate NaN and reach +-inf, so one pass finds non-finite values too
    low, high = (float(v) for v in torch.aminmax(values))
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(values)).flatten(1).any(1).sum())
        raise InvalidInputError(f"{name} contain NaN or inf in {bad} image(s); clean the input")
    if low < 0.0 or high > 1.0:
        raise InvalidInputError(
            f"{name} must lie in [0, 1], found values in [{_shown(low)}, {_shown(high)}]; "
            "pass unnormalised pixels scaled to [0, 1]"
        )
    return images


def _refuse_meta(tensor: torch.Tensor, name: str) -> None:
    """A tensor on the meta device has a shape but no values: nothing can be measured on it."""
    if tensor.device.type == "meta":
        raise InvalidInputError(
            f"{name} are on the meta device (a shape without values); pass tensors that hold "
            "data (on cpu or cuda)"
        )


def _shown(value: float) -> str:
    """``value`` with the fewest digits (at least 4) that still lie outside [0, 1] when it does
    (1.0001, not 1)."""
    for digits in range(4, 18):
        text = f"{value:.{digits}g}"
        if (0.0 <= float(text) <= 1.0) == (0.0 <= value <= 1.0):
            return text
    return repr(value)


def check_image_pair(originals: object, adversarials: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Both checked like :func:`check_images` and of the same shape ``(N, ...)``."""
    originals = check_images(originals, name="originals")
    adversarials = check_images(adversarials, name="adversarials")
    if originals.shape != adversarials.shape:
        raise InvalidInputError(
            f"originals {tuple(originals.shape)} and adversarials {tuple(adversarials.shape)} "
            "differ in shape"
        )
    return originals, adversarials


def check_labels(
    labels: object, n: int, *, num_classes: int | None = None, name: str = "labels"
) -> torch.Tensor:
    """Validate integer labels ``(n,)`` in ``[0, num_classes)``; returns them as int64.

    Raises:
        InvalidInputError: not an integer tensor, wrong shape, or out of range.
    """
    if not isinstance(labels, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    _refuse_meta(labels, name)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise InvalidInputError(f"{name} must be an integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise InvalidInputError(
            f"{name} must have shape ({n},) to match the images, got {tuple(labels.shape)}"
        )
    labels = labels.long()
    if n and int(labels.min()) < 0:
        raise InvalidInputError(f"{name} must be >= 0, found {int(labels.min())}")
    if num_classes is not None and n and int(labels.max()) >= num_classes:
        raise InvalidInputError(
            f"{name} must be < {num_classes} (the model's number of classes), found {int(labels.max())}"
        )
    return labels


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a model with any submodule in training mode.

    Raises:
        InvalidInputError: ``model.training`` (or a submodule's) is True.
    """
    training = [
        name or type(model).__name__ for name, module in model.named_modules() if module.training
    ]
    if training:
        raise InvalidInputError(
            f"model is in training mode ({training[0]}); call model.eval() before attacking it"
        )


def check_output_type(outputs: object) -> torch.Tensor:
    """The model's output must be one floating tensor (not a tuple, dict or integer tensor).

    Raises:
        InvalidInputError: anything else, naming what the model returned.
    """
    if not isinstance(outputs, torch.Tensor):
        raise InvalidInputError(
            f"model must return one logits tensor (N, K), got {type(outputs).__name__}; "
            "make forward() return the logits only"
        )
    if not outputs.is_floating_point():
        raise InvalidInputError(
            f"model must return floating logits (N, K), got {outputs.dtype}; "
            "return the raw scores, not class indices or rounded values"
        )
    return outputs


def check_logits(outputs: object, n: int) -> int:
    """Validate model outputs ``(n, K)``: floating logits with ``K >= 2``; returns ``K``.

    Raises:
        InvalidInputError: not a floating tensor, wrong shape, NaN/inf, or rows that look like
            probabilities (non-negative and summing to 1), which would make the attack's loss
            saturate.
    """
    outputs = check_output_type(outputs)
    problem = logits_shape_problem(tuple(outputs.shape), n)
    if problem is not None:
        raise InvalidInputError(problem)
    if not bool(torch.isfinite(outputs).all()):
        raise InvalidInputError("model returned NaN or inf outputs; check the model and its inputs")
    sums = outputs.double().sum(1)
    if bool((outputs >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
        raise InvalidInputError(
            "model outputs look like probabilities (non-negative rows summing to 1); "
            "remove the final softmax so the model returns logits"
        )
    return int(outputs.shape[1])


# largest change of one image's logits between two forward passes, relative to max(1, max |logit|),
# that a deterministic model may show (batch sizes pick other kernels: float32 differences are
# ~1e-6, TF32 convolutions on a GPU ~1e-3); dropout or batch statistics move logits by far more
STABLE_LOGITS = 1e-2


def _relative_change(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """The largest change between two logit tensors, relative to ``max(1, max |first|)`` (NaN when
    it is not finite, so that no tolerance passes it), and absolute (for the message)."""
    first, second = first.detach().double().cpu(), second.detach().double().cpu()
    gap = float((first - second).abs().max())
    return gap / max(1.0, float(first.abs().max())), gap


def check_same_logits(first: torch.Tensor, second: torch.Tensor) -> None:
    """Refuse a model whose logits ``(K,)`` for one image differ between two forward passes
    (``first``: in a batch with other images, ``second``: alone) by more than ``STABLE_LOGITS``.

    A random forward (``F.dropout(x, p)``, whose ``training`` defaults to True, noise layers) or
    batch statistics would make the attack's successes fail re-verification, or count as
    successes that do not hold.

    Raises:
        InvalidInputError: one line naming the change and the usual causes.
    """
    gap = _relative_change(first, second)
    if not gap[0] <= STABLE_LOGITS:
        raise InvalidInputError(
            f"the model gives different logits for the same image in two forward passes "
            f"(largest change {gap[1]:.3g}): a random or batch-dependent forward, e.g. "
            "F.dropout(x, p) without training=self.training, noise, batch statistics, or a "
            "forward that changes its input in place (x.mul_(2)); make forward deterministic in "
            "eval mode"
        )


def check_repeatable(first: torch.Tensor, again: torch.Tensor) -> None:
    """Refuse a model whose logits ``(B, K)`` for the same batch differ between two identical forward
    passes by more than half the success margin (``SUCCESS_MARGIN / 2`` relative to
    ``max(1, max |logit|)``): noise that small on logits of usual size passes
    :func:`check_same_logits`, yet can decide whether a point leads by the margin, so successes
    would not hold on re-verification. Deterministic models repeat bit for bit on the CPU.

    Raises:
        InvalidInputError: one line naming the change and the usual causes.
    """
    from intriguing.attacks.metrics import SUCCESS_MARGIN

    gap = _relative_change(first, again)
    if not gap[0] <= 0.5 * SUCCESS_MARGIN:
        raise InvalidInputError(
            f"the model gives different logits for the same images in two identical forward "
            f"passes (largest change {gap[1]:.3g}): a random forward (noise such as torch.randn, "
            "F.dropout(x, p) without training=self.training); make forward deterministic in eval "
            "mode"
        )


def logits_shape_problem(shape: tuple[int, ...], n: int) -> str | None:
    """Why model outputs of ``shape`` for a batch of ``n`` images are not logits ``(n, K)`` with
    ``K >= 2`` (one line), or None when they are."""
    if len(shape) == 2 and shape[0] == n and shape[1] >= 2:
        return None
    if len(shape) == 2 and shape[0] == n and shape[1] == 1:
        return (
            f"the model returned one output per image (shape {shape}); the attack needs logits "
            "(N, K) with K >= 2 classes: for a binary classifier with one logit z, return "
            "torch.cat([-z, z], 1) / 2 (the same softmax probabilities)"
        )
    hint = "; a .squeeze() in forward() drops the batch axis of one image" if n == 1 else ""
    return (
        f"the model returned shape {shape} for a batch of {n} image{'' if n == 1 else 's'}; it "
        f"must return logits ({n}, K) with K >= 2 classes, (N, K) for every batch size N{hint}"
    )


def check_input_gradient(model: nn.Module, images: torch.Tensor) -> int:
    """:func:`input_gradient_probe`'s bytes saved per image."""
    return input_gradient_probe(model, images)[0]


def input_gradient_probe(model: nn.Module, images: torch.Tensor) -> tuple[int, torch.Tensor]:
    """One forward pass on ``images[:1]`` with gradients enabled: the attack's batches shrink to one
    image, and it needs the logits' gradient with respect to the input (the autograd graph must
    reach the input; no backward pass is run).

    Returns the bytes autograd saved for the backward pass of that one image (the memory a batched
    forward+backward holds per image: each saved storage once, however many views of it were
    saved; the model's parameters and buffers, shared by every image, excluded) and the image's
    logits ``(1, K)``, detached (to compare with its logits in a batch: :func:`check_same_logits`).

    Raises:
        InvalidInputError: the model fails on a single image with gradients enabled, returns
            anything but logits ``(1, K)`` for it, or its logits do not depend differentiably on
            the input (argmax, ``.detach()``, ``torch.no_grad()``).
    """
    x = images[:1].detach().clone().requires_grad_(True)
    shared = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}  # storage address -> bytes: views of one tensor count once

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in shared:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
            logits = model(x)
    except InvalidInputError:
        raise
    except Exception as exc:  # the user's model can fail in any way; report it on one line
        text = str(exc).strip()
        why = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise InvalidInputError(
            f"the model fails on a batch of 1 image with gradients enabled ({why}); the attack "
            "calls it on batches of 1 to batch_size images and needs input gradients"
        ) from None
    logits = check_output_type(logits)
    problem = logits_shape_problem(tuple(logits.shape), 1)
    if problem is not None:
        raise InvalidInputError(problem)
    if not _graph_reaches(logits.grad_fn, x):
        raise InvalidInputError(
            "the model's logits are not differentiable in its input (argmax, .detach(), "
            "torch.no_grad() or a non-differentiable op in forward()); the attack needs input "
            "gradients"
        )
    return sum(saved.values()), logits.detach()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _graph_reaches(node: object, leaf: torch.Tensor) -> bool:
    """Whether the autograd graph below ``node`` accumulates into ``leaf`` (no backward is run, so
    hooks that count backward passes see nothing)."""
    stack, seen = [node], {}  # id -> node: holding the nodes keeps their ids unique
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen[id(current)] = current
        if getattr(current, "variable", None) is leaf:
            return True
        stack.extend(next_node for next_node, _ in getattr(current, "next_functions", ()))
    return False


def attack_dtype(model: nn.Module, images: torch.dtype) -> torch.dtype:
    """The dtype an attack works in: float64 for a float64 model (or float64 images into a model
    without floating parameters), else float32 (the optimiser's state and distances need at least
    single precision).

    Raises:
        InvalidInputError: a half-precision (float16 / bfloat16) model.
    """
    dtype = model_dtype(model, images if images == torch.float64 else torch.float32)
    if dtype in (torch.float16, torch.bfloat16):
        raise InvalidInputError(
            f"the model's parameters are {dtype}; the attack works in float32 or float64: "
            "pass model.float()"
        )
    return torch.float64 if dtype == torch.float64 else torch.float32


def warn_zero_gradients(grad: torch.Tensor, *, where: str = "the clean images") -> int:
    """Warn when some examples' input gradient ``(N, ...)`` is exactly zero; returns their count."""
    zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
    if zero:
        warnings.warn(
            f"{zero} example(s) have an exactly zero input gradient at {where} "
            "(saturated or piecewise-constant model); the attack cannot move them",
            AttackWarning,
            stacklevel=3,
        )
    return zero


# Clean logits below this in magnitude make the success rule's absolute floor (a lead of
# SUCCESS_MARGIN = 1e-4 logits) at least 1% of their scale: successes need visibly more distortion.
TINY_LOGITS = 1e-2
TINY_LOGITS_MESSAGE = r"\d+ example\(s\) have logits below"  # the start of its warning (a regex)


def warn_tiny_logits(clean_logits: torch.Tensor) -> int:
    """Warn when some examples' clean logits ``(N, K)`` are all smaller than ``TINY_LOGITS`` in
    magnitude (a model whose output was scaled down: its decisions are unchanged, but the lead a
    success must reach is not); returns their count."""
    from intriguing.attacks.metrics import SUCCESS_MARGIN

    largest = clean_logits.detach().abs().amax(1)
    tiny = int((largest < TINY_LOGITS).sum())
    if tiny:
        advice = (
            "some are exactly 0 (a constant output?)"
            if bool((largest == 0).any())
            else "multiply the model's output by a constant (its decisions stay the same)"
        )
        warnings.warn(
            f"{tiny} example(s) have logits below {TINY_LOGITS:g} in magnitude (the smallest "
            f"largest |logit| is {float(largest.min()):.3g}); a success must lead by "
            f"{SUCCESS_MARGIN:g} logits, a large share of that scale, so their distortions come "
            f"out inflated: {advice}",
            AttackWarning,
            stacklevel=4,
        )
    return tiny


def warn_unit_interval_logits(clean_logits: torch.Tensor) -> bool:
    """Warn when every clean output ``(N, K)`` lies in [0, 1] (per-class sigmoids or probabilities
    that do not sum to 1): the attack's loss saturates where the outputs flatten out, and the
    distortions come out larger than the same model's raw scores give; returns whether it warned.
    """
    values = clean_logits.detach()
    if values.numel() < 2 or float(values.min()) < 0.0 or float(values.max()) > 1.0:
        return False
    if float(values.abs().amax(1).min()) < TINY_LOGITS:
        return False  # warn_tiny_logits speaks for these
    warnings.warn(
        "every model output lies in [0, 1] (a final sigmoid?): the attack's loss saturates where "
        "such outputs flatten out, so the distortions come out larger than the model's raw scores "
        "give; return the scores before the final sigmoid (the decisions stay the same)",
        AttackWarning,
        stacklevel=4,
    )
    return True


def check_not_meta(model: nn.Module, *, after_weights: bool = False) -> None:
    """Refuse a model whose parameters or buffers live on the ``meta`` device (shapes, no data).

    ``after_weights``: a weights file was loaded; what is still on the meta device is in no state
    dict (a non-persistent buffer) and must be made by the factory.

    Raises:
        InvalidInputError: any parameter or buffer is a meta tensor, naming the first.
    """
    named = (*model.named_parameters(), *model.named_buffers())
    meta = [name for name, tensor in named if tensor.is_meta]
    if not meta:
        return
    if after_weights:
        raise InvalidInputError(
            f"the model's {meta[0]} is still on the meta device after loading --weights (no state "
            "dict holds it: a non-persistent buffer?); create it on a real device in the factory"
        )
    raise InvalidInputError(
        f"the model has no data (meta device, e.g. {meta[0]}): load its weights first (--weights "
        "FILE.safetensors, or model.to_empty(device='cpu') then load_state_dict)"
    )


def check_nonnegative(name: str, value: object, meaning: str) -> float:
    """``value`` as a float; InvalidInputError unless it is a finite real number >= 0 (not a
    bool); ``meaning`` says what it is, in the message."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInputError(f"{name} must be a finite number >= 0 ({meaning}), got {value!r}")
    return float(value)
