"""The AttackBench budget view (Cinà et al., 2024): the best adversarial found within k model passes.

:class:`BudgetTracker` wraps a model. Every forward call is counted *per example* by the wrapper,
not by the attack's own bookkeeping: each row of the batch is attributed to the original image it is
nearest to (L2; a row is attributed only when that original is at most half as far as the second
nearest, which holds for any perturbation smaller than half the gap between two MNIST digits), and
that example's pass count goes up by one. A forward with gradients and the backward through it are
one "forward+backward pass"; every further backward through the same forward (a Jacobian, one class
at a time) is one more pass; a forward without gradients counts as one pass too (the attacker is
charged for it). At every pass the row is judged by the plain decision rule (another class's logit
strictly above the label's; the peers stop at the boundary and do not aim past the package's success
margin) and its RMS distortion to its original recorded.

:meth:`BudgetTracker.curve` then gives, for each budget ``k``, the per-example smallest distortion
among successful rows seen within the example's first ``k`` passes (``inf`` when none): the mean
distortion over examples fooled within ``k`` passes and the success rate at ``k``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from intriguing.attacks.metrics import success_lead

BUDGETS = (25, 50, 100, 250, 1000)


class BudgetTracker(nn.Module):
    """``model`` with per-example pass counting and best-so-far records; same inputs and outputs.

    Args:
        model: the eval-mode model, ``(N, ...)`` images in [0, 1] -> logits ``(N, K)``.
        originals: ``(n, ...)`` the images under attack; labels: ``(n,)`` their true labels.
    """

    def __init__(self, model: nn.Module, originals: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.flat = originals.detach().flatten(1).float()
        self.sq = self.flat.pow(2).sum(1)
        self.labels = labels
        n = originals.shape[0]
        self.passes = torch.zeros(n, dtype=torch.long)
        self.unattributed = 0
        self.events: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        with torch.no_grad():
            example = self._record(x.detach(), out.detach())
        if out.requires_grad and example is not None:
            backwards = [0]

            def count_backward(grad: torch.Tensor) -> None:
                backwards[0] += 1
                if backwards[0] > 1:  # a second backward through one forward is one more pass
                    self.passes.index_add_(0, example, torch.ones_like(example))

            out.register_hook(count_backward)
        return out

    def _record(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        flat = x.flatten(1).float()
        d2 = (flat.pow(2).sum(1)[:, None] + self.sq[None, :] - 2.0 * flat @ self.flat.T).clamp(
            min=0
        )
        two = d2.topk(min(2, d2.shape[1]), dim=1, largest=False)
        example = two.indices[:, 0]
        if d2.shape[1] > 1:  # squared distances: "half as far" is a factor 4
            sure = two.values[:, 1] >= 4.0 * two.values[:, 0]
        else:
            sure = torch.ones_like(example, dtype=torch.bool)
        self.unattributed += int((~sure).sum())
        example, rows = example[sure], sure.nonzero().squeeze(1)
        if len(rows) == 0:
            return None
        # a row's pass number: its example's count after this call (rows of one example in one
        # call are numbered in order)
        sorted_example, perm = example.sort(stable=True)
        counts = torch.bincount(sorted_example, minlength=self.flat.shape[0])
        starts = counts.cumsum(0) - counts
        order = torch.empty_like(example)
        order[perm] = torch.arange(1, len(example) + 1) - starts[sorted_example]
        step = self.passes[example] + order
        self.passes.index_add_(0, example, torch.ones_like(example))
        ok = success_lead(logits[rows], self.labels[example], None) > 0
        rms = (flat[rows].double() - self.flat[example].double()).pow(2).mean(1).sqrt()
        dist = torch.where(ok, rms, torch.full_like(rms, math.inf))
        self.events.append((example, step, dist))
        return example

    def curve(self, budgets: tuple[int, ...] = BUDGETS) -> list[dict[str, Any]]:
        """Per budget: success rate and mean / median distortion over the examples fooled by then."""
        n = self.flat.shape[0]
        if self.events:
            example = torch.cat([e[0] for e in self.events])
            step = torch.cat([e[1] for e in self.events])
            dist = torch.cat([e[2] for e in self.events])
        else:
            example = step = torch.zeros(0, dtype=torch.long)
            dist = torch.zeros(0, dtype=torch.float64)
        rows = []
        for k in budgets:
            keep = step <= k
            best = torch.full((n,), math.inf, dtype=torch.float64)
            best.scatter_reduce_(0, example[keep], dist[keep], reduce="amin")
            fooled = torch.isfinite(best)
            rows.append(
                {
                    "budget": k,
                    "success_rate": float(fooled.double().mean()),
                    "mean_distortion": float(best[fooled].mean()) if bool(fooled.any()) else None,
                    "median_distortion": float(best[fooled].median())
                    if bool(fooled.any())
                    else None,
                    "best": best.tolist(),
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Passes per example (mean, max) and rows that could not be attributed."""
        return {
            "passes_mean": float(self.passes.double().mean()),
            "passes_max": int(self.passes.max()) if len(self.passes) else 0,
            "unattributed_rows": self.unattributed,
        }
