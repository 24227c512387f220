"""Where output goes: stdout, or AWS CLI v2's pager when stdout is a terminal.

Pager choice: ``AWS_PAGER`` > config ``cli_pager`` > ``PAGER`` > ``less``; an empty value or
``--no-cli-pager`` turns it off; ``LESS=FRX`` is set when ``LESS`` is unset. A pipe is never
paged. The pager starts with the first byte of output, so a command that fails before
printing anything shows its error on a plain terminal.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any, TextIO


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _PagerStream(io.TextIOBase):
    """A text stream that starts the pager process on first write."""

    def __init__(self, stdout: TextIO, command: str, env: Mapping[str, str]) -> None:
        self._stdout = stdout
        self._command = command
        self._env = dict(env)
        self._env.setdefault("LESS", "FRX")
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: io.TextIOWrapper | None = None

    def write(self, text: str) -> int:
        if self._pipe is None:
            self._stdout.flush()
            self._proc = subprocess.Popen(
                self._command, shell=True, stdin=subprocess.PIPE, env=self._env
            )
            assert self._proc.stdin is not None
            self._pipe = io.TextIOWrapper(
                self._proc.stdin, encoding=self._stdout.encoding or "utf-8", errors="replace"
            )
        return self._pipe.write(text)

    def isatty(self) -> bool:
        return True

    def finish(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                self._pipe.close()
        if self._proc is not None:
            self._proc.wait()


@contextlib.contextmanager
def output_stream(
    stdout: TextIO, pager: str | None, env: Mapping[str, str]
) -> Iterator[tuple[Any, bool]]:
    tty = _isatty(stdout)
    if not tty or not pager:
        yield stdout, tty
        stdout.flush()
        return
    stream = _PagerStream(stdout, pager, env)
    try:
        yield stream, tty
    finally:
        stream.finish()
