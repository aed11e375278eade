"""``intriguing attack``: minimum-distortion adversarial examples for a zoo model (paper section 4.1).

::

    intriguing attack MODEL [--n 100] [--split test|train] [--mode untargeted|targeted]
        [--target random|next|least-likely|best|INT] [--all-images] [--batch-size 512] [--threads 1]
        [--save FILE.safetensors] [--json FILE] [--dataset mnist|mnist-5k] [--data-dir DIR] [--seed 0]

MODEL is a zoo name, trained or loaded from the checkpoint cache by
:func:`intriguing.training.load_model`. By default the first ``N`` images of the split that the
model classifies correctly are attacked (Table 1 measures the distortion that takes accuracy to 0%).
Prints a summary; ``--json`` writes the success rate, mean/median distortion, examples/s and gradient
evaluations per example; ``--save`` writes the full :class:`~intriguing.attacks.AttackResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from intriguing.cli.options import data_options, json_option, seed_option
from intriguing.cli.validation import output_file
from intriguing.errors import InvalidInputError

TARGET_HELP = (
    "Targeted: random (default), next, least-likely, best (every class, keep the smallest) or a class "
    "index. Untargeted: omit it, or 'best' for the minimum over all targets."
)


def parse_target(text: str | None) -> str | int | None:
    """``--target`` as a chooser name or a class index."""
    if text is None:
        return None
    value = text.strip()
    if value.isdigit():
        return int(value)
    return value


def _load_model(name: str, dataset: str, data_dir: Path | None) -> Any:
    from intriguing.training import load_model

    return load_model(name, dataset=dataset, data_dir=data_dir)


def _select_images(
    model: Any, dataset: str, data_dir: Path | None, split: str, n: int, correct_only: bool
) -> tuple[Any, Any, dict[str, Any]]:
    """The first ``n`` images of ``split`` (those the model classifies correctly by default)."""
    import torch

    from intriguing.data import load_mnist

    data = load_mnist(data_dir, dataset)
    images, labels = data.split(split)
    if correct_only:
        keep = []
        with torch.no_grad():
            for start in range(0, len(labels), 2048):
                chunk = slice(start, start + 2048)
                keep.append(model(images[chunk]).argmax(1) == labels[chunk])
                if int(torch.cat(keep).sum()) >= n:
                    break
        mask = torch.cat(keep)
        index = mask.nonzero().squeeze(1)[:n]
    else:
        index = torch.arange(min(n, len(labels)))
    if len(index) < n:
        raise InvalidInputError(
            f"only {len(index)} suitable images in the {split} split; lower --n to at most {len(index)}"
        )
    meta = {
        "dataset": dataset,
        "split": split,
        "identity": data.identity,
        "correct_only": correct_only,
    }
    return images[index], labels[index], meta


@click.command("attack")
@click.argument("model_name", metavar="MODEL")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Number of images to attack.",
)
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="Which MNIST split the images come from.",
)
@click.option(
    "--mode",
    type=click.Choice(["untargeted", "targeted"]),
    default="untargeted",
    show_default=True,
    help="untargeted: any wrong class; targeted: a chosen class.",
)
@click.option("--target", "target_text", default=None, metavar="CHOOSER|INT", help=TARGET_HELP)
@click.option(
    "--all-images",
    is_flag=True,
    default=False,
    help="Attack the first N images, also those the model already misclassifies.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Examples optimised at once.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CPU threads for the attack (more threads rarely help its small operations).",
)
@click.option(
    "--save",
    "save_path",
    type=output_file(),
    default=None,
    help="Write the full result (safetensors, plus a .json sidecar) to this file.",
)
@data_options
@seed_option
@json_option
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
    dataset: str,
    data_dir: Path | None,
    seed: int,
    json_path: Path | None,
) -> None:
    """Attack MODEL with the batched box-constrained L-BFGS attack and print a summary."""
    from intriguing._io import atomic_write_json
    from intriguing.attacks import LBFGS

    attacker = LBFGS(
        mode=mode,
        target=parse_target(target_text),
        batch_size=batch_size,
        seed=seed,
        threads=threads,
    )
    model = _load_model(model_name, dataset, data_dir)
    images, labels, meta = _select_images(model, dataset, data_dir, split, n, not all_images)
    result = attacker(model, images, labels)
    summary = result.summary()
    click.echo(f"{model_name}: {mode} attack on {summary['n']} {split} images")
    click.echo(f"  success rate        {summary['success_rate']:.1%}")
    if summary["mean_distortion"] is not None:
        click.echo(f"  mean distortion     {summary['mean_distortion']:.4f} (RMS per pixel)")
        click.echo(f"  median distortion   {summary['median_distortion']:.4f}")
    click.echo(f"  examples/s          {summary['examples_per_s']:.1f}")
    click.echo(f"  grad evals/example  {summary['grad_evals_per_example']:.1f}")
    if save_path is not None:
        result.save(save_path)
        click.echo(f"saved the result to {save_path}")
    if json_path is not None:
        payload = {"model": model_name, **meta, "settings": result.settings, "summary": summary}
        atomic_write_json(json_path, payload)
        click.echo(f"wrote {json_path}")
