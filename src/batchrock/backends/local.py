"""Local models (extra ``batchrock[local]``): Hugging Face transformers text generation and
sentence-transformers embeddings, loaded from a folder on disk.

Nothing is downloaded: models load with ``local_files_only`` and the Hub is switched off, so a
route points at a folder that is already there (a ``save_pretrained`` folder, a snapshot copied
from elsewhere, or a model a package ships). Inference runs on one worker thread per backend:
the model is used by one record at a time, and the event loop stays free for everything else.

The heavy libraries are imported when a route needs them, through :func:`_import` (typed
``Any``), so the service starts and type-checks without them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from batchrock.backends.base import ModelRequest, ModelResult, RecordError
from batchrock.backends.families import BodyError, ChatFamily, EmbedFamily, family_for
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    EmbedAnswer,
    EmbedRequest,
    StopReason,
    non_text_input,
    structure_features,
)
from batchrock.backends.routing import ConfigError, Route, reject_unknown
from batchrock.settings import Settings

_EXTRA = "pip install 'batchrock[local]'"
log = logging.getLogger("batchrock.backends.local")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"the local backends need {name}: {_EXTRA}") from exc


def _offline() -> None:
    # Belt and braces with local_files_only: no library may reach for the Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class _OneThread:
    """Runs the model's calls on a single dedicated thread."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error(code: int, message: str) -> ModelResult:
    return ModelResult(error=RecordError(code, message))


class TransformersTextBackend:
    """Text generation with a causal language model (``AutoModelForCausalLM``)."""

    def __init__(self, model_path: Path, *, device: str = "cpu", default_max_tokens: int = 256):
        _offline()
        self._torch = _import("torch")
        transformers = _import("transformers")
        self.model_path = model_path
        self.default_max_tokens = default_max_tokens
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(model_path), local_files_only=True
        )
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_path), local_files_only=True
        ).to(device)
        self.model.eval()
        self.device = device
        self._thread = _OneThread("transformers")

    def describe(self) -> str:
        return f"transformers causal LM from {self.model_path} on {self.device}"

    async def aclose(self) -> None:
        self._thread.close()

    async def invoke(self, request: ModelRequest) -> ModelResult:
        family = family_for(request.model_id, request.invocation_type, request.body)
        if not isinstance(family, ChatFamily):
            return _error(
                400,
                f"Model '{request.model_id}' is routed to a text-generation model, but its "
                "modelInput is not a text-generation request.",
            )
        try:
            parsed = family.parse(request.body)
        except BodyError as exc:
            return _error(exc.code, exc.message)
        unservable = list(parsed.extras) + structure_features(parsed)
        if parsed.has_images:
            unservable.append("images")
        if unservable:
            return _error(
                400,
                f"The local model behind this route cannot serve {', '.join(unservable)}; the "
                "record was not run.",
            )
        try:
            answer = await self._thread.run(self.generate, parsed)
        except Exception as exc:  # out of memory, a token the model rejects ...
            log.exception("transformers backend failed on record %s", request.record_id)
            return _error(500, f"The local model failed: {type(exc).__name__}: {exc}")
        return ModelResult(
            output=family.render(answer, parsed, request.model_id),
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
        )

    def prompt(self, request: ChatRequest) -> str:
        """The text the model continues: the raw prompt, or the conversation rendered with the
        tokenizer's chat template (a plain "Role: text" layout when it has none)."""
        if request.prompt is not None:
            return request.prompt
        turns = []
        if request.system:
            turns.append({"role": "system", "content": request.system})
        for message in request.messages:
            text = "".join(getattr(p, "text", "") for p in message.parts)
            turns.append({"role": message.role, "content": text})
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(
                    turns, tokenize=False, add_generation_prompt=True
                )
            )
        lines = [f"{t['role'].capitalize()}: {t['content']}" for t in turns]
        return "\n".join([*lines, "Assistant:"])

    def generate(self, request: ChatRequest) -> ChatAnswer:
        torch = self._torch
        text = self.prompt(request)
        encoded = self.tokenizer(text, return_tensors="pt").to(self.device)
        input_tokens = int(encoded["input_ids"].shape[1])
        limit = request.max_tokens or self.default_max_tokens
        sampling = bool(request.temperature)
        options: dict[str, Any] = {"max_new_tokens": limit, "do_sample": sampling}
        if sampling:
            options["temperature"] = request.temperature
            if request.top_p is not None:
                options["top_p"] = request.top_p
            if request.top_k:
                options["top_k"] = request.top_k
        if request.stop:
            options["stop_strings"] = list(request.stop)
            options["tokenizer"] = self.tokenizer
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            output = self.model.generate(**encoded, pad_token_id=pad, **options)
        generated = output[0][input_tokens:]
        output_tokens = int(generated.shape[0])
        reply = self.tokenizer.decode(generated, skip_special_tokens=True)
        for stop in request.stop:
            if stop and stop in reply:
                # Bedrock leaves the stop sequence out of the answer.
                return ChatAnswer(
                    reply[: reply.index(stop)], "stop", input_tokens, output_tokens, stop
                )
        eos = self.tokenizer.eos_token_id
        ended = output_tokens > 0 and eos is not None and int(generated[-1]) == eos
        reason: StopReason = "length" if output_tokens >= limit and not ended else "end"
        return ChatAnswer(reply, reason, input_tokens, output_tokens)


