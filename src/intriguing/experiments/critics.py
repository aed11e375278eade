"""The critics' open questions as resumable experiments: rarity, recovery, robustness curves.

Three experiments answer items of issue #9 (questions the paper's critics left open, see
``paper/summary-and-critique.txt`` and ``paper/neocleous-schizas-critique.txt``):

- ``rarity``: how probable is a label change at the adversarial's own distance, in a random
  direction (:mod:`intriguing.analysis.rarity`; the paper's "extremely low probability", §4.1/§4.3);
- ``recover``: the targeted attack back to the true label, and the label-free detector built on
  the distortion needed to change a prediction (:mod:`intriguing.analysis.recovery`);
- ``curves``: success rate against the distortion budget for every model
  (:mod:`intriguing.analysis.curves`; the paper's "we always manage to generate", §4.2).

Each runs as a graph of :class:`~intriguing.experiments.graph.Step` in a
:class:`~intriguing.experiments.graph.RunStore` (the ``--out`` directory)::

    source/<model>/run          the untargeted attack of a ``reproduce`` run (``--from-run DIR``):
                                its shard records and AttackResult files are referenced, not copied
    source/<model>/<split>-n<N> or the attack run here on the first N correctly classified images
                                of ``split`` (artifacts/source/.../result.safetensors)
    rarity/<model>              flip probability on the sphere, ray distances
    recover/<model>             recovery and detector
    curves/<model>              the robustness curve

Steps are deterministic given their params (seeds included), so a killed command resumes where it
stopped, and the three commands share the ``source`` steps when given the same ``--out``.
:func:`run_critics` writes ``<out>/<command>.json`` (schema ``intriguing.critics/1``) and the
report section ``<out>/<command>.md`` with its figures under ``<out>/figures/``.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from intriguing._io import (
    atomic_write_json,
    atomic_write_text,
    json_safe,
    read_results,
)
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments import steps as st
from intriguing.experiments.graph import Backend, RunStore, Step, StepContext, run_graph, step_key
from intriguing.models.user import select_correct
from intriguing.training.api import cached_weights_sha256

SCHEMA = "intriguing.critics/1"
COMMANDS = ("rarity", "recover", "curves")
SPLITS = ("train", "test", "p1", "p2")


def default_attack() -> dict[str, Any]:
    """The reproduce run's default attack settings (``LBFGS`` keywords, single-threaded)."""
    from intriguing.experiments.specs import AttackConfig

    return AttackConfig().kwargs()


# ----------------------------------------------------------------------------- sources
def run_shards(run: Path, model: str, split: str) -> list[dict[str, Any]]:
    """The verified records of the untargeted attack shards that the reproduce run at ``run``
    summarised for ``model`` on ``split``, in order.

    Read through the run's summary record, not by listing the folder: a shard left over from a
    killed run with other settings is not the run's. Each record's digest, its artifact hashes
    and the summary's digest of it are checked (:meth:`RunStore.verified`); a mismatch raises
    IntriguingError in one line.
    """
    store = RunStore(run)
    summary = store.verified(step_key("attacks", split, model, "untargeted"))
    prefix = step_key("attack", split, model, "untargeted") + "/"
    deps = {k: v for k, v in summary["deps"].items() if k.startswith(prefix)}
    if not deps:
        raise IntriguingError(
            f"{store.record_path(summary['key'])}: lists no attack shard of {model}; rerun reproduce"
        )
    return [store.verified(key, digest) for key, digest in sorted(deps.items())]


def run_attack_split(run: Path, model: str) -> str | None:
    """The split on which the reproduce run at ``run`` attacked ``model`` (untargeted), or None."""
    for split in SPLITS:
        if (run / "steps" / "attacks" / split / model / "untargeted.json").exists():
            return split
    return None


def check_run(run: Path) -> dict[str, Any]:
    """The ``results.json`` of a reproduce run directory; IntriguingError when it is not one."""
    try:
        return read_results(run, "intriguing.reproduce/", command="reproduce")
    except IntriguingError as exc:
        raise IntriguingError(f"--from-run: {exc}") from None


