from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess, bedrock_client


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One API-only server per module: jobs stay where the API put them (no engine). They
    never finish, so the unfinished-jobs quota is lifted (tests/api/test_limits.py tests it)."""
    root = tmp_path_factory.mktemp("api")
    settings = {"engine": False, "quota_max_unfinished_jobs_per_model": 0}
    server = ServerProcess(root / "data", settings, root / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(api_server: ServerProcess) -> Any:
    return bedrock_client(api_server.url)


def create_args(name: str = "job-1", **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "jobName": name,
        "roleArn": "arn:aws:iam::123456789012:role/BedrockBatch",
        "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/input/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/output/"}},
    }
    args.update(overrides)
    return args
