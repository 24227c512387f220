"""AWS CLI shorthand syntax: ``key=value,key2=[a,b],key3={k=v}``, with AWS CLI's grammar and
error messages.

Grammar: ``keyval ("," keyval)*``; ``keyval`` is ``key ["@"] "=" values``; a key is made of
letters, digits and ``-_.#/:``; ``values`` is nothing, an explicit ``[...]`` list, a
``{...}`` hash, or a comma list whose later items cannot contain ``=`` (so ``a=b,c=d`` is two
keys but ``a=b,c`` is the list ``[b, c]``). Values may be single- or double-quoted; ``\\,``
is a literal comma; ``key@=file://path`` reads the value from a file. The parse is purely
syntactic; :mod:`batchrock.cli.cliargs` shapes the result to the model afterwards.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# Character classes of unquoted words (code points up to U+FFFF, as AWS CLI's regexes):
# a word starts with a printable character other than space " ' , = [ {
_START = r"!#-&(-+\--<>-Z\\-z|-\uffff"
# the first value of a key may go on with anything but " ' , ] }
_FIRST_MORE = r"\s!#-&(-+\--\\^-|~-\uffff"
# later comma-separated values may not contain " ' , =
_SECOND_MORE = r"\s!#-&(-+\--<>-\uffff"
_COMMA = r"\\,"
_FIRST = rf"(?:{_COMMA}|[{_START}])(?:{_COMMA}|[{_FIRST_MORE}])*"
_SECOND = rf"(?:{_COMMA}|[{_START}])(?:{_COMMA}|[{_SECOND_MORE}])*"
_SINGLE = r"'(?:\\'|[^'])*'"
_DOUBLE = r'"(?:\\"|[^"])*"'


@functools.cache
def _rx(pattern: str) -> re.Pattern[str]:
    # Compiled on first use: these classes span the whole BMP and take ~15 ms to compile.
    return re.compile(pattern)


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.#/:")
_WHITESPACE = frozenset(" \t\n\r\x0b\x0c")


class ShorthandError(ValueError):
    """A shorthand value that does not parse; the text shows where, as AWS CLI does."""

    def __init__(self, value: str, index: int, message: str) -> None:
        self.value = value
        self.index = index
        super().__init__(message.replace("{where}", _where(value, index)))


def _where(value: str, index: int) -> str:
    consumed, rest, spaces = value, "", index
    if "\n" in value[:index]:
        spaces = index - value[:index].rindex("\n") - 1
    if "\n" in value[index:]:
        cut = index + value[index:].index("\n")
        consumed, rest = value[:cut], value[cut:]
    return f"{consumed}\n{' ' * spaces}^{rest}"


def _syntax(value: str, index: int, expected: str, actual: str) -> ShorthandError:
    return ShorthandError(
        value, index, f"Expected: '{expected}', received: '{actual}' for input:\n {{where}}"
    )


class _Parser:
    def __init__(self, text: str, load_file: Any) -> None:
        self.text = text
        self.i = 0
        self.load_file = load_file
        self.from_file = False

    # --- primitives -----------------------------------------------------------------

    def eof(self) -> bool:
        return self.i >= len(self.text)

    def current(self) -> str | None:
        return None if self.eof() else self.text[self.i]

    def skip_ws(self) -> None:
        while not self.eof() and self.text[self.i] in _WHITESPACE:
            self.i += 1

    def expect(self, char: str, *, ws: bool = False) -> None:
        if ws:
            self.skip_ws()
        if self.eof():
            raise _syntax(self.text, self.i, char, "EOF")
        if self.text[self.i] != char:
            raise _syntax(self.text, self.i, char, self.text[self.i])
        self.i += 1
        if ws:
            self.skip_ws()

    def regex(self, pattern: str, name: str) -> str:
        match = _rx(pattern).match(self.text, self.i)
        if match is None:
            raise _syntax(self.text, self.i, f"<{name}>", "<none>")
        self.i = match.end()
        return match.group(0)

    def resolve(self, value: str) -> Any:
        return self.load_file(value) if self.from_file else value

    # --- grammar --------------------------------------------------------------------

    def parameter(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        key, value = self.keyval()
        params[key] = value
        last = self.i
        while not self.eof():
            self.expect(",", ws=True)
            key, value = self.keyval()
            if key in params:
                raise ShorthandError(
                    self.text,
                    last + 1,
                    f'Second instance of key "{key}" encountered for input:\n{{where}}\n'
                    'This is often because there is a preceding "," instead of a space.',
                )
            params[key] = value
            last = self.i
        return params

    def key_and_equals(self) -> str:
        start = self.i
        while not self.eof() and self.text[self.i] in _KEY_CHARS:
            self.i += 1
        key = self.text[start : self.i]
        self.from_file = False
        save = self.i
        self.skip_ws()
        if self.current() == "@":
            self.i += 1
            self.skip_ws()
            self.from_file = True
        else:
            self.i = save
        self.expect("=", ws=True)
        return key

    def keyval(self) -> tuple[str, Any]:
        key = self.key_and_equals()
        return key, self.values()

    def values(self) -> Any:
        if self.eof():
            return ""
        if self.current() == "[":
            return self.explicit_list()
        if self.current() == "{":
            return self.hash_literal()
        return self.csv_value()

    def csv_value(self) -> Any:
        first = self.first_value()
        self.skip_ws()
        if self.eof() or self.text[self.i] != ",":
            return first
        self.expect(",", ws=True)
        items = [first]
        while True:
            try:
                value = self.second_value()
                self.skip_ws()
                if self.eof():
                    items.append(value)
                    break
                self.expect(",", ws=True)
                items.append(value)
            except ShorthandError:
                if self.eof():
                    raise
                # Not a list item after all but the next "key=": give the comma back.
                while self.i >= 0 and self.text[self.i] != ",":
                    self.i -= 1
                break
        return first if len(items) == 1 else items

    def explicit_list(self) -> list[Any]:
        self.expect("[", ws=True)
        items: list[Any] = []
        while self.current() != "]":
            items.append(self.explicit_value())
            self.skip_ws()
            if self.current() != "]":
                self.expect(",")
                self.skip_ws()
        self.expect("]")
        return items

    def explicit_value(self) -> Any:
        if self.current() == "[":
            return self.explicit_list()
        if self.current() == "{":
            return self.hash_literal()
        return self.first_value()

    def hash_literal(self) -> dict[str, Any]:
        self.expect("{", ws=True)
        result: dict[str, Any] = {}
        while self.current() != "}":
            key = self.key_and_equals()
            value = self.explicit_value()
            self.skip_ws()
            if self.current() != "}":
                self.expect(",")
                self.skip_ws()
            result[key] = value
        self.expect("}")
        return result

    def first_value(self) -> Any:
        quoted = self.quoted()
        if quoted is not None:
            return quoted
        match = _rx(_FIRST).match(self.text, self.i)
        if match is None:
            return ""
        self.i = match.end()
        return self.resolve(match.group(0).replace("\\,", ",").rstrip())

    def second_value(self) -> Any:
        quoted = self.quoted()
        if quoted is not None:
            return quoted
        return self.resolve(self.regex(_SECOND, "second").replace("\\,", ",").rstrip())

    def quoted(self) -> Any:
        char = self.current()
        if char == "'":
            raw = self.regex(_SINGLE, "singled quoted")[1:-1]
        elif char == '"':
            raw = self.regex(_DOUBLE, "double quoted")[1:-1]
        else:
            return None
        return self.resolve(raw.replace("\\" + char, char).replace("\\\\", "\\"))


def parse(text: str, load_file: Any = None) -> dict[str, Any]:
    """Parse one shorthand value; ``load_file`` reads ``key@=file://...`` values."""
    return _Parser(text, load_file or (lambda v: v)).parameter()
