"""`serve --tls-cert/--tls-key`, and Bedrock API keys (bearer tokens), which need it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from aws_bedrock_token_generator import BedrockTokenGenerator
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import InvalidEndpointConfigurationError, SSLError

from tests.access.conftest import (
    ALICE,
    ALICE_API_KEY,
    BOB,
    client,
    error_of,
    job_args,
    write_credentials,
)
from tests.api.wire import call
from tests.certs import self_signed
from tests.cli.conftest import run_cli
from tests.conftest import REPO_ROOT, ServerProcess

AWS = Path(sys.executable).parent / "aws"
API_KEY_INVALID = "Authentication failed: Please make sure your API Key is valid."


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tls")
    settings = {
        "engine": False,
        "credentials_file": write_credentials(root / "credentials.toml"),
        "tls_cert": certs[0],
        "tls_key": certs[1],
    }
    server = ServerProcess(root / "data", settings, root / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Nothing for SigV4 to sign with: a request that works used the bearer token."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def bearer_client(url: str, cert: Path, region: str = "us-east-1") -> tuple[Any, list[str]]:
    """A boto3 client that finds AWS_BEARER_TOKEN_BEDROCK in the environment, and the
    Authorization headers it sent."""
    bedrock = boto3.session.Session(region_name=region).client(
        "bedrock",
        endpoint_url=url,
        verify=str(cert),
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    sent: list[str] = []

    def record(request: Any, **_: Any) -> None:
        value = request.headers["Authorization"]
        sent.append(value.decode() if isinstance(value, bytes) else value)

    bedrock.meta.events.register("before-send.bedrock.*", record)
    return bedrock, sent


def test_boto3_checks_the_certificate(tls_server: ServerProcess, certs: tuple[Path, Path]) -> None:
    assert tls_server.url.startswith("https://")
    with pytest.raises(SSLError):
        client(tls_server.url).list_model_invocation_jobs()
    trusted = client(tls_server.url, verify=str(certs[0]))
    arn = trusted.create_model_invocation_job(**job_args("over-tls"))["jobArn"]
    assert trusted.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "over-tls"
    wrong = client(tls_server.url, secret="wrong-secret-000000000000000", verify=str(certs[0]))
    code, status, _ = error_of(wrong.list_model_invocation_jobs)
    assert (code, status) == ("InvalidSignatureException", 403)


def test_a_long_term_api_key(
    tls_server: ServerProcess, certs: tuple[Path, Path], no_aws_credentials: pytest.MonkeyPatch
) -> None:
    no_aws_credentials.setenv("AWS_BEARER_TOKEN_BEDROCK", ALICE_API_KEY)
    bedrock, sent = bearer_client(tls_server.url, certs[0])
    arn = bedrock.create_model_invocation_job(**job_args("by-api-key"))["jobArn"]
    assert arn.startswith("arn:aws:bedrock:us-east-1:111111111111:")
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "by-api-key"
    assert sent == [f"Bearer {ALICE_API_KEY}"] * 2
    # The same account as alice's access key sees the job.
    alice = client(tls_server.url, verify=str(certs[0]))
    assert alice.get_model_invocation_job(jobIdentifier=arn)["jobArn"] == arn


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (ALICE_API_KEY[:-4] + "AAAA", API_KEY_INVALID),
        ("ABSK" + "x" * 40, API_KEY_INVALID),
        ("sk-proj-0123456789", "Invalid API Key format: Must start with pre-defined prefix"),
        ("bedrock-api-key-%%%not-base64", API_KEY_INVALID),
    ],
)
def test_bad_api_keys(
    tls_server: ServerProcess,
    certs: tuple[Path, Path],
    no_aws_credentials: pytest.MonkeyPatch,
    token: str,
    message: str,
) -> None:
    no_aws_credentials.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
    bedrock, _ = bearer_client(tls_server.url, certs[0])
    assert error_of(bedrock.list_model_invocation_jobs) == (
        "UnrecognizedClientException",
        403,
        message,
    )


def test_short_term_api_keys(
    tls_server: ServerProcess,
    certs: tuple[Path, Path],
    no_aws_credentials: pytest.MonkeyPatch,
) -> None:
    """A key made by AWS's own generator from an access key of the file acts as that key's
    account, in the region it was made for."""
    generator = BedrockTokenGenerator()
    token = generator.get_token(Credentials(BOB.access_key_id, BOB.secret), "eu-west-1")
    assert token.startswith("bedrock-api-key-")
    no_aws_credentials.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
    bedrock, _ = bearer_client(tls_server.url, certs[0], region="eu-west-1")
    arn = bedrock.create_model_invocation_job(**job_args("short-term", "team-b-x"))["jobArn"]
    assert arn.startswith("arn:aws:bedrock:eu-west-1:222222222222:model-invocation-job/")

    forged = generator.get_token(
        Credentials(BOB.access_key_id, "not-bobs-secret-000000"), "eu-west-1"
    )
    no_aws_credentials.setenv("AWS_BEARER_TOKEN_BEDROCK", forged)
    bedrock, _ = bearer_client(tls_server.url, certs[0])
    assert error_of(bedrock.list_model_invocation_jobs)[2] == API_KEY_INVALID

    real_now = botocore.auth.get_current_datetime
    with pytest.MonkeyPatch.context() as earlier:
        earlier.setattr(
            botocore.auth, "get_current_datetime", lambda: real_now() - dt.timedelta(hours=13)
        )
        stale = generator.get_token(Credentials(BOB.access_key_id, BOB.secret), "eu-west-1")
    no_aws_credentials.setenv("AWS_BEARER_TOKEN_BEDROCK", stale)
    bedrock, _ = bearer_client(tls_server.url, certs[0])
    assert error_of(bedrock.list_model_invocation_jobs)[2] == API_KEY_INVALID


def test_bearer_tokens_are_refused_over_plain_http(secured: ServerProcess) -> None:
    """boto3 will not send one to an http:// endpoint; the AWS CLI (v1) and curl will, and the
    server answers without looking the token up."""
    reply = call(
        secured.url,
        "GET",
        "/model-invocation-jobs",
        headers={"Authorization": f"Bearer {ALICE_API_KEY}"},
    )
    assert (reply.status, reply.error_type) == (403, "AccessDeniedException")
    assert reply.json()["message"].startswith(
        "Bearer token authorization requires HTTPS: serve with --tls-cert and --tls-key"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_BEARER_TOKEN_BEDROCK", ALICE_API_KEY)
        with pytest.raises(InvalidEndpointConfigurationError):
            boto3.session.Session(region_name="us-east-1").client(
                "bedrock", endpoint_url=secured.url
            ).list_model_invocation_jobs()


def _aws(url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AWS), "--endpoint-url", url, *args, "bedrock", "list-model-invocation-jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_aws_cli_with_a_ca_bundle(
    tls_server: ServerProcess,
    secured: ServerProcess,
    certs: tuple[Path, Path],
    cli_env: dict[str, str],
) -> None:
    env = {
        **cli_env,
        "AWS_ACCESS_KEY_ID": ALICE.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ALICE.secret,
        "AWS_MAX_ATTEMPTS": "1",
    }
    assert _aws(tls_server.url, env).returncode != 0  # untrusted certificate
    done = _aws(tls_server.url, env, "--ca-bundle", str(certs[0]))
    assert done.returncode == 0, done.stderr
    bearer_env = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS_KEY_ID")}
    bearer_env.pop("AWS_SECRET_ACCESS_KEY")
    bearer_env["AWS_BEARER_TOKEN_BEDROCK"] = ALICE_API_KEY
    done = _aws(tls_server.url, bearer_env, "--ca-bundle", str(certs[0]))
    assert done.returncode == 0, done.stderr
    refused = _aws(secured.url, bearer_env)
    assert refused.returncode != 0 and "(AccessDeniedException)" in refused.stderr
    assert "requires HTTPS" in refused.stderr


def test_the_batchrock_cli_over_tls(
    tls_server: ServerProcess, certs: tuple[Path, Path], cli_env: dict[str, str]
) -> None:
    env = {
        **cli_env,
        "AWS_ACCESS_KEY_ID": ALICE.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ALICE.secret,
    }
    args = ["--endpoint-url", tls_server.url, "--ca-bundle", str(certs[0])]
    signed = run_cli([*args, "list-model-invocation-jobs"], env)
    assert signed.rc == 0, signed.stderr
    bearer = run_cli(
        [*args, "list-model-invocation-jobs"], {**env, "AWS_BEARER_TOKEN_BEDROCK": ALICE_API_KEY}
    )
    assert bearer.rc == 0, bearer.stderr
    assert bearer.json() == signed.json()


def test_open_mode_over_tls(server_factory: Any, certs: tuple[Path, Path]) -> None:
    server = server_factory(engine=False, tls_cert=certs[0], tls_key=certs[1])
    bedrock = client(server.url, verify=str(certs[0]))
    assert bedrock.list_model_invocation_jobs()["invocationJobSummaries"] == []


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrock.admin",
            "serve",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "d"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_bad_access_settings_in_one_line(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    cert = certs[0]
    missing = tmp_path / "none.toml"
    public = write_credentials(tmp_path / "public.toml")
    public.chmod(0o644)
    cases = [
        (["--tls-cert", str(cert)], "--tls-cert and --tls-key must be given together"),
        (
            ["--tls-cert", str(cert), "--tls-key", str(cert)],
            f"cannot use TLS certificate {cert} with key {cert}: ",
        ),
        (["--credentials-file", str(missing)], f"cannot read credentials file {missing}: "),
        (
            ["--credentials-file", str(public)],
            f"credentials file {public} is accessible by group or others",
        ),
    ]
    for args, start in cases:
        done = _serve(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("batchrock serve: " + start), done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.external
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_documented_self_signed_certificate(
    tmp_path: Path, server_factory: Any, cli_env: dict[str, str]
) -> None:
    """docs/access.md's openssl command makes a certificate boto3 and the AWS CLI accept."""
    text = (REPO_ROOT / "docs" / "access.md").read_text()
    block = text.split("## TLS", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = block.replace("\\\n", " ").splitlines()
    setup = [c for c in commands if c.startswith(("openssl ", "chmod "))]
    assert len(setup) == 2, commands
    subprocess.run(
        ["bash", "-euc", "\n".join(setup)], cwd=tmp_path, check=True, capture_output=True
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, tls_cert=cert, tls_key=key)
    client(server.url, verify=str(cert)).list_model_invocation_jobs()
    env = {
        **cli_env,
        "AWS_ACCESS_KEY_ID": ALICE.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ALICE.secret,
    }
    for host in ("127.0.0.1", "localhost"):
        url = server.url.replace("127.0.0.1", host)
        done = _aws(url, env, "--ca-bundle", str(cert))
        assert done.returncode == 0, done.stderr
