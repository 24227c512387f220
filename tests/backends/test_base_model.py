"""A route's ``base_model``: an application inference profile ARN (which says nothing of the
model it wraps) is answered in its model's family and reports that model (issue 15, item 2:
it reported ``"model": "abcd1234efgh"``)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from batchrock.backends import cli
from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.backends.routing import ConfigError, build_resolver
from batchrock.settings import Settings
from tests.engine.harness import one_pass

from .conftest import FakeServer, run

PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abcd1234efgh"
GPT = "openai.gpt-oss-20b-1:0"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 50}


def settings(tmp_path: Path, route: str) -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(f'[[routes]]\nmodel = "{PROFILE}"\n{route}')
    return Settings(data_dir=tmp_path, models_config=path)


def test_the_profile_reports_its_base_model(tmp_path: Path) -> None:
    routed = settings(tmp_path, f'backend = "builtin"\nbase_model = "{GPT}"\n')
    (result,) = run(routed, ModelRequest(PROFILE, "InvokeModel", BODY, "r"))
    assert result.output is not None
    assert result.output["model"] == GPT
    assert result.output["choices"][0]["message"]["content"].startswith("<reasoning>")
    # Without the route the id names no model: the answer reports the ARN as given, never the
    # bare resource id (tests/test_issue15_behaviours.py checks the same through boto3).
    (unrouted,) = run(Settings(data_dir=tmp_path), ModelRequest(PROFILE, "InvokeModel", BODY, "r"))
    assert unrouted.output is not None and unrouted.output["model"] == PROFILE


def test_the_engines_immediate_path_answers_as_the_base_model(tmp_path: Path) -> None:
    """The alias keeps the built-in model's zero-latency path (invoke_now, raw answerer)."""
    backend = build_resolver(
        settings(tmp_path, f'backend = "builtin"\nbase_model = "{GPT}"\n')
    ).for_model(PROFILE)
    assert getattr(backend, "immediate", False)
    line = b'{"recordId": "r1", "modelInput": %s}\n' % (
        b'{"messages": [{"role": "user", "content": "hi"}]}'
    )

    (out,), _ = asyncio.run(one_pass(backend, PROFILE, line))
    assert b'"model":"openai.gpt-oss-20b-1:0"' in out


def test_an_openai_route_sends_and_reports_the_base_model(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    route = f'backend = "openai"\nbase_url = "{fake_openai.url}/v1"\nbase_model = "{GPT}"\n'
    (result,) = run(settings(tmp_path, route), ModelRequest(PROFILE, "InvokeModel", BODY, "r"))
    assert isinstance(result, ModelResult) and result.output is not None
    assert result.output["model"] == GPT
    (sent,) = fake_openai.requests()
    assert sent["body"]["model"] == GPT  # type: ignore[index]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ('backend = "builtin"\nbase_model = "gpt-4o"\n', "'base_model' must be a model id"),
        ('backend = "builtin"\nbase_model = 3\n', "'base_model' must be a model id"),
        (
            f'backend = "bedrock"\nbase_model = "{GPT}"\n',
            "'base_model' does not apply to backend 'bedrock'",
        ),
    ],
)
def test_bad_base_models_stop_start_up(tmp_path: Path, route: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_resolver(settings(tmp_path, route))


def test_models_command_names_the_base_models_family(tmp_path: Path) -> None:
    out = io.StringIO()
    cli.main([PROFILE], settings(tmp_path, f'backend = "builtin"\nbase_model = "{GPT}"\n'), out)
    text = out.getvalue()
    assert f"answered as {GPT}; family openai-gpt-oss (base_model)" in text
