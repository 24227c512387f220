"""The layers only depend inward: the wire protocol stays at the edge.

api/, cli/, admin, demo  (edges)
    -> service, engine
        -> jobs, errors, clock, settings, store.base, backends.base, objects (seams)
            <- store.sqlite, backends.*, objects.* (implementations)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "batchrock"

# module prefix -> package prefixes it must not import
FORBIDDEN = {
    "batchrock.jobs": ["batchrock.api", "batchrock.cli", "batchrock.store", "batchrock.engine"],
    "batchrock.errors": ["batchrock.api", "batchrock.cli", "batchrock.store", "batchrock.engine"],
    "batchrock.service": ["batchrock.api", "batchrock.cli", "batchrock.engine"],
    "batchrock.store": ["batchrock.api", "batchrock.cli", "batchrock.engine", "batchrock.service"],
    "batchrock.engine": ["batchrock.api", "batchrock.cli"],
    # The API talks to the store through its interface only (PostgreSQL must drop in).
    "batchrock.api": ["batchrock.store.sqlite", "batchrock.engine", "batchrock.cli"],
    "batchrock.backends": ["batchrock.api", "batchrock.engine", "batchrock.store"],
    "batchrock.objects": ["batchrock.api", "batchrock.cli", "batchrock.engine", "batchrock.store"],
    # Accounts, keys and signature checks know nothing of HTTP answers, jobs or storage.
    "batchrock.access": [
        "batchrock.api",
        "batchrock.cli",
        "batchrock.store",
        "batchrock.engine",
        "batchrock.service",
    ],
    # The catalogue is data and a protocol: it knows nothing of backends, wire or storage.
    "batchrock.catalogue": [
        "batchrock.api",
        "batchrock.cli",
        "batchrock.store",
        "batchrock.engine",
        "batchrock.service",
        "batchrock.backends",
    ],
    # Metrics are reported to, never a way into the layers that report them.
    "batchrock.metrics": [
        "batchrock.api",
        "batchrock.cli",
        "batchrock.engine",
        "batchrock.service",
        "batchrock.store.sqlite",
    ],
    # Events are read from the store's interface and sent out; nothing runs through them.
    "batchrock.events": [
        "batchrock.cli",
        "batchrock.engine",
        "batchrock.service",
        "batchrock.store.sqlite",
    ],
    # The console is an edge beside the API: the service and the store's interface only.
    "batchrock.console": ["batchrock.store.sqlite", "batchrock.engine", "batchrock.cli"],
    # The CLI is a client of the HTTP API: it never reaches into the server's insides.
    "batchrock.cli": ["batchrock.api", "batchrock.store", "batchrock.engine", "batchrock.service"],
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_inward(path: Path) -> None:
    name = _module_name(path)
    rules = [
        bad for prefix, bad in FORBIDDEN.items() if name == prefix or name.startswith(prefix + ".")
    ]
    imported = _imports(path)
    violations = sorted(
        imp
        for imp in imported
        for bad_list in rules
        for bad in bad_list
        if imp == bad or imp.startswith(bad + ".")
    )
    assert not violations, f"{name} imports {violations}"


def test_wire_names_stay_at_the_edge() -> None:
    """camelCase member names and error headers appear only in the edges: api/, cli/, console/."""
    wire_words = ("invocationJobSummaries", "x-amzn-errortype", "jobArn")
    for path in MODULES:
        name = _module_name(path)
        if name.startswith(
            ("batchrock.api", "batchrock.cli", "batchrock.console", "batchrock.demo")
        ):
            continue
        text = path.read_text()
        for word in wire_words:
            assert word not in text, f"{name} uses the wire name {word!r}"
