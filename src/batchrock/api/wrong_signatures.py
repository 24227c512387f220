"""The bound on requests that fail to prove a credential (docs/access.md, "Wrong signatures").

Counted in the console's failed-sign-in tables (:mod:`batchrock.access.signin_limit`; with
several API processes, in the file they share, so spreading guesses over them gains nothing):

- **per client address and access key id**: a wrong signature for a known key (a wrong secret,
  a changed request, a forged short-term API key). Past ``MAX_FAILURES`` (10) within
  ``WINDOW_SECONDS`` (5 minutes), that address's requests with that key are 429, right secret
  or wrong: an answer that told a right guess apart would tell the guesser;
- **per client address**, whatever key ids it names: those wrong signatures, for any of the
  keys (guessing the secrets of many keys from one place). Unknown access key ids and API keys
  are not counted (the caller decides, :func:`batchrock.api.auth._guessed_key`): no secret stands
  behind them, and the common case is a rotated-out key that clients still send, which must
  not lock their address out of the key that replaced it. Past ``per_address`` (setting
  ``wrong_signatures_per_address``, 50) within the window, that address's requests are 429,
  right or wrong, except for a key that signed correctly *from that address* within the last
  ``KNOWN_SECONDS`` (a day) before: a user behind the same NAT as a guesser keeps working
  with the keys it has been using, and a guesser gains nothing from it, since proving a
  key from the address needs its secret (those keys keep their own per-key bound).

Requests refused with 429 are not counted, so each lockout ends at most a window after the
last counted failure. A correct signature is remembered for its address and key at most once
a minute per process (:attr:`WrongSignatures.REMEMBER_EVERY`), so the shared file sees no
write for most requests, and no read either while no failure is recorded (each process keeps
what it read: :mod:`batchrock.shared_state`). A count never waits on the event loop for
another process's lock on that file: where it is locked, the write goes to the file's writer
thread, and counts on this process at once (:meth:`batchrock.shared_state.SharedState.add_failure`).
"""

from __future__ import annotations

from collections.abc import Callable

from batchrock.access.signin_limit import (
    MAX_FAILURES,
    WINDOW_SECONDS,
    SharedSignInLimiter,
    SignInLimiter,
)
from batchrock.errors import ThrottlingException
from batchrock.shared_state import SharedState

#: How long a key that signed correctly from an address stays usable from it while that
#: address is locked out for its wrong signatures.
KNOWN_SECONDS = 86_400.0


def pair_key(source: str, access_key_id: str) -> str:
    """What a wrong signature counts against: the address and the access key it claimed."""
    return f"sigv4:{source}/{access_key_id[:128]}"


def _address_key(source: str) -> str:
    return f"sigv4-from:{source}"


def _known_key(source: str, access_key_id: str) -> str:
    return f"sigv4-ok:{source}/{access_key_id[:128]}"


class WrongSignatures:
    """The bounds above; ``failed`` and ``succeeded`` raise :class:`ThrottlingException`
    for a request they refuse."""

    #: Seconds between two records of one address and key signing correctly (per process).
    REMEMBER_EVERY = 60.0
    #: Pairs whose last record this process remembers (forgotten all at once past it).
    _REMEMBERED = 10_000

    def __init__(
        self,
        monotonic: Callable[[], float],
        per_address: int,
        shared: SharedState | None = None,
    ) -> None:
        def limiter(max_failures: int, window: float) -> SignInLimiter:
            if shared is None:
                return SignInLimiter(monotonic, max_failures, window)
            return SharedSignInLimiter(monotonic, shared, max_failures, window)

        self._monotonic = monotonic
        #: Per address and key id: the console's bound (tests replace it to lift it).
        self.per_key = limiter(MAX_FAILURES, WINDOW_SECONDS)
        #: Per address, any key ids (``None``: setting ``wrong_signatures_per_address`` 0).
        self.per_address = limiter(per_address, WINDOW_SECONDS) if per_address > 0 else None
        # One record of the pair's latest correct signature: "failures" of one allowed.
        self._known = limiter(1, KNOWN_SECONDS)
        self._recorded: dict[tuple[str, str], float] = {}

    def failed(self, source: str, access_key_id: str) -> None:
        """A request from ``source`` with a wrong signature for ``access_key_id``: refused
        (429) if a bound is reached, else counted."""
        self._refuse_if_limited(source, access_key_id)
        self.per_key.failed([pair_key(source, access_key_id)])
        if self.per_address is not None:
            self.per_address.failed([_address_key(source)])

    def succeeded(self, source: str, access_key_id: str) -> None:
        """A request from ``source`` signed correctly with ``access_key_id``: refused (429) if
        a bound is reached (as a wrong one would be), else remembered as a known pair."""
        self._refuse_if_limited(source, access_key_id)
        if self.per_address is None:
            return
        now = self._monotonic()
        pair = (source, access_key_id)
        last = self._recorded.get(pair)
        if last is None or now - last >= self.REMEMBER_EVERY:
            if len(self._recorded) >= self._REMEMBERED:
                self._recorded.clear()
            self._recorded[pair] = now
            self._known.failed([_known_key(source, access_key_id)])

    def _refuse_if_limited(self, source: str, access_key_id: str | None) -> None:
        if access_key_id is not None:
            wait = self.per_key.retry_after([pair_key(source, access_key_id)])
            if wait is not None:
                raise ThrottlingException(
                    "Too many requests with a wrong signature for this access key from this "
                    f"address. Retry in {int(wait) + 1} seconds."
                )
        if self.per_address is None:
            return
        wait = self.per_address.retry_after([_address_key(source)])
        if wait is None:
            return
        if (
            access_key_id is not None
            and self._known.retry_after([_known_key(source, access_key_id)]) is not None
        ):
            return  # a key this address has used rightly: its own bound is enough
        raise ThrottlingException(
            "Too many requests with a wrong signature from this address. "
            f"Retry in {int(wait) + 1} seconds."
        )
