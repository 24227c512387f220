"""Argument parsing with AWS CLI v2's rules, on top of the standard library's argparse.

Three parsers run in turn, as in AWS CLI: the main parser takes the global options wherever
they appear and the command; the service parser takes the operation; the operation parser
takes the operation's options. Each uses ``parse_known_args`` and hands what it did not know
to the next one; what the last one does not know is reported as ``Unknown options``.
argparse itself provides prefix matching (``--out text``), ``--opt=value``, "last one wins"
and the ``ambiguous option`` / ``invalid int value`` / ``required`` messages.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn

from batchrock.cli.errors import PROG, ArgumentSyntaxError

OUTPUT_CHOICES = ("json", "text", "table", "yaml", "yaml-stream", "off")
COLOR_CHOICES = ("on", "off", "auto")
ERROR_FORMAT_CHOICES = ("legacy", "json", "yaml", "text", "table", "enhanced")
SKELETON_CHOICES = ("input", "output", "yaml-input")


class CliArgParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, and words bad choices as AWS CLI v2 does."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prog", PROG)
        kwargs.setdefault("add_help", False)
        kwargs.setdefault("usage", argparse.SUPPRESS)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        raise ArgumentSyntaxError(message)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        msg = f"Found invalid choice '{value}'\n"
        close = difflib.get_close_matches(value, list(choices), cutoff=0.8)
        if close:
            msg += "\nMaybe you meant:\n" + "".join(f"\n  * {word}" for word in close)
        raise argparse.ArgumentError(action, msg)


def build_main_parser(commands: Sequence[str]) -> CliArgParser:
    p = CliArgParser()
    p.add_argument("--debug", action="store_true")
    # Not an AWS CLI option (`aws --help` is a usage error): batchrock answers it with help.
    p.add_argument("-h", "--help", dest="help_flag", action="store_true")
    p.add_argument("--endpoint-url")
    p.add_argument("--no-verify-ssl", dest="verify_ssl", action="store_false")
    p.add_argument("--no-paginate", dest="paginate", action="store_false")
    p.add_argument("--output", choices=OUTPUT_CHOICES)
    p.add_argument("--query")
    p.add_argument("--profile")
    p.add_argument("--region")
    p.add_argument("--version", action="store_true")
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto")
    p.add_argument("--no-sign-request", dest="sign_request", action="store_false")
    p.add_argument("--ca-bundle")
    p.add_argument("--cli-read-timeout")
    p.add_argument("--cli-connect-timeout")
    p.add_argument("--cli-binary-format", choices=("base64", "raw-in-base64-out"))
    p.add_argument("--no-cli-pager", action="store_true")
    p.add_argument("--cli-auto-prompt", action="store_true")
    p.add_argument("--no-cli-auto-prompt", action="store_true")
    p.add_argument("--cli-error-format", choices=ERROR_FORMAT_CHOICES)
    p.add_argument("command", choices=list(commands), nargs="?")
    return p


def build_service_parser(operations: Sequence[str]) -> CliArgParser:
    p = CliArgParser()
    p.add_argument("operation", choices=list(operations), nargs="?")
    return p


def parse_main(
    argv: Sequence[str], commands: Sequence[str]
) -> tuple[argparse.Namespace, list[str]]:
    parser = build_main_parser(commands)
    ns, rest = parser.parse_known_args(list(argv))
    return ns, rest


def missing(what: str) -> ArgumentSyntaxError:
    return ArgumentSyntaxError(f"the following arguments are required: {what}")
