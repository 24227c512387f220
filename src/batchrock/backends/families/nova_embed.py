"""Amazon Nova Multimodal Embeddings (``amazon.nova-2-multimodal-embeddings-v1:0``).

Request (AWS's Nova user guide, embeddings-schema; service-facts §9.3)::

    {"schemaVersion": "nova-multimodal-embed-v1",          # optional, the default
     "taskType": "SINGLE_EMBEDDING",
     "singleEmbeddingParams": {
         "embeddingPurpose": "GENERIC_INDEX" | "TEXT_RETRIEVAL" | ...,
         "embeddingDimension": 256 | 384 | 1024 | 3072,    # default 3072
         one of "text": {"truncationMode": START|END|NONE, "value" | "source"},
                "image": {"format", "source", "detailLevel"?},
                "audio": {"format", "source"},
                "video": {"format", "source", "embeddingMode": AUDIO_VIDEO_COMBINED|..._SEPARATE}}}

A ``source`` is ``{"bytes": base64}`` or ``{"s3Location": {"uri", "bucketOwner"?}}``.
``SEGMENTED_EMBEDDING`` is served only asynchronously (StartAsyncInvoke), so a batch record
asking for it is refused. Response: ``{"embeddings": [{"embeddingType", "embedding"}]}``, one
entry a vector (two for a video embedded with ``AUDIO_VIDEO_SEPARATE``). The type names of
combined video and the exact refusal wordings are **unconfirmed**.
"""

from __future__ import annotations

from typing import Any

from batchrock.backends.families.base import EmbedFamily
from batchrock.backends.families.media import s3_location
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import EmbedAnswer, EmbedRequest, MediaRef

_PURPOSES = (
    "GENERIC_INDEX",
    "GENERIC_RETRIEVAL",
    "TEXT_RETRIEVAL",
    "IMAGE_RETRIEVAL",
    "VIDEO_RETRIEVAL",
    "DOCUMENT_RETRIEVAL",
    "AUDIO_RETRIEVAL",
    "CLASSIFICATION",
    "CLUSTERING",
)
_DIMENSIONS = (256, 384, 1024, 3072)
_FORMATS = {
    "image": ("png", "jpeg", "gif", "webp"),
    "audio": ("mp3", "wav", "ogg"),
    "video": ("mp4", "mov", "mkv", "webm", "flv", "mpeg", "mpg", "wmv", "3gp"),
}
_MEDIA_KEYS = {
    "text": frozenset({"truncationMode", "value", "source"}),
    "image": frozenset({"format", "source", "detailLevel"}),
    "audio": frozenset({"format", "source"}),
    "video": frozenset({"format", "source", "embeddingMode"}),
}
_PARAMS = frozenset({"embeddingPurpose", "embeddingDimension", *_MEDIA_KEYS})
_SOURCE = frozenset({"bytes", "s3Location"})


class NovaEmbed(EmbedFamily):
    name = "amazon-nova-embed"
    default_dimensions = 3072
    _top = frozenset({"schemaVersion", "taskType", "singleEmbeddingParams"})

    def parse(self, body: dict[str, Any]) -> EmbedRequest:
        if type(body) is dict and body.get("taskType") == "SEGMENTED_EMBEDDING":
            raise BodyError(
                "taskType SEGMENTED_EMBEDDING is only supported by asynchronous invocation "
                "(StartAsyncInvoke); a batch inference record takes SINGLE_EMBEDDING."
            )
        c = Checker()
        c.top(body, ("taskType", "singleEmbeddingParams"), self._top)
        c.string(body, "schemaVersion", "#", enum=("nova-multimodal-embed-v1",))
        c.string(body, "taskType", "#", enum=("SINGLE_EMBEDDING",))
        params: Any = body.get("singleEmbeddingParams")
        path = "#/singleEmbeddingParams"
        if params is None:
            c.done()  # reported missing by c.top
        if not c.obj(params, path, ("embeddingPurpose",), _PARAMS):
            c.done()
            raise BodyError(c.message())  # not an object: nothing more to check
        c.string(params, "embeddingPurpose", path, enum=_PURPOSES)
        dimensions = params.get("embeddingDimension")
        if dimensions is not None:
            if type(dimensions) is not int:
                c.type_error(f"{path}/embeddingDimension", "Integer", dimensions)
            elif dimensions not in _DIMENSIONS:
                c.fail(f"{path}/embeddingDimension", f"{dimensions} is not a valid enum value")
        kinds = [kind for kind in _MEDIA_KEYS if kind in params]
        if len(kinds) != 1:
            c.fail(path, "exactly one of [text, image, audio, video] must be given")
            c.done()
        kind = kinds[0]
        where = f"{path}/{kind}"
        media = params[kind]
        text = ""
        data: str | None = None
        refs: list[MediaRef] = []
        outputs: tuple[str, ...] = (kind.upper(),)
        required: tuple[str, ...] = ("truncationMode",)
        if kind != "text":
            required = ("format", "source")
        if kind == "video":
            required = ("format", "source", "embeddingMode")
        if c.obj(media, where, required, _MEDIA_KEYS[kind]):
            if kind == "text":
                c.string(media, "truncationMode", where, enum=("START", "END", "NONE"))
                if (media.get("value") is None) == (media.get("source") is None):
                    c.fail(where, "exactly one of [value, source] must be given")
                text = c.string(media, "value", where) or ""
            else:
                c.string(media, "format", where, enum=_FORMATS[kind])
            if kind == "image":
                c.string(media, "detailLevel", where, enum=("STANDARD_IMAGE", "DOCUMENT_IMAGE"))
            if kind == "video":
                mode = c.string(
                    media,
                    "embeddingMode",
                    where,
                    enum=("AUDIO_VIDEO_COMBINED", "AUDIO_VIDEO_SEPARATE"),
                )
                outputs = (
                    ("VIDEO", "AUDIO")
                    if mode == "AUDIO_VIDEO_SEPARATE"
                    else ("AUDIO_VIDEO_COMBINED",)
                )
            if "source" in media:
                data = _source(c, media["source"], f"{where}/source", refs)
        c.done()
        return EmbedRequest(
            text=text,
            dimensions=dimensions if type(dimensions) is int else None,
            normalize=True,
            image=data,
            media=tuple(refs),
            outputs=outputs,
        )

    def render(self, answer: EmbedAnswer, request: EmbedRequest, model_id: str) -> dict[str, Any]:
        embeddings = []
        for index, kind in enumerate(request.outputs or ("TEXT",)):
            vector = answer.vector if index == 0 else answer.by_type.get(kind, answer.vector)
            embeddings.append({"embeddingType": kind, "embedding": vector})
        return {"embeddings": embeddings}


def _source(c: Checker, source: Any, path: str, refs: list[MediaRef]) -> str | None:
    """A media ``source``: its base64 text, or its S3 URI (recorded in ``refs``)."""
    if not c.obj(source, path, (), _SOURCE):
        return None
    if ("bytes" in source) == ("s3Location" in source):
        c.fail(path, "exactly one of [bytes, s3Location] must be given")
        return None
    if "bytes" in source:
        return c.string(source, "bytes", path, min_length=1)
    return s3_location(c, source["s3Location"], f"{path}/s3Location", refs)
