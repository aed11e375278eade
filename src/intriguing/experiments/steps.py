"""Step functions of the reproduction graph (paper §4.2): train -> select -> attack -> evaluate.

Each function takes a :class:`~intriguing.experiments.graph.StepContext` and returns a JSON-ready
result; everything they depend on is in the step's params (model names, split, example range, seed,
attack settings), so a resumed run computes exactly what an uninterrupted one does. The shared
:class:`Workbench` holds the loaded dataset and models for one process (not part of any result).

Conventions: images are float32 ``(N, 1, 28, 28)`` in [0, 1]; "error" is the share of images whose
argmax differs from the true label; distortion is the paper's RMS per pixel.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from intriguing._io import atomic_save_tensors, file_sha256
from intriguing.attacks.metrics import median
from intriguing.errors import IntriguingError
from intriguing.experiments.graph import shard_key, shipped_as, step_key
from intriguing.models.user import predict as user_predict
from intriguing.models.user import select_correct
from intriguing.training.api import checkpoint_key

if TYPE_CHECKING:
    from intriguing.data import MNIST
    from intriguing.experiments.graph import Step, StepContext

ATTACK_FILE = "result.safetensors"
FIGURE7_FILE = "figure7.safetensors"
# 2: the result carries the images' SHA-256, which the report checks before drawing them
FIGURE7_VERSION = "2"


class LazyData:
    """The workbenches' ``data``: MNIST ``dataset`` from ``data_dir``, loaded on first use."""

    dataset: str
    data_dir: str | os.PathLike[str] | None
    _data: MNIST | None

    @property
    def data(self) -> MNIST:
        if self._data is None:
            from intriguing.data import load_mnist

            self._data = load_mnist(self.data_dir, dataset=self.dataset)
        return self._data


@dataclass
class Workbench(LazyData):
    """The dataset and the trained models of one run, loaded once per process."""

    dataset: str
    data_dir: str | os.PathLike[str] | None
    seed: int
    _data: MNIST | None = None
    _models: dict[str, nn.Module] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Shipped (to Ray workers) as where its data comes from: see :func:`graph.process_local`."""
        return shipped_as(Workbench, self.dataset, self.data_dir, self.seed)

    def model(self, name: str) -> nn.Module:
        """The trained zoo model ``name`` (trained and cached on first use), in eval mode."""
        if name not in self._models:
            from intriguing.training.api import train_model

            self._models[name] = train_model(
                name, dataset=self.dataset, data_dir=self.data_dir, seed=self.seed
            ).model
        return self._models[name]


def derived_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def predict(model: nn.Module, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Argmax predictions ``(N,)`` int64 of ``model`` on ``images`` ``(N, 1, 28, 28)``, in chunks."""
    return user_predict(model, images, chunk)


