"""This process's Prometheus metrics (``GET /metrics`` on ``batchrock serve``; docs/metrics.md).

The engine, the model backends and the API report through :class:`Metrics`' typed methods;
only this module knows prometheus-client. Counters and histograms are this process's own (a
``batchrock worker`` counts its own work, which ``serve``'s ``/metrics`` does not show); the
gauges about jobs come from the store, so every process that serves them sees every job.

Labels stay bounded: status, operation, HTTP status code, route and model id, never a job id
or an account. Model ids come from callers, so at most :data:`MAX_MODEL_LABELS` distinct ones
are labels; any further ones count as ``model_id="other"``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from batchrock.jobs import Counters, JobStatus
from batchrock.store.base import JobStore, ModelWork, StoreSnapshot

_TOKENS_IN = "NumberOfInputTokensProcessedPerMinute"
_TOKENS_IN_HELP = (
    "Bedrock's AWS/Bedrock/Batch metric: input tokens this process's engine processed in the "
    "last 60 seconds, by model."
)
_TOKENS_OUT = "NumberOfOutputTokensProcessedPerMinute"
_TOKENS_OUT_HELP = (
    "Bedrock's AWS/Bedrock/Batch metric: output tokens this process's engine produced in the "
    "last 60 seconds, by model."
)

#: prometheus-client's switch to its multiprocess mode (counts in files of a shared folder).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Distinct model ids that may appear as label values in one process.
MAX_MODEL_LABELS = 100
OTHER_MODEL = "other"
#: How long a ``NumberOf...ProcessedPerMinute`` gauge looks back.
PER_MINUTE_WINDOW_S = 60.0
#: How old the store's counts may be when a scrape answers (scrapes are 15-60 s apart; this
#: only keeps a burst of them from counting the store once each).
SNAPSHOT_TTL_S = 1.0

#: The text format every Prometheus version reads (the names here need none of 1.0.0's escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Request latencies: a millisecond to a minute (the API answers in milliseconds; a model
# request may take seconds).
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MODEL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _PerMinute:
    """Tokens processed in the last minute, per model: one bucket per second."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        #: second -> model id -> [input tokens, output tokens]; seconds in increasing order.
        self._buckets: dict[int, dict[str, list[int]]] = {}

    def add(self, model_id: str, input_tokens: int, output_tokens: int) -> None:
        if not input_tokens and not output_tokens:
            return
        self._prune()
        bucket = self._buckets.setdefault(int(self._monotonic()), {})
        tokens = bucket.setdefault(model_id, [0, 0])
        tokens[0] += input_tokens
        tokens[1] += output_tokens

    def totals(self) -> dict[str, tuple[int, int]]:
        self._prune()
        out: dict[str, tuple[int, int]] = {}
        for bucket in self._buckets.values():
            for model_id, (tokens_in, tokens_out) in bucket.items():
                was = out.get(model_id, (0, 0))
                out[model_id] = (was[0] + tokens_in, was[1] + tokens_out)
        return out

    def _prune(self) -> None:
        # A bucket counts while any of its second lies within the window.
        oldest = self._monotonic() - PER_MINUTE_WINDOW_S
        for second in [s for s in self._buckets if s + 1 <= oldest]:
            del self._buckets[second]


class _Observer(Protocol):
    def observe(self, labels: tuple[str, ...], value: float) -> None: ...


