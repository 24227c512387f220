"""Reading input in blocks of whole lines, reading records from them, writing output lines
and appending them to the spool."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.engine import checkpoint, records
from batchrock.engine.records import LineTooLong, iter_blocks


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in [*cuts, len(data)]:
        yield data[start:cut]
        start = cut


def blocks_of(data: bytes, cuts: list[int], size: int = records.BLOCK_BYTES) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [block async for block in iter_blocks(_chunks(data, cuts), size)]

    return asyncio.run(collect())


def sample(lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        text = "x" * rng.choice([0, 1, 5, 80, 700])
        out.append(orjson.dumps({"recordId": f"R{i}", "modelInput": {"prompt": text}}))
        if rng.random() < 0.05:
            out.append(b"   ")
    return b"\n".join(out)


@pytest.mark.parametrize("seed", range(20))
def test_blocks_are_whole_lines_however_the_input_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    data = sample(rng.randint(1, 300), seed)
    if rng.random() < 0.5:
        data += b"\n"
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 30))))
    size = rng.choice([1, 50, 1000, records.BLOCK_BYTES])
    blocks = blocks_of(data, cuts, size)
    # Nothing lost or added, except the newline a last line without one gets.
    assert b"".join(blocks) == (data if data.endswith(b"\n") else data + b"\n")
    for block in blocks:
        assert block.endswith(b"\n")
        # A block is at most `size` bytes unless it is a single longer line.
        assert len(block) <= size or block.count(b"\n") == 1


def test_a_line_longer_than_the_limit_is_refused_with_its_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "MAX_LINE_BYTES", 100)
    ok = b'{"modelInput":{}}\n'
    long_line = b'{"modelInput":{"p":"' + b"y" * 200 + b'"}}'
    for data, cuts in (
        (ok * 3 + long_line + b"\n" + ok, [5, 60]),  # inside a chunk
        (ok * 3 + long_line + b"\n" + ok, [60, 70, 80, 90, 100, 110, 120, 130, 140, 150]),
        (ok * 3 + long_line, [60]),  # the last line, without a newline
    ):
        with pytest.raises(LineTooLong) as caught:
            blocks_of(data, cuts, size=40)
        assert caught.value.line_no == 4


def test_reading_a_block_skips_blank_lines_so_callers_compare_counts() -> None:
    block = b'{"modelInput":{"a":1}}\n\n  \n{"recordId":"r","modelInput":{"b": 2}}\n'
    parsed = records.read_lines(block)
    assert len(parsed) == 2 != block.count(b"\n")
    assert [r.recordId for r in parsed] == [None, "r"]
    assert bytes(parsed[1].modelInput) == b'{"b": 2}'


@pytest.mark.parametrize(
    "line",
    [
        b'{"recordId":"\xff","modelInput":{}}',  # not UTF-8 where it is read
        b'{"recordId":"\\ud800","modelInput":{}}',  # a lone surrogate
        b'{"modelInput":' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than msgspec recurses
        b'{"modelInput":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"recordId":5,"modelInput":{}}',
        b"[1]",
        b"",
    ],
)
def test_the_readers_refuse_what_is_not_a_record_with_one_kind_of_error(line: bytes) -> None:
    readers = (records.read_line, records.check_line)
    if line:  # decode_lines reads nothing from an empty block
        readers += (records.read_lines,)
    for read in readers:
        with pytest.raises(records.LINE_ERRORS):
            read(line)


def test_utf8_check() -> None:
    assert records.is_utf8(b'{"a":"plain"}')
    assert records.is_utf8('{"a":"é😀"}'.encode())
    assert not records.is_utf8(b'{"a":"\xff"}')
    assert not records.is_utf8(b'{"a":"\xed\xa0\x80"}')  # an encoded surrogate


def test_output_lines_carry_model_input_as_it_was_written() -> None:
    raw = records.read_line(b'{"recordId": "a", "modelInput": {"prompt" : "x",  "n": 1.50}}')
    line = records.output_line("a", raw.modelInput, b'{"ok":true}')
    assert (
        line
        == b'{"recordId":"a","modelInput":{"prompt" : "x",  "n": 1.50},"modelOutput":{"ok":true}}\n'
    )
    error = records.error_line('id "quoted"', None, 400, "bad\nthing")
    assert orjson.loads(error) == {
        "recordId": 'id "quoted"',
        "modelInput": None,
        "error": {"errorCode": 400, "errorMessage": "bad\nthing"},
    }


def test_appending_to_the_spool_survives_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.writev
    calls: list[int] = []

    def short(fd: int, buffers: Any) -> int:
        # The kernel may write less than asked: a few bytes of the first call only.
        calls.append(len(buffers))
        if len(calls) == 1:
            return real(fd, [bytes(buffers[0])[:7]])
        return real(fd, buffers)

    monkeypatch.setattr(os, "writev", short)
    lines = [f"line {i} {'z' * (i % 50)}\n".encode() for i in range(3000)]
    path = tmp_path / "spool"
    with path.open("a+b") as handle:
        checkpoint.append_durably(handle, lines)
        checkpoint.append_durably(handle, [b"last\n"])
    assert path.read_bytes() == b"".join(lines) + b"last\n"
    assert calls[:3] == [1024, 1024, 952]  # one call per batch of lines
