"""Retries, backoff, the per-record deadline and the concurrency bound."""

from __future__ import annotations

import asyncio
import random

from batchrock.backends.base import MockBackend, ModelRequest, ModelResult, RecordError
from batchrock.backends.deadlines import Deadlines, current_task
from batchrock.backends.resilience import ResilientBackend, RetryPolicy, Slots

REQUEST = ModelRequest("m", "InvokeModel", {}, "r1")
OK = {"answer": 1}


def scripted(*errors: RecordError | None) -> MockBackend:
    """Answers with the given errors in turn, then succeeds."""
    queue = list(errors)

    async def handler(request: ModelRequest) -> ModelResult:
        error = queue.pop(0) if queue else None
        return ModelResult(error=error) if error else ModelResult(output=OK, input_tokens=1)

    return MockBackend(handler)


def no_sleep() -> tuple[list[float], object]:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    return pauses, sleep


def test_retryable_errors_are_retried_with_growing_jittered_pauses() -> None:
    throttle = RecordError(429, "slow down", retryable=True)
    server = RecordError(503, "unavailable", retryable=True)
    inner = scripted(throttle, server, throttle)
    pauses, sleep = no_sleep()
    policy = RetryPolicy(max_retries=4, backoff_base_s=1.0, backoff_max_s=3.0)
    backend = ResilientBackend(inner, policy, sleep=sleep, rng=random.Random(1))  # type: ignore[arg-type]
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.ok and result.output == OK
    assert result.info == {"attempts": 4, "throttled": 2}
    assert len(inner.calls) == 4
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0 and 1.5 <= pauses[2] <= 3.0


def test_last_retry_error_is_final() -> None:
    throttle = RecordError(429, "slow down", retryable=True)
    pauses, sleep = no_sleep()
    backend = ResilientBackend(scripted(*[throttle] * 10), RetryPolicy(max_retries=2), sleep=sleep)  # type: ignore[arg-type]
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.error == RecordError(429, "slow down", retryable=False)
    assert result.info == {"attempts": 3, "throttled": 3}
    assert len(pauses) == 2


def test_non_retryable_errors_are_not_retried() -> None:
    inner = scripted(RecordError(400, "bad"))
    backend = ResilientBackend(inner, RetryPolicy())
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.error == RecordError(400, "bad") and len(inner.calls) == 1
    assert result.info == {}


def test_retry_after_hint_is_honoured() -> None:
    async def handler(request: ModelRequest) -> ModelResult:
        if len(inner.calls) == 1:
            return ModelResult(
                error=RecordError(429, "x", retryable=True), info={"retry_after": 2.5}
            )
        return ModelResult(output=OK)

    inner = MockBackend(handler)
    pauses, sleep = no_sleep()
    backend = ResilientBackend(inner, RetryPolicy(backoff_base_s=0.1), sleep=sleep)  # type: ignore[arg-type]
    assert asyncio.run(backend.invoke(REQUEST)).ok
    assert pauses == [2.5]


def test_deadline_ends_a_slow_record_with_408() -> None:
    async def handler(request: ModelRequest) -> ModelResult:
        await asyncio.sleep(5)
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=0.05))
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.error is not None and result.error.code == 408
    assert "0.05 seconds" in result.error.message


def test_no_retry_starts_that_would_overrun_the_deadline() -> None:
    throttle = RecordError(429, "x", retryable=True)
    inner = scripted(*[throttle] * 10)
    backend = ResilientBackend(inner, RetryPolicy(backoff_base_s=10, deadline_s=1))
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.error is not None and result.error.code == 429 and len(inner.calls) == 1


def test_concurrency_is_bounded_and_queueing_does_not_eat_the_deadline() -> None:
    running = 0
    peak = 0

    async def handler(request: ModelRequest) -> ModelResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.02)
        finally:
            # Counted out however the call ends (a deadline cancels it): else a cancelled
            # call would read as one still running, and the peak as more than the bound.
            running -= 1
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=1.0), max_concurrency=3)

    async def run() -> list[ModelResult]:
        return await asyncio.gather(*(backend.invoke(REQUEST) for _ in range(180)))

    results = asyncio.run(run())
    assert peak == 3
    # 180 records at 3 at a time take at least 1.2 s in all, more than the 1 s deadline
    # each; each one's own call takes 0.02 s, so only a loop stalled for a second could
    # make one miss its deadline (a busy machine's scheduling cannot fail the test).
    assert all(r.ok for r in results)


