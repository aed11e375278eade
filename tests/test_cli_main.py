"""The command group: lazy registration, one-line errors with exit code 2, the mnist-5k banner."""

from __future__ import annotations

import sys
import types

import click
import pytest
from click.testing import CliRunner

from intriguing.cli import main as cli_main
from intriguing.cli.options import data_options
from intriguing.data import warn_mnist5k
from intriguing.errors import DataError


@pytest.fixture
def fake_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("intriguing_fake_cmds")

    @click.command()
    def fails() -> None:
        raise DataError("/x/train-images-idx3-ubyte.gz: truncated file\nsecond line never shown")

    @click.command()
    @data_options
    @click.option("--n", type=click.IntRange(min=1), default=1)
    def which(dataset: str, data_dir: object, n: int) -> None:
        if dataset == "mnist-5k":
            for _ in range(2):  # two loads, as a command reading train and test does
                warn_mnist5k()
        click.echo(f"dataset={dataset}")

    module.fails = fails  # type: ignore[attr-defined]
    module.which = which  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "intriguing_fake_cmds", module)
    monkeypatch.setitem(cli_main.COMMANDS, "fails", "intriguing_fake_cmds:fails")
    monkeypatch.setitem(cli_main.COMMANDS, "which", "intriguing_fake_cmds:which")


def test_user_error_is_one_line_with_exit_code_2(fake_commands: None) -> None:
    result = CliRunner().invoke(cli_main.cli, ["fails"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: /x/train-images-idx3-ubyte.gz: truncated file"
    assert "Traceback" not in result.output


def test_unknown_command_and_option_exit_2() -> None:
    assert CliRunner().invoke(cli_main.cli, ["no-such-command"]).exit_code == 2
    assert CliRunner().invoke(cli_main.cli, ["zoo", "--no-such-option"]).exit_code == 2


def test_mnist5k_is_announced_on_stderr_and_mnist_is_not(fake_commands: None) -> None:
    small = CliRunner().invoke(cli_main.cli, ["which", "--dataset", "mnist-5k"])
    assert small.exit_code == 0 and "dataset=mnist-5k" in small.stdout
    assert small.stderr.count("NOT match the paper") == 1
    assert "Mnist5kWarning" not in small.stderr  # the banner replaces the warning
    full = CliRunner().invoke(cli_main.cli, ["which"])
    assert full.exit_code == 0 and full.stderr == ""


def test_mnist5k_banner_waits_for_the_data(fake_commands: None) -> None:
    """A refused option's error is the only line: the banner comes when the data is loaded."""
    bad = CliRunner().invoke(cli_main.cli, ["which", "--dataset", "mnist-5k", "--n", "0"])
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "NOT match the paper" not in bad.stderr


def test_every_registered_command_imports() -> None:
    for name in cli_main.COMMANDS:
        assert isinstance(
            cli_main.cli.get_command(click.Context(cli_main.cli), name), click.Command
        )


@pytest.mark.parametrize(("no_color", "coloured"), [("", True), ("1", False)])
def test_mnist5k_banner_honours_no_color(
    fake_commands: None, monkeypatch: pytest.MonkeyPatch, no_color: str, coloured: bool
) -> None:
    """https://no-color.org: a non-empty NO_COLOR drops the banner's colour even on a terminal."""
    monkeypatch.setenv("NO_COLOR", no_color)
    result = CliRunner().invoke(cli_main.cli, ["which", "--dataset", "mnist-5k"], color=True)
    assert "NOT match the paper" in result.stderr
    assert ("\x1b[" in result.stderr) is coloured
