"""One HTTP call with AWS CLI v2's retry rules (standard mode: 3 attempts by default).

Retried: connection failures, HTTP 500/502/503/504, throttling and transient error codes.
Between attempts it sleeps ``random() * 2**(attempt-1)`` seconds (capped at 20), as botocore's
standard retry mode does. Connections are kept open across the pages of one command.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from batchrock.cli import debuglog, sigv4
from batchrock.cli.credentials import Credentials
from batchrock.cli.errors import CliError, EndpointError

_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
}
_TRANSIENT = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
_RETRY_STATUS = {500, 502, 503, 504}


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.attempts = 1

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        return json.loads(self.body)


def error_code(resp: Response) -> tuple[str, str, dict[str, Any]]:
    """(code, message, body) of an error response, with botocore's rest-json rules."""
    stripped = resp.body.strip()
    if resp.status >= 500 and (not stripped or stripped.startswith(b"<html>")):
        return str(resp.status), http.client.responses.get(resp.status, ""), {}
    try:
        body = json.loads(stripped) if stripped else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = resp.headers.get("x-amzn-errortype")
    if code is None:
        code = body.get("code", body.get("Code", body.get("__type", str(resp.status))))
    code = str(code).split(":", 1)[0].rsplit("#", 1)[-1]
    message = body.get("message", body.get("Message", ""))
    return code or "Unknown", str(message), body


class Transport:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        service: str,
        credentials: Credentials | None,
        bearer_token: str | None = None,
        verify: bool = True,
        ca_bundle: str | None = None,
        connect_timeout: float | None = 60.0,
        read_timeout: float | None = 60.0,
        max_attempts: int = 3,
        user_agent: str = "batchrock-cli",
        proxy: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.proxy = urlsplit(proxy) if proxy else None
        self.region = region
        self.service = service
        self.credentials = credentials
        self.bearer_token = bearer_token
        self.verify = verify
        self.ca_bundle = ca_bundle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.user_agent = user_agent
        self._conn: http.client.HTTPConnection | None = None
        self._proxy_headers: dict[str, str] = {}
        parts = urlsplit(self.endpoint)
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")

    def url_for(self, path: str, query: list[tuple[str, str]]) -> str:
        url = f"{self.scheme}://{self.netloc}{self.base_path}{path}"
        if query:
            url += "?" + "&".join(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query
            )
        return url

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.connect_timeout
            host, port = self.host, self.port
            proxy_headers: dict[str, str] = {}
            if self.proxy is not None:
                host, port = self.proxy.hostname or "", self.proxy.port
                if self.proxy.username is not None:
                    import base64
                    from urllib.parse import unquote

                    userinfo = (
                        f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
                    )
                    token = base64.b64encode(userinfo.encode()).decode()
                    proxy_headers["Proxy-Authorization"] = f"Basic {token}"
            if self.scheme == "https":
                import ssl

                ctx = ssl.create_default_context(cafile=self.ca_bundle)
                if not self.verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=ctx
                )
                if self.proxy is not None:
                    # HTTPS through a proxy: a CONNECT tunnel, TLS end to end.
                    conn.set_tunnel(self.host, self.port, headers=proxy_headers)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            self._proxy_headers = proxy_headers if self.scheme == "http" else {}
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(
        self, method: str, path: str, query: list[tuple[str, str]], body: bytes | None
    ) -> Response:
        if self.scheme not in ("http", "https"):
            raise CliError(
                f"An HTTP Client raised an unhandled exception: Not supported URL scheme "
                f"{self.scheme}"
            )
        payload = body or b""
        invocation = _uuid4()
        url = self.url_for(path, query)
        attempt = 0
        while True:
            attempt += 1
            headers = self._headers(method, path, query, payload, invocation, attempt)
            try:
                resp = self._once(method, path, query, headers, payload)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt < self.max_attempts:
                    self._sleep(attempt)
                    continue
                raise _connection_error(exc, url) from exc
            resp.attempts = attempt
            if resp.status >= 300 and attempt < self.max_attempts and self.retryable(resp):
                self._sleep(attempt)
                continue
            return resp

    def _headers(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        payload: bytes,
        invocation: str,
        attempt: int,
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if method != "GET" or payload:
            headers["Content-Type"] = "application/json"
        now = datetime.now(UTC)
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        elif self.credentials is not None:
            headers.update(
                sigv4.sign(
                    method=method,
                    host=self.netloc,
                    path=self.base_path + path,
                    query=query,
                    headers=dict(headers),
                    body=payload,
                    creds=self.credentials,
                    region=self.region,
                    service=self.service,
                    now=now,
                )
            )
        headers["User-Agent"] = self.user_agent
        headers["amz-sdk-invocation-id"] = invocation
        if attempt == 1:
            headers["amz-sdk-request"] = "attempt=1"
        else:
            ttl = (now + timedelta(seconds=self.read_timeout or 60)).strftime("%Y%m%dT%H%M%SZ")
            headers["amz-sdk-request"] = f"ttl={ttl}; attempt={attempt}; max={self.max_attempts}"
        return headers

    def _once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        payload: bytes,
    ) -> Response:
        conn = self._connection()
        target = self.url_for(path, query)
        if self.proxy is not None and self.scheme == "http":
            headers = {**headers, **self._proxy_headers}  # plain HTTP proxy: absolute URI
        else:
            target = target[len(self.scheme) + 3 + len(self.netloc) :]
        debuglog.debug(
            "Sending http request: %s %s headers=%s body=%r", method, target, headers, payload
        )
        if conn.sock is None:
            try:
                conn.connect()
            except TimeoutError as exc:
                raise _ConnectTimeout(str(exc)) from exc
        conn.request(
            method, target, body=payload if (payload or method != "GET") else None, headers=headers
        )
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout)
        raw = conn.getresponse()
        data = raw.read()
        resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, data)
        debuglog.debug("Response: %s headers=%s body=%r", resp.status, resp.headers, data)
        if raw.will_close:
            self.close()
        return resp

    def retryable(self, resp: Response) -> bool:
        if resp.status in _RETRY_STATUS:
            return True
        code, _, _ = error_code(resp)
        return code in _THROTTLING or code in _TRANSIENT

    @staticmethod
    def _sleep(attempt: int) -> None:
        time.sleep(random.random() * min(20, 2 ** (attempt - 1)))


class _ConnectTimeout(OSError):
    """The TCP (or TLS, or proxy tunnel) connection was not made in time."""


def _connection_error(exc: BaseException, url: str) -> EndpointError:
    if isinstance(exc, _ConnectTimeout):
        return EndpointError(f'Connect timeout on endpoint URL: "{url}"')
    if isinstance(exc, TimeoutError | socket.timeout):
        return EndpointError(f'Read timeout on endpoint URL: "{url}"')
    import ssl

    if isinstance(exc, ssl.SSLError):
        return EndpointError(f"SSL validation failed for {url} {exc}")
    return EndpointError(f'Could not connect to the endpoint URL: "{url}"')


def _uuid4() -> str:
    """A random (version 4) UUID string; the uuid module costs more to import than this."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def proxy_for(endpoint: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL for ``endpoint`` from HTTP(S)_PROXY / NO_PROXY (either case), as AWS CLI."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()

    def get(name: str) -> str:
        return env.get(name.upper()) or env.get(name.lower()) or ""

    for entry in get("no_proxy").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return None
        name, _, port = entry.partition(":")
        if port and str(parts.port or "") != port:
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return None
    proxy = get("https_proxy" if parts.scheme == "https" else "http_proxy")
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    return proxy or None
