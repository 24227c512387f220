"""``--output text``: tab-separated lines, AWS CLI's layout rules.

A dict prints its scalar values (sorted by key) on one line, prefixed by the upper-cased name
of the key it came from, then its nested values; a list of dicts shares one sorted column set
(missing keys print empty) so the rows line up; a list of scalars prints one ``NAME<TAB>value``
line per item under a name, or one tab-joined line without one.
"""

from __future__ import annotations

from typing import Any, TextIO


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def format_text(item: Any, out: TextIO, ident: str | None = None) -> None:
    _format(item, out, ident, None)


def _format(item: Any, out: TextIO, ident: str | None, keys: list[str] | None) -> None:
    if isinstance(item, dict):
        _dict(item, out, ident, keys)
    elif isinstance(item, list):
        _list(item, out, ident)
    else:
        out.write(f"{item}\n")


def _dict(item: dict[str, Any], out: TextIO, ident: str | None, keys: list[str] | None) -> None:
    if keys is None:
        ordered = sorted(item.items())
        scalars = [str(v) for _, v in ordered if _scalar(v)]
        nested = [(k, v) for k, v in ordered if not _scalar(v)]
    else:
        scalars = [str(item.get(k, "")) for k in keys]
        nested = [(k, item[k]) for k in sorted(set(item) - set(keys))]
    if scalars:
        if ident is not None:
            scalars.insert(0, ident.upper())
        out.write("\t".join(scalars) + "\n")
    for key, value in nested:
        _format(value, out, key, None)


def _list(items: list[Any], out: TextIO, ident: str | None) -> None:
    if not items:
        return
    if any(isinstance(el, dict) for el in items):
        # Every element is asked for its items: a non-dict element fails here exactly as it
        # does in AWS CLI ("'str' object has no attribute 'items'").
        keys = sorted({k for el in items for k, v in el.items() if _scalar(v)})
        for el in items:
            _format(el, out, ident, keys)
    elif any(isinstance(el, list) for el in items):
        scalars = [el for el in items if _scalar(el)]
        if scalars:
            _scalar_list(scalars, out, ident)
        for el in items:
            if not _scalar(el):
                _format(el, out, ident, None)
    else:
        _scalar_list(items, out, ident)


def _scalar_list(items: list[Any], out: TextIO, ident: str | None) -> None:
    if ident is not None:
        for el in items:
            out.write(f"{ident.upper()}\t{el}\n")
    else:
        out.write("\t".join(str(el) for el in items) + "\n")
