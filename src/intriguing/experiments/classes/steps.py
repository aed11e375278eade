"""The steps of a run (train -> attack -> transfer, restricted; §4.1's L-BFGS) and their graph."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from intriguing._io import atomic_save_tensors, finite_or_none, json_safe
from intriguing.errors import IntriguingError
from intriguing.experiments.classes.bench import Bench
from intriguing.experiments.classes.config import ClassesConfig, train_config
from intriguing.experiments.classes.families import FAMILIES, build_task_model
from intriguing.experiments.classes.tasks import ALL_TASK, get_task
from intriguing.experiments.graph import step_key
from intriguing.experiments.steps import predict
from intriguing.models.user import select_correct

if TYPE_CHECKING:
    from intriguing.experiments.graph import Step, StepContext

MODEL_FILE = "model.safetensors"
ATTACK_FILE = "attack.safetensors"


def _rel(ctx: StepContext, path: Path) -> str:
    return path.relative_to(ctx.store.root).as_posix()


def train_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Train one family on one task's training images; store the weights; measure test error."""

    from intriguing.training import train
    from intriguing.training.checkpoint import seeded

    p = ctx.params
    task, family = get_task(str(p["task"]["name"])), str(p["family"])
    _, images, labels = bench.task_split(task, "train")
    config = train_config(family, int(labels.shape[0]), bench.config)
    encoder = bench.encoder()[0] if family == "ae-probe" else None
    with seeded(config.seed):
        model = build_task_model(family, task.num_classes, encoder)
    metrics = train(model, images, labels, config, description=f"{task.name}/{family}")
    path = ctx.artifact_dir() / MODEL_FILE
    atomic_save_tensors(path, {k: v.contiguous() for k, v in model.state_dict().items()})
    _, test_images, test_labels = bench.task_split(task, "test")
    test_error = float((predict(model, test_images) != test_labels).double().mean())
    bench._models[_rel(ctx, path)] = model.eval()
    return {
        "task": task.name,
        "family": family,
        "num_classes": task.num_classes,
        "n_train": int(labels.shape[0]),
        "n_test": int(test_labels.shape[0]),
        "train_error": metrics.train_error,
        "test_error": test_error,
        "epochs": config.epochs,
        "steps": metrics.steps,
        "wall_time_s": metrics.wall_time_s,
        "cpu_time_s": metrics.cpu_time_s,
        "train_config": config.to_dict(),
        "artifact": _rel(ctx, path),
    }


def _attack(settings: Mapping[str, Any], **extra: Any) -> Any:
    from intriguing.attacks import LBFGS

    return LBFGS(**{**dict(settings), **extra})


