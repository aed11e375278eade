"""``intriguing recurrent``: adversarial examples for recurrent nets and their transfer (issue #9.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from intriguing.cli.options import images_option, run_options
from intriguing.errors import IntriguingError, InvalidInputError


@click.command()
@images_option(
    "--n",
    default=300,
    help="Test images (classified correctly by every model) attacked per model.",
    dest="n",
)
@click.option(
    "--models",
    "models",
    multiple=True,
    help="Zoo models (repeat or comma-separate); default: LSTM-rows, GRU-rows, Feedback and "
    "softmax1, N100-100-10, N200-200-10, AE400-10, Conv.",
)
@run_options(
    default=Path("recurrent-run"),
    help="Run directory (results.json, report.md, figure); rerunning resumes there.",
)
def recurrent(
    n: int,
    models: tuple[str, ...],
    out: Path,
    backend: str,
    address: str | None,
    workers: int,
    dataset: str,
    data_dir: Path | None,
    seed: int,
    json_path: Path | None,
) -> None:
    """Attack recurrent MNIST nets (row-by-row LSTM and GRU, an output-feedback net) with L-BFGS
    and measure how their adversarial examples transfer to and from the feedforward zoo.

    Trains missing models first (a few minutes each on one thread; cached afterwards).
    """
    import torch

    from intriguing._io import atomic_write_json
    from intriguing.experiments.backends import make_backend
    from intriguing.experiments.recurrent import make_spec, run_recurrent
    from intriguing.report.recurrent import verdict

    if n < 1:
        raise IntriguingError(f"--n must be >= 1, got {n}")
    names = [m.strip() for group in models for m in group.split(",") if m.strip()]
    if models and not names:
        raise InvalidInputError(
            f"--models {','.join(models)!r} names no model; give comma-separated zoo names"
        )
    spec = make_spec(n, names or None, dataset=dataset, seed=seed)
    _refuse_no_recurrent(spec)
    runner = make_backend(backend, address=address, workers=workers)
    torch.set_num_threads(1)
    doc = run_recurrent(spec, out, data_dir=data_dir, backend=runner)
    if json_path is not None:
        atomic_write_json(json_path, doc)
    _print_summary(doc)
    click.echo(f"Verdict: {verdict(doc['table'])}")
    click.echo(f"report: {out / 'report.md'} (and results.json)")


def _refuse_no_recurrent(spec: Any) -> None:
    """The run attacks recurrent nets: --models without one would train and attack for nothing."""
    from intriguing.models.recurrent import RECURRENT_MODELS

    if not spec.recurrent:
        raise InvalidInputError(
            f"--models {','.join(spec.feedforward)} names no recurrent model; add at least one "
            f"of {', '.join(RECURRENT_MODELS)} (the run attacks recurrent nets and measures how "
            "their examples transfer)"
        )


def _print_summary(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from intriguing.cli.plain import plain_console
    from intriguing.report.render import num, pct

    table = doc["table"]
    out = Table(title="untargeted L-BFGS per model")
    for col in ("model", "kind", "test err", "misclassified", "mean distortion"):
        out.add_column(col)
    for r in table["rows"]:
        out.add_row(
            r["model"],
            r["kind"],
            pct(r["test_error"]),
            pct(r["success_rate"]),
            num(r["mean_distortion"]),
        )
    plain_console().print(out)
