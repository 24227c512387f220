"""SigV4 verification of one request: the Authorization header form and presigned URLs.

The canonical request, string to sign and signature are those of botocore's own signer
(:class:`botocore.auth.SigV4Auth`, the code boto3 and the AWS CLI sign with; built here step
for step without its request objects, and compared with it in tests) over the request that
arrived: the raw, still percent-encoded path (encoded once more, as SigV4 wants for every
service but S3, so ``%3A`` in an ARN signs as ``%253A`` in boto3, the AWS CLI and the
JavaScript SDK alike), the decoded query re-encoded canonically, exactly the headers the
client listed in ``SignedHeaders``, and the hash of the body that arrived (a signed
``x-amz-content-sha256`` that does not match the body therefore fails as a wrong signature).
Only the checks around it are ours: the credential scope, the key lookup, session tokens, the
clock-skew window and presigned expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_plus, urlsplit

from botocore.utils import normalize_url_path

from batchrock.access.directory import AccessKey, Account, Directory
from batchrock.access.errors import (
    MalformedAuthorization,
    MalformedCredential,
    MalformedDate,
    MalformedPresignedQuery,
    SessionTokenRefused,
    SignatureExpired,
    SignatureMismatch,
    SignatureNotYetCurrent,
    UnknownAccessKey,
    WrongScope,
)

SERVICE = "bedrock"
ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
TIMESTAMP = "%Y%m%dT%H%M%SZ"
#: AWS's clock-skew window for signed requests.
SKEW = timedelta(minutes=5)
#: The longest X-Amz-Expires AWS accepts (a week).
MAX_EXPIRES = 604_800
#: The query parameters that make a request a presigned one.
PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_PRESIGN_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Amz-Date",
)
_BASIC_DATE = re.compile(r"\d{8}T\d{6}Z")
_REGION = re.compile(r"(?=.{1,20}$)[a-z0-9]+(-[a-z0-9]+)*")
_HEADER_PARAMS = ("Credential", "SignedHeaders", "Signature")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What arrived, as the wire had it: the raw path and query, header names lower-case
    (repeats kept, in order), the body, and whether the connection was TLS."""

    method: str
    raw_path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    secure: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Claim:
    """What a request says about its signature, before anything is checked."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str
    #: The signing time, YYYYMMDDTHHMMSSZ.
    timestamp: str
    #: Presigned URLs only: X-Amz-Expires (``None``: the clock-skew window applies).
    expires: int | None
    session_token: bool
    #: The query parameters covered by the signature (all but X-Amz-Signature).
    signed_query: tuple[tuple[str, str], ...]


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order, repeats kept: ``+`` is a space, as the API reads
    it, so what is verified is what the handlers see."""
    pairs = []
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def is_presigned(pairs: Sequence[tuple[str, str]]) -> bool:
    return any(name in PRESIGN_PARAMS for name, _ in pairs)


# --- reading the claim ----------------------------------------------------------------------


def claim_from_header(authorization: str, request: HttpRequest) -> Claim:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm.startswith("AWS4-") and algorithm != ALGORITHM:
        raise MalformedAuthorization([f"Unsupported AWS 'algorithm': '{algorithm}'."], "")
    values: dict[str, str] = {}
    if algorithm == ALGORITHM:
        for part in rest.split(","):
            item = part.strip()
            if not item:
                continue
            name, eq, value = item.partition("=")
            if not eq:
                raise MalformedAuthorization(
                    [
                        f"'{item}' not a valid key=value pair (missing equal-sign) in "
                        f"Authorization header: '{authorization}'."
                    ],
                    "",
                )
            if name in values:
                # Two signatures (or scopes) in one header: which one counts is a guess.
                raise MalformedAuthorization(
                    [f"'{name}' appears more than once in the Authorization header."],
                    authorization,
                )
            values[name] = value
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in _HEADER_PARAMS
        if not values.get(name)
    ]
    date_header = request.header("x-amz-date")
    plain_date = request.header("date")
    if date_header is None and plain_date is None:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        raise MalformedAuthorization(problems, authorization)
    signed = tuple(values["SignedHeaders"].split(";"))
    if "host" not in signed:
        raise MalformedAuthorization(
            ["'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."], ""
        )
    timestamp = (
        _basic_date(date_header) if date_header is not None else _http_date(plain_date or "")
    )
    return _claim(
        values["Credential"],
        signed,
        values["Signature"],
        timestamp,
        expires=None,
        session_token=request.header("x-amz-security-token") is not None,
        signed_query=tuple(parse_query(request.query)),
    )


