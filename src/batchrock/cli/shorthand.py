"""AWS CLI shorthand syntax: ``key=value,key2=[a,b],key3={k=v}``.

Grammar (the AWS CLI's documented one): ``keyval ("," keyval)*`` where a value is a quoted or
plain string, a comma list continuing until the next ``key=``, an explicit ``[...]`` list or a
``{...}`` hash. The result is plain dicts/lists/strings; :func:`batchrock.cli.cliargs` then
shapes it to the model (numbers, lists of one item).
"""

from __future__ import annotations

from typing import Any

_SPECIAL = ",=[]{}"


class ShorthandError(ValueError):
    def __init__(self, value: str, expected: str, received: str, index: int) -> None:
        self.value = value
        super().__init__(
            f"Expected: '{expected}', received: '{received}' for input:\n{value}\n{' ' * index}^"
        )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def error(self, expected: str) -> ShorthandError:
        received = self.text[self.i] if self.i < len(self.text) else "EOF"
        return ShorthandError(self.text, expected, received, self.i)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t", "\n") and self.peek():
            self.i += 1

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.peek() != ch:
            raise self.error(ch)
        self.i += 1

    def parameter(self) -> dict[str, Any]:
        out = self.keyvals(closing="")
        if self.i < len(self.text):
            raise self.error(",")
        return out

    def keyvals(self, closing: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            key = self.key()
            self.expect("=")
            out[key] = self.values(closing)
            self.skip_ws()
            if self.peek() == ",":
                self.i += 1
                continue
            return out

    def key(self) -> str:
        self.skip_ws()
        start = self.i
        while self.peek() and self.peek() not in _SPECIAL:
            self.i += 1
        key = self.text[start : self.i].strip()
        if not key:
            raise self.error("key")
        return key

    def _next_is_key(self) -> bool:
        """After a comma: does a ``key=`` follow (ending a comma list)?"""
        j = self.i
        while j < len(self.text) and self.text[j] not in _SPECIAL:
            j += 1
        return j < len(self.text) and self.text[j] == "="

    def values(self, closing: str) -> Any:
        self.skip_ws()
        ch = self.peek()
        if ch == "[":
            return self.explicit_list()
        if ch == "{":
            self.i += 1
            self.skip_ws()
            if self.peek() == "}":
                self.i += 1
                return {}
            hashed = self.keyvals(closing="}")
            self.expect("}")
            return hashed
        first = self.value(allow_eq=True)
        items = [first]
        while self.peek() == ",":
            save = self.i
            self.i += 1
            if self._next_is_key() or self.peek() in ("", closing):
                self.i = save
                break
            items.append(self.value(allow_eq=False))
        return items[0] if len(items) == 1 else items

    def explicit_list(self) -> list[Any]:
        self.expect("[")
        items: list[Any] = []
        self.skip_ws()
        if self.peek() == "]":
            self.i += 1
            return items
        while True:
            self.skip_ws()
            if self.peek() == "[":
                items.append(self.explicit_list())
            elif self.peek() == "{":
                self.i += 1
                items.append(self.keyvals(closing="}"))
                self.expect("}")
            else:
                items.append(self.value(allow_eq=False))
            self.skip_ws()
            if self.peek() == ",":
                self.i += 1
                continue
            self.expect("]")
            return items

    def value(self, *, allow_eq: bool) -> str:
        self.skip_ws()
        ch = self.peek()
        if ch in ("'", '"'):
            return self.quoted(ch)
        start = self.i
        stop = ",[]{}" if allow_eq else ",=[]{}"
        while self.peek() and self.peek() not in stop:
            self.i += 1
        return self.text[start : self.i].strip()

    def quoted(self, quote: str) -> str:
        self.i += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise self.error(quote)
            if ch == "\\" and self.i + 1 < len(self.text) and self.text[self.i + 1] == quote:
                out.append(quote)
                self.i += 2
                continue
            self.i += 1
            if ch == quote:
                return "".join(out)
            out.append(ch)


def parse(text: str) -> dict[str, Any]:
    return _Parser(text).parameter()
