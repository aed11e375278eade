"""The benchmark's own ReLU models (issue 18), trained here with a fixed seed and cached.

- ``relu-mlp``: ReLU MLP 784-256-256-10 on the flattened image.
- ``relu-cnn``: a LeNet-style ReLU CNN with the input normalisation *inside* the model
  (``Preprocessed(Normalize(0.1307, 0.3081), net)``: the attack works in [0, 1] pixel space):
  conv 5x5 1->32, ReLU, max-pool 2, conv 5x5 32->64, ReLU, max-pool 2, fc 1024->200, ReLU, fc 200->10.

Both are trained with Adam (lr 1e-3, batch 128, ``EPOCHS`` epochs) on the 60000 MNIST training images,
seed 0, one thread, and saved as safetensors with a JSON sidecar holding the SHA-256 of the weights,
the recipe and the measured test error. A cached file is used only when its sidecar's recipe matches
this one and the hash matches its tensors; otherwise it is retrained.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from intriguing._io import atomic_path, atomic_write_json
from intriguing.data import load_mnist
from intriguing.errors import IntriguingError
from intriguing.models.preprocessing import Normalize, Preprocessed
from intriguing.models.user import select_correct
from intriguing.paths import cache_dir

MODELS = ("relu-mlp", "relu-cnn")
EPOCHS = {"relu-mlp": 4, "relu-cnn": 2}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def build(name: str) -> nn.Module:
    """A fresh, seeded (seed 0) ``relu-mlp`` or ``relu-cnn``: ``(N, 1, 28, 28)`` -> logits ``(N, 10)``."""
    torch.manual_seed(0)
    if name == "relu-mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
    if name == "relu-cnn":
        net = nn.Sequential(
            nn.Conv2d(1, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 200),
            nn.ReLU(),
            nn.Linear(200, 10),
        )
        return Preprocessed(Normalize([MNIST_MEAN], [MNIST_STD]), net)
    raise ValueError(f"unknown benchmark model {name!r}; choose one of {MODELS}")


def recipe(name: str) -> dict[str, Any]:
    """What the cached weights depend on (compared with the sidecar before reuse)."""
    return {
        "model": name,
        "epochs": EPOCHS[name],
        "optimiser": "adam",
        "lr": 1e-3,
        "batch": 128,
        "seed": 0,
    }


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors (names, shapes, bytes) in sorted name order, not the file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def train(name: str, data_dir: str | None = None) -> tuple[nn.Module, float]:
    """Train ``name`` on MNIST's training set; returns the eval-mode model and its test error."""
    data = load_mnist(data_dir)
    model = build(name)
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = data.train_images, data.train_labels
    model.train()
    for _ in range(EPOCHS[name]):
        for batch in torch.randperm(len(labels), generator=generator).split(128):
            optimiser.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimiser.step()
    model.eval()
    return model, test_error(model, data.test_images, data.test_labels)


