"""``reproduce``: the paper's MNIST experiments (§4.2, Tables 1-4, Figure 7) as a resumable graph.

:func:`build_steps` turns a :class:`~intriguing.experiments.specs.ReproduceSpec` into steps::

    model/<m>                               train (or reuse) m; errors on train/test/P1/P2
    select/<split>/<m>                      first n correctly classified examples of the split
    attack/<split>/<m>/<mode>/shard-<k>     L-BFGS on examples [k*s, (k+1)*s) of the selection;
                                            adversarials in artifacts/.../result.safetensors
    attacks/<split>/<m>/<mode>              shard summary (success, distortion, re-verification)
    cross/<split>/<m>                       error the examples for m cause on every table model
    noise/<split>/<stddev>                  Gaussian-noise rows
    amplify/<split>/<m>                     Table 4's amplified rows
    figure7                                 images and the stddev-1 noise accuracy
    paired/<split>/<m>                      adversarial vs noise (and amplified vs noise) on the
                                            same images, distortion summary, box (evidence.py)
    reference/test                          mean RMS distance between different-class images
    units/<m>                               §3: units vs random directions (analysis_steps)
    spectral/<m>                            §4.3: per-layer frame bounds, Table 5 analogue
    sandwich/<m>                            certified radius vs Table 1's (or its own) attack
    tables/table1..table4, claims           assembled from the above

:func:`run_reproduce` runs (or resumes) them in a :class:`RunStore` and writes ``results.json``
(schema in docs/reproduce.md) and the report. Deterministic given the spec (seeds are in params).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Unpack

import torch

from intriguing._io import atomic_write_json, sealed
from intriguing.experiments import analysis_steps as an
from intriguing.experiments import claims as claims_mod
from intriguing.experiments import evidence as ev
from intriguing.experiments import steps as st
from intriguing.experiments import tables as tb
from intriguing.experiments.graph import Step, StepContext
from intriguing.experiments.rundir import RESULTS_FILE, ReportOptions, RunDirectory, RunOptions
from intriguing.experiments.specs import ReproduceSpec
from intriguing.report.render import SCHEMA  # the one results.json schema of reproduce

# 2: the units step records its figures' SHA-256 (figures_sha256), which report checks
UNITS_STEP_VERSION = "2"


def _step(
    key: str,
    fn: Callable[[StepContext], Any],
    params: dict[str, Any],
    deps: tuple[str, ...] = (),
    version: str = "1",
) -> Step:
    return Step(key=key, fn=fn, params=params, deps=deps, version=version)


def _table_steps(
    spec: ReproduceSpec,
    bench: st.Workbench,
    models: tuple[str, ...],
    split: str,
    n: int,
    modes: tuple[str, ...],
    noise: tuple[float, ...],
    noise_n: int,
    amplify: float | None,
) -> tuple[list[Step], dict[str, dict[str, str]], dict[str, list[str]]]:
    """Select/attack/cross/noise/amplify steps of one experiment (Tables 1+2 or 3+4)."""
    out: list[Step] = []
    summaries: dict[str, dict[str, str]] = {mode: {} for mode in modes}
    rows: dict[str, list[str]] = {"cross": [], "noise": [], "amplify": [], "paired": []}
    model_keys = tuple(f"model/{m}" for m in models)
    for model in models:
        out.append(
            _step(
                f"select/{split}/{model}",
                partial(st.select_step, bench),
                {"model": model, "split": split, "n": n},
                (f"model/{model}",),
            )
        )
        for mode in modes:
            shard_steps, summary = st.attack_steps(
                bench,
                model=model,
                split=split,
                mode=mode,
                n=n,
                select=f"select/{split}/{model}",
                shard_size=spec.shard_size,
                attack=spec.attack.kwargs(),
                seed=spec.seed,
            )
            out += shard_steps
            summaries[mode][model] = summary
        shards = [s.key for s in out if s.key.startswith(f"attack/{split}/{model}/untargeted/")]
        common = {
            "source": model,
            "split": split,
            "models": list(models),
            "summary": summaries["untargeted"][model],
            "shards": shards,
        }
        deps = (summaries["untargeted"][model], *shards, *model_keys)
        out.append(_step(f"cross/{split}/{model}", partial(st.cross_step, bench), common, deps))
        rows["cross"].append(f"cross/{split}/{model}")
        out.append(_paired_step(spec, bench, common, deps, noise, amplify))
        rows["paired"].append(out[-1].key)
        if amplify is not None:
            key = f"amplify/{split}/{model}"
            out.append(
                _step(
                    key,
                    partial(st.amplify_step, bench),
                    {**common, "stddev": amplify, "clip": spec.noise_clip},
                    deps,
                )
            )
            rows["amplify"].append(key)
    for stddev in noise:
        key = f"noise/{split}/{stddev:g}"
        out.append(
            _step(
                key,
                partial(st.noise_step, bench),
                {
                    "split": split,
                    "stddev": stddev,
                    "n": noise_n,
                    "models": list(models),
                    "noise_seed": st.derived_seed(spec.seed, "noise", split, stddev),
                    "clip": spec.noise_clip,
                },
                model_keys,
            )
        )
        rows["noise"].append(key)
    return out, summaries, rows


def _paired_step(
    spec: ReproduceSpec,
    bench: st.Workbench,
    common: dict[str, Any],
    deps: tuple[str, ...],
    noise: tuple[float, ...],
    amplify: float | None,
) -> Step:
    """``paired/<split>/<m>``: the evidence of the claims on m's attacked images (evidence.py)."""
    model, split = str(common["source"]), str(common["split"])
    f7 = spec.figure7
    in_figure7 = model in f7.models and split == spec.table1.split
    params = {
        **common,
        "noise_stddevs": list(noise),
        "amplify": amplify,
        "clip": spec.noise_clip,
        "seed": st.derived_seed(spec.seed, "paired", split, model),
        "figure7_stddev": f7.noise_stddev if in_figure7 else None,
        "figure7_examples": f7.noise_examples if in_figure7 else 0,
    }
    return _step(f"paired/{split}/{model}", partial(ev.paired_step, bench), params, deps)


