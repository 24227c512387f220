"""Where output goes: stdout, or AWS CLI v2's pager when stdout is a terminal.

Pager choice: ``AWS_PAGER`` > config ``cli_pager`` > ``PAGER`` > ``less``; an empty value or
``--no-cli-pager`` turns it off; ``LESS=FRX`` is set when ``LESS`` is unset. A pipe is never
paged.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator, Mapping
from typing import TextIO


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def output_stream(
    stdout: TextIO, pager: str | None, env: Mapping[str, str]
) -> Iterator[tuple[TextIO, bool]]:
    tty = _isatty(stdout)
    if not tty or not pager:
        yield stdout, tty
        stdout.flush()
        return
    child_env = dict(env)
    child_env.setdefault("LESS", "FRX")
    stdout.flush()
    proc = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, env=child_env)
    assert proc.stdin is not None
    stream = io.TextIOWrapper(
        proc.stdin, encoding=stdout.encoding or "utf-8", errors="replace", write_through=False
    )
    try:
        yield stream, tty
    finally:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stream.close()
        proc.wait()
