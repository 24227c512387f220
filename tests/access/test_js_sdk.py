"""The AWS SDK for JavaScript v3 (@aws-sdk/client-bedrock) against a server checking
signatures: SigV4 over HTTP, bearer tokens over HTTPS, and the errors it names.

Needs node and `npm ci --prefix tests/js` (the Makefile's test set-up runs it when npm is
there). Without node the test skips; with node but without the package it fails, since then an
install step is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.access.conftest import ALICE, ALICE_API_KEY, BOB, write_credentials
from tests.certs import self_signed
from tests.conftest import REPO_ROOT, ServerProcess

JS = REPO_ROOT / "tests" / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
]


def _node(url: str, scenario: str, env: dict[str, str], *args: str) -> Any:
    if not (JS / "node_modules" / "@aws-sdk" / "client-bedrock").is_dir():
        pytest.fail("@aws-sdk/client-bedrock is not installed: npm ci --prefix tests/js")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [str(NODE), str(JS / "bedrock_client.mjs"), url, scenario, *args],
        env={**clean, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _keys(key: Any, secret: str | None = None) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": secret or key.secret}


def test_sigv4(secured: ServerProcess) -> None:
    result = _node(secured.url, "jobs", _keys(ALICE), "js-sigv4")
    assert all(":111111111111:model-invocation-job/" in arn for arn in result["arns"])
    assert result["got"] == result["arns"][0]
    assert sorted(result["listed"]) == sorted(result["arns"])  # three pages of one
    assert result["tags"] == [{"key": "team", "value": "a/b+c=d"}]
    assert result["stopped"] == "Stopping"

    wrong = _node(secured.url, "refused", _keys(ALICE, "not-alice-secret-00000000000"))
    assert (wrong["name"], wrong["status"]) == ("InvalidSignatureException", 403)
    nobody = {"AWS_ACCESS_KEY_ID": "AKIANOBODY0000000000", "AWS_SECRET_ACCESS_KEY": "x" * 40}
    stranger = _node(secured.url, "refused", nobody)
    assert stranger["name"] == "UnrecognizedClientException"
    assert stranger["message"] == "The security token included in the request is invalid."
    other = _node(secured.url, "refused", _keys(BOB))
    assert other["name"] == "ResourceNotFoundException"


def test_a_skewed_clock_corrects_itself(secured: ServerProcess) -> None:
    """The SDK reads InvalidSignatureException with the server's Date header as clock skew."""
    result = _node(secured.url, "skewed", _keys(ALICE))
    assert result["listed"] >= 0
    assert abs(result["offset"]) < 60_000  # corrected from -600000 ms


def test_bearer_token_over_tls(tmp_path: Path, server_factory: Any) -> None:
    cert, key = self_signed(tmp_path)
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, tls_cert=cert, tls_key=key)
    env = {"AWS_BEARER_TOKEN_BEDROCK": ALICE_API_KEY, "NODE_EXTRA_CA_CERTS": str(cert)}
    result = _node(server.url, "jobs", env, "js-bearer")
    assert all(":111111111111:" in arn for arn in result["arns"])
    assert sorted(result["listed"]) == sorted(result["arns"])
    bad = _node(server.url, "refused", {**env, "AWS_BEARER_TOKEN_BEDROCK": "ABSK" + "x" * 40})
    assert bad["status"] == 403
    assert bad["message"] == "Authentication failed: Please make sure your API Key is valid."