def _reference_step(spec: ReproduceSpec, bench: st.Workbench) -> Step:
    """``reference/test``: mean RMS distance between test images of different classes.

    Its params name the data (it has no model dependency that would): a run directory reused
    with another ``--dataset`` recomputes it instead of keeping the other data's distance."""
    identity = bench.data.identity
    params = {
        "data": {"dataset": identity.get("dataset"), "files": identity.get("files")},
        "split": "test",
        "n_pairs": ev.REFERENCE_PAIRS,
        "seed": st.derived_seed(spec.seed, "reference", "test"),
    }
    return _step("reference/test", partial(ev.reference_step, bench), params)


def build_steps(
    spec: ReproduceSpec, bench: st.Workbench, split_sizes: dict[str, int]
) -> list[Step]:
    """Every step of the run described by ``spec`` (``split_sizes``: examples per split)."""
    steps = st.model_steps(bench, spec.models(), spec.dataset, spec.seed)
    t1, t3 = spec.table1, spec.table3
    modes = ("untargeted", "targeted") if t1.targeted else ("untargeted",)
    n1 = min(t1.n_examples, split_sizes[t1.split])
    n3 = min(t3.n_examples, split_sizes[t3.split])
    s12, sum12, rows12 = _table_steps(
        spec,
        bench,
        t1.models,
        t1.split,
        n1,
        modes,
        spec.table2.noise_stddevs,
        min(spec.table2.noise_examples, split_sizes[t1.split]),
        None,
    )
    s34, sum34, rows34 = _table_steps(
        spec,
        bench,
        t3.models,
        t3.split,
        n3,
        ("untargeted",),
        spec.table4.noise_stddevs,
        min(spec.table4.noise_examples, split_sizes[t3.split]),
        spec.table4.amplify_stddev,
    )
    steps += s12 + [s for s in s34 if s.key not in {x.key for x in s12}]
    f7 = spec.figure7
    f7_deps = tuple(f"attack/{t1.split}/{m}/untargeted/shard-0000" for m in f7.models)
    steps.append(
        _step(
            "figure7",
            partial(st.figure7_step, bench),
            {
                "models": list(f7.models),
                "split": t1.split,
                "n_show": f7.n_show,
                "noise_stddev": f7.noise_stddev,
                "noise_examples": min(f7.noise_examples, split_sizes["test"]),
                "noise_seed": st.derived_seed(spec.seed, "figure7"),
                "noise_clip": spec.noise_clip,
            },
            (*f7_deps, *(f"model/{m}" for m in f7.models)),
            version=st.FIGURE7_VERSION,
        )
    )
    analysis = _analysis_steps(spec, bench, split_sizes, steps, sum12)
    steps += analysis
    steps.append(_reference_step(spec, bench))
    steps += _assembly_steps(
        spec, sum12, rows12, sum34, rows34, tuple(s.key for s in analysis if "/" in s.key)
    )
    return steps


