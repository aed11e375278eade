"""The ``intriguing`` command: a click group whose subcommands load lazily.

Subcommands live in their own modules (``intriguing.cli.<name>``) and are imported only when run, so
``intriguing --help`` is instant and one broken optional dependency cannot break every command.
User mistakes (:class:`intriguing.errors.IntriguingError`) and bad option values (click's
``BadParameter``: out of range, unwritable output path, ...) become a one-line ``Error: ...`` on
stderr and exit code 2; click's other usage errors (unknown option, missing argument) also exit 2,
and so does a file the system refuses (permissions, a file where a folder belongs, a full disk).
Ctrl-C in any command prints one line saying how to resume and exits with 130.
"""

from __future__ import annotations

import errno
import importlib
import sys
import warnings
from typing import IO, Any

import click

from intriguing.cli.validation import guard_outputs
from intriguing.errors import IntriguingError

# name -> "module:attribute" of a click.Command; add a line to register a new subcommand.
COMMANDS: dict[str, str] = {
    "attack": "intriguing.cli.attack_cmd:attack",
    "zoo": "intriguing.cli.zoo_cmds:zoo",
    "train": "intriguing.cli.zoo_cmds:train",
    "eval": "intriguing.cli.zoo_cmds:eval_cmd",
    "data": "intriguing.cli.data_cmds:data",
    "units": "intriguing.cli.units_cmd:units",
    "spectral": "intriguing.cli.spectral_cmd:spectral",
    "reproduce": "intriguing.cli.reproduce_cmd:reproduce",
    "report": "intriguing.cli.reproduce_cmd:report",
    "figure5": "intriguing.cli.reproduce_cmd:figure5",
    "advtrain": "intriguing.cli.advtrain_cmd:advtrain",
    "classes": "intriguing.cli.classes_cmd:classes",
    "recurrent": "intriguing.cli.recurrent_cmd:recurrent",
    "rarity": "intriguing.cli.critics_cmds:rarity",
    "recover": "intriguing.cli.critics_cmds:recover",
    "curves": "intriguing.cli.critics_cmds:curves",
}


# what the file system refuses for reasons of the user's environment (permissions, a file where a
# folder is expected, a full disk): one line naming the file, as for any user mistake
REFUSED_BY_SYSTEM = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


class UserError(click.ClickException):
    """A user mistake reported as one line with exit code 2."""

    exit_code = 2


INTERRUPTED = "interrupted; rerun the same command to resume where it stopped"
STOPPED = "interrupted"  # commands that keep no run folder: a rerun starts again
# the commands whose --out run folder keeps finished steps; the critics' keep none with a MODEL
RESUMABLE = frozenset({"reproduce", "advtrain", "classes", "recurrent"})
RESUMABLE_WITHOUT_MODEL = frozenset({"rarity", "recover", "curves"})


def interrupted_message(ctx: click.Context) -> str:
    """What Ctrl-C prints: the resume hint only for a run that can resume (a critics command
    given a MODEL, written first as in every example, attacks in memory)."""
    # click 8 keeps the subcommand's name apart (its public name for it warns); click 9 in args
    words = [*getattr(ctx, "_protected_args", []), *ctx.args]
    name, rest = (words[0], words[1:]) if words else ("", [])
    with_model = bool(rest) and not rest[0].startswith("-")
    if name in RESUMABLE or (name in RESUMABLE_WITHOUT_MODEL and not with_model):
        return INTERRUPTED
    return STOPPED


class Interrupted(click.ClickException):
    """Ctrl-C: :data:`INTERRUPTED` on stderr (no ``Error:``, no click ``Aborted!``) and exit code
    130 (128 + SIGINT), as shells report an interrupted program."""

    exit_code = 130

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, file=file, err=file is None)


class LazyGroup(click.Group):
    """A group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return guard_outputs(command)  # no output may replace an input or another output

    def invoke(self, ctx: click.Context) -> Any:
        on_interrupt = interrupted_message(ctx)  # click empties the arguments once it dispatches
        try:
            return super().invoke(ctx)
        except IntriguingError as exc:
            raise UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except click.BadParameter as exc:  # a bad value (range, output path): one line, no usage
            raise UserError(exc.format_message().splitlines()[0]) from None
        except KeyboardInterrupt:  # before click's standalone mode makes it "Aborted!", exit 1
            raise Interrupted(on_interrupt) from None
        except OSError as exc:
            if exc.errno not in REFUSED_BY_SYSTEM or exc.filename is None:
                raise
            raise UserError(
                f"{exc.filename}: {exc.strerror}; check the path and its permissions (a model "
                "cache elsewhere: INTRIGUING_CACHE_DIR)"
            ) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="intriguing")
def cli() -> None:
    """Reproduce, measure and extend 'Intriguing properties of neural networks' (Szegedy et al. 2014)."""
    from intriguing.training.trainer import use_default_threads

    use_default_threads()  # one torch thread count for every command: identical numbers


def one_line_warnings() -> None:
    """Print the package's own warnings (``AttackWarning``, ...) as one ``Warning: ...`` line on
    stderr instead of Python's ``file:line: Category: message`` plus a source line; other warnings
    keep Python's format. Installed by the console script only, not on import."""
    default = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if category.__module__.startswith("intriguing."):
            text = str(message).strip()
            click.echo(f"Warning: {text.splitlines()[0] if text else category.__name__}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``intriguing`` console script."""
    one_line_warnings()
    try:
        cli.main(args=argv, prog_name="intriguing")
    except KeyboardInterrupt:  # outside a command (LazyGroup.invoke catches the rest)
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
