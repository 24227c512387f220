"""Request-body checks that report violations the way Bedrock does.

Bedrock validates an InvokeModel body against the model's JSON schema and answers, for
example::

    Malformed input request: #: required key [max_tokens] not found#/temperature: expected
    type: Number, found: String, please reformat your input and try again.

(an everit-style list of violations, each starting with a JSON pointer). Converse bodies are
checked against the service model instead, and read like AWS validation errors::

    1 validation error detected: Value null at 'messages' failed to satisfy constraint:
    Member must not be null

:class:`Checker` collects violations in either style while a family parses a body, so one
pass both validates and extracts the fields; the per-record cost stays a few microseconds.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Set as AbstractSet
from typing import Any, Literal

Style = Literal["invoke", "converse"]

_JSON_TYPE = {
    str: "String",
    bool: "Boolean",
    int: "Integer",
    float: "BigDecimal",
    dict: "JSONObject",
    list: "JSONArray",
    type(None): "Null",
}


class BodyError(Exception):
    """A ``modelInput`` that does not fit its family's request schema (errorCode 400)."""

    code = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def found_type(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


class Checker:
    """Collects violations while a parser walks a body; :meth:`done` raises them together."""

    __slots__ = ("style", "violations")

    def __init__(self, style: Style = "invoke") -> None:
        self.style = style
        self.violations: list[str] = []

    # --- paths -------------------------------------------------------------------------

    def child(self, path: str, key: str | int) -> str:
        if self.style == "invoke":
            return f"{path}/{key}"
        if isinstance(key, int):
            # The AWS model numbers list members from 1: messages.1.member.content
            return f"{path}.{key + 1}.member"
        return key if path == "" else f"{path}.{key}"

    def root(self) -> str:
        return "#" if self.style == "invoke" else ""

    # --- reporting ---------------------------------------------------------------------

    def fail(self, path: str, text: str) -> None:
        if self.style == "invoke":
            self.violations.append(f"{path}: {text}")
        else:
            self.violations.append(text.replace("{path}", path))

    def type_error(self, path: str, expected: str, value: Any) -> None:
        if self.style == "invoke":
            self.fail(path, f"expected type: {expected}, found: {found_type(value)}")
        elif value is None:
            # The AWS model reads a null member as one not given.
            self.fail(
                path, "Value null at '{path}' failed to satisfy constraint: Member must not be null"
            )
        else:
            self.fail(
                path,
                f"Value at '{{path}}' failed to satisfy constraint: Member must be of type "
                f"{_CONVERSE_TYPE.get(expected, expected)}",
            )

    def done(self) -> None:
        if self.violations:
            raise BodyError(self.message())

    def message(self) -> str:
        if self.style == "invoke":
            joined = "".join(self.violations)
            return f"Malformed input request: {joined}, please reformat your input and try again."
        count = len(self.violations)
        noun = "error" if count == 1 else "errors"
        return f"{count} validation {noun} detected: " + "; ".join(self.violations)

    # --- structure ---------------------------------------------------------------------

    def obj(
        self,
        value: Any,
        path: str,
        required: Collection[str] = (),
        allowed: AbstractSet[str] | None = None,
    ) -> bool:
        """Check that ``value`` is an object with the required keys and no others.

        A required key given as ``null`` is reported as missing: the members' own checks
        read ``null`` as "not given" (right for optional members), so a required one would
        otherwise pass unchecked and reach code that needs its value."""
        if type(value) is not dict:
            self.type_error(path, "JSONObject", value)
            return False
        keys = value.keys()
        get = value.get
        if all(get(key) is not None for key in required) and (allowed is None or keys <= allowed):
            return True
        for key in required:
            if get(key) is None:
                if self.style == "invoke":
                    self.fail(path, f"required key [{key}] not found")
                else:
                    self.fail(
                        self.child(path, key),
                        "Value null at '{path}' failed to satisfy constraint: "
                        "Member must not be null",
                    )
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    if self.style == "invoke":
                        self.fail(path, f"extraneous key [{key}] is not permitted")
                    else:
                        self.fail(
                            self.child(path, key),
                            "Unknown field '{path}': the Converse request has no such member",
                        )
        return True

    def top(
        self,
        body: Any,
        required: Collection[str] = (),
        allowed: AbstractSet[str] | None = None,
    ) -> None:
        """Check the body itself; one that is not even an object is reported at once."""
        if not self.obj(body, self.root(), required, allowed):
            self.done()

    def array(self, body: dict[str, Any], key: str, path: str, min_items: int = 0) -> list[Any]:
        value = body.get(key)
        if value is None:
            return []
        if type(value) is list and len(value) >= min_items:
            return value
        where = self.child(path, key)
        if type(value) is not list:
            self.type_error(where, "JSONArray", value)
            return []
        if len(value) < min_items:
            if self.style == "invoke":
                self.fail(where, f"expected minimum item count: {min_items}, found: {len(value)}")
            else:
                self.fail(
                    where,
                    "Value '[]' at '{path}' failed to satisfy constraint: "
                    f"Member must have length greater than or equal to {min_items}",
                )
        return value

    def string(
        self,
        body: dict[str, Any],
        key: str,
        path: str,
        *,
        enum: Collection[str] | None = None,
        min_length: int = 0,
    ) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if type(value) is str and (enum is None or value in enum) and len(value) >= min_length:
            return value
        where = self.child(path, key)
        if type(value) is not str:
            self.type_error(where, "String", value)
            return None
        if enum is not None and value not in enum:
            if self.style == "invoke":
                self.fail(where, f"{value} is not a valid enum value")
            else:
                members = ", ".join(enum)
                self.fail(
                    where,
                    f"Value '{value}' at '{{path}}' failed to satisfy constraint: "
                    f"Member must satisfy enum value set: [{members}]",
                )
            return None
        if len(value) < min_length:
            if self.style == "invoke":
                self.fail(where, f"expected minLength: {min_length}, actual: {len(value)}")
            else:
                self.fail(
                    where,
                    "Value at '{path}' failed to satisfy constraint: "
                    f"Member must have length greater than or equal to {min_length}",
                )
        return value

    def integer(
        self,
        body: dict[str, Any],
        key: str,
        path: str,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = body.get(key)
        if value is None:
            return None
        if (
            type(value) is int
            and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum)
        ):
            return value
        where = self.child(path, key)
        if type(value) is not int:
            self.type_error(where, "Integer", value)
            return None
        if not self._in_range(where, value, minimum, maximum):
            return None
        return value

    def number(
        self,
        body: dict[str, Any],
        key: str,
        path: str,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | None:
        value = body.get(key)
        if value is None:
            return None
        kind = type(value)
        if (
            (kind is float or kind is int)
            and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum)
        ):
            return float(value)
        where = self.child(path, key)
        if kind is not float and kind is not int:
            self.type_error(where, "Number", value)
            return None
        if not self._in_range(where, value, minimum, maximum):
            return None
        return float(value)

    def boolean(self, body: dict[str, Any], key: str, path: str) -> bool | None:
        value = body.get(key)
        if value is None:
            return None
        if type(value) is not bool:
            self.type_error(self.child(path, key), "Boolean", value)
            return None
        return value

    def strings(self, body: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        """An optional array of strings (stop sequences)."""
        items = self.array(body, key, path)
        where = self.child(path, key)
        for index, item in enumerate(items):
            if type(item) is not str:
                self.type_error(self.child(where, index), "String", item)
                return ()
        return tuple(items)

    def _in_range(
        self, where: str, value: float, minimum: float | None, maximum: float | None
    ) -> bool:
        if minimum is not None and value < minimum:
            if self.style == "invoke":
                self.fail(where, f"{value} is not greater or equal to {minimum}")
            else:
                self.fail(
                    where,
                    f"Value '{value}' at '{{path}}' failed to satisfy constraint: "
                    f"Member must have value greater than or equal to {minimum}",
                )
            return False
        if maximum is not None and value > maximum:
            if self.style == "invoke":
                self.fail(where, f"{value} is not less or equal to {maximum}")
            else:
                self.fail(
                    where,
                    f"Value '{value}' at '{{path}}' failed to satisfy constraint: "
                    f"Member must have value less than or equal to {maximum}",
                )
            return False
        return True


_CONVERSE_TYPE = {
    "JSONObject": "structure",
    "JSONArray": "list",
    "String": "string",
    "Integer": "integer",
    "Number": "float",
    "Boolean": "boolean",
}