def claim_from_query(pairs: Sequence[tuple[str, str]]) -> Claim:
    found: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("X-Amz-"):
            if name in found:
                raise MalformedPresignedQuery([], f"{name} must appear only once.")
            found[name] = value
    missing = [name for name in _PRESIGN_REQUIRED if not found.get(name)]
    if missing:
        raise MalformedPresignedQuery(missing)
    if found["X-Amz-Algorithm"] != ALGORITHM:
        raise MalformedPresignedQuery(
            [], f"Unsupported AWS 'algorithm': '{found['X-Amz-Algorithm']}'."
        )
    expires: int | None = None
    if "X-Amz-Expires" in found:
        raw = found["X-Amz-Expires"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EXPIRES:
            raise MalformedPresignedQuery(
                [], f"X-Amz-Expires must be a whole number of seconds from 0 to {MAX_EXPIRES}."
            )
        expires = int(raw)
    signed = tuple(found["X-Amz-SignedHeaders"].split(";"))
    if "host" not in signed:
        raise MalformedPresignedQuery(
            [], "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    return _claim(
        found["X-Amz-Credential"],
        signed,
        found["X-Amz-Signature"],
        _basic_date(found["X-Amz-Date"]),
        expires=expires,
        session_token="X-Amz-Security-Token" in found,
        signed_query=tuple(p for p in pairs if p[0] != "X-Amz-Signature"),
    )


def _claim(
    credential: str,
    signed: tuple[str, ...],
    signature: str,
    timestamp: str,
    *,
    expires: int | None,
    session_token: bool,
    signed_query: tuple[tuple[str, str], ...],
) -> Claim:
    parts = credential.split("/")
    if len(parts) != 5:
        raise MalformedCredential(credential)
    key_id, scope_date, region, service, terminator = parts
    return Claim(
        key_id,
        scope_date,
        region,
        service,
        terminator,
        signed,
        signature,
        timestamp,
        expires,
        session_token,
        signed_query,
    )


def _basic_date(value: str) -> str:
    if _BASIC_DATE.fullmatch(value):
        try:
            parse_timestamp(value)
            return value
        except ValueError:
            pass
    raise MalformedDate(value)


def parse_timestamp(value: str) -> datetime:
    """An X-Amz-Date that matched ``_BASIC_DATE`` (UTC) as ``datetime.strptime(value,
    TIMESTAMP)`` reads it, ``ValueError`` where that raises; at a hundredth of strptime's
    cost for ASCII digits (it ran twice a signed request). Only that exact shape reaches
    ``fromisoformat`` (which reads others too), and for it the two agree on every field
    value (tests/access/test_sigv4_fast.py); other digits (``\\d`` matches any script's, as
    strptime's fields do) go to strptime as before."""
    if not value.isascii():
        return datetime.strptime(value, TIMESTAMP).replace(tzinfo=UTC)
    if (
        len(value) != 16
        or value[8] != "T"
        or value[15] != "Z"
        or not value[:8].isdigit()
        or not value[9:15].isdigit()
    ):
        raise ValueError(f"not a {TIMESTAMP} time: {value!r}")
    return datetime.fromisoformat(value)


def _http_date(value: str) -> str:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise MalformedDate(value) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(TIMESTAMP)


# --- checking it ----------------------------------------------------------------------------


def verify(
    claim: Claim,
    request: HttpRequest,
    directory: Directory,
    now: datetime,
    *,
    max_expires: int = MAX_EXPIRES,
) -> tuple[Account, AccessKey]:
    """The account and key that signed ``request``, or the :mod:`.errors` reason it fails."""
    check_scope(claim)
    if claim.session_token:
        raise SessionTokenRefused()
    found = directory.access_key(claim.access_key_id)
    if found is None:
        raise UnknownAccessKey(claim.access_key_id)
    check_time(claim, now, max_expires)
    expected, canonical, string_to_sign = _sign(claim, request, found[1].secret_access_key)
    if not hmac.compare_digest(expected.encode(), claim.signature.encode("utf-8", "replace")):
        raise SignatureMismatch(canonical, string_to_sign, claim.access_key_id)
    return found


def check_scope(claim: Claim) -> None:
    if claim.terminator != TERMINATOR:
        raise WrongScope("terminator", claim.terminator, TERMINATOR)
    if claim.service != SERVICE:
        raise WrongScope("service", claim.service, SERVICE)
    if not _REGION.fullmatch(claim.region):
        raise WrongScope("region", claim.region)
    if claim.scope_date != claim.timestamp[:8]:
        raise WrongScope("date", claim.scope_date, claim.timestamp[:8], claim.timestamp)


def check_time(claim: Claim, now: datetime, max_expires: int = MAX_EXPIRES) -> None:
    signed_at = parse_timestamp(claim.timestamp)
    now = now.astimezone(UTC).replace(microsecond=0)
    latest = now + SKEW
    if signed_at > latest:
        raise SignatureNotYetCurrent(
            claim.timestamp, latest.strftime(TIMESTAMP), now.strftime(TIMESTAMP)
        )
    if claim.expires is None:
        earliest, window = now - SKEW, "5 min."
    else:
        lifetime = min(claim.expires, max_expires)
        earliest, window = now - timedelta(seconds=lifetime), f"{lifetime} sec."
    if signed_at < earliest:
        raise SignatureExpired(
            claim.timestamp, earliest.strftime(TIMESTAMP), now.strftime(TIMESTAMP), window
        )


#: Signing keys derived (four HMACs each) by (secret, scope date, region): a client signs
#: every request of a day in a region with the same one. Bounded; never written anywhere.
_signing_keys: dict[tuple[str, str, str], bytes] = {}
_SIGNING_KEYS_KEPT = 1024


def signing_key(secret: str, date: str, region: str) -> bytes:
    """SigV4's signing key for the ``bedrock`` service, as botocore's ``signature`` derives
    it, derived once per (secret, date, region)."""
    found = _signing_keys.get((secret, date, region))
    if found is None:
        found = f"AWS4{secret}".encode()
        for part in (date, region, SERVICE, TERMINATOR):
            found = hmac.new(found, part.encode("utf-8"), hashlib.sha256).digest()
        if len(_signing_keys) >= _SIGNING_KEYS_KEPT:
            _signing_keys.clear()
        _signing_keys[(secret, date, region)] = found
    return found


def _sign(claim: Claim, request: HttpRequest, secret: str) -> tuple[str, str, str]:
    """The signature, canonical request and string to sign that botocore's ``SigV4Auth``
    computes for ``request`` as the client signed it (exactly the headers it named, the body
    that came), built from the parts directly: through a rebuilt ``AWSRequest`` and its
    ``email.message`` headers this was most of a signed request's CPU. The path goes through
    botocore's own ``urlsplit``/``normalize_url_path``/``quote`` steps; the rest follows
    ``SigV4Auth.canonical_request`` line by line (tests/access/test_sigv4_fast.py compares the
    two on varied requests)."""
    body_hash = hashlib.sha256(request.body).hexdigest() if request.body else _EMPTY_SHA256
    canonical_path, path_query = _canonical_path(request.raw_path)
    wanted = set(claim.signed_headers)
    kept = [(n, v) for n, v in request.headers if n in wanted and n != _CONTENT_SHA256]
    if _CONTENT_SHA256 in wanted and any(n == _CONTENT_SHA256 for n, _ in request.headers):
        # Signed over the body that came, whatever the header claims; once, last.
        kept.append((_CONTENT_SHA256, body_hash))
    # For each name the client listed (as it wrote it, repeats kept), every value of that
    # header, as botocore's case-insensitive ``get_all`` finds them.
    chosen = [
        (name, value) for name in claim.signed_headers for n, value in kept if n == name.lower()
    ]
    lines = []
    for key in sorted({name for name, _ in chosen}):
        low = key.lower()
        value = ",".join(" ".join(v.split()) for n, v in chosen if n.lower() == low)
        lines.append(f"{key}:{value}")
    signed = ";".join(sorted(name.lower().strip() for name in {name for name, _ in chosen}))
    canonical = "\n".join(
        [
            request.method.upper(),
            canonical_path,
            _canonical_query(claim.signed_query) if claim.signed_query else _url_query(path_query),
            "\n".join(lines) + "\n",
            signed,
            body_hash,
        ]
    )
    date = claim.timestamp[0:8]
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            claim.timestamp,
            f"{date}/{claim.region}/{SERVICE}/{TERMINATOR}",
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )
    signing = signing_key(secret, date, claim.region)
    signature = hmac.digest(signing, string_to_sign.encode("utf-8"), "sha256").hex()
    return signature, canonical, string_to_sign


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Canonical paths (and what botocore's ``urlsplit`` leaves as the query) by raw path: a
#: client polling a job signs the same path again and again. Bounded.
_canonical_paths: dict[str, tuple[str, str]] = {}
_CANONICAL_PATHS_KEPT = 1024


def _canonical_path(raw_path: str) -> tuple[str, str]:
    """The canonical request's path for ``raw_path``, as botocore's ``urlsplit``,
    ``normalize_url_path`` and ``quote`` make it, and the query ``urlsplit`` finds in it."""
    found = _canonical_paths.get(raw_path)
    if found is None:
        # The router reads "a" as "/a" too. '#' cannot be part of a request path; escaped,
        # it cannot end the URL early.
        path = raw_path if raw_path.startswith("/") else "/" + raw_path
        parts = urlsplit("https://batchrock" + path.replace("#", "%23"))
        found = quote(normalize_url_path(parts.path), safe="/~"), parts.query
        if len(_canonical_paths) >= _CANONICAL_PATHS_KEPT:
            _canonical_paths.clear()
        _canonical_paths[raw_path] = found
    return found


_CONTENT_SHA256 = "x-amz-content-sha256"


def _canonical_query(params: Sequence[tuple[str, str]]) -> str:
    """``SigV4Auth._canonical_query_string_params``: each name and value encoded, sorted."""
    pairs = sorted((quote(k, safe="-_.~"), quote(str(v), safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _url_query(query: str) -> str:
    """``SigV4Auth._canonical_query_string_url``: the URL's own query, pairs sorted as sent."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{k}={v}" for k, v in pairs)
