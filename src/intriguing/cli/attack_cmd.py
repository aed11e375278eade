"""``intriguing attack``: minimum-distortion adversarial examples for any model (paper section 4.1).

::

    intriguing attack MODEL [--n 100] [--split test|train] [--mode untargeted|targeted]
        [--target random|next|least-likely|best|INT] [--all-images] [--batch-size 512] [--threads 1]
        [--weights FILE.safetensors] [--normalize MEANS,STDS] [--device cpu|cuda|auto]
        [--images DIR [--labels FILE] [--image-size S] [--image-mode RGB|L] | --tensors FILE]
        [--save FILE.safetensors] [--json FILE] [--dataset mnist|mnist-5k] [--data-dir DIR] [--seed 0]

MODEL is a zoo name, ``package.module:factory`` (the current directory is importable), ``file.py:
factory`` or a zoo checkpoint (:mod:`intriguing.inputs`). By default the first ``N`` images that the
model classifies correctly are attacked (Table 1 measures the distortion that takes accuracy to 0%);
images without labels take the model's predictions as labels. One probe forward checks the data
against the model first. Prints a summary and re-verifies every success with a fresh forward pass;
``--json`` writes the success rate, mean/median distortion, examples/s and gradient evaluations per
example; ``--save`` writes the full :class:`~intriguing.attacks.AttackResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from intriguing.attacks.lbfgs_config import UNTARGETED_TARGETS, LBFGSConfig
from intriguing.cli.options import (
    choice_option,
    flag_option,
    int_option,
    model_command_options,
    model_from_options,
    note_label_source,
    open_user_data,
    text_option,
)
from intriguing.cli.validation import output_file
from intriguing.errors import InvalidInputError

TARGET_HELP = (
    "Targeted: random (default), next, least-likely, best (every class, keep the smallest) or a class "
    "index (images of that class are passed over). Untargeted: omit it, or 'best' for the minimum over all targets."
)


def parse_target(text: str | None) -> str | int | None:
    """``--target`` as a chooser name or a class index."""
    if text is None:
        return None
    value = text.strip()
    if value.isdigit():
        return int(value)
    return value


def verify_successes(model: Any, result: Any) -> int:
    """How many successes a fresh forward pass confirms (prediction != label, or == target >= 0)."""
    import torch

    from intriguing.inputs import predict

    predicted = predict(model, result.adversarial)
    labels, success = result.labels.cpu(), result.success.cpu()
    targets = result.targets.cpu()
    fooled = torch.where(targets >= 0, predicted == targets, predicted != labels)
    return int((fooled & success).sum())


@click.command("attack")
@click.argument("model_name", metavar="MODEL")
@int_option("--n", default=100, help="Number of images to attack.", dest="n")
@choice_option(
    "--split", ["test", "train"], default="test", help="Which MNIST split the images come from."
)
@choice_option(
    "--mode",
    ["untargeted", "targeted"],
    default="untargeted",
    help="untargeted: any wrong class; targeted: a chosen class.",
)
@text_option("--target", default=None, help=TARGET_HELP, dest="target_text", metavar="CHOOSER|INT")
@flag_option(
    "--all-images", "Attack the first N images, also those the model already misclassifies."
)
@int_option("--batch-size", default=LBFGSConfig.batch_size, help="Examples optimised at once.")
@int_option(
    "--threads",
    default=1,
    help="CPU threads for the attack (more threads rarely help its small operations).",
)
@click.option(
    "--save",
    "save_path",
    type=output_file(".safetensors", sidecars=(".json",)),
    default=None,
    help="Write the full result (safetensors, plus a .json sidecar) to this file.",
)
@model_command_options(mode_flag="--image-mode")
def attack(
    model_name: str,
    n: int,
    split: str,
    mode: str,
    target_text: str | None,
    all_images: bool,
    batch_size: int,
    threads: int,
    save_path: Path | None,
    **params: Any,
) -> None:
    """Attack MODEL with the batched box-constrained L-BFGS attack and print a summary.

    MODEL: a zoo name, package.module:factory (run from the folder holding the module), file.py:
    factory, or a zoo checkpoint. Images: MNIST (--dataset, --split), --images DIR or --tensors FILE.
    """
    from intriguing._io import atomic_write_json
    from intriguing.attacks import LBFGS
    from intriguing.inputs import choose_examples, model_device

    target = parse_target(target_text)
    if mode == "untargeted" and target not in UNTARGETED_TARGETS:  # LBFGSConfig's rule, in flags
        raise InvalidInputError(
            f"--target {target_text} needs --mode targeted; untargeted takes no --target, or "
            "--target best (the minimum over every target class)"
        )
    attacker = LBFGS(
        mode=mode,
        target=target,
        batch_size=batch_size,
        seed=params["seed"],
        threads=threads,
    )
    data = open_user_data(params, split=split)
    model, _ = model_from_options(model_name, params)
    data.fit_to(model)
    # a fixed target class: the images of that class have nothing to attack; pass them over
    skip = target if mode == "targeted" and isinstance(target, int) else None
    images, labels, index, label_source = choose_examples(
        model, data, n, correct_only=not all_images, skip_label=skip
    )
    device = model_device(model)
    result = attacker(model, images.to(device), labels.to(device))
    note_label_source(data, label_source)  # after the checks: errors stay one line
    summary = result.summary()
    verified = verify_successes(model, result)
    where = split if data.kind == "mnist" else data.kind
    click.echo(f"{model_name}: {mode} attack on {summary['n']} {where} images ({device})")
    if skip is not None:
        click.echo(f"  images of class {skip} (the target) passed over")
    click.echo(f"  success rate        {summary['success_rate']:.1%}")
    if summary["mean_distortion"] is not None:
        click.echo(f"  mean distortion     {summary['mean_distortion']:.4f} (RMS per pixel)")
        click.echo(f"  median distortion   {summary['median_distortion']:.4f}")
    click.echo(f"  re-verified         {verified}/{int(result.success.sum())} successes")
    if verified < int(result.success.sum()):
        click.echo(
            f"Warning: only {verified} of {int(result.success.sum())} successes hold on a fresh "
            "forward pass: the model's forward is not repeatable, so the success rate is not "
            "reliable",
            err=True,
        )
    click.echo(f"  examples/s          {summary['examples_per_s']:.1f}")
    click.echo(f"  grad evals/example  {summary['grad_evals_per_example']:.1f}")
    if save_path is not None:
        result.save(save_path)
        click.echo(f"saved the result to {save_path}")
    if json_path := params["json_path"]:
        meta = {
            **{k: v for k, v in data.meta.items() if k != "kind"},
            "data": data.kind,
            "split": split if data.kind == "mnist" else None,
            "correct_only": not all_images and label_source == "labels",
            "skipped_label": skip,
            "labels_from": label_source,
            "indices": index.tolist(),
            "device": str(device),
            "normalize": params["normalize"],
            "weights": str(params["weights"]) if params["weights"] else None,
        }
        payload = {
            "model": model_name,
            **meta,
            "settings": result.settings,
            "summary": summary,
            "verified_successes": verified,
        }
        atomic_write_json(json_path, payload)
        click.echo(f"wrote {json_path}")
