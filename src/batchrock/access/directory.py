"""Accounts, their keys and their buckets: the credentials file as frozen domain objects.

A :class:`Directory` answers the questions the API and the engine ask: which account and user
an access key id or a Bedrock API key belongs to, and which account may use a bucket.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType

from batchrock.access import permissions


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified request acts as: an account, and the user a key belongs to (``None``: the
    account itself, AWS's root user). ``actions`` ``None`` allows every action."""

    account_id: str
    user: str | None = None
    actions: tuple[str, ...] | None = None

    def arn(self, partition: str = "aws") -> str:
        if self.user is None:
            return f"arn:{partition}:iam::{self.account_id}:root"
        return f"arn:{partition}:iam::{self.account_id}:user/{self.user}"

    def may(self, action: str) -> bool:
        return self.actions is None or permissions.allows(self.actions, action)


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A SigV4 key pair. The secret is kept out of ``repr`` (and so out of logs)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    user: str | None = None
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A long-term Bedrock API key (a bearer token)."""

    token: str = field(repr=False)
    user: str | None = None
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    keys: tuple[AccessKey, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()
    #: Shell-style patterns (``*``, ``?``) of the buckets this account's jobs may use.
    buckets: tuple[str, ...] = ()

    def may_access(self, bucket: str) -> bool:
        return any(fnmatchcase(bucket, pattern) for pattern in self.buckets)


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Directory:
    """Every account of one credentials file, indexed for the lookups requests make."""

    accounts: tuple[Account, ...] = ()
    _by_access_key: Mapping[str, tuple[Account, AccessKey]] = field(
        init=False, repr=False, compare=False
    )
    _by_token: Mapping[bytes, tuple[Account, ApiKey]] = field(init=False, repr=False, compare=False)
    _by_id: Mapping[str, Account] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key = {key.access_key_id: (a, key) for a in self.accounts for key in a.keys}
        # Tokens are indexed by their digest and compared in constant time, so a lookup does
        # not time how much of a guessed token is right.
        by_token = {_token_digest(k.token): (a, k) for a in self.accounts for k in a.api_keys}
        object.__setattr__(self, "_by_access_key", MappingProxyType(by_key))
        object.__setattr__(self, "_by_token", MappingProxyType(by_token))
        object.__setattr__(self, "_by_id", MappingProxyType({a.id: a for a in self.accounts}))

    def access_key(self, access_key_id: str) -> tuple[Account, AccessKey] | None:
        return self._by_access_key.get(access_key_id)

    def api_key(self, token: str) -> tuple[Account, ApiKey] | None:
        found = self._by_token.get(_token_digest(token))
        if found is None or not hmac.compare_digest(
            found[1].token.encode("utf-8"), token.encode("utf-8")
        ):
            return None
        return found

    def api_key_by_digest(self, digest: str) -> tuple[Account, ApiKey] | None:
        """The API key whose SHA-256 (hex) is ``digest``: what a console session stores
        instead of the key itself (store/sessions.py)."""
        try:
            return self._by_token.get(bytes.fromhex(digest))
        except ValueError:
            return None

    def account(self, account_id: str) -> Account | None:
        return self._by_id.get(account_id)

    # --- bucket grants (the engine's BucketPolicy) ----------------------------------------

    def may_access(self, account_id: str, bucket: str) -> bool:
        account = self._by_id.get(account_id)
        return account is not None and account.may_access(bucket)

    def owner_of(self, bucket: str) -> str | None:
        """The first account (in file order) whose ``buckets`` patterns match ``bucket``."""
        for account in self.accounts:
            if account.may_access(bucket):
                return account.id
        return None

    @property
    def key_count(self) -> int:
        return len(self._by_access_key) + len(self._by_token)
