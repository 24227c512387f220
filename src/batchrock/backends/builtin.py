"""The built-in model: offline, deterministic, answers every family well-formed.

It exists so the whole service can be exercised without a model server: the same record
always gets the same answer (one to six sentences picked by a hash of the input), token counts
follow the usual four-characters-a-token rule, Titan embeddings have the requested dimension
(normalized when asked, and texts sharing words point in similar directions), and a body that
does not fit its family's schema becomes the 400 record error Bedrock would write.

Knobs for exercising clients: a fixed per-record latency, an error rate (a deterministic share
of records fails with errorCode 500, the same records on every run) and a throttling rate
(each attempt is throttled with that probability; the retry layer retries, and a record still
throttled after its last retry fails with errorCode 429).

At zero latency the per-record cost is a few microseconds: everything that can be is
precomputed at import time, and the hot path avoids allocation beyond the answer itself.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import re
import zlib
from collections.abc import Awaitable, Callable

import msgspec
import orjson

from batchrock.backends.base import (
    JsonBytes,
    ModelRequest,
    ModelResult,
    NeedsAwait,
    RawAnswerer,
    RecordError,
)
from batchrock.backends.families import BodyError, ChatFamily, EmbedFamily, Family, family_for
from batchrock.backends.families.base import Quick, id_window
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    DocumentPart,
    EmbedAnswer,
    EmbedRequest,
    ImagePart,
    MediaRef,
    StopReason,
    TextPart,
    Tool,
    ToolCall,
    ToolResultPart,
    estimate_tokens,
    request_text,
)
from batchrock.backends.structured import generate, tokens_for

Sleep = Callable[[float], Awaitable[None]]
#: What a record is after validation: a quick tuple, a parsed chat request with its image
#: count, or an embedding request.
_Prepared = Quick | tuple[ChatRequest, int] | EmbedRequest

_SENTENCES = (
    "This answer comes from the batchrock built-in model.",
    "It depends only on the record's input, so the same record always gets the same text.",
    "The model reads each record and writes one answer line for it.",
    "Token counts follow the usual rule of about four characters a token.",
    "A batch job can be checked line by line against the expected output.",
    "Records keep their identifiers, so results can be joined back to the input.",
    "The service moves the job through its states while the records are answered.",
    "Every answer is counted in the manifest with its input and output tokens.",
    "When a request is throttled, the engine waits and tries again.",
    "A record that cannot be answered gets an error line instead of an output.",
    "Longer prompts cost more input tokens, and longer answers cost more output tokens.",
    "The stop reason says whether the answer ended on its own or hit the limit.",
    "Stop sequences end the answer where they first appear.",
    "Nothing here calls a real model, so the words carry no meaning of their own.",
    "Use a real backend from the models configuration for answers that matter.",
    "The output folder holds one result file for each input file.",
    "Results appear while the job is still in progress.",
    "A stopped job keeps the records it had already finished.",
    "Each family of models has its own request and response layout.",
    "Claude, Nova, Titan, Llama and Mistral bodies are all answered in their own shape.",
    "Embeddings have the size the request asks for.",
    "Retries use growing pauses with some randomness between them.",
    "A deadline bounds how long one record may take in all.",
    "Latency, errors and throttling can be injected to test the client's handling.",
)


def _build_corpus(sentences: int = 2000) -> tuple[str, list[int]]:
    """A fixed text of shuffled sentences and the offset where each sentence starts."""
    rng = random.Random(20240307)
    offsets: list[int] = []
    pieces: list[str] = []
    position = 0
    previous = ""
    for _ in range(sentences):
        sentence = rng.choice(_SENTENCES)
        while sentence == previous:
            sentence = rng.choice(_SENTENCES)
        previous = sentence
        offsets.append(position)
        pieces.append(sentence)
        position += len(sentence) + 1
    offsets.append(position)
    return " ".join(pieces) + " ", offsets


_CORPUS, _OFFSETS = _build_corpus()
#: Answers are 1 to 6 consecutive sentences.
_MAX_SENTENCES = 6
_SPAN = len(_OFFSETS) - _MAX_SENTENCES - 1
#: A pool of unit-variance floats; vectors are windows into it (no per-record RNG).
_POOL_RNG = random.Random(7)
_POOL = [_POOL_RNG.gauss(0.0, 1.0) for _ in range(8192 + 1536)]


def _cut(
    key: int, limit: int | None, stops: tuple[str, ...]
) -> tuple[str, StopReason, str | None, int]:
    """The reply for a request hashed to ``key``: 1 to 6 sentences of the corpus, cut at the
    first stop sequence found or at ``limit`` tokens. ``(text, stop reason, stop sequence,
    output tokens)``."""
    count = 1 + key % _MAX_SENTENCES
    start = (key >> 3) % _SPAN
    reply = _CORPUS[_OFFSETS[start] : _OFFSETS[start + count] - 1]
    reason: StopReason = "end"
    stop_sequence = None
    if stops:
        for stop in stops:
            at = reply.find(stop) if stop else -1
            if at >= 0:
                reply = reply[:at]
                reason = "stop"
                stop_sequence = stop
    output_tokens = (len(reply) + 3) >> 2  # estimate_tokens, inlined: per record
    if limit is not None and output_tokens > limit:
        reply = reply[: limit * 4].rstrip()
        output_tokens = limit
        reason = "length"
        stop_sequence = None
    return reply, reason, stop_sequence, output_tokens


def _media_count(request: ChatRequest) -> int:
    """Images, plus PDF pages counted in image-sized units (a page costs about as much as a
    mid-sized picture on the hosted models: 1,500 to 3,000 tokens for Claude)."""
    count = 0
    for message in request.messages:
        for part in message.parts:
            if type(part) is ImagePart:
                count += 1
            elif type(part) is DocumentPart and part.media_type == "application/pdf":
                count += _pdf_pages(part.data)
    return count


def _pdf_pages(data: str) -> int:
    """The page count of a base64 PDF (its ``/Type /Page`` objects), at least 1."""
    try:
        raw = base64.b64decode(data, validate=False)
    except ValueError:
        return 1
    return max(1, len(_PAGE.findall(raw)))


_PAGE = re.compile(rb"/Type\s*/Page(?!s)")


def _input_tokens(text: str, messages: int, images: int) -> int:
    # Chat templates cost a few tokens a message on top of the text, and a mid-sized picture
    # about 1,200 on the hosted models.
    return (((len(text) + 3) >> 2) + 3 * messages + 1200 * images) or 1


#: The smallest prompt prefix the hosted models cache (Claude Sonnet and Opus: 1,024 tokens;
#: one number for every model here, see docs/models.md).
_MIN_CACHE_TOKENS = 1024
#: Thinking when the request sets no budget (adaptive thinking): a few sentences.
_ADAPTIVE_BUDGET = 2048


def _is_rich(request: ChatRequest) -> bool:
    return bool(
        request.tools
        or request.output_schema is not None
        or request.thinking is not None
        or request.cache_prefix_tokens
    )


def _enrich(answer: ChatAnswer, request: ChatRequest, key: int) -> ChatAnswer:
    """The plain answer reshaped for what the request asks: thinking first, then a tool call
    or a JSON answer valid against the schema; prompt-cache counts when a prefix is marked."""
    limit = request.max_tokens
    used = 0
    thinking = signature = None
    if request.thinking is not None:
        budget = request.thinking.budget_tokens or _ADAPTIVE_BUDGET
        thought, _, _, used = _cut(key ^ 0x5BD1E995, budget, ())
        thinking = thought if request.thinking.display else ""
        signature = _signature(key)
    left = None if limit is None else limit - used
    text, reason, stop_sequence, output = answer.text, answer.stop_reason, answer.stop_sequence, 0
    calls: tuple[ToolCall, ...] = ()
    tool = _tool_to_call(request, key)
    if tool is not None:
        value = generate(tool.input_schema, key)
        call_tokens = tokens_for(orjson.dumps(value).decode()) + 8
        if left is not None and call_tokens > left:
            text, reason, output = "", "length", max(left, 0)
        else:
            ident = "toolu_bdrk_01" + id_window(key ^ 0x7F4A7C15, 22).decode()
            calls = (ToolCall(ident, tool.name, value),)
            text, reason, stop_sequence, output = "", "tool", None, call_tokens
    elif request.output_schema is not None:
        text = orjson.dumps(generate(request.output_schema.schema, key)).decode()
        output = tokens_for(text)
        reason, stop_sequence = "end", None
        if left is not None and output > left:
            # Cut mid-JSON, as a real model's answer is when it runs out of tokens.
            text, reason, output = text[: max(left, 0) * 3], "length", max(left, 0)
    elif left is not None and answer.output_tokens > left:
        text, reason, stop_sequence = text[: max(left, 0) * 4].rstrip(), "length", None
        output = max(left, 0)
    else:
        output = answer.output_tokens
    input_tokens, cache_write = answer.input_tokens, 0
    if request.cache_prefix_tokens >= _MIN_CACHE_TOKENS:
        # Every record writes its own cache entry: the built-in model keeps no state between
        # records, and which record of a batch would have read it is not knowable anyway.
        cache_write = min(request.cache_prefix_tokens, input_tokens - 1)
        input_tokens -= cache_write
    return ChatAnswer(
        text,
        reason,
        input_tokens,
        output + used,
        stop_sequence,
        answer.latency_ms,
        answer.id_seed,
        calls,
        thinking,
        signature,
        cache_write,
        0,
    )


def _tool_to_call(request: ChatRequest, key: int) -> Tool | None:
    """Which tool the built-in model calls: the forced one; for ``any`` one picked by the
    record's hash; for ``auto`` the first tool whose name the last user turn mentions, unless
    that turn carries tool results (the model then answers in text)."""
    tools = request.tools
    choice = request.tool_choice
    if not tools or (choice is not None and choice.kind == "none"):
        return None
    if choice is not None and choice.kind == "tool":
        return next((t for t in tools if t.name == choice.name), None)
    if choice is not None and choice.kind == "any":
        return tools[key % len(tools)]
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    if last is None or any(type(p) is ToolResultPart for p in last.parts):
        return None
    said = " ".join(p.text for p in last.parts if type(p) is TextPart)
    found = [(said.find(t.name), i) for i, t in enumerate(tools) if t.name in said]
    return tools[min(found)[1]] if found else None


def _signature(key: int) -> str:
    """A thinking block's signature: opaque base64 text, the same for the same record."""
    raw = b"".join(zlib.crc32(b"%d" % i, key & 0xFFFFFFFF).to_bytes(4, "big") for i in range(24))
    return base64.b64encode(raw).decode()


