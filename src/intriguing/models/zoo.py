"""The paper's MNIST models (Szegedy et al. 2014, §4.2, Tables 1 and 3, and "Conv"), registered.

Weight decay: ``lambda * sum(W^2) / k`` per layer on connection weights (not biases), added to the
MEAN cross-entropy, with k = 2 (see :mod:`intriguing.models.recipe` and docs/zoo.md for why this
reading, and not k = number of units, reproduces Table 1). Lambdas are the paper's.

Training defaults (chosen to reproduce the paper's test errors within ~10 minutes on 2 CPU cores;
measurements in docs/zoo.md):

- linear softmax models: full-batch L-BFGS (the paper's method) until convergence;
- sigmoid nets (N100, N200, M1, M1', M2): full-batch L-BFGS, a fixed iteration budget;
- AE400-10: sparse autoencoder pre-trained with Adam, frozen, then the softmax by full-batch L-BFGS;
- Conv: minibatch Adam with dropout (the paper gives no recipe or number for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import nn

from intriguing.models.architectures import (
    autoencoder_softmax,
    conv_net,
    linear_softmax,
    sigmoid_mlp,
)
from intriguing.models.recipe import SparseAutoencoderConfig, TrainConfig
from intriguing.models.registry import register_model

SOFTMAX_ITERATIONS = 500
MLP_ITERATIONS = 400
N200_ITERATIONS = 300  # 2.2x the cost per iteration of N100: keeps it within ~10 min on 2 cores

MLP_DECAY = {"fc1": 1e-5, "fc2": 1e-5, "out": 1e-6}


def _table1(train_error: float, test_error: float, distortion: float) -> Mapping[str, Any]:
    return {
        "table": "1",
        "train_error": train_error,
        "test_error": test_error,
        "distortion": distortion,
    }


def _table3(
    err_p1: float, err_p2: float, test_error: float, distortion: float
) -> Mapping[str, Any]:
    return {
        "table": "3",
        "err_p1": err_p1,
        "err_p2": err_p2,
        "test_error": test_error,
        "distortion": distortion,
    }


def _softmax_config(lam: float) -> TrainConfig:
    return TrainConfig(optimizer="lbfgs", iterations=SOFTMAX_ITERATIONS, weight_decay={"out": lam})


MLP_CONFIG = TrainConfig(optimizer="lbfgs", iterations=MLP_ITERATIONS, weight_decay=MLP_DECAY)
N200_CONFIG = MLP_CONFIG.replace(iterations=N200_ITERATIONS)

AE_CONFIG = TrainConfig(
    optimizer="lbfgs",
    iterations=SOFTMAX_ITERATIONS,
    weight_decay={"out": 1e-6},
    frozen=("fc1",),
    pretrain=SparseAutoencoderConfig(
        layer="fc1", sparsity=0.1, sparsity_weight=3.0, weight_decay=1e-4, epochs=10, lr=3e-3
    ),
)

CONV_CONFIG = TrainConfig(optimizer="adam", epochs=6, lr=2e-3, batch_size=128, schedule="onecycle")

_LBFGS = "full-batch L-BFGS (strong Wolfe)"


def _register_softmax(name: str, lam: float, paper: Mapping[str, Any]) -> None:
    register_model(
        name,
        linear_softmax,
        description=f"linear softmax on the 784 pixels, weight decay lambda={lam:g}; {_LBFGS}",
        train_config=_softmax_config(lam),
        paper=paper,
        hidden_layer=None,
    )


_register_softmax("softmax1", 1e-4, _table1(0.067, 0.074, 0.062))
_register_softmax("softmax2", 1e-2, _table1(0.10, 0.094, 0.1))
_register_softmax("softmax3", 1.0, _table1(0.212, 0.20, 0.14))


def _mlp_description(h1: int, h2: int, split: str, iterations: int = MLP_ITERATIONS) -> str:
    data = {"train": "all 60000 training images", "p1": "P1 (30000)", "p2": "P2 (30000)"}[split]
    return (
        f"{h1}-{h2}-10 sigmoid net trained on {data}, weight decay lambda=1e-5, 1e-5, 1e-6; "
        f"{_LBFGS}, {iterations} iterations"
    )


def _register_sigmoid_net(
    name: str,
    sizes: tuple[int, int],
    split: str,
    paper: Mapping[str, Any],
    *aliases: str,
    config: TrainConfig = MLP_CONFIG,
) -> None:
    """A 784-h1-h2-10 sigmoid net trained on ``split`` by full-batch L-BFGS (Tables 1 and 3)."""
    register_model(
        name,
        partial(sigmoid_mlp, *sizes),
        description=_mlp_description(*sizes, split, int(config.iterations)),
        train_config=config,
        train_split=split,
        paper=paper,
        hidden_layer="act2",
        aliases=aliases,
    )


_register_sigmoid_net("N100-100-10", (100, 100), "train", _table1(0.0, 0.0164, 0.058), "N100")
_register_sigmoid_net(
    "N200-200-10", (200, 200), "train", _table1(0.0, 0.0154, 0.065), "N200", config=N200_CONFIG
)


@register_model(
    "AE400-10",
    description=(
        "sigmoid sparse autoencoder with 400 units (unsupervised, Adam, then frozen) and a softmax "
        f"on top with weight decay lambda=1e-6; softmax by {_LBFGS}"
    ),
    train_config=AE_CONFIG,
    paper=_table1(0.0057, 0.019, 0.086),
    hidden_layer="act1",
    aliases=("AE400",),
)
def ae400() -> nn.Sequential:
    """784-400 sigmoid encoder + 400-10 softmax (Table 1)."""
    return autoencoder_softmax(400)


@register_model(
    "Conv",
    description=(
        "conv 5x5x32 + ReLU, 2x2 max pool, fully connected 128 + ReLU, dropout 0.5, softmax; "
        "minibatch Adam (no paper numbers: used for the unit analysis of Figs. 1-2)"
    ),
    train_config=CONV_CONFIG,
    paper={},
    hidden_layer="act2",
    aliases=("ConvNet",),
)
def conv() -> nn.Sequential:
    """The paper's "Conv" MNIST model (section 3, Figures 1 and 2)."""
    return conv_net()


_register_sigmoid_net("M1", (100, 100), "p1", _table3(0.0, 0.024, 0.02, 0.062))
_register_sigmoid_net("M1'", (123, 456), "p1", _table3(0.0, 0.025, 0.021, 0.059), "M1p", "M1prime")
_register_sigmoid_net("M2", (100, 100), "p2", _table3(0.023, 0.0, 0.021, 0.058))
