"""JSONL records: a byte stream in blocks of whole lines, records read from them, output lines.

Input line (Bedrock's batch format)::

    {"recordId": "CALL0000001", "modelInput": {...}}      # recordId optional

Output line: ``{"recordId", "modelInput", "modelOutput"}``, or ``"error": {"errorCode",
"errorMessage"}`` in place of ``modelOutput``. ``modelInput`` is copied from the input line
byte for byte (the user's own JSON, and no second serialisation per record).

Records are read with msgspec, a block of lines in one call: it reads ``recordId`` and finds
the exact bytes of ``modelInput`` without building the body's objects, which is most of the
cost of a record when the model is cheap. It checks JSON syntax everywhere but, inside a value
it skips, not UTF-8 or number range; the Validating pass adds the UTF-8 check
(:func:`is_utf8`), and anything msgspec refuses goes through orjson (:func:`parse_record`)
for the exact reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson

from batchrock.backends.base import DECODE_ERRORS, JsonBytes

#: A line longer than this cannot be a sensible record; refusing it bounds memory use, so no
#: input file can exhaust the service however it is shaped.
MAX_LINE_BYTES = 64 * 1024 * 1024

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: A byte order mark at the start of a file is skipped (it is not part of the first record).
UTF8_BOM = b"\xef\xbb\xbf"

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_LENGTH = 11


# gc=False: these never hold cycles (decoded JSON cannot make one), and untracked structs
# cost half as much to create.
class _Line(msgspec.Struct, gc=False):
    """A record line as the pipeline reads it: other members are ignored, as Bedrock does."""

    modelInput: msgspec.Raw
    recordId: str | None = None


class _Object(msgspec.Struct, gc=False):
    """Any JSON object (its members are skipped, not built)."""


class _CheckedLine(msgspec.Struct, gc=False):
    """What the Validating pass needs: modelInput is an object, recordId a string if any."""

    modelInput: _Object
    recordId: str | None = None


#: What the readers below raise for a line that is not JSON or not a record.
LINE_ERRORS = DECODE_ERRORS


#: A record line's ``recordId`` and the exact bytes of its ``modelInput`` (``.recordId``,
#: ``.modelInput``). ``modelInput`` may be any JSON value here; callers that need an object
#: check it (a model's typed decode does). Raises one of :data:`LINE_ERRORS` otherwise.
read_line = msgspec.json.Decoder(_Line).decode


#: The records of a block (:func:`iter_blocks`) in one call, like :data:`read_line` and
#: :data:`check_line` for each line. Blank lines are skipped without a trace, so a caller
#: compares the count with the block's lines and reads line by line when they differ.
read_lines = msgspec.json.Decoder(_Line).decode_lines
check_lines = msgspec.json.Decoder(_CheckedLine).decode_lines

#: Raises one of :data:`LINE_ERRORS` unless a line is a well-formed record, as far as the
#: syntax check described in the module docstring goes (:func:`parse_record` says why not).
check_line = msgspec.json.Decoder(_CheckedLine).decode


def is_utf8(data: bytes) -> bool:
    if data.isascii():  # most input, and ten times faster to check than decoding
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def not_utf8_reason(data: bytes) -> str | None:
    """Why a line is not UTF-8 text (completing "Line N of the input file F ..."), or
    ``None`` when it is."""
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        return (
            f"is not UTF-8 text (byte {exc.start + 1} of the line, 0x{data[exc.start]:02x}, "
            f"is not valid UTF-8; JSONL input must be UTF-8)"
        )
    return None


#: How files that are not JSONL text start: compressed files (which Bedrock does not read
#: either) and UTF-16 text (what some editors on Windows call "Unicode"). No JSONL file starts
#: so: its first line is a JSON object, possibly after a UTF-8 byte order mark or blanks.
_COMPRESSED = "batch inference reads uncompressed JSONL text only; decompress it first"
_BINARY_STARTS: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "compressed with gzip", _COMPRESSED),
    (b"BZh", "compressed with bzip2", _COMPRESSED),
    (b"\xfd7zXZ\x00", "compressed with xz", _COMPRESSED),
    (b"\x28\xb5\x2f\xfd", "compressed with zstd", _COMPRESSED),
    (b"PK\x03\x04", "a zip archive", _COMPRESSED),
    (b"\xff\xfe", "UTF-16 text", "batch inference reads UTF-8 text only; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "batch inference reads UTF-8 text only; save it as UTF-8"),
)


def binary_start(data: bytes) -> str | None:
    """Why a file whose first bytes are ``data`` is not JSONL text, completing "The input
    file F is ...", or ``None``."""
    for magic, what, advice in _BINARY_STARTS:
        if data.startswith(magic):
            shown = " ".join(f"{b:02x}" for b in magic)
            return f"{what} (it starts with the bytes {shown}): {advice}"
    return None


