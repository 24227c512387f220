"""Requests a web page could send are refused; real clients still pass (api/guard.py).

Against a real `batchrock serve` process: what a page's ``fetch`` sends, DNS rebinding (a
foreign Host), and the headers boto3, the AWS CLI and the JS SDK send.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrock.api.guard import (
    HostNames,
    RequestGuard,
    _quote,
    _same_origin,
    is_loopback,
    open_mode_refusal,
    split_host,
)
from batchrock.errors import AccessDeniedException
from batchrock.settings import Settings
from tests.api.conftest import create_args
from tests.api.wire import Reply, call
from tests.conftest import ServerProcess, bedrock_client

#: Its own account, so its listing shows only what these tests created.
ACCOUNT = "919191919191"
SIGNED = {
    "Authorization": f"AWS4-HMAC-SHA256 Credential={ACCOUNT}/20260101/us-east-1/bedrock/"
    "aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
}


def _create_body(name: str) -> bytes:
    return orjson.dumps(create_args(name))


def _jobs(server: ServerProcess) -> list[str]:
    client = bedrock_client(server.url, access_key=ACCOUNT)
    jobs = client.list_model_invocation_jobs(maxResults=1000)["invocationJobSummaries"]
    return [j["jobName"] for j in jobs]


def _assert_refused(reply: Reply, fragment: str) -> None:
    assert reply.status == 403, reply.body
    assert reply.error_type == "AccessDeniedException"
    assert reply.headers["x-amzn-errortype"].endswith(
        ":http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert "x-amzn-requestid" in reply.headers
    assert fragment in reply.json()["message"]


def test_a_web_pages_fetch_creates_no_job(api_server: ServerProcess) -> None:
    """``fetch(url, {method: "POST", body: JSON.stringify(job)})`` from another site: a
    text/plain body (no preflight), the page's Origin and Sec-Fetch-Site."""
    page = {
        "Content-Type": "text/plain;charset=UTF-8",
        "Origin": "https://attacker.example",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
        **SIGNED,
    }
    reply = call(api_server.url, "POST", "/model-invocation-job", _create_body("page"), page)
    _assert_refused(reply, "Sec-Fetch-Site: cross-site")
    # Each sign of a browser is refused on its own (older browsers send no Sec-Fetch-*).
    for name, headers, fragment in [
        ("origin", {"Origin": "https://attacker.example"}, "Origin: 'https://attacker.example'"),
        ("null-origin", {"Origin": "null"}, "Cross-origin"),
        ("same-site", {"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site: same-site"),
        ("text", {"Content-Type": "text/plain"}, "'text/plain'"),
        ("form", {"Content-Type": "application/x-www-form-urlencoded"}, "urlencoded"),
        ("multipart", {"Content-Type": "multipart/form-data; boundary=x"}, "multipart"),
    ]:
        reply = call(
            api_server.url,
            "POST",
            "/model-invocation-job",
            _create_body(name),
            {**SIGNED, **headers},
        )
        _assert_refused(reply, fragment)
    assert _jobs(api_server) == []


def test_foreign_host_is_refused_even_for_health(api_server: ServerProcess) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the Host header keeps it."""
    evil = {"Host": f"rebind.attacker.example:{api_server.port}", **SIGNED}
    _assert_refused(call(api_server.url, "GET", "/_batchrock/health", headers=evil), "rebind")
    reply = call(api_server.url, "POST", "/model-invocation-job", _create_body("rebound"), evil)
    _assert_refused(reply, "allowed_hosts")
    _assert_refused(call(api_server.url, "GET", "/model-invocation-jobs", headers=evil), "host")
    for host in ("127.0.0.1.attacker.example", "localhost.", "[::1", "a:b:c", "127.0.0.1:99999"):
        reply = call(api_server.url, "GET", "/_batchrock/health", headers={"Host": host})
        if host == "localhost.":  # the fully-qualified spelling of localhost
            assert reply.status == 200
        else:
            _assert_refused(reply, "refused")
    assert _jobs(api_server) == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LocalHost:8765", "[::1]", "[::1]:1234", "127.0.0.1:80"]
)
def test_loopback_names_with_or_without_port_pass(api_server: ServerProcess, host: str) -> None:
    reply = call(api_server.url, "GET", "/_batchrock/health", headers={"Host": host})
    assert reply.status == 200, reply.body


def test_real_clients_pass(api_server: ServerProcess) -> None:
    """boto3 (the AWS CLI v1 is botocore too; tests/api/test_awscli.py runs it), and the
    headers the JS SDK v3 sends from Node: application/json bodies, POSTs without a body
    and without a Content-Type (Stop), no Origin. A same-origin Origin passes too."""
    client = bedrock_client(api_server.url, access_key=ACCOUNT)
    arn = client.create_model_invocation_job(**create_args("boto3"))["jobArn"]
    client.stop_model_invocation_job(jobIdentifier=arn)  # POST, no body, no Content-Type
    js = {
        "content-type": "application/json",
        "x-amz-user-agent": "aws-sdk-js/3.700.0",
        "amz-sdk-invocation-id": "5e1b3a4c-0000-4000-8000-000000000000",
        "amz-sdk-request": "attempt=1; max=3",
        **SIGNED,
    }
    reply = call(api_server.url, "POST", "/model-invocation-job", _create_body("js-sdk"), js)
    assert reply.status == 200, reply.body
    job_id = reply.json()["jobArn"].rsplit("/", 1)[1]
    stop = {k: v for k, v in js.items() if k != "content-type"}
    reply = call(api_server.url, "POST", f"/model-invocation-job/{job_id}/stop", b"", stop)
    assert reply.status == 200, reply.body
    same_origin = {"Origin": f"http://127.0.0.1:{api_server.port}", "Sec-Fetch-Site": "same-origin"}
    reply = call(api_server.url, "GET", "/model-invocation-jobs", headers={**SIGNED, **same_origin})
    assert reply.status == 200, reply.body
    # application/x-amz-json-1.1 (what JSON-protocol SDKs send) is not a browser body.
    amz_json = {**SIGNED, "Content-Type": "application/x-amz-json-1.1"}
    reply = call(api_server.url, "POST", "/model-invocation-job", _create_body("amzjson"), amz_json)
    assert reply.status == 200, reply.body
    assert sorted(_jobs(api_server)) == ["amzjson", "boto3", "js-sdk"]


def test_allowed_hosts_adds_names_behind_a_proxy(server_factory: Any) -> None:
    server = server_factory(engine=False, allowed_hosts="batchrock.internal,*.corp.example")
    for host, status in [
        ("batchrock.internal", 200),
        ("batchrock.internal:443", 200),
        ("api.corp.example", 200),
        ("corp.example", 403),
        ("other.internal", 403),
        ("localhost", 200),
    ]:
        reply = call(server.url, "GET", "/_batchrock/health", headers={"Host": host})
        assert reply.status == status, (host, reply.body)
    # Behind a TLS proxy the page's origin is https while the request reaches us as http.
    proxied = {"Host": "batchrock.internal", "Origin": "https://batchrock.internal"}
    assert call(server.url, "GET", "/_batchrock/health", headers=proxied).status == 200


# --- the rules themselves -----------------------------------------------------------------


def _guard(host: str = "127.0.0.1", *extra: str) -> RequestGuard:
    return RequestGuard(Settings(host=host, allowed_hosts=extra))


def test_host_names_for_each_kind_of_bind_address() -> None:
    loopback = HostNames("127.0.0.1")
    assert all(loopback.allows(n) for n in ("localhost", "127.0.0.1", "::1"))
    assert not loopback.allows("10.0.0.5")
    assert not loopback.allows("myhost")
    other_loopback = HostNames("127.0.0.2")
    assert other_loopback.allows("127.0.0.2") and other_loopback.allows("localhost")
    # A specific address answers to that address (and allowed_hosts) only.
    lan = HostNames("192.0.2.7", ["batch.example"])
    assert lan.allows("192.0.2.7") and lan.allows("batch.example")
    assert not lan.allows("localhost") and not lan.allows("192.0.2.8")
    # All interfaces: any address literal (a rebinding needs a name), the host name, loopback.
    anywhere = HostNames("0.0.0.0")
    assert anywhere.allows("192.0.2.8") and anywhere.allows("fd00::1")
    assert anywhere.allows("localhost")
    assert not anywhere.allows("attacker.example")
    assert HostNames("127.0.0.1", ["*"]).allows("anything.example")


def test_split_host() -> None:
    assert split_host("LOCALHOST.:8765") == ("localhost", 8765)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("[::1]") == ("::1", None)
    for bad in ("", ":80", "[::1", "[nothost]", "::1", "a:b", "h:-1", "h:1x", "h:65536"):
        assert split_host(bad) is None, bad


def test_host_values_are_judged_the_same_every_time() -> None:
    """The guard keeps the parsed Host values it allowed (a client sends the same one on
    every request): a refused value is refused again, an allowed one gives the same host to
    the Origin check, and made-up values cannot grow what is kept past its bound."""
    guard = _guard()

    def check(host: bytes, origin: bytes | None = None) -> None:
        headers = [(b"host", host)] + ([(b"origin", origin)] if origin else [])
        guard.check_headers("GET", "http", headers)

    for _ in range(3):
        check(b"127.0.0.1:8765", b"http://127.0.0.1:8765")
        check(b"LOCALHOST.:8765", b"http://localhost:8765")  # the same name, parsed alike
        for refused in (b"evil.example", b"127.0.0.1:99999", b"127.0.0.1:x"):
            with pytest.raises(AccessDeniedException):
                check(refused)
        with pytest.raises(AccessDeniedException):  # the kept host is still compared
            check(b"127.0.0.1:8765", b"http://127.0.0.1:3000")
    anything = _guard("127.0.0.1", "*")
    for port in range(1, 300):
        anything.check_headers("GET", "http", [(b"host", f"any.example:{port}".encode())])
    assert len(anything._allowed) <= 64


def test_origin_must_be_the_requests_own_host() -> None:
    guard = _guard()

    def check(origin: str, host: bytes = b"127.0.0.1:8765", method: str = "GET") -> None:
        guard.check_headers(method, "http", [(b"host", host), (b"origin", origin.encode())])

    check("http://127.0.0.1:8765")
    check("http://localhost", b"localhost")  # port 80 on both sides
    for foreign in (
        "http://127.0.0.1:3000",  # another local port: another origin
        "http://localhost:8765",  # another name for the same server: another origin
        "http://evil.example",
        "null",
        "http://127.0.0.1:8765/path",
    ):
        with pytest.raises(AccessDeniedException):
            check(foreign)


def test_only_posts_are_held_to_the_content_type_rule() -> None:
    guard = _guard()
    headers = [(b"host", b"localhost"), (b"content-type", b"text/plain")]
    guard.check_headers("GET", "http", headers)
    with pytest.raises(AccessDeniedException):
        guard.check_headers("POST", "http", headers)
    with pytest.raises(AccessDeniedException, match="exactly one Host"):
        guard.check_headers("GET", "http", [])
    with pytest.raises(AccessDeniedException, match="exactly one Host"):
        guard.check_headers("GET", "http", [(b"host", b"localhost"), (b"host", b"evil")])


def test_only_authorized_uploads_to_v1_files_may_be_multipart() -> None:
    guard = _guard()
    form = [(b"host", b"localhost"), (b"content-type", b"multipart/form-data; boundary=x")]
    signed = [*form, (b"authorization", b"Bearer k")]

    def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"method": "POST", "scheme": "http", "path": path, "headers": headers}

    guard.check(scope("/v1/files", signed))  # the openai SDK's upload
    for path, headers in (
        ("/v1/files", form),  # a web form: no Authorization header
        ("/model-invocation-job", signed),  # only the upload route is exempt
        ("/v1/batches", signed),
    ):
        with pytest.raises(AccessDeniedException, match="multipart/form-data"):
            guard.check(scope(path, headers))
    with pytest.raises(AccessDeniedException, match="text/plain"):
        guard.check(scope("/v1/files", [(b"host", b"localhost"), (b"content-type", b"text/plain"),
                                         (b"authorization", b"Bearer k")]))  # fmt: skip


def test_open_mode_listens_on_loopback_only(tmp_path: Any) -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        assert open_mode_refusal(Settings(host=host)) is None
    for host in ("0.0.0.0", "::", "", "192.0.2.7", "example.com", "127.0.0.1.example"):
        refusal = open_mode_refusal(Settings(host=host))
        assert refusal is not None and "--credentials-file" in refusal, host
        assert "docs/access.md" in refusal
    credentials = Settings(host="0.0.0.0", credentials_file=tmp_path / "credentials.toml")
    assert open_mode_refusal(credentials) is None


def _reference_refusal(
    guard: RequestGuard, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> str | None:
    """The guard's rules as written before its one-walk form (each header decoded, the Host
    values listed, Authorization looked for in a walk of its own): the message of the
    refusal, or ``None``. What the guard must still answer, input for input."""
    upload = path == "/v1/files" and any(k.lower() == b"authorization" for k, _ in headers)
    hosts: list[str] = []
    origin = fetch_site = content_type = None
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name == b"host":
            hosts.append(raw_value.decode("latin-1"))
        elif name == b"origin":
            origin = raw_value.decode("latin-1")
        elif name == b"sec-fetch-site":
            fetch_site = raw_value.decode("latin-1").strip().lower()
        elif name == b"content-type":
            content_type = raw_value.decode("latin-1")
    if len(hosts) != 1:
        return "The request must carry exactly one Host header naming this server."
    parsed = split_host(hosts[0])
    if parsed is None or not guard.hosts.allows(parsed[0]):
        return (
            f"Requests for host {_quote(hosts[0])} are refused: it is not a name of this "
            "server. If a proxy forwards that name, add it to the allowed_hosts setting (see "
            "docs/access.md)."
        )
    if fetch_site in ("cross-site", "same-site"):
        return f"Browser requests from other sites are refused (Sec-Fetch-Site: {fetch_site})."
    if origin is not None and not _same_origin(origin, parsed, "http"):
        return f"Cross-origin browser requests are refused (Origin: {_quote(origin)})."
    if content_type is not None and method.upper() == "POST":
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type in ("text/plain", "application/x-www-form-urlencoded") or (
            media_type == "multipart/form-data" and not upload
        ):
            return (
                f"Request bodies of type {_quote(media_type)} are refused (what web pages send "
                "cross-origin); send application/json."
            )
    return None


def test_the_one_walk_guard_refuses_what_the_rules_refuse() -> None:
    """The guard walks a request's headers once (and keeps allowed Host values by their bytes):
    crafted heads get exactly the refusal, message included, that the rules give, twice over
    (the second time with what it kept), and what it hands on to the app is the first
    Authorization value and whether a body follows."""
    guard = _guard("127.0.0.1", "proxy.example")
    host = (b"host", b"127.0.0.1:8765")
    sig = (b"authorization", b"AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/x")
    heads: list[tuple[str, str, list[tuple[bytes, bytes]]]] = [
        ("GET", "/x", [host]),
        ("GET", "/x", [(b"Host", b"127.0.0.1:8765")]),  # a name not in lower case
        ("GET", "/x", [(b"HOST", b"proxy.example"), (b"Authorization", b"a"), sig]),
        ("GET", "/x", []),
        ("GET", "/x", [host, host]),  # the same Host twice is still two
        ("GET", "/x", [host, (b"host", b"evil.example")]),
        ("GET", "/x", [(b"host", b"evil.example")]),
        ("GET", "/x", [(b"host", b"EVIL.example")]),
        ("GET", "/x", [(b"host", b"127.0.0.1\xe9")]),  # not ASCII: latin-1, quoted back
        ("GET", "/x", [(b"host", b" 127.0.0.1:8765 ")]),
        ("GET", "/x", [(b"host", b"127.0.0.1:99999")]),
        ("GET", "/x", [(b"host", b"[::1]:8765")]),
        ("GET", "/x", [(b"host", b"")]),
        ("GET", "/x", [host, (b"sec-fetch-site", b" Cross-Site ")]),
        ("GET", "/x", [host, (b"sec-fetch-site", b"same-origin")]),
        ("GET", "/x", [host, (b"sec-fetch-site", b"cross-site"), (b"sec-fetch-site", b"none")]),
        ("GET", "/x", [host, (b"origin", b"http://127.0.0.1:8765")]),
        ("GET", "/x", [host, (b"Origin", b"http://evil.example")]),
        ("GET", "/x", [host, (b"origin", b"http://evil.example"), (b"origin", b"null")]),
        ("GET", "/x", [host, (b"origin", b"x" * 300)]),  # cut in the message
        ("GET", "/x", [host, (b"content-type", b"text/plain")]),  # a GET: no body rule
        ("POST", "/x", [host, (b"content-type", b"application/json")]),
        ("post", "/x", [host, (b"Content-Type", b"TEXT/Plain; charset=utf-8")]),
        ("POST", "/x", [host, (b"content-type", b"application/x-www-form-urlencoded")]),
        ("POST", "/x", [host, (b"content-type", b"multipart/form-data; boundary=b")]),
        ("POST", "/v1/files", [host, (b"content-type", b"multipart/form-data; boundary=b")]),
        ("POST", "/v1/files", [host, (b"content-type", b"multipart/form-data"), sig]),
        ("POST", "/v1/files", [host, (b"content-type", b"text/plain"), sig]),
        ("POST", "/v1/files", [host, (b"authorization", b""), (b"content-type", b"multipart/x")]),
        ("POST", "/x", [host, (b"content-length", b"2"), (b"content-type", b"application/json")]),
        ("POST", "/x", [host, (b"Transfer-Encoding", b"chunked")]),
    ]
    for _ in range(2):
        for method, path, headers in heads:
            expected = _reference_refusal(guard, method, path, headers)
            scope = {"method": method, "scheme": "http", "path": path, "headers": headers}
            try:
                handed_on = guard.check(scope)
            except AccessDeniedException as exc:
                assert exc.message == expected, (method, path, headers)
                continue
            assert expected is None, (method, path, headers)
            names = [k.lower() for k, _ in headers]
            first_authorization = next(
                (v for k, v in headers if k.lower() == b"authorization"), None
            )
            body = b"content-length" in names or b"transfer-encoding" in names
            assert handed_on == (first_authorization, body)
    refused = sum(_reference_refusal(guard, m, p, h) is not None for m, p, h in heads)
    assert 15 <= refused < len(heads)  # both kinds of answer were compared
