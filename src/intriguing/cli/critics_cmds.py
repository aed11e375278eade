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

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from intriguing._io import atomic_path, json_safe, refuse_folder_names
from intriguing.cli.options import (
    backend_options,
    choice_option,
    data_options,
    images_option,
    int_option,
    json_option,
    model_options,
    out_option,
    seed_option,
    text_option,
    typed,
    user_data_options,
)
from intriguing.cli.validation import check_output_file, float_range, output_file
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


def _command(
    name: str, *, n: int, n_help: str = "Adversarial examples per model."
) -> Callable[[F], click.Command]:
    """``intriguing NAME [MODEL] --n N ...``: a critics command; its own options go between this
    decorator and :func:`_common`."""

    def decorate(func: F) -> click.Command:
        func = images_option("--n", default=n, help=n_help)(func)
        return click.command(name)(click.argument("model", required=False)(func))

    return decorate


def _common(func: F) -> F:
    """Options every critics command shares (MODEL's, its images', the run's)."""
    options = [
        text_option(
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
        out_option(
            default=None,
            help="Run directory (resumable; JSON, markdown and figures go here). Required without "
            "a MODEL argument; with one, optional (its JSON, and curves' plot, go here).",
        ),
        choice_option(
            "--split",
            ["train", "test", "p1", "p2"],
            default="test",
            help="Split attacked here for models the run lacks.",
        ),
        images_option(
            "--attack-n",
            default=None,
            help="Images attacked here for a model the run lacks (default: --n); the first --n "
            "successes are analysed. The same --attack-n and --out reuse one attack.",
        ),
        int_option(
            "--max-iter",
            1,
            100_000,
            default=None,
            help="L-BFGS iterations per stage of the attacks run here (default: the reproduce one).",
        ),
        int_option(
            "--search-steps",
            1,
            1000,
            default=None,
            help="Constants tried per example by the attacks run here (default: the reproduce one).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    func = backend_options(data_options(seed_option(json_option(func))))
    return model_options(user_data_options()(func))


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


# the options of MODEL and its images: without MODEL the zoo and MNIST are used, so they are refused
MODEL_ONLY = (
    ("weights", "--weights"),
    ("normalize", "--normalize"),
    ("images_dir", "--images"),
    ("labels_file", "--labels"),
    ("tensors_file", "--tensors"),
    ("image_size", "--image-size"),
    ("image_mode", "--mode"),
)


def _check_no_model_options(command: str, common: dict[str, Any]) -> None:
    """Refuse MODEL's options (--weights, --tensors, ...) and a --device without MODEL: they would
    be ignored silently, the zoo models attacked on MNIST instead."""
    given = [flag for key, flag in MODEL_ONLY if common.get(key) is not None]
    if common.get("device", "cpu") != "cpu":
        given.append("--device")
    if given:
        raise InvalidInputError(
            f"{', '.join(given)}: only with a MODEL argument (intriguing {command} MODEL "
            f"{given[0]} ...); without MODEL the --models zoo nets are run on MNIST"
        )


# the options of the run's step graph: a MODEL is attacked here, in this process
GRAPH_ONLY = (("backend", "--backend"), ("address", "--address"), ("workers", "--workers"))


def _refuse_given(options: tuple[tuple[str, str], ...], usage: str) -> None:
    """Refuse the ``(parameter, flag)`` options given on the command line (not their defaults):
    they would be ignored silently. ``usage`` says where they apply."""

    given = [flag for name, flag in options if typed(name)]
    if given:
        raise InvalidInputError(f"{', '.join(given)}: {usage}")


def _check_model_path(command: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """With MODEL: refuse the step graph's options and ``extra`` (those of the zoo runs)."""
    _refuse_given(
        GRAPH_ONLY + extra,
        f"only without a MODEL argument (intriguing {command} --models ... --out DIR); "
        "a MODEL is attacked here, in this process",
    )


def _run(command: str, n: int, options: dict[str, Any], common: dict[str, Any]) -> None:
    """Run ``command``'s step graph with the options every critics command shares."""
    from intriguing.experiments.backends import make_backend
    from intriguing.experiments.critics import run_critics

    _check_no_model_options(command, common)
    if common["out"] is None:
        raise InvalidInputError(f"--out is required for {command} (the run directory)")
    _check_written(common["out"], [f"{command}.json", f"{command}.md", f"figures/{command}.png"])
    _check_run(common["from_run"])
    runner = make_backend(common["backend"], address=common["address"], workers=common["workers"])
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


def _check_written(out: Path | None, names: list[str]) -> None:
    """OutputError (one line) before any work when a file the command will write into ``out``
    (``names``, relative) cannot be written there, e.g. a folder already holds its name."""
    if out is None:
        return
    refuse_folder_names(out, names)
    for name in names:
        check_output_file(out / name, created_dirs=(out,))


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


@_command("rarity", n=200)
@int_option("--samples", 1, 1_000_000, default=1000, help="Random directions per example.")
@text_option(
    "--scales",
    default="1,2,5",
    help="Radii as multiples of each example's adversarial L2 distance.",
)
@int_option(
    "--rays",
    0,
    1_000_000,
    default=100,
    help="Random directions per example for the distance to the boundary (0: skip).",
)
@choice_option(
    "--box",
    ["rescale", "clip"],
    default="rescale",
    help="rescale: exact norm along the clipped ray; clip: plain clipping (norm shrinks).",
)
@_common
def rarity(
    model: str | None,
    n: int,
    samples: int,
    scales: str,
    rays: int,
    box: str,
    seed: int,
    **common: Any,
) -> None:
    """How often does a random perturbation as large as the adversarial one change the label?

    With MODEL (zoo name, package.module:factory, file.py:factory) the first --attack-n (default
    --n) correct images of MNIST, --images or --tensors are attacked here and the first --n
    re-verified successes are measured; no --out needed.
    """
    from intriguing.analysis.rarity import BoxMode, RarityConfig

    config = RarityConfig(
        samples=samples,
        scales=_floats(scales, "scales"),
        ray_directions=rays,
        box=cast(BoxMode, box),  # a click.Choice of BOX_MODES
        seed=seed,
    )
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
    if model is not None:
        from intriguing.analysis.rarity import measure_rarity

        net, x, adv, y, meta = _model_examples("rarity", model, n, common, seed)
        result = measure_rarity(net, x, adv, y, config)
        for scale, pooled in result["pooled"].items():
            click.echo(
                f"  scale {scale}: {pooled['flips']}/{pooled['valid']} random directions flip the label"
            )
        _finish_model(command="rarity", payload={**meta, **result}, common=common)
        return
    _run("rarity", n, options, common)


@_command("recover", n=500)
@int_option("--bootstrap", 1, 1_000_000, default=2000, help="Bootstrap resamples of the AUC.")
@text_option(
    "--amplify",
    default="2",
    help="Also test the detector on adversarials pushed k times further (comma list; 'none').",
)
@_common
def recover(
    model: str | None,
    n: int,
    bootstrap: int,
    amplify: str,
    seed: int,
    **common: Any,
) -> None:
    """Attack adversarial examples back to their true label; detect them by the flip distance.

    With MODEL (zoo name, package.module:factory, file.py:factory) the examples are made here from
    MNIST, --images or --tensors, as for rarity; no --out needed.
    """
    if bootstrap < 1:
        raise InvalidInputError(f"--bootstrap must be >= 1, got {bootstrap}")
    attack = _attack(common["max_iter"], common["search_steps"])
    factors = () if amplify.strip().lower() in ("", "none") else _floats(amplify, "amplify")
    if any(not (math.isfinite(k) and k > 1.0) for k in factors):
        raise InvalidInputError(f"--amplify factors must be finite numbers > 1, got {amplify!r}")
    options = {
        "attack": attack,
        "bootstrap": bootstrap,
        "seed": seed,
        "confidence": 0.95,
        "amplify": list(factors),
    }
    if model is not None:
        from intriguing.analysis.recovery import recover_and_detect, summarise_recovery

        net, x, adv, y, meta = _model_examples("recover", model, n, common, seed)
        per = recover_and_detect(net, x, adv, y, attack=attack, amplify=tuple(factors))
        summary = summarise_recovery(per, n_resamples=bootstrap, seed=seed, confidence=0.95)
        click.echo(
            f"  recovered {summary['recovered']}/{summary['n']}; detector AUC "
            f"{summary['detector']['auc']:.3f} (95% CI {summary['detector']['auc_ci'][0]:.3f}"
            f"-{summary['detector']['auc_ci'][1]:.3f})"
        )
        per_example = {k: json_safe(v) for k, v in per.items()}  # as the zoo path stores them
        _finish_model(
            command="recover",
            payload={**meta, **summary, "per_example": per_example},
            common=common,
        )
        return
    _run("recover", n, options, common)


def _model_examples(
    command: str, spec: str, n: int, common: dict[str, Any], seed: int
) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """Adversarial examples of any MODEL made here: ``(model on CPU, x, x', labels, meta)``.

    The first --attack-n (default --n) correctly classified images are attacked (untargeted
    L-BFGS, the critics' settings); the first ``n`` successes that a fresh forward pass confirms
    and that moved are kept.
    """
    from intriguing.attacks import LBFGS
    from intriguing.cli.options import model_from_options, note_label_source, open_user_data
    from intriguing.experiments.steps import reverify
    from intriguing.inputs import choose_examples, model_device
    from intriguing.models.user import eval_mode

    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if common["models"] is not None or common["from_run"] is not None:
        raise InvalidInputError("a MODEL argument takes no --models or --from-run")
    _check_model_path(command)
    _check_written(common["out"], [f"{command}-{_slug(spec)}.json"])
    data = open_user_data(common, split=common["split"])
    net, description = model_from_options(spec, common, seed=0)
    data.fit_to(net)
    count = _attack_n(common["attack_n"], n)
    if common["attack_n"] is None and not typed("n"):  # the default takes what there is; a
        count = min(count, len(data))  # typed count above it is refused by choose_examples
    option = "n (--n)" if common["attack_n"] is None else "--attack-n"  # the count it limits
    x, y, index, label_source = choose_examples(
        net, data, count, correct_only=True, count_option=option
    )
    attack = _attack(common["max_iter"], common["search_steps"])
    attacker = LBFGS(mode="untargeted", seed=seed, **_lbfgs_settings(attack))
    device = model_device(net)
    result = attacker(net, x.to(device), y.to(device))
    note_label_source(data, label_source)  # after the checks: errors stay one line
    adv = result.adversarial.detach().cpu()
    fooled = result.success.cpu() & reverify(net, result.adversarial, y.to(device)).cpu()
    keep = (fooled & ((adv - x).flatten(1).abs().amax(1) > 0)).nonzero().flatten()[:n]
    if keep.numel() == 0:
        raise InvalidInputError(f"{spec}: the attack found no adversarial example to analyse")
    click.echo(f"{spec}: {keep.numel()} adversarial examples of {len(y)} attacked ({device})")
    meta = {
        "model": spec,
        "description": description,
        "labels_from": label_source,
        "data": dict(data.meta),
        "positions": index[keep].tolist(),
    }
    return eval_mode(net.cpu()), x[keep], adv[keep], y[keep], meta


def _finish_model(*, command: str, payload: dict[str, Any], common: dict[str, Any]) -> None:
    """Write ``payload`` to --json and to ``<out>/<command>-<model>.json`` when given."""
    from intriguing._io import atomic_write_json

    targets = [common["json_path"]]
    if common["out"] is not None:
        targets.append(common["out"] / f"{command}-{_slug(payload['model'])}.json")
    for path in (t for t in targets if t is not None):
        atomic_write_json(path, payload)
        click.echo(f"wrote {path}")


@_command(
    "curves",
    n=1000,
    n_help="Images attacked for a model the run lacks (the run's models use all their examples); "
    "with MODEL: the first N images (clean errors count as non-robust).",
)
@click.option(
    "--budget-max",
    type=float_range(0, 10, min_open=True),
    default=0.3,
    show_default=True,
    help="Largest RMS budget plotted.",
)
@int_option("--points", 2, 10_001, default=201, help="Budgets on the grid.")
@text_option(
    "--eps",
    default=None,
    help="With MODEL: budgets at which the robust accuracy is reported (in --norm units).",
    metavar="E1,E2,...",
)
@choice_option(
    "--norm",
    ["l2", "rms"],
    default="l2",
    help="With MODEL: l2 = ||x' - x||_2 in [0, 1] pixel space; rms = l2 / sqrt(values per image, C*H*W) (the paper's).",
)
@click.option(
    "--plot",
    "plot_path",
    type=output_file(".png"),
    default=None,
    help="With MODEL: write the robust-accuracy plot (PNG) here (with --out, also into it).",
)
@_common
def curves(
    model: str | None,
    n: int,
    budget_max: float,
    points: int,
    eps: str | None,
    norm: str,
    plot_path: Path | None,
    **common: Any,
) -> None:
    """Attack success rate as a function of the distortion budget, for every model.

    With MODEL (a zoo name, package.module:factory or file.py:factory): robust accuracy at every
    --eps budget at once from one minimum-norm attack on the first --n images of MNIST, --images or
    --tensors (foolbox's epsilons=[...]), as JSON (--json), a plot (--plot or --out) and a table.
    """
    if model is not None:
        _model_curves(model, n, eps, norm, plot_path, common)
        return
    if eps is not None or plot_path is not None:
        raise InvalidInputError("--eps and --plot need a MODEL (intriguing curves MODEL --eps ...)")
    _refuse_given((("norm", "--norm"),), "only with a MODEL (intriguing curves MODEL --eps ...)")
    from intriguing.experiments.critics import budgets_grid

    budgets = budgets_grid(budget_max, points)
    _run("curves", n, {"budgets": budgets, "confidence": 0.95}, common)


def _parse_eps(text: str | None) -> list[float]:
    if text is None:
        raise InvalidInputError("--eps is required with MODEL, e.g. --eps 0.5,1,2")
    values = _floats(text, "eps")
    if any(not (v >= 0 and v < float("inf")) for v in values):
        raise InvalidInputError(f"--eps {text!r}: budgets must be finite numbers >= 0")
    return sorted(set(values))


def _model_curves(
    spec: str,
    n: int,
    eps_text: str | None,
    norm: str,
    plot_path: Path | None,
    common: dict[str, Any],
) -> None:
    """``curves MODEL --eps``: robust accuracy of one model at every budget (issue 14)."""
    import torch

    from intriguing._io import atomic_write_json
    from intriguing.analysis.curves import model_robust_accuracy
    from intriguing.attacks import LBFGS
    from intriguing.cli.options import model_from_options, note_label_source, open_user_data
    from intriguing.inputs import choose_examples

    eps = _parse_eps(eps_text)
    if common["models"] is not None or common["from_run"] is not None:
        raise InvalidInputError("curves MODEL takes no --models or --from-run")
    _check_model_path(
        "curves",
        (("budget_max", "--budget-max"), ("points", "--points"), ("attack_n", "--attack-n")),
    )
    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    # --out DIR always holds the JSON and its plot as a pair (--plot FILE is a further copy): a plot
    # left in DIR by an earlier run beside this run's JSON would mix two runs' results
    _check_written(common["out"], [f"curves-{_slug(spec)}.json", f"curves-{_slug(spec)}.png"])
    torch.set_num_threads(1)
    data = open_user_data(common, split=common["split"])
    net, description = model_from_options(spec, common, seed=0)
    data.fit_to(net)
    images, labels, _, label_source = choose_examples(net, data, n, correct_only=False)
    attack = _attack(common["max_iter"], common["search_steps"])
    attacker = LBFGS(mode="untargeted", seed=common["seed"], **_lbfgs_settings(attack))
    summary, _ = model_robust_accuracy(net, images, labels, eps, norm=norm, attack=attacker)
    note_label_source(data, label_source)  # after the checks: errors stay one line
    payload = {
        "model": spec,
        "description": description,
        "labels_from": label_source,
        "data": {k: v for k, v in data.meta.items()},
        **summary,
    }
    _print_robust(payload)
    out = common["out"]
    targets = [out / f"curves-{_slug(spec)}.png"] if out is not None else []
    if plot_path is not None and plot_path not in targets:
        targets.append(plot_path)
    if targets:
        _plot_robust(payload, targets[0])  # drawn once, copied to the other place
        for target in targets[1:]:
            with atomic_path(target) as tmp:
                shutil.copyfile(targets[0], tmp)
        for target in targets:
            click.echo(f"plot: {target}")
        payload["plot"] = str(targets[-1])
    if out is not None:
        atomic_write_json(out / f"curves-{_slug(spec)}.json", payload)
        click.echo(f"results: {out / f'curves-{_slug(spec)}.json'}")
    if common["json_path"] is not None:
        atomic_write_json(common["json_path"], payload)
        click.echo(f"wrote {common['json_path']}")


def _lbfgs_settings(attack: dict[str, Any]) -> dict[str, Any]:
    """The LBFGS keyword arguments among the critics' attack settings."""
    import dataclasses

    from intriguing.attacks import LBFGSConfig

    accepted = {f.name for f in dataclasses.fields(LBFGSConfig)} | {"threads", "progress"}
    return {k: v for k, v in attack.items() if k in accepted and k not in ("mode", "seed")}


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


def _print_robust(payload: dict[str, Any]) -> None:
    click.echo(
        f"{payload['model']}: {payload['n']} images, clean accuracy "
        f"{payload['clean_accuracy']:.1%}, {payload['fooled']}/{payload['attacked']} fooled "
        f"(norm {payload['norm']}; an upper bound on the robust accuracy)"
    )
    for e, acc, lo, hi in zip(
        payload["eps"],
        payload["robust_accuracy"],
        payload["ci_low"],
        payload["ci_high"],
        strict=True,
    ):
        click.echo(f"  eps {e:<10g} robust accuracy {acc:6.1%}  [{lo:.1%}, {hi:.1%}]")


def _plot_robust(payload: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from intriguing.report.plotting import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.axhline(payload["clean_accuracy"], ls="--", color="grey", label="clean accuracy")
    ax.plot(payload["eps"], payload["robust_accuracy"], marker="o", label="robust accuracy")
    ax.legend(loc="upper right")
    ax.fill_between(payload["eps"], payload["ci_low"], payload["ci_high"], alpha=0.2)
    ax.set_xlabel(f"budget eps ({payload['norm']})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{payload['model']} (n = {payload['n']})")
    save_figure(fig, path)