def _media(prepared: _Prepared) -> tuple[MediaRef, ...]:
    """The S3 media a prepared record names (quick tuples name none)."""
    if isinstance(prepared, EmbedRequest):
        return prepared.media
    if len(prepared) == 2:
        request = prepared[0]
        assert isinstance(request, ChatRequest)
        return request.media
    return ()


def _no_media_reader() -> ModelResult:
    return ModelResult(
        error=RecordError(
            400,
            "The record names media by S3 location, and the built-in model has no object "
            "store to read it from here (outside a batch job).",
        )
    )


def _unknown_family(model_id: str) -> ModelResult:
    return ModelResult(
        error=RecordError(
            400,
            f"The built-in model cannot tell which request format model "
            f"'{model_id}' uses, and the modelInput matches none it knows. "
            "Route the model to a backend in the models config, or use a known "
            "model id.",
        )
    )


class BuiltinModel:
    """Answers every record offline. Safe to share between jobs and tasks."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        throttle_rate: float = 0.0,
        seed: int = 0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for name, rate in (("error_rate", error_rate), ("throttle_rate", throttle_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"builtin {name} must be between 0 and 1, got {rate}")
        if latency_ms < 0:
            raise ValueError(f"builtin latency_ms must not be negative, got {latency_ms}")
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.throttle_rate = throttle_rate
        self.seed = seed
        self._latency_s = latency_ms / 1000.0
        self._latency_int = int(latency_ms)
        self._sleep = sleep
        self._rng = random.Random(seed)
        # Error draws are a pure function of the record: its threshold on a 32-bit hash.
        self._error_cut = int(error_rate * 0xFFFFFFFF)
        #: Per-record lookups that depend on little: the family of a (model id, invocation
        #: type), and the render's request for a (prompt?, limit, stops) shape. Both bounded.
        self._families: dict[tuple[str, str], Family | None] = {}
        self._shapes: dict[tuple[bool, int | None, tuple[str, ...]], ChatRequest] = {}

    def describe(self) -> str:
        return (
            f"built-in model (latency {self.latency_ms:g} ms, error rate {self.error_rate:g}, "
            f"throttle rate {self.throttle_rate:g}, seed {self.seed})"
        )

    @property
    def immediate(self) -> bool:
        """Whether every answer is ready at once (no latency, no throttling): the engine then
        calls :meth:`invoke_now` in a plain loop instead of awaiting :meth:`invoke`."""
        return not self._latency_s and not self.throttle_rate

    def invoke_now(self, request: ModelRequest) -> ModelResult:
        """The answer :meth:`invoke` gives, computed synchronously, without the latency and
        the throttling draw (so only for an :attr:`immediate` model)."""
        try:
            model_id = request.model_id
            body = request.body
            cache_key = (model_id, request.invocation_type)
            if cache_key in self._families:
                family = self._families[cache_key]
            else:
                # The id alone decides for known ids; an unknown one is sniffed per body.
                family = family_for(model_id, request.invocation_type)
                if len(self._families) < 1024:
                    self._families[cache_key] = family
            if family is None:
                family = family_for(model_id, request.invocation_type, body)
                if family is None:
                    return _unknown_family(model_id)
            if family.kind == "chat":
                assert isinstance(family, ChatFamily)
                quick = family.quick(body)
                if quick is not None:
                    return self._quick_answer(family, request, quick)
            prepared = self._prepare(family, request)
            if isinstance(prepared, ModelResult):
                return prepared
            if _media(prepared):
                if request.media is None:
                    return _no_media_reader()
                raise NeedsAwait  # the objects must be looked up: invoke does, awaiting
            return self._finish(family, request, prepared)
        except NeedsAwait:
            raise
        except Exception as exc:  # never for a record; a bug must not stop the job
            return ModelResult(
                error=RecordError(500, f"The built-in model failed: {type(exc).__name__}: {exc}")
            )

    def raw_answerer(self, model_id: str, invocation_type: str) -> RawAnswerer | None:
        """The engine's reader for records of an :attr:`immediate` model whose family has a
        typed decoder (:meth:`ChatFamily.quick_json`): it answers plain bodies straight from
        their JSON and leaves everything else, injected errors included, to
        :meth:`invoke_now`, which gives the same answer to the same body."""
        if not self.immediate:
            return None
        family = family_for(model_id, invocation_type)
        if family is None or family.kind != "chat":
            return None
        assert isinstance(family, ChatFamily)
        if type(family).quick_json is ChatFamily.quick_json:
            return None
        read, reply, shape_for, shapes = family.quick_json, self.reply, self._shape, self._shapes
        seed, error_cut, crc32 = self.seed, self._error_cut, zlib.crc32
        # A family with a response template gets the reply's parts straight in (no answer
        # object, no render call: the cost worth saving on this path); the others render.
        template = family.response_template(model_id)
        fill = template.fill_parts if template is not None else None
        id_length = template.id_length if template is not None else 0
        render = family.json_renderer(model_id)
        # A renderer that ignores the request gets a placeholder instead of a lookup.
        unread = None if family.render_reads_request else ChatRequest()

        def answer(body: JsonBytes, record_id: str) -> tuple[bytes, int, int] | None:
            quick = read(body)
            if quick is None:
                return None
            text, messages, limit, stop = quick
            key = crc32(text.encode()) ^ seed
            if error_cut and self._fails(key, record_id):
                return None
            if fill is not None:
                reply_text, reason, stop_sequence, output_tokens = _cut(key, limit, stop)
                input_tokens = _input_tokens(text, messages, 0)
                ident = id_window(key, id_length)  # what render's answer_id gives
                output = fill(ident, reply_text, reason, stop_sequence, input_tokens, output_tokens)
                return output, input_tokens, output_tokens
            reply_ = reply(text, key, messages, 0, limit, stop)
            request = unread or shapes.get((messages == 0, limit, stop))
            if request is None:
                request = shape_for(messages, limit, stop)
            return render(reply_, request), reply_.input_tokens, reply_.output_tokens

        return answer

    def _shape(self, messages: int, limit: int | None, stop: tuple[str, ...]) -> ChatRequest:
        """The request a render sees for a quick tuple, from a small cache (the renders read
        only its limits and whether it was a prompt)."""
        shape = (messages == 0, limit, stop)
        parsed = self._shapes.get(shape)
        if parsed is None:
            parsed = ChatRequest(prompt="" if messages == 0 else None, max_tokens=limit, stop=stop)
            if len(self._shapes) < 1024:
                self._shapes[shape] = parsed
        return parsed

    def _quick_answer(self, family: ChatFamily, request: ModelRequest, quick: Quick) -> ModelResult:
        """_finish for a quick tuple."""
        text, messages, limit, stop = quick
        key = zlib.crc32(text.encode()) ^ self.seed
        if self._error_cut and self._fails(key, request.record_id):
            return self._injected_error()
        answer = self.reply(text, key, messages, 0, limit, stop)
        return ModelResult(
            family.render(answer, self._shape(messages, limit, stop), request.model_id),
            None,
            answer.input_tokens,
            answer.output_tokens,
        )

    async def invoke(self, request: ModelRequest) -> ModelResult:
        if not self._latency_s and not self.throttle_rate:
            try:
                return self.invoke_now(request)
            except NeedsAwait:
                pass  # media to check: the path below
        try:
            body = request.body
            family = family_for(request.model_id, request.invocation_type, body)
            if family is None:
                return _unknown_family(request.model_id)
            prepared = self._prepare(family, request)
            if isinstance(prepared, ModelResult):
                return prepared
            refs = _media(prepared)
            if refs:
                if request.media is None:
                    return _no_media_reader()
                for ref in refs:
                    # One at a time: a record names a few, each check is bounded.
                    error = await request.media.check(ref)
                    if error is not None:
                        return ModelResult(error=error)
            if self._latency_s:
                await self._sleep(self._latency_s)
            if self.throttle_rate and self._rng.random() < self.throttle_rate:
                return ModelResult(
                    error=RecordError(
                        429, "Too many requests, please wait before trying again.", retryable=True
                    )
                )
            return self._finish(family, request, prepared)
        except Exception as exc:  # never for a record; a bug must not stop the job
            return ModelResult(
                error=RecordError(500, f"The built-in model failed: {type(exc).__name__}: {exc}")
            )

    async def aclose(self) -> None:
        return None

    # The work is split around the (optional) latency and throttling so that a zero-latency
    # record costs no extra coroutine: _prepare validates, _finish answers.

    def _prepare(self, family: Family, request: ModelRequest) -> _Prepared | ModelResult:
        if family.kind == "embed":  # cheaper than isinstance on an ABC, per record
            assert isinstance(family, EmbedFamily)
            try:
                return family.parse(request.body)
            except BodyError as exc:
                return ModelResult(error=RecordError(exc.code, exc.message))
        assert isinstance(family, ChatFamily)
        quick = family.quick(request.body)
        if quick is not None:
            # The common plain body: no neutral request to build (see ChatFamily.quick).
            return quick
        try:
            parsed = family.parse(request.body)
        except BodyError as exc:
            return ModelResult(error=RecordError(exc.code, exc.message))
        return parsed, _media_count(parsed)

    def _finish(self, family: Family, request: ModelRequest, prepared: _Prepared) -> ModelResult:
        if isinstance(prepared, EmbedRequest):
            assert isinstance(family, EmbedFamily)
            key = zlib.crc32(prepared.text.encode()) ^ self.seed
            if self._error_cut and self._fails(key, request.record_id):
                return self._injected_error()
            embedding = self.embed(prepared, family.default_dimensions)
            for kind in prepared.outputs[1:]:
                # A second vector (Nova's AUDIO_VIDEO_SEPARATE): a direction of its own.
                other = EmbedRequest(
                    f"{kind}:{prepared.text}",
                    prepared.dimensions,
                    prepared.normalize,
                    image=f"{kind}:{prepared.image}",
                )
                embedding.by_type[kind] = self.embed(other, family.default_dimensions).vector
            return ModelResult(
                output=family.render(embedding, prepared, request.model_id),
                input_tokens=embedding.input_tokens,
            )
        assert isinstance(family, ChatFamily)
        parsed: ChatRequest | None = None
        if len(prepared) == 4:
            text, messages, limit, stop = prepared
            images = 0
        else:
            parsed, images = prepared
            text = request_text(parsed)
            messages = len(parsed.messages)
            limit, stop = parsed.max_tokens, parsed.stop
        key = zlib.crc32(text.encode()) ^ self.seed
        if self._error_cut and self._fails(key, request.record_id):
            return self._injected_error()
        answer = self.reply(text, key, messages, images, limit, stop)
        if parsed is not None and _is_rich(parsed):
            answer = _enrich(answer, parsed, key)
        if getattr(family, "reasons", False):
            answer = self._with_reasoning(answer, key)
        if parsed is None:
            # What render may look at: the limits, and whether the body was a prompt (a quick
            # tuple without messages is a prompt family's).
            prompt = text if messages == 0 else None
            parsed = ChatRequest(prompt=prompt, max_tokens=limit, stop=stop)
        return ModelResult(
            output=family.render(answer, parsed, request.model_id),
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
        )

    def reply(
        self,
        text: str,
        key: int,
        messages: int,
        images: int,
        limit: int | None,
        stops: tuple[str, ...],
    ) -> ChatAnswer:
        """The answer to a request whose text hashes to ``key``."""
        reply, reason, stop_sequence, output_tokens = _cut(key, limit, stops)
        # Positional: keyword construction costs measurably more, once per record.
        return ChatAnswer(
            reply,
            reason,
            _input_tokens(text, messages, images),
            output_tokens,
            stop_sequence,
            self._latency_int,
            key,
        )

    @staticmethod
    def _with_reasoning(answer: ChatAnswer, key: int) -> ChatAnswer:
        """``answer`` with a reasoning in front (families that show theirs: gpt-oss): one
        sentence of its own, counted in the output tokens."""
        reasoning = _cut(key ^ 0x5BD1E995, None, ())[0].split(". ", 1)[0].rstrip(".") + "."
        return msgspec.structs.replace(
            answer,
            thinking=reasoning,
            output_tokens=answer.output_tokens + estimate_tokens(reasoning),
        )

    def embed(self, request: EmbedRequest, default_dimensions: int) -> EmbedAnswer:
        size = request.dimensions or default_dimensions
        vector = [0.0] * size
        # Feature hashing: each word pushes a few fixed dimensions, so texts that share words
        # get similar vectors; a small dense component keeps the vector from being sparse.
        for word in request.text.lower().split():
            h = zlib.crc32(word.encode())
            vector[h % size] += 1.0 if h & 0x100000 else -1.0
            vector[(h >> 11) % size] += 0.5 if h & 0x200000 else -0.5
        start = zlib.crc32(request.text.encode()) % 8192
        window = _POOL[start : start + size]
        vector = [v + 0.05 * w for v, w in zip(vector, window, strict=True)]
        if request.image is not None:
            # Multimodal: the same image always lands on the same direction.
            start = zlib.crc32(request.image.encode()) % 8192
            image = _POOL[start : start + size]
            vector = [v + w for v, w in zip(vector, image, strict=True)]
        if request.normalize:
            norm = math.sqrt(math.fsum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
        tokens = estimate_tokens(request.text)
        if request.image is None:
            tokens = max(1, tokens)
        return EmbedAnswer(vector=vector, input_tokens=tokens)

    # --- injected failures ------------------------------------------------------------

    def _fails(self, key: int, record_id: str) -> bool:
        mixed = zlib.crc32(record_id.encode(), key & 0xFFFFFFFF)
        return mixed < self._error_cut

    def _injected_error(self) -> ModelResult:
        return ModelResult(
            error=RecordError(
                500,
                "The built-in model failed this record on purpose "
                f"(builtin_error_rate={self.error_rate:g}).",
            )
        )