def run_source_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Reference one model's untargeted attack shards of a reproduce run (nothing is copied)."""
    p = ctx.params
    run, model, split = Path(str(p["run"])), str(p["model"]), str(p["split"])
    records = [r["result"] for r in run_shards(run, model, split)]
    records = [r for r in records if r.get("artifact")]
    if not records:
        raise IntriguingError(f"{run}: no attack shards of {model} with results; rerun reproduce")
    return {
        "model": model,
        "origin": "run",
        "split": split,
        "base": str(run),
        "artifacts": [r["artifact"] for r in records],
        "indices": [i for r in records for i in r["indices"]],
        "labels": [v for r in records for v in r["labels"]],
        "distortion": [v for r in records for v in r["distortion"]],
        "success": [v for r in records for v in r["success"]],
        "attack": p["attack"],
    }


def attack_source_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Attack the first ``n`` correctly classified images of ``split`` (untargeted L-BFGS)."""
    from intriguing.attacks import LBFGS

    p = ctx.params
    model_name, split = str(p["model"]), str(p["split"])
    images, labels = bench.data.split(split)
    model = bench.model(model_name)
    index = select_correct(model, images, labels, None, batch_size=4096)[2][: int(p["n"])]
    result = LBFGS(mode="untargeted", **dict(p["attack"]))(model, images[index], labels[index])
    path = ctx.artifact_dir() / st.ATTACK_FILE
    result.save(path)
    return {
        "model": model_name,
        "origin": "attack",
        "split": split,
        "base": None,
        "artifacts": [path.relative_to(ctx.store.root).as_posix()],
        "indices": index.tolist(),
        "labels": labels[index].tolist(),
        "distortion": [float(v) for v in result.distortion.tolist()],
        "success": [bool(v) for v in result.success.tolist()],
        "attack": p["attack"],
        "elapsed_s": result.elapsed_s,
        "weights_sha256": cached_weights_sha256(model_name, bench.data.identity, bench.seed),
    }


def load_source(
    store: RunStore, bench: st.Workbench, source: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(originals, adversarials, labels, success, distortion)`` of a source step's result.

    Images ``(N, 1, 28, 28)`` float32 in [0, 1]; ``success`` is re-verified on the loaded model
    (an adversarial that the model no longer misclassifies counts as a failure).
    """
    from intriguing.attacks import AttackResult

    base = store.root if source["base"] is None else Path(source["base"])
    parts = [AttackResult.load(base / a) for a in source["artifacts"]]
    adversarials = torch.cat([r.adversarial for r in parts])
    labels = torch.cat([r.labels for r in parts]).long()
    images, split_labels = bench.data.split(str(source["split"]))
    index = torch.tensor(source["indices"], dtype=torch.int64)
    if index.numel() != adversarials.shape[0] or not torch.equal(split_labels[index], labels):
        raise IntriguingError(
            f"source of {source['model']}: stored attack results do not match their indices; "
            "rerun the attack"
        )
    originals = images[index]
    model = bench.model(str(source["model"]))
    success = torch.tensor(source["success"], dtype=torch.bool)
    success &= st.reverify(model, adversarials, labels)  # the one success rule
    success &= st.predict(model, originals) == labels
    distortion = torch.tensor(source["distortion"], dtype=torch.float64)
    return originals, adversarials, labels, success, distortion


def source_steps(
    bench: st.Workbench,
    models: Sequence[str],
    *,
    from_run: Path | None,
    n: int,
    split: str,
    attack: dict[str, Any],
    seed: int,
) -> tuple[list[Step], dict[str, str]]:
    """One source step per model: the run's attack when it has one, else an attack run here."""
    run_config: dict[str, Any] = {}
    run_models: dict[str, Any] = {}
    if from_run is not None:
        results = check_run(from_run)
        run_config = results.get("config", {})
        run_models = results.get("models", {})
    steps: list[Step] = []
    keys: dict[str, str] = {}
    identity = bench.data.identity
    for model in models:
        checkpoint = st.checkpoint_key(model, identity, seed)
        run_split = None if from_run is None else run_attack_split(from_run, model)
        if from_run is not None and run_split is not None:
            _check_run_model(from_run, run_config, run_models, model, checkpoint, bench)
            prints = [r["fingerprint"] for r in run_shards(from_run, model, run_split)]
            run_attack = {**run_config.get("attack", {}), "threads": 1, "progress": False}
            key = step_key("source", model, "run")
            params: dict[str, Any] = {
                "model": model,
                "run": str(from_run.resolve()),
                "split": run_split,
                "shard_fingerprints": prints,
                "checkpoint": checkpoint,
                "attack": run_attack,
            }
            steps.append(Step(key, partial(run_source_step, bench), params))
        else:
            key = step_key("source", model, f"{split}-n{n}")
            params = {
                "model": model,
                "split": split,
                "n": n,
                "attack": attack,
                "checkpoint": checkpoint,
            }
            same_weights = partial(st.same_cached_weights, identity, bench.seed, model)
            steps.append(
                Step(key, partial(attack_source_step, bench), params, reusable=same_weights)
            )
        keys[model] = key
    return steps, keys


