"""``intriguing classes``: minimum distortion and transfer against the number of classes (issue #9,
item 4: "if the number of classes is small, will the problem be less severe?")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from intriguing.cli.options import (
    MNIST_IMAGES,
    flag_option,
    images_option,
    int_option,
    run_options,
    text_option,
)

if TYPE_CHECKING:
    from intriguing.data import DatasetName

DEFAULT_OUT = Path("classes")


def _summary_table(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    from intriguing.report.render import num, pct

    table = Table(title="minimum distortion vs number of classes")
    for col in ("task", "K", "model", "test err", "fooled", "mean distortion", "-> mlp-b"):
        table.add_column(col)
    for r in doc["rows"]:
        if not r.get("attacked"):
            continue
        transfer = (r.get("transfer") or {}).get("mlp-b") or {}
        table.add_row(
            r["task"],
            str(r["num_classes"]),
            r["family"],
            pct(r["test_error"]),
            pct(r.get("success_rate")),
            num((r.get("distortion") or {}).get("mean"), 4),
            pct(transfer.get("rate")),
        )
    return table


@click.command()
@text_option(
    "--tasks",
    default="3v8,0vrest,0-4,all",
    help="Comma-separated tasks: AvB (3v8), Dvrest (0vrest), A-B (0-4) or all.",
)
@text_option(
    "--families",
    default="softmax,mlp,ae-probe,mlp-b",
    help="Comma-separated model families (mlp-b is only a transfer target).",
)
@images_option("--n", default=1000, help="Test images attacked per model.")
@int_option(
    "--updates",
    1,
    10_000_000,
    default=4700,
    help="Adam updates per model, rounded up to whole epochs of each task's training images "
    "(4700 = 10 MNIST epochs).",
)
@int_option(
    "--train-limit",
    2,
    MNIST_IMAGES,
    default=None,
    help="Train on the first N (at least 2) training images of each task only (quick runs).",
)
@flag_option("--no-restricted", "Skip the 10-class comparison on the same images.")
@run_options(
    default=DEFAULT_OUT,
    help="Run directory (results.json, classes.md, classes.png); rerunning resumes there.",
)
def classes(
    tasks: str,
    families: str,
    n: int,
    updates: int,
    train_limit: int | None,
    no_restricted: bool,
    out: Path,
    backend: str,
    address: str | None,
    workers: int,
    dataset: DatasetName,
    data_dir: Path | None,
    seed: int,
    json_path: Path | None,
) -> None:
    """Train softmax, MLP and AE400-probe models on MNIST tasks with 2 to 10 classes, attack them
    (untargeted L-BFGS) and compare minimum distortion and transfer against the number of classes.

    Killed runs resume where they stopped when rerun with the same options.
    """
    import torch

    from intriguing.errors import IntriguingError
    from intriguing.experiments.backends import make_backend
    from intriguing.experiments.classes import ClassesConfig, run_classes
    from intriguing.report.classes import verdict, write_classes_report

    if out.exists() and not out.is_dir():
        raise IntriguingError(f"--out {out} is a file; give a directory")
    torch.set_num_threads(1)
    config = ClassesConfig(
        tasks=tuple(tasks.split(",")),
        families=tuple(f.strip() for f in families.split(",") if f.strip()),
        n=n,
        updates=updates,
        train_limit=train_limit,
        restricted=not no_restricted,
        seed=seed,
        dataset=dataset,
    )
    runner = make_backend(backend, address=address, workers=workers)
    doc = run_classes(config, out, data_dir=data_dir, backend=runner)
    paths = write_classes_report(out)
    if json_path is not None and json_path.resolve() != (out / "results.json").resolve():
        from intriguing._io import atomic_write_bytes

        atomic_write_bytes(json_path, (out / "results.json").read_bytes())  # checked beforehand
    from intriguing.cli.plain import plain_console

    plain_console().print(_summary_table(doc))
    click.echo(verdict(doc))
    click.echo(
        f"report: {paths['markdown']} ({paths['figure'].name}); results: {out / 'results.json'}; "
        f"wall time {doc['timings']['wall_time_s']:.1f} s"
    )
