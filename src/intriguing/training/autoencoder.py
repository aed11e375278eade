"""Unsupervised pre-training of one sigmoid layer as a sparse autoencoder (AE400-10, paper §4.2).

The paper's AE400-10 is "a single layer sparse autoencoder with sigmoid activations and 400 nodes
with a softmax classifier", whose autoencoder layer "has been trained until it got very high quality
first layer filters and ... was not fine-tuned". We train it as the classic (UFLDL) sparse
autoencoder::

    h = sigmoid(W x + b)            x: (N, 784) in [0, 1], W: (400, 784)
    x_hat = sigmoid(W' h + b')      W': (784, 400) (untied decoder)
    loss = mean_n( sum_pixels (x_hat - x)^2 ) / 2
           + beta * sum_j KL(rho || rho_hat_j)            rho_hat_j = mean_n h_j (per minibatch)
           + lambda / 2 * (||W||^2 + ||W'||^2)

with Adam on minibatches (one-cycle learning rate), writing the trained ``W, b`` into the model's
encoder layer. The decoder is discarded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from intriguing.progress import make_progress
from intriguing.training.config import SparseAutoencoderConfig

_EPS = 1e-6


def kl_sparsity(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """``sum_j KL(rho || rho_hat_j)`` for Bernoulli means ``rho_hat`` (shape (H,), in (0, 1))."""
    rho_hat = rho_hat.clamp(_EPS, 1 - _EPS)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def sparse_autoencoder_loss(
    encoder: nn.Linear, decoder: nn.Linear, x: torch.Tensor, config: SparseAutoencoderConfig
) -> torch.Tensor:
    """The sparse-autoencoder objective (module docstring) on a batch ``x`` of shape (B, 784)."""
    hidden = torch.sigmoid(encoder(x))
    recon = torch.sigmoid(decoder(hidden))
    reconstruction = 0.5 * (recon - x).pow(2).sum(dim=1).mean()
    sparsity = config.sparsity_weight * kl_sparsity(config.sparsity, hidden.mean(dim=0))
    decay = 0.5 * config.weight_decay * (encoder.weight.pow(2).sum() + decoder.weight.pow(2).sum())
    return reconstruction + sparsity + decay


def pretrain_sparse_autoencoder(
    encoder: nn.Linear,
    x: torch.Tensor,
    config: SparseAutoencoderConfig,
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``encoder`` (in place) as a sparse autoencoder on ``x``.

    Args:
        encoder: ``nn.Linear(784, H)``; its weight and bias are overwritten with the trained ones.
        x: (N, D) inputs in [0, 1] (flattened images).
        config: sparsity target, weights, epochs, learning rate, batch size.
        seed: seeds the decoder's initialisation and the minibatch order.
        log: optional ``callable(str)`` receiving one line per epoch.

    Returns:
        The mean training loss of each epoch.
    """
    state = torch.get_rng_state()
    torch.manual_seed(seed + 7919)
    decoder = nn.Linear(encoder.out_features, encoder.in_features)
    torch.set_rng_state(state)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    n = x.shape[0]
    batches = math.ceil(n / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * batches
    )
    order = torch.Generator().manual_seed(seed + 104729)
    losses: list[float] = []
    with make_progress() as bar:
        task = bar.add_task("sparse autoencoder", total=config.epochs * batches)
        for epoch in range(1, config.epochs + 1):
            perm = torch.randperm(n, generator=order)
            total = 0.0
            for i in range(0, n, config.batch_size):
                batch = x[perm[i : i + config.batch_size]]
                optimizer.zero_grad()
                loss = sparse_autoencoder_loss(encoder, decoder, batch, config)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * batch.shape[0]
                bar.advance(task)
            losses.append(total / n)
            if log is not None:
                log(f"autoencoder epoch {epoch}/{config.epochs}: loss {total / n:.4f}")
    return losses
