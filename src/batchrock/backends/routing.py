"""Which backend answers which model id.

The routes file (setting ``models_config``, TOML) lists routes; each names model ids (exact or
shell-style globs), a backend type and that backend's settings::

    [[routes]]
    models = ["anthropic.claude-*", "*.anthropic.claude-*"]
    backend = "openai"
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "VLLM_API_KEY"
    served_model = "Qwen/Qwen2.5-7B-Instruct"
    max_concurrency = 64
    max_retries = 4

An ``openai`` route may list ``base_urls`` instead (replicas of one model; see replicas.py).

An exact id beats any glob; among globs the first route in the file wins. A pattern matches the
job's modelId as given and also its base id (ARN and geography prefix removed), so
``anthropic.claude-*`` covers ``us.anthropic.claude-...`` and foundation-model ARNs. Ids that
no route matches go to the built-in model unless ``builtin_fallback`` is off, in which case
:meth:`BackendResolver.for_model` raises :class:`NoRouteError` and the job fails in
Validating with that message.

Backend types are registered in :data:`BACKEND_TYPES` (``builtin``, ``openai``, ``bedrock``,
and with the ``local`` extra ``transformers`` and ``sentence-transformers``)
and through the ``batchrock.backends`` entry-point group, the same way for third parties.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import metadata
from pathlib import Path
from typing import Any

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult, RawAnswerer
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.families import base_model_id, family_for_id
from batchrock.backends.process_pool import (
    POOLED_TYPES,
    PooledBackend,
    WorkerPool,
    worker_count,
)
from batchrock.backends.replicas import HealthPolicy, ReplicaSet
from batchrock.backends.resilience import AttemptSink, ResilientBackend, RetryPolicy, Slots
from batchrock.clock import Clock, SystemClock
from batchrock.settings import Settings


class NoRouteError(Exception):
    """No backend answers this model id (the message is shown to the user as is)."""


class ConfigError(ValueError):
    """The routes file cannot be used (unreadable, unknown keys, bad values)."""


#: Keys every route may carry; the rest belong to the backend type.
COMMON_KEYS = frozenset(
    {
        "model",
        "models",
        "backend",
        "max_concurrency",
        "max_retries",
        "backoff_base_s",
        "backoff_max_s",
        "deadline_s",
        "base_model",
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[routes]]`` entry."""

    index: int
    patterns: tuple[str, ...]
    backend: str
    options: Mapping[str, Any]
    retry: RetryPolicy
    max_concurrency: int | None = None
    #: The foundation model the route's ids stand for (application inference profiles,
    #: custom models): its family parses the records and its id is the answer's model.
    base_model: str | None = None

    def matches(self, model_id: str, base_id: str) -> bool:
        return any(fnmatchcase(model_id, p) or fnmatchcase(base_id, p) for p in self.patterns)

    @property
    def exact(self) -> frozenset[str]:
        return frozenset(p for p in self.patterns if not _is_glob(p))


def match_route(routes: Sequence[Route], model_id: str) -> Route | None:
    """The route that answers ``model_id``: an exact id first, then the first glob."""
    base = base_model_id(model_id)
    for route in routes:
        if model_id in route.exact or base in route.exact:
            return route
    for route in routes:
        if route.matches(model_id, base):
            return route
    return None


#: Builds a backend from a route; raises :class:`ConfigError` on bad options.
BackendFactory = Callable[[Route, Settings], ModelBackend]


