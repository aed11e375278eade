"""Do adversarial examples exist for recurrent nets, and do they transfer to feedforward ones?

Issue #9, item 1 (Neocleous & Schizas: the paper's claims are "not verified in recurrent neural
structures"). The experiment extends the paper's §4.2 protocol (Tables 1 and 2) to the recurrent
models of :mod:`intriguing.models.recurrent`, as a resumable step graph::

    model/<m>                           train (or reuse) m; errors on train/test/P1/P2
    select/<split>/common               first n examples of the split EVERY model classifies right
    attack/<split>/<m>/untargeted/shard-<k>   untargeted L-BFGS (§4.1) on a shard of the selection
    attacks/<split>/<m>/untargeted      success rate, distortion, re-verification
    cross/<split>/<m>                   error m's examples cause on every model (Table 2 rows)
    amplify/<split>/<m>                 the same with m's perturbations rescaled to RMS 0.1 (Table 4)
    noise/<split>/<label>               Gaussian noise on the same images: "matched" has the mean
                                        adversarial distortion of all sources as its stddev
    tables/recurrent                    per-model table, transfer matrix and its RNN/FF blocks

Every model attacks and is evaluated on the SAME images, so the matrix's entries are the errors the
examples *cause* (every model is right on the originals). Each source row counts all n examples; a
failed attack contributes its best attempt (as in :func:`intriguing.experiments.steps.cross_step`).
Images are float32 ``(N, 1, 28, 28)`` in [0, 1]; distortion is the paper's RMS per pixel.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Unpack, cast

import torch

from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.experiments import steps as st
from intriguing.experiments import tables as tb
from intriguing.experiments.graph import Step, StepContext, step_key
from intriguing.experiments.rundir import ReportOptions, RunDirectory
from intriguing.experiments.specs import AttackConfig, Dataset, check_choice
from intriguing.models.recurrent import RECURRENT_MODELS
from intriguing.models.user import select_correct
from intriguing.report.recurrent import (
    SCHEMA,  # one schema name: the report reads what the run writes
)

FEEDFORWARD_MODELS: tuple[str, ...] = ("softmax1", "N100-100-10", "N200-200-10", "AE400-10", "Conv")
MATCHED = "matched"
KINDS: tuple[str, ...] = ("recurrent", "feedforward")
BLOCKS: tuple[tuple[str, str], ...] = (
    ("recurrent", "recurrent"),
    ("recurrent", "feedforward"),
    ("feedforward", "recurrent"),
    ("feedforward", "feedforward"),
)


@dataclass(frozen=True)
class RecurrentConfig:
    """What a ``recurrent`` run computes (its results depend only on this and the data).

    Attributes:
        recurrent: recurrent zoo models (rows and columns of the matrix).
        feedforward: feedforward zoo models (rows and columns too).
        n_examples: first test images classified correctly by every model, attacked by each.
        split: the split the examples come from (the test set: no model trained on it).
        noise_stddevs: fixed-stddev Gaussian rows besides the ``matched`` one.
        amplify_stddev: per-pixel RMS the successful perturbations are rescaled to for the
            amplified rows (Table 4's protocol: 0.1; None: no amplified rows). Keep it among
            ``noise_stddevs`` so the amplified rows have a same-stddev noise row to compare with.
        attack: L-BFGS settings (the attack's defaults unless lowered for tests).
        shard_size: examples per attack step (the unit of resumption).
        seed: seeds the models (checkpoints) and the noise.
        dataset: ``"mnist"`` or ``"mnist-5k"``.
    """

    recurrent: tuple[str, ...] = RECURRENT_MODELS
    feedforward: tuple[str, ...] = FEEDFORWARD_MODELS
    n_examples: int = 300
    split: Literal["train", "test"] = "test"
    noise_stddevs: tuple[float, ...] = (0.1,)
    amplify_stddev: float | None = 0.1
    attack: AttackConfig = field(default_factory=AttackConfig)
    shard_size: int = 100
    seed: int = 0
    dataset: Dataset = "mnist"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, Dataset)
        if self.n_examples < 1:
            raise InvalidInputError(f"--n must be >= 1, got {self.n_examples}")
        if self.shard_size < 1:
            raise InvalidInputError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.split not in ("train", "test"):
            raise InvalidInputError(f"split must be 'train' or 'test', got {self.split!r}")
        if not self.models():
            raise InvalidInputError("no models given; name at least one recurrent or feedforward")
        for stddev in (*self.noise_stddevs, *_present(self.amplify_stddev)):
            if not (math.isfinite(stddev) and stddev > 0):
                raise InvalidInputError(f"noise and amplify stddevs must be positive, got {stddev}")

    def models(self) -> tuple[str, ...]:
        """All models, recurrent first (the matrix's order)."""
        return (*self.recurrent, *self.feedforward)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return json.loads(json.dumps(data))


def make_spec(
    n: int = 300,
    models: Sequence[str] | None = None,
    *,
    dataset: str = "mnist",
    seed: int = 0,
    attack: AttackConfig | None = None,
    shard_size: int = 100,
    noise_stddevs: Sequence[float] = (0.1,),
    amplify_stddev: float | None = 0.1,
) -> RecurrentConfig:
    """A spec for ``models`` (zoo names or aliases; default: the three recurrent models and the
    feedforward zoo), split into recurrent and feedforward by the zoo's registrations.

    Raises:
        UnknownModelError: a name is not in the zoo.
        InvalidInputError: duplicate models, n < 1.
    """
    from intriguing.models import get_entry

    names = [get_entry(m).name for m in (models or (*RECURRENT_MODELS, *FEEDFORWARD_MODELS))]
    duplicates = sorted({m for m in names if names.count(m) > 1})
    if duplicates:
        raise InvalidInputError(f"models named twice: {', '.join(duplicates)}")
    return RecurrentConfig(
        recurrent=tuple(m for m in names if is_recurrent(m)),
        feedforward=tuple(m for m in names if not is_recurrent(m)),
        n_examples=n,
        noise_stddevs=tuple(float(s) for s in noise_stddevs),
        amplify_stddev=amplify_stddev,
        attack=attack or AttackConfig(),
        shard_size=shard_size,
        seed=seed,
        dataset=cast(Dataset, dataset),  # checked by RecurrentConfig
    )


def _present(value: float | None) -> tuple[float, ...]:
    return () if value is None else (value,)


def is_recurrent(name: str) -> bool:
    """Whether zoo model ``name`` is one of the recurrent models (has a recurrent layer)."""
    from intriguing.models import get_entry
    from intriguing.models.recurrent import FeedbackLoop, LastHidden
    from intriguing.training.checkpoint import seeded

    with seeded(0):
        model = get_entry(name).build()
    return any(isinstance(m, LastHidden | FeedbackLoop | torch.nn.RNNBase) for m in model.modules())


# ----------------------------------------------------------------------------------- steps
def common_select_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Indices of the first ``n`` examples of ``split`` that every model classifies correctly."""
    p = ctx.params
    images, labels = bench.data.split(str(p["split"]))
    correct = torch.ones_like(labels, dtype=torch.bool)
    per_model: dict[str, int] = {}
    for name in p["models"]:
        index = select_correct(bench.model(str(name)), images, labels, None, batch_size=4096)[2]
        per_model[str(name)] = len(index)
        correct &= torch.zeros_like(correct).index_fill_(0, index, True)
    chosen = torch.nonzero(correct).flatten()[: int(p["n"])]
    if chosen.numel() == 0:
        raise IntriguingError(
            f"no {p['split']} image is classified correctly by every model; train them better"
        )
    return {
        "split": p["split"],
        "n_split": int(labels.shape[0]),
        "n_correct": per_model,
        "n_common": int(correct.sum()),
        "indices": chosen.tolist(),
    }


def selected_noise_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Gaussian noise N(0, stddev^2) (clipped to [0, 1]) on the selected images; error per model.

    ``stddev`` is a number, or ``"matched"``: the mean of the sources' mean adversarial distortion
    (read from the attack summaries in ``summaries``), i.e. noise of the same RMS per pixel as the
    average adversarial perturbation.
    """
    from intriguing.attacks import gaussian_noise

    p = ctx.params
    stddev = _noise_stddev(p["stddev"], [ctx.deps[k] for k in p["summaries"]])
    select = ctx.deps[str(p["select"])]
    images, labels = bench.data.split(str(p["split"]))
    index = torch.tensor(select["indices"], dtype=torch.int64)
    x, y = images[index], labels[index]
    generator = torch.Generator().manual_seed(int(p["noise_seed"]))
    noisy = gaussian_noise(x, stddev, generator=generator)
    return {
        "split": p["split"],
        "label": p["label"],
        "stddev": stddev,
        "n": int(y.shape[0]),
        "achieved_distortion": float(noisy.distortion.double().mean()),
        "errors": {m: st.error_of(bench.model(m), noisy.images, y) for m in p["models"]},
    }


def _noise_stddev(value: Any, summaries: Sequence[Mapping[str, Any]]) -> float:
    if value != MATCHED:
        return float(value)
    means = [s["mean_distortion"] for s in summaries if s["mean_distortion"] is not None]
    if not means:
        raise IntriguingError("no successful attack to match the noise's stddev to")
    return float(sum(means) / len(means))


def recurrent_table(
    spec_dict: Mapping[str, Any],
    models: Mapping[str, Any],
    summaries: Mapping[str, Any],
    cross: Mapping[str, Any],
    noise: Sequence[Mapping[str, Any]],
    amplified: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Per-model rows, the transfer matrix (rows: sources, amplified sources and noise; columns:
    models) and the mean off-diagonal error of each (source kind -> target kind) block. Pure: no
    model is run."""
    recurrent = list(spec_dict["recurrent"])
    order = [*recurrent, *spec_dict["feedforward"]]
    kind = {m: ("recurrent" if m in recurrent else "feedforward") for m in order}
    rows = []
    for m in order:
        s, info = summaries[m], models[m]
        rows.append(
            {
                "model": m,
                "kind": kind[m],
                "description": info["description"],
                "test_error": info["errors"]["test"],
                "train_error": info["errors"][info["train_split"]],
                "n": s["n"],
                "success_rate": s["success_rate"],
                "mean_distortion": s["mean_distortion"],
                "median_distortion": s["median_distortion"],
                "max_distortion": s["max_distortion"],
                "verified": s["verified"],
                "verify_mismatches": s["verify_mismatches"],
            }
        )
    matrix = tb.cross_table(order, cross, noise, amplified, {})
    noise_rows = [row for row in matrix["rows"] if row["kind"] == "noise"]
    for row, r in zip(noise_rows, noise, strict=True):
        row["label"] = f"noise {r['label']} ({r['stddev']:.3f})"
        row["noise"] = r["label"]
    for row in matrix["rows"]:
        row["source_kind"] = kind.get(row["source"]) if row["source"] else "noise"
    return {
        "rows": rows,
        "kinds": kind,
        "matrix": matrix,
        "blocks": transfer_blocks(matrix, kind),
    }


def transfer_blocks(matrix: Mapping[str, Any], kind: Mapping[str, str]) -> list[dict[str, Any]]:
    """Mean error over each (source kind, target kind) block, the diagonal (a model's own
    examples) excluded; amplified rows give ``"<kind> amplified <stddev>"`` blocks and noise rows
    ``"noise <label>"`` blocks. ``mean`` is None when a block has no cell (e.g. a single recurrent
    model: no off-diagonal RNN->RNN cell)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for row in matrix["rows"]:
        if row["kind"] == "adversarial":
            source_kind = kind[row["source"]]
        elif row["kind"] == "amplified":
            source_kind = amplified_kind(kind[row["source"]], row["stddev"])
        else:
            source_kind = f"noise {row['noise']}" if "noise" in row else row["label"]
        for target, error in row["errors"].items():
            if target == row["source"] or error is None:
                continue
            cells.setdefault((source_kind, kind[target]), []).append(float(error))
    amplified = sorted({s for s, _ in cells if " amplified " in s}, key=_kind_first)
    ordered = [*BLOCKS, *((a, t) for a in amplified for t in KINDS)]
    pairs = [
        *(k for k in ordered if k in cells or k in BLOCKS),
        *sorted(k for k in cells if k not in ordered),
    ]
    return [
        {
            "source": s,
            "target": t,
            "cells": len(cells.get((s, t), [])),
            "mean": (sum(cells[(s, t)]) / len(cells[(s, t)])) if cells.get((s, t)) else None,
            "min": min(cells[(s, t)]) if cells.get((s, t)) else None,
            "max": max(cells[(s, t)]) if cells.get((s, t)) else None,
        }
        for s, t in pairs
    ]


def _kind_first(block: str) -> tuple[int, str]:
    """Sort key: recurrent blocks before feedforward ones, then by name."""
    return (0 if block.startswith("recurrent") else 1, block)


def amplified_kind(kind: str, stddev: float) -> str:
    """Block name of amplified rows, e.g. ``"recurrent amplified 0.1"``."""
    return f"{kind} amplified {stddev:g}"


# ----------------------------------------------------------------------------------- graph
def _step(
    key: str, fn: Callable[[StepContext], Any], params: dict[str, Any], deps: tuple[str, ...] = ()
) -> Step:
    return Step(key=key, fn=fn, params=params, deps=deps)


def build_steps(spec: RecurrentConfig, bench: st.Workbench, n_split: int) -> list[Step]:
    """Every step of the run described by ``spec`` (``n_split``: images in ``spec.split``)."""
    models = list(spec.models())
    model_keys = tuple(step_key("model", m) for m in models)
    steps = st.model_steps(bench, models, spec.dataset, spec.seed)
    select = step_key("select", spec.split, "common")
    n = min(spec.n_examples, n_split)
    steps.append(
        _step(
            select,
            partial(common_select_step, bench),
            {"models": models, "split": spec.split, "n": n},
            model_keys,
        )
    )
    summaries: dict[str, str] = {}
    cross: dict[str, str] = {}
    amplified: list[str] = []
    for model in models:
        shard_steps, summary = st.attack_steps(
            bench,
            model=model,
            split=spec.split,
            mode="untargeted",
            n=n,
            select=select,
            shard_size=spec.shard_size,
            attack=spec.attack.kwargs(),
            seed=spec.seed,
        )
        steps += shard_steps
        summaries[model] = summary
        shards = [s.key for s in shard_steps if s.key != summary]
        key = step_key("cross", spec.split, model)
        params = {
            "source": model,
            "split": spec.split,
            "models": models,
            "summary": summary,
            "shards": shards,
        }
        deps = (summary, *shards, *model_keys)
        steps.append(_step(key, partial(st.cross_step, bench), params, deps))
        cross[model] = key
        if spec.amplify_stddev is not None:
            key = step_key("amplify", spec.split, model)
            amp = {**params, "stddev": spec.amplify_stddev, "clip": True}  # docs/recurrent.md
            steps.append(_step(key, partial(st.amplify_step, bench), amp, deps))
            amplified.append(key)
    noise_keys = []
    for stddev in (MATCHED, *spec.noise_stddevs):
        label = stddev if isinstance(stddev, str) else f"{stddev:g}"
        key = step_key("noise", spec.split, label)
        summary_keys = list(summaries.values()) if stddev == MATCHED else []
        steps.append(
            _step(
                key,
                partial(selected_noise_step, bench),
                {
                    "split": spec.split,
                    "label": label,
                    "stddev": stddev,
                    "select": select,
                    "summaries": summary_keys,
                    "models": models,
                    "noise_seed": st.derived_seed(spec.seed, "recurrent-noise", label),
                },
                (select, *summary_keys, *model_keys),
            )
        )
        noise_keys.append(key)
    spec_dict = spec.to_dict()

    def table(ctx: StepContext) -> Any:
        return recurrent_table(
            spec_dict,
            {m: ctx.deps[step_key("model", m)] for m in models},
            {m: ctx.deps[k] for m, k in summaries.items()},
            {m: ctx.deps[k] for m, k in cross.items()},
            [ctx.deps[k] for k in noise_keys],
            [ctx.deps[k] for k in amplified],
        )

    deps = (*model_keys, *summaries.values(), *cross.values(), *noise_keys, *amplified)
    steps.append(
        Step(key="tables/recurrent", fn=table, params={"spec": spec_dict}, deps=deps, version="2")
    )
    return steps


def run_recurrent(
    spec: RecurrentConfig, out: str | os.PathLike[str], **options: Unpack[ReportOptions]
) -> dict[str, Any]:
    """Run (or resume) ``spec`` in ``out``; write ``results.json`` (and ``report.md`` + figure).

    Returns the results document: ``{"schema", "config", "dataset", "selection", "models",
    "table", "timings"}``; ``table`` is :func:`recurrent_table`'s output. A rerun with the same spec
    reuses every finished step. ``options``: ``data_dir``, ``backend`` (default: local;
    ``RayBackend`` for a Ray cluster, with identical results) and ``render`` (default True); see
    :class:`~intriguing.experiments.rundir.ReportOptions`.

    Raises:
        IntriguingError: unknown models, missing data, an unusable output directory.
    """
    run = RunDirectory(out, schema=SCHEMA)
    bench = st.Workbench(dataset=spec.dataset, data_dir=options.get("data_dir"), seed=spec.seed)
    n_split = len(bench.data.split(spec.split)[1])
    results = run.run(
        build_steps(spec, bench, n_split), description="recurrent", backend=options.get("backend")
    )
    select = results[step_key("select", spec.split, "common")]
    document = run.write(
        {
            "schema": SCHEMA,
            "config": spec.to_dict(),
            "dataset": bench.data.identity,
            "selection": {k: v for k, v in select.items() if k != "indices"}
            | {"n": len(select["indices"])},
            "models": {m: results[step_key("model", m)] for m in spec.models()},
            "table": results["tables/recurrent"],
            "timings": run.timings(),
        }
    )
    if options.get("render", True):
        from intriguing.report.recurrent import render_recurrent

        render_recurrent(out)
    return document


RecurrentSpec = RecurrentConfig  # the name before issue 17