def _analysis_steps(
    spec: ReproduceSpec,
    bench: st.Workbench,
    split_sizes: dict[str, int],
    earlier: list[Step],
    sum12: dict[str, dict[str, str]],
) -> list[Step]:
    """units/<m>, spectral/<m> and sandwich/<m> steps (paper §3 and §4.3)."""
    identity, seed = bench.data.identity, spec.seed
    u, sp = spec.units, spec.spectral
    out: list[Step] = []
    trained = {s.key for s in earlier if s.key.startswith("model/")}

    def after_training(model: str) -> tuple[str, ...]:
        # not read, but a parallel backend must not start the analysis while the model trains
        key = f"model/{model}"
        return (key,) if key in trained else ()

    for model in u.models:
        n_images = min(u.n_images, split_sizes[u.split])
        config = {
            "families": list(u.families),
            "k": u.k,
            "n_directions": u.n_directions,
            "seed": st.derived_seed(seed, "units", model),
            "alphas": list(u.alphas),
            "n_null": u.n_null,
            "n_resamples": u.n_resamples,
        }
        params: dict[str, Any] = {
            "model": model,
            "layer": an.hidden_layer(model, u.layer_of(model)),
            "split": u.split,
            "n_images": n_images,
            "config": config,
            "checkpoint": st.checkpoint_key(model, identity, seed),
        }
        out.append(
            _step(
                f"units/{model}",
                partial(an.units_step, bench),
                params,
                after_training(model),
                version=UNITS_STEP_VERSION,
            )
        )
    for model in spec.spectral_models():
        bound_params = {
            "model": model,
            "checkpoint": st.checkpoint_key(model, identity, seed),
            "exact_method": sp.exact_method,
            "power_iterations": sp.power_iterations,
        }
        out.append(
            _step(
                f"spectral/{model}",
                partial(an.spectral_step, bench),
                bound_params,
                after_training(model),
            )
        )
    t1 = spec.table1
    for model in sp.sandwich_models:
        params = {
            "model": model,
            "exact_method": sp.exact_method,
            "power_iterations": sp.power_iterations,
        }
        deps: tuple[str, ...] = (f"spectral/{model}",)
        if model in sum12["untargeted"]:
            prefix = f"attack/{t1.split}/{model}/untargeted/shard-"
            shards = [s.key for s in earlier if s.key.startswith(prefix)]
            summary = sum12["untargeted"][model]
            params |= {"source": an.SOURCE_TABLE1, "summary": summary, "shards": shards}
            deps += (summary, *shards)
        else:
            params |= {
                "source": an.SOURCE_OWN,
                "n": min(sp.sandwich_examples, split_sizes["test"]),
                "attack": spec.attack.kwargs(),
            }
        out.append(_step(f"sandwich/{model}", partial(an.sandwich_step, bench), params, deps))
    return out


