"""Per-model quotas from the catalogue decide Validating for catalogued models (issue 15).

Bedrock's batch quotas are per model (service-facts §3); the catalogue records them and the
engine validates a catalogued model's job against them. A quota setting the operator changed
wins over the catalogue (docs/models.md, "Which quota applies"); ids outside the catalogue get
the settings.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from batchrock.catalogue import Catalogue, load_catalogue, parse_catalogue
from batchrock.engine.inputs import model_quotas
from batchrock.jobs import JobStatus as S
from batchrock.settings import Settings
from tests.engine.harness import FAST, Harness, jsonl, records

SMALL = "test.small-quota-v1:0"


def small_catalogue(**quotas: int) -> Catalogue:
    """The shipped catalogue's defaults with one extra model whose quotas are tiny."""
    shipped = load_catalogue()
    return parse_catalogue(
        {
            "meta": {"date": "2026-12-01", "sources": ["test"]},
            "defaults": {"quotas": asdict(shipped.defaults)},
            "models": [
                {
                    "id": SMALL,
                    "name": "Small",
                    "family": "anthropic-claude",
                    "invocation_types": ["InvokeModel"],
                    "input_modalities": ["text"],
                    "regions": ["us-east-1"],
                    "quotas": quotas,
                }
            ],
        }
    )


def run_job(h: Harness, n: int, *, model_id: str = SMALL, files: int = 1) -> Any:
    h.bucket("out-bucket")
    for f in range(files):
        h.put(f"s3://in-bucket/in/{f}.jsonl", jsonl(records(n, start=f * n)))

    async def main() -> Any:
        job = await h.submit("s3://in-bucket/in/", model_id=model_id)
        (done,) = await h.run(job.job_id)
        return done

    return asyncio.run(main())


def test_records_per_job_of_the_model_fails_validation(tmp_path: Path) -> None:
    h = Harness(tmp_path, catalogue=small_catalogue(records_per_job=5))
    done = run_job(h, 3, files=2)
    assert done.status is S.FAILED
    assert "at least 6 records" in (done.message or "")
    assert "'Records per batch inference job' of 5" in (done.message or "")


def test_records_per_input_file_of_the_model_fails_validation(tmp_path: Path) -> None:
    h = Harness(tmp_path, catalogue=small_catalogue(records_per_input_file=3))
    done = run_job(h, 4)
    assert done.status is S.FAILED
    assert "'Records per input file per batch inference job' of 3" in (done.message or "")


def test_minimum_records_of_the_model_fails_validation(tmp_path: Path) -> None:
    # The setting at Bedrock's default (100) gives way to the model's own minimum.
    h = Harness(tmp_path, catalogue=small_catalogue(min_records_per_job=5))
    h.settings = h.settings.evolve(quota_min_records_per_job=100)
    done = run_job(h, 4)
    assert done.status is S.FAILED
    assert "The job has 4 records, fewer than" in (done.message or "")
    assert "batch inference job' of 5." in (done.message or "")


def test_within_the_model_quotas_completes(tmp_path: Path) -> None:
    h = Harness(tmp_path, catalogue=small_catalogue(records_per_job=6, records_per_input_file=3))
    done = run_job(h, 3, files=2)
    assert done.status is S.COMPLETED, done.message


def test_a_changed_setting_wins_over_the_model(tmp_path: Path) -> None:
    # FAST sets quota_min_records_per_job = 1: the operator's adjusted quota, for every model.
    h = Harness(tmp_path, catalogue=small_catalogue(min_records_per_job=5, records_per_job=5))
    h.settings = h.settings.evolve(quota_max_records_per_job=10)
    done = run_job(h, 8)
    assert done.status is S.COMPLETED, done.message


def test_ids_outside_the_catalogue_get_the_settings(tmp_path: Path) -> None:
    h = Harness(tmp_path, catalogue=small_catalogue(records_per_job=2), quota_max_records_per_job=5)
    assert run_job(h, 4, model_id="routed.model-v1").status is S.COMPLETED


@pytest.mark.parametrize(
    ("setting", "value"),
    [("quota_max_job_bytes", 100 * 1024**3), ("quota_max_file_bytes", 1024**3)],
)
def test_shipped_catalogue_sizes(setting: str, value: int) -> None:
    # Nova Pro's jobs may be 100 GB (service-facts §3); its files stay at 1 GB.
    model = load_catalogue().get("us.amazon.nova-pro-v1:0")
    assert getattr(model_quotas(Settings(**FAST), model), setting) == value
    assert model_quotas(Settings(**FAST), None) == Settings(**FAST)
