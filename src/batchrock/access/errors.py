"""Why a request was not let in, in domain terms.

``api/auth.py`` maps each class to the status, error code and message Bedrock answers with
(docs/access.md lists them). The fields carry what those messages quote.
"""

from __future__ import annotations

from dataclasses import dataclass


class AuthError(Exception):
    """A request failed authentication or authorization."""


@dataclass
class MissingCredentials(AuthError):
    """Neither an Authorization header nor a presigned query string."""


@dataclass
class MalformedAuthorization(AuthError):
    """The Authorization header cannot be read; ``problems`` are the sentences to report."""

    problems: list[str]
    header: str


@dataclass
class MalformedPresignedQuery(AuthError):
    """A presigned query string lacks parameters (``missing``) or has a bad one (``problem``)."""

    missing: list[str]
    problem: str | None = None


@dataclass
class MalformedCredential(AuthError):
    """``Credential=`` is not ``key/date/region/service/aws4_request``."""

    credential: str


@dataclass
class MalformedDate(AuthError):
    """X-Amz-Date (or Date) is not an ISO-8601 basic-format timestamp."""

    value: str


@dataclass
class WrongScope(AuthError):
    """The credential scope names the wrong service, terminator or an unusable region, or its
    date does not match the request's. ``field`` is one of service, region, terminator, date."""

    field: str
    value: str
    expected: str = ""
    request_date: str = ""


@dataclass
class UnknownAccessKey(AuthError):
    """No account holds this access key id."""

    access_key_id: str


@dataclass
class SessionTokenRefused(AuthError):
    """The request carries X-Amz-Security-Token: batchrock issues no temporary credentials."""


@dataclass
class SignatureExpired(AuthError):
    """The signing time is before ``earliest`` (timestamps as YYYYMMDDTHHMMSSZ)."""

    request_date: str
    earliest: str
    now: str
    #: "5 min." for the clock-skew window, "N sec." for a presigned URL's X-Amz-Expires.
    window: str


@dataclass
class SignatureNotYetCurrent(AuthError):
    """The signing time is after ``latest`` (more than the skew window ahead of us)."""

    request_date: str
    latest: str
    now: str


@dataclass
class SignatureMismatch(AuthError):
    """The signature is not the one the key's secret gives; what we computed, for the client."""

    canonical_request: str
    string_to_sign: str
    #: The key whose secret was tried (no secret: wrong guesses are counted against it).
    access_key_id: str


@dataclass
class BearerNeedsTls(AuthError):
    """A bearer token arrived over plain HTTP (and was not looked at)."""


@dataclass
class BadApiKeyFormat(AuthError):
    """The bearer token has neither API-key prefix (``ABSK``, ``bedrock-api-key-``)."""


@dataclass
class UnknownApiKey(AuthError):
    """No account holds this API key, or a short-term key did not verify."""

    #: A short-term key whose signature was wrong: the access key it claims to be signed by.
    signed_by: str | None = None


@dataclass
class NotAuthorized(AuthError):
    """The key's ``actions`` do not allow ``action`` on ``resource``."""

    principal_arn: str
    action: str
    resource: str
