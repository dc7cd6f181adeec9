"""Shared helpers for the CLI tests: run the real `facesmith` app and check its error contract."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from facesmith.cli import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, one_line: bool = True) -> str:
    """Exit 1, nothing on stdout, one 'error:' line on stderr and no traceback; returns the message.

    one_line=False admits errors that list details on further lines (a missing model pack lists
    the files expected per role)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1 or not one_line, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def flat(text: str) -> str:
    """Help or table text with box-drawing characters and line breaks folded to single spaces."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())