class _FileHistogram:
    """prometheus-client's ``Histogram`` behind :class:`_HotHistogram`'s ``observe``, for its
    multiprocess mode (counts in the shared folder's files)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._children: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._histogram.labels(*labels)
        child.observe(value)


class _HotHistogram(Collector):
    """A labelled histogram observed once per model or API request: plain counts in lists, no
    lock and no labelled child per call (prometheus-client's ``Histogram.observe`` costs a few
    microseconds, a noticeable part of a record's CPU against a fast model server). The
    event loop is its only writer; a scrape copies each series' counts in one step. It is
    exposed exactly as prometheus-client exposes a ``Histogram`` (a test compares)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        go_string: Callable[[float], str] = floatToGoString  # untyped in prometheus-client
        self._les = [*(go_string(b) for b in self._bounds), "+Inf"]
        #: label values -> [counts per bucket (the last one past every bound), sum, created]
        self._series: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self.series(labels)
        series[0][bisect.bisect_left(self._bounds, value)] += 1
        series[1] += value

    def series(self, labels: tuple[str, ...]) -> list[Any]:
        """The counts of the series ``labels`` (made empty when new), for a caller that
        keeps it at hand: ``[counts per bucket, sum, created]``, bucket ``i`` the values
        up to ``bounds[i]`` (and the last one past every bound)."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [[0] * (len(self._bounds) + 1), 0.0, time.time()]
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self._name, self._documentation, labels=list(self._labelnames)
        )
        for labels, (counts, total, created) in list(self._series.items()):
            cumulative = itertools.accumulate(list(counts))
            buckets = [(le, float(n)) for le, n in zip(self._les, cumulative, strict=True)]
            family.add_metric(list(labels), buckets, total)
            named = dict(zip(self._labelnames, labels, strict=True))
            family.samples.append(Sample(self._name + "_created", named, created))
        yield family


class _HotCounter(Collector):
    """A labelled counter incremented once per API request: each series a plain list
    ``[value, created]``, for the same reason as :class:`_HotHistogram` (prometheus-client's
    ``inc`` takes a lock, and its labelled child costs a lookup). Exposed exactly as
    prometheus-client exposes a ``Counter`` (a test compares)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], list[float]] = {}

    def cell(self, labels: tuple[str, ...]) -> list[float]:
        """The series ``labels`` (made at 0 when new): ``[value, created]``."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0, time.time()]
        return series

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=list(self._labelnames))
        for labels, (value, created) in list(self._series.items()):
            family.add_metric(list(labels), value, created=created)
        yield family


def _histogram(
    registry: CollectorRegistry,
    multiprocess: bool,
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    buckets: Sequence[float],
) -> _Observer:
    """A labelled histogram in ``registry``, counted in plain lists (:class:`_HotHistogram`),
    or with several API processes in the shared folder's files as prometheus-client counts:
    a scrape may reach a process whose memory holds none of the counts (a few microseconds
    more an observation)."""
    if multiprocess:
        return _FileHistogram(
            Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)
        )
    hot = _HotHistogram(name, documentation, labelnames, buckets=buckets)
    registry.register(hot)
    return hot


class Metrics:
    """One process's metrics. ``render()`` is the exposition text of everything registered."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models: set[str] = set()
        self._per_minute = _PerMinute(monotonic)
        self._monotonic = monotonic
        self._snapshot = StoreSnapshot()
        self._snapshot_at = -float("inf")
        self._refreshing = asyncio.Lock()
        #: With several API processes, the engine's process publishes its tokens per minute
        #: in these gauges (publish_shared), for a scrape that another process answers.
        self._shared_per_minute: tuple[Gauge, Gauge] | None = None
        self._published: set[str] = set()
        shared = os.environ.get(MULTIPROC_ENV)
        multiprocess = bool(shared) and getattr(values.ValueClass, "_multiprocess", False)
        r = self.registry
        if multiprocess:
            self._shared_per_minute = (
                Gauge(_TOKENS_IN, _TOKENS_IN_HELP, ["model_id"], registry=r,
                      multiprocess_mode="max"),
                Gauge(_TOKENS_OUT, _TOKENS_OUT_HELP, ["model_id"], registry=r,
                      multiprocess_mode="max"),
            )  # fmt: skip
        api_requests = (
            "batchrock_api_requests",
            "API requests answered, by operation and HTTP status code.",
            ["operation", "code"],
        )
        api_latency = (
            "batchrock_api_request_duration_seconds",
            "Time from a request's arrival to its answer, by operation.",
            ["operation"],
        )
        #: Counted once per API request: in one process, plain counts (:class:`_HotCounter`,
        #: :class:`_HotHistogram`) whose series api_request keeps at hand per (operation,
        #: code); with several API processes, prometheus-client's in the shared files.
        self._api_hot: dict[tuple[str, int], tuple[list[float], list[Any]]] | None = None
        if multiprocess:
            self._api_requests = Counter(*api_requests, registry=r)
            self._api_latency = _histogram(r, True, *api_latency, _API_BUCKETS)
        else:
            self._api_hot = {}
            self._api_counts = _HotCounter(*api_requests)
            r.register(self._api_counts)
            self._api_times = _HotHistogram(*api_latency, buckets=_API_BUCKETS)
            r.register(self._api_times)
            self._api_bounds = self._api_times._bounds
        records = ["model_id"]
        self._processed = Counter(
            "batchrock_records_processed", "Records this process's engine processed.", records,
            registry=r,
        )  # fmt: skip
        self._succeeded = Counter(
            "batchrock_records_succeeded", "Records answered by the model.", records, registry=r
        )
        self._failed = Counter(
            "batchrock_records_failed", "Records that ended with an error.", records, registry=r
        )
        self._input_tokens = Counter(
            "batchrock_input_tokens", "Input tokens of processed records.", records, registry=r
        )
        self._output_tokens = Counter(
            "batchrock_output_tokens", "Output tokens of processed records.", records, registry=r
        )
        self._model_latency = _histogram(
            r,
            multiprocess,
            "batchrock_model_request_duration_seconds",
            "One model request (one attempt) by model route and outcome.",
            ["route", "outcome"],
            _MODEL_BUCKETS,
        )
        self._throttled = Counter(
            "batchrock_model_requests_throttled",
            "Model requests answered 429 (throttled), retried ones included, by route.",
            ["route"],
            registry=r,
        )
        self._api_counters: dict[tuple[str, int], Counter] = {}
        # Only the engine's process sets it; with several API processes (a shared folder, see
        # share_between_processes) the latest value counts, not one series per process.
        self._replica_healthy = Gauge(
            "batchrock_model_replica_healthy",
            "1 while a model server of a route with several (base_urls) takes requests, 0 "
            "while it is taken out; by route and replica (its place in base_urls, from 1).",
            ["route", "replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._takeovers = Counter(
            "batchrock_lease_takeovers",
            "Running jobs this process's engine took over after their lease ran out.",
            registry=r,
        )
        r.register(_SnapshotCollector(self))
        #: What a scrape shows: this registry, or with several API processes, the counts of
        #: them all (each writes its own file in the shared folder) plus this one's gauges.
        self._exposed = r
        if multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=shared)  # type: ignore[no-untyped-call]
            self._exposed.register(_SnapshotCollector(self))

    # --- what the API, the engine and the backends report --------------------------------

    def api_request(self, operation: str, code: int, seconds: float) -> None:
        # Once per request, so one dict lookup finds both series (a few tenths of a
        # microsecond, against prometheus-client's lock and labelled children).
        hot = self._api_hot
        if hot is None:
            self._api_request_in_files(operation, code, seconds)
            return
        series = hot.get((operation, code))
        if series is None:
            series = hot[(operation, code)] = (
                self._api_counts.cell((operation, str(code))),
                self._api_times.series((operation,)),
            )
        series[0][0] += 1
        times = series[1]
        times[0][bisect.bisect_left(self._api_bounds, seconds)] += 1
        times[1] += seconds

    def api_requests_answered(self) -> dict[tuple[str, int], float]:
        """How many API requests this process answered, by (operation, HTTP status)."""
        if self._api_hot is None:
            return {key: counter._value.get() for key, counter in self._api_counters.items()}
        return {key: series[0][0] for key, series in self._api_hot.items()}

    def _api_request_in_files(self, operation: str, code: int, seconds: float) -> None:
        # The labelled counter is looked up once per (operation, code): prometheus-client's
        # labels() costs microseconds a call.
        counter = self._api_counters.get((operation, code))
        if counter is None:
            counter = self._api_counters[(operation, code)] = self._api_requests.labels(
                operation, str(code)
            )
        counter.inc()
        self._api_latency.observe((operation,), seconds)

    def model_request(self, route: str, outcome: str, seconds: float) -> None:
        """One attempt at a model request; ``outcome`` is ``ok``, ``throttled`` or ``error``."""
        self._model_latency.observe((route, outcome), seconds)
        if outcome == "throttled":
            self._throttled.labels(route).inc()

    def replica_health(self, route: str, replica: int, healthy: bool) -> None:
        """A replica of ``route`` (1-based, as base_urls lists it) was put in or taken out."""
        self._replica_healthy.labels(route, str(replica)).set(1 if healthy else 0)

    def progress(self, model_id: str, before: Counters, after: Counters) -> None:
        """A job's saved counters moved from ``before`` to ``after``. Counters that went back
        (a file restarted after a lost spool) add nothing; redone work counts again."""
        model = self.model_label(model_id)
        done = [
            (self._processed, after.processed - before.processed),
            (self._succeeded, after.success - before.success),
            (self._failed, after.error - before.error),
            (self._input_tokens, after.input_tokens - before.input_tokens),
            (self._output_tokens, after.output_tokens - before.output_tokens),
        ]
        for counter, delta in done:
            if delta > 0:
                counter.labels(model).inc(delta)
        self._per_minute.add(
            model,
            max(0, after.input_tokens - before.input_tokens),
            max(0, after.output_tokens - before.output_tokens),
        )
        self.publish_shared()  # at once: a scrape shows the counters and the minute together

    def publish_shared(self) -> None:
        """With several API processes: write this process's tokens of the last minute where
        every process's scrape reads them (on every progress, and every half second from the
        engine's process, so the window moves on without new progress too). Otherwise
        nothing."""
        if self._shared_per_minute is None:
            return
        tokens_in, tokens_out = self._shared_per_minute
        totals = self._per_minute.totals()
        for model_id in self._published - totals.keys():
            tokens_in.labels(model_id).set(0)
            tokens_out.labels(model_id).set(0)
        for model_id, (n_in, n_out) in totals.items():
            tokens_in.labels(model_id).set(n_in)
            tokens_out.labels(model_id).set(n_out)
        self._published |= totals.keys()

    def lease_takeover(self) -> None:
        self._takeovers.inc()

    # --- the store's gauges ---------------------------------------------------------------

    def model_label(self, model_id: str) -> str:
        if model_id in self._models:
            return model_id
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODEL
        self._models.add(model_id)
        return model_id

    def render(self) -> bytes:
        return generate_latest(self._exposed)

    async def scrape(self, store: JobStore) -> bytes:
        """The exposition text, with the store's gauges at most :data:`SNAPSHOT_TTL_S` old.
        The store counts off the event loop, and scrapes that arrive meanwhile share one
        count instead of starting their own."""
        async with self._refreshing:
            if self._monotonic() - self._snapshot_at >= SNAPSHOT_TTL_S:
                self._snapshot = await store.snapshot()
                self._snapshot_at = self._monotonic()
        return self.render()

    def _store_metrics(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        jobs = GaugeMetricFamily(
            "batchrock_jobs", "Jobs in the store, by status (every account).", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], snapshot.jobs_by_status.get(status, 0))
        yield jobs
        scheduled = GaugeMetricFamily(
            "batchrock_jobs_scheduled", "Jobs waiting in Scheduled, by model.", labels=["model_id"]
        )
        pending = GaugeMetricFamily(
            "NumberOfRecordsPendingProcessing",
            "Bedrock's AWS/Bedrock/Batch metric: records of Scheduled and running jobs not yet "
            "processed, by model.",
            labels=["model_id"],
        )
        tokens = GaugeMetricFamily(
            "NumberOfTokensPendingProcessing",
            "Bedrock's AWS/Bedrock/Batch metric: input tokens of those records (an estimate "
            "from each running job's tokens per record so far), by model.",
            labels=["model_id"],
        )
        for model_id, work in self._bounded(snapshot.by_model):
            scheduled.add_metric([model_id], work.scheduled_jobs)
            pending.add_metric([model_id], work.records_pending)
            tokens.add_metric([model_id], work.tokens_pending)
        yield from (scheduled, pending, tokens)
        if self._shared_per_minute is not None:
            return  # the shared files hold them (publish_shared)
        tokens_in = GaugeMetricFamily(_TOKENS_IN, _TOKENS_IN_HELP, labels=["model_id"])
        tokens_out = GaugeMetricFamily(_TOKENS_OUT, _TOKENS_OUT_HELP, labels=["model_id"])
        for model_id, (n_in, n_out) in sorted(self._per_minute.totals().items()):
            tokens_in.add_metric([model_id], n_in)
            tokens_out.add_metric([model_id], n_out)
        yield from (tokens_in, tokens_out)

    def _bounded(self, by_model: dict[str, ModelWork]) -> Iterable[tuple[str, ModelWork]]:
        folded: dict[str, ModelWork] = {}
        for model_id, work in sorted(by_model.items()):
            label = self.model_label(model_id)
            was = folded.get(label, ModelWork())
            folded[label] = ModelWork(
                was.scheduled_jobs + work.scheduled_jobs,
                was.records_pending + work.records_pending,
                was.tokens_pending + work.tokens_pending,
            )
        return folded.items()


class _SnapshotCollector(Collector):
    """The gauges computed at scrape time, from the last store snapshot and the minute window."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._store_metrics())


_process_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's one :class:`Metrics`: Prometheus counters belong to a process, and the
    backends (built before any engine) and the API report into the same one."""
    global _process_metrics
    if _process_metrics is None:
        _process_metrics = Metrics()
    return _process_metrics


def share_between_processes(folder: Path) -> None:
    """Make every :class:`Metrics` built from now on, in this process and those it forks,
    count in files of ``folder`` (new, empty), so that a scrape answered by any of
    ``serve``'s API processes shows the sum of them all (prometheus-client's multiprocess
    mode). Call before forking and before the first Metrics exists."""
    global _process_metrics
    folder.mkdir(mode=0o700)
    os.environ[MULTIPROC_ENV] = str(folder)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _process_metrics = None  # one built before counted in memory only