def error_of(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Share of ``images`` misclassified by ``model``; None when there are no images."""
    if labels.shape[0] == 0:
        return None
    return float((predict(model, images) != labels).double().mean())


def _rel(ctx: StepContext, path: Path) -> str:
    return path.relative_to(ctx.store.root).as_posix()


# ----------------------------------------------------------------------------------- models
def model_steps(bench: Workbench, models: Iterable[str], dataset: str, seed: int) -> list[Step]:
    """One ``model/<m>`` step per model: train (or reuse) it and record its errors."""
    from intriguing.experiments.graph import Step

    identity = bench.data.identity
    data_id = {"dataset": identity.get("dataset"), "files": identity.get("files")}
    return [
        Step(
            key=step_key("model", m),
            fn=partial(model_step, bench),
            params={
                "model": m,
                "dataset": dataset,
                "seed": seed,
                "data": data_id,
                "checkpoint": checkpoint_key(m, identity, seed),
            },
            reusable=partial(same_cached_weights, identity, seed, m),
        )
        for m in models
    ]


def same_cached_weights(identity: Any, seed: int, name: str, result: Mapping[str, Any]) -> bool:
    """A stored step (a model step, the critics' attack source) is reused only while the cache holds
    the very weights it measured (its ``weights_sha256``): a checkpoint retrained or replaced since
    (another cache directory, another CPU) recomputes the step, and with it every step downstream,
    instead of mixing two models' results in one run."""
    from intriguing.training.api import cached_weights_sha256

    return cached_weights_sha256(name, identity, seed) == result.get("weights_sha256")


def model_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Train (or reuse) one zoo model and measure its error on train, test, P1 and P2."""
    from intriguing.models import get_entry
    from intriguing.training.api import train_model

    name = str(ctx.params["model"])
    trained = train_model(name, dataset=bench.dataset, data_dir=bench.data_dir, seed=bench.seed)
    bench._models[name] = trained.model
    errors = {
        split: error_of(trained.model, *bench.data.split(split))
        for split in ("train", "test", "p1", "p2")
    }
    entry = get_entry(name)
    return {
        "model": entry.name,
        "description": entry.description,
        "train_split": entry.train_split,
        "errors": errors,
        "paper": dict(entry.paper),
        "checkpoint_key": trained.sidecar.get("key"),
        "weights_sha256": trained.sidecar.get("weights_sha256"),
        "train_config": trained.sidecar.get("config"),
        "train_wall_time_s": trained.metrics.get("wall_time_s"),
    }


def select_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Indices of the first ``n`` examples of ``split`` that the model classifies correctly."""
    p = ctx.params
    images, labels = bench.data.split(str(p["split"]))
    correct = select_correct(bench.model(str(p["model"])), images, labels, None, batch_size=4096)[2]
    return {
        "model": p["model"],
        "split": p["split"],
        "n_split": int(labels.shape[0]),
        "n_correct": len(correct),
        "indices": correct[: int(p["n"])].tolist(),
    }


# ----------------------------------------------------------------------------------- attacks
# 2: every LBFGSConfig field is in the params (candidates, candidate_ratio, ...) and the attack's
# success rule has a logit margin; shards stored by the version-1 attack recompute.
# 3: the attack's results changed with its settings unchanged (issue 18: the class estimate over
# the largest logits, beaten candidates stop, the nearest class first, the final move toward the
# original): a run resumed across the upgrade recomputes its shards instead of mixing the two.
ATTACK_SHARD_VERSION = "3"


def attack_steps(
    bench: Workbench,
    *,
    model: str,
    split: str,
    mode: str,
    n: int,
    select: str,
    shard_size: int,
    attack: dict[str, Any],
    seed: int,
) -> tuple[list[Step], str]:
    """The attack of ``model`` on the first ``n`` examples of step ``select``, as shards of
    ``shard_size`` (``attack/<split>/<model>/<mode>/shard-k``) plus their summary
    (``attacks/<split>/<model>/<mode>``); returns (steps, summary key)."""
    from intriguing.experiments.graph import Step

    steps: list[Step] = []
    for k in range(max(1, math.ceil(n / shard_size))):
        start, stop = k * shard_size, min(n, (k + 1) * shard_size)
        params = {
            "model": model,
            "split": split,
            "mode": mode,
            "start": start,
            "stop": stop,
            "select": select,
            "attack": attack,
            "target_seed": derived_seed(seed, model, split, start),
        }
        key = shard_key(split, model, mode, k)
        shard = partial(attack_shard_step, bench)
        steps.append(Step(key, shard, params, (select,), version=ATTACK_SHARD_VERSION))
    summary = f"attacks/{split}/{model}/{mode}"
    keys = [s.key for s in steps]
    params = {"model": model, "split": split, "mode": mode, "shards": keys}
    steps.append(Step(summary, partial(attack_summary_step, bench), params, tuple(keys)))
    return steps, summary


def attack_shard_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Attack examples ``[start, stop)`` of a model's selection; store and re-verify them.

    The adversarial images go to ``<artifact_dir>/result.safetensors`` (an :class:`AttackResult`);
    the JSON holds per-example index, label, target, prediction, distortion and success, and
    ``verified``: the prediction of the model on the images *read back from disk*.
    """
    from intriguing.attacks import LBFGS, AttackResult

    p = ctx.params
    select = ctx.deps[str(p["select"])]
    indices = select["indices"][int(p["start"]) : int(p["stop"])]
    result: dict[str, Any] = {
        "model": p["model"],
        "split": p["split"],
        "mode": p["mode"],
        "indices": indices,
        "artifact": None,
    }
    if not indices:
        return {
            **result,
            **{k: [] for k in ("labels", "targets", "predicted", "distortion")},
            "success": [],
            "verified": [],
        }
    images, labels = bench.data.split(str(p["split"]))
    index = torch.tensor(indices, dtype=torch.int64)
    x, y = images[index], labels[index]
    model = bench.model(str(p["model"]))
    settings = dict(p["attack"])
    if p["mode"] == "targeted":
        attack = LBFGS(mode="targeted", target="random", seed=int(p["target_seed"]), **settings)
    else:
        attack = LBFGS(mode="untargeted", **settings)
    attack_result = attack(model, x, y)
    path = ctx.artifact_dir() / ATTACK_FILE
    attack_result.save(path)
    stored = AttackResult.load(path)
    verified = _reverify(model, stored, y)
    return {
        **result,
        "artifact": _rel(ctx, path),
        "labels": y.tolist(),
        "targets": stored.targets.tolist(),
        "predicted": stored.predicted.tolist(),
        "distortion": [float(v) for v in stored.distortion.tolist()],
        "success": [bool(v) for v in stored.success.tolist()],
        "verified": verified,
    }


def reverify(
    model: nn.Module,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``model`` on ``adversarial`` ``(N, ...)``: is each image really adversarial? ``(N,)`` bool.

    Decided by the package's one success rule (:func:`intriguing.attacks.metrics.success_mask`:
    ties are not successes), one chunk of images at a time; ``targets`` None: untargeted.
    """
    from intriguing.attacks.metrics import success_mask

    with torch.no_grad():
        logits = torch.cat([model(part) for part in adversarial.split(4096)])
    return success_mask(logits, labels, targets)


def _reverify(model: nn.Module, stored: Any, labels: torch.Tensor) -> list[bool]:
    """:func:`reverify` of a stored attack result, as a JSON list."""
    return [bool(v) for v in reverify(model, stored.adversarial, labels, stored.targets).tolist()]


def attack_summary_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Aggregate a model's attack shards: success rate, distortion over successes, verification."""
    shards = [ctx.deps[key] for key in ctx.params["shards"]]
    success = [s for shard in shards for s in shard["success"]]
    verified = [v for shard in shards for v in shard["verified"]]
    dist = torch.tensor(
        [
            d
            for shard in shards
            for d, s in zip(shard["distortion"], shard["success"], strict=True)
            if s
        ],
        dtype=torch.float64,
    )
    n = len(success)
    return {
        "model": ctx.params["model"],
        "split": ctx.params["split"],
        "mode": ctx.params["mode"],
        "n": n,
        "successes": sum(success),
        "success_rate": sum(success) / n if n else None,
        "mean_distortion": float(dist.mean()) if len(dist) else None,
        "median_distortion": median(dist) if len(dist) else None,
        "max_distortion": float(dist.max()) if len(dist) else None,
        "verified": sum(1 for s, v in zip(success, verified, strict=True) if s and v),
        "verify_mismatches": sum(1 for s, v in zip(success, verified, strict=True) if s != v),
        "artifacts": [shard["artifact"] for shard in shards if shard["artifact"]],
    }


def load_adversarials(
    root: Path, artifacts: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate stored attack results: adversarial ``(N,1,28,28)``, labels ``(N,)``, success ``(N,)``."""
    from intriguing.attacks import AttackResult

    if not artifacts:
        empty = torch.zeros(0, 1, 28, 28)
        return empty, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    parts = [AttackResult.load(root / a) for a in artifacts]
    return (
        torch.cat([r.adversarial for r in parts]),
        torch.cat([r.labels for r in parts]),
        torch.cat([r.success.bool() for r in parts]),
    )


def _originals(bench: Workbench, split: str, shards: list[dict[str, Any]]) -> torch.Tensor:
    images, _ = bench.data.split(split)
    index = torch.tensor(
        [i for s in shards if s["artifact"] for i in s["indices"]], dtype=torch.int64
    )
    return images[index]


def cross_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Error that the examples made for ``source`` cause on every model of the table (Tables 2, 4).

    Every example of the source's selection counts (as in the paper's tables); a failed attack
    contributes its best attempt. ``clean_errors`` is each model's error on the originals.
    """
    p = ctx.params
    summary = ctx.deps[str(p["summary"])]
    adv, labels, _ = load_adversarials(ctx.store.root, summary["artifacts"])
    originals = _originals(bench, str(p["split"]), [ctx.deps[k] for k in p["shards"]])
    return {
        "source": p["source"],
        "split": p["split"],
        "n": int(labels.shape[0]),
        "mean_distortion": summary["mean_distortion"],
        "errors": {m: error_of(bench.model(m), adv, labels) for m in p["models"]},
        "clean_errors": {m: error_of(bench.model(m), originals, labels) for m in p["models"]},
    }


def amplify_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Table 4's amplified rows: the source's successful perturbations rescaled to RMS ``stddev``."""
    from intriguing.attacks import amplify

    p = ctx.params
    summary = ctx.deps[str(p["summary"])]
    adv, labels, success = load_adversarials(ctx.store.root, summary["artifacts"])
    originals = _originals(bench, str(p["split"]), [ctx.deps[k] for k in p["shards"]])
    moved = (adv - originals).flatten(1).abs().amax(1) > 0
    keep = success & moved
    if not bool(keep.any()):
        raise IntriguingError(f"no successful adversarial example of {p['source']} to amplify")
    amplified = amplify(originals[keep], adv[keep], float(p["stddev"]), clip=bool(p["clip"]))
    return {
        "source": p["source"],
        "split": p["split"],
        "stddev": p["stddev"],
        "clipped": bool(p["clip"]),
        "n": int(keep.sum()),
        "achieved_distortion": float(amplified.distortion.double().mean()),
        "errors": {
            m: error_of(bench.model(m), amplified.images, labels[keep]) for m in p["models"]
        },
    }


def noise_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """A Gaussian-noise row: the first ``n`` images of ``split`` plus N(0, stddev^2), clipped to
    [0, 1] unless ``clip`` is false."""
    from intriguing.attacks import gaussian_noise

    p = ctx.params
    images, labels = bench.data.split(str(p["split"]))
    x, y = images[: int(p["n"])], labels[: int(p["n"])]
    generator = torch.Generator().manual_seed(int(p["noise_seed"]))
    noisy = gaussian_noise(x, float(p["stddev"]), generator=generator, clip=bool(p["clip"]))
    return {
        "split": p["split"],
        "stddev": p["stddev"],
        "clipped": bool(p["clip"]),
        "n": int(y.shape[0]),
        "achieved_distortion": float(noisy.distortion.double().mean()),
        "errors": {m: error_of(bench.model(m), noisy.images, y) for m in p["models"]},
    }


def figure7_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Figure 7's images: originals and adversarials of two models, and stddev-1 noise with accuracy.

    Writes ``<artifact_dir>/figure7.safetensors`` with ``<model>.original``, ``<model>.adversarial``
    ``(k, 1, 28, 28)`` and ``noise.original``, ``noise.noisy``; the JSON holds what the figure says.
    """
    from intriguing.attacks import gaussian_noise

    p = ctx.params
    n_show = int(p["n_show"])
    tensors: dict[str, torch.Tensor] = {}
    shown: dict[str, Any] = {}
    for model_name in p["models"]:
        shard = ctx.deps[shard_key(str(p["split"]), model_name, "untargeted", 0)]
        adv, labels, success = load_adversarials(
            ctx.store.root, [shard["artifact"]] if shard["artifact"] else []
        )
        originals = _originals(bench, str(p["split"]), [shard])
        pick = torch.nonzero(success).flatten()[:n_show]
        tensors[f"{model_name}.original"] = originals[pick].contiguous()
        tensors[f"{model_name}.adversarial"] = adv[pick].contiguous()
        shown[model_name] = {
            "indices": [shard["indices"][i] for i in pick.tolist()],
            "labels": labels[pick].tolist(),
            "predicted": predict(bench.model(model_name), adv[pick]).tolist(),
            "distortion": [shard["distortion"][i] for i in pick.tolist()],
        }
    images, labels = bench.data.split("test")
    x, y = images[: int(p["noise_examples"])], labels[: int(p["noise_examples"])]
    noisy = gaussian_noise(
        x,
        float(p["noise_stddev"]),
        generator=torch.Generator().manual_seed(int(p["noise_seed"])),
        clip=bool(p["noise_clip"]),
    )
    tensors["noise.original"] = x[:n_show].contiguous()
    tensors["noise.noisy"] = noisy.images[:n_show].contiguous()
    path = ctx.artifact_dir() / FIGURE7_FILE
    atomic_save_tensors(path, tensors)
    accuracy = {m: 1.0 - (error_of(bench.model(m), noisy.images, y) or 0.0) for m in p["models"]}
    return {
        "artifact": _rel(ctx, path),
        "sha256": file_sha256(path),
        "shown": shown,
        "noise": {
            "stddev": p["noise_stddev"],
            "clipped": bool(p["noise_clip"]),
            "n": int(y.shape[0]),
            "achieved_distortion": float(noisy.distortion.double().mean()),
            "accuracy": accuracy,
        },
    }
