"""The model catalogue's data and rules (the wire behaviour: tests/api/test_catalogue.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends import cli as models_cli
from batchrock.backends.families import FAMILIES, family_for_id
from batchrock.catalogue import (
    CatalogueError,
    load_catalogue,
    parse_catalogue,
    parse_model_id,
    reported_model_id,
)
from batchrock.settings import Settings

#: Families the catalogue names that the engine does not implement yet (none since issue 15 item 2).
PLANNED: set[str] = set()


def test_the_shipped_catalogue_says_when_and_from_where() -> None:
    catalogue = load_catalogue()
    assert catalogue.date == "2026-12-01"
    assert any("batch-inference-supported" in s for s in catalogue.sources)
    assert len(catalogue.models) >= 40
    # Per-model quotas: defaults unless the data says otherwise (Nova Pro's 100 GB jobs).
    assert catalogue.models["amazon.nova-pro-v1:0"].quotas.job_size_gb == 100
    assert catalogue.models["amazon.nova-lite-v1:0"].quotas.job_size_gb == 5
    assert catalogue.models["amazon.nova-lite-v1:0"].quotas.records_per_job == 50_000


def test_every_family_in_the_catalogue_is_one_batchrock_knows_or_plans() -> None:
    for model in load_catalogue().models.values():
        assert model.family in set(FAMILIES) | PLANNED, model.id
        answered = family_for_id(model.id)
        if answered is not None and model.family not in PLANNED:
            # The engine answers a catalogued model in the catalogue's family.
            assert answered.name == model.family, model.id


def test_a_model_with_neither_regions_nor_profiles_is_refused_as_data() -> None:
    data: dict[str, Any] = {
        "meta": {"date": "2026-12-01", "sources": ["x"]},
        "defaults": {"quotas": dict(vars_of_defaults())},
        "models": [
            {
                "id": "a.b",
                "name": "B",
                "family": "mistral",
                "invocation_types": ["InvokeModel"],
                "input_modalities": ["text"],
                "regions": [],
            }
        ],
    }
    with pytest.raises(CatalogueError, match="neither Regions nor profiles"):
        parse_catalogue(data)
    data["models"][0] = {**data["models"][0], "regions": ["us-east-1"], "colour": "red"}
    with pytest.raises(CatalogueError, match="unknown key"):
        parse_catalogue(data)


def vars_of_defaults() -> dict[str, int]:
    from dataclasses import asdict

    return asdict(load_catalogue().defaults)


@pytest.mark.parametrize(
    ("model_id", "kind", "base", "geography"),
    [
        (
            "anthropic.claude-3-haiku-20240307-v1:0",
            "foundation",
            "anthropic.claude-3-haiku-20240307-v1:0",
            None,
        ),
        ("us.amazon.nova-2-lite-v1:0", "profile", "amazon.nova-2-lite-v1:0", "us"),
        ("global.anthropic.claude-sonnet-4-6", "profile", "anthropic.claude-sonnet-4-6", "global"),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0",
            "foundation",
            "amazon.nova-lite-v1:0",
            None,
        ),
        (
            "arn:aws:bedrock:us-west-2:123456789012:inference-profile/eu.amazon.nova-lite-v1:0",
            "profile",
            "amazon.nova-lite-v1:0",
            "eu",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abcd1234efgh",
            "application-profile",
            "abcd1234efgh",
            None,
        ),
        ("gpt-4o", "foundation", "gpt-4o", None),
    ],
)
def test_model_id_forms(model_id: str, kind: str, base: str, geography: str | None) -> None:
    ref = parse_model_id(model_id)
    assert ref is not None
    assert (ref.kind, ref.base_id, ref.geography) == (kind, base, geography)


def test_only_a_profile_id_is_reported_as_an_arn() -> None:
    assert (
        reported_model_id("us.amazon.nova-2-lite-v1:0", "us-west-2", "123456789012")
        == "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.amazon.nova-2-lite-v1:0"
    )
    for same in (
        "amazon.nova-2-lite-v1:0",
        "gpt-4o",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0",
    ):
        assert reported_model_id(same, "us-west-2", "123456789012") == same


def _models(argv: list[str], **settings: Any) -> tuple[int, str]:
    out = io.StringIO()
    status = models_cli.main(argv, Settings(**settings), out)
    return status, out.getvalue()


def test_batchrock_models_lists_the_catalogue_with_a_family_for_every_id() -> None:
    status, text = _models([])
    assert status == 0
    for model in load_catalogue().models.values():
        row = next(line for line in text.splitlines() if line.split()[:1] == [model.id])
        assert row.split()[1] == model.family


def test_batchrock_models_says_whether_create_accepts_an_id(tmp_path: Path) -> None:
    status, text = _models(["anthropic.claude-4-turbo-v9:0"])
    assert status == 1
    assert "refused, 'Batch inference is not supported for the requested model'" in text
    status, text = _models(["amazon.nova-2-multimodal-embeddings-v1:0", "--region", "us-west-2"])
    assert status == 1 and "not offered for batch inference this way in us-west-2" in text
    status, text = _models(["us.anthropic.claude-sonnet-4-5-20250929-v1:0"])
    assert status == 0 and "accepted in us-east-1 (Claude Sonnet 4.5" in text
    assert "family anthropic-messages" in text
    config = tmp_path / "models.toml"
    config.write_text('[[routes]]\nmodel = "my-model"\nbackend = "builtin"\n')
    status, text = _models(["my-model"], models_config=config)
    assert status == 0 and "accepted (a route matches it)" in text
    status, text = _models(["gpt-4o"], allow_any_model=True)
    assert status == 0 and "accepted (allow_any_model = true)" in text
