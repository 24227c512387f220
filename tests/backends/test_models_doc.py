"""docs/models.md keeps up with the code: every family, backend type and route key is there."""

from __future__ import annotations

import pytest

from batchrock.backends import bedrock_runtime, local, openai_compat
from batchrock.backends.families import FAMILIES
from batchrock.backends.routing import BACKEND_TYPES, COMMON_KEYS, REPLICA_KEYS
from tests.conftest import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "models.md").read_text()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_documented(name: str) -> None:
    assert f"(`{name}`)" in DOC


@pytest.mark.parametrize("kind", sorted(BACKEND_TYPES))
def test_every_backend_type_is_documented(kind: str) -> None:
    assert f'backend = "{kind}"' in DOC


KEYS = sorted(
    COMMON_KEYS
    | REPLICA_KEYS
    | openai_compat._KNOWN
    | bedrock_runtime._KNOWN
    | {"model_path", "device", "default_max_tokens", "latency_ms", "error_rate", "throttle_rate"}
)


@pytest.mark.parametrize("key", KEYS)
def test_every_route_key_is_documented(key: str) -> None:
    assert f"`{key}`" in DOC


def test_local_keys_listed_here_are_the_ones_the_code_takes() -> None:
    source = (REPO_ROOT / "src" / "batchrock" / "backends" / "local.py").read_text()
    for key in ("model_path", "device", "default_max_tokens"):
        assert f'"{key}"' in source
    assert local.TransformersTextBackend.__doc__