def attack_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Untargeted L-BFGS (§4.1) on the first ``n`` task test images the model gets right.

    Stores the :class:`~intriguing.attacks.AttackResult`; the JSON holds per image the test-set
    index, task label, distortion and success; for the linear softmax also the exact optimum.
    """
    from intriguing.attacks import exact_linear_attack

    p = ctx.params
    task = get_task(str(p["task"]["name"]))
    train_result = ctx.deps[str(p["train"])]
    model = bench.model(ctx.store.root, train_result)
    index, images, labels = bench.task_split(task, "test")
    right = select_correct(model, images, labels, None, batch_size=4096)[2]
    correct = right[: int(p["n"])]
    x, y = images[correct], labels[correct]
    result = _attack(p["attack"], mode="untargeted")(model, x, y)
    path = ctx.artifact_dir() / ATTACK_FILE
    result.save(path)
    out: dict[str, Any] = {
        "task": task.name,
        "family": train_result["family"],
        "n_task_test": int(labels.shape[0]),
        "n_correct": len(right),
        "indices": index[correct].tolist(),
        "labels": y.tolist(),
        "distortion": [float(v) for v in result.distortion.tolist()],
        "success": [bool(v) for v in result.success.tolist()],
        "grad_evals": [int(v) for v in result.grad_evals.tolist()],
        "elapsed_s": result.elapsed_s,
        "artifact": _rel(ctx, path),
        "exact": None,
    }
    if p.get("exact") and len(y):
        exact = exact_linear_attack(model, x, y, progress=False)
        out["exact"] = json_safe(exact.distortion)
    return out


def transfer_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """Share of a source model's adversarial examples misclassified by the task's other models.

    ``rate[target]`` counts the successful adversarial examples whose original ``target``
    classifies correctly (so a clean mistake is not counted as transfer); ``clean_error[target]``
    is ``target``'s error on the attacked originals.
    """
    from intriguing.attacks import AttackResult

    p = ctx.params
    source = ctx.deps[str(p["attack_key"])]
    stored = AttackResult.load(ctx.store.root / source["artifact"])
    images, _ = bench.data.split("test")
    originals = images[torch.tensor(source["indices"], dtype=torch.int64)]
    labels, success = stored.labels, stored.success.bool()
    rows: dict[str, Any] = {}
    for target, key in dict(p["targets"]).items():
        model = bench.model(ctx.store.root, ctx.deps[key])
        clean_ok = predict(model, originals) == labels
        fooled = predict(model, stored.adversarial) != labels
        counted = success & clean_ok
        rows[target] = {
            "n": int(counted.sum()),
            "fooled": int((fooled & counted).sum()),
            "clean_error": float((~clean_ok).double().mean()) if len(labels) else None,
        }
    return {"task": source["task"], "source": source["family"], "targets": rows}


def restricted_step(bench: Bench, ctx: StepContext) -> dict[str, Any]:
    """The 10-class model of the same family on the task's attacked images (see module docs).

    For the images the 10-class model classifies correctly: ``untargeted`` is its minimum
    distortion to any other digit, ``restricted`` its minimum over targets among the digits of the
    task's other classes (one targeted L-BFGS problem per allowed digit, the smallest success kept),
    ``task`` the task model's distortion on the same image; for the linear softmax also the exact
    optima. Only images where all three attacks succeed are paired.
    """
    from intriguing.attacks import exact_linear_attack

    p = ctx.params
    task = get_task(str(p["task"]["name"]))
    source = ctx.deps[str(p["attack_key"])]
    model = bench.model(ctx.store.root, ctx.deps[str(p["train_all"])])
    images, digits = bench.data.split("test")
    index = torch.tensor(source["indices"], dtype=torch.int64)
    x, d = images[index], digits[index]
    keep = torch.nonzero(predict(model, x) == d).flatten()
    x, d = x[keep], d[keep]
    out: dict[str, Any] = {"task": task.name, "family": source["family"], "n_kept": len(keep)}
    if len(keep) == 0:
        return {**out, "kept": [], "task_distortion": [], "untargeted": [], "restricted": []}
    untargeted = _attack(p["attack"], mode="untargeted")(model, x, d)
    owners = [i for i, digit in enumerate(d.tolist()) for _ in task.other_digits(digit)]
    goals = [t for digit in d.tolist() for t in task.other_digits(digit)]
    owner = torch.tensor(owners, dtype=torch.int64)
    targeted = _attack(p["attack"], mode="targeted")(
        model, x[owner], d[owner], targets=torch.tensor(goals, dtype=torch.int64)
    )
    restricted = _min_per_owner(targeted.distortion, targeted.success, owner, len(keep))
    task_dist = [source["distortion"][i] if source["success"][i] else None for i in keep.tolist()]
    out.update(
        kept=keep.tolist(),
        task_distortion=task_dist,
        untargeted=[
            float(v) if s else None
            for v, s in zip(
                untargeted.distortion.tolist(), untargeted.success.tolist(), strict=True
            )
        ],
        restricted=restricted,
        targeted_problems=len(goals),
    )
    if p.get("exact"):
        exact = exact_linear_attack(model, x, d, progress=False)
        per_target = exact.per_target_distortion
        if per_target is None:  # untargeted runs always fill it
            raise IntriguingError("the exact oracle returned no per-target distortions")
        allowed = torch.zeros_like(per_target, dtype=torch.bool)
        allowed[owner, torch.tensor(goals, dtype=torch.int64)] = True
        masked = torch.where(allowed, per_target, torch.full_like(per_target, math.inf))
        out["exact_untargeted"] = [finite_or_none(v) for v in exact.distortion.tolist()]
        out["exact_restricted"] = [finite_or_none(v) for v in masked.amin(1).tolist()]
        out["exact_task"] = [source["exact"][i] for i in keep.tolist()] if source["exact"] else None
    return out


def _min_per_owner(
    distortion: torch.Tensor, success: torch.Tensor, owner: torch.Tensor, n: int
) -> list[float | None]:
    """Per image, the smallest distortion over its successful targeted problems (None: none)."""
    values = torch.where(
        success.bool(), distortion.double(), torch.full_like(distortion.double(), math.inf)
    )
    best = torch.full((n,), math.inf, dtype=torch.float64).scatter_reduce(
        0, owner, values, reduce="amin"
    )
    return [finite_or_none(v) for v in best.tolist()]


def build_steps(config: ClassesConfig, bench: Bench) -> list[Step]:
    """The step graph of a run (train -> attack -> transfer, restricted)."""
    from functools import partial

    from intriguing.experiments.graph import Step

    identity = bench.data.identity
    steps: list[Step] = []
    tasks = [get_task(t) for t in config.tasks]
    attack_settings = {**dict(config.attack), "seed": config.seed}
    has_all = ALL_TASK in config.tasks
    for task in tasks:
        train_keys = {f: step_key("train", task.name, f) for f in config.families}
        for family in config.families:
            params: dict[str, Any] = {
                "task": task.to_dict(),
                "family": family,
                "updates": config.updates,
                "batch_size": config.batch_size,
                "train_limit": config.train_limit,
                "seed": config.seed,
                "lr": FAMILIES[family].lr,
                "weight_decay": dict(FAMILIES[family].weight_decay),
                "data": identity,
            }
            if family == "ae-probe":
                params["encoder"] = bench.encoder()[1]
            steps.append(Step(train_keys[family], partial(train_step, bench), params))
        for family in (f for f in config.families if FAMILIES[f].attacked):
            attack_key = step_key("attack", task.name, family)
            steps.append(
                Step(
                    attack_key,
                    partial(attack_step, bench),
                    {
                        "task": task.to_dict(),
                        "train": train_keys[family],
                        "n": config.n,
                        "attack": attack_settings,
                        "exact": config.exact and family == "softmax",
                    },
                    deps=(train_keys[family],),
                )
            )
            others = {f: train_keys[f] for f in config.families if f != family}
            if others:
                steps.append(
                    Step(
                        f"transfer/{task.name}/{family}",
                        partial(transfer_step, bench),
                        {"attack_key": attack_key, "targets": others},
                        deps=(attack_key, *others.values()),
                    )
                )
            if config.restricted and has_all and task.name != ALL_TASK:
                train_all = step_key("train", ALL_TASK, family)
                steps.append(
                    Step(
                        f"restricted/{task.name}/{family}",
                        partial(restricted_step, bench),
                        {
                            "task": task.to_dict(),
                            "attack_key": attack_key,
                            "train_all": train_all,
                            "attack": attack_settings,
                            "exact": config.exact and family == "softmax",
                        },
                        deps=(attack_key, train_all),
                    )
                )
    return steps
