"""The ``earthgpt`` dispatcher: help, unknown commands, and that every command module is wired."""

from __future__ import annotations

import importlib

import pytest

from earthgpt import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_says_what_is_known(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "frobnicate" in err and "chat" in err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_command_modules_expose_the_protocol(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.run)
