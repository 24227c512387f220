"""PageIterator edge cases with an in-process fake service."""

from __future__ import annotations

from typing import Any

import pytest

from batchrock.cli.errors import CliError
from batchrock.cli.paginate import PageIterator, decode_token, encode_token

CONFIG = {
    "input_token": "nextToken",
    "output_token": "nextToken",
    "limit_key": "maxResults",
    "result_key": "invocationJobSummaries",
}


def _pages(*pages: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    remaining = list(pages)

    def call(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params)
        return dict(remaining.pop(0))

    return call, calls


def test_a_service_repeating_its_token_stops_with_botocores_error() -> None:
    call, _ = _pages(
        {"invocationJobSummaries": [1], "nextToken": "same"},
        {"invocationJobSummaries": [2], "nextToken": "same"},
        {"invocationJobSummaries": [3], "nextToken": "same"},
    )
    pages = PageIterator(call, {}, CONFIG, page_size=None, max_items=None, starting_token=None)
    with pytest.raises(CliError) as info:
        pages.build_full_result()
    assert info.value.message == (
        "Error during pagination: The same next token was received twice: {'nextToken': 'same'}"
    )


def test_missing_result_key_gives_an_empty_result() -> None:
    call, calls = _pages({})
    pages = PageIterator(
        call, {"statusEquals": "Failed"}, CONFIG, page_size=5, max_items=None, starting_token=None
    )
    assert pages.build_full_result() == {}
    assert calls == [{"statusEquals": "Failed", "maxResults": 5}]


def test_tokens_round_trip_and_fall_back_to_raw_service_tokens() -> None:
    token = encode_token({"nextToken": "abc", "boto_truncate_amount": 2})
    assert token == "eyJuZXh0VG9rZW4iOiAiYWJjIiwgImJvdG9fdHJ1bmNhdGVfYW1vdW50IjogMn0="
    assert decode_token(token, "nextToken") == ({"nextToken": "abc"}, 2)
    assert decode_token("raw-token", "nextToken") == ({"nextToken": "raw-token"}, 0)
    assert decode_token("tok___4", "nextToken") == ({"nextToken": "tok"}, 4)
    with pytest.raises(CliError, match="'list' object has no attribute 'items'"):
        decode_token(encode_token({"x": 1}).replace("eyJ4IjogMX0=", "WzEsIDJd"), "nextToken")


def test_resuming_skips_the_items_already_printed() -> None:
    call, _ = _pages(
        {"invocationJobSummaries": [1, 2, 3], "nextToken": "p2"},
        {"invocationJobSummaries": [4, 5], "nextToken": None},
    )
    first = PageIterator(call, {}, CONFIG, page_size=None, max_items=2, starting_token=None)
    assert first.build_full_result() == {
        "invocationJobSummaries": [1, 2],
        "NextToken": encode_token({"nextToken": None, "boto_truncate_amount": 2}),
    }
    call2, calls2 = _pages(
        {"invocationJobSummaries": [1, 2, 3], "nextToken": "p2"},
        {"invocationJobSummaries": [4, 5]},
    )
    resumed = PageIterator(
        call2, {}, CONFIG, page_size=None, max_items=None, starting_token=first.resume_token
    )
    assert resumed.build_full_result() == {"invocationJobSummaries": [3, 4, 5]}
    assert calls2 == [{}, {"nextToken": "p2"}]
