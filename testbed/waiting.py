"""The one polling helper the tests and fixtures share.

Polling is for things that happen *eventually* (a server answers, a worker writes
its log line after the response, a server process removes its temp file as it
exits). The timeout only bounds how long a test can take: it is generous, because
the helper returns as soon as the condition holds, so a slow machine waits longer
instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy; return that.

    Exceptions of the ``ignore`` types count as "not yet" (a server still booting);
    any other exception propagates at once, so a predicate can give up early (a
    server process that exited). After ``timeout`` seconds, raise ``TimeoutError``
    naming ``what`` was awaited and the last ignored error.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as error:
            last = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last is not None else ""
            raise TimeoutError(f"{what}: not within {timeout:g} s{detail}")
        time.sleep(interval)
