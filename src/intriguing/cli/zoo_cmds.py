"""``intriguing zoo`` / ``train`` / ``eval``: list, train and evaluate the paper's MNIST models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from intriguing.cli.options import (
    data_options,
    flag_option,
    is_checkpoint_spec,
    json_option,
    model_options,
    refuse_unused_seed,
    seed_option,
    user_data_options,
)
from intriguing.cli.validation import InputPath


def _percent(value: Any) -> str:
    from intriguing.progress import percent

    return percent(float(value)) if isinstance(value, int | float) else "-"


@click.command()
@flag_option("--json", "Print the zoo as JSON instead of a table.", dest="as_json")
def zoo(as_json: bool) -> None:
    """List the model zoo: names, descriptions and the paper's numbers."""
    from rich.table import Table

    from intriguing.cli.plain import plain_console
    from intriguing.models import list_entries

    entries = list_entries()
    if as_json:
        rows = [_entry_dict(e) for e in entries]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="intriguing model zoo (Szegedy et al. 2014, §4.2)", show_lines=False)
    for column in (
        "name",
        "description",
        "split",
        "paper train err",
        "paper test err",
        "paper distortion",
    ):
        table.add_column(column, overflow="fold")
    for entry in entries:
        paper = entry.paper
        train_err = paper.get(
            "train_error", paper.get("err_p1" if entry.train_split == "p1" else "err_p2")
        )
        table.add_row(
            entry.name + (f" ({', '.join(entry.aliases)})" if entry.aliases else ""),
            entry.description,
            entry.train_split,
            _percent(train_err),
            _percent(paper.get("test_error")),
            str(paper.get("distortion", "-")),
        )
    console = plain_console()
    plain_console(width=max(120, console.width)).print(table)


def _entry_dict(entry: Any) -> dict[str, Any]:
    return {
        "name": entry.name,
        "aliases": list(entry.aliases),
        "description": entry.description,
        "train_split": entry.train_split,
        "hidden_layer": entry.hidden_layer,
        "paper": dict(entry.paper),
        "train_config": entry.train_config.to_dict(),
    }


def _echo_log(line: str) -> None:
    from intriguing.progress import log

    log(line)  # through the bars' console: never glued onto a live bar


@click.command()
@click.argument("name")
@data_options
@seed_option
@json_option
@flag_option("--retrain", "Train again even if a cached checkpoint exists.")
def train(
    name: str, dataset: str, data_dir: Path | None, seed: int, json_path: Path | None, retrain: bool
) -> None:
    """Train zoo model NAME (or reuse its cached checkpoint) and report its errors."""
    from intriguing.models import get_entry
    from intriguing.training import train_model

    _refuse_other_model_forms(name)
    get_entry(name)  # unknown names fail before any data is loaded
    trained = train_model(
        name, dataset=dataset, data_dir=data_dir, seed=seed, retrain=retrain, log=_echo_log
    )
    metrics = trained.metrics  # errors measured now on a cached model, never copied (issue 16)
    if trained.cached:
        from intriguing.training.api import measured_errors

        metrics.update(measured_errors(trained, dataset=dataset, data_dir=data_dir))
    result = {
        "model": trained.name,
        "dataset": dataset,
        "seed": seed,
        "train_split": trained.sidecar.get("train_split"),
        "train_error": metrics.get("train_error"),
        "test_error": metrics.get("test_error"),
        "wall_time_s": metrics.get("wall_time_s"),
        "cpu_time_s": metrics.get("cpu_time_s"),
        "cached": trained.cached,
        "checkpoint": str(trained.path),
        "paper": dict(get_entry(name).paper),
    }
    _report(result, json_path)


def _refuse_other_model_forms(name: str) -> None:
    """``train`` trains zoo models only: a factory or a checkpoint gets one line saying what to do."""
    from intriguing.errors import InvalidInputError

    if is_checkpoint_spec(name) and not Path(name).expanduser().is_file():
        raise InvalidInputError(
            f"train takes a zoo model name (see `intriguing zoo`), not a file, and {name} does "
            "not exist either"
        )
    if is_checkpoint_spec(name):
        raise InvalidInputError(
            f"train takes a zoo model name (see `intriguing zoo`), and {name} is a checkpoint, "
            f"trained already: evaluate it with `intriguing eval {name}`, or give any command "
            "its weights with --weights FILE.safetensors"
        )
    if ":" in name:
        raise InvalidInputError(
            f"train takes a zoo model name (see `intriguing zoo`), not {name}: train your own "
            "model yourself and give its weights to the other commands with --weights "
            f"FILE.safetensors (e.g. intriguing eval {name} --weights FILE.safetensors)"
        )


