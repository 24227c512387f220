"""The credentials file: what it may say, what a mistake in it reports, and re-reading it."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from batchrock.access.credfile import CredentialsFileError, LiveDirectory, parse, read
from batchrock.access.directory import Principal
from tests.access.conftest import ALICE, ALICE_API_KEY, BOB, READER, credentials_text

GOOD = """
[[accounts]]
id = "111111111111"
buckets = ["team-a-*", "shared-?"]

# keys as an array of tables, instead of inline tables
[[accounts.keys]]
access_key_id = "AKIAEXAMPLEKEY000001"
secret_access_key = "0123456789abcdef0123"
user = "alice"

[[accounts]]
id = "222222222222"
keys = [{ access_key_id = "AKIAEXAMPLEKEY000002", secret_access_key = "0123456789abcdef0123" }]
buckets = ["team-b-*", "shared-*"]
"""


def test_a_directory_answers_keys_tokens_and_buckets() -> None:
    directory = parse(credentials_text())
    account, key = directory.access_key(ALICE.access_key_id) or (None, None)
    assert account is not None and key is not None
    assert (account.id, key.user, key.secret_access_key) == (ALICE.account, "alice", ALICE.secret)
    assert directory.access_key("AKIANOBODY0000000000") is None
    found = directory.api_key(ALICE_API_KEY)
    assert found is not None and found[0].id == "111111111111"
    assert found[1].user == "BedrockAPIKey-te5t"  # the name inside the token
    assert directory.api_key(ALICE_API_KEY[:-1] + "x") is None
    reader = directory.access_key(READER.access_key_id)
    assert reader is not None and reader[1].actions == READER.actions
    assert BOB.secret not in repr(directory)


def test_bucket_grants_and_owners() -> None:
    directory = parse(GOOD)
    assert directory.access_key("AKIAEXAMPLEKEY000001") is not None
    assert directory.may_access("111111111111", "team-a-data")
    assert not directory.may_access("111111111111", "team-b-data")
    assert not directory.may_access("333333333333", "team-a-data")
    assert directory.may_access("111111111111", "shared-1")
    assert not directory.may_access("111111111111", "shared-12")
    assert directory.owner_of("team-b-x") == "222222222222"
    # First match in file order.
    assert directory.owner_of("shared-1") == "111111111111"
    assert directory.owner_of("shared-12") == "222222222222"
    assert directory.owner_of("elsewhere") is None


def test_principals_and_their_actions() -> None:
    root = Principal("111111111111")
    assert root.arn() == "arn:aws:iam::111111111111:root" and root.may("bedrock:Anything")
    reader = Principal("111111111111", "reader", ("bedrock:List*", "bedrock:getmodelinvocationjob"))
    assert reader.arn("aws-cn") == "arn:aws-cn:iam::111111111111:user/reader"
    assert reader.may("bedrock:ListModelInvocationJobs")
    assert reader.may("bedrock:GetModelInvocationJob")  # IAM action names ignore case
    assert not reader.may("bedrock:StopModelInvocationJob")
    assert not reader.may("s3:ListBuckets")
    assert Principal("1", "x", ("*",)).may("bedrock:StopModelInvocationJob")
    assert not Principal("1", "x", ()).may("bedrock:ListModelInvocationJobs")


KEY = '{ access_key_id = "AKIAEXAMPLEKEY000001", secret_access_key = "0123456789abcdef0123" }'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("accounts = 3", "accounts: must be an array"),
        ("[[accounts]]\nkeys = []", "accounts[0]: needs an id (a 12-digit account id)"),
        ("[[accounts]]\nid = 111111111111", "accounts[0].id: must be a string (quote it"),
        ('[[accounts]]\nid = "1111"', "accounts[0].id: '1111' is not a 12-digit id"),
        (
            '[[accounts]]\nid = "111111111111"\nbucket = ["x"]',
            "accounts[0]: unknown key 'bucket' (known: api_keys, buckets, id, keys)",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n[[accounts]]\nid = "111111111111"',
            "accounts[1].id: account 111111111111 is listed twice",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'keys = [{ access_key_id = "AKIAEXAMPLEKEY000001" }]',
            "accounts[0].keys[0]: needs secret_access_key",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'keys = [{ access_key_id = "AKIAEXAMPLEKEY000001", secret_key = "x" }]',
            "accounts[0].keys[0]: unknown key 'secret_key'",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'keys = [{ access_key_id = "AKIA EXAMPLE", '
            'secret_access_key = "0123456789abcdef0123" }]',
            "accounts[0].keys[0].access_key_id: 'AKIA EXAMPLE' is not an access key id",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'keys = [{ access_key_id = "AKIAEXAMPLEKEY000001", secret_access_key = "test" }]',
            "accounts[0].keys[0].secret_access_key: must be at least 16 characters",
        ),
        (
            f'[[accounts]]\nid = "111111111111"\nkeys = [{KEY}]\n'
            f'[[accounts]]\nid = "222222222222"\nkeys = [{KEY}]',
            "accounts[1].keys[0].access_key_id: AKIAEXAMPLEKEY000001 is listed twice",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'keys = [{ access_key_id = "AKIAEXAMPLEKEY000001", secret_access_key = '
            '"0123456789abcdef0123", actions = ["ListModelInvocationJobs"] }]',
            "accounts[0].keys[0].actions[0]: 'ListModelInvocationJobs' is not an IAM action",
        ),
        (
            '[[accounts]]\nid = "111111111111"\n'
            'api_keys = [{ token = "secret-token-but-no-prefix" }]',
            "accounts[0].api_keys[0].token: must start with 'ABSK'",
        ),
        (
            '[[accounts]]\nid = "111111111111"\nbuckets = ["Team_A"]',
            "accounts[0].buckets[0]: 'Team_A' is not a bucket name or pattern",
        ),
        ('[[accounts]\nid = "1"', "not valid TOML: "),
    ],
)
def test_mistakes_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(CredentialsFileError) as info:
        parse(text, "creds.toml")
    assert str(info.value).startswith(f"creds.toml: {problem}"), str(info.value)


def test_toml_syntax_errors_give_the_line() -> None:
    with pytest.raises(CredentialsFileError, match=r"at line 3"):
        parse('[[accounts]]\nid = "111111111111"\nkeys = [{ oops }]\n', "creds.toml")


def test_the_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "creds.toml"
    path.write_text(GOOD)
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(CredentialsFileError) as info:
            read(path)
        assert str(info.value) == (
            f"credentials file {path} is accessible by group or others (mode {mode:04o}); "
            f"it holds secrets: run chmod 600 {path}"
        )
    path.chmod(0o600)
    assert len(read(path)[0].accounts) == 2
    path.chmod(0o400)
    assert len(read(path)[0].accounts) == 2


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _rewrite(path: Path, text: str) -> None:
    """Replace the file as an editor or `batchrock keys` would (a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def test_the_live_directory_follows_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "creds.toml"
    _rewrite(path, credentials_text())
    ticks = Ticks()
    live = LiveDirectory(path, interval=1.0, monotonic=ticks)
    assert live.current().access_key(BOB.access_key_id) is not None

    _rewrite(path, credentials_text(keys=(ALICE,)))
    ticks.now = 0.5  # not yet time to look
    assert live.current().access_key(BOB.access_key_id) is not None
    ticks.now = 1.0
    assert live.current().access_key(BOB.access_key_id) is None
    assert live.current().access_key(ALICE.access_key_id) is not None

    caplog.set_level(logging.INFO, "batchrock.access")
    caplog.clear()
    _rewrite(path, "[[accounts]\nbroken")
    for tick in (2.0, 3.0, 4.0):
        ticks.now = tick
        assert live.current().access_key(ALICE.access_key_id) is not None  # last good version
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "one line per bad version, not one per look"
    assert "keeping the last good version" in errors[0].getMessage()

    path.chmod(0o644)
    ticks.now = 5.0
    assert live.current().access_key(ALICE.access_key_id) is not None
    assert "accessible by group or others" in caplog.records[-1].getMessage()

    path.unlink()
    ticks.now = 6.0
    assert live.current().access_key(ALICE.access_key_id) is not None
    assert "cannot read credentials file" in caplog.records[-1].getMessage()

    _rewrite(path, credentials_text(keys=(BOB,)))
    ticks.now = 7.0
    assert live.current().access_key(ALICE.access_key_id) is None
    assert live.owner_of("team-b-x") == "222222222222"
    assert live.may_access("222222222222", "team-b-x")
    assert "re-read: 2 accounts, 2 keys" in caplog.records[-1].getMessage()


def test_inside_an_event_loop_the_file_is_read_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "creds.toml"
    _rewrite(path, credentials_text())
    ticks = Ticks()
    live = LiveDirectory(path, monotonic=ticks)

    async def scenario() -> None:
        _rewrite(path, credentials_text(keys=(BOB,)))
        ticks.now = 1.0
        # The request that finds the look due goes on with the version it has...
        assert live.current().access_key(ALICE.access_key_id) is not None
        # ...while a worker thread reads the file.
        assert (await live.settled()).access_key(ALICE.access_key_id) is None
        assert live.current().access_key(BOB.access_key_id) is not None

    asyncio.run(scenario())


def test_a_chmod_alone_is_noticed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "creds.toml"
    _rewrite(path, credentials_text())
    ticks = Ticks()
    live = LiveDirectory(path, monotonic=ticks)
    path.chmod(0o666)
    ticks.now = 1.0
    live.current()
    assert "accessible by group or others" in caplog.records[-1].getMessage()


def test_a_bad_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsFileError, match="cannot read credentials file"):
        LiveDirectory(tmp_path / "missing.toml")
