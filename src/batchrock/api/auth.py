"""Who is calling, at the API's edge: open mode, or verified credentials and permissions.

Without a credentials file (open mode) any credentials are accepted as before
(:func:`identity.caller_from`). With one, every request is authenticated by
:mod:`batchrock.access` and each operation checked against the key's ``actions``; the typed
reasons it gives are turned here, once, into the status, ``x-amzn-ErrorType`` and message
Bedrock answers with (docs/access.md has the table).

Requests with a wrong signature, or an unknown key, are counted per client address and
access key id and per address (:mod:`batchrock.api.wrong_signatures`): past a bound, they are
answered ``ThrottlingException`` until the oldest counted failure leaves the window, right
secret or wrong (an answer that told them apart would be an oracle for the guesser).
docs/access.md, "Wrong signatures".

Each counted wrong signature is an INFO line, but a bounded number
(:class:`~batchrock.logs.BoundedWarnings`, the window of setting ``bad_request_log_seconds``):
the per-address bound alone let a client with many addresses (an IPv6 /64) write a line per
request. Other refusals (unknown keys, malformed headers) write no line of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchrock.access import errors as auth
from batchrock.access.authenticate import authenticate
from batchrock.access.credfile import LiveDirectory
from batchrock.access.directory import Principal
from batchrock.access.sigv4 import HttpRequest
from batchrock.api import identity
from batchrock.api.wrong_signatures import WrongSignatures
from batchrock.errors import (
    AccessDeniedException,
    ApiKeyRejected,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ServiceError,
    UnrecognizedClientException,
)
from batchrock.logs import BoundedWarnings
from batchrock.service import Caller
from batchrock.settings import Settings

log = logging.getLogger("batchrock.api")

#: Operations whose resource is the job named in the request (by this member).
_JOB_MEMBER = {
    "GetModelInvocationJob": "jobIdentifier",
    "StopModelInvocationJob": "jobIdentifier",
    "TagResource": "resourceARN",
    "UntagResource": "resourceARN",
    "ListTagsForResource": "resourceARN",
}


@dataclass(frozen=True, slots=True)
class Identity:
    caller: Caller
    #: ``None`` in open mode: nothing was verified, everything is allowed.
    principal: Principal | None = None


_OPEN_KEPT = 1024


class Gate:
    """Authentication and authorization for :class:`batchrock.api.app.BedrockApp`."""

    def __init__(
        self,
        settings: Settings,
        now: Callable[[], datetime],
        directory: LiveDirectory | None = None,
        wrong_signatures: WrongSignatures | None = None,
    ) -> None:
        self.settings = settings
        self._now = now
        if directory is None and settings.credentials_file is not None:
            directory = LiveDirectory(settings.credentials_file)
        self.directory = directory
        #: Requests with a wrong signature or an unknown key: per address and key, per address.
        self.wrong_signatures = wrong_signatures
        #: Their log lines: 3 an address and 10 in all a window, then one summary line.
        self.wrong_signature_log = BoundedWarnings(
            log,
            "wrong signature",
            "wrong signatures",
            settings.bad_request_log_seconds,
            action="wrong_signature",
            summary_action="wrong_signatures_summary",
            level=logging.INFO,
        )
        #: Open mode's identities, by caller (at most _OPEN_KEPT).
        self._open: dict[Caller, Identity] = {}
        #: And by the credential (what follows ``Credential=`` in the Authorization header,
        #: as sent) when that alone decides the caller (at most _OPEN_KEPT): a client sends
        #: the same one with every request.
        self._open_credentials: dict[bytes, Identity] = {}
        #: Verified identities, by (principal, region) (at most _OPEN_KEPT).
        self._verified_identities: dict[tuple[Principal, str], Identity] = {}

    def identify(
        self,
        scope: MutableMapping[str, Any],
        raw_path: str,
        query: str,
        body: bytes,
    ) -> Identity:
        directory = self.directory
        if directory is None:
            return self.open_identity(_header(scope["headers"], b"authorization"), query)
        return self._verified(directory, scope, raw_path, query, body)

    def open_identity(self, authorization: bytes | None, query: str) -> Identity:
        """Open mode's :meth:`identify`, from the request's first Authorization header (as
        sent; ``None`` without one) and its query."""
        credential = None
        if authorization is not None:
            start = authorization.find(b"Credential=")
            if start >= 0:
                end = authorization.find(b",", start)
                credential = authorization[start + 11 : end if end >= 0 else None]
                found = self._open_credentials.get(credential)
                if found is not None:
                    return found
        caller = identity.caller_from(
            None if authorization is None else authorization.decode("latin-1"),
            query,
            default_region=self.settings.default_region,
            default_account=self.settings.default_account_id,
        )
        # One Identity per Caller (both frozen): made once, not per request.
        found = self._open.get(caller)
        if found is None:
            if len(self._open) >= _OPEN_KEPT:
                self._open.clear()
            found = self._open[caller] = Identity(caller)
        if credential is not None and identity.decides_caller(credential.decode("latin-1")):
            if len(self._open_credentials) >= _OPEN_KEPT:
                self._open_credentials.clear()
            self._open_credentials[credential] = found
        return found

    def _verified(
        self,
        directory: LiveDirectory,
        scope: MutableMapping[str, Any],
        raw_path: str,
        query: str,
        body: bytes,
    ) -> Identity:
        """:meth:`identify` with a credentials file: the request's signature checked."""
        request = HttpRequest(
            method=scope["method"],
            raw_path=raw_path,
            query=query,
            headers=header_pairs(scope["headers"]),
            body=body,
            secure=scope.get("scheme") == "https",
        )
        try:
            who = authenticate(request, directory.current(), self._now())
        except auth.AuthError as exc:
            signer = _guessed_key(exc)
            if self.wrong_signatures is not None and signer is not None:
                source = _source(scope)
                self.wrong_signatures.failed(source, signer)  # 429 past a bound, not counted
                # A known access key id is no secret; the secret and the signature are never
                # logged. (No status in the line: the OpenAI-compatible API answers its own.)
                self.wrong_signature_log.warn(
                    asyncio.get_running_loop(), source, source, f"access key {signer[:32]}"
                )
            raise service_error(exc) from None
        if who.access_key_id is not None and self.wrong_signatures is not None:
            self.wrong_signatures.succeeded(_source(scope), who.access_key_id)
        region = who.region or self.settings.default_region
        # One Identity per (principal, region), as in open mode: a key signs request after
        # request, and two frozen dataclasses a request cost about a microsecond.
        found = self._verified_identities.get((who.principal, region))
        if found is None:
            if len(self._verified_identities) >= _OPEN_KEPT:
                self._verified_identities.clear()
            found = Identity(Caller(who.principal.account_id, region), who.principal)
            self._verified_identities[(who.principal, region)] = found
        return found

    def authorize(self, who: Identity, operation: str, params: dict[str, Any]) -> None:
        principal = who.principal
        action = f"bedrock:{operation}"
        if principal is None or principal.may(action):
            return
        partition = identity.partition(who.caller.region)
        denied = auth.NotAuthorized(
            principal.arn(partition), action, _resource(operation, params, who.caller)
        )
        raise service_error(denied)


