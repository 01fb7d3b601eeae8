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

gunicorn answers a request it cannot parse (a bad request line, a head over its limits,
a malformed header) itself, before the application sees it, with an HTML page. This
worker answers those in SPEC-HTTP's error format instead: a JSON body and the
``Mkit-Error`` header, so a client learns what it did wrong the way it does for every
other failure (issue 15, item 7).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http import HTTPStatus
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from ..protocol.http import status_of

__all__ = ["GuardedThreadWorker", "guarded_worker", "gunicorn_failure"]

#: The code for each status gunicorn answers a request it could not parse with.
_GUNICORN_CODES = {
    400: "invalid_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}
#: A failure message quotes at most this much of what gunicorn said (it may echo a
#: whole request line back).
_MESSAGE_LIMIT = 256


def gunicorn_failure(status: int, reason: str, error: BaseException) -> tuple[int, bytes]:
    """The status and whole HTTP answer (SPEC-HTTP section 5) for gunicorn's own failure.

    ``status`` and ``reason`` are what gunicorn chose for ``error``; its code comes from
    the shared table, and a status the table lacks becomes 400 ``invalid_request`` (or
    500 ``internal_error``), so a code is never sent with another status.
    """
    code = _GUNICORN_CODES.get(status) or ("invalid_request" if status < 500 else "internal_error")
    if status_of(code) != status:
        status = status_of(code)
        reason = HTTPStatus(status).phrase
    detail = str(error) if status < 500 else ""
    message = f"{reason}: {detail}" if detail else reason
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    body = json.dumps({"error": code, "message": message}, sort_keys=True).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Mkit-Error: {code}\r\n\r\n"
    )
    return status, head.encode("latin-1", "replace") + body


class _Recorder:
    """A stand-in socket that keeps what gunicorn's ``handle_error`` writes to it."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # so gunicorn writes at once, without toggling blocking mode

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> tuple[int, str]:
        """The status and reason of the recorded answer (500 if there is none)."""
        line = self.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(line) == 3 and line[1].isdigit():
            return int(line[1]), line[2]
        return 500, "Internal Server Error"


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

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer a request gunicorn refused in SPEC-HTTP's JSON format, not HTML.

        gunicorn's own ``handle_error`` still decides the status and writes the log and
        access-log lines; its HTML answer goes to a recorder, and the JSON one to the
        client.
        """
        recorder = _Recorder()
        super().handle_error(req, recorder, addr, exc)
        status, reason = recorder.status()
        _, answer = gunicorn_failure(status, reason, exc)
        try:
            util.write_nonblock(client, answer)
        except Exception:  # a client gone already: nothing to tell it
            self.log.debug("Failed to send error message.")

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