class SentenceTransformersBackend:
    """Embeddings with a sentence-transformers model."""

    def __init__(self, model_path: Path, *, device: str = "cpu") -> None:
        _offline()
        library = _import("sentence_transformers")
        self.model_path = model_path
        self.device = device
        self.model = library.SentenceTransformer(
            str(model_path), device=device, local_files_only=True
        )
        # sentence-transformers 6 renamed get_sentence_embedding_dimension.
        size = getattr(self.model, "get_embedding_dimension", None)
        if size is None:
            size = self.model.get_sentence_embedding_dimension
        self.dimensions = int(size())
        self._thread = _OneThread("embeddings")

    def describe(self) -> str:
        return (
            f"sentence-transformers model from {self.model_path} on {self.device} "
            f"({self.dimensions} dimensions)"
        )

    async def aclose(self) -> None:
        self._thread.close()

    async def invoke(self, request: ModelRequest) -> ModelResult:
        family = family_for(request.model_id, request.invocation_type, request.body)
        if not isinstance(family, EmbedFamily):
            return _error(
                400,
                f"Model '{request.model_id}' is routed to an embedding model, but its "
                "modelInput is not an embedding request.",
            )
        try:
            parsed = family.parse(request.body)
        except BodyError as exc:
            return _error(exc.code, exc.message)
        assert isinstance(parsed, EmbedRequest)
        unservable = non_text_input(parsed)
        if unservable is not None:
            return _error(400, f"The local text-embedding model cannot embed {unservable}.")
        if parsed.dimensions and parsed.dimensions != self.dimensions:
            return _error(
                400,
                f"The record asks for {parsed.dimensions} dimensions but the model behind "
                f"this route returns {self.dimensions}-dimensional vectors. Leave 'dimensions' "
                "out to get the model's own size.",
            )
        try:
            answer = await self._thread.run(self.embed, parsed)
        except Exception as exc:
            log.exception("sentence-transformers backend failed on record %s", request.record_id)
            return _error(500, f"The local model failed: {type(exc).__name__}: {exc}")
        return ModelResult(
            output=family.render(answer, parsed, request.model_id),
            input_tokens=answer.input_tokens,
        )

    def embed(self, request: EmbedRequest) -> EmbedAnswer:
        vector = [float(v) for v in self.model.encode(request.text, convert_to_numpy=True)]
        if request.normalize:
            norm = math.sqrt(math.fsum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
        tokens = len(self.model.tokenizer(request.text)["input_ids"])
        return EmbedAnswer(vector, tokens)


def _model_path(route: Route, where: str) -> Path:
    raw = route.options.get("model_path")
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: 'model_path' (a folder on disk) is required")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{where}: model folder {path} does not exist")
    return path


def _device(route: Route, where: str) -> str:
    device = route.options.get("device", "cpu")
    if not isinstance(device, str):
        raise ConfigError(f"{where}: 'device' must be a string such as cpu or cuda")
    return device


def transformers_from_route(route: Route, settings: Settings) -> TransformersTextBackend:
    reject_unknown(route, {"model_path", "device", "default_max_tokens"})
    where = f"route {route.index + 1} (transformers)"
    path = _model_path(route, where)
    default_max_tokens = route.options.get("default_max_tokens", 256)
    if not isinstance(default_max_tokens, int) or default_max_tokens < 1:
        raise ConfigError(f"{where}: 'default_max_tokens' must be a positive whole number")
    try:
        return TransformersTextBackend(
            path, device=_device(route, where), default_max_tokens=default_max_tokens
        )
    except ConfigError:
        raise
    except Exception as exc:  # a folder transformers cannot load
        raise ConfigError(f"{where}: cannot load a model from {path}: {exc}") from exc


def sentence_transformers_from_route(
    route: Route, settings: Settings
) -> SentenceTransformersBackend:
    reject_unknown(route, {"model_path", "device"})
    where = f"route {route.index + 1} (sentence-transformers)"
    path = _model_path(route, where)
    try:
        return SentenceTransformersBackend(path, device=_device(route, where))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: cannot load a model from {path}: {exc}") from exc
