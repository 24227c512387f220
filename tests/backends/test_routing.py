"""The routes file, model-id matching, the fallback and ``batchrock models``."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from batchrock.backends import cli
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.resilience import ResilientBackend
from batchrock.backends.routing import ConfigError, NoRouteError, build_resolver
from batchrock.settings import Settings


def write(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return Settings(data_dir=tmp_path, models_config=path)


ROUTES = """
[[routes]]
models = ["anthropic.claude-*"]
backend = "builtin"
latency_ms = 5
max_concurrency = 8
max_retries = 2

[[routes]]
model = "anthropic.claude-3-haiku-20240307-v1:0"
backend = "builtin"
seed = 9

[[routes]]
model = "meta.*"
backend = "builtin"
throttle_rate = 0.1
"""


def test_exact_ids_beat_globs_and_globs_match_base_ids(tmp_path: Path) -> None:
    resolver = build_resolver(write(tmp_path, ROUTES))
    exact = resolver.route_for("anthropic.claude-3-haiku-20240307-v1:0")
    assert exact is not None and exact.index == 1
    profile = resolver.route_for("us.anthropic.claude-3-haiku-20240307-v1:0")
    assert profile is not None and profile.index == 1
    glob = resolver.route_for("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2")
    assert glob is not None and glob.index == 0
    assert resolver.route_for("amazon.nova-lite-v1:0") is None
    backend = resolver.for_model("anthropic.claude-v2")
    assert isinstance(backend, ResilientBackend) and backend.max_concurrency == 8
    assert backend.policy.max_retries == 2
    assert isinstance(backend.inner, BuiltinModel) and backend.inner.latency_ms == 5
    # Unrouted ids go to the built-in fallback.
    assert isinstance(resolver.for_model("amazon.nova-lite-v1:0"), BuiltinModel)
    asyncio.run(resolver.aclose())


def test_without_fallback_an_unrouted_id_raises_a_clear_error(tmp_path: Path) -> None:
    settings = write(tmp_path, ROUTES).evolve(builtin_fallback=False)
    resolver = build_resolver(settings)
    with pytest.raises(NoRouteError) as info:
        resolver.for_model("amazon.nova-lite-v1:0")
    assert str(info.value).startswith(
        "No model backend is configured for model 'amazon.nova-lite-v1:0': no route in "
    )
    assert "builtin_fallback = false" in str(info.value)
    none = build_resolver(Settings(data_dir=tmp_path, builtin_fallback=False))
    with pytest.raises(NoRouteError, match="no models config is set"):
        none.for_model("x")


def test_fallback_uses_the_builtin_settings(tmp_path: Path) -> None:
    resolver = build_resolver(
        Settings(data_dir=tmp_path, builtin_latency_ms=3, builtin_throttle_rate=0.2)
    )
    backend = resolver.for_model("anything")
    assert isinstance(backend, ResilientBackend)
    assert isinstance(backend.inner, BuiltinModel)
    assert (backend.inner.latency_ms, backend.inner.throttle_rate) == (3, 0.2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[routes]]\nbackend = 'builtin'\n", "give exactly one of 'model'"),
        ("[[routes]]\nmodel = 'x'\n", "'backend' is required"),
        ("[[routes]]\nmodel = 'x'\nbackend = 'nope'\n", "unknown backend type 'nope'"),
        (
            "[[routes]]\nmodel = 'x'\nbackend = 'builtin'\nlatency = 3\n",
            "unknown setting(s) latency",
        ),
        (
            "[[routes]]\nmodel = 'x'\nbackend = 'builtin'\nmax_retries = -1\n",
            "'max_retries' must be at least 0",
        ),
        ("[[routes]]\nmodel = 'x'\nbackend = 'builtin'\nmax_concurrency = 1.5\n", "whole number"),
        ("[[routes]]\nmodel = 'x'\nbackend = 'builtin'\nerror_rate = 3\n", "error_rate"),
        ("[route]\nmodel = 'x'\n", "unknown top-level key(s) route"),
        ("routes = [", "is not valid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_resolver(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read models config"):
        build_resolver(Settings(data_dir=tmp_path, models_config=tmp_path / "absent.toml"))


def test_models_command_prints_routes_and_lookups(tmp_path: Path) -> None:
    out = io.StringIO()
    status = cli.main(
        ["us.anthropic.claude-3-haiku-20240307-v1:0", "amazon.titan-embed-text-v2:0"],
        write(tmp_path, ROUTES),
        out,
    )
    text = out.getvalue()
    assert status == 0
    assert "Routes from " in text and "models.toml" in text
    assert "anthropic.claude-*" in text and "meta.*" in text
    assert "Fallback: built-in model (latency 0 ms" in text
    assert (
        "us.anthropic.claude-3-haiku-20240307-v1:0: route 2 (builtin): built-in model "
        "(latency 0 ms, error rate 0, throttle rate 0, seed 9); family anthropic-messages, "
        "base id anthropic.claude-3-haiku-20240307-v1:0"
    ) in text
    assert "amazon.titan-embed-text-v2:0: fallback: " in text
    assert "family amazon-titan-embed-v2" in text


def test_models_command_without_config_or_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    status = cli.main(["x"], Settings(data_dir=tmp_path, builtin_fallback=False), out)
    assert status == 1
    assert "Routes: none" in out.getvalue()
    assert "Fallback: none" in out.getvalue()
    assert "x: No model backend is configured" in out.getvalue()
    bad = write(tmp_path, "[[routes]]\nmodel = 'x'\n")
    assert cli.main([], bad, io.StringIO()) == 2
    assert "'backend' is required" in capsys.readouterr().err


def test_models_command_shows_invocation_types_and_per_model_quotas(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cli.main([], Settings(data_dir=tmp_path), out) == 0
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if "MODEL ID" in line)
    assert header.split() == [
        "MODEL", "ID", "FAMILY", "REGIONS", "PROFILES", "INVOCATION", "QUOTAS", "INPUT"
    ]  # fmt: skip
    (pro,) = [line.split() for line in lines if line.strip().startswith("amazon.nova-pro-v1:0")]
    assert pro[4:6] == ["InvokeModel,Converse", "job_size_gb=100"]
    (titan,) = [line.split() for line in lines if "amazon.titan-embed-text-v2:0 " in line]
    assert titan[4:6] == ["InvokeModel", "-"]


def test_models_command_names_the_engines_worker_processes_once(tmp_path: Path) -> None:
    """The worker processes are the engine's (engine_processes), not a route's: one line under
    the routes, and each route's target as the routes file says it."""
    config = tmp_path / "models.toml"
    config.write_text(
        '[[routes]]\nmodels = ["meta-llama/*"]\nbackend = "openai"\n'
        'base_url = "http://127.0.0.1:8000/v1"\n'
    )
    out = io.StringIO()
    settings = Settings(data_dir=tmp_path, models_config=config, engine_processes=3)
    assert cli.main([], settings, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[2].endswith("OpenAI-compatible server at http://127.0.0.1:8000/v1")
    assert lines[3] == (
        "Records of bedrock and openai routes are answered in 3 worker processes of the engine "
        "(setting engine_processes)"
    )
    out = io.StringIO()
    assert (
        cli.main([], Settings(data_dir=tmp_path, models_config=config, engine_processes=1), out)
        == 0
    )
    assert "worker processes" not in out.getvalue()
