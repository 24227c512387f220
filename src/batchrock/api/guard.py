"""Requests a web page could make on a user's behalf are refused before dispatch.

A browser lets any page it shows send requests to ``http://127.0.0.1:8765``: a ``fetch`` with a
``text/plain`` body needs no CORS preflight, and DNS rebinding (a name of the attacker's that
turns into 127.0.0.1) even makes those requests same-origin. So, in every mode:

- the ``Host`` header must name this server: for a loopback server ``localhost``, ``127.0.0.1``
  or ``[::1]`` (any port), the address it listens on, and the ``allowed_hosts`` setting (names a
  proxy forwards; ``*`` turns the check off). A rebinding page's requests carry the attacker's
  name, so they stop here;
- a foreign ``Origin``, ``Sec-Fetch-Site: cross-site`` or ``same-site`` (what browsers add to a
  page's requests), and the bodies a page can send without a preflight (``text/plain``,
  form encodings) are refused.

Real clients send none of these: boto3, the AWS CLI and the JS SDK send ``application/json``
bodies (or none: GET, and POSTs without body members) and no ``Origin``. A refusal is an
``AccessDeniedException`` (403), which no SDK retries. docs/access.md, "Open mode and browsers".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batchrock.errors import AccessDeniedException
from batchrock.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Addresses that mean "every interface".
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
#: Content types a page may POST cross-origin without a preflight (the Fetch standard's
#: CORS-safelisted request-header values).
_BROWSER_BODIES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Header values quoted back in messages are cut to this length.
_QUOTE_LIMIT = 200


def is_loopback(host: str) -> bool:
    """Whether an address to listen on reaches this machine only: ``localhost``, 127.0.0.0/8
    or ``::1`` (names other than ``localhost`` are not resolved)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def open_mode_refusal(settings: Settings) -> str | None:
    """Why ``batchrock serve`` must not start as configured, or ``None``: without a
    credentials file any caller may act as any account, which is only safe on loopback."""
    if settings.credentials_file is not None or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host or '(all addresses)'} without a credentials "
        f"file: anyone who can reach it could act as any account. Set --credentials-file "
        f"(see docs/access.md), or listen on 127.0.0.1."
    )


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` / authority ``name[:port]`` -> (lower-case name without brackets or a final
    dot, port), or ``None`` when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, sep, port_text = value.partition(":")
        rest = sep + port_text
        if ":" in port_text:  # an unbracketed IPv6 address is not a Host
            return None
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            return None
        port = int(rest[1:])
        if port > 65535:
            return None
    name = name.rstrip(".")
    if not name:
        return None
    return name, port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostNames:
    """The names (``Host`` header values, port aside) this server answers to."""

    def __init__(self, bound_host: str, extra: Iterable[str] = ()) -> None:
        bound = bound_host.strip().strip("[]").lower().rstrip(".")
        self.any_host = False
        self._suffixes: list[str] = []
        self._names: set[str] = {bound} if bound not in _WILDCARDS else set()
        # An address for all interfaces is reached by any of the machine's addresses, and by
        # its host name. (An IP address in Host is never a rebinding: that takes a name.)
        self._any_ip = bound in _WILDCARDS
        if bound in _WILDCARDS:
            self._names.add(socket.gethostname().lower())
        if bound in _WILDCARDS or is_loopback(bound):
            self._names |= LOOPBACK_NAMES
        for entry in extra:
            entry = entry.strip().lower()
            if entry == "*":
                self.any_host = True
            elif entry.startswith("*."):
                self._suffixes.append(entry[1:])
            elif entry:
                parsed = split_host(entry)
                if parsed is not None:
                    self._names.add(parsed[0])

    def allows(self, name: str) -> bool:
        if self.any_host or name in self._names:
            return True
        if self._any_ip and _is_ip(name):
            return True
        return any(name.endswith(suffix) for suffix in self._suffixes)


#: How many allowed ``Host`` values a guard keeps parsed (a server has a few names and ports).
_ALLOWED_KEPT = 64

#: What the one walk over a request's headers does with each (lower-case) name it reads: the
#: guard's own, and two the API app reads next (api/app.py), so no one walks them again.
_HOST, _ORIGIN, _FETCH_SITE, _CONTENT_TYPE, _AUTHORIZATION, _BODY = range(6)
_READ = {
    b"host": _HOST,
    b"origin": _ORIGIN,
    b"sec-fetch-site": _FETCH_SITE,
    b"content-type": _CONTENT_TYPE,
    b"authorization": _AUTHORIZATION,
    b"content-length": _BODY,
    b"transfer-encoding": _BODY,
}

#: What a request's headers hand on once the guard let them pass: the first Authorization
#: value (``None`` without one), and whether a body follows (Content-Length or
#: Transfer-Encoding present: without either there is none, RFC 9112 section 6.3).
Head = tuple[bytes | None, bool]


class RequestGuard:
    """``check(scope)`` raises :class:`AccessDeniedException` for a request a browser page may
    have sent on the user's behalf (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.hosts = HostNames(settings.host, settings.allowed_hosts)
        #: ``Host`` values (as sent) found to name this server, parsed: every request carries
        #: one, and a client sends the same one each time (the names allowed never change).
        #: Bounded, so that made-up values cannot grow it.
        self._allowed: dict[bytes, tuple[str, int | None]] = {}

    def check(self, scope: Mapping[str, Any]) -> Head:
        """An ASGI http scope: raise if its request is refused; else what it hands on."""
        headers: Sequence[tuple[bytes, bytes]] = scope.get("headers") or ()
        host: bytes | None = None
        hosts = 0
        origin = fetch_site = content_type = None
        authorization: bytes | None = None
        body = False
        read = _READ
        for raw_name, raw_value in headers:
            kind = read.get(raw_name.lower())
            if kind is None:
                continue
            if kind == _HOST:
                host = raw_value
                hosts += 1
            elif kind == _AUTHORIZATION:
                if authorization is None:
                    authorization = raw_value
            elif kind == _BODY:
                body = True
            elif kind == _ORIGIN:
                origin = raw_value.decode("latin-1")
            elif kind == _FETCH_SITE:
                fetch_site = raw_value.decode("latin-1").strip().lower()
            else:
                content_type = raw_value.decode("latin-1")
        checked = self._allowed.get(host) if hosts == 1 and host is not None else None
        if checked is None:
            checked = self._checked_host(host, hosts)
        if fetch_site is not None and fetch_site in ("cross-site", "same-site"):
            raise AccessDeniedException(
                f"Browser requests from other sites are refused (Sec-Fetch-Site: {fetch_site})."
            )
        scheme = scope.get("scheme") or "http"
        if origin is not None and not _same_origin(origin, checked, scheme):
            raise AccessDeniedException(
                f"Cross-origin browser requests are refused (Origin: {_quote(origin)})."
            )
        if content_type is not None and scope.get("method", "GET").upper() == "POST":
            media_type = content_type.split(";", 1)[0].strip().lower()
            # An upload to the OpenAI Files API is multipart, as a web form's is; one that
            # carries an Authorization header cannot come from a form (a page's script
            # sending one across origins needs a preflight, which is never answered), so it
            # may be multipart.
            upload = scope.get("path") == "/v1/files" and authorization is not None
            if media_type in _BROWSER_BODIES and not (
                upload and media_type == "multipart/form-data"
            ):
                raise AccessDeniedException(
                    f"Request bodies of type {_quote(media_type)} are refused (what web pages "
                    f"send cross-origin); send application/json."
                )
        return authorization, body

    def check_headers(
        self,
        method: str,
        scheme: str,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        upload_route: bool = False,
    ) -> Head:
        """:meth:`check` for a request known by its method, scheme and headers;
        ``upload_route``: it is for the OpenAI Files API's upload (``/v1/files``)."""
        path = "/v1/files" if upload_route else ""
        return self.check({"method": method, "scheme": scheme, "headers": headers, "path": path})

    def _checked_host(self, value: bytes | None, count: int) -> tuple[str, int | None]:
        """The one Host header's value, parsed, if it names this server; else raise."""
        if count != 1 or value is None:
            raise AccessDeniedException(
                "The request must carry exactly one Host header naming this server."
            )
        parsed = self._allowed.get(value)
        if parsed is not None:
            return parsed
        text = value.decode("latin-1")
        parsed = split_host(text)
        if parsed is None or not self.hosts.allows(parsed[0]):
            raise AccessDeniedException(
                f"Requests for host {_quote(text)} are refused: it is not a name of this "
                f"server. If a proxy forwards that name, add it to the allowed_hosts setting "
                f"(see docs/access.md)."
            )
        if len(self._allowed) < _ALLOWED_KEPT:
            self._allowed[value] = parsed
        return parsed


def _same_origin(origin: str, host: tuple[str, int | None], scheme: str) -> bool:
    """Whether ``Origin`` names the server the request was sent to (its checked ``Host``).
    The scheme is not compared: behind a TLS proxy the page's https origin reaches us as http."""
    origin_scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep or "/" in authority:
        return False  # "null" (sandboxed pages, files) and anything malformed
    parsed = split_host(authority)
    if parsed is None:
        return False
    if parsed[0] != host[0]:
        return False
    if parsed[1] is None and host[1] is None:
        return True  # both the scheme's default port, whichever scheme each side saw
    host_port = host[1] if host[1] is not None else _DEFAULT_PORTS.get(scheme)
    return (parsed[1] or _DEFAULT_PORTS.get(origin_scheme)) == host_port


def _quote(value: str) -> str:
    text = value if len(value) <= _QUOTE_LIMIT else value[:_QUOTE_LIMIT] + "..."
    return repr(text)
