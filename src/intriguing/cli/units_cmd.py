"""``intriguing units``: natural basis vs random directions, measured (paper §3, Figures 1-4).

::

    intriguing units MODEL --layer NAME [--directions natural,random,rotation,pca,classmean]
        [--k 8] [--n-directions 100] [--centre/--no-centre] [--standardise/--no-standardise]
        [--alphas 0,0.1,...] [--split test] [--json FILE] [--out DIR] [--dataset mnist|mnist-5k]
        [--data-dir DIR] [--seed 0]
    intriguing units my_pkg.my_module:make_model --layer features.8 --images DIR [--labels FILE]
        [--image-size 224] [--mode RGB|L] [--tensors FILE] [--weights FILE.safetensors]
        [--normalize MEANS,STDS] [--device cpu|cuda|auto] ...

MODEL is a zoo name (trained or loaded from the checkpoint cache), ``package.module:factory`` (the
current directory is importable) or ``file.py:factory``: a callable returning an ``nn.Module`` that
takes images in ``[0, 1]`` (normalisation inside it or stated with ``--normalize``; layer names of a
normalised model start with ``model.``). ``--images`` replaces the MNIST split by a folder of images
(labels from ``--labels`` or class subfolders; the colour mode follows the model), ``--tensors`` by
a tensor file; without labels only the label-free metric is computed. One probe forward checks the
data against the model first. User mistakes print one ``Error: ...`` line and exit with 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from intriguing.cli.options import (
    choice_option,
    flag_option,
    images_option,
    int_option,
    model_command_options,
    open_user_data,
    refuse_unused_seed,
    text_option,
    trains_zoo_model,
    typed,
)
from intriguing.cli.validation import output_dir, output_file
from intriguing.errors import IntriguingError, InvalidInputError


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InvalidInputError(f"--{what} is empty; give a comma-separated list")
    return items


def _parse_alphas(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(a) for a in _parse_list(text, "alphas"))
    except ValueError:
        raise InvalidInputError(f"--alphas {text!r}: expected comma-separated numbers") from None


def _default_layer(name: str) -> str | None:
    """The zoo entry's last hidden layer, if the registry records one."""
    try:
        from intriguing.models import get_entry

        entry = get_entry(name)
    except (ImportError, IntriguingError):
        return None
    value = getattr(entry, "hidden_layer", None)
    return value if isinstance(value, str) and value else None


def _load_model(
    spec: str, params: dict[str, Any], model_seed: int
) -> tuple[Any, dict[str, Any] | None]:
    """MODEL with --weights/--normalize/--device, and the zoo checkpoint's record (else None)."""
    from intriguing.cli.options import model_from_options
    from intriguing.inputs import finish_model, parse_normalize, resolve_device

    resolve_device(params.get("device"))  # refused before any training
    if not trains_zoo_model(spec, params):
        return model_from_options(spec, params, seed=model_seed)[0], None
    net, record = _load_zoo_model(spec, params["dataset"], params["data_dir"], model_seed)
    text = params.get("normalize")
    normalize = parse_normalize(text) if text is not None else None
    return finish_model(net, preprocessing=normalize, device=params.get("device")), record


def _load_zoo_model(
    name: str, dataset: str, data_dir: Path | None, model_seed: int
) -> tuple[Any, dict[str, Any]]:
    """The trained zoo model (eval mode) and a JSON-ready record of its checkpoint."""
    from intriguing.training import train_model

    trained = train_model(name, dataset=dataset, data_dir=data_dir, seed=model_seed)
    metrics = trained.metrics
    if trained.cached:  # measured now, never copied from the sidecar (as `train` does)
        from intriguing.training.api import measured_errors

        metrics.update(measured_errors(trained, dataset=dataset, data_dir=data_dir))
    record = {
        "name": trained.name,
        "file": trained.path.name,
        "key": trained.sidecar.get("key"),
        "weights_sha256": trained.sidecar.get("weights_sha256"),
        "seed": model_seed,
        "dataset": dataset,
        "train_error": metrics.get("train_error"),
        "test_error": metrics.get("test_error"),
    }
    return trained.model, record


