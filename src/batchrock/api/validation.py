"""Validate a request against the botocore ``bedrock`` model, in AWS's own words.

Every constraint comes from the model (required, min/max length or value, pattern, enum, union
arity); nothing is copied by hand. Messages follow the AWS (Coral) wording, for example::

    1 validation error detected: Value '5000' at 'maxResults' failed to satisfy constraint:
    Member must have value less than or equal to 1000

Patterns are applied with full-match semantics (the API reference shows them anchored), in time
linear in the value (:mod:`.patterns`). The work a request can cause is bounded by its size: a
list longer than its ``max`` is reported without checking its items, and values are shown in
messages to a bounded depth and length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from botocore.model import Shape

from batchrock.api import patterns
from batchrock.errors import ValidationException

#: How deep and how long a value is shown in a message; past that it is cut with "...".
#: (JSON may nest 1024 levels deep: rendering it whole would exhaust Python's stack.)
_RENDER_DEPTH = 8
_RENDER_CHARS = 1024


def _render(value: Any, depth: int = 0) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict) and depth >= _RENDER_DEPTH:
        return "..."
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, depth + 1) for v in value[:_RENDER_CHARS]) + "]"
    if isinstance(value, dict):
        items = list(value.items())[:_RENDER_CHARS]
        return "{" + ", ".join(f"{k}={_render(v, depth + 1)}" for k, v in items) + "}"
    return str(value)


def _shown(value: Any) -> str:
    text = _render(value)
    return text if len(text) <= _RENDER_CHARS else text[:_RENDER_CHARS] + "..."


def _violation(value: Any, path: str, constraint: str) -> str:
    shown = "null" if value is None else f"'{_shown(value)}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


class TypeMismatch(ValueError):
    """A member of the wrong JSON type (the request cannot be read as the model says)."""


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "structure": (dict,),
    "list": (list,),
    "map": (dict,),
    "timestamp": (str, int, float),
    "double": (int, float),
    "float": (int, float),
}


def _check(shape: Shape, value: Any, path: str) -> Iterator[str]:
    kind = shape.type_name
    expected = _TYPES.get(kind)
    is_bool = isinstance(value, bool)
    if expected is not None and (
        not isinstance(value, expected) or (is_bool and kind not in {"boolean"})
    ):
        raise TypeMismatch(f"Value at '{path}' must be of type {_json_type(kind)}")
    meta = shape.metadata
    if kind == "string":
        yield from _check_length(value, len(value), meta, path)
        if "enum" in meta and value not in meta["enum"]:
            yield _violation(
                value, path, f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]"
            )
        pattern = meta.get("pattern")
        if pattern is not None and not patterns.fullmatch(pattern, value):
            yield _violation(
                value, path, f"Member must satisfy regular expression pattern: {pattern}"
            )
    elif kind in {"integer", "long"}:
        if "min" in meta and value < meta["min"]:
            yield _violation(
                value, path, f"Member must have value greater than or equal to {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            yield _violation(
                value, path, f"Member must have value less than or equal to {meta['max']}"
            )
    elif kind == "list":
        too_long = list(_check_length(value, len(value), meta, path))
        yield from too_long
        if too_long and len(value) > meta.get("max", len(value)):
            return  # the items of an over-long list are not looked at: bounded work
        for index, item in enumerate(value, start=1):
            yield from _check(shape.member, item, f"{path}.{index}.member")
    elif kind == "structure":
        yield from check_structure(shape, value, f"{path}.")


def _check_length(value: Any, length: int, meta: dict[str, Any], path: str) -> Iterator[str]:
    if "min" in meta and length < meta["min"]:
        yield _violation(
            value, path, f"Member must have length greater than or equal to {meta['min']}"
        )
    if "max" in meta and length > meta["max"]:
        yield _violation(
            value, path, f"Member must have length less than or equal to {meta['max']}"
        )


def _json_type(kind: str) -> str:
    return {
        "structure": "object",
        "map": "object",
        "list": "array",
        "integer": "integer",
        "long": "integer",
        "timestamp": "timestamp",
    }.get(kind, kind)


def check_structure(shape: Shape, value: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Yield one message per violated constraint in ``value`` (a structure of ``shape``)."""
    members: dict[str, Shape] = shape.members
    if shape.metadata.get("union"):
        present = [name for name in members if value.get(name) is not None]
        if len(present) != 1:
            yield _violation(
                value or None,
                prefix.rstrip(".") or shape.name,
                f"Member must have exactly one of the following members set: "
                f"[{', '.join(members)}]",
            )
    required = set(shape.required_members)
    for name, member in members.items():
        path = f"{prefix}{name}"
        item = value.get(name)
        if item is None:
            if name in required:
                yield _violation(None, path, "Member must not be null")
            continue
        yield from _check(member, item, path)


