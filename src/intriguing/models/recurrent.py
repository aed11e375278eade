"""Recurrent MNIST classifiers for the zoo (issue #9, item 1: "not verified in recurrent neural
structures", Neocleous & Schizas on Szegedy et al. 2014, §4.2).

Three recurrent models extend the paper's feedforward zoo:

- ``LSTM-rows``: an LSTM reading the image row by row (28 steps of 28 pixels), its final hidden
  state classified by a linear softmax layer;
- ``GRU-rows``: the same with a GRU;
- ``Feedback``: a fully connected tanh layer iterated for several steps, each step's hidden state
  fed back into the next together with the softmax of the previous step's output (top-down output
  feedback); the last step's output is the logits.

Like every zoo model they map float32 images ``(N, 1, 28, 28)`` in [0, 1] to logits ``(N, 10)``
and are ``nn.Sequential`` of named layers: ``rows``/``rnn``/``out`` for the row readers
(``rnn`` outputs the final hidden state ``(N, H)``, the last hidden representation) and
``flatten``/``loop`` for the feedback net (``loop.hidden`` is called once, on the final hidden state
``(N, H)``). They are trained by minibatch Adam (one-cycle schedule) on all 60000 training images;
the recipes below reach about 1-2% test error in a few minutes on one CPU thread (measurements in
docs/recurrent.md).

Layers the spectral analysis (§4.3) has no rule for (``nn.LSTM``, ``nn.GRU``, the feedback loop)
make it fail with a one-line :class:`~intriguing.errors.IntriguingError`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from intriguing.errors import InvalidInputError
from intriguing.models import zoo as _zoo  # noqa: F401  (the paper's models register first)
from intriguing.models.recipe import TrainConfig
from intriguing.models.registry import register_model

IMAGE_SIDE = 28
N_CLASSES = 10
ROW_HIDDEN = 128
FEEDBACK_HIDDEN = 512
FEEDBACK_STEPS = 4

ROW_CONFIG = TrainConfig(optimizer="adam", epochs=5, lr=3e-3, batch_size=128, schedule="onecycle")
FEEDBACK_CONFIG = TrainConfig(
    optimizer="adam", epochs=10, lr=1e-3, batch_size=128, schedule="onecycle"
)

RECURRENT_MODELS: tuple[str, ...] = ("LSTM-rows", "GRU-rows", "Feedback")


class ImageRows(nn.Module):
    """``(N, 1, 28, 28)`` images -> ``(N, 28, 28)`` sequences: 28 time steps of one 28-pixel row."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise InvalidInputError(
                f"expected images of shape (N, 1, H, W), got {tuple(images.shape)}"
            )
        return images[:, 0]


class LastHidden(nn.Module):
    """Run a batch-first ``nn.LSTM``/``nn.GRU`` over ``(N, T, F)`` and return its last hidden
    state ``(N, H)`` (the top layer's state after the final time step).

    Attributes:
        cell: the wrapped recurrent layer (``batch_first=True``, one direction).
    """

    def __init__(self, cell: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        if not cell.batch_first or cell.bidirectional:
            raise InvalidInputError("LastHidden needs a unidirectional, batch_first LSTM or GRU")
        self.cell = cell

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.cell(sequence)
        return outputs[:, -1]


class FeedbackLoop(nn.Module):
    """A hidden layer iterated ``steps`` times with recurrent and output feedback.

    With ``u = W_in x + b`` (x: flattened image ``(N, 784)``)::

        h_1 = tanh(u),                      y_1 = W_out h_1 + b_out
        h_t = tanh(u + W_rec h_{t-1} + W_fb softmax(y_{t-1})),   y_t = W_out h_t + b_out

    and the logits are ``y_steps`` ``(N, 10)``. ``hidden`` (an identity) is called once, on
    ``h_steps`` ``(N, H)``, so forward hooks on ``loop.hidden`` see the final representation.

    Attributes:
        steps: number of iterations (>= 1; 1 is a plain one-hidden-layer net).
    """

    def __init__(self, in_features: int, hidden: int, n_classes: int, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise InvalidInputError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self.inp = nn.Linear(in_features, hidden)
        self.rec = nn.Linear(hidden, hidden, bias=False)
        self.fb = nn.Linear(n_classes, hidden, bias=False)
        self.out = nn.Linear(hidden, n_classes)
        self.hidden = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drive = self.inp(x)
        h = torch.tanh(drive)
        for _ in range(self.steps - 1):
            y = self.out(h)
            h = torch.tanh(drive + self.rec(h) + self.fb(torch.softmax(y, dim=1)))
        return self.out(self.hidden(h))

    def extra_repr(self) -> str:
        return f"steps={self.steps}"


def row_lstm(hidden: int = ROW_HIDDEN) -> nn.Sequential:
    """LSTM over the 28 rows (input 28, ``hidden`` units), final state -> linear -> 10 logits."""
    cell = nn.LSTM(IMAGE_SIDE, hidden, batch_first=True)
    return _row_reader(cell, hidden)


def row_gru(hidden: int = ROW_HIDDEN) -> nn.Sequential:
    """GRU over the 28 rows (input 28, ``hidden`` units), final state -> linear -> 10 logits."""
    cell = nn.GRU(IMAGE_SIDE, hidden, batch_first=True)
    return _row_reader(cell, hidden)


def _row_reader(cell: nn.LSTM | nn.GRU, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(rows=ImageRows(), rnn=LastHidden(cell), out=nn.Linear(hidden, N_CLASSES))
    )


def feedback_net(hidden: int = FEEDBACK_HIDDEN, steps: int = FEEDBACK_STEPS) -> nn.Sequential:
    """784 -> ``hidden`` tanh units iterated ``steps`` times with output feedback -> 10 logits."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            loop=FeedbackLoop(IMAGE_SIDE * IMAGE_SIDE, hidden, N_CLASSES, steps),
        )
    )


_ADAM = "minibatch Adam (one-cycle), all 60000 training images"

register_model(
    "LSTM-rows",
    row_lstm,
    description=(
        f"LSTM ({ROW_HIDDEN} units) reading the image row by row (28 steps x 28 pixels), final "
        f"state -> softmax; {_ADAM}, {ROW_CONFIG.epochs} epochs (issue #9: recurrent nets)"
    ),
    train_config=ROW_CONFIG,
    hidden_layer="rnn",
    aliases=("LSTM",),
)
register_model(
    "GRU-rows",
    row_gru,
    description=(
        f"GRU ({ROW_HIDDEN} units) reading the image row by row (28 steps x 28 pixels), final "
        f"state -> softmax; {_ADAM}, {ROW_CONFIG.epochs} epochs (issue #9: recurrent nets)"
    ),
    train_config=ROW_CONFIG,
    hidden_layer="rnn",
    aliases=("GRU",),
)
register_model(
    "Feedback",
    feedback_net,
    description=(
        f"784-{FEEDBACK_HIDDEN} tanh layer iterated {FEEDBACK_STEPS} steps with recurrent and "
        f"softmax-output feedback -> softmax; {_ADAM}, {FEEDBACK_CONFIG.epochs} epochs "
        "(issue #9: recurrent nets)"
    ),
    train_config=FEEDBACK_CONFIG,
    hidden_layer="loop.hidden",
    aliases=("FeedbackNet",),
)
