"""The credentials file (TOML) read into a :class:`Directory`, and kept current while serving.

The format is in docs/access.md. Reading is strict: an unknown key (``secret_key`` for
``secret_access_key``), a duplicate access key id or a malformed value is an error naming the
field (``accounts[1].keys[0].secret_access_key``), because a typo in this file otherwise means
a key that silently does not work, or works for the wrong account.

The file holds secrets, so it must be private to its owner: a file that group or others may
read or write is refused (like ssh refuses such a private key), at start-up and on every
re-read. ``batchrock keys`` always writes it with mode 0600.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import stat
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from batchrock.access.directory import AccessKey, Account, ApiKey, Directory
from batchrock.access.permissions import ACTION_PATTERN

log = logging.getLogger("batchrock.access")

ACCOUNT_ID = re.compile(r"\d{12}")
#: IAM's AccessKeyId constraint: 16 to 128 word characters.
ACCESS_KEY_ID = re.compile(r"\w{16,128}", re.ASCII)
#: IAM's user-name characters.
USER_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
#: Bucket names (S3's characters) with shell wildcards.
BUCKET_PATTERN = re.compile(r"[a-z0-9.*?-]{1,63}")
#: Long-term Bedrock API keys start with this (docs/access.md).
API_KEY_PREFIX = "ABSK"
MIN_SECRET_LENGTH = 16

_TOP_KEYS = frozenset({"accounts"})
_ACCOUNT_KEYS = frozenset({"id", "keys", "api_keys", "buckets"})
_KEY_KEYS = frozenset({"access_key_id", "secret_access_key", "user", "actions"})
_API_KEY_KEYS = frozenset({"token", "user", "actions"})


class CredentialsFileError(ValueError):
    """The credentials file cannot be used; the message says where and why."""


def parse(text: str, source: str = "credentials file") -> Directory:
    """The Directory ``text`` describes; :class:`CredentialsFileError` if it is not valid."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsFileError(f"{source}: not valid TOML: {exc}") from None
    return _Reader(source).directory(data)