def _guessed_key(exc: auth.AuthError) -> str | None:
    """The access key whose secret a refused request got wrong, if it counts as a failed guess
    at a secret: a wrong signature for a known key (a short-term API key forged for one
    included). An access key id or API key no account holds is not counted: there is no secret
    behind it to guess, and the usual one is a key rotated out that old clients still send,
    which must not lock their address out of the new key (docs/access.md, "Wrong
    signatures")."""
    if isinstance(exc, auth.SignatureMismatch):
        return exc.access_key_id
    if isinstance(exc, auth.UnknownApiKey):
        return exc.signed_by
    return None


def _source(scope: MutableMapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _resource(operation: str, params: dict[str, Any], caller: Caller) -> str:
    member = _JOB_MEMBER.get(operation)
    named = params.get(member) if member else None
    if isinstance(named, str) and named.startswith("arn:"):
        return named
    job = named if isinstance(named, str) else "*"
    return identity.job_arn(caller.region, caller.account_id, job)


def service_error(exc: auth.AuthError) -> ServiceError:
    """Bedrock's answer to each reason a request is not let in."""
    match exc:
        case auth.MissingCredentials():
            return MissingAuthenticationTokenException()
        case auth.MalformedAuthorization(problems=problems, header=header):
            suffix = f" Authorization={header}" if header else ""
            return IncompleteSignatureException(" ".join(problems) + suffix)
        case auth.MalformedPresignedQuery(missing=missing, problem=problem):
            if missing:
                return IncompleteSignatureException(
                    " ".join(f"AWS query-string parameters must include '{m}'." for m in missing)
                    + " Re-examine the query-string parameters."
                )
            return IncompleteSignatureException(problem)
        case auth.MalformedCredential(credential=credential):
            return IncompleteSignatureException(
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                f"keyid/date/region/service/term, got '{credential}'"
            )
        case auth.MalformedDate(value=value):
            return IncompleteSignatureException(
                f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            )
        case auth.WrongScope():
            return InvalidSignatureException(_scope_message(exc))
        case auth.UnknownAccessKey() | auth.SessionTokenRefused():
            return UnrecognizedClientException()
        case auth.SignatureExpired(request_date=d, earliest=earliest, now=now, window=window):
            return InvalidSignatureException(
                f"Signature expired: {d} is now earlier than {earliest} ({now} - {window})"
            )
        case auth.SignatureNotYetCurrent(request_date=d, latest=latest, now=now):
            return InvalidSignatureException(
                f"Signature not yet current: {d} is still later than {latest} ({now} + 5 min.)"
            )
        case auth.SignatureMismatch(canonical_request=canonical, string_to_sign=sts):
            return InvalidSignatureException(
                InvalidSignatureException().message
                + f"\n\nThe Canonical String for this request should have been\n'{canonical}'"
                + f"\n\nThe String-to-Sign should have been\n'{sts}'\n"
            )
        case auth.BearerNeedsTls():
            return AccessDeniedException(
                "Bearer token authorization requires HTTPS: serve with --tls-cert and "
                "--tls-key, or sign requests with an access key (SigV4). A token sent over "
                "plain HTTP may have been seen by others: consider replacing it."
            )
        case auth.BadApiKeyFormat():
            return ApiKeyRejected("Invalid API Key format: Must start with pre-defined prefix")
        case auth.UnknownApiKey():
            return ApiKeyRejected()
        case auth.NotAuthorized(principal_arn=who, action=action, resource=resource):
            return AccessDeniedException(
                f"User: {who} is not authorized to perform: {action} on resource: {resource} "
                f"because no identity-based policy allows the {action} action"
            )
    raise TypeError(f"no answer for {exc!r}")  # pragma: no cover - every AuthError is above


def _scope_message(exc: auth.WrongScope) -> str:
    if exc.field == "service":
        return f"Credential should be scoped to correct service: '{exc.expected}'. "
    if exc.field == "region":
        return f"Credential should be scoped to a valid region, not '{exc.value}'. "
    if exc.field == "terminator":
        return (
            f"Credential should be scoped with a valid terminator: '{exc.expected}', "
            f"not '{exc.value}'. "
        )
    return (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        f"HTTP: '{exc.value}' != '{exc.expected}', from '{exc.request_date}'."
    )


def header_pairs(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def _header(raw: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), as sent."""
    for key, value in raw:
        if key.lower() == name:
            return value
    return None