def _assembly_steps(
    spec: ReproduceSpec,
    sum12: dict[str, dict[str, str]],
    rows12: dict[str, list[str]],
    sum34: dict[str, dict[str, str]],
    rows34: dict[str, list[str]],
    analysis: tuple[str, ...],
) -> list[Step]:
    t1_models = {m: f"model/{m}" for m in spec.table1.models}
    t3_models = {m: f"model/{m}" for m in spec.table3.models}

    def table1(ctx: StepContext) -> Any:
        return tb.table1(
            {m: ctx.deps[k] for m, k in t1_models.items()},
            {m: ctx.deps[k] for m, k in sum12["untargeted"].items()},
            {m: ctx.deps[k] for m, k in sum12.get("targeted", {}).items()},
        )

    def cross(
        models: tuple[str, ...], rows: dict[str, list[str]], paper: Any
    ) -> Callable[[StepContext], Any]:
        def fn(ctx: StepContext) -> Any:
            return tb.cross_table(
                models,
                {ctx.deps[k]["source"]: ctx.deps[k] for k in rows["cross"]},
                [ctx.deps[k] for k in rows["noise"]],
                [ctx.deps[k] for k in rows["amplify"]],
                paper,
            )

        return fn

    def table3(ctx: StepContext) -> Any:
        return tb.table3(
            {m: ctx.deps[k] for m, k in t3_models.items()},
            {m: ctx.deps[k] for m, k in sum34["untargeted"].items()},
        )

    def claims(ctx: StepContext) -> Any:
        tables = {
            name: ctx.deps[f"tables/{name}"] for name in ("table1", "table2", "table3", "table4")
        }
        paired = {
            "table1": {ctx.deps[k]["source"]: ctx.deps[k] for k in rows12["paired"]},
            "table3": {ctx.deps[k]["source"]: ctx.deps[k] for k in rows34["paired"]},
        }
        every = {f"{e['split']}/{e['source']}": e for t in paired.values() for e in t.values()}
        return {
            "claims": claims_mod.all_claims(
                tables,
                paired,
                ctx.deps["reference/test"],
                spec.figure7.models,
                units=[ctx.deps[k] for k in analysis if k.startswith("units/")],
            ),
            "sanity": claims_mod.sanity_checks(
                tables,
                every,
                [ctx.deps[k] for k in analysis if k.startswith("sandwich/")],
            ),
            "evidence": {"reference": ctx.deps["reference/test"], "paired": every},
        }

    all12 = tuple(k for name, v in rows12.items() if name != "paired" for k in v)
    all34 = tuple(k for name, v in rows34.items() if name != "paired" for k in v)
    return [
        _step(
            "tables/table1",
            table1,
            {"table": 1},
            (*t1_models.values(), *(k for d in sum12.values() for k in d.values())),
        ),
        _step(
            "tables/table2", cross(spec.table1.models, rows12, tb.PAPER_TABLE2), {"table": 2}, all12
        ),
        _step(
            "tables/table3",
            table3,
            {"table": 3},
            (*t3_models.values(), *sum34["untargeted"].values()),
        ),
        _step(
            "tables/table4", cross(spec.table3.models, rows34, tb.PAPER_TABLE4), {"table": 4}, all34
        ),
        _step(
            "claims",
            claims,
            {"claims": claims_mod.RULES_VERSION},
            (
                "tables/table1",
                "tables/table2",
                "tables/table3",
                "tables/table4",
                "reference/test",
                *rows12["paired"],
                *(k for k in rows34["paired"] if k not in rows12["paired"]),
                *(k for k in analysis if k.startswith(("units/", "sandwich/"))),
            ),
        ),
    ]


