"""``batchrock models``: the model catalogue and the routes, and what a model id gets.

batchrock models                      # the routes, the fallback and the catalogue
batchrock models MODEL_ID [...]       # also: whether Create accepts each id in the Region,
                                      # which backend answers it, and its family
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import TextIO

from batchrock.backends.base import ModelBackend
from batchrock.backends.families import base_model_id, family_for_id
from batchrock.backends.process_pool import POOLED_TYPES
from batchrock.backends.routing import (
    BackendResolver,
    ConfigError,
    NoRouteError,
    Route,
    build_resolver,
)
from batchrock.catalogue import (
    Catalogue,
    CatalogueModel,
    Quotas,
    load_catalogue,
    parse_model_id,
)
from batchrock.settings import Settings


def main(argv: list[str], settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="batchrock models",
        description="Show the model catalogue, the routes, and what each model id gets.",
    )
    parser.add_argument("model_ids", nargs="*", metavar="MODEL_ID", help="model ids to look up")
    parser.add_argument(
        "--region",
        default=settings.default_region,
        help="the caller's Region for the catalogue check (default: setting default_region)",
    )
    args = parser.parse_args(argv)
    try:
        resolver = build_resolver(settings)
    except ConfigError as exc:
        print(f"batchrock models: {exc}", file=sys.stderr)
        return 2
    catalogue = load_catalogue()
    for line in routes_table(resolver):
        print(line, file=out)
    print("", file=out)
    for line in catalogue_table(catalogue, settings):
        print(line, file=out)
    if args.model_ids:
        print("", file=out)
    status = 0
    for model_id in args.model_ids:
        line, ok = lookup(resolver, model_id)
        check, accepted = create_check(catalogue, resolver, settings, model_id, args.region)
        print(f"{line}\n  {check}", file=out)
        status = status if ok and accepted else 1
    return status


def family_name(catalogue: Catalogue, model_id: str) -> str:
    """The family of an id: the catalogue's word for catalogued models, else the id's prefix."""
    family = family_for_id(model_id)
    answered = family.name if family else "unknown (the body decides)"
    model = catalogue.get(model_id)
    if model is None or model.family == answered:
        return answered
    # The catalogue names the model's own shape; say so when the engine does not have it yet.
    return f"{model.family} (not implemented yet: answered as {answered})"


def catalogue_table(catalogue: Catalogue, settings: Settings) -> list[str]:
    check = (
        "not checked (allow_any_model = true): Create accepts any model id"
        if settings.allow_any_model
        else "Create refuses ids that are neither listed here for the caller's Region nor routed"
    )
    lines = [
        f"Catalogue of models Bedrock offers for batch inference ({len(catalogue.models)} "
        f"models, facts of {catalogue.date}; {check}):"
    ]
    header = ("MODEL ID", "FAMILY", "REGIONS", "PROFILES", "INVOCATION", "QUOTAS", "INPUT")
    rows = [header] + [_catalogue_row(m, catalogue.defaults) for m in catalogue.models.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    lines.append("  (?: not confirmed by a primary source; see the unconfirmed notes in the data)")
    d = catalogue.defaults
    lines.append(
        f"  (QUOTAS: where the model differs from Bedrock's defaults: {d.records_per_job} "
        f"records per job, {d.records_per_input_file} per file, at least "
        f"{d.min_records_per_job}, {d.input_file_size_gb} GB per file, {d.job_size_gb} GB per "
        f"job; a changed quota_* setting wins, docs/models.md)"
    )
    return lines


def _quota_cell(quotas: Quotas, defaults: Quotas) -> str:
    """The model's batch quotas that differ from the defaults (``-``: none)."""
    mine, usual = asdict(quotas), asdict(defaults)
    return ",".join(f"{k}={v}" for k, v in mine.items() if v != usual[k]) or "-"


def _catalogue_row(model: CatalogueModel, defaults: Quotas) -> tuple[str, ...]:
    if model.regions is None:
        regions = "any?"
    elif not model.regions:
        regions = "profile only"
    else:
        regions = ",".join(model.regions)
    profiles = ",".join(f"{p}." for p in model.profiles) or "-"
    if profiles != "-" and any("profile" in note for note in model.unconfirmed):
        profiles += "?"
    return (
        model.id,
        model.family,
        regions,
        profiles,
        ",".join(model.invocation_types),
        _quota_cell(model.quotas, defaults),
        ",".join(model.input_modalities),
    )


def create_check(
    catalogue: Catalogue,
    resolver: BackendResolver,
    settings: Settings,
    model_id: str,
    region: str,
) -> tuple[str, bool]:
    """What CreateModelInvocationJob does with ``model_id`` in ``region`` (the account is
    left out: only ARNs name one, and there the caller's own is assumed)."""
    model = catalogue.get(model_id)
    ref = parse_model_id(model_id)
    account = ref.arn_account if ref is not None and ref.arn_account else "000000000000"
    if settings.allow_any_model:
        return "Create: accepted (allow_any_model = true)", True
    if resolver.route_for(model_id) is not None:
        return "Create: accepted (a route matches it)", True
    if catalogue.supports(model_id, region, account):
        name = model.name if model else "an application profile or custom model"
        return f"Create: accepted in {region} ({name}, in the catalogue)", True
    why = (
        f"{model.name} is not offered for batch inference this way in {region}"
        if model
        else "not in the catalogue and no route matches it"
    )
    return (
        f"Create in {region}: refused, 'Batch inference is not supported for the requested "
        f"model' ({why}; add a route or set allow_any_model)",
        False,
    )


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
    if resolver.pool is not None and any(r.backend in POOLED_TYPES for r in resolver.routes):
        lines.append(
            f"Records of {' and '.join(sorted(POOLED_TYPES))} routes are answered in "
            f"{resolver.pool.size} worker processes of the engine (setting engine_processes)"
        )
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
    family_text = family_name(load_catalogue(), model_id)
    try:
        backend = resolver.for_model(model_id)
    except NoRouteError as exc:
        return f"{model_id}: {exc}", False
    route = resolver.route_for(model_id)
    where = f"route {route.index + 1} ({route.backend})" if route else "fallback"
    if route is not None and route.base_model is not None:
        family_text = f"{family_name(load_catalogue(), route.base_model)} (base_model)"
    base = base_model_id(model_id)
    base_text = f", base id {base}" if base != model_id else ""
    return (
        f"{model_id}: {where}: {describe(backend)}; family {family_text}{base_text}",
        True,
    )
