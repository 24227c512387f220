"""JSONL records: splitting a byte stream into lines, checking and rendering records.

Input line (Bedrock's batch format)::

    {"recordId": "CALL0000001", "modelInput": {...}}      # recordId optional

Output line: ``{"recordId", "modelInput", "modelOutput"}``, or ``"error": {"errorCode",
"errorMessage"}`` in place of ``modelOutput``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

#: A line longer than this cannot be a sensible record; refusing it bounds memory use, so no
#: input file can exhaust the service however it is shaped.
MAX_LINE_BYTES = 64 * 1024 * 1024

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: A byte order mark at the start of a file is skipped (it is not part of the first record).
UTF8_BOM = b"\xef\xbb\xbf"

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_LENGTH = 11


class LineTooLong(Exception):
    def __init__(self, line_no: int) -> None:
        super().__init__(f"line {line_no} is longer than {MAX_LINE_BYTES} bytes")
        self.line_no = line_no


async def iter_line_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """Split a chunk stream into lines (without newlines), one list of lines per chunk.
    A final line without a newline is a line. Raises :class:`LineTooLong`."""
    number = 0
    rest = b""
    async for chunk in chunks:
        data = rest + chunk if rest else chunk
        parts = data.split(b"\n")
        rest = parts.pop()
        if len(rest) > MAX_LINE_BYTES:
            raise LineTooLong(number + len(parts) + 1)
        if parts and max(map(len, parts)) > MAX_LINE_BYTES:
            for i, part in enumerate(parts):
                if len(part) > MAX_LINE_BYTES:
                    raise LineTooLong(number + i + 1)
        number += len(parts)
        if parts:
            yield parts
    if rest:
        yield [rest]


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


def output_line(record_id: str, model_input: Any, model_output: Any) -> bytes:
    return (
        orjson.dumps(
            {"recordId": record_id, "modelInput": model_input, "modelOutput": model_output}
        )
        + b"\n"
    )


def error_line(record_id: str, model_input: Any, code: int, message: str) -> bytes:
    return (
        orjson.dumps(
            {
                "recordId": record_id,
                "modelInput": model_input,
                "error": {"errorCode": code, "errorMessage": message},
            }
        )
        + b"\n"
    )
