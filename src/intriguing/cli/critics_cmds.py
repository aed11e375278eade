"""``intriguing rarity | recover | curves``: the critics' open questions (issue #9, items 2, 3, 5).

::

    intriguing rarity  --models softmax1,N100-100-10 --n 200 --samples 1000 --scales 1,2,5 \
        --rays 100 [--box rescale|clip] [--from-run RUN] --out DIR [--json FILE]
    intriguing recover --models N100-100-10 --n 500 [--bootstrap 2000] [--from-run RUN] --out DIR
    intriguing curves  [--models ALL] [--n 1000] [--budget-max 0.3] [--points 201] \
        [--from-run RUN] --out DIR

Every command reads adversarial examples from a ``reproduce`` run (``--from-run``: the untargeted
attacks it stored, for the models it has) or attacks the first ``--n`` correctly classified images of
``--split`` itself. The work is a resumable step graph in ``--out`` (rerun to resume; the three
commands share the attacks when given the same ``--out``); each writes ``<out>/<command>.json``,
``<out>/<command>.md`` and a figure under ``<out>/figures/``, and prints its verdict. User mistakes
print one ``Error: ...`` line and exit with 2. See docs/critics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from intriguing.cli.options import backend_options, data_options, json_option, seed_option
from intriguing.cli.validation import output_dir
from intriguing.errors import InvalidInputError

F = TypeVar("F", bound=Callable[..., Any])


def _models(text: str | None) -> list[str]:
    """Comma-separated zoo names; ``None`` or ``all``: every model of the zoo."""
    if text is None or text.strip().lower() == "all":
        from intriguing.models import list_entries

        return [e.name for e in list_entries()]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InvalidInputError("--models is empty; give comma-separated zoo names or 'all'")
    return names


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InvalidInputError(f"--{what} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise InvalidInputError(f"--{what} is empty; give comma-separated numbers")
    return values


def _common(func: F) -> F:
    """Options every critics command shares."""
    options = [
        click.option(
            "--models",
            default=None,
            help="Comma-separated zoo names, or 'all' (the default: every zoo model).",
        ),
        click.option(
            "--from-run",
            type=click.Path(path_type=Path),
            default=None,
            help="A reproduce --out folder whose stored untargeted attacks are reused.",
        ),
        click.option(
            "--out",
            type=output_dir(),
            is_eager=True,
            required=True,
            help="Run directory (resumable; JSON, markdown and figures go here).",
        ),
        click.option(
            "--split",
            type=click.Choice(["train", "test", "p1", "p2"]),
            default="test",
            show_default=True,
            help="Split attacked here for models the run lacks.",
        ),
        click.option(
            "--attack-n",
            type=int,
            default=None,
            help="Images attacked here for a model the run lacks (default: --n); the first --n "
            "successes are analysed. The same --attack-n and --out reuse one attack.",
        ),
        click.option(
            "--max-iter",
            type=int,
            default=None,
            help="L-BFGS iterations per stage of the attacks run here (default: the reproduce one).",
        ),
        click.option(
            "--search-steps",
            type=int,
            default=None,
            help="Constants tried per example by the attacks run here (default: the reproduce one).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return backend_options(data_options(seed_option(json_option(func))))


def _attack(max_iter: int | None, search_steps: int | None) -> dict[str, Any]:
    from intriguing.experiments.critics import default_attack

    attack = default_attack()
    for name, value in (("max_iter", max_iter), ("search_steps", search_steps)):
        if value is not None:
            if value < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            attack[name] = value
    return attack


def _attack_n(attack_n: int | None, n: int) -> int:
    if attack_n is None:
        return n
    if attack_n < 1:
        raise InvalidInputError(f"--attack-n must be >= 1, got {attack_n}")
    return attack_n


def _check_run(from_run: Path | None) -> None:
    if from_run is not None:
        from intriguing.experiments.critics import check_run

        check_run(from_run)


def _run(command: str, n: int, options: dict[str, Any], common: dict[str, Any]) -> None:
    """Run ``command``'s step graph with the options every critics command shares."""
    from intriguing.experiments.backends import make_backend
    from intriguing.experiments.critics import run_critics

    _check_run(common["from_run"])
    runner = make_backend(common["backend"], address=common["address"])
    payload = run_critics(
        command,
        _models(common["models"]),
        common["out"],
        dataset=common["dataset"],
        data_dir=common["data_dir"],
        seed=0,
        from_run=common["from_run"],
        n=n,
        source_n=_attack_n(common["attack_n"], n),
        split=common["split"],
        attack=_attack(common["max_iter"], common["search_steps"]),
        options=options,
        backend=runner,
    )
    _finish(payload, common["out"], common["json_path"])


