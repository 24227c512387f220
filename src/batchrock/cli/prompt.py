"""``--cli-auto-prompt``: an interactive line editor that completes the command line.

Completions (prompt-toolkit): commands, then the operation, then the operation's options and
the global options, and the allowed values after an option with an enum (``--status-equals``,
``--output``, ``--sort-order`` ...). Enter runs the edited command line.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from batchrock.cli import cliargs
from batchrock.cli.argparser import (
    COLOR_CHOICES,
    ERROR_FORMAT_CHOICES,
    OUTPUT_CHOICES,
    SKELETON_CHOICES,
    build_main_parser,
)
from batchrock.cli.errors import PROG, CliError
from batchrock.cli.model import SERVICE_CLI_NAME, ServiceModel

_GLOBAL_VALUES: dict[str, Sequence[str]] = {
    "--output": OUTPUT_CHOICES,
    "--color": COLOR_CHOICES,
    "--cli-error-format": ERROR_FORMAT_CHOICES,
    "--cli-binary-format": ("base64", "raw-in-base64-out"),
}


def _global_options() -> list[str]:
    parser = build_main_parser([])
    return sorted(
        opt
        for action in parser._actions
        for opt in action.option_strings
        if opt not in ("--cli-auto-prompt", "--no-cli-auto-prompt")
    )


def suggestions(model: ServiceModel, words: list[str], current: str) -> list[str]:
    """What may come next after ``words`` when the word being typed is ``current``."""
    positional = [
        w
        for i, w in enumerate(words)
        if not w.startswith("-")
        and not (i and words[i - 1].startswith("--") and _takes_value(model, words, words[i - 1]))
    ]
    op_name = None
    if positional[:1] == [SERVICE_CLI_NAME] and len(positional) > 1:
        op_name = positional[1]
    elif positional and positional[0] in model.operations:
        op_name = positional[0]
    previous = words[-1] if words else ""
    values = _values_for(model, op_name, previous)
    if values is not None:
        candidates: Iterable[str] = values
    elif current.startswith("-") or op_name in model.operations:
        options = _global_options()
        if op_name in model.operations:
            table = cliargs.arg_table(model, model.operations[op_name])
            options = [a.option for a in table if not a.hidden] + options
        candidates = options
    elif not positional:
        candidates = [SERVICE_CLI_NAME, *model.operations]
    elif positional[0] == SERVICE_CLI_NAME and len(positional) == 1:
        candidates = list(model.operations)
    else:
        candidates = []
    used = set(words)
    return [c for c in candidates if (c.startswith(current) and c not in used) or c == current]


def _takes_value(model: ServiceModel, words: list[str], option: str) -> bool:
    flags = {
        "--debug",
        "--no-verify-ssl",
        "--no-paginate",
        "--no-sign-request",
        "--no-cli-pager",
        "--version",
    }
    return option not in flags


def _values_for(model: ServiceModel, op_name: str | None, option: str) -> list[str] | None:
    if option in _GLOBAL_VALUES:
        return list(_GLOBAL_VALUES[option])
    if option == "--generate-cli-skeleton":
        return list(SKELETON_CHOICES)
    if op_name in model.operations and option.startswith("--"):
        for arg in cliargs.arg_table(model, model.operations[op_name]):
            if arg.option == option and arg.shape is not None and arg.shape.get("enum"):
                return list(arg.shape["enum"])
    return None


def prompt_for_command(model: ServiceModel, argv: Sequence[str], streams: Any) -> list[str] | None:
    """Run the interactive prompt; return the command line to run, or None on Ctrl-C."""
    import sys

    if not sys.stdin.isatty():
        # prompt-toolkit's own warning, then stop: there is nobody to answer the prompt.
        streams.stderr.write(f"Warning: Input is not a terminal (fd={sys.stdin.fileno()}).\n")
        raise CliError("--cli-auto-prompt needs an interactive terminal on standard input")
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class _Completer(Completer):
        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterable[Completion]:
            text = document.text_before_cursor
            try:
                words = shlex.split(text)
            except ValueError:
                words = text.split()
            current = ""
            if words and not text.endswith(" "):
                current = words.pop()
            for word in suggestions(model, words, current):
                yield Completion(word, start_position=-len(current))

    initial = " ".join(shlex.quote(a) for a in argv if a != "--cli-auto-prompt")
    if initial:
        initial += " "
    session: PromptSession[str] = PromptSession(
        f"> {PROG} ", completer=_Completer(), complete_while_typing=True
    )
    try:
        line = session.prompt(default=initial)
    except KeyboardInterrupt:
        return None
    except EOFError as exc:
        raise CliError("The auto-prompt received end of input before a command") from exc
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise CliError(f"Could not parse the command line: {exc}") from exc