def _builtin_factory(route: Route, settings: Settings) -> ModelBackend:
    options = dict(route.options)
    known = {"latency_ms", "error_rate", "throttle_rate", "seed"}
    _reject_unknown(route, options, known)
    try:
        return BuiltinModel(
            latency_ms=float(options.get("latency_ms", settings.builtin_latency_ms)),
            error_rate=float(options.get("error_rate", settings.builtin_error_rate)),
            throttle_rate=float(options.get("throttle_rate", settings.builtin_throttle_rate)),
            seed=int(options.get("seed", settings.builtin_seed)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"route {route.index + 1} (builtin): {exc}") from exc


def _openai_factory(route: Route, settings: Settings) -> ModelBackend:
    from batchrock.backends.openai_compat import from_route

    return from_route(route, settings)


def _bedrock_factory(route: Route, settings: Settings) -> ModelBackend:
    from batchrock.backends.bedrock_runtime import from_route

    return from_route(route, settings)


def _transformers_factory(route: Route, settings: Settings) -> ModelBackend:
    from batchrock.backends.local import transformers_from_route

    return transformers_from_route(route, settings)


def _sentence_transformers_factory(route: Route, settings: Settings) -> ModelBackend:
    from batchrock.backends.local import sentence_transformers_from_route

    return sentence_transformers_from_route(route, settings)


BACKEND_TYPES: dict[str, BackendFactory] = {
    "builtin": _builtin_factory,
    "openai": _openai_factory,
    "bedrock": _bedrock_factory,
    "transformers": _transformers_factory,
    "sentence-transformers": _sentence_transformers_factory,
}


def backend_types() -> dict[str, BackendFactory]:
    """The registered types plus those installed packages add (entry-point group
    ``batchrock.backends``, each pointing at a :data:`BackendFactory`)."""
    types = dict(BACKEND_TYPES)
    for entry in metadata.entry_points(group="batchrock.backends"):
        types.setdefault(entry.name, entry.load())
    return types


#: Retries for the built-in model: its throttles are simulated, so short pauses keep test
#: jobs quick while still going through the same retry path as a real backend.
BUILTIN_RETRY = RetryPolicy(max_retries=4, backoff_base_s=0.05, backoff_max_s=1.0)


@dataclass
class BackendResolver:
    """Hands the engine the backend for a model id. Backends are shared by every job routed
    to them, so a route's ``max_concurrency`` bounds all its jobs together."""

    routes: list[Route]
    backends: dict[int, ModelBackend]
    fallback: ModelBackend | None
    config_path: Path | None = None
    #: The worker processes answering the remote routes' records (process_pool.py), if any.
    pool: WorkerPool | None = None
    _cache: dict[str, ModelBackend] = field(default_factory=dict)

    def route_for(self, model_id: str) -> Route | None:
        return match_route(self.routes, model_id)

    def for_model(self, model_id: str) -> ModelBackend:
        backend = self._cache.get(model_id)
        if backend is not None:
            return backend
        route = self.route_for(model_id)
        if route is not None:
            backend = self.backends[route.index]
        elif self.fallback is not None:
            backend = self.fallback
        else:
            where = (
                f"no route in {self.config_path} matches it"
                if self.config_path
                else "no models config is set (setting models_config)"
            )
            raise NoRouteError(
                f"No model backend is configured for model '{model_id}': {where}, and the "
                "built-in model fallback is turned off (builtin_fallback = false)."
            )
        self._cache[model_id] = backend
        return backend

    async def aclose(self) -> None:
        seen: set[int] = set()
        for backend in [*self.backends.values(), self.fallback]:
            if backend is not None and id(backend) not in seen:
                seen.add(id(backend))
                await backend.aclose()
        if self.pool is not None:
            await self.pool.aclose()


def build_resolver(settings: Settings, clock: Clock | None = None) -> BackendResolver:
    """Read the routes file (if any) and build every backend it names; ``clock`` times the
    probes of replicas taken out (replicas.py; the system clock when not given).

    Raises :class:`ConfigError` when the file is unusable, so ``serve`` and ``worker`` stop at
    start-up with the reason instead of failing jobs one by one.
    """
    clock = clock or SystemClock()
    routes = load_routes(settings.models_config) if settings.models_config else []
    types = backend_types() if routes else {}
    backends: dict[int, ModelBackend] = {}
    workers = worker_count(settings)
    pooled = any(route.backend in POOLED_TYPES for route in routes)
    pool = WorkerPool(settings, workers) if workers and pooled else None
    for route in routes:
        factory = types.get(route.backend)
        if factory is None:
            known = ", ".join(sorted(types))
            raise ConfigError(
                f"route {route.index + 1}: unknown backend type {route.backend!r} (known: {known})"
            )
        backend = wrap(
            _build(route, factory, settings, clock, pool),
            route.retry,
            route.max_concurrency,
            route_label(route),
        )
        # A route with one model server, proxied to the pool: its jobs' blocks go to the
        # workers whole (PooledRoute), the blocks kept here to the same stack over the leaf
        # built here.
        local: ModelBackend | None = None
        slots: Slots | None = None
        proxy: PooledBackend | None = None
        if (
            pool is not None
            and isinstance(backend, ResilientBackend)
            and isinstance(backend.inner, PooledBackend)
        ):
            proxy = backend.inner
            local, slots = backend.over(proxy.local), backend.slots
        if route.base_model is not None:
            if route.backend == "bedrock":
                raise ConfigError(
                    f"route {route.index + 1}: 'base_model' does not apply to backend "
                    "'bedrock' (Bedrock knows which model the id names)"
                )
            backend = AnsweredAs(backend, route.base_model)
            if local is not None:
                local = AnsweredAs(local, route.base_model)
        if pool is not None and proxy is not None and local is not None:
            backend = pool.route(proxy, backend, local, slots)
        backends[route.index] = backend
    fallback = builtin_fallback(settings) if settings.builtin_fallback else None
    return BackendResolver(routes, backends, fallback, settings.models_config, pool)


#: Route keys of a route with several model servers (replicas.py); ``openai`` routes only.
REPLICA_KEYS = frozenset({"base_urls", "unhealthy_after", "probe_after_s", "probe_max_s"})
#: The backend types whose routes may list ``base_urls`` (each replica gets a ``base_url``).
REPLICA_TYPES = frozenset({"openai"})


def _build(
    route: Route,
    factory: BackendFactory,
    settings: Settings,
    clock: Clock,
    pool: WorkerPool | None = None,
) -> ModelBackend:
    """The route's backend: one, or a :class:`ReplicaSet` of one per ``base_urls`` entry;
    each answered by ``pool``'s worker processes when its type is one they serve."""

    def leaf(each: Route) -> ModelBackend:
        backend = factory(each, settings)
        if pool is None or each.backend not in POOLED_TYPES:
            return backend
        return pool.backend(each, backend)

    given = REPLICA_KEYS & set(route.options)
    if not given:
        return leaf(route)
    where = f"route {route.index + 1} ({route.backend})"
    if route.backend not in REPLICA_TYPES:
        raise ConfigError(f"{where}: {', '.join(sorted(given))}: only openai routes take these")
    urls = route.options.get("base_urls")
    if urls is None:
        raise ConfigError(f"{where}: {', '.join(sorted(given))} need(s) 'base_urls'")
    if "base_url" in route.options:
        raise ConfigError(f"{where}: give either 'base_url' or 'base_urls', not both")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{where}: 'base_urls' must be a non-empty list of URLs")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{where}: 'base_urls' lists a URL twice")
    raw, defaults = dict(route.options), HealthPolicy()
    try:
        policy = HealthPolicy(
            unhealthy_after=_number(raw, "unhealthy_after", defaults.unhealthy_after, int, 1),
            probe_after_s=_number(raw, "probe_after_s", defaults.probe_after_s, float, 0),
            probe_max_s=_number(raw, "probe_max_s", defaults.probe_max_s, float, 0),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    rest = {k: v for k, v in route.options.items() if k not in REPLICA_KEYS}
    replicas = [
        (url, leaf(dataclasses.replace(route, options={**rest, "base_url": url}))) for url in urls
    ]
    if len(replicas) == 1:
        return replicas[0][1]
    return ReplicaSet(replicas, clock, policy, route_label(route))


def worker_stack(route: Route, settings: Settings, attempts: AttemptSink) -> ModelBackend:
    """What a worker process answers a :class:`~batchrock.backends.process_pool.PooledRoute`'s
    blocks with: the route's leaf under its retries and deadline, as the engine builds it,
    but without ``max_concurrency`` (the engine holds that bound for every process), without
    the pool (the worker is the pool), its attempts reported to ``attempts``."""
    factory = backend_types()[route.backend]
    backend = wrap(factory(route, settings), route.retry, None, route_label(route), attempts)
    if route.base_model is not None:
        backend = AnsweredAs(backend, route.base_model)
    return backend


def builtin_fallback(settings: Settings) -> ModelBackend:
    try:
        model = BuiltinModel(
            latency_ms=settings.builtin_latency_ms,
            error_rate=settings.builtin_error_rate,
            throttle_rate=settings.builtin_throttle_rate,
            seed=settings.builtin_seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return wrap(model, BUILTIN_RETRY, None, FALLBACK_LABEL)


class AnsweredAs:
    """A route's ``base_model``: its records are answered as that model, in its family and
    under its id (the answer's ``model``), whatever id the job gave (an application
    inference profile ARN says nothing of the model it wraps). Offers what the wrapped
    backend offers (the engine's immediate path included)."""

    def __init__(self, backend: ModelBackend, base_model: str) -> None:
        self._backend = backend
        self.base_model = base_model

    def describe(self) -> str:
        inner = getattr(self._backend, "inner", self._backend)
        text = getattr(inner, "describe", None)
        what = str(text()) if callable(text) else type(inner).__name__
        return f"{what}, answered as {self.base_model}"

    @property
    def immediate(self) -> bool:
        return bool(getattr(self._backend, "immediate", False))

    def invoke_now(self, request: ModelRequest) -> ModelResult:
        result: ModelResult = getattr(self._backend, "invoke_now")(  # noqa: B009
            dataclasses.replace(request, model_id=self.base_model)
        )
        return result

    def raw_answerer(self, model_id: str, invocation_type: str) -> RawAnswerer | None:
        make = getattr(self._backend, "raw_answerer", None)
        answerer: RawAnswerer | None = make(self.base_model, invocation_type) if make else None
        return answerer

    async def invoke(self, request: ModelRequest) -> ModelResult:
        return await self._backend.invoke(dataclasses.replace(request, model_id=self.base_model))

    async def aclose(self) -> None:
        await self._backend.aclose()


#: The metrics' route label of the built-in model answering models no route names.
FALLBACK_LABEL = "builtin-fallback"


def route_label(route: Route) -> str:
    """A route as the metrics label it: its number in the file (as errors name it) and its
    backend type, e.g. ``2:openai``. Bounded by the file's length."""
    return f"{route.index + 1}:{route.backend}"


def wrap(
    backend: ModelBackend,
    retry: RetryPolicy,
    max_concurrency: int | None,
    route: str = "unnamed",
    metrics: AttemptSink | None = None,
) -> ModelBackend:
    """Apply retries, the deadline and the concurrency bound, skipping the wrapper only for a
    built-in model that can neither be slow nor throttle (the zero-latency fast path)."""
    if (
        isinstance(backend, BuiltinModel)
        and not backend.throttle_rate
        and not backend.latency_ms
        and max_concurrency is None
    ):
        return backend
    return ResilientBackend(
        backend, retry, max_concurrency=max_concurrency, route=route, metrics=metrics
    )


def load_routes(path: Path) -> list[Route]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read models config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"models config {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"routes"}
    if unknown:
        raise ConfigError(
            f"models config {path}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "expected [[routes]] tables"
        )
    raw_routes = data.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(f"models config {path}: 'routes' must be an array of tables")
    return [parse_route(index, raw) for index, raw in enumerate(raw_routes)]


def parse_route(index: int, raw: Any) -> Route:
    where = f"route {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    if ("model" in raw) == ("models" in raw):
        raise ConfigError(f"{where}: give exactly one of 'model' (a string) or 'models' (a list)")
    patterns = raw.get("models", [raw.get("model")])
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise ConfigError(f"{where}: model ids must be non-empty strings")
    backend = raw.get("backend")
    if not isinstance(backend, str):
        raise ConfigError(f"{where}: 'backend' is required ({', '.join(BACKEND_TYPES)})")
    defaults = RetryPolicy()
    try:
        retry = RetryPolicy(
            max_retries=_number(raw, "max_retries", defaults.max_retries, int, 0),
            backoff_base_s=_number(raw, "backoff_base_s", defaults.backoff_base_s, float, 0),
            backoff_max_s=_number(raw, "backoff_max_s", defaults.backoff_max_s, float, 0),
            deadline_s=_number(raw, "deadline_s", defaults.deadline_s or 600.0, float, 0.001),
        )
        concurrency = raw.get("max_concurrency")
        if concurrency is not None:
            concurrency = _number(raw, "max_concurrency", 1, int, 1)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    base_model = raw.get("base_model")
    if base_model is not None and (
        not isinstance(base_model, str) or family_for_id(base_model) is None
    ):
        raise ConfigError(
            f"{where}: 'base_model' must be a model id whose request format batchrock knows "
            f"(a catalogued id such as openai.gpt-oss-20b-1:0), got {base_model!r}"
        )
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    return Route(index, tuple(patterns), backend, options, retry, concurrency, base_model)


def _number(raw: dict[str, Any], key: str, default: Any, kind: type, minimum: float) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{key}' must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"'{key}' must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"'{key}' must be at least {minimum:g}, got {value!r}")
    return kind(value)


def _reject_unknown(route: Route, options: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise ConfigError(
            f"route {route.index + 1} ({route.backend}): unknown setting(s) "
            f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(known | COMMON_KEYS))}"
        )


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def reject_unknown(route: Route, known: set[str]) -> None:
    """For backend modules: fail on settings their type does not know."""
    _reject_unknown(route, route.options, known)
