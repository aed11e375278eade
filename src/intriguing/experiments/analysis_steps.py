"""Steps of the reproduction graph for the paper's §3 (units) and §4.3 (spectral) analyses.

::

    units/<m>       single units vs random directions on the last hidden layer of m (§3, Figs 1-2);
                    the ``intriguing.units/1`` JSON, figures in artifacts/units/<m>/
    spectral/<m>    upper / lower frame bound of every layer of m and their product (Table 5)
    sandwich/<m>    certified lower bound <= minimum distortion <= attack distortion, per example,
                    on the examples of m's Table 1 untargeted attack (reused from its shards) or,
                    when m has none, on the first n test images with a fresh untargeted attack

Like :mod:`intriguing.experiments.steps`, each function reads only its params and its dependencies'
results and returns JSON-ready values (non-finite floats become None). Images are float32
``(N, 1, 28, 28)`` in [0, 1]; distortion is the paper's RMS per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from intriguing._io import file_sha256, json_safe
from intriguing.errors import IntriguingError

if TYPE_CHECKING:
    from intriguing.experiments.graph import StepContext
    from intriguing.experiments.steps import Workbench

MNIST_INPUT = (1, 28, 28)
SOURCE_TABLE1 = "table1"
SOURCE_OWN = "own attack"


def hidden_layer(model: str, layer: str | None) -> str:
    """``layer``, or the zoo entry's last hidden layer when None.

    Raises:
        IntriguingError: the model has no hidden layer and none was named.
    """
    if layer is not None:
        return layer
    from intriguing.models import get_entry

    found = get_entry(model).hidden_layer
    if found is None:
        raise IntriguingError(
            f"{model} has no hidden layer; name a layer in UnitsSpec.layers (e.g. 'flatten')"
        )
    return found


# ----------------------------------------------------------------------------------- units (§3)
def units_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """§3: top-k images of single units and of random directions, coherence and tests.

    Params: ``model``, ``layer``, ``split``, ``n_images``, ``config`` (UnitsConfig fields, seeded),
    ``checkpoint``. Writes the figures (``<model>-topk.png``, ``-distributions.png``, and
    ``-rotation.png`` / ``-topk-all.png`` when there is a curve / more families) to the artefact
    directory; the result is the ``intriguing.units/1`` JSON with ``figures`` relative to the run.
    """
    from intriguing.analysis.activations import compute_activations
    from intriguing.analysis.units import UnitsConfig, analyse_units
    from intriguing.report.units_figures import render_units_figures

    p = ctx.params
    model_name, layer, split = str(p["model"]), str(p["layer"]), str(p["split"])
    images, labels = bench.data.split(split)
    images, labels = images[: int(p["n_images"])], labels[: int(p["n_images"])]
    cfg = dict(p["config"])
    config = UnitsConfig(
        families=tuple(cfg["families"]),
        k=int(cfg["k"]),
        n_directions=int(cfg["n_directions"]),
        seed=int(cfg["seed"]),
        alphas=tuple(float(a) for a in cfg["alphas"]),
        n_null=int(cfg["n_null"]),
        n_resamples=int(cfg["n_resamples"]),
    )
    phi = compute_activations(bench.model(model_name), layer, images, description=model_name)
    pixels, y = images.numpy(), labels.numpy()
    result = analyse_units(phi, pixels, y, config)
    payload = result.to_json(
        {
            "model": model_name,
            "layer": layer,
            "reduce": "flatten",
            "image_set": {
                "kind": "mnist",
                "dataset": bench.dataset,
                "split": split,
                "n_images": int(labels.shape[0]),
            },
            "random_directions": "uniform on the unit sphere (normalised standard Gaussian)",
            "checkpoint": {"name": model_name, "key": p["checkpoint"], "seed": bench.seed},
        }
    )
    out = ctx.artifact_dir()
    paths = render_units_figures(payload, pixels, out, labels=y, stem=_file_stem(model_name))
    payload["figures"] = {
        kind: Path(path).resolve().relative_to(ctx.store.root.resolve()).as_posix()
        for kind, path in sorted(paths.items())
    }
    # sealed into results.json with the rest: `report` embeds a figure only if it is this one
    payload["figures_sha256"] = {kind: file_sha256(path) for kind, path in sorted(paths.items())}
    return json_safe(payload)


def _file_stem(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model)


# ----------------------------------------------------------------------------------- spectral (§4.3)
def bound_options(params: Any) -> Any:
    from intriguing.analysis.lipschitz import BoundConfig

    return BoundConfig(
        exact_method=str(params["exact_method"]), power_iterations=int(params["power_iterations"])
    )


def spectral_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Table 5 analogue for one model: each layer's certified upper / lower frame bound, the product.

    Params: ``model``, ``checkpoint``, ``exact_method``, ``power_iterations``. The result holds
    ``bound`` (:meth:`NetworkBound.to_dict`), ``lipschitz_upper`` (certified product) and
    ``lipschitz_exact_norms`` (product with power-iteration norms, not certified).
    """
    from intriguing.analysis.lipschitz import network_bounds

    p = ctx.params
    model = bench.model(str(p["model"]))
    bound = network_bounds(model, MNIST_INPUT, options=bound_options(p))
    return json_safe(
        {
            "model": p["model"],
            "checkpoint_key": p["checkpoint"],
            "input_shape": list(MNIST_INPUT),
            "lipschitz_upper": bound.lipschitz,
            "lipschitz_exact_norms": bound.lipschitz_exact_norms,
            "bound": bound.to_dict(),
        }
    )