def _finish(payload: dict[str, Any], out: Path, json_path: Path | None) -> None:
    from intriguing._io import atomic_write_json

    if json_path is not None:
        atomic_write_json(json_path, payload)
    command = payload["command"]
    click.echo(f"results: {out / (command + '.json')}")
    click.echo(f"report section: {out / (command + '.md')}")
    for path in payload["figures"].values():
        click.echo(f"figure: {path}")
    click.echo(f"verdict: {payload['verdict']}")


@click.command("rarity")
@click.option(
    "--n", type=int, default=200, show_default=True, help="Adversarial examples per model."
)
@click.option(
    "--samples", type=int, default=1000, show_default=True, help="Random directions per example."
)
@click.option(
    "--scales",
    default="1,2,5",
    show_default=True,
    help="Radii as multiples of each example's adversarial L2 distance.",
)
@click.option(
    "--rays",
    type=int,
    default=100,
    show_default=True,
    help="Random directions per example for the distance to the boundary (0: skip).",
)
@click.option(
    "--box",
    type=click.Choice(["rescale", "clip"]),
    default="rescale",
    show_default=True,
    help="rescale: exact norm along the clipped ray; clip: plain clipping (norm shrinks).",
)
@_common
def rarity(
    n: int,
    samples: int,
    scales: str,
    rays: int,
    box: str,
    seed: int,
    **common: Any,
) -> None:
    """How often does a random perturbation as large as the adversarial one change the label?"""
    from intriguing.analysis.rarity import RarityConfig

    config = RarityConfig(
        samples=samples,
        scales=_floats(scales, "scales"),
        ray_directions=rays,
        box=box,
        seed=seed,
    )
    config.check()
    options = {
        "config": {
            "samples": config.samples,
            "scales": list(config.scales),
            "ray_directions": config.ray_directions,
            "grid": config.grid,
            "bisect_steps": config.bisect_steps,
            "box": config.box,
            "confidence": config.confidence,
            "seed": config.seed,
        }
    }
    _run("rarity", n, options, common)


@click.command("recover")
@click.option(
    "--n", type=int, default=500, show_default=True, help="Adversarial examples per model."
)
@click.option(
    "--bootstrap", type=int, default=2000, show_default=True, help="Bootstrap resamples of the AUC."
)
@click.option(
    "--amplify",
    default="2",
    show_default=True,
    help="Also test the detector on adversarials pushed k times further (comma list; 'none').",
)
@_common
def recover(
    n: int,
    bootstrap: int,
    amplify: str,
    seed: int,
    **common: Any,
) -> None:
    """Attack adversarial examples back to their true label; detect them by the flip distance."""
    if bootstrap < 1:
        raise InvalidInputError(f"--bootstrap must be >= 1, got {bootstrap}")
    attack = _attack(common["max_iter"], common["search_steps"])
    factors = () if amplify.strip().lower() in ("", "none") else _floats(amplify, "amplify")
    if any(not k > 1.0 for k in factors):
        raise InvalidInputError(f"--amplify factors must be > 1, got {amplify!r}")
    options = {
        "attack": attack,
        "bootstrap": bootstrap,
        "seed": seed,
        "confidence": 0.95,
        "amplify": list(factors),
    }
    _run("recover", n, options, common)


@click.command("curves")
@click.option(
    "--n",
    type=int,
    default=1000,
    show_default=True,
    help="Images attacked for a model the run lacks (the run's models use all their examples).",
)
@click.option(
    "--budget-max", type=float, default=0.3, show_default=True, help="Largest RMS budget plotted."
)
@click.option("--points", type=int, default=201, show_default=True, help="Budgets on the grid.")
@_common
def curves(
    n: int,
    budget_max: float,
    points: int,
    **common: Any,
) -> None:
    """Attack success rate as a function of the distortion budget, for every model."""
    from intriguing.experiments.critics import budgets_grid

    budgets = budgets_grid(budget_max, points)
    _run("curves", n, {"budgets": budgets, "confidence": 0.95}, common)
