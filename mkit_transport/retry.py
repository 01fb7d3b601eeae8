"""The retry policy: one value, built into a tenacity ``Retrying`` by the transport base.

The default is the contract's ladder: sleeps of 1, 2, 4, 8 and 16 seconds (doubling,
capped at 300 s), so at most six calls, with only transient failures retried. Jitter
and ``Retry-After`` are opt-in so the default stays the documented, testable ladder.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import tenacity

from .errors import ConnectionFailed, InvalidArgument, ServerError

__all__ = ["RetryPolicy", "is_retryable"]


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

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return self.delay(state.attempt_number, error)

    def retrying(
        self, *, before_retry: Callable[[BaseException], None] | None = None
    ) -> tenacity.Retrying:
        """Build the tenacity ``Retrying`` for one call.

        ``before_retry`` runs before each sleep with the error that caused it; the
        transport base uses it to drop a broken connection so the next attempt
        reconnects. The last error is re-raised unchanged when retries run out.
        """

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if before_retry is not None and state.outcome is not None:
                error = state.outcome.exception()
                if error is not None:
                    before_retry(error)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_retryable),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
