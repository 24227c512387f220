"""Amazon Bedrock runtime backend: InvokeModel and Converse through botocore.

For jobs smaller than Bedrock's batch minimum, or to compare self-hosted models with the hosted
ones: each record becomes one on-demand call with the standard AWS credential chain
(environment, shared config and credentials files, SSO, instance roles). InvokeModel bodies go
through untouched and the model's response body is the record's ``modelOutput``; Converse
bodies become Converse calls (base64 media turned into bytes and back) and the response minus
its HTTP metadata is the output, exactly the body a batch job writes. Lines of an OpenAI batch
go as they are to models whose native body is OpenAI's, and through Converse to the others
(backends/bedrock_openai.py).

botocore's own retries are off: the shared retry layer handles throttling and 5xx the same
way as for every backend, and counts throttles for the job's metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from batchrock.backends import bedrock_openai
from batchrock.backends.base import ModelRequest, ModelResult, RecordError
from batchrock.backends.families.openai_batch import endpoint_of
from batchrock.backends.routing import ConfigError, Route, reject_unknown
from batchrock.settings import Settings

_KNOWN = {"region", "endpoint_url", "profile", "served_model", "timeout_s", "connect_timeout_s"}
#: Error codes worth another try; everything else is final.
_RETRYABLE = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "ServiceQuotaExceededException",
    }
)
#: Converse members that carry raw bytes (base64 text in a JSONL record).
_MEDIA = ("image", "document", "video", "audio")


class BedrockRuntimeBackend:
    """Calls Amazon Bedrock (or anything speaking its runtime wire) for every record."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        profile: str | None = None,
        served_model: str | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        max_workers: int = 32,
    ) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.Session(profile_name=profile, region_name=region)
        self._client = session.client(
            "bedrock-runtime",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=timeout_s,
                connect_timeout=connect_timeout_s,
                max_pool_connections=max_workers,
            ),
        )
        self.region = region
        self.endpoint_url = endpoint_url
        self.served_model = served_model
        # botocore is synchronous: calls run on a pool as wide as the route's concurrency.
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bedrock")

    def describe(self) -> str:
        where = self.endpoint_url or f"region {self.region}"
        served = f", model {self.served_model}" if self.served_model else ""
        return f"Amazon Bedrock runtime ({where}{served})"

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def invoke(self, request: ModelRequest) -> ModelResult:
        model = self.served_model or request.model_id
        loop = asyncio.get_running_loop()
        endpoint = endpoint_of(request.invocation_type)
        if endpoint is not None and not bedrock_openai.sent_as_is(model):
            return await self._openai_by_converse(endpoint, model, request)
        try:
            if request.invocation_type == "Converse":
                params = converse_params(request.body)
                response = await loop.run_in_executor(
                    self._pool, lambda: self._client.converse(modelId=model, **params)
                )
                return converse_result(response)
            body = orjson.dumps(request.body)
            response = await loop.run_in_executor(
                self._pool,
                lambda: _read_invoke(self._client, model, body),
            )
        except _BadMedia as exc:
            return ModelResult(error=RecordError(400, str(exc)))
        except Exception as exc:  # every botocore failure becomes a record error
            return ModelResult(error=record_error(exc))
        output, input_tokens, output_tokens = response
        return ModelResult(output=output, input_tokens=input_tokens, output_tokens=output_tokens)

    async def _openai_by_converse(
        self, endpoint: str, model: str, request: ModelRequest
    ) -> ModelResult:
        """An OpenAI batch line for a model whose native body is not OpenAI's: through
        Converse and back as a ``chat.completion`` (backends/bedrock_openai.py)."""
        params = bedrock_openai.converse_request(endpoint, request.body)
        if isinstance(params, RecordError):
            return ModelResult(error=params)
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(
                self._pool, lambda: self._client.converse(modelId=model, **params)
            )
        except Exception as exc:  # every botocore failure becomes a record error
            return ModelResult(error=record_error(exc))
        return bedrock_openai.chat_completion(response, request.model_id)