def _image_set(
    data: Any, limit: int | None, thumb: int
) -> tuple[Any, Any, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """``(source, shown, labels or None, pixel embedding, meta)`` of the data (see inputs.open_data).

    MNIST and tensor files are in memory (pixels are the images themselves); a folder stays lazy
    and its pixel embedding is ``thumb x thumb`` thumbnails.
    """
    labels = None if data.labels is None else data.labels.numpy().astype(np.int64)
    meta = {k: v for k, v in data.meta.items() if k != "kind"}
    if data.kind == "folder":
        source = data.images
        if limit is not None:  # --limit: the first N files, as for MNIST and tensors
            source.keep_first(limit)
            labels = None if labels is None else labels[: len(source)]
        info = {**meta, "kind": "folder", "n_images": len(source), "files": source.names}
        info["pixel_embedding"] = f"{thumb}x{thumb} thumbnails"
        return source, source, labels, source.thumbnails(thumb), {"image_set": info}
    images = data.images if limit is None else data.images[:limit]
    labels = None if labels is None else labels[: len(images)]
    info = {**meta, "kind": data.kind, "n_images": len(images)}
    array = images.numpy()
    return images, array, labels, array, {"image_set": info}


def _refuse_ignored_options(model: str, params: dict[str, Any], out_dir: Path | None) -> None:
    """One-line errors for options the run would silently ignore (only when typed by the user)."""
    own_images = next(
        (flag for flag, key in (("--images", "images_dir"), ("--tensors", "tensors_file"))
         if params.get(key) is not None),
        None,
    )  # fmt: skip
    if own_images and typed("split"):
        raise InvalidInputError(
            f"--split selects an MNIST split and does nothing with {own_images}; drop --split"
        )
    if out_dir is None and typed("rows"):
        raise InvalidInputError("--rows sets the figures' rows and needs --out DIR; drop --rows")
    refuse_unused_seed(model, params, name="model_seed", flag="--model-seed")


def _layer_width(net: Any, layer: str, source: Any, reduce: str) -> int:
    """``D`` of ``layer``: one image through the model (before the long activation pass)."""
    from intriguing.analysis.activations import iter_activations

    batches = iter_activations(net, layer, source, batch_size=1, reduce=reduce)  # type: ignore[arg-type]
    try:
        return int(next(batches).shape[1])
    finally:
        batches.close()


def _print_summary(results: dict[str, Any]) -> None:
    metrics = results["metrics"]
    click.echo(
        f"{results['model']} / {results['layer']}: D = {results['dim']}, "
        f"{results['n_images']} images, k = {results['config']['k']}"
    )
    null = results["null"]
    click.echo(
        "null (random k-subsets): "
        + ", ".join(
            f"{m} mean {null[m]['mean']:.3f} p95 {null[m]['threshold_p95']:.3f}" for m in metrics
        )
    )
    header = f"{'family':<10} {'n':>4} {'dead':>4} {'tied':>4}" + "".join(
        f" {m + ' mean':>18} {'>null95':>8}" for m in metrics
    )
    click.echo(header)
    for name, fam in results["families"].items():
        row = f"{name:<10} {fam['n_directions']:>4} {fam['n_dead']:>4} {fam['n_tied']:>4}"
        for m in metrics:
            s = fam["summary"][m]
            frac = s["vs_null"].get("frac_beyond_null_p95", float("nan"))
            row += f" {s.get('mean', float('nan')):>18.3f} {frac:>8.2f}"
        click.echo(row)
    for c in results["comparisons"]:
        click.echo(
            f"{c['a']} vs {c['b']} [{c['metric']}]: mean diff {c['mean_diff']:+.3f}, "
            f"U = {c['mannwhitney_u']:.0f}, p = {c['p_mannwhitney']:.3g} (perm. p = "
            f"{c['p_permutation']:.3g}), rank-biserial {c['rank_biserial']:+.3f}"
        )
    curve = results.get("rotation_curve")
    if curve:
        key = "purity" if "purity" in curve else "pixel_cosine"
        pairs = ", ".join(
            f"{a:g}: {'n/a' if v is None else format(v, '.3f')}"
            for a, v in zip(curve["alphas"], curve[key]["mean"], strict=True)
        )
        click.echo(f"rotation curve ({key} mean by alpha): {pairs}")
    for kind, path in results.get("figures", {}).items():
        click.echo(f"figure {kind}: {path}")


@click.command("units")
@click.argument("model")
@text_option(
    "--layer",
    default=None,
    help="Layer name (dotted sub-module name; zoo default: the last hidden layer). "
    "A wrong name lists the valid ones.",
)
@text_option(
    "--directions",
    default="natural,random,rotation,pca,classmean",
    help="Comma-separated direction families.",
    dest="directions",
)
@int_option(
    "--k",
    2,
    1000,
    default=8,
    help="Top images per direction (2 or more: pairwise metrics).",
    dest="k",
)
@int_option("--n-directions", 2, 100_000, default=100, help="Directions per family.")
@click.option(
    "--centre/--no-centre",
    default=False,
    show_default=True,
    help="Subtract the mean activation (changes the PCA axes only; rankings along a fixed v are unchanged).",
)
@click.option(
    "--standardise/--no-standardise",
    default=False,
    show_default=True,
    help="Divide each unit by its standard deviation (changes random/rotated directions).",
)
@text_option(
    "--alphas",
    default="0,0.05,0.1,0.2,0.3,0.5,0.75,1",
    help="Rotation powers for the rotation curve ('none' to skip).",
)
@int_option("--n-null", 100, 10_000_000, default=10000, help="Random k-subsets in the null.")
@int_option(
    "--n-resamples",
    99,
    10_000_000,
    default=9999,
    help="Permutations in the permutation tests between families.",
)
@text_option(
    "--split",
    default="test",
    help="MNIST split used as the image set (not with --images/--tensors).",
)
@images_option("--limit", default=None, help="Use only the first N images of the split.")
@choice_option(
    "--reduce",
    ["flatten", "mean", "max"],
    default="flatten",
    help="Outputs (B, C, ...): keep every coordinate, or pool each channel (axis 1) over the "
    "axes after it. A transformer's (B, tokens, features) output would be pooled over its "
    "features: keep flatten there.",
)
@int_option("--batch-size", 1, 100_000, default=500, help="Images per forward pass.")
@click.option(
    "--save-activations",
    type=output_file(".npy"),
    default=None,
    help="Also store phi as a .npy file (float32, or float16 with --float16).",
)
@flag_option(
    "--float16",
    "Hold (and store) the activations as float16: half the memory, 3 significant digits.",
)
@click.option(
    "--out",
    "out_dir",
    type=output_dir(),
    is_eager=True,
    default=None,
    help="Write the figures (PNG) into this directory.",
)
@int_option(
    "--rows", 1, 100, default=4, help="Directions per family shown in the figures (with --out)."
)
@int_option(
    "--model-seed",
    0,
    2**32 - 1,
    default=0,
    help="Training seed of a zoo model (not with a factory, a checkpoint or --weights).",
)
@model_command_options(images_only=True)
def units(
    model: str,
    layer: str | None,
    directions: str,
    k: int,
    n_directions: int,
    centre: bool,
    standardise: bool,
    alphas: str,
    n_null: int,
    n_resamples: int,
    split: str,
    limit: int | None,
    reduce: str,
    batch_size: int,
    save_activations: Path | None,
    float16: bool,
    out_dir: Path | None,
    rows: int,
    model_seed: int,
    seed: int,
    json_path: Path | None,
    **params: Any,
) -> None:
    """Top-k images along units vs random directions, and how label-coherent they are (§3).

    MODEL is a zoo name (e.g. Conv, N100-100-10), package.module:factory or file.py:factory for
    your own model (with --images DIR for a folder of images). See docs/units.md for the JSON
    schema.
    """
    from intriguing._io import atomic_write_json
    from intriguing.analysis.activations import compute_activations
    from intriguing.analysis.directions import check_family_names
    from intriguing.analysis.units import UnitsConfig, analyse_units
    from intriguing.report.units_figures import render_units_figures

    _refuse_ignored_options(model, params, out_dir)
    families = check_family_names(_parse_list(directions, "directions"))
    config = UnitsConfig(
        families=tuple(families),
        k=k,
        n_directions=n_directions,
        centre=centre,
        standardise=standardise,
        seed=seed,
        alphas=_parse_alphas(alphas),
        n_null=n_null,
        n_resamples=n_resamples,
    )
    if limit is not None and limit < 2:
        raise InvalidInputError(f"--limit must be at least 2, got {limit}")
    data = open_user_data(params, split=split)
    net, checkpoint = _load_model(model, params, model_seed)
    if layer is None and (default := _default_layer(model)):
        layer = f"model.{default}" if params.get("normalize") else default
    if not layer:
        raise InvalidInputError(
            "--layer is required for this model; a wrong name lists the valid ones"
        )
    data.fit_to(net)
    source, shown, labels, pixels, meta = _image_set(data, limit, 32)
    config.check_image_set(len(source), labels is not None)
    config.check_dimension(_layer_width(net, layer, source, reduce), len(source))
    phi = compute_activations(
        net,
        layer,
        source,
        batch_size=batch_size,
        reduce=reduce,  # type: ignore[arg-type]
        out_path=save_activations,
        dtype="float16" if float16 else "float32",
    )
    result = analyse_units(phi, pixels, labels, config)
    meta = {
        "model": model,
        "layer": layer,
        "reduce": reduce,
        **meta,
        "random_directions": "uniform on the unit sphere (normalised standard Gaussian)",
    }
    if checkpoint is not None:
        meta["checkpoint"] = checkpoint
    payload = result.to_json(meta)
    if out_dir is not None:
        stem = f"units-{model.replace(':', '_').replace('/', '_')}-{layer}"
        payload["figures"] = render_units_figures(
            payload, shown, out_dir, labels=labels, stem=stem, n_rows=rows
        )
    if save_activations is not None:
        payload["activations_file"] = str(save_activations)
    if json_path is not None:
        atomic_write_json(json_path, payload)
    _print_summary(payload)