def test_slots_are_handed_out_in_arrival_order_and_none_is_lost_to_a_cancellation() -> None:
    """max_concurrency's slots behave as asyncio.Semaphore's: a released slot goes to the
    longest waiter (a newcomer does not take it first), a waiter cancelled while it waits
    takes none, and one cancelled just after it was handed a slot passes it on."""

    async def run() -> None:
        slots = Slots(1)
        got: list[str] = []

        async def take(name: str) -> None:
            await slots.wait()
            got.append(name)

        await slots.wait()  # held by this test
        assert slots.free == 0
        a, b, c = (asyncio.create_task(take(n)) for n in "abc")
        await asyncio.sleep(0)
        b.cancel()  # cancelled while waiting
        await asyncio.sleep(0)
        slots.release()
        late = asyncio.create_task(take("late"))  # comes after the release: must wait
        await asyncio.sleep(0)
        await asyncio.wait_for(a, 5)
        assert got == ["a"] and slots.free == 0 and b.cancelled()
        slots.release()  # a's slot: handed to c ...
        c.cancel()  # ... which is cancelled before it runs, so late gets it
        await asyncio.sleep(0)
        await asyncio.wait_for(late, 5)
        assert c.cancelled() and got == ["a", "late"] and slots.free == 0
        slots.release()
        assert slots.free == 1 and not [w for w in slots.waiting if not w.done()]

    asyncio.run(run())


def test_a_backend_that_raises_is_retried_then_a_500() -> None:
    async def handler(request: ModelRequest) -> ModelResult:
        if len(inner.calls) == 1:
            raise RuntimeError("plug-in bug")
        return ModelResult(output=OK)

    inner = MockBackend(handler)
    _, sleep = no_sleep()
    backend = ResilientBackend(inner, RetryPolicy(), sleep=sleep)  # type: ignore[arg-type]
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.ok and result.info == {"attempts": 2, "throttled": 0}

    async def broken(request: ModelRequest) -> ModelResult:
        raise RuntimeError("always")

    backend = ResilientBackend(MockBackend(broken), RetryPolicy(max_retries=1), sleep=sleep)  # type: ignore[arg-type]
    result = asyncio.run(backend.invoke(REQUEST))
    assert result.error == RecordError(
        500, "The model backend failed: RuntimeError: always", retryable=False
    )


def test_deadlines_of_many_records_each_end_their_own_record() -> None:
    """One timer serves every record's deadline: the slow records of a mixed batch get
    their 408s, the quick ones their answers, whatever order they started in."""

    async def handler(request: ModelRequest) -> ModelResult:
        await asyncio.sleep(5 if request.record_id.startswith("slow") else 0)
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=0.1))
    ids = [f"{'slow' if i % 3 == 0 else 'quick'}{i}" for i in range(60)]

    async def run() -> list[ModelResult]:
        requests = [ModelRequest("m", "InvokeModel", {}, rid) for rid in ids]
        return await asyncio.gather(*(backend.invoke(r) for r in requests))

    results = asyncio.run(run())
    for rid, result in zip(ids, results, strict=True):
        if rid.startswith("slow"):
            assert result.error is not None and result.error.code == 408, rid
        else:
            assert result.ok, rid


def test_a_cancelled_record_is_cancelled_not_a_deadline_error() -> None:
    """Cancelling the task that awaits a record (a job stopping) cancels it: only the
    deadline's own cancellation becomes a 408."""
    started = asyncio.Event()

    async def handler(request: ModelRequest) -> ModelResult:
        started.set()
        await asyncio.sleep(5)
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=30))

    async def run() -> None:
        task = asyncio.create_task(backend.invoke(REQUEST))
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError(f"the record was not cancelled: {task.result()}")

    asyncio.run(run())


def test_finished_records_do_not_pile_up_behind_a_slow_one() -> None:
    """Deadlines are dropped as records finish, even while an older record still runs."""
    release = asyncio.Event()

    async def handler(request: ModelRequest) -> ModelResult:
        if request.record_id == "stuck":
            await release.wait()
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=60))

    async def run() -> int:
        stuck = asyncio.create_task(backend.invoke(ModelRequest("m", "InvokeModel", {}, "stuck")))
        await asyncio.sleep(0)
        held = 0
        for i in range(5000):
            assert (await backend.invoke(ModelRequest("m", "InvokeModel", {}, f"r{i}"))).ok
            assert backend._deadlines is not None
            held = max(held, len(backend._deadlines))
        release.set()
        assert (await stuck).ok
        return held

    assert asyncio.run(run()) <= 300


def test_one_backend_keeps_deadlines_on_each_event_loop_it_is_used_from() -> None:
    async def handler(request: ModelRequest) -> ModelResult:
        await asyncio.sleep(5)
        return ModelResult(output=OK)

    backend = ResilientBackend(MockBackend(handler), RetryPolicy(deadline_s=0.05))
    for _ in range(2):
        result = asyncio.run(backend.invoke(REQUEST))
        assert result.error is not None and result.error.code == 408


def test_the_running_task_is_found_through_the_known_loop_or_asyncio() -> None:
    async def here(known: Deadlines | None) -> bool:
        return current_task(known) is asyncio.current_task()

    async def on_this_loop() -> bool:
        return await here(Deadlines(asyncio.get_running_loop()))

    assert asyncio.run(on_this_loop())
    assert asyncio.run(here(None))
    # A Deadlines of a loop that is gone: the task of the loop now running, not None.
    stale = Deadlines(asyncio.new_event_loop())
    assert asyncio.run(here(stale))
    stale.loop.close()
