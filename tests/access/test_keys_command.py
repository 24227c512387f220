"""`batchrock keys`: the file it writes (private, atomic, comments kept) and what it prints."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from batchrock import keys
from batchrock.access import keyfile
from batchrock.access.credfile import parse, read
from tests.access.conftest import credentials_text, write_credentials

BATCHROCK = Path(sys.executable).parent / "batchrock"


def run(path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    rc = keys.main(["--credentials-file", str(path), *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.startswith("{") else out, err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_makes_a_private_file_and_prints_the_secret_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "creds.toml"
    args = ["create", "--account", "111111111111", "--user", "alice", "--bucket", "a-*"]
    rc, out, err = run(path, *args, capsys=capsys)
    assert rc == 0
    made = out["AccessKey"]
    assert made["AccountId"] == "111111111111" and made["UserName"] == "alice"
    assert made["AccessKeyId"].startswith("AKIA") and len(made["AccessKeyId"]) == 20
    assert len(made["SecretAccessKey"]) == 40 and made["Status"] == "Active"
    assert "shown once" in err
    assert _mode(path) == 0o600
    directory, _ = read(path)
    found = directory.access_key(made["AccessKeyId"])
    assert found is not None
    assert found[1].secret_access_key == made["SecretAccessKey"] and found[1].user == "alice"
    assert directory.may_access("111111111111", "a-bucket")
    # No temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".creds.toml.lock", "creds.toml"]


def test_edits_keep_comments_and_other_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    before = path.read_text()
    rc, out, _ = run(
        path, "create", "--account", "222222222222", "--action", "bedrock:List*", capsys=capsys
    )
    assert rc == 0
    text = path.read_text()
    assert text.startswith("# accounts for the access tests\n")
    assert before.splitlines()[1:6] == text.splitlines()[1:6]
    new_id = out["AccessKey"]["AccessKeyId"]
    found = parse(text).access_key(new_id)
    assert found is not None and found[0].id == "222222222222"
    assert found[1].actions == ("bedrock:List*",)
    assert len(parse(text).accounts) == 2


def test_rotate_replaces_the_pair_and_keeps_user_and_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    rc, out, err = run(path, "rotate", "AKIAREADER0000000003", capsys=capsys)
    assert rc == 0 and "AKIAREADER0000000003 no longer works" in err
    new = out["AccessKey"]
    directory, _ = read(path)
    assert directory.access_key("AKIAREADER0000000003") is None
    found = directory.access_key(new["AccessKeyId"])
    assert found is not None and found[1].user == "reader"
    assert found[1].actions == ("bedrock:List*", "bedrock:getmodelinvocationjob")
    assert found[1].secret_access_key == new["SecretAccessKey"]


def test_delete_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    assert run(path, "delete", "AKIABOBBB00000000002", capsys=capsys)[0] == 0
    rc, listing, _ = run(path, "list", capsys=capsys)
    assert rc == 0
    assert "AKIABOBBB00000000002" not in listing
    assert "AKIAALICE00000000001" in listing and "BedrockAPIKey-te5t" in listing
    assert "bedrock:List*,bedrock:getmodelinvocationjob" in listing
    for secret in ("alice/secret", "reader-secret", "c3Nzc3Nz"):
        assert secret not in listing
    assert "buckets of 111111111111: team-a-*" in listing


def test_api_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    rc, out, err = run(path, "create-api-key", "--account", "222222222222", capsys=capsys)
    assert rc == 0 and "AWS_BEARER_TOKEN_BEDROCK" in err
    made = out["ApiKey"]
    assert made["Token"].startswith("ABSK") and made["ApiKeyId"].startswith("BedrockAPIKey-")
    directory, _ = read(path)
    found = directory.api_key(made["Token"])
    assert found is not None and found[0].id == "222222222222"
    assert found[1].user == made["ApiKeyId"] == made["UserName"]
    assert run(path, "delete-api-key", made["ApiKeyId"], capsys=capsys)[0] == 0
    assert read(path)[0].api_key(made["Token"]) is None
    assert read(path)[0].api_key(credentials_text().split('token = "')[1].split('"')[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rotate", "AKIANOSUCHKEY0000000"], "no access key AKIANOSUCHKEY0000000"),
        (["delete", "AKIANOSUCHKEY0000000"], "no access key AKIANOSUCHKEY0000000"),
        (["delete-api-key", "BedrockAPIKey-none"], "no API key BedrockAPIKey-none"),
        (["create", "--account", "12"], "--account '12' is not a 12-digit account id"),
        (
            ["create", "--account", "111111111111", "--action", "Stop"],
            "--action 'Stop' is not an IAM action",
        ),
        (
            ["create", "--account", "111111111111", "--user", "a b"],
            "--user 'a b' is not an IAM user name",
        ),
    ],
)
def test_mistakes_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    before = path.read_text()
    rc, _, err = run(path, *args, capsys=capsys)
    assert rc == 1 and err.startswith(f"batchrock keys: {message}") and err.count("\n") == 1
    assert path.read_text() == before


def test_a_broken_file_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "creds.toml"
    path.write_text('[[accounts]]\nid = "1"\n')
    path.chmod(0o600)
    rc, _, err = run(path, "create", "--account", "111111111111", capsys=capsys)
    assert rc == 1 and "the result would be invalid" in err and "'1' is not a 12-digit id" in err
    assert path.read_text() == '[[accounts]]\nid = "1"\n'


def test_a_public_file_is_rewritten_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    path.chmod(0o644)
    assert run(path, "create", "--account", "111111111111", capsys=capsys)[0] == 0
    assert _mode(path) == 0o600


def test_no_credentials_file_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHROCK_CREDENTIALS_FILE", raising=False)
    monkeypatch.delenv("BATCHROCK_CONFIG_FILE", raising=False)
    assert keys.main(["list"]) == 1
    assert capsys.readouterr().err == (
        "batchrock keys: no credentials file: give --credentials-file FILE or set "
        "BATCHROCK_CREDENTIALS_FILE\n"
    )


def test_concurrent_commands_lose_no_key(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "creds.toml")
    made: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            for _ in range(5):
                key = keyfile.edit(path, keyfile.add_key("333333333333", None, None))
                made.append(key.access_key_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    directory, _ = read(path)
    assert len(made) == 20 and all(directory.access_key(k) for k in made)


def test_the_console_script(tmp_path: Path) -> None:
    path = tmp_path / "creds.toml"
    env = {**os.environ, "BATCHROCK_CREDENTIALS_FILE": str(path)}
    done = subprocess.run(
        [str(BATCHROCK), "keys", "create", "--account", "111111111111"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key_id = json.loads(done.stdout)["AccessKey"]["AccessKeyId"]
    listed = subprocess.run(
        [str(BATCHROCK), "keys", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert key_id in listed.stdout
