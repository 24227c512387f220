"""text and table output agree with AWS CLI's own formatters on arbitrary data.

AWS CLI v1 (the ``awscli`` package, a dev dependency) shares its text and table algorithms with
v2; its formatters are run in-process on randomly generated results (nested dicts and lists,
unicode including East Asian wide characters, numbers, booleans, nulls, empty values) and
must print the same bytes, or fail with the same message.
"""

from __future__ import annotations

import argparse
import io
import random
from typing import Any

import jmespath
import pytest

from batchrock.cli.table import TableError, format_table
from batchrock.cli.text import format_text

WORDS = ["a", "job", "Completed", "s3://bucket/key.jsonl", "名前", "ｶﾀｶﾅ", "Ω", "x y", "", "é"]
KEYS = ["jobName", "status", "Arn", "b", "_x", "名", "modelId", "A"]


def _scalar(rng: random.Random) -> Any:
    return rng.choice(
        [rng.choice(WORDS), rng.randint(-5, 500), rng.random() * 100, True, False, None]
    )


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.4:
        return _scalar(rng)
    if roll < 0.7:
        return {k: _value(rng, depth - 1) for k in rng.sample(KEYS, rng.randint(0, 4))}
    if roll < 0.85:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    # lists of similar dicts: the common shape of list results
    keys = rng.sample(KEYS, rng.randint(1, 4))
    return [
        {k: _value(rng, depth - 2) for k in keys if rng.random() < 0.85}
        for _ in range(rng.randint(1, 3))
    ]


def _samples(n: int) -> list[Any]:
    rng = random.Random(20261128)
    return [_value(rng, 4) for _ in range(n)]


def _theirs(fn: Any) -> tuple[str, str | None]:
    out = io.StringIO()
    try:
        fn(out)
    except Exception as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


@pytest.mark.parametrize("data", _samples(150))
def test_text_matches_aws_cli(data: Any) -> None:
    from awscli.text import format_text as aws_format_text

    expected = _theirs(lambda out: aws_format_text(data, out))
    actual = _theirs(lambda out: format_text(data, out))
    assert actual == expected


@pytest.mark.parametrize("data", _samples(150))
def test_table_matches_aws_cli(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import awscli.table
    from awscli.formatter import TableFormatter

    monkeypatch.setattr(awscli.table, "determine_terminal_width", lambda default_width=80: 80)
    # As after --query: the formatter is handed a response and the query picks the value.
    args = argparse.Namespace(query=jmespath.compile("data"), color="off")
    expected = _theirs(
        lambda out: TableFormatter(args)("ListModelInvocationJobs", {"data": data}, out)
    )

    def ours(out: io.StringIO) -> None:
        try:
            format_table(
                "ListModelInvocationJobs",
                data,
                out,
                terminal_width=80,
                color=False,
                autoreset=False,
            )
        except TableError as exc:
            raise ValueError(str(exc)) from exc

    actual = _theirs(ours)
    assert actual == expected
