"""Requests a web page could send are refused; real clients still pass (api/guard.py).

Against a real `batchrock serve` process: what a page's ``fetch`` sends, DNS rebinding (a
foreign Host), and the headers boto3, the AWS CLI and the JS SDK send.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrock.api.guard import HostNames, RequestGuard, is_loopback, open_mode_refusal, split_host
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
