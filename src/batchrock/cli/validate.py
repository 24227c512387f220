"""Client-side parameter validation with botocore's ParamValidator rules and wording.

Only what botocore checks is checked: types, required members, unknown members, ``min`` on
lengths and values. Enums, ``max`` and patterns are left to the service, as AWS CLI does.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from batchrock.cli import timestamps
from batchrock.cli.model import ServiceModel, Shape


def _display(name: str) -> str:
    if not name:
        return "input"
    return name[1:] if name.startswith(".") else name


class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def type(self, name: str, value: Any, valid: list[str]) -> None:
        self.lines.append(
            f"Invalid type for parameter {_display(name)}, value: {value}, "
            f"type: {type(value)}, valid types: {', '.join(valid)}"
        )


def validate(model: ServiceModel, params: Any, shape: Shape) -> list[str]:
    """Every problem with ``params`` against ``shape``, one line each, botocore's order."""
    errors = _Errors()
    _validate(model, params, shape, errors, "")
    return errors.lines


def _validate(model: ServiceModel, value: Any, shape: Shape, errors: _Errors, name: str) -> None:
    kind = shape["type"]
    if kind == "structure":
        _structure(model, value, shape, errors, name)
    elif kind == "list":
        if not isinstance(value, list | tuple):
            errors.type(name, value, ["<class 'list'>", "<class 'tuple'>"])
            return
        _min_length(value, shape, errors, name)
        member = model.shape(shape["member"]["shape"])
        for i, item in enumerate(value):
            _validate(model, item, member, errors, f"{name}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            errors.type(name, value, ["<class 'dict'>"])
            return
        key_shape = model.shape(shape["key"]["shape"])
        value_shape = model.shape(shape["value"]["shape"])
        for k, v in value.items():
            _validate(model, k, key_shape, errors, f"{name} (key: {k})")
            _validate(model, v, value_shape, errors, f"{name}.{k}")
    elif kind == "string":
        if not isinstance(value, str):
            errors.type(name, value, ["<class 'str'>"])
            return
        _min_length(value, shape, errors, name)
    elif kind in ("integer", "long"):
        if not isinstance(value, int):
            errors.type(name, value, ["<class 'int'>"])
            return
        _min_value(value, shape, errors, name)
    elif kind in ("float", "double"):
        if not (isinstance(value, float | int) or type(value).__name__ == "Decimal"):
            errors.type(
                name, value, ["<class 'float'>", "<class 'decimal.Decimal'>", "<class 'int'>"]
            )
            return
        _min_value(value, shape, errors, name)
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.type(name, value, ["<class 'bool'>"])
    elif kind == "timestamp":
        if not (isinstance(value, _dt.datetime) or timestamps.is_timestamp(value)):
            errors.type(name, value, ["<class 'datetime.datetime'>", "timestamp-string"])
    elif kind == "blob":
        if not isinstance(value, bytes | bytearray | str) and not hasattr(value, "read"):
            errors.type(name, value, ["<class 'bytes'>", "<class 'bytearray'>", "file-like object"])


def _structure(model: ServiceModel, value: Any, shape: Shape, errors: _Errors, name: str) -> None:
    if not isinstance(value, dict):
        errors.type(name, value, ["<class 'dict'>"])
        return
    members = shape.get("members", {})
    if shape.get("union"):
        if len(value) == 0:
            # (botocore's wording, missing space included)
            errors.lines.append(
                "Must set one of the following keys for tagged unionstructure "
                f"{_display(name)}: " + ", ".join(members) + "."
            )
        elif len(value) > 1:
            errors.lines.append(
                "Invalid number of parameters set for tagged union structure "
                f"{_display(name)}. Can only set one of the following keys: "
                + ", ".join(members)
                + "."
            )
    for required in shape.get("required", []):
        if required not in value:
            errors.lines.append(f'Missing required parameter in {_display(name)}: "{required}"')
    known = []
    for param in value:
        if param not in members:
            errors.lines.append(
                f'Unknown parameter in {_display(name)}: "{param}", must be one of: '
                + ", ".join(members)
            )
        else:
            known.append(param)
    for param in known:
        _validate(model, value[param], model.member_shape(shape, param), errors, f"{name}.{param}")


def _min_length(value: Any, shape: Shape, errors: _Errors, name: str) -> None:
    low = shape.get("min")
    if low is not None and len(value) < low:
        errors.lines.append(
            f"Invalid length for parameter {_display(name)}, value: {len(value)}, "
            f"valid min length: {low}"
        )


def _min_value(value: Any, shape: Shape, errors: _Errors, name: str) -> None:
    low = shape.get("min")
    if low is not None and value < low:
        errors.lines.append(
            f"Invalid value for parameter {_display(name)}, value: {value}, valid min value: {low}"
        )
