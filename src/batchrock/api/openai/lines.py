"""OpenAI's batch line formats, both ways, block by block (each block run off the event loop).

Input, one request per line::

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

becomes the job's record ``{"recordId": "r1", "modelInput": {...}}`` (the body's bytes as
the user wrote them, re-encoded once). Every line is checked first, with OpenAI's codes and
line numbers; a file with any bad line is refused as a whole.

The job's ``.out`` lines become OpenAI's output lines (``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}``): answered records go to the output file,
refused ones (a 4xx/5xx ``response``) and those never run (``error`` ``batch_expired``) to the
error file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

#: At most this many line errors are kept for the batch's ``errors``.
MAX_ERRORS = 100


@dataclass(slots=True)
class InputCheck:
    """The state of one input file's check, fed whole lines block after block."""

    endpoint: str
    max_requests: int
    #: Embeddings batches: at most this many inputs in all (OpenAI: 50,000).
    max_embedding_inputs: int
    line: int = 0
    requests: int = 0
    embedding_inputs: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def error(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})

    def feed(self, block: bytes) -> bytes:
        """The records of a block of whole lines (each ending with a newline)."""
        out: list[bytes] = []
        lines = block.split(b"\n")
        lines.pop()
        for data in lines:
            self.line += 1
            if self.line == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            if not data.strip():
                continue
            record = self._check(data)
            if record is not None:
                out.append(record)
        return b"".join(out)

    def _check(self, data: bytes) -> bytes | None:
        n = self.line
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error("invalid_json_line", "This line is not parseable as valid JSON.", n)
            return None
        if type(value) is not dict:
            self.error("invalid_json_line", "This line is not a JSON object.", n)
            return None
        self.requests += 1
        if self.requests > self.max_requests:
            if self.requests == self.max_requests + 1:
                self.error(
                    "too_many_tasks",
                    f"The input file holds more than the maximum of {self.max_requests} "
                    "requests per batch.",
                    n,
                )
            return None
        for name in ("custom_id", "method", "url", "body"):
            if name not in value:
                self.error(
                    "missing_required_parameter", f"Missing required parameter: '{name}'.", n, name
                )
                return None
        custom_id, body = value["custom_id"], value["body"]
        if type(custom_id) is not str or not custom_id:
            self.error("invalid_request", "'custom_id' must be a non-empty string.", n, "custom_id")
            return None
        if value["method"] != "POST":
            self.error("invalid_request", "Only the method POST is supported.", n, "method")
            return None
        if value["url"] != self.endpoint:
            self.error(
                "url_mismatch",
                f"The URL provided for this request ({value['url']!r}) does not match the "
                f"batch endpoint {self.endpoint!r}.",
                n,
                "url",
            )
            return None
        if type(body) is not dict:
            self.error("invalid_request", "'body' must be a JSON object.", n, "body")
            return None
        model = body.get("model")
        if type(model) is not str or not model:
            self.error(
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                n,
                "body.model",
            )
            return None
        if self.model is None:
            self.model = model
        elif model != self.model:
            self.error(
                "model_mismatch",
                f"The model {model!r} differs from the batch's model {self.model!r}: every "
                "request of a batch must use the same model.",
                n,
                "body.model",
            )
            return None
        if body.get("stream") is True:
            self.error(
                "invalid_request", "Streaming is not supported in batches.", n, "body.stream"
            )
            return None
        if custom_id in self._ids:
            self.error(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is used by more than one request of the file.",
                n,
                "custom_id",
            )
            return None
        self._ids.add(custom_id)
        inputs = body.get("input")
        if inputs is not None:
            self.embedding_inputs += len(inputs) if type(inputs) is list else 1
            if (
                self.embedding_inputs > self.max_embedding_inputs
                and self.endpoint == "/v1/embeddings"
            ):
                if (
                    self.embedding_inputs - (len(inputs) if type(inputs) is list else 1)
                    <= self.max_embedding_inputs
                ):
                    self.error(
                        "too_many_tasks",
                        f"An embeddings batch may hold at most {self.max_embedding_inputs} "
                        "embedding inputs in all.",
                        n,
                    )
                return None
        return (
            b'{"recordId":'
            + orjson.dumps(custom_id)
            + b',"modelInput":'
            + orjson.dumps(body)
            + b"}\n"
        )

    def finish(self) -> None:
        if self.requests == 0 and not self.errors:
            self.error("empty_file", "The input file holds no requests.", None)


