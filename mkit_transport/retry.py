"""The retry policy: one value, built into a tenacity ``Retrying`` by the transport base.

The default is the contract's ladder: sleeps of 1, 2, 4, 8 and 16 seconds (doubling,
capped at 300 s), so at most six calls, with only transient failures retried. Jitter
and ``Retry-After`` are opt-in so the default stays the documented, testable ladder.
One operation climbs one ladder (:class:`RetryLadder`), however many retry loops run
inside it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from .errors import ConnectionFailed, InvalidArgument, ServerError

if TYPE_CHECKING:
    import tenacity

__all__ = ["ConflictBackoff", "RetryLadder", "RetryPolicy", "is_retryable"]

_T = TypeVar("_T")


def is_retryable(error: BaseException) -> bool:
    """Say whether ``error`` is transient, so worth another attempt.

    Transient: a broken connection, a 5xx, a 429, or a status the remote's own error
    code calls temporary (``ServerError.transient``). Everything else (conflicts,
    denials, bad input, bad answers) would fail the same way again, so it fails at once.
    """
    if isinstance(error, ConnectionFailed):
        return True
    if isinstance(error, ServerError):
        return error.transient or error.status >= 500 or error.status == 429
    return False


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transport repeats a failed call.

    Usage::

        RetryPolicy()                      # 1, 2, 4, 8, 16 s: at most 6 calls
        RetryPolicy(retries=0)             # fail at once
        RetryPolicy(sleep=fake.append)     # tests: record sleeps, never wait
        policy.replace(jitter=True)        # spread many clients apart
    """

    #: Retries after the first call (the contract: 5, hence 6 calls at most).
    retries: int = 5
    #: First sleep, in seconds.
    initial: float = 1.0
    #: Growth of each next sleep.
    multiplier: float = 2.0
    #: No single sleep is longer than this, in seconds.
    max_delay: float = 300.0
    #: Full jitter: each sleep is uniform in [0, ladder value]. Off by default.
    jitter: bool = False
    #: Wait at least a server's ``Retry-After`` (capped at ``max_delay``). Off by default.
    honor_retry_after: bool = False
    #: The sleep function; inject one in tests so nothing really waits.
    sleep: Callable[[float], None] = field(default=_sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.initial < 0 or self.multiplier < 1 or self.max_delay < 0:
            raise InvalidArgument(f"invalid retry policy {self!r}")

    def replace(self, **changes: object) -> RetryPolicy:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def ladder(self) -> list[float]:
        """The sleeps between attempts, without jitter: ``[1, 2, 4, 8, 16]`` by default."""
        return [self._step(n) for n in range(1, self.retries + 1)]

    def _step(self, retry_number: int) -> float:
        """The jitter-free sleep before retry number ``retry_number`` (1-based)."""
        return min(self.initial * self.multiplier ** (retry_number - 1), self.max_delay)

    def delay(self, retry_number: int, error: BaseException | None = None) -> float:
        """The sleep before retry number ``retry_number`` (1-based) after ``error``."""
        delay = self._step(retry_number)
        if self.jitter:
            delay = random.uniform(0, delay)
        if (
            self.honor_retry_after
            and isinstance(error, ServerError)
            and error.retry_after is not None
        ):
            delay = max(delay, min(error.retry_after, self.max_delay))
        return delay

    def retrying(
        self, *, before_retry: Callable[[BaseException], None] | None = None
    ) -> tenacity.Retrying:
        """Build the tenacity ``Retrying`` for one call (a fresh :class:`RetryLadder`).

        ``before_retry`` runs before each sleep with the error that caused it; the
        transport base uses it to drop a broken connection so the next attempt
        reconnects. The last error is re-raised unchanged when retries run out.
        """
        return RetryLadder(self, before_retry=before_retry).retrying()


@dataclass(frozen=True)
class ConflictBackoff:
    """How long a read-modify-write loop waits after losing a compare-and-swap.

    Not the retry policy: a conflict is not a failure of the remote, it is another
    writer's success, and retrying it at once only loses again. When N clients loop
    on one ref, the N-1 losers of a round all retry with the value their conflict
    reported, and the round's winner, already writing its next value, beats them:
    every increment costs N-1 wasted round trips. Measured with 8 HTTP clients on
    two cores (issue 17): 4.2 conflicts per increment without a wait, 0.3-0.4 with
    this one, and the CPU that went to lost rounds went to increments.

    Full jitter (a uniform sleep up to a bound that doubles per conflict in a row,
    capped): the losers spread out instead of colliding again in lock-step. The
    first bound is a few of a loopback HTTP write's round trips, so the winner's
    next write lands while they wait.
    """

    #: Bound of the sleep after the first conflict, in seconds.
    first: float = 0.008
    #: No bound is larger than this, in seconds.
    cap: float = 0.128
    #: The sleep function; inject one in tests so nothing really waits.
    sleep: Callable[[float], None] = field(default=_sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 <= self.first <= self.cap):
            raise InvalidArgument(f"invalid conflict backoff {self!r}")

    def delay(self, streak: int, rng: random.Random | None = None) -> float:
        """The sleep after the ``streak``-th conflict in a row (0: none)."""
        if streak <= 0:
            return 0.0
        bound = min(self.cap, self.first * 2 ** min(streak - 1, 32))
        return (rng or random).uniform(0.0, bound)


class RetryLadder:
    """One operation's retries: the policy's ladder, climbed once however many loops share it.

    The transport base makes one per public call. A primitive that retries a step of
    its own (S3 retries a multipart part without restarting the upload) runs that
    step through the same ladder, so every retry, inner or outer, takes the next rung:
    at most ``policy.retries`` retries and the ladder's sleeps in order, per
    operation. Without sharing, a step that always fails would cost the ladder's
    attempts once per enclosing loop (6 x 6 for a stuck S3 part).

    Thread-safe: a primitive may hand the ladder to its worker threads.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        before_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.policy = policy
        self.before_retry = before_retry
        self.retries_used = 0
        self._lock = threading.Lock()

    def _take(self) -> int | None:
        """Take the next rung: its retry number (1-based), or ``None`` once all are used."""
        with self._lock:
            if self.retries_used >= self.policy.retries:
                return None
            self.retries_used += 1
            return self.retries_used

    def retrying(self, *, may_retry: Callable[[], bool] | None = None) -> tenacity.Retrying:
        """Build a tenacity ``Retrying`` whose retries come off this ladder.

        A failure is retried when it is transient (:func:`is_retryable`), then when
        ``may_retry()`` agrees (asked only about a failure that would otherwise be
        retried), then when a rung is left; the last error is re-raised unchanged.
        """
        # Imported here: a process that never retries (``serve ssh``, started for
        # every SSH channel, serves with retries=0) never pays for tenacity's import.
        import tenacity

        rung = 0

        def retry(state: tenacity.RetryCallState) -> bool:
            nonlocal rung
            error = state.outcome.exception() if state.outcome is not None else None
            if error is None or not is_retryable(error):
                return False
            if may_retry is not None and not may_retry():
                return False
            taken = self._take()
            if taken is None:
                return False
            rung = taken
            return True

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.policy.delay(rung, error)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if self.before_retry is not None and state.outcome is not None:
                error = state.outcome.exception()
                if error is not None:
                    self.before_retry(error)

        return tenacity.Retrying(
            stop=tenacity.stop_never,  # the rungs left decide, in ``retry``
            wait=wait,
            retry=retry,
            sleep=self.policy.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def run(self, op: Callable[[], _T], *, may_retry: Callable[[], bool] | None = None) -> _T:
        """Run ``op``, retrying transient failures on this ladder's remaining rungs.

        Under a policy of no retries ``op`` is simply called: its error is raised
        unchanged, as the ``Retrying`` would after declining to retry it.
        """
        if self.policy.retries == 0:
            return op()
        return self.retrying(may_retry=may_retry)(op)
