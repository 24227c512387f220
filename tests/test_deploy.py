"""deploy/kubernetes/ and docs/deploy.md stay true: the manifests are well-formed Kubernetes
objects, every command line and setting they name is this project's, the ConfigMap loads as
settings, a real `batchrock serve --no-engine` and a real `batchrock worker` started from
them answer their probes, and the document's excerpts are the manifests' own lines."""

from __future__ import annotations

import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from batchrock import admin
from batchrock import settings as settings_mod
from batchrock.access import credfile
from batchrock.api.guard import HostNames
from batchrock.backends.replicas import ReplicaSet
from batchrock.backends.resilience import ResilientBackend
from batchrock.backends.routing import build_resolver
from batchrock.cli.main import ADMIN_COMMANDS
from tests.certs import self_signed
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(120)

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
DOC = (REPO_ROOT / "docs" / "deploy.md").read_text()
#: Settings the manifests may name before they exist, and what brings them. Once one is a
#: real setting it is checked like every other (nothing to change here when it lands).
PENDING: dict[str, str] = {}
#: Objects the manifests use but do not ship (docs/deploy.md says how to create them).
EXTERNAL_SECRETS = {"batchrock-tls"}
KINDS = {
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_VAR = re.compile(r"BATCHROCK_[A-Z0-9_]+")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe", pure=True).load_all(path.read_text()) if doc]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load(path)
    ]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def pod(name: str) -> dict[str, Any]:
    return dict(objects("Deployment")[name]["spec"]["template"])


def container(name: str) -> dict[str, Any]:
    (main,) = pod(name)["spec"]["containers"]
    return dict(main)


def setting_names() -> dict[str, str]:
    """Environment variable -> setting, for every setting there is."""
    return {settings_mod.env_name(f.name): f.name for f in settings_mod.fields_table()}


def manifest_env(*deployments: str) -> dict[str, str]:
    """The environment the containers of ``deployments`` get: the ConfigMaps and Secrets of
    their ``envFrom`` (in order), then their ``env``."""
    env: dict[str, str] = {}
    for name in deployments:
        main = container(name)
        for source in main.get("envFrom", []):
            if "configMapRef" in source:
                env.update(objects("ConfigMap")[source["configMapRef"]["name"]]["data"])
            else:
                env.update(objects("Secret")[source["secretRef"]["name"]]["stringData"])
        env.update({item["name"]: item["value"] for item in main.get("env", [])})
    return env


def named_variables() -> set[str]:
    """Every BATCHROCK_* name in the manifests, comments included."""
    return {name for path in DEPLOY.glob("*.yaml") for name in ENV_VAR.findall(path.read_text())}


# --- the objects ----------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load(DEPLOY / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert DNS_LABEL.match(kustomization["namespace"])


def test_every_object_has_a_known_kind_and_a_valid_unique_name() -> None:
    seen: set[tuple[str, str]] = set()
    for file, doc in manifests():
        assert (doc.get("apiVersion"), doc.get("kind")) in KINDS, file
        name = doc["metadata"]["name"]
        assert DNS_LABEL.match(name), (file, name)
        assert (doc["kind"], name) not in seen, (file, name)
        seen.add((doc["kind"], name))
    assert {"batchrock-api", "batchrock-worker"} <= set(objects("Deployment"))
    assert set(objects("Service")) == {"batchrock-api"}


