"""The service model's ``pattern`` constraints, checked in time linear in the input.

Python's ``re`` backtracks: the model's job-name pattern
``[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\\+\\-\\.]){0,63}`` takes exponential time on ``a`` + 30
hyphens + ``!`` (80 s, with the event loop held). RE2 (google-re2) runs every pattern as an
automaton, linear in the input, whatever the pattern.

The model's patterns were written for, and have always been applied with, Python's syntax and
meaning (``\\s`` and ``\\d`` are Unicode-aware, ``-`` after a range is a literal, ...), and RE2
reads some of them differently (its ``\\s`` is ASCII, its repetition counts stop at 1000). So a
pattern is not handed to RE2 as written: Python's own parser (``re._parser``) reads it, and
:func:`to_re2` writes the parsed tree back out in a form whose meaning is the same in RE2:
character classes as explicit code-point ranges, ``\\s``/``\\d``/``\\w`` as the code points
Python gives them, ``.`` as ``[^\\n]``, every group non-capturing, counts above 1000 split into
chunks (``x{1,2048}`` is ``x{1,1000}x{0,1000}x{0,48}``, the same language). What RE2 cannot
express (back-references, look-arounds, flags) raises :class:`UnsupportedPattern`; no pattern
of the bedrock model does. A pattern Python cannot parse at all (the model's ``\\p{L}``) is given
to RE2 as written: ``re`` would fail on it anyway. tests/api/test_patterns.py checks every
pattern of the model against ``re`` on generated strings.

``$`` is written as end of text: ``re`` also lets it match before a final newline, which under
full-match semantics only changes the result when what follows ``$`` can match that newline
(no model pattern does; the tests include such strings).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Sequence
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import re2

#: RE2's largest repetition count.
_MAX_REPEAT = 1000
_MAX_CODE_POINT = sys.maxunicode
_ZERO_WIDTH_OK = frozenset({sre.AT_BEGINNING, sre.AT_BEGINNING_STRING})
_AT_END = frozenset({sre.AT_END, sre.AT_END_STRING})

Ranges = list[tuple[int, int]]


class UnsupportedPattern(ValueError):
    """A model pattern that cannot be checked in linear time with its Python meaning."""


def fullmatch(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (the model's full-match semantics)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: no JSON or query decoder of the API produces them, and RE2 reads
        # UTF-8 only. Such a value satisfies no pattern.
        return False
    return compiled(pattern).fullmatch(data) is not None


@functools.cache
def compiled(pattern: str) -> Any:
    """The RE2 program for a model pattern (cached); raises :class:`UnsupportedPattern`."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        source = pattern  # not Python syntax at all (``\p{L}``): RE2's own reading
    else:
        if parsed.state.flags & ~(sre.SRE_FLAG_UNICODE):
            raise UnsupportedPattern(f"{pattern!r}: inline flags are not supported")
        source = _sequence(parsed, pattern)
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 64 << 20
    try:
        return re2.compile(source.encode("utf-8"), options)
    except re2.error as exc:
        raise UnsupportedPattern(f"{pattern!r}: RE2 cannot compile it: {exc}") from None


def to_re2(pattern: str) -> str:
    """RE2 syntax with the meaning ``pattern`` has in Python's ``re``."""
    return _sequence(sre_parse.parse(pattern), pattern)


def _sequence(items: Iterable[tuple[Any, Any]], pattern: str) -> str:
    return "".join(_item(op, arg, pattern) for op, arg in items)


def _item(op: Any, arg: Any, pattern: str) -> str:
    if op is sre.LITERAL:
        return _char(arg)
    if op is sre.NOT_LITERAL:
        return _class(_complement([(arg, arg)]))
    if op is sre.ANY:  # no DOTALL: anything but a newline
        return _class(_complement([(10, 10)]))
    if op is sre.IN:
        return _class(_set(arg, pattern))
    if op is sre.BRANCH:
        return "(?:" + "|".join(_sequence(seq, pattern) for seq in arg[1]) + ")"
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, body = arg
        if add_flags or del_flags:
            raise UnsupportedPattern(f"{pattern!r}: inline flags are not supported")
        return "(?:" + _sequence(body, pattern) + ")"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # greed does not change a full match
        low, high, body = arg
        return _repeat("(?:" + _sequence(body, pattern) + ")", low, high)
    if op is sre.AT:
        if arg in _ZERO_WIDTH_OK:
            return r"\A"
        if arg in _AT_END:
            return r"\z"
    raise UnsupportedPattern(f"{pattern!r}: {op} {arg} has no linear-time equivalent")


