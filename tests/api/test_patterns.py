"""The model's patterns run on RE2 with the meaning Python's ``re`` gives them, in linear time."""

from __future__ import annotations

import random
import re
import time
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import pytest
from botocore.model import Shape

from batchrock.api import model, patterns, validation

NAME_PATTERN = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"
REDOS = "a" + "-" * 30 + "!"  # 80 s with Python's re


def model_patterns() -> list[str]:
    service = model.service_model()
    found = {service.shape_for(name).metadata.get("pattern") for name in service.shape_names}
    return sorted(p for p in found if p is not None)


def python_parses(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def test_every_pattern_of_the_model_compiles_for_linear_matching() -> None:
    failures = []
    for pattern in model_patterns():
        try:
            patterns.compiled(pattern)
        except patterns.UnsupportedPattern as exc:
            failures.append(str(exc))
    assert not failures, "patterns without a linear-time matcher:\n" + "\n".join(failures)
    assert len(model_patterns()) > 50  # the model really was read


def test_only_patterns_python_cannot_read_are_left_to_re2_syntax() -> None:
    # ``\p{L}`` is not Python syntax (re would fail on it); RE2 reads it as Unicode letters.
    unreadable = [p for p in model_patterns() if not python_parses(p)]
    assert all(r"\p{L}" in p for p in unreadable), unreadable
    for pattern in unreadable:
        assert patterns.fullmatch(pattern, "Émile_2 x")
        assert not patterns.fullmatch(pattern, "2abc")


# --- generated strings: RE2 program against Python's re ------------------------------------

SPECIALS = [
    "\n", "\v", "\f", "\r", "\t", " ", "\x1c", "\x85", "\xa0", "\u2003", "\u3000", "\u0663",
    "\u07c0", "\U0001d7d8", "é", "ß", "Ǆ", "\U0001f600", "\x00", "_", "-", ":", "/", ".", "+",
    "$", "^", "a", "Z", "9", "[", "]", "\\", "'", "!", "*",
]  # fmt: skip
CATEGORY_SAMPLES = {
    sre.CATEGORY_DIGIT: "09\u0663\u07c0",
    sre.CATEGORY_SPACE: " \t\n\v\f\r\x1c\x85\xa0\u2003",
    sre.CATEGORY_WORD: "aZ9_é\u0663",
}


def _in_set(char: str, items: list[tuple[Any, Any]]) -> bool:
    code = ord(char)
    negate = False
    hit = False
    for op, arg in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            hit |= code == arg
        elif op is sre.RANGE:
            hit |= arg[0] <= code <= arg[1]
        elif op is sre.CATEGORY:
            hit |= re.fullmatch(_category_regex(arg), char) is not None
    return hit != negate


def _category_regex(category: Any) -> str:
    return {
        sre.CATEGORY_DIGIT: r"\d",
        sre.CATEGORY_NOT_DIGIT: r"\D",
        sre.CATEGORY_SPACE: r"\s",
        sre.CATEGORY_NOT_SPACE: r"\S",
        sre.CATEGORY_WORD: r"\w",
        sre.CATEGORY_NOT_WORD: r"\W",
    }[category]


def _candidates(items: list[tuple[Any, Any]]) -> list[str]:
    out = list(SPECIALS)
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.RANGE:
            out += [chr(arg[0]), chr(arg[1]), chr((arg[0] + arg[1]) // 2)]
            out += [chr(arg[0] - 1)] if arg[0] > 0 else []
            out += [chr(arg[1] + 1)]
        elif op is sre.CATEGORY:
            out += CATEGORY_SAMPLES.get(arg, "")
    return out


def _generate(items: Any, rng: random.Random, out: list[str]) -> None:
    """A string the parsed pattern matches (repetitions kept short: Python's re backtracks)."""
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            out.append(rng.choice([c for c in SPECIALS if ord(c) != arg]))
        elif op is sre.ANY:
            out.append(rng.choice([c for c in SPECIALS if c != "\n"]))
        elif op is sre.IN:
            inside = [c for c in _candidates(arg) if _in_set(c, arg)]
            out.append(rng.choice(inside))
        elif op is sre.BRANCH:
            _generate(rng.choice(arg[1]), rng, out)
        elif op is sre.SUBPATTERN:
            _generate(arg[3], rng, out)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, body = arg
            top = low + 3 if high is sre.MAXREPEAT else min(high, low + 3)
            for _ in range(rng.randint(low, top)):
                _generate(body, rng, out)


def _mutate(text: str, alphabet: list[str], rng: random.Random) -> str:
    where = rng.randint(0, len(text))
    kind = rng.randrange(7)
    if kind == 0 and text:
        return text[: where - 1] + text[where:] if where else text[1:]
    if kind == 1:
        return text[:where] + rng.choice(alphabet) + text[where:]
    if kind == 2 and text:
        where = min(where, len(text) - 1)
        return text[:where] + rng.choice(alphabet) + text[where + 1 :]
    if kind == 3:
        return text + "\n"
    if kind == 4:
        return text + rng.choice(alphabet)
    if kind == 5:
        return text.swapcase()
    return text[:where] + text[where:][:4] + text[where:]


def samples(pattern: str, count: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:{pattern}")
    parsed = sre_parse.parse(pattern)
    alphabet = sorted({c for c in pattern if c.isprintable()} | set(SPECIALS))
    out = ["", "\n"]
    for _ in range(count):
        built: list[str] = []
        _generate(parsed, rng, built)
        text = "".join(built)
        out.append(text)
        for _ in range(rng.randint(1, 3)):
            text = _mutate(text, alphabet, rng)
        out.append(text)
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
    return out


@pytest.mark.parametrize("pattern", [p for p in model_patterns() if python_parses(p)])
def test_re2_program_matches_exactly_what_python_re_matches(pattern: str) -> None:
    python = re.compile(pattern)
    matched = 0
    for text in samples(pattern, 120, seed=9):
        want = python.fullmatch(text) is not None
        assert patterns.fullmatch(pattern, text) == want, (pattern, text, patterns.to_re2(pattern))
        matched += want
    assert matched > 0, f"no generated string matched {pattern!r}"


@pytest.mark.parametrize(
    "pattern",
    [
        r"x{1,2048}",
        r"(ab){1500}",
        r"x{1200,}",
        r"[^\s]{0,1001}y",
        r"[\S\s]{2,3}",
        r"[^\S]+",
        r"\w+\W?",
        r"\d\D",
        r"[a-zA-Z-_]+",
        r"[a-zA-Z0-9-:.]+",
        r"(a|b$)\Z",
        r"x{0}y",
        r"^ab$",
        r".+",
    ],
)
def test_translation_of_python_only_features(pattern: str) -> None:
    python = re.compile(pattern)
    texts = samples(pattern, 40, seed=3) + [
        "x" * n for n in (0, 1, 999, 1000, 1001, 1199, 1200, 1201, 2047, 2048, 2049)
    ]
    texts += ["ab" * n for n in (1499, 1500, 1501)] + ["a\n", "b\n", "ab\n", "\u0663\u0664", "é"]
    for text in texts:
        assert patterns.fullmatch(pattern, text) == (python.fullmatch(text) is not None), (
            pattern,
            text[:40],
        )


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?i)a", r"\bword", r"(?>a+)b"])
def test_what_re2_cannot_express_is_refused_loudly(pattern: str) -> None:
    with pytest.raises(patterns.UnsupportedPattern):
        patterns.compiled(pattern)


def test_lone_surrogates_satisfy_no_pattern() -> None:
    assert not patterns.fullmatch(r".*", "\ud800")


def test_the_job_name_attack_is_answered_at_once() -> None:
    started = time.perf_counter()
    assert not patterns.fullmatch(NAME_PATTERN, REDOS)
    assert not patterns.fullmatch(NAME_PATTERN, "a" + "-" * 200_000 + "!")
    assert patterns.fullmatch(NAME_PATTERN, "a" + "-" * 62 + "b")
    assert time.perf_counter() - started < 2.0  # Python's re: 80 s for the first alone


def test_prepare_compiles_what_the_served_operations_use() -> None:
    shapes = [model.operation(name).input_shape for name in model.OPERATIONS]
    found = validation.patterns_of(shapes)
    assert NAME_PATTERN in found
    validation.prepare(shapes)
    backreference = Shape("Odd", {"type": "string", "pattern": r"(a)\1"})
    with pytest.raises(patterns.UnsupportedPattern):
        validation.prepare([backreference])
