"""Training: :class:`TrainConfig`, the full-batch L-BFGS / minibatch trainers, the checkpoint cache and
:func:`load_model` (paper §4.2: "Each of our models were trained with L-BFGS until convergence").

>>> from intriguing.training import load_model
>>> model = load_model("softmax1")          # (N, 1, 28, 28) in [0, 1] -> logits (N, 10)

See docs/zoo.md for the recipes, the weight-decay reading and the measured errors, and
docs/advtrain.md for adversarial training with a pool (§4.2, :func:`adversarial_train`).
"""

from intriguing.training.adversarial import AdvTrainConfig, PoolConfig, adversarial_train
from intriguing.training.api import TrainedModel, load_checkpoint, load_model, train_model
from intriguing.training.autoencoder import pretrain_sparse_autoencoder
from intriguing.training.checkpoint import cache_key, load_weights, read_sidecar, save_checkpoint
from intriguing.training.config import SparseAutoencoderConfig, TrainConfig
from intriguing.training.trainer import TrainMetrics, error_rate, predict_logits, train

__all__ = [
    "AdvTrainConfig",
    "PoolConfig",
    "SparseAutoencoderConfig",
    "TrainConfig",
    "TrainMetrics",
    "TrainedModel",
    "adversarial_train",
    "cache_key",
    "error_rate",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "predict_logits",
    "pretrain_sparse_autoencoder",
    "read_sidecar",
    "save_checkpoint",
    "train",
    "train_model",
]
