"""One request in, one verified principal out: SigV4 (header or presigned) or a bearer token.

Bedrock API keys arrive as ``Authorization: Bearer <token>`` (what boto3 sends when
``AWS_BEARER_TOKEN_BEDROCK`` is set). They are accepted only over TLS, as botocore itself
insists: over plain HTTP the token is refused before it is even looked up. Two kinds:

- long-term keys, ``ABSK...``, listed in the credentials file (``api_keys``);
- short-term keys, ``bedrock-api-key-`` + base64 of a presigned SigV4 URL for
  ``Action=CallWithBearerToken`` (what AWS's ``aws-bedrock-token-generator`` makes from an
  access key): verified as a presigned request signed by one of the file's access keys, valid
  for at most 12 hours and only in the region it was made for.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from batchrock.access import sigv4
from batchrock.access.credfile import API_KEY_PREFIX
from batchrock.access.directory import Directory, Principal
from batchrock.access.errors import (
    AuthError,
    BadApiKeyFormat,
    BearerNeedsTls,
    MissingCredentials,
    SignatureMismatch,
    UnknownApiKey,
)
from batchrock.access.sigv4 import HttpRequest

SHORT_TERM_PREFIX = "bedrock-api-key-"
_SHORT_TERM_VERSION = "&Version=1"
#: A short-term key lives 12 hours at most (aws-bedrock-token-generator's TOKEN_DURATION).
SHORT_TERM_MAX_SECONDS = 43_200


@dataclass(frozen=True, slots=True)
class Authenticated:
    principal: Principal
    #: The region the request was signed for; ``None`` for long-term API keys, which name none.
    region: str | None
    how: str  # "sigv4", "presigned", "api-key", "short-term-api-key"
    #: The access key that signed the request; ``None`` for long-term API keys.
    access_key_id: str | None = None


def authenticate(request: HttpRequest, directory: Directory, now: datetime) -> Authenticated:
    """Who sent ``request``, or the :mod:`.errors` reason it is not let in."""
    authorization = request.header("authorization")
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return _bearer(token.strip(), request, directory, now)
        claim = sigv4.claim_from_header(authorization, request)
        account, key = sigv4.verify(claim, request, directory, now)
        principal = Principal(account.id, key.user, key.actions)
        return Authenticated(principal, claim.region, "sigv4", key.access_key_id)
    pairs = sigv4.parse_query(request.query)
    if sigv4.is_presigned(pairs):
        claim = sigv4.claim_from_query(pairs)
        account, key = sigv4.verify(claim, request, directory, now)
        principal = Principal(account.id, key.user, key.actions)
        return Authenticated(principal, claim.region, "presigned", key.access_key_id)
    raise MissingCredentials()


def _bearer(token: str, request: HttpRequest, directory: Directory, now: datetime) -> Authenticated:
    if not request.secure:
        raise BearerNeedsTls()
    if token.startswith(API_KEY_PREFIX):
        found = directory.api_key(token)
        if found is None:
            raise UnknownApiKey()
        account, api_key = found
        return Authenticated(Principal(account.id, api_key.user, api_key.actions), None, "api-key")
    if token.startswith(SHORT_TERM_PREFIX):
        return _short_term(token[len(SHORT_TERM_PREFIX) :], directory, now)
    raise BadApiKeyFormat()


def _short_term(encoded: str, directory: Directory, now: datetime) -> Authenticated:
    try:
        url = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise UnknownApiKey() from None
    host, _, rest = url.removesuffix(_SHORT_TERM_VERSION).partition("/")
    if not url.endswith(_SHORT_TERM_VERSION) or not rest.startswith("?"):
        raise UnknownApiKey()
    pairs = sigv4.parse_query(rest[1:])
    if ("Action", "CallWithBearerToken") not in pairs or not sigv4.is_presigned(pairs):
        raise UnknownApiKey()
    # The token is the presigned request the generator signed: POST https://HOST/?...
    signed = HttpRequest("POST", "/", rest[1:], [("host", host)], b"", secure=True)
    try:
        claim = sigv4.claim_from_query(pairs)
        if claim.expires is None or claim.expires > SHORT_TERM_MAX_SECONDS:
            raise UnknownApiKey()
        account, key = sigv4.verify(claim, signed, directory, now)
    except SignatureMismatch as exc:
        raise UnknownApiKey(signed_by=exc.access_key_id) from None
    except AuthError:
        # AWS answers every bad API key alike; so does batchrock.
        raise UnknownApiKey() from None
    principal = Principal(account.id, key.user, key.actions)
    return Authenticated(principal, claim.region, "short-term-api-key", key.access_key_id)