def _check_run_model(
    run: Path,
    config: dict[str, Any],
    models: dict[str, Any],
    model: str,
    checkpoint: str,
    bench: st.Workbench,
) -> None:
    """Refuse a run whose dataset, seed or checkpoint differs from the model loaded here."""
    if config.get("dataset") not in (None, bench.dataset):
        raise IntriguingError(
            f"--from-run {run} used dataset {config.get('dataset')!r}; pass --dataset {config.get('dataset')}"
        )
    stored = models.get(model, {}).get("checkpoint_key")
    if stored is not None and stored != checkpoint:
        raise IntriguingError(
            f"--from-run {run}: {model} was trained with another recipe or seed than the cached "
            "model; rerun reproduce or drop --from-run"
        )
    weights = models.get(model, {}).get("weights_sha256")
    cached = cached_weights_sha256(model, bench.data.identity, bench.seed)
    if weights is not None and cached is not None and weights != cached:
        raise IntriguingError(
            f"--from-run {run}: {model} was attacked with other weights than the cached model "
            "(retrained or another cache directory); rerun reproduce or drop --from-run"
        )


# ----------------------------------------------------------------------------- experiment steps
def _usable(
    store: RunStore, bench: st.Workbench, source: dict[str, Any], n: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """The first ``n`` successful, re-verified examples: originals, adversarials, labels, distortion, positions."""
    x, adv, y, ok, dist = load_source(store, bench, source)
    moved = (adv - x).flatten(1).abs().amax(1) > 0
    pick = torch.nonzero(ok & moved).flatten()
    if n is not None:
        pick = pick[:n]
    if pick.numel() == 0:
        raise IntriguingError(f"{source['model']}: no successful adversarial example to analyse")
    return x[pick], adv[pick], y[pick], dist[pick], pick.tolist()


def rarity_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Flip probabilities at the adversarial distance and random-direction boundary distances."""
    from intriguing.analysis.rarity import RarityConfig, measure_rarity

    p = ctx.params
    source = ctx.deps[str(p["source"])]
    x, adv, y, _, pick = _usable(ctx.store, bench, source, int(p["n"]))
    config = RarityConfig(**{**dict(p["config"]), "scales": tuple(p["config"]["scales"])})
    result = measure_rarity(bench.model(str(p["model"])), x, adv, y, config)
    return {
        "model": p["model"],
        "split": source["split"],
        "origin": source["origin"],
        "positions": pick,
        **result,
    }


def recover_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Recovery by the targeted attack back to the label; detector and oracle separation."""
    from intriguing.analysis.recovery import recover_and_detect, summarise_recovery

    p = ctx.params
    source = ctx.deps[str(p["source"])]
    x, adv, y, dist, pick = _usable(ctx.store, bench, source, int(p["n"]))
    attack = dict(p["attack"])
    reuse = _same_attack(source["attack"], attack)
    per = recover_and_detect(
        bench.model(str(p["model"])),
        x,
        adv,
        y,
        attack=attack,
        clean_statistic=dist if reuse else None,
        amplify=tuple(float(k) for k in p.get("amplify", ())),
    )
    summary = summarise_recovery(
        per, n_resamples=int(p["bootstrap"]), seed=int(p["seed"]), confidence=float(p["confidence"])
    )
    return {
        "model": p["model"],
        "split": source["split"],
        "origin": source["origin"],
        "clean_statistic_from_source": reuse,
        "positions": pick,
        **summary,
        "per_example": {k: json_safe(v) for k, v in per.items()},
    }


def curves_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """The robustness curve of one model over every example of its source."""
    from intriguing.analysis.curves import curve_summary

    p = ctx.params
    source = ctx.deps[str(p["source"])]
    _, _, _, ok, dist = load_source(ctx.store, bench, source)
    result = curve_summary(dist, ok, list(p["budgets"]), confidence=float(p["confidence"]))
    return {
        "model": p["model"],
        "split": source["split"],
        "origin": source["origin"],
        "distortion_sorted": sorted(
            float(d) for d, s in zip(dist.tolist(), ok.tolist(), strict=True) if s
        ),
        **result,
    }


def _same_attack(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ignore = ("threads", "progress", "batch_size")
    return {k: v for k, v in a.items() if k not in ignore} == {
        k: v for k, v in b.items() if k not in ignore
    }


# ----------------------------------------------------------------------------- the commands
def budgets_grid(top: float, points: int) -> list[float]:
    """``points`` evenly spaced RMS budgets from 0 to ``top``."""
    if not (math.isfinite(top) and top > 0) or points < 2:
        raise InvalidInputError(
            f"the budget grid needs top > 0 and >= 2 points, got {top}, {points}"
        )
    return [top * k / (points - 1) for k in range(points)]


def build_steps(
    command: str,
    bench: st.Workbench,
    models: Sequence[str],
    *,
    from_run: Path | None,
    n: int,
    source_n: int,
    split: str,
    attack: dict[str, Any],
    options: dict[str, Any],
) -> tuple[list[Step], dict[str, str]]:
    """The steps of ``command`` for ``models``; returns (steps, {model: experiment step key})."""
    if command not in COMMANDS:
        raise InvalidInputError(
            f"unknown experiment {command!r}; choose one of {', '.join(COMMANDS)}"
        )
    steps, sources = source_steps(
        bench, models, from_run=from_run, n=source_n, split=split, attack=attack, seed=bench.seed
    )
    keys: dict[str, str] = {}
    fns: dict[str, Callable[[st.Workbench, StepContext], Any]] = {
        "rarity": rarity_step,
        "recover": recover_step,
        "curves": curves_step,
    }
    for model in models:
        params = {"model": model, "source": sources[model], "n": n, **options}
        key = f"{command}/{model}"
        steps.append(Step(key, partial(fns[command], bench), params, (sources[model],)))
        keys[model] = key
    return steps, keys


def run_critics(
    command: str,
    models: Sequence[str],
    out: Path,
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    from_run: Path | None = None,
    n: int = 500,
    source_n: int | None = None,
    split: str = "test",
    attack: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run (or resume) one experiment in ``out``; write ``<command>.json`` and ``<command>.md``.

    Args:
        command: ``rarity``, ``recover`` or ``curves``.
        models: zoo names.
        out: the run directory (a :class:`RunStore`).
        from_run: a reproduce run whose untargeted attacks are reused where it has the model.
        n: examples analysed per model (rarity, recover); curves use every example of the source.
        source_n: images attacked here for a model the run lacks (default ``n``).
        split: split attacked here.
        attack: ``LBFGS`` settings for the attacks run here (default: the reproduce defaults).
        options: the experiment's own parameters (part of each step's fingerprint).
        backend: where the steps run (default: local; ``RayBackend`` for a Ray cluster, with
            identical results).

    Returns:
        The JSON written to ``<out>/<command>.json``.
    """
    from intriguing.models import get_entry
    from intriguing.report.critics import render_section

    if not models:
        raise InvalidInputError("no models given; pass --models NAME[,NAME...]")
    for model in models:
        get_entry(model)  # unknown names fail here, before any work
    if len(set(models)) != len(models):
        raise InvalidInputError(f"--models names a model twice: {list(models)}")
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if n < 1:
        raise InvalidInputError(f"--n must be >= 1, got {n}")
    torch.set_num_threads(1)
    bench = st.Workbench(dataset=dataset, data_dir=data_dir, seed=seed)
    store = RunStore(out)
    attack = attack or default_attack()
    steps, keys = build_steps(
        command,
        bench,
        models,
        from_run=None if from_run is None else Path(from_run),
        n=n,
        source_n=source_n or n,
        split=split,
        attack=attack,
        options=options or {},
    )
    results = run_graph(steps, store, description=command, backend=backend)
    payload = {
        "schema": SCHEMA,
        "command": command,
        "dataset": dataset,
        "seed": seed,
        "from_run": None if from_run is None else str(Path(from_run).resolve()),
        "options": options or {},
        "attack": attack,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "models": {m: results[k] for m, k in keys.items()},
    }
    section = render_section(payload, out)
    payload["verdict"] = section.verdict
    payload["figures"] = section.figures
    atomic_write_json(out / f"{command}.json", payload)
    atomic_write_text(out / f"{command}.md", section.markdown)
    return payload
