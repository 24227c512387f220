"""Who uses the console: a sign-in exchanged for an HttpOnly, SameSite=Strict session cookie.

With a credentials file, a user signs in with an access key id and its secret, or with a
Bedrock API key; the session then acts as that key's account and permissions. The key is looked
up again on every request, so a key removed from the file (or given fewer actions) takes effect
at once. Without one (open mode, loopback only) every browser gets a session of the default
account.

Sessions live in the job store (store/sessions.py), so a sign-in on one API process is valid
on every other behind a load balancer, and survives a restart: stored under the SHA-256 of the
cookie's token, naming the key they act as (an access key id, or the SHA-256 of an API key),
until they expire (``SESSION_SECONDS`` after sign-in, by the service's wall clock).

Each session carries a CSRF token (derived from its cookie's token, so not stored) the page
reads from ``GET /console/api/session`` (no other origin can: there is no CORS) and sends back
in ``X-Batchrock-Csrf`` with every state-changing request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from batchrock.access.credfile import LiveDirectory
from batchrock.access.directory import Principal
from batchrock.api.auth import Identity
from batchrock.service import Caller
from batchrock.settings import Settings
from batchrock.store.sessions import SessionStore, StoredSession, session_id

COOKIE = "batchrock_console"
#: A session ends this long after sign-in, used or not.
SESSION_SECONDS = 12 * 3600


#: What a Region name looks like (us-east-1, eu-central-2, us-gov-west-1, ap-southeast-5).
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
ACCOUNT = re.compile(r"[0-9]{12}")


class SignInRefused(Exception):
    """The credentials given do not sign anyone in (the message says nothing of which part)."""


def _csrf_of(token: str) -> str:
    return hashlib.sha256(b"batchrock-console-csrf:" + token.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Session:
    """One request's view of a stored session (the cookie's token is known only here)."""

    token: str = field(repr=False)
    expires: datetime
    #: ("key", access key id) or ("api", the API key's SHA-256), or None in open mode.
    credential: tuple[str, str] | None = field(repr=False, default=None)
    account_id: str = ""
    #: The Region the console shows (jobs are regional): a header field switches it.
    region: str = ""

    @property
    def csrf(self) -> str:
        return _csrf_of(self.token)

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sessions:
    """Sign-in, and the :class:`Identity` a session cookie stands for now."""

    def __init__(
        self,
        settings: Settings,
        directory: LiveDirectory | None,
        store: SessionStore,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self._store = store
        self._now = now

    @property
    def open_mode(self) -> bool:
        return self.directory is None

    async def _new(self, credential: tuple[str, str] | None, account_id: str) -> Session:
        now = self._now()
        session = Session(
            token=secrets.token_urlsafe(32),
            expires=now + timedelta(seconds=SESSION_SECONDS),
            credential=credential,
            account_id=account_id,
            region=self.settings.default_region,
        )
        kind, value = credential if credential is not None else (None, None)
        stored = StoredSession(
            session_id=session_id(session.token),
            expires_at=session.expires,
            credential_kind=kind,
            credential=value,
            account_id=account_id,
            region=session.region,
        )
        await self._store.add_session(stored, now=now)
        return session

    async def open_session(self) -> Session:
        """Open mode: a session of the default account."""
        assert self.directory is None
        return await self._new(None, self.settings.default_account_id)

    async def sign_in(
        self, access_key_id: str | None, secret: str | None, api_key: str | None
    ) -> Session:
        if self.directory is None:
            return await self.open_session()
        directory = self.directory.current()
        if api_key:
            found_api = directory.api_key(api_key)
            if found_api is None:
                raise SignInRefused()
            digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
            return await self._new(("api", digest), found_api[0].id)
        if not access_key_id or not secret:
            raise SignInRefused()
        found = directory.access_key(access_key_id)
        # The secret is compared in constant time; an unknown key id costs the same compare.
        expected = found[1].secret_access_key if found else secrets.token_urlsafe(30)
        if not hmac.compare_digest(secret.encode(), expected.encode()) or found is None:
            raise SignInRefused()
        return await self._new(("key", access_key_id), found[0].id)

    async def sign_out(self, token: str | None) -> None:
        if token is not None:
            await self._store.remove_session(session_id(token))

    async def session(self, token: str | None) -> Session | None:
        """The live session of a cookie value, or ``None``."""
        if token is None or len(token) > 256:
            return None
        stored = await self._store.get_session(session_id(token), now=self._now())
        if stored is None:
            return None
        credential = None
        if stored.credential_kind is not None and stored.credential is not None:
            credential = (stored.credential_kind, stored.credential)
        return Session(
            token=token,
            expires=stored.expires_at,
            credential=credential,
            account_id=stored.account_id,
            region=stored.region,
        )

    async def identity(self, session: Session) -> Identity | None:
        """Whom the session acts as now; ``None`` when its key is gone from the file (the
        session is ended)."""
        region = session.region
        if session.credential is None:
            if self.directory is not None:  # pragma: no cover - open sessions need open mode
                return None
            return Identity(Caller(session.account_id, region))
        if self.directory is None:  # pragma: no cover - a credentials file does not go away
            return None
        directory = self.directory.current()
        kind, value = session.credential
        principal: Principal | None = None
        if kind == "key":
            found = directory.access_key(value)
            if found is not None:
                account, key = found
                principal = Principal(account.id, key.user, key.actions)
        else:
            found_api = directory.api_key_by_digest(value)
            if found_api is not None:
                account, api = found_api
                principal = Principal(account.id, api.user, api.actions)
        if principal is None or principal.account_id != session.account_id:
            await self.sign_out(session.token)
            return None
        return Identity(Caller(principal.account_id, region), principal)

    async def switch(self, session: Session, region: str, account_id: str | None) -> None:
        """Show another Region (and, in open mode, where any caller may act as any account,
        another account). Raises ValueError for a malformed Region or account id."""
        if not REGION.fullmatch(region):
            raise ValueError(f"{region[:40]!r} is not a Region name (such as us-east-1).")
        if account_id is not None and account_id != session.account_id:
            if session.credential is not None:
                raise ValueError("Signed-in users see their own account's jobs only.")
            if not ACCOUNT.fullmatch(account_id):
                raise ValueError(f"{account_id[:40]!r} is not a 12-digit account id.")
            session.account_id = account_id
        session.region = region
        await self._store.update_session(
            session_id(session.token), account_id=session.account_id, region=region
        )

    def cookie_header(self, session: Session | None, secure: bool) -> tuple[bytes, bytes]:
        """``Set-Cookie`` for ``session`` (``None``: clear it)."""
        flags = "; Path=/console; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        if session is None:
            return b"set-cookie", f"{COOKIE}=; Max-Age=0{flags}".encode()
        return b"set-cookie", f"{COOKIE}={session.token}; Max-Age={SESSION_SECONDS}{flags}".encode()
