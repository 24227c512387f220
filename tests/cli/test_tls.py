"""HTTPS endpoints: certificate verification, --ca-bundle / AWS_CA_BUNDLE, --no-verify-ssl."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import self_signed
from tests.cli.conftest import run_cli


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"invocationJobSummaries": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    pytest.importorskip("cryptography")
    cert, key = self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_certificates_are_verified(https_server: tuple[str, Path], cli_env: dict[str, str]) -> None:
    url, cert = https_server
    env = {**cli_env, "AWS_MAX_ATTEMPTS": "1"}
    args = ["--endpoint-url", url, "list-model-invocation-jobs"]
    untrusted = run_cli(args, env)
    assert untrusted.rc == 255
    assert untrusted.stderr.startswith(
        f"\nbatchrock: [ERROR]: SSL validation failed for {url}/model-invocation-jobs "
    )
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    expected = '{\n    "invocationJobSummaries": []\n}\n'
    assert run_cli([*args, "--ca-bundle", str(cert)], env).stdout == expected
    assert run_cli(args, {**env, "AWS_CA_BUNDLE": str(cert)}).stdout == expected
    assert run_cli([*args, "--no-verify-ssl"], env).stdout == expected
