"""``batchrock models``: show the routes, and which backend and family a model id gets.

batchrock models                      # the routes table and the fallback
batchrock models MODEL_ID [...]       # also: where each id goes, and its family
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from batchrock.backends.base import ModelBackend
from batchrock.backends.families import base_model_id, family_for_id
from batchrock.backends.routing import (
    BackendResolver,
    ConfigError,
    NoRouteError,
    Route,
    build_resolver,
)
from batchrock.settings import Settings


def main(argv: list[str], settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="batchrock models", description="Show which backend answers which model ids."
    )
    parser.add_argument("model_ids", nargs="*", metavar="MODEL_ID", help="model ids to look up")
    args = parser.parse_args(argv)
    try:
        resolver = build_resolver(settings)
    except ConfigError as exc:
        print(f"batchrock models: {exc}", file=sys.stderr)
        return 2
    for line in routes_table(resolver):
        print(line, file=out)
    if args.model_ids:
        print("", file=out)
    status = 0
    for model_id in args.model_ids:
        line, ok = lookup(resolver, model_id)
        print(line, file=out)
        status = status if ok else 1
    return status


def describe(backend: ModelBackend) -> str:
    inner = getattr(backend, "inner", backend)
    text = getattr(inner, "describe", None)
    return str(text()) if callable(text) else type(inner).__name__


def routes_table(resolver: BackendResolver) -> list[str]:
    lines = []
    if resolver.config_path is None:
        lines.append("Routes: none (no models config; setting models_config)")
    elif not resolver.routes:
        lines.append(f"Routes from {resolver.config_path}: none")
    else:
        lines.append(f"Routes from {resolver.config_path} (exact ids first, then globs in order):")
        header = ("#", "MODELS", "BACKEND", "CONCURRENCY", "RETRIES", "DEADLINE", "TARGET")
        rows = [header] + [_row(r, resolver.backends[r.index]) for r in resolver.routes]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  " + "  ".join([*cells, row[-1]]))
    if resolver.fallback is None:
        lines.append("Fallback: none (builtin_fallback = false): unrouted model ids fail the job")
    else:
        lines.append(f"Fallback: {describe(resolver.fallback)}")
    return lines


def _row(route: Route, backend: ModelBackend) -> tuple[str, ...]:
    concurrency = str(route.max_concurrency) if route.max_concurrency else "-"
    deadline = f"{route.retry.deadline_s:g}s" if route.retry.deadline_s else "-"
    return (
        str(route.index + 1),
        ", ".join(route.patterns),
        route.backend,
        concurrency,
        str(route.retry.max_retries),
        deadline,
        describe(backend),
    )


def lookup(resolver: BackendResolver, model_id: str) -> tuple[str, bool]:
    family = family_for_id(model_id)
    family_text = family.name if family else "unknown (the body decides)"
    try:
        backend = resolver.for_model(model_id)
    except NoRouteError as exc:
        return f"{model_id}: {exc}", False
    route = resolver.route_for(model_id)
    where = f"route {route.index + 1} ({route.backend})" if route else "fallback"
    base = base_model_id(model_id)
    base_text = f", base id {base}" if base != model_id else ""
    return (
        f"{model_id}: {where}: {describe(backend)}; family {family_text}{base_text}",
        True,
    )