@dataclass(frozen=True)
class StoredAttack:
    """Per-example ``distortion`` ``(N,)`` float32 (RMS) and ``success`` ``(N,)`` bool of an attack."""

    distortion: torch.Tensor
    success: torch.Tensor


def _attack_of_table1(
    bench: Workbench, ctx: StepContext, summary_key: str, shard_keys: list[str]
) -> tuple[torch.Tensor, torch.Tensor, StoredAttack, list[int]]:
    """The originals, labels and stored attack result of a Table 1 untargeted attack (all shards)."""
    from intriguing.attacks import AttackResult

    summary = ctx.deps[summary_key]
    shards = [ctx.deps[k] for k in shard_keys if ctx.deps[k]["artifact"]]
    if not shards:
        raise IntriguingError(f"{summary_key}: no stored attack to compare with; rerun reproduce")
    parts = [AttackResult.load(ctx.store.root / s["artifact"]) for s in shards]
    indices = [i for s in shards for i in s["indices"]]
    images, labels = bench.data.split(str(summary["split"]))
    index = torch.tensor(indices, dtype=torch.int64)

    stored = StoredAttack(
        distortion=torch.cat([r.distortion for r in parts]),
        success=torch.cat([r.success.bool() for r in parts]),
    )
    return images[index], labels[index], stored, indices


def sandwich_step(bench: Workbench, ctx: StepContext) -> dict[str, Any]:
    """Certified radii (global and pairwise) beside the attack's distortions (§4.3 and §4.1).

    Params: ``model``, ``exact_method`` / ``power_iterations`` (as its spectral step),
    ``source`` (``"table1"``: reuse ``summary`` / ``shards`` of the Table 1 untargeted attack, on
    its ``split``; ``"own attack"``: attack the first ``n`` test images with ``attack`` settings).
    The result holds the summary (counts, violations, ratio quantiles) and one row per example.
    """
    from intriguing.analysis.lipschitz import network_bounds
    from intriguing.analysis.sandwich import sandwich

    p = ctx.params
    model = bench.model(str(p["model"]))
    bound = network_bounds(model, MNIST_INPUT, options=bound_options(p))
    attack_result: Any = None
    indices: list[int]
    if p["source"] == SOURCE_TABLE1:
        images, labels, attack_result, indices = _attack_of_table1(
            bench, ctx, str(p["summary"]), list(p["shards"])
        )
        split = str(ctx.deps[str(p["summary"])]["split"])
    else:
        from intriguing.attacks import LBFGS

        split = "test"
        all_images, all_labels = bench.data.split(split)
        images, labels = all_images[: int(p["n"])], all_labels[: int(p["n"])]
        indices = list(range(int(labels.shape[0])))
        attack_result = LBFGS(mode="untargeted", **dict(p["attack"]))(model, images, labels)
    result = sandwich(model, images, labels, bound, attack_result=attack_result)
    rows = result.per_example()
    for index, row in zip(indices, rows, strict=True):
        row["index"] = index
    return json_safe(
        {
            "model": p["model"],
            "source": p["source"],
            "split": split,
            "summary": result.summary(),
            "median_ratio": median_ratio(result.summary()),
            "examples": rows,
        }
    )


def median_ratio(summary: dict[str, Any]) -> float | None:
    """Median of attack distortion / certified radius: the pairwise (tighter) form when there is one."""
    for form in ("pairwise", "global"):
        quantiles = summary.get(f"ratio_{form}_quantiles")
        if quantiles and quantiles.get("q50") is not None:
            return float(quantiles["q50"])
    return None


def ratio_form(summary: dict[str, Any]) -> str:
    """Which certified radius :func:`median_ratio` used."""
    return "pairwise" if summary.get("ratio_pairwise_quantiles") else "global"


def compact_units(payload: dict[str, Any], record: str) -> dict[str, Any]:
    """A units JSON without its per-direction rows (kept in the step record ``record``)."""
    families = {
        name: {k: v for k, v in fam.items() if k != "directions"}
        for name, fam in payload["families"].items()
    }
    return {**payload, "families": families, "record": record}