def patterns_of(shapes: Iterable[Shape]) -> set[str]:
    """Every pattern constraint reachable from ``shapes``."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = list(shapes)
    while todo:
        shape = todo.pop()
        if shape.name in seen:
            continue
        seen.add(shape.name)
        if "pattern" in shape.metadata:
            found.add(shape.metadata["pattern"])
        if shape.type_name == "structure":
            todo.extend(shape.members.values())
        elif shape.type_name == "list":
            todo.append(shape.member)
        elif shape.type_name == "map":
            todo.extend((shape.key, shape.value))
    return found


#: One member of a flat input shape: (name, required, type name, min, max, enum, pattern).
_FlatMember = tuple[str, bool, str, Any, Any, frozenset[str] | None, str | None]
#: Input shapes (by name, with the shape itself) whose members are all strings, integers or
#: timestamps: see :func:`_satisfies`.
_FLAT: dict[str, tuple[Shape, tuple[_FlatMember, ...]]] = {}
_FLAT_TYPES = frozenset({"string", "integer", "long", "timestamp"})
_TIMESTAMP_TYPES = frozenset({str, int, float})


def _flat(shape: Shape) -> tuple[_FlatMember, ...] | None:
    if shape.type_name != "structure" or shape.metadata.get("union"):
        return None
    members: dict[str, Shape] = shape.members
    if any(member.type_name not in _FLAT_TYPES for member in members.values()):
        return None
    required = set(shape.required_members)
    flat = []
    for name, member in members.items():
        meta = member.metadata
        enum = meta.get("enum")
        flat.append(
            (
                name,
                name in required,
                member.type_name,
                meta.get("min"),
                meta.get("max"),
                None if enum is None else frozenset(enum),
                meta.get("pattern"),
            )
        )
    return tuple(flat)


def _satisfies(flat: tuple[_FlatMember, ...], params: dict[str, Any]) -> bool:
    """Whether ``params`` meets every constraint of a flat shape: the checks of
    :func:`check_structure`, unrolled (a GetModelInvocationJob's walk through the generators
    above cost as much as its key query). Only a yes is final: on a no the generic walk
    runs, and words the violations."""
    for name, required, kind, low, high, enum, pattern in flat:
        value = params.get(name)
        if value is None:
            if required:
                return False
            continue
        if kind == "string":
            if type(value) is not str:
                return False
            size = len(value)
            if (low is not None and size < low) or (high is not None and size > high):
                return False
            if enum is not None and value not in enum:
                return False
            if pattern is not None and not patterns.fullmatch(pattern, value):
                return False
        elif kind == "timestamp":
            if type(value) not in _TIMESTAMP_TYPES:
                return False
        else:  # integer, long; a bool is no integer here (its type is bool)
            if type(value) is not int:
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
    return True


def prepare(shapes: Iterable[Shape]) -> None:
    """Compile every pattern reachable from ``shapes`` now, so that a pattern that cannot be
    checked in linear time stops the server at start-up rather than failing a request; and
    note the flat ones among them (:func:`_satisfies`)."""
    shapes = list(shapes)
    for pattern in sorted(patterns_of(shapes)):
        patterns.compiled(pattern)
    for shape in shapes:
        flat = _flat(shape)
        if flat is not None:
            _FLAT[shape.name] = (shape, flat)


def validate(shape: Shape | None, params: dict[str, Any]) -> None:
    """Raise :class:`ValidationException` listing every violation in ``params``."""
    if shape is None:
        return
    flat = _FLAT.get(shape.name)
    if flat is not None and flat[0] is shape and _satisfies(flat[1], params):
        return
    try:
        problems = list(check_structure(shape, params))
    except TypeMismatch as exc:
        raise ValidationException(str(exc)) from exc
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(f"{count} validation {noun} detected: " + "; ".join(problems))