class _Error(msgspec.Struct, gc=False):
    errorCode: int
    errorMessage: str


class _OutLine(msgspec.Struct, gc=False):
    recordId: str
    modelOutput: msgspec.Raw = msgspec.Raw(b"")
    error: _Error | None = None


_read_out = msgspec.json.Decoder(_OutLine).decode
_dumps = orjson.dumps

#: The error ``type`` OpenAI gives each kind of HTTP failure.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "timeout", 429: "rate_limit_error"}  # fmt: skip


def request_ids(job_id: str, custom_id: str) -> tuple[bytes, bytes]:
    """A line's ``id`` and ``request_id``, the same however often the output is made."""
    digest = hashlib.blake2b(f"{job_id}/{custom_id}".encode(), digest_size=16).hexdigest()
    return _dumps("batch_req_" + digest), _dumps("req_" + digest)


@dataclass(slots=True)
class OutputSplit:
    """Turns the job's ``.out`` lines into OpenAI's output and error lines."""

    job_id: str
    answered: int = 0
    refused: int = 0

    def feed(self, block: bytes) -> tuple[bytes, bytes]:
        good: list[bytes] = []
        bad: list[bytes] = []
        lines = block.split(b"\n")
        lines.pop()
        for data in lines:
            if not data:
                continue
            line = _read_out(data)
            ident, request_id = request_ids(self.job_id, line.recordId)
            head = b'{"id":' + ident + b',"custom_id":' + _dumps(line.recordId)
            if line.error is None and len(line.modelOutput):
                good.append(
                    head + b',"response":{"status_code":200,"request_id":' + request_id
                    + b',"body":' + bytes(line.modelOutput) + b'},"error":null}\n'
                )  # fmt: skip
                self.answered += 1
                continue
            err = line.error or _Error(500, "The model gave no answer.")
            status = err.errorCode if 400 <= err.errorCode <= 599 else 500
            body = {"error": {"message": err.errorMessage,
                              "type": _TYPES.get(status, "server_error" if status >= 500
                                                 else "invalid_request_error"),
                              "param": None, "code": None}}  # fmt: skip
            bad.append(
                head + b',"response":{"status_code":' + str(status).encode() + b',"request_id":'
                + request_id + b',"body":' + _dumps(body) + b'},"error":null}\n'
            )  # fmt: skip
            self.refused += 1
        return b"".join(good), b"".join(bad)


class _Record(msgspec.Struct, gc=False):
    recordId: str


_read_record = msgspec.json.Decoder(_Record).decode
_EXPIRED = _dumps(
    {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
)


@dataclass(slots=True)
class Unfinished:
    """The error lines of the records a job never ran (an expired batch): the job's input
    records after the first ``skip`` (its output holds those, in input order)."""

    job_id: str
    skip: int
    seen: int = 0

    def feed(self, block: bytes) -> bytes:
        out: list[bytes] = []
        lines = block.split(b"\n")
        lines.pop()
        for data in lines:
            if not data:
                continue
            self.seen += 1
            if self.seen <= self.skip:
                continue
            custom_id = _read_record(data).recordId
            ident, _ = request_ids(self.job_id, custom_id)
            out.append(
                b'{"id":' + ident + b',"custom_id":' + _dumps(custom_id)
                + b',"response":null,"error":' + _EXPIRED + b"}\n"
            )  # fmt: skip
        return b"".join(out)
