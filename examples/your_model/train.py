"""Train the user models of tests/fixtures/mymodels.py on mnist-5k and write the demo's inputs.

Run from this folder after `cp ../../tests/fixtures/mymodels.py .` (see run.sh). Writes
``NAME.safetensors`` weights, ``grey_test.npz`` / ``colour_test.npz`` tensor files (300 test images)
and the PNG folders ``digits/`` / ``colour_digits/`` (200 test images, one subfolder per class).
The colour task is MNIST padded to 32x32 and tinted per image (3x32x32).
"""

from __future__ import annotations

from pathlib import Path

import mymodels
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from intriguing.data import load_mnist


def colour(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) -> (N, 3, 32, 32) in [0, 1]: padded and tinted by a seeded random colour."""
    tint = torch.rand(len(images), 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.3
    return (F.pad(images, (2, 2, 2, 2)) * tint).clamp(0, 1)


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """Adam, batch 64, cross-entropy; returns the model in eval mode."""
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


def write_pngs(folder: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = Path(folder) / str(int(label))
        path.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(
            path / f"{i:04d}.png"
        )


def main() -> None:
    torch.manual_seed(0)
    data = load_mnist(dataset="mnist-5k")
    grey_train, grey_test = data.train_images, data.test_images
    colour_train, colour_test = colour(grey_train), colour(grey_test)
    jobs = [
        ("lenet", mymodels.lenet, grey_train, grey_test, 6),
        ("colour_cnn", mymodels.colour_cnn, colour_train, colour_test, 8),
        ("resnet", mymodels.resnet, colour_train, colour_test, 8),
    ]
    for name, factory, train_x, test_x, epochs in jobs:
        model = fit(factory(), train_x, data.train_labels, epochs)
        with torch.no_grad():
            error = (model(test_x).argmax(1) != data.test_labels).float().mean().item()
        print(f"{name}: test error {100 * error:.2f}% on {len(test_x)} mnist-5k test images")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{name}.safetensors")
    labels = data.test_labels
    np.savez("grey_test.npz", images=grey_test[:300].numpy(), labels=labels[:300].numpy())
    np.savez("colour_test.npz", images=colour_test[:300].numpy(), labels=labels[:300].numpy())
    write_pngs("digits", grey_test[:200], labels[:200])
    write_pngs("colour_digits", colour_test[:200], labels[:200])


if __name__ == "__main__":
    main()
