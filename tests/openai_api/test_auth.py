"""Bearer keys of the credentials file on the OpenAI API: each key acts as its account, and
accounts never see each other's files or batches (open mode is in test_batches.py)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.access.conftest import ALICE_API_KEY, credentials_text
from tests.certs import self_signed

from .conftest import FAST, chat_line, read_lines, upload, wait_batch

pytestmark = pytest.mark.timeout(120)

BOB_API_KEY = "ABSK" + base64.b64encode(b"BedrockAPIKey-te5t-at-222222222222:" + b"b" * 40).decode()


@pytest.fixture
def opened() -> Iterator[list[openai.OpenAI]]:
    clients: list[openai.OpenAI] = []
    yield clients
    for c in clients:
        c.close()


def tls_client(server: Any, key: str, cert: Path, opened: list[openai.OpenAI]) -> openai.OpenAI:
    opened.append(
        made := openai.OpenAI(
            base_url=server.url + "/v1",
            api_key=key,
            max_retries=0,
            http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(cert))),
        )
    )
    return made


def test_api_keys_map_to_accounts_and_accounts_stay_apart(
    server_factory: Any, tmp_path: Path, opened: list[openai.OpenAI]
) -> None:
    cert, key = self_signed(tmp_path)
    creds = tmp_path / "credentials.toml"
    creds.write_text(
        credentials_text(api_keys={"111111111111": [ALICE_API_KEY], "222222222222": [BOB_API_KEY]})
    )
    creds.chmod(0o600)
    server = server_factory(**FAST, credentials_file=creds, tls_cert=cert, tls_key=key)
    alice, bob = (
        tls_client(server, ALICE_API_KEY, cert, opened),
        tls_client(server, BOB_API_KEY, cert, opened),
    )
    file_id = upload(alice, [chat_line(i) for i in range(3)])
    batch = alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_batch(alice, batch.id)
    assert done.status == "completed"  # the account's own files bucket is granted to it
    assert len(read_lines(alice, done.output_file_id)) == 3
    assert list(bob.files.list()) == [] and list(bob.batches.list()) == []
    for call in (bob.files.retrieve, bob.files.content, bob.batches.retrieve, bob.batches.cancel):
        with pytest.raises(openai.NotFoundError):
            call(file_id if call in (bob.files.retrieve, bob.files.content) else batch.id)
    # Bob's own file lives in his account's bucket.
    bob_file = upload(bob, [chat_line(1)])
    assert [f.id for f in bob.files.list()] == [bob_file]
    assert (server.data_dir / "s3" / "batchrock-files-222222222222" / "files" / bob_file).exists()

    with pytest.raises(openai.AuthenticationError) as err:
        tls_client(server, "ABSK" + "x" * 60, cert, opened).files.list()
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        tls_client(server, "sk-not-a-bedrock-key", cert, opened).batches.list()
