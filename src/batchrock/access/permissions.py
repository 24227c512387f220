"""Per-key ``actions``: IAM action names, with IAM's wildcards.

As in IAM policies, an action is ``service:Name``, matched without regard to case, and ``*``
(any run of characters) and ``?`` (one character) may appear anywhere: ``bedrock:*``,
``bedrock:Get*``, ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

#: What an entry of ``actions`` may look like (checked when the credentials file is read).
ACTION_PATTERN = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?]+")


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def allows(patterns: Iterable[str], action: str) -> bool:
    return any(_compiled(p).fullmatch(action) for p in patterns)
