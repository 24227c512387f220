"""REST-JSON: parameters -> (method, path, query, body) and response body -> ordered result.

Responses are rebuilt in the model's member order (AWS CLI prints keys in that order, not in
the wire order), unknown keys and JSON nulls are dropped, and timestamps are rendered with the
configured ``cli_timestamp_format``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from batchrock.cli import timestamps
from batchrock.cli.model import Operation, ServiceModel, Shape

_URI_PARAM = re.compile(r"\{([^}]+)\}")


def fill_idempotency_tokens(model: ServiceModel, op: Operation, params: dict[str, Any]) -> None:
    if not op.input:
        return
    for member, ref in model.shape(op.input).get("members", {}).items():
        if ref.get("idempotencyToken") and member not in params:
            import uuid

            params[member] = str(uuid.uuid4())


def _query_value(shape: Shape, value: Any) -> list[str]:
    kind = shape["type"]
    if kind == "timestamp":
        return [timestamps.to_wire(value)]
    if kind == "boolean":
        return ["true" if value else "false"]
    if kind == "list":
        return [str(v) for v in value]
    return [str(value)]


def _body_value(model: ServiceModel, shape: Shape, value: Any) -> Any:
    kind = shape["type"]
    if kind == "structure":
        return {
            k: _body_value(model, model.member_shape(shape, k), v)
            for k, v in value.items()
            if k in shape.get("members", {})
        }
    if kind == "list":
        member = model.shape(shape["member"]["shape"])
        return [_body_value(model, member, v) for v in value]
    if kind == "map":
        vshape = model.shape(shape["value"]["shape"])
        return {k: _body_value(model, vshape, v) for k, v in value.items()}
    if kind == "timestamp":
        return timestamps.to_aware_utc(value).timestamp()
    if kind == "blob":
        import base64

        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode("ascii")
    return value


def serialize(
    model: ServiceModel, op: Operation, params: dict[str, Any]
) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    shape = model.shape(op.input) if op.input else {"members": {}}
    members = shape.get("members", {})
    path = op.uri
    query: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for name, value in params.items():
        ref = members[name]
        mshape = model.shape(ref["shape"])
        location = ref.get("location")
        wire = ref.get("locationName", name)
        if location == "uri":
            greedy = "{" + wire + "+}" in path
            encoded = quote(str(value), safe="/~" if greedy else "~")
            path = path.replace("{" + wire + ("+}" if greedy else "}"), encoded)
        elif location == "querystring":
            query.extend((wire, v) for v in _query_value(mshape, value))
        elif location == "header":
            continue
        else:
            body[wire] = _body_value(model, mshape, value)
    path, _, fixed = path.partition("?")
    if fixed:
        query = [(k, v) for k, _, v in (p.partition("=") for p in fixed.split("&"))] + query
    payload = json.dumps(body).encode("utf-8") if body else None
    if (
        payload is None
        and op.method != "GET"
        and any("location" not in ref for ref in members.values())
    ):
        payload = b"{}"
    return op.method, path, query, payload


def parse(model: ServiceModel, shape: Shape, value: Any, render_ts: Callable[[Any], Any]) -> Any:
    kind = shape["type"]
    if kind == "structure":
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, ref in shape.get("members", {}).items():
            if ref.get("location") in ("header", "headers", "statusCode"):
                continue
            raw = value.get(ref.get("locationName", name))
            if raw is not None:
                out[name] = parse(model, model.shape(ref["shape"]), raw, render_ts)
        return out
    if kind == "list":
        if not isinstance(value, list):
            return value
        member = model.shape(shape["member"]["shape"])
        return [parse(model, member, v, render_ts) for v in value]
    if kind == "map":
        if not isinstance(value, dict):
            return value
        vshape = model.shape(shape["value"]["shape"])
        return {k: parse(model, vshape, v, render_ts) for k, v in value.items()}
    if kind == "timestamp":
        return render_ts(value)
    return value


def ts_renderer(fmt: str) -> Callable[[Any], Any]:
    if fmt == "wire":
        return lambda v: v
    return timestamps.render_iso8601
