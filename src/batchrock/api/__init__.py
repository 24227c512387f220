"""The HTTP edge: Bedrock's restJson1 wire protocol. Nothing outside this package knows
camelCase member names, routes, ARNs, status codes or error headers."""

from __future__ import annotations
