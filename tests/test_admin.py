"""`batchrock serve/worker/models` start-up and the settings they are built from."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from batchrock import settings as settings_mod
from batchrock.settings import SettingsError

BATCHROCK = [sys.executable, "-m", "batchrock.cli"]


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "batchrock.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\nengine = false\n')
    env = {"BATCHROCK_CONFIG_FILE": str(config), "BATCHROCK_PORT": "9002", "BATCHROCK_HOST": "::1"}
    built = settings_mod.load({"port": "9003"}, env=env)
    assert built.port == 9003  # flag
    assert built.host == "::1"  # env beats the file
    assert built.log_level == "debug"  # file beats the default
    assert built.engine is False
    assert built.default_page_size == 100  # default
    assert built.config_file == config


def test_config_file_may_use_a_batchrock_table(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[batchrock]\ndata-dir = '~/x'\ntime_scale = 60\n")
    built = settings_mod.load({}, env={}, config_file=config)
    assert built.data_dir == Path("~/x").expanduser()
    assert built.time_scale == 60.0


@pytest.mark.parametrize(
    ("text", "flags", "env", "fragment"),
    [
        ("nonsense = 1\n", {}, {}, "unknown setting 'nonsense'"),
        ("port = [\n", {}, {}, "cannot read config file"),
        ("", {"port": "eighty"}, {}, "setting port"),
        ("", {}, {"BATCHROCK_ENGINE": "maybe"}, "setting engine"),
    ],
)
def test_bad_settings_are_one_clear_error(
    tmp_path: Path, text: str, flags: dict[str, str], env: dict[str, str], fragment: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as exc:
        settings_mod.load(flags, env=env, config_file=config)
    assert fragment in str(exc.value)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BATCHROCK, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_serve_with_a_broken_routes_file_says_so_in_one_line(tmp_path: Path) -> None:
    routes = tmp_path / "models.toml"
    routes.write_text("[[routes]\n")
    result = _run("serve", "--models-config", str(routes), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(routes) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_rejects_unknown_flags(tmp_path: Path) -> None:
    result = _run("serve", "--no-such-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_bad_setting_from_env_is_reported(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, BATCHROCK_PORT="http")
    result = _run("serve", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "setting port" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_looks_up_model_ids() -> None:
    result = _run("models", "anthropic.claude-3-haiku-20240307-v1:0", "--builtin-fallback")
    assert result.returncode == 0, result.stderr
    assert "anthropic.claude-3-haiku-20240307-v1:0:" in result.stdout
    assert "built-in" in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_serve_beyond_loopback_without_credentials_file_refuses_to_start(
    tmp_path: Path, host: str
) -> None:
    """Open mode accepts any credentials, so it stays on loopback (docs/access.md)."""
    result = _run("serve", "--host", host, "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--credentials-file" in result.stderr and "docs/access.md" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was opened or bound


def test_a_credentials_file_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    """serve and worker both read the credentials file (worker: for bucket grants) and refuse
    a public or broken one before anything is opened (docs/access.md)."""
    creds = tmp_path / "credentials.toml"
    for text, mode, why in [
        ("", 0o644, "accessible by group or others"),
        ("[[accounts]\n", 0o600, "not valid TOML"),
    ]:
        creds.write_text(text)
        creds.chmod(mode)
        args = ("--credentials-file", str(creds), "--data-dir", str(tmp_path / "d"))
        for command in ("serve", "worker"):
            result = _run(command, *args)
            assert result.returncode == 2
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert why in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "d").exists()


# --- bad values and busy ports: one clear line, no traceback --------------------------------


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "serving" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["--port", "80000"],
            {},
            "batchrock serve: setting port (--port): 80000 is out of range (0-65535)",
        ),
        (
            ["--port", "eighty"],
            {},
            "batchrock serve: setting port (--port): expected an integer, got 'eighty'",
        ),
        (
            [],
            {"BATCHROCK_PORT": "-1"},
            "batchrock serve: setting port (BATCHROCK_PORT): -1 is out of range (0-65535)",
        ),
        (
            ["--engine-max-jobs", "-1"],
            {},
            "batchrock serve: setting engine_max_jobs (--engine-max-jobs): -1 is too small "
            "(at least 1)",
        ),
        (
            [],
            {"BATCHROCK_ENGINE_MIN_SUBMITTED_SECONDS": "-1"},
            "batchrock serve: setting engine_min_submitted_seconds "
            "(BATCHROCK_ENGINE_MIN_SUBMITTED_SECONDS): -1.0 is too small (at least 0)",
        ),
        (
            ["--log-level", "loud"],
            {},
            "batchrock serve: setting log_level (--log-level): 'loud' is not one of debug, info, "
            "warning, error",
        ),
        (
            ["--time-scale", "nan"],
            {},
            "batchrock serve: setting time_scale (--time-scale): expected a number, got 'nan'",
        ),
        (
            [],
            {"BATCHROCK_HTTP_MAX_CONNECTIONS": "0"},
            "batchrock serve: setting http_max_connections (BATCHROCK_HTTP_MAX_CONNECTIONS): 0 "
            "is too small (at least 1)",
        ),
        (
            ["--builtin-error-rate", "1.5"],
            {},
            "batchrock serve: setting builtin_error_rate (--builtin-error-rate): 1.5 is out of "
            "range (0-1)",
        ),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    import os

    result = _run("serve", "--data-dir", str(tmp_path / "d"), *args, env={**os.environ, **env})
    assert result.returncode == 2
    assert _one_line(result) == line


def test_a_bad_setting_in_the_config_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = "x"\n')
    result = _run("serve", "--config-file", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert _one_line(result) == (
        f"batchrock serve: setting port (config file {config}): expected an integer, got 'x'"
    )


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("taker_reuses_port", [False, True])
def test_a_busy_port_is_one_clear_line_and_never_claims_to_serve(
    tmp_path: Path, processes: str, taker_reuses_port: bool
) -> None:
    # Several API processes bind one port with SO_REUSEPORT: a listener already there, even
    # one that allows it too, is still a busy port and never joined.
    with socket.socket() as taken:
        if taker_reuses_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
            "--api-processes", processes,
        )  # fmt: skip
    assert result.returncode == 1
    assert _one_line(result) == (
        f"batchrock serve: cannot listen on 127.0.0.1:{port}: address already in use"
    )


def test_serving_is_printed_once_bound_with_the_port_picked(tmp_path: Path) -> None:
    command = [*BATCHROCK, "serve", "--port", "0", "--no-engine", "--data-dir", str(tmp_path)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # the server runs until stopped: the line does come
                if "serving http://" in line:
                    break
            url = line.split("serving ", 1)[1].split()[0]
            assert not url.endswith(":0")
            with urllib.request.urlopen(url + "/_batchrock/health", timeout=10) as reply:
                assert reply.status == 200
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_the_event_loop_is_the_one_the_setting_names(tmp_path: Path, choice: str) -> None:
    command = [*BATCHROCK, "serve", "--port", "0", "--no-engine", "--data-dir", str(tmp_path)]
    command += ["--event-loop", choice]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "serving http://" in line:
                    break
            assert line.rstrip().endswith(f"event loop {choice})"), line
            url = line.split("serving ", 1)[1].split()[0]
            with urllib.request.urlopen(url + "/_batchrock/health", timeout=10) as reply:
                assert reply.status == 200
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_event_loop_auto_is_uvloop_when_installed_and_uvloop_missing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvloop

    from batchrock.admin import loop_factory

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(SettingsError, match="uvloop is not installed"):
        loop_factory("uvloop")
    # Without uvloop importable: auto falls back to asyncio, an explicit uvloop is refused.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    import os

    env = dict(os.environ, PYTHONPATH=f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = _run("serve", "--event-loop", "uvloop", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 2
    assert _one_line(result) == (
        "batchrock serve: setting event_loop: uvloop is not installed (pip install uvloop), "
        "or set event_loop = asyncio"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unreachable_database_is_one_line_without_its_password(
    tmp_path: Path, command: str
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://batch:hunter2secret@127.0.0.1:{port}/jobs"
    args = [command, "--data-dir", str(tmp_path), "--database-url", url]
    if command == "serve":
        args += ["--port", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchrock.admin", *args],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"batchrock {command}: cannot open the job database (database_url)" in proc.stderr
    assert "hunter2secret" not in proc.stderr + proc.stdout
    assert "serving" not in proc.stderr
