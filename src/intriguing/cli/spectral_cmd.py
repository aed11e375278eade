"""``intriguing spectral MODEL``: per-layer frame bounds (Table 5) and the certified/attack sandwich.

MODEL is a zoo name (``intriguing zoo`` lists them; the trained checkpoint is loaded or trained by
:func:`intriguing.training.load_model`), ``package.module:factory`` / ``file.py:factory`` (with
``--input-shape C,H,W``; the current directory is importable), a zoo checkpoint, or ``alexnet``
(torchvision's pretrained AlexNet, when torchvision and its weights are present). ``--weights`` and
``--normalize`` apply as in every command (the bound then includes the normalisation).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from intriguing._io import json_safe
from intriguing.cli.options import (
    choice_option,
    data_options,
    int_option,
    json_option,
    model_options,
    refuse_unused_seed,
    seed_option,
    text_option,
    typed,
)
from intriguing.cli.plain import plain_console
from intriguing.cli.validation import float_range
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.report.render import format_bound

ALEXNET = "alexnet"
ALEXNET_INPUT = (3, 224, 224)
MNIST_INPUT = (1, 28, 28)
MAX_SIDE = 4096  # as --image-size: larger inputs cannot be probed, let alone bounded
MAX_INPUT_VALUES = 3 * MAX_SIDE * MAX_SIDE


def load_named_model(
    name: str, dataset: str, data_dir: Path | None, seed: int
) -> tuple[Any, Any, tuple[int, ...] | None]:
    """``(model, layers or None, input shape or None)`` for any MODEL form or ``alexnet``.

    A user's model (factory or file) has no known input shape: None (``--input-shape`` gives it).
    """
    if name == ALEXNET:
        return (*_load_alexnet(), ALEXNET_INPUT)
    if ":" in name or Path(name).suffix.lower() in (".safetensors", ".json"):
        from intriguing.inputs import resolve_model

        loaded = resolve_model(name, dataset=dataset, data_dir=data_dir, seed=seed)
        return loaded.model, None, MNIST_INPUT if loaded.kind == "checkpoint" else None
    try:
        from intriguing.training import load_model
    except ImportError as exc:
        raise IntriguingError(f"the model zoo is not available in this install ({exc})") from None
    return load_model(name, dataset=dataset, data_dir=data_dir, seed=seed), None, MNIST_INPUT


def _load_alexnet() -> tuple[Any, list[Any]]:
    """torchvision's AlexNet with ImageNet weights and its layers in call order."""
    try:
        import torchvision
        from torch import nn
    except ImportError:
        raise IntriguingError(
            "AlexNet skipped: torchvision is not installed (pip install 'intriguing[vision]')"
        ) from None
    try:
        model = torchvision.models.alexnet(weights="DEFAULT").eval()
    except Exception as exc:  # no cached weights and no network, or a corrupt download
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IntriguingError(
            f"AlexNet skipped: its pretrained weights are not available ({first})"
        ) from None
    named = [(f"features.{i}", m) for i, m in enumerate(model.features)]
    named += [("avgpool", model.avgpool), ("flatten", nn.Flatten())]  # AlexNet.forward's flatten
    named += [(f"classifier.{i}", m) for i, m in enumerate(model.classifier)]
    return model, named