@click.command("eval")
@click.argument("name", required=False)
@data_options
@seed_option
@json_option
@click.option(
    "--checkpoint",
    type=InputPath(dir_okay=False, companions=(".safetensors", ".json")),
    default=None,
    help="Evaluate this checkpoint (.safetensors or its .json sidecar) instead of the cached model.",
)
@model_options
@user_data_options()
def eval_cmd(
    name: str | None,
    dataset: str,
    data_dir: Path | None,
    seed: int,
    json_path: Path | None,
    checkpoint: Path | None,
    **params: Any,
) -> None:
    """Evaluate zoo model NAME (trained and cached if needed) on train, test, P1 and P2; a zoo
    checkpoint (NAME a .safetensors or .json file, or --checkpoint) likewise.

    Any other MODEL (package.module:factory, file.py:factory; --weights, --normalize, --device) or
    --images/--tensors data: the error rate on the test split or on that data.
    """
    from intriguing.errors import InvalidInputError

    if checkpoint is None and name is None:
        raise InvalidInputError("give a model NAME or --checkpoint PATH (see `intriguing zoo`)")
    flag = "--checkpoint "
    if name is not None and is_checkpoint_spec(name):  # a checkpoint as MODEL: as --checkpoint
        if checkpoint is not None:
            raise InvalidInputError(
                f"give the checkpoint as MODEL ({name}) or with --checkpoint, not both"
            )
        checkpoint, name, flag = Path(name), None, ""
    options = {**params, "dataset": dataset, "data_dir": data_dir}
    if checkpoint is not None:
        result = _eval_checkpoint(checkpoint, name, options, seed, flag)
    elif ":" in str(name) or _custom(params):
        refuse_unused_seed(str(name), params)
        result = _eval_any(str(name), options, seed)
    else:
        result = _eval_zoo(str(name), dataset, data_dir, seed)
    _report(result, json_path)


def _custom(params: dict[str, Any]) -> bool:
    """Whether --weights, --normalize, --device or the user's own data were given."""
    user = {k: v for k, v in params.items() if v is not None and k != "device"}
    return bool(user) or params["device"] != "cpu"


def _eval_checkpoint(
    checkpoint: Path, name: str | None, options: dict[str, Any], seed: int, flag: str
) -> dict[str, Any]:
    """A zoo checkpoint: every split, or the error on the user's data / with the user's options."""
    from intriguing.errors import InvalidInputError
    from intriguing.models import get_entry
    from intriguing.training import load_checkpoint

    if name is not None and (":" in name or name.endswith(".py")):
        raise InvalidInputError(
            f"--checkpoint holds a zoo model; {name!r} is a model factory: give the checkpoint "
            "alone (eval --checkpoint FILE), or your factory's weights with --weights FILE"
        )
    trained = load_checkpoint(checkpoint)
    if name is not None and get_entry(name).name != trained.name:
        raise InvalidInputError(f"{checkpoint} holds {trained.name!r}, not {name!r}")
    own_data = bool(options.get("images_dir") or options.get("tensors_file"))
    given = f"{flag}{checkpoint}"
    options = _its_own_dataset(given, trained.sidecar, options, own_data)
    _check_checkpoint_options(given, trained.sidecar, options["dataset"], seed, own_data)
    if _custom({k: v for k, v in options.items() if k not in ("dataset", "data_dir")}):
        return _eval_any(str(checkpoint), options, seed)  # --tensors/--images/--weights/...
    return _split_errors(trained, options["dataset"], options["data_dir"])


def _eval_zoo(name: str, dataset: str, data_dir: Path | None, seed: int) -> dict[str, Any]:
    """Zoo model ``name``, trained (or loaded from the cache): its error on every split."""
    from intriguing.models import get_entry
    from intriguing.training import train_model

    get_entry(name)  # unknown names fail before any data is loaded
    trained = train_model(name, dataset=dataset, data_dir=data_dir, seed=seed, log=_echo_log)
    return _split_errors(trained, dataset, data_dir)


def _split_errors(trained: Any, dataset: str, data_dir: Path | None) -> dict[str, Any]:
    """Errors of a trained zoo model on its training split (``train_error``, as `train` and the
    paper's tables mean it: P1's error for a model trained on P1), test, P1 and P2, beside the
    paper's numbers."""
    from intriguing.data import load_mnist
    from intriguing.models import get_entry
    from intriguing.training import error_rate

    data = load_mnist(data_dir, dataset=dataset)
    errors = {
        split: error_rate(trained.model, *data.split(split)) for split in ("test", "p1", "p2")
    }
    train_split = str(trained.sidecar.get("train_split", "train"))
    errors = {
        "train": errors[train_split]
        if train_split in errors
        else error_rate(trained.model, *data.split(train_split)),
        **errors,
    }
    return {
        "model": trained.name,
        "dataset": dataset,
        "checkpoint": str(trained.path),
        "train_split": trained.sidecar.get("train_split"),
        **{f"{split}_error": value for split, value in errors.items()},
        "paper": dict(get_entry(trained.name).paper),
    }


