"""Figure 5 of the paper (§4.2) for any model: original, difference magnified x10, adversarial.

The paper's Figure 5 shows, for AlexNet, "(left) correctly predicted sample, (center) difference
between correct image, and image predicted incorrectly magnified by 10x (values shifted by 128 and
clamped), (right) adversarial example". Here the model is

any MODEL of :mod:`intriguing.inputs` (a zoo name, ``package.module:factory``, ``file.py:factory``
or a zoo checkpoint; ``(N, C, H, W)`` images in [0, 1] -> logits ``(N, K)``, normalisation inside
it or stated with ``--normalize``), and the images are a folder read with Pillow (any size; ``size``
resizes and centre-crops; the colour mode follows the model), a tensor file, or the first MNIST test
images. One probe forward checks them against the model before the attack. The untargeted attack starts from the model's own
prediction (so every original counts as "correctly predicted"). torchvision is never required.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing._io import atomic_write_json, refuse_folder_names
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
    """The model named by ``spec`` (see :mod:`intriguing.inputs`), in eval mode: ``(model, description)``.

    Raises:
        UnknownModelError, InvalidInputError, CheckpointError: ``spec`` names nothing usable.
    """
    from intriguing.inputs import resolve_model as resolve

    loaded = resolve(spec, dataset=dataset, data_dir=data_dir, seed=seed)
    return loaded.model, loaded.description


def load_images(
    folder: str | os.PathLike[str] | None,
    n: int,
    *,
    size: int | None = None,
    mode: str | None = None,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    model: nn.Module | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` images ``(n, C, H, W)`` in [0, 1] of ``folder`` (or of the MNIST test set) and names.

    With ``model``, the colour mode follows the model (when ``mode`` is None) and one probe forward
    checks the images against it.
    """
    from intriguing.inputs import open_data

    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    data = open_data(
        images=folder,
        dataset=dataset,
        data_dir=data_dir,
        image_size=size,
        mode=mode if folder is not None else None,
    )
    if model is not None:
        data.fit_to(model)
    images, _, names = data.take(n)
    return images, names


# what run_figure5 writes into its folder (the AttackResult's sidecar last)
FIGURE5_FILES = ("figure5.png", "figure5.json", "figure5.safetensors", "figure5.safetensors.json")


def check_out_folder(out_dir: str | os.PathLike[str]) -> None:
    """OutputError (one line) when a file Figure 5 writes into ``out_dir`` exists there as a
    folder: found before the attack, not when its result is written."""
    refuse_folder_names(out_dir, FIGURE5_FILES)


def check_drawable(images: torch.Tensor) -> None:
    """Figure 5 draws images: ``(N, C, H, W)`` with 1 (grey) or 3 (RGB) channels. Raises
    InvalidInputError (one line) for other data (feature vectors, signals, 2 or 4 channels), before
    the attack runs."""
    from intriguing.inputs import shape_text

    if images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        raise InvalidInputError(
            f"figure5 draws images (N, C, H, W); the data's examples are {shape_text(images)}, "
            "which looks channels-last (N, H, W, C): store (N, C, H, W), e.g. "
            "images.permute(0, 3, 1, 2)"
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InvalidInputError(
            f"figure5 draws images (N, C, H, W) with 1 or 3 channels; the data's examples are "
            f"{shape_text(images)}: use attack --save for other data"
        )


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
    from intriguing.inputs import model_device
    from intriguing.report.figures import plot_figure5
    from intriguing.training.trainer import eval_mode

    check_drawable(images)
    check_out_folder(out_dir)
    out = Path(out_dir)
    settings = {"threads": 1, **(attack_settings or {})}
    with eval_mode(model):  # each sub-module's train/eval flag is given back afterwards
        result = LBFGS(mode="untargeted", **settings)(model, images.to(model_device(model)))
    result.save(out / FIGURE5_FILES[2])
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
    images = images.cpu()
    plot_figure5(
        images, magnified_difference(images, adversarial), adversarial, rows, out / FIGURE5_FILES[0]
    )
    doc: dict[str, Any] = {
        "model": description,
        "images": rows,
        "summary": result.summary(),
        "settings": result.settings,
    }
    atomic_write_json(out / FIGURE5_FILES[1], doc)
    return doc
