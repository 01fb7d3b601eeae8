"""Progress events and the shared meters of a sync (spec/SPEC-SYNC.md, progress)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Limiter", "Meter", "Progress"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event: the phase, bytes moved so far, objects done and skipped.

    ``objects_total`` and ``bytes_total`` are 0 until the verb knows them; a verb
    that plans before it copies (``mirror``) sets both before its first byte moves,
    ``bytes_total`` being the bytes it will send.
    """

    phase: str
    bytes_in: int = 0
    bytes_out: int = 0
    objects_done: int = 0
    objects_skipped: int = 0
    objects_total: int = 0
    bytes_total: int = 0


class Meter:
    """Counts bytes and objects from several threads and reports them."""

    def __init__(self, callback: Callable[[Progress], None] | None) -> None:
        self.callback = callback
        self.lock = threading.Lock()
        self.phase = "start"
        self.bytes_in = self.bytes_out = 0
        self.done = self.skipped = self.total = self.bytes_total = 0

    def add(
        self, *, bytes_in: int = 0, bytes_out: int = 0, done: int = 0, skipped: int = 0
    ) -> None:
        """Add to the counters (from any thread) and report the new totals."""
        with self.lock:
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
            self.done += done
            self.skipped += skipped
            event = self._event()
        if self.callback is not None:
            self.callback(event)

    def enter(self, phase: str, total: int | None = None, bytes_total: int | None = None) -> None:
        """Start ``phase`` (with the number of objects and bytes, once known); report it."""
        with self.lock:
            self.phase = phase
            if total is not None:
                self.total = total
            if bytes_total is not None:
                self.bytes_total = bytes_total
            event = self._event()
        if self.callback is not None:
            self.callback(event)

    def _event(self) -> Progress:
        return Progress(
            self.phase,
            self.bytes_in,
            self.bytes_out,
            self.done,
            self.skipped,
            self.total,
            self.bytes_total,
        )


class Limiter:
    """A shared bandwidth cap: each chunk reserves its time slot, then waits for it."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.next = time.monotonic()

    def take(self, n: int) -> None:
        """Wait until ``n`` more bytes fit under the rate (no wait without one)."""
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.next = max(self.next, now) + n / self.rate
            wait = self.next - now
        time.sleep(wait)
