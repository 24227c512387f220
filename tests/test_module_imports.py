"""Every module of the package imports on its own, first: a module that only works when some
other module happened to be imported before it (an import cycle) breaks the first script or
benchmark that imports it directly."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import batchrock


def _modules() -> list[str]:
    # ``__main__`` modules run their program when imported (python -m): not library code.
    return sorted(
        info.name
        for info in pkgutil.walk_packages(batchrock.__path__, prefix="batchrock.")
        if not info.name.endswith(".__main__")
    )


def test_each_module_imports_first_on_its_own() -> None:
    kept = {name: module for name, module in sys.modules.items() if name.startswith("batchrock")}
    failures: dict[str, str] = {}
    try:
        for name in _modules():
            for loaded in [n for n in sys.modules if n.startswith("batchrock")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception as exc:  # each failure named, not only the first
                failures[name] = f"{type(exc).__name__}: {exc}"
    finally:
        for loaded in [n for n in sys.modules if n.startswith("batchrock")]:
            del sys.modules[loaded]
        sys.modules.update(kept)
    assert len(_modules()) > 100
    assert failures == {}
