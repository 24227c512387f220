"""Shorthand syntax parses exactly as AWS CLI's parser does (results and error messages).

The reference is AWS CLI v1's parser (the ``awscli`` dev dependency); v2's differs only in
putting a space before the echoed input of a syntax error, which is applied to v1's text.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchrock.cli import shorthand

INPUTS = [
    "a=b",
    "a=b,c=d",
    "a=b,c",
    "a=b,c,d=e",
    "a=",
    "a=,b=c",
    "a=[]",
    "a=[b,c],d={e=f,g=[h]}",
    "a={b={c=d}}",
    "a = b , c = d",
    " a=b",
    "a=b ",
    "a='x,y',b=\"p=q\"",
    'a=\'it\\\'s\',b="say \\"hi\\""',
    "a=x\\,y,b=z",
    "a=b=c",
    "a=b,c=d,a=e",
    "a=b,,c=d",
    "a=[b,",
    "a={b=c",
    "a={b}",
    "a=[b,c]d",
    "=b",
    "a",
    "",
    "a=b\nc=d",
    "a=b,\nc=d",
    "a=名前,b=ｶﾀｶﾅ",
    "a=[ b , c ]",
    "a={ b = c , d = e }",
    "a=[{b=c},{d=e}]",
    "a.b-c:d/e#f=g",
    "a=b,c='unterminated",
    "a=b]",
    "a=b}",
    "Key=Name,Values=web,db",
    "a=1,b=true,c=3.5",
    "a=[[x,y],[z]]",
    "a=@b",
    "a@=plain",
]


def _run(fn: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", fn(text)
    except Exception as exc:
        return type(exc).__name__.replace("ShorthandError", "ShorthandParseError"), str(exc)


@pytest.mark.parametrize("text", INPUTS)
def test_shorthand_matches_aws_cli(text: str) -> None:
    from awscli.shorthand import ShorthandParseError, ShorthandParser

    def theirs(value: str) -> Any:
        try:
            return ShorthandParser().parse(value)
        except ShorthandParseError as exc:
            text = str(exc).replace("' for input:\n", "' for input:\n ", 1)
            raise shorthand.ShorthandError(value, 0, text) from exc

    assert _run(shorthand.parse, text) == _run(theirs, text)
