"""Base class of the attacks: input checks, device handling, re-verification and the result.

An attack is configured with keyword-only settings in its constructor and called with the data
(foolbox v3 style)::

    attack = LBFGS(mode="targeted", target="next")
    result = attack(model, images, labels)        # -> AttackResult

The base class guarantees, whatever the subclass does:

- refused inputs: images outside [0, 1], NaN, wrong shapes, mismatched labels/targets, a model in
  training mode, outputs that are not one floating ``(N, K)`` tensor or look like probabilities,
  a model that fails on one image or has no input gradient (see :mod:`intriguing.attacks.checks`);
- images are cast to the dtype the attack works in: float64 for a float64 model, else float32
  (half-precision models are refused);
- every returned image is inside [0, 1] exactly (clipped; the optimiser already stays in the box);
- every success is re-verified by running the model on the returned images, and the result's
  ``success``, ``predicted``, ``distortion`` and ``l2`` come from that final pass, not from the
  optimiser's bookkeeping.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from intriguing.attacks.checks import (
    AttackWarning,
    attack_dtype,
    check_eval_mode,
    check_images,
    check_labels,
    check_logits,
    check_not_meta,
    check_output_type,
    check_repeatable,
    check_same_logits,
    input_gradient_probe,
    warn_tiny_logits,
    warn_unit_interval_logits,
)
from intriguing.attacks.metrics import l2_distance, rms_distortion, success_mask
from intriguing.attacks.result import AttackResult
from intriguing.errors import InvalidInputError
from intriguing.models.user import model_device

MODES = ("untargeted", "targeted")


@dataclass(frozen=True)
class AttackBatch:
    """The validated data of one attack call, as :meth:`Attack.run` receives it.

    Attributes:
        model: the eval-mode model, on ``images``' device.
        images: ``(N, ...)`` originals in [0, 1] on the model's device.
        labels: ``(N,)`` int64 true (or given) labels.
        targets: ``(N,)`` int64 targets of a targeted call, else ``None`` (the attack's chooser).
        clean_logits: ``(N, K)`` the model's logits on ``images``.
        rows_per_call: the most images to send through the model in one forward+backward pass
            (:func:`rows_per_call`); larger batches are split.
    """

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None
    clean_logits: torch.Tensor
    rows_per_call: int


@dataclass
class RawAttack:
    """What a subclass's :meth:`Attack.run` returns, one row per example (``N`` rows).

    Attributes:
        adversarial: ``(N, *image_shape)`` candidate images (clipped to [0, 1] by the base class).
        claimed: ``(N,)`` bool, the subclass's own success flags (checked against re-verification).
        c: ``(N,)`` float64 constants; iterations, grad_evals: ``(N,)`` int64 counters;
        targets: ``(N,)`` int64 targets of the returned examples (``-1`` untargeted).
    """

    adversarial: torch.Tensor
    claimed: torch.Tensor
    c: torch.Tensor
    iterations: torch.Tensor
    grad_evals: torch.Tensor
    targets: torch.Tensor


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` (restored afterwards); ``None``: as is."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def flushed_denormals() -> Iterator[None]:
    """Run the block with subnormal floats flushed to zero (``torch.set_flush_denormal``), restored
    afterwards.

    Subnormals (``|x| < 1.2e-38`` in float32) take a slow microcode path on x86 CPUs: the zoo's
    AE400-10 trained on an Intel Xeon has 6.7% subnormal weights, and the attack ran 7.5x slower on
    it (5.85 s vs 0.77 s for 300 images) for the same results (docs/attack.md, "Performance notes").
    The previous mode is probed, not assumed (torch has no getter).
    """
    before = bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)
    if before or not torch.set_flush_denormal(True):  # already on, or unsupported here
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# On a CPU the attack's model calls split their rows so that the tensors autograd saves for the
# backward pass stay within about this many bytes (issue 18, docs/attack.md, "Model calls in
# cache-sized chunks"; measured on the 2-core AMD EPYC with its 32 MiB L3): the ReLU CNNs save
# 130-160 KB per image, and a whole attack ran 7-16% faster at this budget (129-158 rows per call)
# than at 512 (benchmarks/chunk_rows.py); an MLP's 3-7 KB per image never splits.
CPU_SAVED_BYTES = 20 * 2**20


def rows_per_call(saved_per_image: int, device: torch.device, batch_size: int) -> int:
    """The most images per forward+backward call: on a CPU, as many as keep autograd's saved
    tensors (``saved_per_image`` bytes each) within :data:`CPU_SAVED_BYTES`, between 1 and
    ``batch_size``; elsewhere (a GPU wants large batches) ``batch_size``."""
    if device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_SAVED_BYTES // max(saved_per_image, 1)))


class Attack(ABC):
    """An attack on any ``nn.Module`` mapping images ``(N, ...)`` in [0, 1] to logits ``(N, K)``.

    Subclasses set :attr:`mode` and implement :meth:`run`; :meth:`settings` lists their options.
    """

    mode: str = "untargeted"
    batch_size: int = 512
    threads: int | None = None

    def settings(self) -> dict[str, Any]:
        """The attack's settings as a JSON-serialisable dict (stored in every result)."""
        return {"attack": type(self).__name__, "mode": self.mode}

    @abstractmethod
    def run(self, batch: AttackBatch) -> RawAttack:
        """Attack the validated ``batch`` (images on the model's device, labels/targets checked)."""

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        targets: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``images`` ``(N, ...)`` in [0, 1].

        Args:
            model: an eval-mode ``nn.Module`` returning logits ``(N, K)``, differentiable in its
                input.
            images: the originals (cast to float64 for a float64 model, else float32).
            labels: ``(N,)`` true labels; default: the model's predictions on ``images`` (then every
                original counts as correctly classified).
            targets: ``(N,)`` target classes for a targeted attack (overriding the target chooser).

        Returns:
            An :class:`AttackResult` on the device of ``images``.

        Raises:
            InvalidInputError: bad images, labels, targets, model mode or model outputs, or a
                model on the meta device.
        """
        with torch_threads(self.threads), flushed_denormals():
            return self._call(model, images, labels, targets)

    def _call(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> AttackResult:
        start = time.perf_counter()
        check_images(images)
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_eval_mode(model)
        check_not_meta(model)
        n = int(images.shape[0])
        device = model_device(model, images.device)
        x = images.detach().to(device=device, dtype=attack_dtype(model, images.dtype))
        saved_per_image, alone = input_gradient_probe(model, x)
        clean_logits = self.predict(model, x)
        num_classes = check_logits(clean_logits, n)
        check_same_logits(clean_logits[0], alone[0])
        last = self.predict(model, x[-1:])
        if n > 1:  # a forward that mixes the batch may spare its first row (net(x[:1]).expand)
            check_same_logits(clean_logits[-1], last[0])
        check_repeatable(last, self.predict(model, x[-1:]))  # the same pass again: a random forward
        warn_tiny_logits(clean_logits)
        warn_unit_interval_logits(clean_logits)
        if labels is None:
            labels = clean_logits.argmax(1)
        labels = check_labels(labels, n, num_classes=num_classes).to(device)
        if targets is not None:
            if self.mode != "targeted":
                raise InvalidInputError(
                    "targets given to an untargeted attack; construct it with mode='targeted'"
                )
            targets = check_labels(targets, n, num_classes=num_classes, name="targets").to(device)
            same = int((targets == labels).sum())
            if same:
                raise InvalidInputError(
                    f"{same} target(s) equal their label; choose targets != labels"
                )
        rows = rows_per_call(saved_per_image, device, self.batch_size)
        raw = self.run(AttackBatch(model, x, labels, targets, clean_logits, rows))
        return self._finalize(model, x, labels, raw, start).to(images.device)

    def verified(
        self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``(N,)`` bool: the re-verified success of each returned point (the package's one rule,
        :func:`~intriguing.attacks.metrics.success_mask`; an attack asking for more, such as a
        logit margin, narrows it)."""
        return success_mask(logits, labels, targets)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of ``images`` computed in chunks of :attr:`batch_size` without gradients."""
        with torch.no_grad():
            chunks = [check_output_type(model(chunk)) for chunk in images.split(self.batch_size)]
        return torch.cat(chunks).detach()

    def _finalize(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        raw: RawAttack,
        start: float,
    ) -> AttackResult:
        adversarial = raw.adversarial.detach().reshape(x.shape).to(x.dtype).clamp(0.0, 1.0)
        logits = self.predict(model, adversarial)
        targets = raw.targets.to(labels.device)
        success = self.verified(logits, labels, targets)
        lost = int((raw.claimed.to(success.device) & ~success).sum())
        if lost:
            warnings.warn(
                f"{lost} example(s) the optimiser counted as adversarial are not on re-verification "
                "(numerical tie at the decision boundary); they are reported as failures",
                AttackWarning,
                stacklevel=3,
            )
        return AttackResult(
            adversarial=adversarial,
            success=success,
            distortion=rms_distortion(x, adversarial),
            l2=l2_distance(x, adversarial),
            c=raw.c.double(),
            iterations=raw.iterations.long(),
            grad_evals=raw.grad_evals.long(),
            labels=labels,
            predicted=logits.argmax(1),
            targets=targets,
            mode=self.mode,
            elapsed_s=time.perf_counter() - start,
            settings=self.settings(),
        )
