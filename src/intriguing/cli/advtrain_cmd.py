"""``intriguing advtrain``: adversarial training with a pool of adversarial examples (paper §4.2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from intriguing.cli.options import (
    choice_option,
    flag_option,
    images_option,
    int_option,
    run_options,
    text_option,
    typed,
)
from intriguing.cli.validation import float_range
from intriguing.errors import InvalidInputError

if TYPE_CHECKING:
    from intriguing.training.adversarial import PoolAttack


def _variants(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise InvalidInputError("--variants is empty; give a comma-separated list")
    return names


# the options that set the pools of adversarial examples, which only the *-pool variants have
POOL_OPTIONS: tuple[tuple[str, str], ...] = (
    ("attack", "--attack"),
    ("pool_size", "--pool-size"),
    ("mix", "--mix"),
    ("warmup_epochs", "--warmup-epochs"),
    ("refresh_every", "--refresh-every"),
)


def _refuse_pool_options(chosen: tuple[str, ...] | None) -> None:
    """A pool option typed while --variants selects no pool variant would do nothing: refused
    (unknown variants are left to the run's configuration, which names them)."""
    from intriguing.experiments.advtrain import VARIANTS

    if chosen is None or any(v.endswith("-pool") or v not in VARIANTS for v in chosen):
        return
    given = [flag for name, flag in POOL_OPTIONS if typed(name)]
    if given:
        raise InvalidInputError(
            f"{given[0]} sets the pools of adversarial examples, which only the input-pool and "
            f"hidden-pool variants have, and --variants {','.join(chosen)} selects neither; drop "
            f"{given[0]} or add a pool variant"
        )


def _summary_table(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="advtrain: test error, mean [95% CI] over seeds (paper)")
    for col in (
        "variant",
        "seeds",
        "test error",
        "95% CI",
        "paper",
        "Welch p vs weight decay",
        "robust. median",
        "wall / run",
    ):
        table.add_column(col, no_wrap=col == "variant")
    for row in doc["summary"]["rows"]:
        ci = row.get("ci95")
        p = (row.get("vs_baseline") or {}).get("p")
        table.add_row(
            row["variant"],
            str(len(row["test_errors"])),
            f"{100 * row['mean']:.2f}%",
            "-" if not ci else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]",
            row["paper"]["text"],
            "-" if p is None else f"{p:.2g}",
            "-" if row.get("robust_median") is None else f"{row['robust_median']:.4f}",
            f"{row['wall_time_s']:.0f} s",
        )
    return table


@click.command()
@text_option(
    "--variants",
    default=None,
    help="Comma-separated subset of weight-decay,dropout,input-pool,hidden-pool (default: all).",
)
@int_option("--seeds", 1, 100, default=None, help="Seeds per variant (default 3; quick 2).")
@int_option("--epochs", 1, 1000, default=None, help="Training epochs (default 20; quick 3).")
@choice_option(
    "--attack",
    ["lbfgs", "fgm"],
    default=None,
    help="Attack refilling the pools: the paper's L-BFGS (default) or a one-step L2 fast gradient.",
)
@int_option("--pool-size", 1, 1_000_000, default=None, help="Examples per pool (default 5000).")
@click.option(
    "--mix",
    type=float_range(0, 100, min_open=True),
    default=None,
    help="Pool examples per clean example (default 0.5).",
)
@int_option(
    "--warmup-epochs",
    0,
    1000,
    default=None,
    help="Clean epochs before the pools start (default 1).",
)
@int_option(
    "--refresh-every",
    1,
    1_000_000,
    default=None,
    help="Minibatches between refreshes (default 40).",
)
@images_option(
    "--robust-n", default=None, help="Test images attacked for robustness (default 300)."
)
@flag_option("--quick", "A small first look: 2 seeds, 3 epochs, 10000 training images.")
@run_options(
    default=None,
    help="Run directory (default ./advtrain or ./advtrain-quick); rerunning resumes there.",
    seed=False,
)
def advtrain(
    variants: str | None,
    seeds: int | None,
    epochs: int | None,
    attack: PoolAttack | None,
    pool_size: int | None,
    mix: float | None,
    warmup_epochs: int | None,
    refresh_every: int | None,
    robust_n: int | None,
    quick: bool,
    out: Path | None,
    backend: str,
    address: str | None,
    workers: int,
    dataset: str,
    data_dir: Path | None,
    json_path: Path | None,
) -> None:
    """Compare weight decay, dropout, an input-space pool and a hidden-layer pool of adversarial
    examples on the 100-100-10 sigmoid net (§4.2), over several seeds, with 95% intervals, Welch
    tests against weight decay, robustness and times. Writes results.json, report.md and a plot;
    a killed run resumes (per-epoch checkpoints) when rerun with the same options."""
    from intriguing._io import atomic_write_json
    from intriguing.cli.plain import plain_console
    from intriguing.experiments.advtrain import AdvTrainRunConfig, quick_spec, run_advtrain
    from intriguing.experiments.backends import make_backend

    chosen = _variants(variants)
    _refuse_pool_options(chosen)
    spec = quick_spec() if quick else AdvTrainRunConfig()
    pool = spec.pool
    if attack is not None:
        pool = dataclasses.replace(pool, attack=attack)
    if pool_size is not None:
        pool = dataclasses.replace(pool, size=pool_size)
    if mix is not None:
        pool = dataclasses.replace(pool, mix=mix)
    if warmup_epochs is not None:
        pool = dataclasses.replace(pool, warmup_epochs=warmup_epochs)
    if refresh_every is not None:
        pool = dataclasses.replace(pool, refresh_every=refresh_every)
    changes: dict[str, Any] = {"dataset": dataset, "pool": pool}
    if chosen is not None:
        changes["variants"] = chosen
    if seeds is not None:
        changes["seeds"] = seeds
    if epochs is not None:
        changes["train"] = spec.train.replace(epochs=epochs)
    if robust_n is not None:
        changes["robust_n"] = robust_n
    spec = spec.replace(**changes)
    root = out if out is not None else Path("advtrain-quick" if quick else "advtrain")
    runner = make_backend(backend, address=address, workers=workers)
    doc = run_advtrain(spec, root, data_dir=data_dir, backend=runner)
    plain_console().print(_summary_table(doc))
    click.echo(f"wrote {root / 'results.json'}, {root / 'report.md'}")
    if json_path is not None:
        atomic_write_json(json_path, doc)