def bound_table(bound: Any, title: str, *, exact_computed: bool = True) -> Table:
    """A rich table like the paper's Table 5 (plus the non-linear layers' constants)."""
    table = Table(title=title)
    for column in (
        "layer",
        "type",
        "size",
        "stride",
        "output",
        "upper",
        "exact",
        "lower",
        "method",
    ):
        table.add_column(
            column, justify="right" if column in ("upper", "exact", "lower") else "left"
        )
    for layer in bound.layers:
        exact_text = format_bound(layer.exact)
        power = layer.details.get("exact_norm")
        if power is not None and not power["converged"]:
            exact_text += "*"
        table.add_row(
            layer.name,
            layer.kind,
            layer.size,
            layer.stride,
            "x".join(map(str, layer.output_shape)),
            format_bound(layer.upper),
            exact_text,
            format_bound(layer.lower),
            layer.method,
        )
    structure = "product" if bound.structure == "chain" else "graph bound (sums, concatenations)"
    measured = format_bound(bound.measured.value) if bound.measured is not None else "-"
    exact = (
        format_bound(bound.lipschitz_exact_norms)
        if exact_computed
        else "not computed (--exact-method none)"
    )
    table.caption = (
        f"{structure} (certified Lipschitz upper bound) = {format_bound(bound.lipschitz)}; "
        f"measured lower bound (largest Jacobian norm at probe inputs) = {measured}; "
        f"with exact norms = {exact}. upper: certified; exact: zero-padded "
        "operator by power iteration (from below; * = not converged); lower: the layer's smallest "
        "singular value (- where not computed: non-linear layers, padded or strided convolutions)"
    )
    return table


def sandwich_table(summary: dict[str, Any]) -> Table:
    """Quantiles of attack distortion / certified radius."""
    table = Table(title="attack distortion / certified lower bound (per example)")
    table.add_column("form")
    quantiles = summary["ratio_global_quantiles"] or {}
    for key in quantiles:
        table.add_column(key, justify="right")
    for form in ("global", "pairwise"):
        values = summary[f"ratio_{form}_quantiles"]
        if values:
            table.add_row(form, *(format_bound(v) for v in values.values()))
    table.caption = (
        f"{summary['used']} of {summary['examples']} examples (correct and attacked); violations "
        f"(certified > attack): {summary['violations']}; mean attack distortion "
        f"{format_bound(summary['mean_attack_distortion'])}, certified global {format_bound(summary['mean_certified_global'])}, "
        f"pairwise {format_bound(summary['mean_certified_pairwise'])}"
    )
    return table