@pytest.mark.parametrize("name", ["batchrock-api", "batchrock-worker"])
def test_deployments_are_complete_and_consistent(name: str) -> None:
    deployment = objects("Deployment")[name]
    spec = deployment["spec"]
    template = spec["template"]
    labels = template["metadata"]["labels"]
    assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod_spec = template["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    config_maps, secrets = set(objects("ConfigMap")), set(objects("Secret"))
    for volume in volumes.values():
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets | EXTERNAL_SECRETS
    for box in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        assert box["name"] and box["image"], box
        for mount in box.get("volumeMounts", []):
            assert mount["name"] in volumes, (box["name"], mount)
            assert mount["mountPath"].startswith("/")
        for source in box.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            else:
                assert source["secretRef"]["name"] in secrets
    main = container(name)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = main[probe]["httpGet"]
        assert get["port"] in ports, (probe, get)
        assert get.get("scheme", "HTTP") in {"HTTP", "HTTPS"}
        assert get["path"].startswith("/")
    annotations = template["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) in ports.values()
    assert pod_spec["securityContext"]["runAsNonRoot"] is True


def test_the_service_selects_the_api_pods_only() -> None:
    service = objects("Service")["batchrock-api"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod("batchrock-api")["metadata"]["labels"].items()
    assert not selector.items() <= pod("batchrock-worker")["metadata"]["labels"].items()
    names = {p["name"] for p in container("batchrock-api")["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in names
        assert 1 <= port["port"] <= 65535


# --- what the objects say to batchrock ----------------------------------------------------


def help_flags(command: str) -> set[str]:
    text = subprocess.run(
        [sys.executable, "-m", "batchrock.admin", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", text))


def check_command_line(argv: list[str]) -> None:
    """``argv`` (after ``batchrock``) is a sub-command and flags this project has."""
    assert argv[0] in ADMIN_COMMANDS, argv
    known = help_flags(argv[0])
    for arg in argv[1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, (argv, arg)
    _, rest = admin._parser().parse_known_args(argv)
    assert rest == [], argv


@pytest.mark.parametrize("name", ["batchrock-api", "batchrock-worker"])
def test_command_lines_are_real(name: str) -> None:
    main = container(name)
    assert main["command"] == ["batchrock"]
    check_command_line(list(main["args"]))


def test_the_api_runs_no_engine_and_the_worker_is_a_worker() -> None:
    assert container("batchrock-api")["args"] == ["serve", "--no-engine"]
    args, _ = admin._parser().parse_known_args(container("batchrock-api")["args"])
    assert args.engine is False
    assert container("batchrock-worker")["args"][0] == "worker"


def test_every_variable_named_is_a_setting() -> None:
    real = setting_names()
    pending = {settings_mod.env_name(name) for name in PENDING}
    for name in named_variables() | set(ENV_VAR.findall(DOC)):
        assert name in real or name in pending, name
    for key in manifest_env("batchrock-api", "batchrock-worker"):
        assert key in real or key in pending, key


def test_the_settings_table_names_real_settings() -> None:
    table = DOC.split("## Which process needs which settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows
    fields = {f.name for f in settings_mod.fields_table()}
    prefixes = {"quota_", "engine_"}
    for row in rows:
        for name in re.findall(r"`([a-z0-9_*]+)`", row.split("|")[1]):
            if name.endswith("*"):
                assert name[:-1] in prefixes and any(f.startswith(name[:-1]) for f in fields)
            else:
                assert name in fields or name in PENDING, name


def test_pending_settings_are_described_as_pending() -> None:
    for name in PENDING:
        if name in {f.name for f in settings_mod.fields_table()}:
            continue
        assert f"`{name}`" in DOC and "is being added" in DOC


@pytest.mark.parametrize("name", ["batchrock-api", "batchrock-worker"])
def test_the_environment_loads_as_settings_and_matches_the_pods(name: str) -> None:
    env = manifest_env(name)
    usable = {k: v for k, v in env.items() if k in setting_names()}
    settings = settings_mod.load(env=usable)
    main = container(name)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(name)["spec"]["volumes"]}
    assert settings.host == "0.0.0.0"
    if name == "batchrock-api":
        assert ports["https"] == settings.port
        assert settings.tls_cert is not None and settings.tls_key is not None
        assert str(settings.tls_cert.parent) == mounts["tls"]
        assert volumes["tls"]["secret"]["secretName"] == "batchrock-tls"
        # A kubernetes.io/tls Secret's keys.
        assert {settings.tls_cert.name, settings.tls_key.name} == {"tls.crt", "tls.key"}
    else:
        assert ports["metrics"] == settings.metrics_port
        assert settings.object_store == "s3"
    assert settings.data_dir.is_relative_to(mounts["data"])
    assert settings.models_config is not None
    assert str(settings.models_config.parent) == mounts["models"]
    models = objects("ConfigMap")[volumes["models"]["configMap"]["name"]]["data"]
    assert settings.models_config.name in models
    # The credentials file is the init container's private copy of the Secret's file.
    assert settings.credentials_file is not None
    assert str(settings.credentials_file.parent) == mounts["run"]
    (init,) = pod(name)["spec"]["initContainers"]
    script = init["command"][-1]
    source = volumes["credentials"]["secret"]["secretName"]
    key = next(iter(objects("Secret")[source]["stringData"]))
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert init_mounts == {"credentials": init_mounts["credentials"], "run": mounts["run"]}
    assert script == (
        f"install -m 0600 {init_mounts['credentials']}/{key} {settings.credentials_file}"
    ), script
    assert init["image"] == main["image"]


def test_the_shipped_routes_and_credentials_are_valid(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(objects("ConfigMap")["batchrock-models"]["data"]["models.toml"])
    resolver = build_resolver(settings_mod.Settings(data_dir=tmp_path, models_config=models))
    backend = resolver.for_model("meta.llama3-1-8b-instruct-v1:0")
    assert isinstance(backend, ResilientBackend) and isinstance(backend.inner, ReplicaSet)
    assert len(backend.inner.replicas) == 2
    text = objects("Secret")["batchrock-credentials"]["stringData"]["credentials.toml"]
    directory = credfile.parse(text, "credentials.toml")
    assert directory.owner_of("team-a-inputs") == "111111111111"


def test_the_allowed_hosts_cover_the_service_and_the_probes() -> None:
    env = manifest_env("batchrock-api")
    settings = settings_mod.load(env={k: v for k, v in env.items() if k in setting_names()})
    hosts = HostNames(settings.host, settings.allowed_hosts)
    (kustomization,) = load(DEPLOY / "kustomization.yaml")
    namespace = kustomization["namespace"]
    service = "batchrock-api"
    for name in (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        "10.42.0.17",  # the kubelet probes the pod's IP
    ):
        assert hosts.allows(name), name
    assert not hosts.allows("attacker.example")


# --- real processes answer the probes -----------------------------------------------------


def local_env(name: str, tmp: Path, database_url: str) -> dict[str, str]:
    """The container's environment, with its paths and addresses moved onto this machine:
    the same routes and credentials files (written mode 0600), a self-signed certificate, a
    data dir of its own, loopback and free ports, and the tests' own PostgreSQL in place of
    the manifests' placeholder database URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    manifest = manifest_env(name)
    env.update({k: v for k, v in manifest.items() if k in setting_names()})
    models = tmp / "models.toml"
    models.write_text(objects("ConfigMap")["batchrock-models"]["data"]["models.toml"])
    credentials = tmp / "credentials.toml"
    credentials.write_text(
        objects("Secret")["batchrock-credentials"]["stringData"]["credentials.toml"]
    )
    credentials.chmod(0o600)
    env.update(
        BATCHROCK_HOST="127.0.0.1",
        BATCHROCK_PORT=str(free_port()),
        BATCHROCK_METRICS_PORT=str(free_port()),
        BATCHROCK_DATA_DIR=str(tmp / "data"),
        BATCHROCK_MODELS_CONFIG=str(models),
        BATCHROCK_CREDENTIALS_FILE=str(credentials),
    )
    assert "BATCHROCK_DATABASE_URL" in manifest, "the manifests name the shared database"
    env["BATCHROCK_DATABASE_URL"] = database_url
    if "BATCHROCK_TLS_CERT" in manifest:
        cert, key = self_signed(tmp)
        env.update(BATCHROCK_TLS_CERT=str(cert), BATCHROCK_TLS_KEY=str(key))
    return env


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    # Like the kubelet, which does not verify the certificate of an HTTPS probe.
    context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def process(tmp_path: Path, pg_url: str) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def run(name: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
        folder = tmp_path / name
        folder.mkdir()
        env = local_env(name, folder, pg_url)
        log = folder / "log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchrock.admin", *container(name)["args"]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        return proc, env, log

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"not serving: {log.read_text()[-2000:]}")


def probe_urls(name: str, port: str) -> list[str]:
    main = container(name)
    urls = []
    for probe in ("readinessProbe", "livenessProbe"):
        http = main[probe]["httpGet"]
        scheme = http.get("scheme", "HTTP").lower()
        urls.append(f"{scheme}://127.0.0.1:{port}{http['path']}")
    annotations = pod(name)["metadata"]["annotations"]
    urls.append(f"{annotations['prometheus.io/scheme']}://127.0.0.1:{port}/metrics")
    assert annotations["prometheus.io/path"] == "/metrics"
    return urls


def test_a_real_api_process_answers_its_probes_and_the_service_names(process: Any) -> None:
    proc, env, log = process("batchrock-api")
    port = env["BATCHROCK_PORT"]
    *probes, metrics = probe_urls("batchrock-api", port)
    wait_for(probes[0], proc, log)
    for url in probes:
        assert get(url) == (200, b'{"status":"ok"}'), url
    status, body = get(metrics)
    assert status == 200 and b"batchrock_api_requests_total" in body
    for name in env["BATCHROCK_ALLOWED_HOSTS"].split(","):
        assert get(probes[0], host=f"{name}:443")[0] == 200, name
    assert get(probes[0], host="attacker.example")[0] == 403
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()


def test_a_real_worker_answers_its_probes_and_stops_on_sigterm(process: Any) -> None:
    proc, env, log = process("batchrock-worker")
    *probes, metrics = probe_urls("batchrock-worker", env["BATCHROCK_METRICS_PORT"])
    wait_for(probes[0], proc, log)
    for url in probes:
        assert get(url) == (200, b'{"status":"ok"}'), url
    status, body = get(metrics)
    assert status == 200 and b"batchrock_jobs" in body
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert "engine" in log.read_text() and "stopped" in log.read_text()


# --- docs/deploy.md --------------------------------------------------------------------


def code_blocks(language: str) -> list[list[str]]:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)
    return [block.rstrip("\n").split("\n") for block in blocks]


def test_every_yaml_excerpt_is_the_manifests_own_lines() -> None:
    blocks = code_blocks("yaml")
    assert len(blocks) >= 4
    for block in blocks:
        head = re.fullmatch(r"# deploy/kubernetes/([a-z-]+\.yaml) \(excerpt\)", block[0])
        assert head, f"a YAML block in docs/deploy.md names no manifest: {block[0]!r}"
        lines = (DEPLOY / head.group(1)).read_text().splitlines()
        body = block[1:]
        assert any(lines[i : i + len(body)] == body for i in range(len(lines) - len(body) + 1)), (
            f"not in {head.group(1)}:\n" + "\n".join(body)
        )


def test_every_command_in_the_doc_is_real() -> None:
    commands = [
        shlex.split(line)
        for block in code_blocks("sh")
        for line in block
        if line.startswith("batchrock ")
    ]
    assert {c[1] for c in commands} >= {"serve", "worker"}
    for argv in commands:
        check_command_line(argv[1:])
    # The files the doc's table names are the ones shipped.
    for name in re.findall(r"^\| `([a-z-]+\.yaml)` \|", DOC, flags=re.M):
        assert (DEPLOY / name).is_file(), name
    assert sorted(re.findall(r"^\| `([a-z-]+\.yaml)` \|", DOC, flags=re.M)) == sorted(
        p.name for p in DEPLOY.glob("*.yaml")
    )