def _read_invoke(client: Any, model: str, body: bytes) -> tuple[Any, int, int]:
    response = client.invoke_model(
        modelId=model, body=body, contentType="application/json", accept="application/json"
    )
    output = orjson.loads(response["body"].read())
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    input_tokens = int(headers.get("x-amzn-bedrock-input-token-count", 0) or 0)
    output_tokens = int(headers.get("x-amzn-bedrock-output-token-count", 0) or 0)
    return output, input_tokens, output_tokens


class _BadMedia(ValueError):
    pass


def converse_params(body: Any) -> dict[str, Any]:
    """A Converse record body as botocore parameters: media ``bytes`` decoded from base64."""
    if not isinstance(body, dict):
        raise _BadMedia("The Converse modelInput must be a JSON object.")
    params = dict(body)
    messages = params.get("messages")
    if isinstance(messages, list):
        params["messages"] = [_decode_message(m, i) for i, m in enumerate(messages)]
    return params


def _decode_message(message: Any, index: int) -> Any:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    content = []
    for block in message["content"]:
        if isinstance(block, dict):
            for kind in _MEDIA:
                media = block.get(kind)
                if not isinstance(media, dict):
                    continue
                source = media.get("source")
                if isinstance(source, dict) and isinstance(source.get("bytes"), str):
                    try:
                        raw = base64.b64decode(source["bytes"], validate=True)
                    except (binascii.Error, ValueError) as exc:
                        raise _BadMedia(
                            f"messages[{index}]: {kind}.source.bytes is not valid base64"
                        ) from exc
                    block = {**block, kind: {**media, "source": {**source, "bytes": raw}}}
        content.append(block)
    return {**message, "content": content}


def converse_result(response: dict[str, Any]) -> ModelResult:
    output = {k: _encode(v) for k, v in response.items() if k != "ResponseMetadata"}
    usage = output.get("usage") or {}
    return ModelResult(
        output=output,
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
    )


def _encode(value: Any) -> Any:
    """Bytes in a Converse response (generated images) back to base64 text for JSON."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def record_error(exc: Exception) -> RecordError:
    """A botocore exception as the record error Bedrock's batch output would carry."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        ParamValidationError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")).split(":")[0]
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) or 500)
        message = str(error.get("Message") or code or "Bedrock runtime error")
        retryable = code in _RETRYABLE or status == 429 or status >= 500
        return RecordError(status, message, retryable=retryable)
    if isinstance(exc, ParamValidationError):
        return RecordError(400, str(exc).replace("\n", " ").strip())
    if isinstance(exc, ReadTimeoutError):
        return RecordError(408, f"Amazon Bedrock did not answer in time: {exc}", retryable=True)
    if isinstance(exc, ConnectionError):
        return RecordError(503, f"Could not reach Amazon Bedrock: {exc}", retryable=True)
    if isinstance(exc, NoCredentialsError):
        return RecordError(
            403,
            "No AWS credentials were found for the bedrock backend (environment, shared "
            "credentials file, SSO or instance role).",
        )
    return RecordError(500, f"Bedrock runtime call failed: {type(exc).__name__}: {exc}")


def from_route(route: Route, settings: Settings) -> BedrockRuntimeBackend:
    """Build the backend from a ``backend = "bedrock"`` route."""
    reject_unknown(route, _KNOWN)
    options = route.options
    where = f"route {route.index + 1} (bedrock)"
    for key in ("region", "endpoint_url", "profile", "served_model"):
        if key in options and not isinstance(options[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string")
    try:
        timeout_s = float(options.get("timeout_s", 300.0))
        connect_timeout_s = float(options.get("connect_timeout_s", 10.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: timeouts must be numbers ({exc})") from exc
    try:
        return BedrockRuntimeBackend(
            region=options.get("region", settings.default_region),
            endpoint_url=options.get("endpoint_url"),
            profile=options.get("profile"),
            served_model=options.get("served_model"),
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_workers=route.max_concurrency or 32,
        )
    except Exception as exc:  # botocore's ProfileNotFound and friends
        raise ConfigError(f"{where}: {exc}") from exc
