"""Model families: which request/response layout a model id (or a Converse job) uses.

:func:`family_for` maps a job's ``modelId`` and ``modelInvocationType`` to a family. It
understands bare ids (``anthropic.claude-3-haiku-20240307-v1:0``), cross-region inference
profiles (``us.anthropic...``, ``global.amazon.nova-2-lite-v1:0``) and ARNs of foundation
models and inference profiles. A model in the catalogue (``batchrock.catalogue``) gets the
family the catalogue names for it; other ids of a known provider get theirs from the id's
prefix. Only for ids that say nothing (custom or imported models, application inference
profiles, ids made up for local servers) does :func:`sniff` recognise the family from the
body itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from batchrock.backends.families import openai_batch
from batchrock.backends.families.anthropic import AnthropicMessages
from batchrock.backends.families.base import ChatFamily, EmbedFamily, Family
from batchrock.backends.families.converse import Converse
from batchrock.backends.families.embeddings import TitanEmbedImage, TitanEmbedV1, TitanEmbedV2
from batchrock.backends.families.nova import NovaMessages
from batchrock.backends.families.nova_embed import NovaEmbed
from batchrock.backends.families.open_weight import DeepSeekV3, GptOss, Qwen
from batchrock.backends.families.openai_chat import OpenAIChat
from batchrock.backends.families.prompt import DeepSeek, MetaLlama, Mistral, TitanText
from batchrock.backends.families.schema import BodyError
from batchrock.catalogue import load_catalogue

__all__ = [
    "FAMILIES",
    "BodyError",
    "ChatFamily",
    "EmbedFamily",
    "Family",
    "base_model_id",
    "family_for",
    "family_for_id",
    "sniff",
]

ANTHROPIC = AnthropicMessages()
NOVA = NovaMessages()
CONVERSE = Converse()
TITAN_TEXT = TitanText()
TITAN_EMBED_V1 = TitanEmbedV1()
TITAN_EMBED_V2 = TitanEmbedV2()
TITAN_EMBED_IMAGE = TitanEmbedImage()
LLAMA = MetaLlama()
OPENAI_CHAT = OpenAIChat()
DEEPSEEK = DeepSeek()
MISTRAL = Mistral()
NOVA_EMBED = NovaEmbed()
GPT_OSS = GptOss()
QWEN = Qwen()
DEEPSEEK_V3 = DeepSeekV3()

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        ANTHROPIC,
        NOVA,
        CONVERSE,
        TITAN_TEXT,
        TITAN_EMBED_V1,
        TITAN_EMBED_V2,
        TITAN_EMBED_IMAGE,
        LLAMA,
        MISTRAL,
        OPENAI_CHAT,
        DEEPSEEK,
        NOVA_EMBED,
        GPT_OSS,
        QWEN,
        DEEPSEEK_V3,
    )
}

_PROVIDERS = frozenset(
    {
        "anthropic",
        "amazon",
        "meta",
        "mistral",
        "cohere",
        "ai21",
        "deepseek",
        "openai",
        "writer",
        "qwen",
        "zai",
        "minimax",
    }
)
#: (prefix of the base id, family), first match wins.
_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("anthropic.", ANTHROPIC),
    ("amazon.nova-2-multimodal-embeddings", NOVA_EMBED),
    ("amazon.nova", NOVA),
    ("amazon.titan-text", TITAN_TEXT),
    ("amazon.titan-tg1", TITAN_TEXT),
    ("amazon.titan-embed-text-v2", TITAN_EMBED_V2),
    ("amazon.titan-embed-text-v1", TITAN_EMBED_V1),
    ("amazon.titan-embed-g1-text", TITAN_EMBED_V1),
    ("amazon.titan-embed-image", TITAN_EMBED_IMAGE),
    ("meta.llama", LLAMA),
    ("mistral.", MISTRAL),
    ("openai.gpt-oss", GPT_OSS),
    ("openai.", OPENAI_CHAT),
    ("deepseek.r1", DEEPSEEK),
    ("deepseek.v3", DEEPSEEK_V3),
    ("qwen.", QWEN),
)


@lru_cache(maxsize=1024)
def base_model_id(model_id: str) -> str:
    """The foundation-model id inside an ARN or a cross-region inference profile id.

    ``arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0`` and
    ``us.meta.llama3-8b-instruct-v1:0`` both give ``meta.llama3-8b-instruct-v1:0``.
    """
    model = model_id
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    head, dot, rest = model.partition(".")
    if dot and head not in _PROVIDERS and rest.partition(".")[0] in _PROVIDERS:
        # A geography prefix (us., eu., apac., global. ...) of an inference profile.
        model = rest
    return model


@lru_cache(maxsize=1024)
def family_for_id(model_id: str) -> Family | None:
    """The InvokeModel family of ``model_id``: the catalogue's for a catalogued model, else
    the one its provider prefix names; ``None`` when the id says nothing."""
    catalogued = load_catalogue().get(model_id)
    if catalogued is not None and catalogued.family in FAMILIES:
        return FAMILIES[catalogued.family]
    base = base_model_id(model_id)
    for prefix, family in _PREFIXES:
        if base.startswith(prefix):
            return family
    return None


def family_for(model_id: str, invocation_type: str, body: Any = None) -> Family | None:
    """The family a record is parsed with. Converse jobs use the Converse shape for every
    model; OpenAI batch jobs the shape of their lines' endpoint (families/openai_batch.py);
    otherwise the id decides, and the body when the id is not a known one."""
    if invocation_type == "Converse":
        return CONVERSE
    endpoint = openai_batch.endpoint_of(invocation_type)
    if endpoint is not None:
        return openai_batch.BY_ENDPOINT.get(endpoint)
    family = family_for_id(model_id)
    if family is None and type(body) is dict:
        return sniff(body)
    return family


def sniff(body: dict[str, Any]) -> Family | None:
    """Recognise a family from the members of an InvokeModel body."""
    if "anthropic_version" in body:
        return ANTHROPIC
    if "messages" in body:
        messages = body["messages"]
        first = messages[0] if type(messages) is list and messages else None
        if type(first) is dict and (type(first.get("content")) is str or "max_tokens" in body):
            # Plain-string content (or max_tokens) is the OpenAI layout; Nova's is a list of
            # blocks under inferenceConfig.
            return OPENAI_CHAT
        return NOVA
    if "inputImage" in body or "embeddingConfig" in body:
        return TITAN_EMBED_IMAGE
    if "inputText" in body:
        if "textGenerationConfig" in body:
            return TITAN_TEXT
        if {"dimensions", "normalize", "embeddingTypes"} & body.keys():
            return TITAN_EMBED_V2
        return TITAN_TEXT
    if "prompt" in body:
        if "max_gen_len" in body:
            return LLAMA
        return MISTRAL if {"max_tokens", "stop", "top_k"} & body.keys() else LLAMA
    return None
