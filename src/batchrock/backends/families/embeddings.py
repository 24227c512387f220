"""Titan Embeddings: Text G1 (``amazon.titan-embed-text-v1``), Text V2 (``...-v2:0``) and
Multimodal G1 (``amazon.titan-embed-image-v1``)."""

from __future__ import annotations

from typing import Any

from batchrock.backends.families.base import EmbedFamily
from batchrock.backends.families.schema import Checker
from batchrock.backends.neutral import EmbedAnswer, EmbedRequest


class TitanEmbedV1(EmbedFamily):
    """Only ``inputText``; the answer is a 1536-float vector and the token count."""

    name = "amazon-titan-embed-v1"
    default_dimensions = 1536
    _top = frozenset({"inputText"})

    def parse(self, body: dict[str, Any]) -> EmbedRequest:
        c = Checker()
        c.top(body, ("inputText",), self._top)
        text = c.string(body, "inputText", "#", min_length=1)
        c.done()
        return EmbedRequest(text=text or "", normalize=False)

    def render(self, answer: EmbedAnswer, request: EmbedRequest, model_id: str) -> dict[str, Any]:
        return {"embedding": answer.vector, "inputTextTokenCount": answer.input_tokens}


class TitanEmbedV2(EmbedFamily):
    """``inputText`` plus ``dimensions`` (1024, 512, 256), ``normalize``, ``embeddingTypes``."""

    name = "amazon-titan-embed-v2"
    default_dimensions = 1024
    _top = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})

    def parse(self, body: dict[str, Any]) -> EmbedRequest:
        c = Checker()
        c.top(body, ("inputText",), self._top)
        text = c.string(body, "inputText", "#", min_length=1)
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if type(dimensions) is not int:
                c.type_error("#/dimensions", "Integer", dimensions)
            elif dimensions not in (256, 512, 1024):
                c.fail("#/dimensions", f"{dimensions} is not a valid enum value")
        normalize = c.boolean(body, "normalize", "#")
        types = c.strings(body, "embeddingTypes", "#")
        for index, kind in enumerate(types):
            if kind not in ("float", "binary"):
                c.fail(f"#/embeddingTypes/{index}", f"{kind} is not a valid enum value")
        c.done()
        return EmbedRequest(
            text=text or "",
            dimensions=dimensions if type(dimensions) is int else None,
            normalize=True if normalize is None else normalize,
            types=types or ("float",),
        )

    def render(self, answer: EmbedAnswer, request: EmbedRequest, model_id: str) -> dict[str, Any]:
        by_type: dict[str, Any] = {}
        if "float" in request.types:
            by_type["float"] = answer.vector
        if "binary" in request.types:
            by_type["binary"] = answer.by_type.get("binary") or binarize(answer.vector)
        return {
            "embedding": answer.vector,
            "inputTextTokenCount": answer.input_tokens,
            "embeddingsByType": by_type,
        }


class TitanEmbedImage(EmbedFamily):
    """Multimodal: ``inputText`` and/or ``inputImage`` (base64), ``embeddingConfig`` with
    ``outputEmbeddingLength`` (256, 384, 1024); one vector for both."""

    name = "amazon-titan-embed-image"
    default_dimensions = 1024
    _top = frozenset({"inputText", "inputImage", "embeddingConfig"})

    def parse(self, body: dict[str, Any]) -> EmbedRequest:
        c = Checker()
        c.top(body, (), self._top)
        text = c.string(body, "inputText", "#", min_length=1)
        image = c.string(body, "inputImage", "#", min_length=1)
        if "inputText" not in body and "inputImage" not in body:
            c.fail("#", "required key [inputText] not found")
        size = None
        config = body.get("embeddingConfig")
        if config is not None and c.obj(config, "#/embeddingConfig", (), {"outputEmbeddingLength"}):
            size = config.get("outputEmbeddingLength")
            if size is not None and type(size) is not int:
                c.type_error("#/embeddingConfig/outputEmbeddingLength", "Integer", size)
            elif size is not None and size not in (256, 384, 1024):
                path = "#/embeddingConfig/outputEmbeddingLength"
                c.fail(path, f"{size} is not a valid enum value")
        c.done()
        return EmbedRequest(text=text or "", dimensions=size, image=image)

    def render(self, answer: EmbedAnswer, request: EmbedRequest, model_id: str) -> dict[str, Any]:
        return {
            "embedding": answer.vector,
            "inputTextTokenCount": answer.input_tokens,
            "message": None,
        }


def binarize(vector: list[float]) -> list[int]:
    """Titan's binary embedding: one 0/1 value a dimension, 1 where the float is positive."""
    return [1 if x > 0 else 0 for x in vector]
