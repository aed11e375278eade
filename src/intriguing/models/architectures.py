"""Architecture factories of the MNIST models of Szegedy et al. 2014, §4.2 (Tables 1 and 3, "Conv").

Every factory returns an ``nn.Sequential`` of named standard layers that maps images of shape
``(N, 1, 28, 28)`` with values in [0, 1] to logits of shape ``(N, 10)`` (the softmax is part of the
loss, not of the model). Layer names are fixed so that forward hooks (unit analysis, §3) and
layer-wise Lipschitz bounds (§4.3) can address them:

- linear softmax: ``flatten, out``
- sigmoid nets ``h1-h2-10``: ``flatten, fc1, act1, fc2, act2, out``
- autoencoder + softmax ``AE h-10``: ``flatten, fc1, act1, out`` (``fc1``/``act1`` the encoder)
- Conv: ``conv1, act1, pool1, flatten, fc1, act2, dropout, out``

Weights start from PyTorch's default initialisation (uniform in +-1/sqrt(fan_in)), drawn from the
global torch RNG: seed it (``torch.manual_seed``) before calling a factory for reproducible weights.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10


def _named(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    """``nn.Sequential`` of named layers (names are what hooks and layer-wise bounds address)."""
    return nn.Sequential(OrderedDict(layers))


def linear_softmax() -> nn.Sequential:
    """Multinomial logistic regression on the 784 pixels ("softmax" of Table 1).

    Layers: ``flatten`` (N,1,28,28)->(N,784), ``out`` Linear(784, 10) -> logits (N, 10).
    """
    return _named(("flatten", nn.Flatten()), ("out", nn.Linear(NUM_PIXELS, NUM_CLASSES)))


def sigmoid_mlp(hidden1: int, hidden2: int) -> nn.Sequential:
    """Fully connected net with two sigmoid hidden layers ("N100-100-10", "M1'" 123-456-10, ...).

    Layers: ``flatten`` -> ``fc1`` Linear(784, hidden1) -> ``act1`` Sigmoid -> ``fc2``
    Linear(hidden1, hidden2) -> ``act2`` Sigmoid -> ``out`` Linear(hidden2, 10) -> logits (N, 10).
    """
    return _named(
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(NUM_PIXELS, hidden1)),
        ("act1", nn.Sigmoid()),
        ("fc2", nn.Linear(hidden1, hidden2)),
        ("act2", nn.Sigmoid()),
        ("out", nn.Linear(hidden2, NUM_CLASSES)),
    )


def autoencoder_softmax(hidden: int = 400) -> nn.Sequential:
    """A sigmoid sparse-autoencoder encoder with a softmax classifier on top ("AE400-10").

    Layers: ``flatten`` -> ``fc1`` Linear(784, hidden) -> ``act1`` Sigmoid -> ``out``
    Linear(hidden, 10) -> logits. ``fc1`` is pre-trained as an autoencoder and frozen by its
    training config (see :class:`intriguing.training.SparseAutoencoderConfig`).
    """
    return _named(
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(NUM_PIXELS, hidden)),
        ("act1", nn.Sigmoid()),
        ("out", nn.Linear(hidden, NUM_CLASSES)),
    )


def conv_net(
    channels: int = 32, kernel: int = 5, hidden: int = 128, dropout: float = 0.5
) -> nn.Sequential:
    """The paper's "Conv": one convolution, max pooling, a fully connected layer, dropout, softmax.

    Layers: ``conv1`` Conv2d(1, channels, kernel) (no padding, stride 1) -> ``act1`` ReLU ->
    ``pool1`` MaxPool2d(2) (non-overlapping) -> ``flatten`` -> ``fc1`` Linear(channels*s*s, hidden)
    with s = (28 - kernel + 1) // 2 -> ``act2`` ReLU -> ``dropout`` Dropout(dropout) -> ``out``
    Linear(hidden, 10) -> logits. The paper gives no sizes; these are a standard small choice.
    """
    side = (IMAGE_SIDE - kernel + 1) // 2
    return _named(
        ("conv1", nn.Conv2d(1, channels, kernel)),
        ("act1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(channels * side * side, hidden)),
        ("act2", nn.ReLU()),
        ("dropout", nn.Dropout(dropout)),
        ("out", nn.Linear(hidden, NUM_CLASSES)),
    )