def test_error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` misclassified."""
    with torch.no_grad():
        wrong = sum(
            int((model(x).argmax(1) != y).sum())
            for x, y in zip(images.split(1000), labels.split(1000), strict=True)
        )
    return wrong / len(labels)


def load(name: str, data_dir: str | None = None, root: Path | None = None) -> nn.Module:
    """The trained ``name`` in eval mode: from the cache when its sidecar and hash check out."""
    root = (cache_dir() / "benchmarks") if root is None else root
    weights, sidecar = root / f"{name}.safetensors", root / f"{name}.json"
    if weights.exists() and sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            state = load_file(str(weights))
            if meta.get("recipe") == recipe(name) and meta.get("sha256") == weights_sha256(state):
                model = build(name)
                model.load_state_dict(state)
                return model.eval()
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable or stale: retrain below
        print(f"cached {weights} does not match its sidecar or this recipe: retraining")
    model, error = train(name, data_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    meta = {"recipe": recipe(name), "sha256": weights_sha256(state), "test_error": error}
    atomic_write_json(sidecar, meta)
    print(f"trained {name}: test error {error:.2%} -> {weights}")
    return model


def load_any(name: str, data_dir: str | None = None) -> nn.Module:
    """A benchmark model by name, in eval mode: ``relu-mlp`` / ``relu-cnn`` (this module) or a zoo
    model (``intriguing.training.load_model``: trained and cached on first use)."""
    if name in MODELS:
        return load(name, data_dir)
    from intriguing.training import load_model

    return load_model(name, data_dir=data_dir).eval()


def attack_setup(
    name: str, data_dir: str | None, n: int, mode: str, split: str = "train"
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """For a benchmark script: model ``name`` (:func:`load_any`), its first ``n`` correctly
    classified MNIST ``split`` (``train`` or ``test``) images ``(n, 1, 28, 28)`` and labels, and
    targets ``label + 1`` in targeted mode (else None). An unknown model, missing data or too few
    correct images print one ``error:`` line and exit 2."""
    try:
        model = load_any(name, data_dir)
        data = load_mnist(data_dir)
        images, labels = (
            (data.test_images, data.test_labels)
            if split == "test"
            else (data.train_images, data.train_labels)
        )
        x, y, _ = select_correct(model, images, labels, n)
    except (IntriguingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return model, x, y, (y + 1) % 10 if mode == "targeted" else None


def untargeted_setups(
    names: list[str], data_dir: str | None, n: int, split: str
) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """:func:`attack_setup` (untargeted) for every model of ``names``, before any attack: model,
    images and labels by name. An unknown model exits 2 with one line before any work."""
    return {name: attack_setup(name, data_dir, n, "untargeted", split)[:3] for name in names}


def model_parser(doc: str, n: int, n_help: str, *, split: bool = False) -> argparse.ArgumentParser:
    """A per-model benchmark script's parser, with the arguments those scripts share: the models
    (zoo names, ``relu-mlp``, ``relu-cnn``), ``--n`` images (default ``n``, ``n_help``),
    ``--split test|train`` when ``split``, and ``--data-dir``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", nargs="+", help="zoo names, relu-mlp or relu-cnn")
    p.add_argument("--n", type=int, default=n, help=n_help)
    if split:
        p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--data-dir", default=None)
    return p


def parse_checked(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    counts: tuple[str, ...],
    converters: dict[str, Callable[[str], Any]],
    *,
    may_be_zero: tuple[str, ...] = (),
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` for a benchmark script, then one ``error:`` line and exit 2
    when an option named in ``counts`` is below 1 (below 0 for those also in ``may_be_zero``:
    "0: skip"), or when a ``converters`` entry (option name -> function of its text, raising
    ValueError with the reason) refuses its value, which it replaces otherwise."""
    args = parser.parse_args(argv)
    for name in counts:
        least = 0 if name in may_be_zero else 1
        if getattr(args, name) < least:
            parser.exit(2, f"error: --{name.replace('_', '-')} must be >= {least}\n")
    for name, convert in converters.items():
        try:
            setattr(args, name, convert(getattr(args, name)))
        except ValueError as exc:
            parser.exit(2, f"error: {exc}\n")
    return args


def number_list(
    text: str, option: str, example: str, *, allow_inf: bool = False, positive: bool = False
) -> list[float]:
    """``"1,1.05"`` -> ``[1.0, 1.05]`` for a benchmark option: comma-separated numbers >= 1 (> 0
    when ``positive``; and ``inf`` when ``allow_inf``); ValueError naming ``option`` and an
    ``example`` otherwise."""
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        values = []
    top = math.inf if allow_inf else math.nextafter(math.inf, 0.0)
    low = math.nextafter(0.0, 1.0) if positive else 1.0
    if not values or not all(low <= v <= top for v in values):  # NaN fails every comparison
        also = " or inf" if allow_inf else ""
        bound = "> 0" if positive else ">= 1"
        raise ValueError(
            f"{option} {text!r} must be comma-separated numbers {bound}{also}, e.g. {example}"
        )
    return values
