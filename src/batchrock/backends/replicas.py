"""One route, several model servers: replicas of one model behind a single backend.

A route that lists ``base_urls`` gets one backend per URL and a :class:`ReplicaSet` in front
of them. The set is one backend to everything above it, so the retry layer, the route's
``max_concurrency`` and each job's record concurrency count the records in flight on all
replicas together: a job's limit is the total, not a per-replica figure. A retry goes through
the set again and may land on another replica.

Each request goes to the healthy replica with the fewest requests in flight (ties in turn).
A replica is taken out when its server cannot be reached (connection refused, connect
timeout) or after ``unhealthy_after`` failures in a row that point at the server (5xx, read
timeouts, dropped connections, malformed answers). Answers that show the server alive end a
streak: successes, and also 429 (throttling is not ill health; the retry layer handles it as
for one server) and other 4xx. A replica taken out gets no traffic until ``probe_after_s``
has passed on the :class:`~batchrock.clock.Clock`; then one request at a time probes it
(half-open). A good answer puts it back; a failed probe takes it out again for twice as long,
up to ``probe_max_s``. When every replica is out, requests go to the one due back soonest
rather than failing without trying (the retry layer's pauses still space them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult
from batchrock.clock import Clock
from batchrock.metrics import process_metrics

log = logging.getLogger("batchrock.backends.replicas")

#: ``ModelResult.info`` key a backend sets when it could not reach its server at all
#: (connection refused, connect timeout): the replica is taken out at once.
UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    #: Failures in a row (5xx, timeouts, dropped connections) that take a replica out.
    unhealthy_after: int = 3
    #: How long a replica stays out before it is probed; doubles on each failed probe.
    probe_after_s: float = 5.0
    probe_max_s: float = 60.0


class Replica:
    """One model server of a route and what the set knows about its health."""

    __slots__ = (
        "backend",
        "backoff_s",
        "failures",
        "in_flight",
        "name",
        "out_until",
        "probing",
        "served",
    )

    def __init__(self, name: str, backend: ModelBackend) -> None:
        self.name = name
        self.backend = backend
        self.in_flight = 0
        #: Failures in a row that point at the server.
        self.failures = 0
        #: ``None`` while healthy; else the Clock's monotonic time it may be probed from.
        self.out_until: float | None = None
        self.backoff_s = 0.0
        self.probing = False
        #: Requests sent to it (for ``describe`` and tests).
        self.served = 0

    @property
    def healthy(self) -> bool:
        return self.out_until is None


class ReplicaSet:
    """Spreads records over ``replicas`` (least busy healthy one first) and takes out the
    ones that fail; see the module docs."""

    def __init__(
        self,
        replicas: Sequence[tuple[str, ModelBackend]],
        clock: Clock,
        policy: HealthPolicy | None = None,
        route: str = "unnamed",
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one replica")
        self.replicas = [Replica(name, backend) for name, backend in replicas]
        self.policy = policy or HealthPolicy()
        self.route = route
        self._clock = clock
        self._turn = 0
        self._metrics = process_metrics()
        for number in range(1, len(self.replicas) + 1):
            self._metrics.replica_health(route, number, True)

    def describe(self) -> str:
        inner = []
        for replica in self.replicas:
            text = getattr(replica.backend, "describe", None)
            inner.append(text() if callable(text) else replica.name)
        return f"{len(self.replicas)} replicas: " + "; ".join(inner)

    async def invoke(self, request: ModelRequest) -> ModelResult:
        replica, probe = self._pick()
        # Only a request sent while the replica was out (a probe, or every replica out) can
        # put it back or keep it out longer; the stragglers of one taken out cannot.
        was_out = not replica.healthy
        replica.in_flight += 1
        replica.served += 1
        if probe:
            replica.probing = True
        alive, unreachable = False, False
        try:
            result = await replica.backend.invoke(request)
            alive, unreachable = _judge(result)
            return result
        finally:
            # A cancelled request (its record's deadline) says nothing about the server.
            replica.in_flight -= 1
            if probe:
                replica.probing = False
            if not _cancelled():
                self._record(replica, alive, unreachable, was_out)

    # --- choosing ---------------------------------------------------------------------

    def _pick(self) -> tuple[Replica, bool]:
        """The replica for the next request, and whether the request is its probe."""
        now = self._clock.monotonic()
        turn = self._in_turn()
        for replica in turn:
            if replica.out_until is not None and not replica.probing and replica.out_until <= now:
                return replica, True
        healthy = [r for r in turn if r.healthy]
        if healthy:
            return min(healthy, key=lambda r: r.in_flight), False
        # Every replica is out: try the one due back first rather than fail untried.
        return min(turn, key=lambda r: (r.out_until or now, r.in_flight)), False

    def _in_turn(self) -> list[Replica]:
        """The replicas starting one further on each call, so ties go round in turn."""
        self._turn = (self._turn + 1) % len(self.replicas)
        return self.replicas[self._turn :] + self.replicas[: self._turn]

    # --- judging ----------------------------------------------------------------------

    def _record(self, replica: Replica, alive: bool, unreachable: bool, was_out: bool) -> None:
        index = self.replicas.index(replica) + 1
        if alive:
            replica.failures = 0
            if was_out and not replica.healthy:
                replica.out_until = None
                replica.backoff_s = 0.0
                log.info("route %s: replica %s is back", self.route, replica.name)
                self._metrics.replica_health(self.route, index, True)
            return
        replica.failures += 1
        if not replica.healthy:
            if was_out:  # a failed probe: out again, for longer
                replica.backoff_s = min(self.policy.probe_max_s, 2 * replica.backoff_s)
                replica.out_until = self._clock.monotonic() + replica.backoff_s
            return
        if not unreachable and replica.failures < self.policy.unhealthy_after:
            return
        replica.backoff_s = self.policy.probe_after_s
        replica.out_until = self._clock.monotonic() + replica.backoff_s
        log.warning(
            "route %s: replica %s taken out for %gs (%s)",
            self.route,
            replica.name,
            replica.backoff_s,
            "unreachable" if unreachable else f"{replica.failures} failures in a row",
        )
        self._metrics.replica_health(self.route, index, False)

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.backend.aclose()


def _judge(result: ModelResult) -> tuple[bool, bool]:
    """Whether ``result`` shows the server alive, and whether it could not be reached."""
    unreachable = bool(result.info.pop(UNREACHABLE, False))
    error = result.error
    if error is None:
        return True, False
    if unreachable:
        return False, True
    return not (error.code >= 500 or error.code == 408), False


def _cancelled() -> bool:
    """Whether the running task is being cancelled (a ``finally`` on its way out)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