def versions() -> dict[str, str]:
    """Versions of the pieces that can change the numbers."""
    import numpy

    from intriguing import __version__

    return {
        "intriguing": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def assemble(spec: ReproduceSpec, run: RunDirectory, identity: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` document (schema ``intriguing.reproduce/1``, see docs/reproduce.md) of
    the finished ``run``."""
    results = run.results
    return {
        "schema": SCHEMA,
        "config": spec.to_dict(),
        "dataset": identity,
        "versions": versions(),
        "models": {results[k]["model"]: results[k] for k in results if k.startswith("model/")},
        "tables": {
            name: results[f"tables/{name}"] for name in ("table1", "table2", "table3", "table4")
        },
        "figure7": results["figure7"],
        "units": {
            results[k]["model"]: an.compact_units(results[k], f"steps/{k}.json")
            for k in results
            if k.startswith("units/")
        },
        "spectral": spectral_section(results),
        "claims": results["claims"]["claims"],
        "sanity": results["claims"]["sanity"],
        "evidence": results["claims"]["evidence"],
        "timings": run.timings(),
    }


def spectral_section(results: dict[str, Any]) -> dict[str, Any]:
    """results.json's ``spectral``: per-model bounds and the sandwich summaries (no per-example rows)."""
    bounds = {r["model"]: r for k, r in results.items() if k.startswith("spectral/")}
    sandwiches = {
        r["model"]: {
            "source": r["source"],
            "split": r["split"],
            "ratio_form": an.ratio_form(r["summary"]),
            "median_ratio": r["median_ratio"],
            "summary": r["summary"],
            "record": f"steps/{k}.json",
        }
        for k, r in results.items()
        if k.startswith("sandwich/")
    }
    return {"models": bounds, "sandwich": sandwiches}


def run_reproduce(
    spec: ReproduceSpec, out: str | os.PathLike[str], **options: Unpack[ReportOptions]
) -> dict[str, Any]:
    """Run (or resume) the reproduction ``spec`` in ``out``; write results.json and the report.

    Returns the results.json document. A rerun with the same spec and data reuses every finished
    step; the numbers equal an uninterrupted run's. ``options``: ``data_dir``, ``backend``
    (default: local, in this process; ``RayBackend`` from :mod:`intriguing.experiments.backends`
    for a Ray cluster; the results are the same with either) and ``render`` (default True); see
    :class:`~intriguing.experiments.rundir.ReportOptions`.
    """
    run = RunDirectory(out, schema=SCHEMA)
    bench = st.Workbench(dataset=spec.dataset, data_dir=options.get("data_dir"), seed=spec.seed)
    data = bench.data
    sizes = {"train": len(data.train_labels), "test": len(data.test_labels)}
    run.run(
        build_steps(spec, bench, sizes),
        description=f"reproduce ({spec.size})",
        backend=options.get("backend"),
    )
    document = run.write(assemble(spec, run, data.identity))
    if options.get("render", True):
        from intriguing.report.render import render_report

        render_report(out)
    return document


def verdict_stability(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json's ``stability``: each claim's verdict at every seed and whether they agree.

    ``docs``: the results of the same spec at several seeds (the first is the reported run).
    """
    seeds = [int(d["config"]["seed"]) for d in docs]
    claims: dict[str, Any] = {}
    for claim in docs[0]["claims"]:
        verdicts = [
            next((c["verdict"] for c in d["claims"] if c["id"] == claim["id"]), "missing")
            for d in docs
        ]
        claims[claim["id"]] = {"verdicts": verdicts, "stable": len(set(verdicts)) == 1}
    return {"seeds": seeds, "claims": claims}


def seed_dir(out: str | os.PathLike[str], seed: int) -> Path:
    """Where the run of an extra seed lives: ``OUT/seeds/seed-<s>`` (the first seed is ``OUT``)."""
    return Path(out) / "seeds" / f"seed-{seed}"


def run_seeds(
    spec: ReproduceSpec,
    out: str | os.PathLike[str],
    n_seeds: int,
    **options: Unpack[RunOptions],
) -> dict[str, Any]:
    """The run of ``spec`` in ``out`` and of seeds ``spec.seed + 1 ..`` in :func:`seed_dir`, each
    its own resumable run (models retrained with that seed); ``out``'s results.json gets the
    ``stability`` of every verdict across them and the report a column for it.

    With several seeds, ``timings`` cover the whole invocation: its wall time and every seed's
    steps (``seeds/seed-<s>/<step>``).

    Raises:
        InvalidInputError: ``n_seeds < 1``, or a last seed above ``MAX_SEED``.
    """
    from intriguing.errors import InvalidInputError
    from intriguing.training.api import MAX_SEED

    if n_seeds < 1:
        raise InvalidInputError(f"--seeds must be >= 1, got {n_seeds}")
    if spec.seed + n_seeds - 1 > MAX_SEED:  # a larger seed would repeat a smaller one's models
        raise InvalidInputError(
            f"--seed {spec.seed} with --seeds {n_seeds} reaches seed {spec.seed + n_seeds - 1}, "
            f"above {MAX_SEED}; lower --seed or --seeds"
        )
    start = time.perf_counter()
    docs = [
        run_reproduce(
            dataclasses.replace(spec, seed=spec.seed + k),
            out if k == 0 else seed_dir(out, spec.seed + k),
            render=False,
            **options,
        )
        for k in range(n_seeds)
    ]
    document = docs[0] | {"stability": verdict_stability(docs)} if n_seeds > 1 else docs[0]
    if n_seeds > 1:  # the timings of this whole invocation, every seed's steps (outside the seal)
        steps_s = dict(docs[0]["timings"]["steps_s"])
        for k, doc in enumerate(docs[1:], start=1):
            prefix = seed_dir(out, spec.seed + k).relative_to(Path(out)).as_posix()
            steps_s.update({f"{prefix}/{key}": s for key, s in doc["timings"]["steps_s"].items()})
        wall = round(time.perf_counter() - start, 3)
        document["timings"] = {**docs[0]["timings"], "wall_time_s": wall, "steps_s": steps_s}
    document = sealed(document)
    atomic_write_json(Path(out) / RESULTS_FILE, document)
    from intriguing.report.render import render_report

    render_report(out)
    return document
