"""Auto-pagination with botocore's token rules, so tokens are interchangeable with AWS CLI's.

The resume token printed for ``--max-items`` is ``base64(json.dumps({"nextToken": <token that
fetched the cut page, or null>, "boto_truncate_amount": <items kept from it>}))``; the
truncate amount is left out when the cut falls on a page boundary. ``--starting-token`` takes
that form back; a token that does not decode is used as the service's own ``nextToken``
(botocore's older ``token___index`` form included).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from typing import Any

from batchrock.cli.errors import CliError


def encode_token(token: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(token).encode("utf-8")).decode("utf-8")


def decode_token(raw: str, input_token: str) -> tuple[dict[str, Any], int]:
    try:
        decoded = json.loads(base64.b64decode(raw.encode("utf-8")).decode("utf-8"))
        if isinstance(decoded, list | str):
            # botocore takes these for a token dict and fails on them; so does AWS CLI.
            raise CliError(f"'{type(decoded).__name__}' object has no attribute 'items'")
        if not isinstance(decoded, dict):
            raise TypeError("not a dict")
        token = dict(decoded)
        index = token.pop("boto_truncate_amount", 0)
        return token, index
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        pass
    parts = raw.split("___")
    index = 0
    if len(parts) == 2:
        try:
            index = int(parts.pop())
        except ValueError:
            parts = [raw]
    value = None if parts[0] == "None" else parts[0]
    return {input_token: value}, index


class PageIterator:
    """Yields parsed pages; after iteration ``resume_token`` is set when output was cut."""

    def __init__(
        self,
        call: Callable[[dict[str, Any]], dict[str, Any]],
        params: dict[str, Any],
        config: dict[str, str],
        *,
        page_size: int | None,
        max_items: int | None,
        starting_token: str | None,
    ) -> None:
        self.call = call
        self.params = params
        self.input_token = config["input_token"]
        self.output_token = config["output_token"]
        self.limit_key = config.get("limit_key")
        self.result_key = config["result_key"]
        self.page_size = page_size
        self.max_items = max_items
        self.starting_token = starting_token
        self.resume_token: str | None = None

    def _inject(self, kwargs: dict[str, Any], token: dict[str, Any]) -> None:
        for name, value in token.items():
            if value is not None and value != "None":
                kwargs[name] = value
            elif name in kwargs:
                del kwargs[name]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        kwargs = dict(self.params)
        current: dict[str, Any] = {self.input_token: None}
        skip = 0
        if self.starting_token is not None:
            current, skip = decode_token(self.starting_token, self.input_token)
            self._inject(kwargs, current)
        if self.page_size is not None and self.limit_key:
            kwargs[self.limit_key] = self.page_size
        total = 0
        first_page = True
        previous: dict[str, Any] | None = None
        while True:
            page = self.call(dict(kwargs))
            if first_page:
                first_page = False
                if self.starting_token is not None:
                    data = page.get(self.result_key)
                    page[self.result_key] = data[skip:] if isinstance(data, list | str) else None
                else:
                    skip = 0
            else:
                skip = 0
            items = page.get(self.result_key)
            count = len(items) if isinstance(items, list) else 0
            over = 0 if self.max_items is None else total + count - self.max_items
            if over > 0:
                keep = count - over
                page[self.result_key] = (items or [])[:keep]
                cut = dict(current)
                cut["boto_truncate_amount"] = keep + skip
                self.resume_token = encode_token(cut)
                yield page
                return
            yield page
            total += count
            nxt = {self.input_token: page.get(self.output_token)}
            if all(v is None for v in nxt.values()):
                return
            if self.max_items is not None and total == self.max_items:
                self.resume_token = encode_token(nxt)
                return
            if previous is not None and previous == nxt:
                raise CliError(
                    f"Error during pagination: The same next token was received twice: {nxt}"
                )
            self._inject(kwargs, nxt)
            current = nxt
            previous = nxt

    def build_full_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for page in self:
            value = page.get(self.result_key)
            if value is None:
                continue
            if self.result_key not in result:
                result[self.result_key] = value
            elif isinstance(value, list):
                result[self.result_key].extend(value)
        if self.resume_token is not None:
            result["NextToken"] = self.resume_token
        return result
