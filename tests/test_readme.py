"""The README works as written: its blocks, pasted in order on a fresh machine, do what it says.

Every fenced block runs in order in one bash session, as a user pastes them into one terminal:
``sh`` blocks as they are, ``python`` blocks with the ``python`` that session finds. A ``text``
block right after one is the output that block must print (compared word by word, so column
layout does not matter). A block the suite cannot run (it needs an AWS account, a GPU, or is
the suite itself) has ``<!-- readme-test: skip (why) -->`` on the line before it; any other
kind of block fails this test until it is runnable or marked.

The session starts where ``make demo`` leaves a fresh clone: a folder with ``.venv`` (here the
virtualenv running the tests) and an empty HOME, so the data dir is the default one there.
What differs from a user's machine, and why: the port (the README's 8765 becomes a free one, so
the test can run beside a real server), ``pip`` may not download (``PIP_NO_INDEX``: the test
environment already holds the clients), and after a block that starts ``batchrock serve`` in
the background the session waits until it answers, as a user sees its start-up lines first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchrock import admin
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(240)

README = REPO_ROOT / "README.md"
SKIP = re.compile(r"^<!-- readme-test: skip \((.+)\) -->$")
RUNNABLE = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python"}
MARK = "@@readme-block {}@@"


@dataclass
class Block:
    line: int  # where the fence opens, 1-based
    kind: str
    text: str
    skip: str | None = None
    expected: str | None = None


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks, each ``text`` block attached to the block before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        kind = fence.group(1)
        skip = SKIP.match(lines[start - 1]) if start else None
        content = "\n".join(body) + "\n"
        if kind == "text" and skip is None:
            assert blocks and blocks[-1].expected is None, f"README.md:{start + 1}: stray text"
            blocks[-1].expected = content
            continue
        blocks.append(Block(start + 1, kind, content, skip.group(1) if skip else None))
    return blocks


def test_every_block_is_runnable_or_marked() -> None:
    blocks = readme_blocks(README.read_text())
    unknown = [
        f"README.md:{b.line} ({b.kind or 'no kind'})"
        for b in blocks
        if not b.skip and b.kind not in RUNNABLE
    ]
    assert not unknown, f"blocks neither runnable nor marked skip: {unknown}"
    # A server in the foreground would stop a paste there: the blocks after it never run.
    foreground = [
        f"README.md:{b.line}: {line.strip()}"
        for b in blocks
        if not b.skip and RUNNABLE.get(b.kind) == "sh"
        for line in b.text.splitlines()
        if re.match(r"^\s*\S*batchrock (serve|worker)\b", line) and "&" not in line
    ]
    assert not foreground, f"servers started in the foreground: {foreground}"
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= 1, "keep blocks the suite cannot run to a minimum"
    assert sum(1 for b in blocks if not b.skip and b.kind == "python") >= 1


def _script(blocks: list[Block], port: int) -> str:
    """One bash session running the blocks in order; each announces itself on stdout."""
    health = f"http://127.0.0.1:{port}/_batchrock/health"
    wait = f"""{shlex.quote(sys.executable)} -c '
import time, urllib.request
for _ in range(1200):
    try:
        urllib.request.urlopen("{health}", timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
else:
    raise SystemExit("batchrock serve did not answer in a minute")'"""
    parts = ["set -eo pipefail"]
    for n, block in enumerate(blocks):
        parts.append(f"echo '{MARK.format(n)}'")
        body = block.text.replace("8765", str(port))
        if RUNNABLE[block.kind] == "python":
            body = f"python - <<'README_PY'\n{body}README_PY"
        parts.append(body.rstrip("\n"))
        if re.search(r"\bbatchrock serve\b[^\n]*&", body):
            parts.append(wait)
    parts.append(f"echo '{MARK.format('end')}'")
    return "\n".join(parts) + "\n"


def test_readme_blocks_work_pasted_in_order(tmp_path: Path) -> None:
    blocks = [b for b in readme_blocks(README.read_text()) if not b.skip]
    home = tmp_path / "home"
    work = tmp_path / "clone"
    home.mkdir()
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    assert (work / ".venv" / "bin" / "activate").exists(), "the tests must run in a virtualenv"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BATCHROCK_", "AWS_", "XDG_", "VIRTUAL_ENV", "PIP_"))
    }
    env.update(
        HOME=str(home),
        BATCHROCK_PORT=str(port),
        AWS_ENDPOINT_URL_BEDROCK=f"http://127.0.0.1:{port}",
        AWS_EC2_METADATA_DISABLED="true",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # Files, not pipes: the server left running in the background holds its output open.
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", _script(blocks, port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,  # one process group: the background server goes with it
        )
    try:
        proc.wait(timeout=200)
    finally:
        _end_process_group(proc)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    outputs = re.split(r"^@@readme-block (\w+)@@\n", stdout, flags=re.M)
    done = dict(zip(outputs[1::2], outputs[2::2], strict=True))
    last = [k for k in done if k != "end"][-1] if done else None
    failed = blocks[int(last)] if last is not None and "end" not in done else None
    where = f"the block at README.md:{failed.line}" if failed else "before the first block"
    assert proc.returncode == 0 and "end" in done, (
        f"{where} failed (exit {proc.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}"
    )
    for n, block in enumerate(blocks):
        if block.expected is not None:
            got = done[str(n)]
            assert got.split() == block.expected.split(), f"README.md:{block.line} printed {got!r}"
    # The README's folder for the bucket is the server's: the job's results landed there.
    data = home / ".local" / "share" / "batchrock"
    assert len(list((data / "s3" / "my-bucket" / "output").glob("*/records.jsonl.out"))) == 1
    assert (data / "batchrock.sqlite3").exists()


def _end_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the session's processes (the server stops cleanly); SIGKILL after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)  # bash itself, when it was still running
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)  # ProcessLookupError once every process has gone
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)


INLINE = re.compile(r"`(batchrock (?:serve|worker)\b[^`]*)`")


def test_inline_service_commands_are_valid() -> None:
    """Commands quoted in the prose (``batchrock serve --object-store s3 ...``) name real
    flags; synopses with ``[...]`` are not commands."""
    commands = [" ".join(m.split()) for m in INLINE.findall(README.read_text())]
    commands = [c for c in commands if "[" not in c]
    assert len(commands) >= 3
    parser = admin._parser()
    for command in commands:
        args, rest = parser.parse_known_args(shlex.split(command)[1:])
        assert not rest, f"{command}: unknown {rest}"
        assert args.command in ("serve", "worker")