def _repeat(atom: str, low: int, high: Any) -> str:
    """``atom{low,high}`` in chunks RE2 accepts (``high`` may be ``MAXREPEAT``: no bound)."""
    parts: list[str] = []
    remaining = low
    while remaining > _MAX_REPEAT:
        parts.append(f"{atom}{{{_MAX_REPEAT}}}")
        remaining -= _MAX_REPEAT
    if high is sre.MAXREPEAT:
        parts.append(f"{atom}{{{remaining},}}")
        return "".join(parts)
    optional = high - low
    first = min(optional, _MAX_REPEAT - remaining)
    parts.append(f"{atom}{{{remaining},{remaining + first}}}")
    optional -= first
    while optional > 0:
        step = min(optional, _MAX_REPEAT)
        parts.append(f"{atom}{{0,{step}}}")
        optional -= step
    return "".join(parts)


def _set(items: Sequence[tuple[Any, Any]], pattern: str) -> Ranges:
    negate = False
    ranges: Ranges = []
    for op, arg in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            ranges.append((arg, arg))
        elif op is sre.RANGE:
            ranges.append(arg)
        elif op is sre.CATEGORY:
            ranges.extend(_category(arg, pattern))
        else:
            raise UnsupportedPattern(f"{pattern!r}: {op} in a character class")
    merged = _merge(ranges)
    return _complement(merged) if negate else merged


def _category(category: Any, pattern: str) -> Ranges:
    classes: dict[Any, tuple[str, bool]] = {
        sre.CATEGORY_DIGIT: ("d", False),
        sre.CATEGORY_NOT_DIGIT: ("d", True),
        sre.CATEGORY_SPACE: ("s", False),
        sre.CATEGORY_NOT_SPACE: ("s", True),
        sre.CATEGORY_WORD: ("w", False),
        sre.CATEGORY_NOT_WORD: ("w", True),
    }
    if category not in classes:
        raise UnsupportedPattern(f"{pattern!r}: class {category}")
    name, negated = classes[category]
    ranges = _code_points()[name]
    return _complement(ranges) if negated else ranges


@functools.cache
def _code_points() -> dict[str, Ranges]:
    """The code points of ``\\d``, ``\\s`` and ``\\w`` as ranges, with the meaning Python's ``re``
    gives them in str patterns (its Unicode tables, whatever RE2's are). ``re`` itself finds
    the runs over a string of every code point: a Python loop calling a test per code point
    cost about 1.8 s of CPU at every server start."""
    every = "".join(map(chr, range(_MAX_CODE_POINT + 1)))
    return {
        name: [(m.start(), m.end() - 1) for m in re.finditer(f"\\{name}+", every)]
        for name in ("d", "s", "w")
    }


def _merge(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    next_low = 0
    for low, high in _merge(ranges):
        if low > next_low:
            out.append((next_low, low - 1))
        next_low = high + 1
    if next_low <= _MAX_CODE_POINT:
        out.append((next_low, _MAX_CODE_POINT))
    return out


def _class(ranges: Ranges) -> str:
    if not ranges:
        return r"[^\x00-\x{10FFFF}]"  # matches nothing
    body = "".join(
        _code(low) if low == high else f"{_code(low)}-{_code(high)}" for low, high in ranges
    )
    return f"[{body}]"


def _char(point: int) -> str:
    return chr(point) if chr(point).isascii() and chr(point).isalnum() else _code(point)


def _code(point: int) -> str:
    return f"\\x{{{point:X}}}"
