"""The command group: lazy registration, one-line errors with exit code 2, the mnist-5k banner."""

from __future__ import annotations

import sys
import types

import click
import pytest
from click.testing import CliRunner

from intriguing.cli import main as cli_main
from intriguing.cli.options import data_options
from intriguing.errors import DataError


@pytest.fixture
def fake_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("intriguing_fake_cmds")

    @click.command()
    def fails() -> None:
        raise DataError("/x/train-images-idx3-ubyte.gz: truncated file\nsecond line never shown")

    @click.command()
    @data_options
    def which(dataset: str, data_dir: object) -> None:
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
    assert "NOT match the paper" in small.stderr
    full = CliRunner().invoke(cli_main.cli, ["which"])
    assert full.exit_code == 0 and full.stderr == ""


def test_every_registered_command_imports() -> None:
    for name in cli_main.COMMANDS:
        assert isinstance(
            cli_main.cli.get_command(click.Context(cli_main.cli), name), click.Command
        )
