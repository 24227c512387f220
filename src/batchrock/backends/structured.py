"""Deterministic values that satisfy a JSON schema: the built-in model's structured answers.

A structured-output request (Claude ``output_config.format``, Converse
``outputConfig.textFormat``) or a forced tool call must come back as JSON valid against the
schema the record gave. :func:`generate` builds such a value from the schema and a seed (the
record's hash), so the same record always gets the same value and different records get
different ones.

Covered: ``type`` (one or a list), ``enum``, ``const``, ``default`` / ``examples`` (used when
they fit the type), objects (``properties``, ``required``, ``additionalProperties``,
``minProperties``), arrays (``items``, ``prefixItems``, ``minItems``, ``maxItems``,
``uniqueItems``), strings (``minLength``, ``maxLength``, the common ``format`` values),
numbers (``minimum``, ``maximum``, the exclusive bounds, ``multipleOf``), ``anyOf`` /
``oneOf`` (the first branch), ``allOf`` (merged), and local ``$ref`` (``#/$defs/...``,
``#/definitions/...``). A ``pattern`` is not generated from: a string schema with one gets
its ``default`` or first ``examples`` value when the schema has one, else plain words.
"""

from __future__ import annotations

import math
from typing import Any

_WORDS = (
    "alpha",
    "batch",
    "record",
    "answer",
    "model",
    "token",
    "output",
    "input",
    "bedrock",
    "sample",
    "value",
    "result",
    "summary",
    "example",
    "field",
    "item",
)
#: Deeper than this, optional members are left out and arrays take their minimum length, so
#: recursive schemas end.
_MAX_DEPTH = 6
_FORMATS = {
    "date-time": "2024-05-01T12:00:00Z",
    "date": "2024-05-01",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/item",
    "url": "https://example.com/item",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
    "duration": "P1D",
}


def generate(schema: Any, seed: int) -> Any:
    """A JSON value valid against ``schema`` (a JSON-schema object), chosen by ``seed``."""
    root = schema if isinstance(schema, dict) else {}
    return _Generator(root).value(root, seed & 0xFFFFFFFF, 0)


def tokens_for(value_json: str) -> int:
    """Output tokens for a JSON answer (JSON is punctuation-heavy: about 3 characters a token)."""
    return max(1, math.ceil(len(value_json) / 3))