def sandwich_report(summary: dict[str, Any]) -> Table | str:
    """:func:`sandwich_table`, or one line when no example is both classified correctly and fooled
    by the attack (nothing to compare: the table would have no column)."""
    if summary["used"] and summary["ratio_global_quantiles"]:
        return sandwich_table(summary)
    return (
        "sandwich: no example to compare (one classified correctly and fooled by the attack): "
        f"{summary['correct']} of the {summary['examples']} test images are classified "
        f"correctly, {summary['attack_success']} attacks succeeded"
    )


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``--input-shape C,H,W`` (or ``CxHxW``; one or two sizes for a model on vectors or
    sequences, e.g. ``784``): positive sizes, batch excluded, each at most :data:`MAX_SIDE` (a flat
    vector at most :data:`MAX_INPUT_VALUES`) and :data:`MAX_INPUT_VALUES` values in all (a probe
    batch is allocated)."""
    if text is None:
        return None
    try:
        shape = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:  # also an empty size: '3,x', '3,,28'
        shape = ()
    if not 1 <= len(shape) <= 3 or any(d < 1 for d in shape):
        raise InvalidInputError(
            f"--input-shape {text!r}: expected 1 to 3 positive sizes without the batch, e.g. "
            "3,32,32 (images) or 784 (vectors)"
        )
    side = MAX_INPUT_VALUES if len(shape) == 1 else MAX_SIDE
    if max(shape) > side or math.prod(shape) > MAX_INPUT_VALUES:
        raise InvalidInputError(
            f"--input-shape {text!r}: too large to bound (at most {MAX_SIDE} per size and "
            f"3x{MAX_SIDE}x{MAX_SIDE} values); give the model's real input shape"
        )
    return shape


def _prepared_model(
    model_name: str, params: dict[str, Any], seed: int, shape_text: str | None
) -> tuple[Any, Any, tuple[int, ...]]:
    """MODEL with --weights/--normalize, its layers (alexnet) and a probed input shape."""
    import torch

    from intriguing.inputs import check_model_input, finish_model, parse_normalize

    normalize = parse_normalize(params["normalize"]) if params["normalize"] is not None else None
    given = parse_input_shape(shape_text)
    if params["weights"] is not None and model_name != ALEXNET:
        from intriguing.inputs import resolve_model

        loaded = resolve_model(model_name, trained=False)
        model, layers = loaded.model, None
        known: tuple[int, ...] | None = None if loaded.kind == "factory" else MNIST_INPUT
    else:
        model, layers, known = load_named_model(
            model_name, params["dataset"], params["data_dir"], seed
        )
    input_shape = given or known
    if input_shape is None:
        raise InvalidInputError(
            f"{model_name}: give the input shape of this model with --input-shape C,H,W "
            "(e.g. 3,32,32)"
        )
    if layers is not None and (params["weights"] or normalize):
        raise InvalidInputError("--weights and --normalize do not apply to alexnet")
    if normalize is not None and len(input_shape) != 3:
        raise InvalidInputError(
            f"--normalize is per image channel; this model takes {input_shape} (not C,H,W): "
            "put the normalisation inside the model instead"
        )
    model = finish_model(model, weights=params["weights"], preprocessing=normalize)
    try:
        check_model_input(model, torch.zeros(2, *input_shape))
    except InvalidInputError as exc:
        if given is None:
            raise
        raise InvalidInputError(f"--input-shape {shape_text}: {exc}") from None
    return model, layers, input_shape


def _refuse_unused_iteration_settings(exact_method: str) -> None:
    """--power-iterations and --tol tune the exact-norm iteration: refused with --exact-method none
    (nothing iterates; they would be ignored silently)."""
    from intriguing.cli.options import typed

    given = [
        flag
        for name, flag in (("power_iterations", "--power-iterations"), ("tol", "--tol"))
        if typed(name)
    ]
    if exact_method == "none" and given:
        raise InvalidInputError(
            f"{', '.join(given)}: the exact-norm iteration they tune is skipped by --exact-method none; "
            "drop them or choose power or lanczos"
        )


@click.command("spectral")
@click.argument("model_name", metavar="MODEL")
@text_option(
    "--input-shape",
    default=None,
    help="Input shape of a user's model (without the batch), e.g. 3,32,32, or 784 for a model on "
    "vectors; zoo: 1,28,28.",
    dest="input_shape_text",
    metavar="C,H,W",
)
@model_options
@data_options
@seed_option
@json_option
@int_option(
    "--sandwich",
    0,
    default=0,
    help="Also attack the first N test images and compare with the certified lower bounds.",
    dest="n_sandwich",
)
@int_option(
    "--power-iterations",
    default=2000,
    help="Most power iterations (Lanczos: ARPACK iterations) on each zero-padded convolution.",
)
@choice_option(
    "--exact-method",
    ["power", "lanczos", "none"],
    default="power",
    help="How the exact norm of zero-padded convolutions is found (from below): power iteration, "
    "ARPACK Lanczos, or not at all (the certified bounds do not need it).",
)
@click.option(
    "--tol",
    type=float_range(min=0, max=1, min_open=True, max_open=True),
    default=1e-8,
    show_default=True,
    help="Power iteration stops when the estimate changes by less than this (relative); Lanczos: "
    "ARPACK's relative accuracy.",
)
def spectral(
    model_name: str,
    dataset: str,
    data_dir: Path | None,
    seed: int,
    json_path: Path | None,
    n_sandwich: int,
    power_iterations: int,
    exact_method: str,
    tol: float,
    input_shape_text: str | None,
    weights: Path | None,
    normalize: str | None,
    device: str,
) -> None:
    """Frame bounds of every layer of MODEL (paper Table 5) and their product.

    MODEL is a zoo name (see 'intriguing zoo'; trained first if not cached), package.module:factory
    or file.py:factory with --input-shape C,H,W (run from the folder holding the module), a zoo
    checkpoint, or 'alexnet' (torchvision's pretrained AlexNet, when installed). With --sandwich N,
    certified lower bounds on the minimum distortion of the first N test images are shown beside the
    L-BFGS attack's. The bounds are computed in float64 on the CPU; --device moves the sandwich's
    attack.
    """
    from intriguing._io import atomic_write_json
    from intriguing.analysis.lipschitz import BoundConfig, network_bounds
    from intriguing.inputs import resolve_device

    run_device = resolve_device(device)  # refused before any work
    _refuse_unused_seed(model_name, weights)
    _refuse_unused_iteration_settings(exact_method)
    if n_sandwich and model_name == ALEXNET:
        raise IntriguingError("--sandwich works on the MNIST zoo only, not on alexnet")
    params = {"weights": weights, "normalize": normalize, "dataset": dataset, "data_dir": data_dir}
    model, layers, input_shape = _prepared_model(model_name, params, seed, input_shape_text)
    if n_sandwich and tuple(input_shape) != MNIST_INPUT:
        raise InvalidInputError(
            f"--sandwich attacks MNIST test images (1,28,28); this model takes {input_shape}"
        )
    sandwich_data = (
        _sandwich_data(model, dataset, data_dir, n_sandwich) if n_sandwich else None
    )  # refused before the bounds are computed
    options = BoundConfig(power_iterations=power_iterations, tol=tol, exact_method=exact_method)
    console = plain_console()  # model specs, paths and layer names print as typed
    if not console.is_terminal:  # files and pipes get the whole table
        console = plain_console(width=max(console.width, 130))
    err = plain_console(file=sys.stderr)
    with err.status("computing layer bounds") as status:
        bound = network_bounds(
            model,
            input_shape,
            layers=layers,
            options=options,
            progress=lambda name: status.update(f"bounding layer {name}"),
        )
    title = f"{model_name}: frame bounds per layer (input {input_shape})"
    console.print(bound_table(bound, title, exact_computed=exact_method != "none"))
    result: dict[str, Any] = {
        "model": model_name,
        "dataset": dataset,
        "seed": seed,
        "bound": bound.to_dict(),
    }
    if sandwich_data is not None:
        summary, rows = _run_sandwich(model, bound, *sandwich_data, run_device)
        console.print(sandwich_report(summary))
        result["sandwich"] = {"summary": summary, "examples": rows}
    if json_path is not None:
        atomic_write_json(json_path, json_safe(result))
        err.print(f"wrote {json_path}")


def _refuse_unused_seed(model_name: str, weights: Path | None) -> None:
    """--seed trains a zoo model here and does nothing else: refused (when typed) otherwise."""
    if model_name != ALEXNET:
        refuse_unused_seed(model_name, {"weights": weights})
    elif typed("seed"):
        raise InvalidInputError(
            "--seed is the training seed of a zoo model and does nothing for alexnet (pretrained "
            "weights); drop --seed"
        )


def _sandwich_data(model: Any, dataset: str, data_dir: Path | None, count: int) -> tuple[Any, Any]:
    """The first ``count`` MNIST test images and labels, checked against the model as the attack
    will (classes vs labels, dtype, logits not probabilities, input gradients) before any work."""
    import torch

    from intriguing.attacks.checks import attack_dtype, check_input_gradient, check_logits
    from intriguing.data import load_mnist
    from intriguing.inputs import check_model_input, model_input, predict

    images, labels = load_mnist(data_dir, dataset=dataset).split("test")
    if count > len(images):
        raise InvalidInputError(
            f"--sandwich {count}: the {dataset} test split has only {len(images)} images"
        )
    images, labels = images[:count], labels[:count]
    check_model_input(model, images, labels)
    probe = model_input(model, images[:2]).to(dtype=attack_dtype(model, torch.float32))
    with torch.no_grad():
        check_logits(model(probe), len(probe))
    check_input_gradient(model, probe)
    if not bool((predict(model, images) == labels).any()):
        raise InvalidInputError(
            f"--sandwich {count}: none of the first {count} test images is classified correctly, "
            "so there is no example to compare with the certified bounds; give a trained model "
            "(--weights) or a larger --sandwich"
        )
    return images, labels


def _run_sandwich(
    model: Any, bound: Any, images: Any, labels: Any, device: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from intriguing.analysis.sandwich import sandwich

    images, labels = images.to(device), labels.to(device)
    result = sandwich(model.to(device), images, labels, bound)
    return result.summary(), result.per_example()
