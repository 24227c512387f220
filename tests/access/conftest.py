"""Accounts and keys for the access tests, a credentials file, and servers that use it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cli.conftest import aws_home, cli_env  # noqa: F401 - fixtures the tests here use
from tests.conftest import ServerProcess


@dataclass(frozen=True)
class Key:
    account: str
    access_key_id: str
    secret: str
    user: str | None = None
    actions: tuple[str, ...] | None = None

    def toml(self) -> str:
        parts = [
            f'access_key_id = "{self.access_key_id}"',
            f'secret_access_key = "{self.secret}"',
        ]
        if self.user:
            parts.append(f'user = "{self.user}"')
        if self.actions is not None:
            parts.append("actions = [" + ", ".join(f'"{a}"' for a in self.actions) + "]")
        return "{ " + ", ".join(parts) + " }"


ALICE = Key("111111111111", "AKIAALICE00000000001", "alice/secret+key-00000000000000001", "alice")
BOB = Key("222222222222", "AKIABOBBB00000000002", "bob-secret-key-00000000000000000002")
READER = Key(
    "111111111111",
    "AKIAREADER0000000003",
    "reader-secret-key-0000000000000003",
    "reader",
    ("bedrock:List*", "bedrock:getmodelinvocationjob"),
)
#: A long-term API key of account 111111111111, in AWS's shape.
ALICE_API_KEY = (
    "ABSK" + base64.b64encode(b"BedrockAPIKey-te5t-at-111111111111:" + b"s" * 40).decode()
)
BUCKETS = {"111111111111": ["team-a-*"], "222222222222": ["team-b-*"]}


def credentials_text(
    keys: Sequence[Key] = (ALICE, BOB, READER),
    api_keys: dict[str, list[str]] | None = None,
) -> str:
    api_keys = {"111111111111": [ALICE_API_KEY]} if api_keys is None else api_keys
    accounts: dict[str, list[Key]] = {}
    for key in keys:
        accounts.setdefault(key.account, []).append(key)
    for account in api_keys:
        accounts.setdefault(account, [])
    lines = ["# accounts for the access tests"]
    for account, owned in accounts.items():
        lines += ["[[accounts]]", f'id = "{account}"']
        lines.append("keys = [" + ", ".join(k.toml() for k in owned) + "]")
        tokens = api_keys.get(account, [])
        if tokens:
            lines.append("api_keys = [" + ", ".join(f'{{ token = "{t}" }}' for t in tokens) + "]")
        buckets = BUCKETS.get(account, [])
        lines.append("buckets = [" + ", ".join(f'"{b}"' for b in buckets) + "]")
        lines.append("")
    return "\n".join(lines)


def write_credentials(path: Path, text: str | None = None) -> Path:
    path.write_text(credentials_text() if text is None else text)
    path.chmod(0o600)
    return path


def client(
    url: str,
    key: Key | None = ALICE,
    *,
    region: str = "us-east-1",
    secret: str | None = None,
    session_token: str | None = None,
    verify: str | None = None,
    **config: Any,
) -> Any:
    """A real boto3 bedrock client signing with ``key`` (no retries: tests see every answer)."""
    session = boto3.session.Session(
        aws_access_key_id=key.access_key_id if key else None,
        aws_secret_access_key=(secret or key.secret) if key else None,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client(
        "bedrock",
        endpoint_url=url,
        verify=verify,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


def error_of(call: Callable[[], Any]) -> tuple[str, int, str]:
    """(code, HTTP status, message) of the ClientError botocore raises for ``call()``."""
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def job_args(name: str = "job-1", bucket: str = "team-a-data", **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "jobName": name,
        "roleArn": "arn:aws:iam::111111111111:role/BedrockBatch",
        "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/input/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/output/"}},
    }
    args.update(overrides)
    return args


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One API-only server per module with the credentials file above."""
    root = tmp_path_factory.mktemp("secured")
    creds = write_credentials(root / "credentials.toml")
    server = ServerProcess(
        root / "data", {"engine": False, "credentials_file": creds}, root / "server.log"
    )
    server.start()
    yield server
    server.stop()
