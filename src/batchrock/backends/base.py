"""The seam between the engine and whatever answers a record.

A backend takes one record's ``modelInput`` (already parsed JSON) and returns the
``modelOutput`` body Bedrock would have written, or a per-record error. Backends never
raise for a bad record: a record that cannot be answered is a :class:`RecordError`.
Only a backend that is broken as a whole (misconfigured, cannot start) may raise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from batchrock.backends.neutral import MediaRef
from batchrock.jobs import Counters

InvocationType = Literal["InvokeModel", "Converse"]
#: Encoded JSON: bytes, or the slice of an input line that msgspec kept as it was.
JsonBytes = bytes | msgspec.Raw
#: What a msgspec decoder raises for input that is not what it reads: malformed or
#: mistyped JSON, a string that is not UTF-8, nesting deeper than it recurses.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
#: What an immediate backend may offer for the records of one (model id, invocation type):
#: ``(modelInput as JSON, recordId) -> (modelOutput as JSON, input tokens, output tokens)``,
#: or ``None`` for a record it leaves to ``invoke_now`` (anything unusual, every error).
RawAnswerer = Callable[[JsonBytes, str], tuple[bytes, int, int] | None]


@dataclass(slots=True)
class ModelRequest:
    """One record to answer.

    Treat it as immutable (``dataclasses.replace`` makes a changed copy). It is not
    ``frozen``, as :class:`ModelResult` is not, because a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``: a microsecond a record against a
    third of one, paid in the engine and again in a worker process for every record.
    """

    #: The job's modelId, exactly as the user gave it.
    model_id: str
    #: ``InvokeModel`` (the model's native body) or ``Converse`` (the Converse body); a batch of
    #: the OpenAI-compatible API carries ``openai:<endpoint>`` (families/openai_batch.py).
    invocation_type: InvocationType
    #: The record's ``modelInput`` object.
    body: dict[str, Any]
    #: The record's ``recordId`` (for logs and deterministic outputs).
    record_id: str = ""
    #: Reads the job's media in S3 (``s3Location`` references), with the job's access; the
    #: engine gives one per job. ``None`` outside a job: such references cannot be read.
    media: MediaReader | None = None


class MediaReader(Protocol):
    """Checks media a record names by S3 location, with the access of the record's job."""

    async def check(self, ref: MediaRef) -> RecordError | None:
        """``None`` when the object exists and the job may read it, else the record's error.
        Bounded in time; never raises for a bad reference."""
        ...


class NeedsAwait(Exception):
    """Raised by ``invoke_now`` for a record it cannot answer at once (it must wait on I/O,
    such as checking an S3 media reference): the caller awaits ``invoke`` for it instead."""


@dataclass(frozen=True, slots=True)
class RecordError:
    """A per-record failure, written as ``"error": {"errorCode", "errorMessage"}``."""

    #: HTTP-style status, as Bedrock writes it (400 bad input, 429 throttled, 500 ...).
    code: int
    message: str
    #: Whether trying again may succeed (throttling, 5xx, timeouts, dropped connections).
    retryable: bool = False


@dataclass(slots=True)
class ModelResult:
    """The answer to one record: exactly one of ``output`` and ``error`` is set.

    Treat it as immutable. It is not ``frozen`` only because a frozen dataclass costs about a
    microsecond more to build, and one is built for every record.
    """

    #: The ``modelOutput`` body. Through worker processes (process_pool.py) it is an
    #: ``orjson.Fragment`` of the body's JSON instead, typed as the dict it encodes: the
    #: engine writes it with ``orjson.dumps``, which copies a Fragment as it is.
    output: dict[str, Any] | None = None
    error: RecordError | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: Free-form notes for metrics (e.g. how many retries it took).
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.output is None) == (self.error is None):
            raise ValueError("exactly one of output and error must be set")

    @property
    def ok(self) -> bool:
        return self.error is None


class ModelBackend(Protocol):
    """Answers records. Implementations must be safe to call concurrently.

    A backend whose answers are ready at once may also offer ``immediate`` (a true attribute)
    and a synchronous ``invoke_now(request) -> ModelResult`` giving what ``invoke`` gives; the
    engine then calls it in a plain loop, record after record (the built-in model does, when
    it has no latency and no throttling). Such a backend may further offer
    ``raw_answerer(model_id, invocation_type) -> RawAnswerer | None``: a reader of the
    encoded ``modelInput`` that skips building the body's Python objects.
    """

    async def invoke(self, request: ModelRequest) -> ModelResult: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Block:
    """Whole lines of a job's input file (each ends with a newline) and where they start: what
    a worker process answers at once, record by record, as the engine's pass would."""

    model_id: str
    invocation_type: str
    job_id: str
    #: The file's place among the job's input files (generated recordIds name it).
    file_index: int
    #: The number of the line before the block's first (0 at the file's start), and the
    #: offset of the block's first byte in the file.
    start_line: int
    start_offset: int
    data: bytes


@dataclass(slots=True)
class BlockAnswer:
    """A block's output lines, in input order and joined, what they count (``total`` 0), and
    where the answered lines end (the block's end, unless its pass was halted before)."""

    output: bytes
    line: int
    offset: int
    counts: Counters


#: Answers a block's records with a backend, at most ``concurrency`` at a time, in order, as
#: the engine's pass answers any record (engine/file_pass.py ``answer_block``). The engine
#: hands it to a :class:`BlockOffload` with each block: backends know nothing of output lines.
BlockAnswerer = Callable[["ModelBackend", Block, int], Awaitable[BlockAnswer]]


@runtime_checkable
class BlockOffload(Protocol):
    """A backend whose jobs' records may be answered a block at a time in worker processes
    (process_pool.py): there the whole record is answered (the line's parse, retries, the
    model's request, the output line), so the engine's part is the block's bytes both ways.
    """

    #: The worker processes that may answer blocks (sizes how many a pass keeps in flight).
    workers: int
    #: Answers the records of the blocks kept in this process, one by one.
    local: ModelBackend

    def takes_block(self) -> bool:
        """Whether the block just read goes to the workers; asked once a block (otherwise
        its records are answered here by :attr:`local`, one by one)."""
        ...

    async def answer_block(
        self, block: Block, concurrency: int, answerer: BlockAnswerer
    ) -> BlockAnswer | None:
        """The block answered by a worker process with ``answerer``, at most
        ``concurrency`` of its records at a time, or ``None`` when this process is to answer
        it after all (with :attr:`local`): the pool broke or closes, or the workers kept
        dying on it."""
        ...


Handler = Callable[[ModelRequest], Awaitable[ModelResult]]


class MockBackend:
    """A test double: answers every record with ``handler`` (httpx ``MockTransport`` style)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.calls: list[ModelRequest] = []

    async def invoke(self, request: ModelRequest) -> ModelResult:
        self.calls.append(request)
        return await self._handler(request)

    async def aclose(self) -> None:
        return None
