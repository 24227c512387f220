"""A bound on failed console sign-ins: per source address and per key tried.

After :data:`MAX_FAILURES` refused sign-ins within :data:`WINDOW_SECONDS` from one source, or
naming one access key id (or API key), further attempts from it (or for it) are answered 429
until the oldest of those failures leaves the window, right or wrong; guessing a secret
through the console is then a few attempts a minute. A success does not clear the count (an
attacker who knows one key could clear it between guesses). What is counted is never a
secret: an API key is kept as a SHA-256 digest, an access key id as itself (it is no secret).
The table is bounded: beyond :data:`MAX_TRACKED` names the oldest is forgotten.

The API's requests with a wrong SigV4 signature are bounded the same way
(``api/auth.py``), counted per client address and
access key id together: a guesser elsewhere cannot lock a key's holder out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from batchrock.shared_state import SharedState

#: Refused sign-ins allowed per source or key within the window.
MAX_FAILURES = 10
WINDOW_SECONDS = 300.0
#: Sources and keys remembered at most (about 100 bytes each).
MAX_TRACKED = 10_000


def limit_keys(source: str, access_key_id: str | None, api_key: str | None) -> list[str]:
    """What one attempt counts against: its source and the key it names."""
    keys = [f"source:{source}"]
    if api_key:
        keys.append("api:" + hashlib.sha256(api_key.encode()).hexdigest()[:32])
    elif access_key_id:
        keys.append(f"key:{access_key_id[:128]}")
    return keys


class SignInLimiter:
    def __init__(
        self,
        monotonic: Callable[[], float],
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._monotonic = monotonic
        self._max = max_failures
        self._window = window_seconds
        self._max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, keys: Iterable[str]) -> float | None:
        """Seconds until an attempt counted against ``keys`` may be tried; ``None``: now."""
        now = self._monotonic()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self._max:
                wait = max(wait, times[0] + self._window - now)
        return wait if wait > 0 else None

    def failed(self, keys: Iterable[str]) -> None:
        now = self._monotonic()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self._max)
                while len(self._failures) > self._max_tracked:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(key)
            times.append(now)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] + self._window <= now:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


class SharedSignInLimiter(SignInLimiter):
    """The same bound, counted in the file every API process of one ``serve`` shares
    (setting ``api_processes``), so that spreading guesses over connections gains nothing."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        state: SharedState,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        super().__init__(monotonic, max_failures, window_seconds, max_tracked)
        self._state = state

    def retry_after(self, keys: Iterable[str]) -> float | None:
        now = self._monotonic()
        wait = 0.0
        for key in keys:
            times = self._state.recent_failures(key, now - self._window)
            if len(times) >= self._max:
                wait = max(wait, times[-self._max] + self._window - now)
        return wait if wait > 0 else None

    def failed(self, keys: Iterable[str]) -> None:
        now = self._monotonic()
        for key in keys:
            self._state.add_failure(key, now, self._max, self._max_tracked)