def _trained_dataset(sidecar: dict[str, Any]) -> str | None:
    """The dataset name a checkpoint's sidecar says it was trained on (None: not recorded)."""
    identity = sidecar.get("dataset")
    name = identity.get("dataset") if isinstance(identity, dict) else None
    return name if isinstance(name, str) else None


def _its_own_dataset(
    given: str, sidecar: dict[str, Any], options: dict[str, Any], own_data: bool
) -> dict[str, Any]:
    """``options`` with the dataset the checkpoint was trained on when ``--dataset`` was not typed
    (its default, mnist, was refused for an mnist-5k checkpoint, quoting an option never given)."""
    from intriguing.cli.options import DATASETS, banner_at_first_load, typed
    from intriguing.errors import InvalidInputError

    trained_on = _trained_dataset(sidecar)
    if own_data or typed("dataset") or trained_on not in DATASETS:
        return options
    if trained_on == "mnist-5k":
        if options.get("data_dir") is not None:
            raise InvalidInputError(
                f"{given} was trained on mnist-5k, which reads no folder: --data-dir does nothing; "
                "drop it"
            )
        banner_at_first_load()
    return {**options, "dataset": trained_on}


def _check_checkpoint_options(
    given: str, sidecar: dict[str, Any], dataset: str, seed: int, user_data: bool
) -> None:
    """``eval`` of a checkpoint (``given``: as the command line named it): refuse a ``--seed``
    other than the checkpoint's (it would be ignored) and, on MNIST splits (no --images/--tensors),
    a ``--dataset`` other than the one it was trained on (its "train" error would be measured on
    images it never saw)."""
    from intriguing.cli.options import DATASETS, typed
    from intriguing.errors import InvalidInputError

    trained_seed = sidecar.get("seed")
    if typed("seed") and isinstance(trained_seed, int) and seed != trained_seed:
        raise InvalidInputError(
            f"--seed {seed} does not apply to {given} (trained with seed "
            f"{trained_seed}); drop --seed, or evaluate the zoo model by name with --seed"
        )
    trained_on = _trained_dataset(sidecar)
    if user_data or trained_on is None or trained_on == dataset:
        return
    fix = (
        f"pass --dataset {trained_on}"
        if trained_on in DATASETS
        else "evaluate it on its own data with --tensors or --images"
    )
    raise InvalidInputError(f"{given} was trained on {trained_on}, not --dataset {dataset}; {fix}")


def _paper_value(key: str, value: Any) -> str:
    """A paper number as the table beside it prints ours: errors as percentages, floats rounded."""
    is_error = key.endswith("_error") or key.startswith("err_")  # Table 3 names them err_p1, err_p2
    if is_error and isinstance(value, int | float) and not isinstance(value, bool):
        return _percent(float(value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _eval_any(spec: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Error rate of any MODEL on MNIST's test split, --images or --tensors (labels needed)."""
    from intriguing.cli.options import missing_labels, model_from_options, open_user_data
    from intriguing.errors import InvalidInputError
    from intriguing.inputs import predict

    data = open_user_data(params)
    if data.labels is None:  # refused before the model is built or trained
        raise InvalidInputError(f"eval needs labels: {missing_labels(data)}")
    model, description = model_from_options(spec, params, seed=seed)
    data.fit_to(model)
    wrong = 0
    for start in range(0, len(data), 512):
        stop = min(start + 512, len(data))
        predicted = predict(model, data.batch(start, stop), offset=start)
        wrong += int((predicted != data.labels[start:stop]).sum())
    where = data.meta.get("split") if data.kind == "mnist" else data.kind
    return {
        "model": description,
        "data": str(data.meta.get("path") or data.meta.get("dataset")),
        "n": len(data),
        f"{where}_error": wrong / len(data),
        "device": str(params["device"]),
    }


def _report(result: dict[str, Any], json_path: Path | None) -> None:
    """Print ``result`` as aligned ``key: value`` lines; also write it as JSON if asked."""
    from intriguing._io import atomic_write_json

    for key, value in result.items():
        if key == "paper":
            shown = ", ".join(f"{k} {_paper_value(k, v)}" for k, v in value.items()) or "-"
        elif key.endswith("_error") and isinstance(value, float):
            shown = _percent(value)
        elif isinstance(value, float):
            shown = f"{value:.1f}"
        else:
            shown = str(value)
        click.echo(f"{key:>12}: {shown}")
    if json_path is not None:
        atomic_write_json(json_path, result)
        click.echo(f"wrote {json_path}", err=True)
    sys.stdout.flush()