def read(path: Path) -> tuple[Directory, tuple[int, ...]]:
    """Read and check ``path``; also return what identifies this version of the file."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            _check_private(path, info)
            raw = handle.read()
    except OSError as exc:
        raise CredentialsFileError(f"cannot read credentials file {path}: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsFileError(f"{path}: not UTF-8: {exc}") from None
    return parse(text, str(path)), _version(info)


def _version(info: os.stat_result) -> tuple[int, ...]:
    # The mode too: a chmod that makes the file public is noticed (and refused).
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode)


def _check_private(path: Path, info: os.stat_result) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise CredentialsFileError(
            f"credentials file {path} is accessible by group or others (mode {mode:04o}); "
            f"it holds secrets: run chmod 600 {path}"
        )


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> CredentialsFileError:
        return CredentialsFileError(f"{self.source}: {where}: {problem}")

    def table(self, value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
            )
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "must be an array")
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern[str] | None, hint: str) -> str:
        if not isinstance(value, str):
            quoted = ' (quote it: "..." )' if isinstance(value, int) else ""
            raise self.fail(where, f"must be a string{quoted}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(where, f"{value!r} is not {hint}")
        return value

    def directory(self, data: Mapping[str, Any]) -> Directory:
        self.table(data, "top level", _TOP_KEYS)
        accounts: list[Account] = []
        seen_ids: set[str] = set()
        seen_keys: set[str] = set()
        seen_tokens: set[str] = set()
        for i, raw in enumerate(self.array(data.get("accounts", []), "accounts")):
            where = f"accounts[{i}]"
            table = self.table(raw, where, _ACCOUNT_KEYS)
            if "id" not in table:
                raise self.fail(where, "needs an id (a 12-digit account id)")
            account_id = self.string(table["id"], f"{where}.id", ACCOUNT_ID, "a 12-digit id")
            if account_id in seen_ids:
                raise self.fail(f"{where}.id", f"account {account_id} is listed twice")
            seen_ids.add(account_id)
            keys = tuple(
                self.access_key(k, f"{where}.keys[{j}]", seen_keys)
                for j, k in enumerate(self.array(table.get("keys", []), f"{where}.keys"))
            )
            api_keys = tuple(
                self.api_key(k, f"{where}.api_keys[{j}]", seen_tokens)
                for j, k in enumerate(self.array(table.get("api_keys", []), f"{where}.api_keys"))
            )
            buckets = tuple(
                self.string(b, f"{where}.buckets[{j}]", BUCKET_PATTERN, "a bucket name or pattern")
                for j, b in enumerate(self.array(table.get("buckets", []), f"{where}.buckets"))
            )
            accounts.append(Account(account_id, keys, api_keys, buckets))
        return Directory(tuple(accounts))

    def access_key(self, raw: Any, where: str, seen: set[str]) -> AccessKey:
        table = self.table(raw, where, _KEY_KEYS)
        for required in ("access_key_id", "secret_access_key"):
            if required not in table:
                raise self.fail(where, f"needs {required}")
        key_id = self.string(
            table["access_key_id"],
            f"{where}.access_key_id",
            ACCESS_KEY_ID,
            "an access key id (16 to 128 letters, digits or _)",
        )
        if key_id in seen:
            raise self.fail(f"{where}.access_key_id", f"{key_id} is listed twice")
        seen.add(key_id)
        secret = self.string(table["secret_access_key"], f"{where}.secret_access_key", None, "")
        if len(secret) < MIN_SECRET_LENGTH or secret != secret.strip():
            raise self.fail(
                f"{where}.secret_access_key",
                f"must be at least {MIN_SECRET_LENGTH} characters, without surrounding spaces "
                f"(`batchrock keys create` makes one)",
            )
        return AccessKey(key_id, secret, self.user(table, where), self.actions(table, where))

    def api_key(self, raw: Any, where: str, seen: set[str]) -> ApiKey:
        table = self.table(raw, where, _API_KEY_KEYS)
        if "token" not in table:
            raise self.fail(where, "needs token")
        token = self.string(table["token"], f"{where}.token", None, "")
        if not token.startswith(API_KEY_PREFIX) or len(token) < 32 or not token.isprintable():
            raise self.fail(
                f"{where}.token",
                f"must start with {API_KEY_PREFIX!r} and be at least 32 characters "
                f"(`batchrock keys create-api-key` makes one)",
            )
        if token in seen:
            raise self.fail(f"{where}.token", "this token is listed twice")
        seen.add(token)
        user = self.user(table, where) or api_key_user(token)
        return ApiKey(token, user, self.actions(table, where))

    def user(self, table: Mapping[str, Any], where: str) -> str | None:
        if "user" not in table:
            return None
        return self.string(table["user"], f"{where}.user", USER_NAME, "an IAM user name")

    def actions(self, table: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
        if "actions" not in table:
            return None
        values = self.array(table["actions"], f"{where}.actions")
        return tuple(
            self.string(
                v, f"{where}.actions[{i}]", ACTION_PATTERN, "an IAM action (bedrock:Name, *)"
            )
            for i, v in enumerate(values)
        )


def api_key_user(token: str) -> str | None:
    """The IAM user a long-term key names (``ABSK`` + base64 of
    ``BedrockAPIKey-xxxx-at-ACCOUNT:secret``, as AWS issues them), if it names one."""
    try:
        decoded = base64.b64decode(token[len(API_KEY_PREFIX) :], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name = decoded.partition(":")[0].partition("-at-")[0]
    return name if name and USER_NAME.fullmatch(name) else None


class LiveDirectory:
    """The Directory of a credentials file, re-read when the file changes (no restart).

    :meth:`current` looks at the file at most every ``interval`` seconds (one ``stat``); a
    changed device/inode/mtime/size/mode means a re-read. An edit that does not parse, or a file
    that went missing or public, keeps the last good version and logs one line per version.
    It also answers the engine's bucket questions (``BucketPolicy``) from the current version.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = interval
        self._monotonic = monotonic
        self._directory, self._version = read(path)  # a bad file at start-up is fatal
        self._refused: tuple[int, ...] | None = None
        self._pending: asyncio.Future[None] | None = None
        self._next_check = monotonic() + interval

    def current(self) -> Directory:
        """The last good version. When a look at the file is due, it happens inline outside an
        event loop, and in a worker thread inside one: parsing a file of a thousand keys takes
        tens of milliseconds, too long to hold a loop serving requests (those go on with the
        version they have until the new one is in)."""
        now = self._monotonic()
        if now < self._next_check:
            return self._directory
        self._next_check = now + self._interval
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._refresh()
            return self._directory
        directory = self._directory  # taken before the thread may replace it
        if self._pending is None or self._pending.done():
            self._pending = loop.run_in_executor(None, self._refresh)
        return directory

    async def settled(self) -> Directory:
        """:meth:`current`, once a look at the file that is under way has finished."""
        self.current()
        if self._pending is not None:
            await self._pending
        return self._directory

    def _refresh(self) -> None:
        try:
            self._look()
        except Exception:  # a thread's failure would otherwise vanish with its future
            log.exception("re-reading credentials file %s failed", self.path)

    def _look(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            self._refuse((-1,), f"cannot read credentials file {self.path}: {exc}")
            return
        if _version(info) == self._version:
            return
        try:
            directory, version = read(self.path)
        except CredentialsFileError as exc:
            self._refuse(_version(info), str(exc))
            return
        self._directory, self._version, self._refused = directory, version, None
        log.info(
            "credentials file %s re-read: %d accounts, %d keys",
            self.path,
            len(directory.accounts),
            directory.key_count,
        )

    def _refuse(self, version: tuple[int, ...], why: str) -> None:
        if version != self._refused:
            self._refused = version
            log.error("%s; keeping the last good version of the credentials file", why)

    def may_access(self, account_id: str, bucket: str) -> bool:
        return self.current().may_access(account_id, bucket)

    def owner_of(self, bucket: str) -> str | None:
        return self.current().owner_of(bucket)