class LineTooLong(Exception):
    def __init__(self, line_no: int) -> None:
        super().__init__(f"line {line_no} is longer than {MAX_LINE_BYTES} bytes")
        self.line_no = line_no


#: Lines are handed on in blocks of about this size: big enough that reading a block's
#: records in one call is cheap per record, small enough to yield to the event loop often.
BLOCK_BYTES = 64 * 1024


async def iter_blocks(
    chunks: AsyncIterator[bytes], size: int = BLOCK_BYTES
) -> AsyncIterator[bytes]:
    """Regroup a chunk stream into blocks of whole lines, each ending with a newline, of
    about ``size`` bytes (a longer line is a block of its own). A final line without a
    newline gets one. Raises :class:`LineTooLong`."""
    number = 0  # lines in the blocks yielded so far
    rest = b""
    async for chunk in chunks:
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            rest += chunk
            if len(rest) > MAX_LINE_BYTES:
                raise LineTooLong(number + 1)
            continue
        data = rest + chunk[:cut] if rest else chunk
        end_of_lines = len(rest) + cut
        rest = chunk[cut:]
        pos = 0
        while pos < end_of_lines:
            end = data.rfind(b"\n", pos, pos + size) + 1
            if end <= pos:  # one line longer than size
                end = data.find(b"\n", pos) + 1
                if end - pos > MAX_LINE_BYTES + 1:
                    raise LineTooLong(number + 1)
            block = data[pos:end]
            number += block.count(b"\n")
            pos = end
            yield block
    if len(rest) > MAX_LINE_BYTES:
        raise LineTooLong(number + 1)
    if rest:
        yield rest + b"\n"


def block_lines(block: bytes) -> list[bytes]:
    """The lines of a block, without their newlines."""
    lines = block.split(b"\n")
    lines.pop()
    return lines


def is_blank(data: bytes) -> bool:
    return not data.strip()


def loads_record(data: bytes) -> dict[str, Any] | None:
    """The record on ``data`` when it is a well-formed one, else ``None`` (the fast path; call
    :func:`parse_record` for the reason)."""
    try:
        value = _loads(data)
    except _JSONDecodeError:
        return None
    if type(value) is dict and type(value.get("modelInput")) is dict:
        rid = value.get("recordId")
        if rid is None or type(rid) is str:
            return value
    return None


class BadRecord(ValueError):
    """A line that is not a record; the message says why (no file or line: callers add them)."""


def parse_record(data: bytes) -> dict[str, Any]:
    """The record on a (non-blank) line. Raises :class:`BadRecord`.

    Validation stops at the record's shape, as Bedrock's does: whether ``modelInput`` fits the
    model's request body is the model's business (a per-record error, not a failed job).
    """
    # orjson would say "str is not valid UTF-8: surrogates not allowed", which misleads.
    reason = None if data.isascii() else not_utf8_reason(data)
    if reason is not None:
        raise BadRecord(reason)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise BadRecord(f"is a JSON {_json_kind(value)}, not a JSON object")
    if "modelInput" not in value:
        raise BadRecord('has no "modelInput" field')
    if not isinstance(value["modelInput"], dict):
        raise BadRecord(
            f'has a "modelInput" that is a JSON {_json_kind(value["modelInput"])}, '
            "not a JSON object"
        )
    record_id = value.get("recordId")
    if record_id is not None and not isinstance(record_id, str):
        raise BadRecord(f'has a "recordId" that is a JSON {_json_kind(record_id)}, not a string')
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def generated_record_id(job_id: str, file_index: int, line_no: int) -> str:
    """The recordId given to a record that has none: 11 uppercase alphanumerics like Bedrock's
    examples, derived from the record's place so a resumed job gives it the same id."""
    digest = hashlib.blake2b(f"{job_id}/{file_index}/{line_no}".encode(), digest_size=8).digest()
    n = int.from_bytes(digest, "big")
    chars = []
    for _ in range(_ID_LENGTH):
        n, r = divmod(n, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[r])
    return "".join(chars)


_dumps = orjson.dumps


def output_line(record_id: str, model_input: JsonBytes, model_output: bytes) -> bytes:
    """An answered record; ``model_input`` and ``model_output`` are JSON already."""
    return b"".join(
        (
            b'{"recordId":',
            _dumps(record_id),
            b',"modelInput":',
            model_input,
            b',"modelOutput":',
            model_output,
            b"}\n",
        )
    )


def error_line(record_id: str, model_input: JsonBytes | None, code: int, message: str) -> bytes:
    """A failed record; ``model_input`` is JSON already (``None`` writes ``null``: a line that
    is no longer a record)."""
    return b"".join(
        (
            b'{"recordId":',
            _dumps(record_id),
            b',"modelInput":',
            b"null" if model_input is None else model_input,
            b',"error":',
            _dumps({"errorCode": code, "errorMessage": message}),
            b"}\n",
        )
    )
