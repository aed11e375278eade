"""Figure 5 of the paper (§4.2) for any model: original, difference magnified x10, adversarial.

The paper's Figure 5 shows, for AlexNet, "(left) correctly predicted sample, (center) difference
between correct image, and image predicted incorrectly magnified by 10x (values shifted by 128 and
clamped), (right) adversarial example". Here the model is

- a zoo name (trained or reused from the checkpoint cache),
- ``package.module:factory`` (called with no arguments; must return an ``nn.Module`` that maps
  images ``(N, C, H, W)`` in [0, 1] to logits ``(N, K)``: put any input normalisation inside it), or
- a checkpoint file (``.safetensors`` / ``.json``) of a registered model;

and the images are a folder read with Pillow (any size; ``size`` resizes and centre-crops), or the
first MNIST test images when no folder is given. The untargeted attack starts from the model's own
prediction (so every original counts as "correctly predicted"). torchvision is never required.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing._io import atomic_write_json
from intriguing.errors import InvalidInputError

MAGNIFY = 10.0  # the paper's x10
SHIFT = 0.5  # the paper's "shifted by 128" on a 0..255 scale


def magnified_difference(originals: torch.Tensor, adversarials: torch.Tensor) -> torch.Tensor:
    """The middle column of Figure 5: ``clip(0.5 + 10 (x' - x), 0, 1)``; same shape as the inputs."""
    return (SHIFT + MAGNIFY * (adversarials - originals)).clamp(0.0, 1.0)


def resolve_model(
    spec: str,
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """The model named by ``spec`` (zoo name, ``package.module:factory`` or checkpoint path), in eval mode.

    Returns ``(model, description)``.

    Raises:
        UnknownModelError, InvalidInputError, CheckpointError: ``spec`` names nothing usable.
    """
    path = Path(spec)
    if path.suffix in (".safetensors", ".json"):
        from intriguing.training.api import load_checkpoint

        trained = load_checkpoint(path)
        return trained.model.eval(), f"checkpoint {path.name} ({trained.name})"
    if ":" in spec:
        from intriguing.models.user import load_user_model

        return load_user_model(spec), f"factory {spec}"
    from intriguing.training.api import train_model

    trained = train_model(spec, dataset=dataset, data_dir=data_dir, seed=seed)
    return trained.model, f"zoo model {trained.name} ({dataset})"


def load_images(
    folder: str | os.PathLike[str] | None,
    n: int,
    *,
    size: int | None = None,
    mode: str = "RGB",
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` images ``(n, C, H, W)`` in [0, 1] of ``folder`` (or of the MNIST test set) and names."""
    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if folder is None:
        from intriguing.data import load_mnist

        images = load_mnist(data_dir, dataset=dataset).test_images[:n]
        return images, [f"test[{i}]" for i in range(len(images))]
    from intriguing.analysis.imagefolder import ImageFolderSource

    source = ImageFolderSource(folder, size=size, mode=mode)
    count = min(n, len(source))
    return source.batch(0, count), source.names[:count]


def run_figure5(
    model: nn.Module,
    images: torch.Tensor,
    names: list[str],
    out_dir: str | os.PathLike[str],
    *,
    description: str = "model",
    attack_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Attack ``images`` (untargeted, labels = the model's predictions) and draw Figure 5.

    Writes ``figure5.png``, ``figure5.json`` (per image: name, prediction before/after, distortion,
    success) and ``figure5.safetensors`` (the :class:`AttackResult`) into ``out_dir``.
    Returns the JSON document.
    """
    from intriguing.attacks import LBFGS
    from intriguing.report.figures import plot_figure5

    out = Path(out_dir)
    settings = {"threads": 1, **(attack_settings or {})}
    result = LBFGS(mode="untargeted", **settings)(model.eval(), images)
    result.save(out / "figure5.safetensors")
    adversarial = result.adversarial.detach().cpu()
    rows = [
        {
            "name": name,
            "label": int(result.labels[i]),
            "predicted": int(result.predicted[i]),
            "distortion": float(result.distortion[i]),
            "success": bool(result.success[i]),
        }
        for i, name in enumerate(names)
    ]
    plot_figure5(
        images, magnified_difference(images, adversarial), adversarial, rows, out / "figure5.png"
    )
    doc: dict[str, Any] = {
        "model": description,
        "images": rows,
        "summary": result.summary(),
        "settings": result.settings,
    }
    atomic_write_json(out / "figure5.json", doc)
    return doc
