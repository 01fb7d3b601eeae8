"""gunicorn's threaded worker with deadlines, so slow clients cannot starve the server.

A sync worker serves one connection at a time and reads the request head with no
deadline: two clients that never finish their headers held both default workers,
and every other client waited up to the 600 s worker timeout (issue 15, item 1).
gunicorn's ``gthread`` worker parks idle and kept-alive connections in one poller
instead of a thread, but a client that trickles a header byte at a time still holds
a thread for as long as it likes. This worker adds the two missing bounds:

* a **header deadline**: a connection whose request head is not complete
  ``header_timeout`` seconds after its thread took it is shut down (its thread's
  blocking read returns at once and the thread is free again);
* an **idle timeout** on the socket once the head is in: a body read or a response
  write that makes no progress for ``idle_timeout`` seconds fails (an upload then
  stores nothing, as any cut upload), so a stalled client frees its thread.

Big transfers are not bounded in total: a thread's progress does not depend on the
worker's heartbeat, which the main loop sends, so ``--timeout`` no longer has to
cover the longest transfer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

__all__ = ["GuardedThreadWorker", "guarded_worker"]


class GuardedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker with a header deadline and a socket idle timeout."""

    #: Seconds a connection's thread waits for a complete request head.
    header_timeout: float = 30.0
    #: Seconds a body read or response write may make no progress.
    idle_timeout: float = 120.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadlines: dict[Any, float] = {}
        self._deadline_lock = threading.Lock()

    def handle(self, conn: Any) -> Any:
        """Serve one request on ``conn`` (a pool thread) under the header deadline."""
        with self._deadline_lock:
            self._head_deadlines[conn] = time.monotonic() + self.header_timeout
        try:
            return super().handle(conn)
        finally:
            with self._deadline_lock:
                self._head_deadlines.pop(conn, None)

    def handle_request(self, req: Any, conn: Any) -> Any:
        """The head is in: lift the deadline and bound each body read and write instead."""
        with self._deadline_lock:
            self._head_deadlines.pop(conn, None)
        conn.sock.settimeout(self.idle_timeout)
        return super().handle_request(req, conn)

    def murder_pending(self) -> None:
        """Run by the main loop about once a second: also cut heads past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        with self._deadline_lock:
            late = [conn for conn, deadline in self._head_deadlines.items() if deadline <= now]
            for conn in late:
                del self._head_deadlines[conn]
        for conn in late:
            self.log.info("closing %s: request head not complete in time", conn.client)
            # socket.socket's own shutdown, also for a TLS socket: it wakes the
            # thread's blocking read, which then sees the end of the stream.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)


def guarded_worker(header_timeout: float, idle_timeout: float) -> type[GuardedThreadWorker]:
    """A worker class with these deadlines (made before gunicorn forks its workers)."""
    return type(
        "GuardedThreadWorker",
        (GuardedThreadWorker,),
        {"header_timeout": header_timeout, "idle_timeout": idle_timeout},
    )
