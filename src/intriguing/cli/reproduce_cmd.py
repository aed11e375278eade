"""``intriguing reproduce`` and ``intriguing report``: the paper's MNIST experiments (§3, §4.2, §4.3) and their report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from intriguing.cli.options import (
    backend_options,
    data_options,
    model_from_options,
    model_options,
    open_user_data,
    seed_option,
    typed,
    user_data_options,
)
from intriguing.cli.validation import output_dir
from intriguing.errors import IntriguingError, InvalidInputError

SIZE_CHOICES = ("tiny", "quick", "default", "full")


def _summary_tables(doc: dict[str, Any]) -> list[Any]:
    """Rich tables: per model (Tables 1 and 3) ours beside the paper's, then the claims' verdicts."""
    from rich.table import Table

    from intriguing.report.render import num, pct

    models = Table(title=f"reproduce ({doc['config']['size']}): ours (paper)")
    for col in ("table", "model", "test err", "misclassified", "av. min. distortion"):
        models.add_column(col)
    for number in ("1", "3"):
        for r in doc["tables"][f"table{number}"]["rows"]:
            paper = r["paper"]
            models.add_row(
                number,
                r["model"],
                f"{pct(r.get('test_error', r.get('err_test')))} ({pct(paper.get('test_error'))})",
                pct(r["success_rate"]),
                f"{num(r['mean_distortion'])} ({num(paper.get('distortion'))})",
            )
    from intriguing.report.render import uncertainty

    stability = (doc.get("stability") or {}).get("claims") or {}
    claims = Table(title="the paper's claims (rules: docs/claims.md)")
    for col in ("claim", "verdict", "statistic", "uncertainty", "n"):
        claims.add_column(col)
    if stability:
        claims.add_column("verdicts at seeds " + ", ".join(map(str, doc["stability"]["seeds"])))
    for c in doc["claims"]:
        seeds = stability.get(c["id"])
        extra = [] if not stability else ["-" if seeds is None else "/".join(seeds["verdicts"])]
        claims.add_row(c["id"], c["verdict"], c["statistic"], uncertainty(c), str(c["n"]), *extra)
    checks = Table(title="sanity checks (not claims)")
    for col in ("check", "result", "detail"):
        checks.add_column(col)
    for c in doc.get("sanity") or []:
        checks.add_row(c["id"], "passed" if c["passed"] else "FAILED", c["detail"])
    return [models, claims, checks]


def _dataset_banner(doc: dict[str, Any]) -> Any:
    """A red box for runs not on the paper's MNIST (printed above everything), else None."""
    from rich.panel import Panel

    from intriguing.report.blocks import Alert
    from intriguing.report.render import dataset_blocks

    alerts = [b.text for b in dataset_blocks(doc) if isinstance(b, Alert)]
    return Panel("\n".join(alerts), title="WARNING", style="bold red") if alerts else None


