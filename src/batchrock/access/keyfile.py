"""Changes to the credentials file, as ``batchrock keys`` makes them.

Every change is a read-modify-write under an exclusive lock (a ``.NAME.lock`` file beside it,
so two commands at once cannot lose each other's key), keeps the file's comments and layout
(tomlkit), is checked by the same reader the server uses before anything is written, and
replaces the file atomically with an owner-only (0600) one: a server re-reading it sees the
old version or the new one, never half of one.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomlkit
from tomlkit.items import AoT, Array, InlineTable, Table
from tomlkit.toml_document import TOMLDocument

from batchrock.access.credfile import API_KEY_PREFIX, CredentialsFileError, api_key_user, parse

T = TypeVar("T")

_KEY_ID_ALPHABET = string.ascii_uppercase + "234567"  # AWS access key ids: base32 letters
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_NAME_ALPHABET = string.ascii_lowercase + string.digits

NEW_FILE_HEADER = """\
# batchrock credentials file (docs/access.md). Secrets: keep this file private (mode 0600).
# Edit it by hand or with `batchrock keys ...`; a running server re-reads it within a second.
"""


class KeyFileError(Exception):
    """A ``batchrock keys`` command cannot do what it was asked; the message says why."""


@dataclass(frozen=True, slots=True)
class NewKey:
    account_id: str
    user: str | None
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True, slots=True)
class NewApiKey:
    account_id: str
    key_id: str
    user: str | None
    token: str


def new_access_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def new_api_key(account_id: str) -> tuple[str, str]:
    """(token, key id) in the shape AWS gives long-term keys: ``ABSK`` + base64 of
    ``BedrockAPIKey-xxxx-at-ACCOUNT:SECRET``."""
    name = "BedrockAPIKey-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(4))
    raw = f"{name}-at-{account_id}:{new_secret()}".encode()
    return API_KEY_PREFIX + base64.b64encode(raw).decode(), name


def api_key_id(token: str) -> str:
    """How ``keys list`` and ``keys delete-api-key`` name an API key without showing it."""
    named = api_key_user(token)
    if named is not None:
        return named
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


# --- editing --------------------------------------------------------------------------------


def edit(path: Path, change: Callable[[TOMLDocument], T]) -> T:
    """Apply ``change`` to the file's document and write the result safely."""
    with _locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = NEW_FILE_HEADER
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read {path}: {exc}") from None
        try:
            document = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise KeyFileError(f"{path}: not valid TOML: {exc}") from None
        result = change(document)
        new_text = tomlkit.dumps(document)
        try:
            parse(new_text, str(path))
        except CredentialsFileError as exc:
            raise KeyFileError(f"not writing {path}, the result would be invalid: {exc}") from None
        _replace(path, new_text)
        return result


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot lock {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {exc}") from None


# --- the changes ------------------------------------------------------------------------------


def _accounts(document: TOMLDocument) -> list[Table]:
    accounts = document.get("accounts")
    return list(accounts) if accounts is not None else []


def _account(document: TOMLDocument, account_id: str, create: bool) -> Table:
    for table in _accounts(document):
        if table.get("id") == account_id:
            return table
    if not create:
        raise KeyFileError(f"no account {account_id} in the credentials file")
    table = tomlkit.table()
    table["id"] = account_id
    if "accounts" not in document:
        document["accounts"] = tomlkit.aot()
    accounts = document["accounts"]
    assert isinstance(accounts, AoT)
    accounts.append(table)
    return table


def _array(table: Table, name: str) -> Array:
    if name not in table:
        array = tomlkit.array()
        array.multiline(True)
        table[name] = array
    value = table[name]
    if not isinstance(value, Array):
        raise KeyFileError(f"{name} of account {table.get('id')} is not an array")
    return value


def _entry(values: dict[str, Any]) -> InlineTable:
    entry = tomlkit.inline_table()
    entry.update({k: v for k, v in values.items() if v is not None})
    return entry


def add_key(
    account_id: str,
    user: str | None,
    actions: list[str] | None,
    buckets: list[str] | None = None,
) -> Callable[[TOMLDocument], NewKey]:
    def change(document: TOMLDocument) -> NewKey:
        table = _account(document, account_id, create=True)
        taken = {k.get("access_key_id") for t in _accounts(document) for k in t.get("keys", [])}
        key_id = new_access_key_id()
        while key_id in taken:  # pragma: no cover - 32**16 ids
            key_id = new_access_key_id()
        secret = new_secret()
        _array(table, "keys").append(
            _entry(
                {
                    "access_key_id": key_id,
                    "secret_access_key": secret,
                    "user": user,
                    "actions": actions,
                }
            )
        )
        _add_buckets(table, buckets)
        return NewKey(account_id, user, key_id, secret)

    return change


def _add_buckets(table: Table, buckets: list[str] | None) -> None:
    if buckets:
        existing = _array(table, "buckets")
        for pattern in buckets:
            if pattern not in existing:
                existing.append(pattern)


def _find_key(document: TOMLDocument, access_key_id: str) -> tuple[Table, Array, int]:
    for table in _accounts(document):
        keys = table.get("keys")
        for index, key in enumerate(keys or []):
            if key.get("access_key_id") == access_key_id:
                assert isinstance(keys, Array)
                return table, keys, index
    raise KeyFileError(f"no access key {access_key_id} in the credentials file")


def rotate_key(access_key_id: str) -> Callable[[TOMLDocument], NewKey]:
    """A new key id and secret in place of the old pair, for the same account, user and
    actions; the old pair stops working as soon as the server re-reads the file."""

    def change(document: TOMLDocument) -> NewKey:
        table, keys, index = _find_key(document, access_key_id)
        entry = keys[index]
        key_id, secret = new_access_key_id(), new_secret()
        entry["access_key_id"] = key_id
        entry["secret_access_key"] = secret
        return NewKey(str(table["id"]), entry.get("user"), key_id, secret)

    return change


def delete_key(access_key_id: str) -> Callable[[TOMLDocument], str]:
    def change(document: TOMLDocument) -> str:
        table, keys, index = _find_key(document, access_key_id)
        del keys[index]
        return str(table["id"])

    return change


def add_api_key(
    account_id: str, user: str | None, actions: list[str] | None
) -> Callable[[TOMLDocument], NewApiKey]:
    def change(document: TOMLDocument) -> NewApiKey:
        table = _account(document, account_id, create=True)
        token, key_id = new_api_key(account_id)
        _array(table, "api_keys").append(_entry({"token": token, "user": user, "actions": actions}))
        return NewApiKey(account_id, key_id, user or key_id, token)

    return change


def delete_api_key(key_id: str) -> Callable[[TOMLDocument], str]:
    def change(document: TOMLDocument) -> str:
        for table in _accounts(document):
            api_keys = table.get("api_keys")
            for index, entry in enumerate(api_keys or []):
                if api_key_id(str(entry.get("token", ""))) == key_id:
                    assert isinstance(api_keys, Array)
                    del api_keys[index]
                    return str(table["id"])
        raise KeyFileError(f"no API key {key_id} in the credentials file")

    return change