class _Generator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: dict[str, Any], hops: int = 0) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or hops > 16:
            return schema
        target: Any = self.root
        if ref != "#":
            if not ref.startswith("#/"):
                return {k: v for k, v in schema.items() if k != "$ref"}
            for key in ref[2:].split("/"):
                key = key.replace("~1", "/").replace("~0", "~")
                target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return {k: v for k, v in schema.items() if k != "$ref"}
        merged = {
            **self.resolve(target, hops + 1),
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
        return merged

    def value(self, schema: Any, seed: int, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return None if schema is False else _word(seed)
        schema = self.resolve(schema)
        if "allOf" in schema and isinstance(schema["allOf"], list):
            schema = self._merge(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[seed % len(enum)]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                # The first non-null branch: what a model answers when it has a choice.
                rest = {k: v for k, v in schema.items() if k != key}
                pick = next(
                    (b for b in branches if _types(self.resolve(b)) != ["null"]), branches[0]
                )
                return self.value({**rest, **self.resolve(pick)}, seed, depth)
        kind = self._kind(schema)
        for key in ("default", "examples"):
            if key in schema:
                example = schema[key]
                if key == "examples":
                    if not isinstance(example, list) or not example:
                        continue
                    example = example[0]
                if _fits(example, kind):
                    return example
        if kind == "object":
            return self._object(schema, seed, depth)
        if kind == "array":
            return self._array(schema, seed, depth)
        if kind == "string":
            return self._string(schema, seed)
        if kind == "integer":
            return self._integer(schema, seed)
        if kind == "number":
            return self._number(schema, seed)
        if kind == "boolean":
            return bool(seed & 1)
        return None

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if not isinstance(part, dict):
                continue
            part = self.resolve(part)
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    @staticmethod
    def _kind(schema: dict[str, Any]) -> str:
        types = _types(schema)
        for kind in types:
            if kind != "null":
                return kind
        if types:
            return "null"
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "multipleOf")):
            return "number"
        return "string"

    def _object(self, schema: dict[str, Any], seed: int, depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        out: dict[str, Any] = {}
        for index, (name, sub) in enumerate(properties.items()):
            # Every property at the top levels (models fill in what they are shown); only the
            # required ones deeper down, so recursive schemas end.
            if depth < _MAX_DEPTH or name in required:
                out[name] = self.value(sub, _mix(seed, index + 1), depth + 1)
        extra = schema.get("additionalProperties", True)
        for index, name in enumerate(required):
            if name not in out:
                sub = extra if isinstance(extra, dict) else {"type": "string"}
                out[name] = self.value(sub, _mix(seed, 100 + index), depth + 1)
        low = schema.get("minProperties")
        if isinstance(low, int) and extra is not False:
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            index = 0
            while len(out) < low:
                index += 1
                out.setdefault(f"key{index}", self.value(sub, _mix(seed, 200 + index), depth + 1))
        high = schema.get("maxProperties")
        if isinstance(high, int) and len(out) > high:
            keep = set(required)
            for name in list(out):
                if len(out) <= high:
                    break
                if name not in keep:
                    del out[name]
        return out

    def _array(self, schema: dict[str, Any], seed: int, depth: int) -> list[Any]:
        low = schema.get("minItems", 0)
        low = low if isinstance(low, int) and low >= 0 else 0
        high = schema.get("maxItems")
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        count = low if depth >= _MAX_DEPTH else max(low, 1 + seed % 3, len(prefix))
        if isinstance(high, int) and high >= low:
            count = min(count, high)
        items = schema.get("items", {})
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        attempt = 0
        while len(out) < count and attempt < count * 8 + 8:
            position = len(out)
            sub = prefix[position] if position < len(prefix) else items
            if sub is False:
                break
            value = self.value(sub, _mix(seed, 1000 + attempt), depth + 1)
            attempt += 1
            if unique and value in out:
                continue
            out.append(value)
        return out

    @staticmethod
    def _string(schema: dict[str, Any], seed: int) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt]
        else:
            text = " ".join(_word(_mix(seed, i)) for i in range(1 + seed % 3))
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        if isinstance(low, int) and len(text) < low:
            filler = " ".join(_word(_mix(seed, 50 + i)) for i in range(low // 4 + 2))
            text = (text + " " + filler)[:low] if low else text
        if isinstance(high, int) and high >= 0 and len(text) > high:
            text = text[:high]
        return text

    @staticmethod
    def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
        low, high = schema.get("minimum"), schema.get("maximum")
        xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        low_open = high_open = False
        if isinstance(xlow, bool):  # draft 4: a flag on minimum
            low_open = xlow
        elif isinstance(xlow, int | float) and (low is None or xlow >= low):
            low, low_open = xlow, True
        if isinstance(xhigh, bool):
            high_open = xhigh
        elif isinstance(xhigh, int | float) and (high is None or xhigh <= high):
            high, high_open = xhigh, True
        low = low if isinstance(low, int | float) and not isinstance(low, bool) else None
        high = high if isinstance(high, int | float) and not isinstance(high, bool) else None
        return low, high, low_open, high_open

    def _integer(self, schema: dict[str, Any], seed: int) -> int:
        low, high, low_open, high_open = self._bounds(schema)
        first = 0 if low is None else math.floor(low) + 1 if low_open or low % 1 else int(low)
        if high is None:
            last = first + 99
        else:
            last = math.ceil(high) - 1 if high_open or high % 1 else int(high)
        if low is None and high is not None:
            first = last - 99
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first = math.ceil(first / step) * step
            span = max(0, (last - first) // step)
            return first + (seed % (span + 1)) * step
        return first + seed % (max(0, last - first) + 1)

    def _number(self, schema: dict[str, Any], seed: int) -> float | int:
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            if float(step).is_integer():
                return self._integer(schema, seed)
            low, high, _, _ = self._bounds(schema)
            first = math.ceil((low if low is not None else 0) / step)
            last = math.floor(high / step) if high is not None else first + 99
            return round((first + seed % (max(0, last - first) + 1)) * step, 10)
        low, high, low_open, high_open = self._bounds(schema)
        if low is None and high is None:
            return round((seed % 10000) / 100, 2)
        if low is None:
            assert high is not None
            low = high - 100
        if high is None:
            high = low + 100
        fraction = ((seed % 997) + 1) / 999  # strictly inside (0, 1)
        value = low + (high - low) * fraction
        value = round(value, 4)
        if (low_open and value <= low) or value < low:
            value = low + (high - low) / 2
        if (high_open and value >= high) or value > high:
            value = low + (high - low) / 2
        return value


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    return []


def _fits(value: Any, kind: str) -> bool:
    checks: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
    }
    if kind in checks:
        return isinstance(value, checks[kind])
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return value is None


def _mix(seed: int, salt: int) -> int:
    """A new deterministic seed from ``seed`` and ``salt`` (a cheap integer hash)."""
    value = (seed ^ (salt * 0x9E3779B1)) & 0xFFFFFFFF
    value = ((value >> 16) ^ value) * 0x45D9F3B & 0xFFFFFFFF
    return ((value >> 16) ^ value) & 0xFFFFFFFF


def _word(seed: int) -> str:
    return _WORDS[seed % len(_WORDS)]
