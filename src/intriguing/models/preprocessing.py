"""Input normalisation stated outside the model, kept inside the attacked function.

A researcher's model often expects ``(x - mean) / std`` inputs. Wrapping it as
``Preprocessed(Normalize(mean, std), model)`` keeps every attack, distortion and budget in [0, 1]
pixel space while the model sees what it was trained on; the spectral bound of the wrapper includes
the normalisation (its Lipschitz constant is ``max_c 1 / std_c``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from intriguing.errors import InvalidInputError


class Normalize(nn.Module):
    """Per-channel ``(x - mean_c) / std_c`` on ``(N, C, ...)`` images in [0, 1].

    ``mean`` and ``std`` are buffers of shape ``(C, 1, 1)`` (one value per channel; a single value
    broadcasts over every channel).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).flatten()
        std_t = torch.as_tensor(list(std), dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise InvalidInputError(
                f"normalisation: got {mean_t.numel()} means and {std_t.numel()} stds; "
                "give one of each per channel (e.g. --normalize 0.1307,0.3081)"
            )
        if not bool(torch.isfinite(mean_t).all()) or not bool(torch.isfinite(std_t).all()):
            raise InvalidInputError("normalisation: mean and std must be finite numbers")
        if bool((std_t <= 0).any()):
            raise InvalidInputError("normalisation: every std must be > 0")
        self.register_buffer("mean", mean_t[:, None, None])
        self.register_buffer("std", std_t[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, ...)`` -> the same shape: images ``(N, C, H, W)``, signals ``(N, C, L)``, feature
        vectors ``(N, D)`` (one mean and std for all, or one per feature); C must match the number
        of means, or there is one."""
        channels = self.mean.numel()
        if x.dim() < 2 or (channels > 1 and x.shape[1] != channels):
            raise InvalidInputError(
                f"normalisation has {channels} means and stds but the data has shape "
                f"{tuple(x.shape)} (axis 1 holds the channels); give one mean and one std per "
                "channel, or one of each for all"
            )
        shape = (channels,) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Preprocessed(nn.Sequential):
    """``model(normalize(x))`` as a two-layer ``nn.Sequential`` named ``normalize`` and ``model``."""

    def __init__(self, normalize: Normalize, model: nn.Module) -> None:
        super().__init__()
        self.add_module("normalize", normalize)
        self.add_module("model", model)


def with_preprocessing(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> nn.Module:
    """``model`` itself when ``mean`` and ``std`` are both None, else ``Preprocessed(...)``.

    The wrapper takes the model's training mode and device.
    """
    if mean is None and std is None:
        return model
    if mean is None or std is None:
        raise InvalidInputError("normalisation: give both mean and std, or neither")
    wrapped = Preprocessed(Normalize(mean, std), model)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    return wrapped.to(device).train(model.training)
