"""``--output table``: AWS CLI's boxed tables, byte for byte.

Building: each dict becomes a titled section (one scalar -> a ``key | value`` row; several ->
a header row of sorted keys and one value row), nested values become indented sub-sections;
a list of dicts shares one header. Rendering: every section is as wide as the widest one;
columns are scaled to that width (Python's round-half-even) and the rounding remainder is
taken from or given to the columns in turn. When the table is wider than the terminal (80
columns on a pipe), single-row sections are turned into vertical ``header | value`` lists.
Display width counts East Asian wide, full-width and ambiguous characters as 2.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, TextIO


class TableError(ValueError):
    pass


def text_width(text: str) -> int:
    if not text:
        return 0
    return sum(2 if unicodedata.east_asian_width(ch) in "WFA" else 1 for ch in text)


@dataclass
class Styler:
    """Colours for ``--color on``: rows bold blue, indentation bars dim yellow."""

    color: bool = False

    def row(self, text: str) -> str:
        return f"\x1b[1m\x1b[34m{text}\x1b[0m" if self.color else text

    def indent(self, text: str) -> str:
        return f"\x1b[2m\x1b[33m{text}\x1b[0m" if self.color else text


@dataclass
class Section:
    title: str = ""
    indent: int = 0
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ncols: int | None = None
    widths: list[int] = field(default_factory=list)

    def _grow(self, cells: list[str]) -> None:
        if not self.widths:
            self.widths = [0] * len(cells)
        for i, cell in enumerate(cells):
            self.widths[i] = max(self.widths[i], text_width(cell))

    def add_header(self, headers: list[str]) -> None:
        self._grow(headers)
        if self.ncols is None:
            self.ncols = len(headers)
        self.headers = list(headers)

    def add_row(self, row: list[Any]) -> None:
        if self.ncols is None:
            self.ncols = len(row)
        if len(row) != self.ncols:
            raise TableError(f"Row should have {self.ncols} elements, instead it has {len(row)}")
        cells = [str(c) for c in row]
        self.rows.append(cells)
        self._grow(cells)

    def total_width(self) -> int:
        cols = sum(w + 4 for w in self.widths) + 2 + 2 * self.indent
        return max(text_width(self.title) + 2 + 2 * self.indent, cols)

    def column_widths(self, width: int) -> list[int]:
        unscaled = [w + 4 for w in self.widths]
        if not unscaled:
            return unscaled
        scale = width / float(sum(unscaled))
        scaled = [round(scale * w) for w in unscaled]
        off = sum(scaled) - width
        while off != 0:
            order = range(len(scaled)) if off > 0 else reversed(range(len(scaled)))
            for i in order:
                if off > 0:
                    scaled[i] -= 1
                    off -= 1
                else:
                    scaled[i] += 1
                    off += 1
                if off == 0:
                    break
        return scaled


class Table:
    def __init__(self, terminal_width: int, styler: Styler) -> None:
        self.sections: list[Section] = [Section()]
        self.terminal_width = terminal_width
        self.styler = styler

    @property
    def current(self) -> Section:
        return self.sections[-1]

    def new_section(self, title: str, indent: int) -> None:
        self.sections.append(Section(title=title, indent=indent))

    # --- building -------------------------------------------------------------------

    def build(self, title: str | None, value: Any, indent: int = 0) -> bool:
        if not value:
            return False
        if title is not None:
            self.new_section(title, indent)
        if isinstance(value, list):
            if isinstance(value[0], dict):
                self._from_list_of_dicts(value, indent, title)
            else:
                for item in value:
                    if _scalar(item):
                        self.current.add_row([item])
                    elif all(_scalar(el) for el in item):
                        self.current.add_row(list(item))
                    else:
                        self.build(None, item)
        if isinstance(value, dict):
            self._from_dict(value, indent)
        return True

    def _from_dict(self, value: dict[str, Any], indent: int) -> None:
        headers = sorted(k for k, v in value.items() if _scalar(v))
        more = sorted(k for k, v in value.items() if not _scalar(v))
        if len(headers) == 1:
            self.current.add_row([headers[0], value[headers[0]]])
        elif headers:
            self.current.add_header(headers)
            self.current.add_row([value[k] for k in headers])
        for key in more:
            self.build(key, value[key], indent + 1)

    def _from_list_of_dicts(self, items: list[Any], indent: int, title: str | None) -> None:
        headers_set: set[str] = set()
        more_set: set[str] = set()
        for item in items:
            # Iterate and index like AWS CLI does, so odd elements fail with its message.
            for k in item:
                (headers_set if _scalar(item[k]) else more_set).add(k)
        headers, more = sorted(headers_set), sorted(more_set)
        self.current.add_header(headers)
        for n, item in enumerate(items):
            if n and more:
                self.new_section(title or "", indent)
                self.current.add_header(headers)
            self.current.add_row([item.get(h, "") for h in headers])
            for key in more:
                if key in item:
                    self.build(key, item[key], indent + 1)

    # --- rendering ------------------------------------------------------------------

    def _max_width(self) -> int:
        return max(s.total_width() for s in self.sections)

    def render(self, write: Any) -> None:
        width = self._max_width()
        if width > self.terminal_width:
            self._to_vertical()
            width = self._max_width()
        write("-" * width + "\n")
        for section in self.sections:
            self._render_section(section, width, write)

    def _to_vertical(self) -> None:
        for i, section in enumerate(self.sections):
            if len(section.rows) == 1 and section.headers:
                vertical = Section(title=section.title, indent=section.indent)
                for header, cell in zip(section.headers, section.rows[0], strict=False):
                    vertical.add_row([header, cell])
                self.sections[i] = vertical

    def _render_section(self, section: Section, width: int, write: Any) -> None:
        bars = self.styler.indent("|") * section.indent if section.indent else ""

        def line(text: str) -> None:
            write(bars)
            write(text)
            write(bars)
            write("\n")

        inner = width - 2 * section.indent
        if section.title:
            line(_center(section.title, inner, "|", text_width(section.title)))
            if not section.headers and not section.rows:
                line("+" + "-" * (inner - 2) + "+")
        if section.headers:
            widths = section.column_widths(inner)
            line(_border(widths))
            cells = []
            for i, (w, h) in enumerate(zip(widths, section.headers, strict=False)):
                cells.append(_center(h, w, "|" if i == 0 else "", text_width(h)))
            line("".join(cells))
        if section.rows:
            widths = section.column_widths(inner)
            if not widths:
                return
            line(_border(widths))
            for row in section.rows:
                cells = []
                for i, (w, cell) in enumerate(zip(widths, row, strict=False)):
                    cells.append(
                        _left(self.styler.row(cell), w, "|" if i == 0 else "", text_width(cell))
                    )
                line("".join(cells))
            line(_border(widths))


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _border(widths: list[int]) -> str:
    parts = []
    for i, w in enumerate(widths):
        parts.append("+" + "-" * (w - 2) + "+" if i == 0 else "-" * (w - 1) + "+")
    return "".join(parts)


def _center(text: str, length: int, left: str, text_len: int) -> str:
    start = length // 2 - text_len // 2 - 1
    so_far = len(left) + start + text_len
    return left + " " * start + text + " " * (length - 1 - so_far) + "|"


def _left(text: str, length: int, left: str, text_len: int) -> str:
    pad = 2 if length - (text_len + 2 + len(left) + 1) >= 0 else 0
    so_far = len(left) + pad + text_len
    return left + " " * pad + text + " " * (length - so_far - 1) + "|"


def format_table(
    title: str, value: Any, out: TextIO, *, terminal_width: int, color: bool, autoreset: bool
) -> None:
    table = Table(terminal_width, Styler(color))
    if not table.build(title, value):
        return

    def write(text: str) -> None:
        out.write(text)
        if autoreset:
            out.write("\x1b[0m")

    table.render(write)