@click.command()
@click.option(
    "--quick", is_flag=True, help="Small subsets (100 examples per model; models cached)."
)
@click.option(
    "--full",
    is_flag=True,
    help="The paper's full training and test sets (about 10-11 min on 2 cores with --workers 2, "
    "models cached).",
)
@click.option("--size", type=click.Choice(SIZE_CHOICES), default=None, hidden=True)
@click.option(
    "--out",
    type=output_dir(),
    is_eager=True,
    default=None,
    help="Run directory (default: ./reproduce-<size>); rerunning resumes there.",
)
@backend_options
@click.option(
    "--noise-clip/--no-noise-clip",
    default=False,
    show_default=True,
    help="Clip the Gaussian-noise and amplified rows (Tables 2, 4, Figure 7) to [0, 1]; "
    "unclipped (the default) matches the paper's noise rows.",
)
@data_options
@seed_option
@click.option(
    "--seeds",
    type=int,
    default=1,
    show_default=True,
    help="Also run seeds SEED+1 .. SEED+N-1 (models retrained) in OUT/seeds/ and report whether "
    "every verdict is the same at each seed.",
)
def reproduce(
    quick: bool,
    full: bool,
    size: str | None,
    out: Path | None,
    backend: str,
    address: str | None,
    workers: int,
    noise_clip: bool,
    dataset: str,
    data_dir: Path | None,
    seed: int,
    seeds: int,
) -> None:
    """Run Tables 1-4 and Figure 7 of the paper on MNIST, the unit analysis (§3) and the spectral
    bounds (§4.3), and write report.md / report.html / results.json.

    Sizes: --quick (100 examples per model), default (5000), --full (every example). Killed runs
    resume where they stopped when rerun with the same options. --workers N runs independent
    steps (attack shards, models, analyses) N at a time in local worker processes, --backend ray
    on a Ray cluster (docs/ray.md); the results are identical to a one-worker run's.
    """
    import torch

    from intriguing.experiments.backends import make_backend
    from intriguing.experiments.reproduce import run_seeds
    from intriguing.experiments.specs import make_spec

    chosen = [
        name for name, on in (("quick", quick), ("full", full), (size, size is not None)) if on
    ]
    if len(chosen) > 1:
        raise IntriguingError(f"choose one size, got {' and '.join(map(str, chosen))}")
    if not 1 <= seeds <= 100:
        raise IntriguingError(f"--seeds must be in 1..100, got {seeds}")
    size = str(chosen[0]) if chosen else "default"
    torch.set_num_threads(1)
    out = out if out is not None else Path(f"reproduce-{size}")
    if out.exists() and not out.is_dir():
        raise IntriguingError(f"--out {out} is a file; give a directory")
    runner = make_backend(backend, address=address, workers=workers)
    spec = dataclasses.replace(make_spec(size, seed=seed, dataset=dataset), noise_clip=noise_clip)
    doc = run_seeds(spec, out, seeds, data_dir=data_dir, backend=runner)
    from intriguing.cli.plain import plain_console

    console = plain_console()
    banner = _dataset_banner(doc)
    if banner is not None:
        console.print(banner)
    for table in _summary_tables(doc):
        console.print(table)
    click.echo(
        f"report: {out / 'report.html'} (and report.md, results.json); "
        f"wall time {doc['timings']['wall_time_s']:.1f} s"
    )


@click.command()
@click.argument("run_dir", type=click.Path(path_type=str))
def report(run_dir: str) -> None:
    """Re-render report.md and report.html of RUN_DIR from its stored results (nothing recomputed)."""
    from intriguing.report.render import render_report

    if not run_dir.strip():  # Path("") would be the current directory
        raise InvalidInputError(
            "RUN_DIR is empty; give the --out DIR of an `intriguing reproduce` run"
        )
    paths = render_report(Path(run_dir))
    click.echo(f"wrote {paths['markdown']} and {paths['html']}")


@click.command()
@click.argument("model")
@click.option("--n", type=click.IntRange(1, 64), default=4, show_default=True, help="Images shown.")
@click.option(
    "--out",
    type=output_dir(),
    is_eager=True,
    default=Path("figure5"),
    show_default=True,
    help="Directory for figure5.png, figure5.json and figure5.safetensors.",
)
@model_options
@user_data_options(images_only=True, labels=False)
@data_options
@seed_option
def figure5(model: str, n: int, out: Path, seed: int, **params: Any) -> None:
    """Figure 5 for MODEL: original, difference magnified x10, adversarial.

    MODEL is a zoo name, package.module:factory (run from the folder holding the module; images in
    [0, 1] -> logits), file.py:factory or a checkpoint file. Images: --images DIR (mode follows the
    model), --tensors FILE, or the first MNIST test images.
    """
    import torch

    from intriguing.errors import InvalidInputError
    from intriguing.experiments.figure5 import check_drawable, check_out_folder, run_figure5

    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if params.get("labels_file") is not None:  # read, checked, then thrown away before
        raise InvalidInputError(
            "figure5 attacks each image from the model's own prediction and uses no labels; "
            "drop --labels"
        )
    torch.set_num_threads(1)
    data = open_user_data(params, labels=False)  # attacked from the model's predictions
    if not typed("n"):  # the default draws what there is; a typed --n above it is refused
        n = min(n, len(data))
    elif n > len(data):  # before a zoo model trains or the attack runs
        raise InvalidInputError(f"only {len(data)} images; lower --n to at most {len(data)}")
    check_drawable(data.batch(0, 1))  # before a zoo model trains or the attack runs
    check_out_folder(out)
    net, description = model_from_options(model, params, seed=seed)
    data.fit_to(net, labels=False)  # a tensor file's labels are not used here
    batch, _, names = data.take(n)
    doc = run_figure5(
        net, batch, names, out, description=description, attack_settings={"seed": seed}
    )
    summary = doc["summary"]
    mean = summary["mean_distortion"]
    distortion = "no success" if mean is None else f"mean distortion {mean:.4f}"
    click.echo(f"{out / 'figure5.png'}: {summary['successes']}/{summary['n']} fooled, {distortion}")
