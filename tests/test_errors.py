"""errors.one_line: the one way an exception becomes part of an error line."""

from __future__ import annotations

import click
import pytest

from mobiledeploy import cli
from mobiledeploy.errors import UsageError, one_line


def test_one_line_collapses_whitespace_and_cuts():
    e = ValueError("first line\n  second\tline\n")
    assert one_line(e) == "first line second line"
    assert one_line(ValueError("x" * 500)) == "x" * 300
    assert one_line(ValueError("x" * 500), 20) == "x" * 20
    assert one_line(ValueError("x" * 500), None) == "x" * 500


def test_one_line_names_the_type_when_the_message_is_empty_or_asked():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(OSError("   \n")) == "OSError"
    assert one_line(KeyError("k"), typed=True) == "KeyError: 'k'"
    assert one_line(RuntimeError(), typed=True) == "RuntimeError"


@click.command()
def _boom():
    raise ValueError("bad thing\nhappened\n  here")


@click.command()
def _usage():
    raise UsageError("wrong flag")


@pytest.mark.parametrize("name, code, line", [
    ("boom", 1, "error: internal error: ValueError: bad thing happened here (run with --debug for the traceback)"),
    ("usage", 2, "error: wrong flag"),
])
def test_cli_error_is_one_line(monkeypatch, capsys, name, code, line):
    monkeypatch.setitem(cli.COMMANDS, name, (__name__, f"_{name}", "test double"))
    monkeypatch.delenv("MOBILEDEPLOY_DEBUG", raising=False)
    assert cli.cli.main([name], prog_name="mobiledeploy", standalone_mode=False) == code
    assert capsys.readouterr().err.splitlines()[-1] == line
