"""A fault-injecting TCP proxy for transport tests (HTTP, S3 and SSH share it).

Tests put it between a client and a real server on loopback to provoke the
failures a network produces: slowness, a connection cut after a given number of
bytes in one direction (FIN or RST), a peer that accepts and never answers, and a
peer that drops every connection at once.

Each accepted connection is served by one thread running one ``select()`` loop
over both sockets, and sockets are always ``shutdown()`` before ``close()``: a
socket closed from another thread while one is blocked in ``recv()`` sends
neither FIN nor RST, and the client would see a timeout instead of a cut.

Usage::

    with FaultProxy("127.0.0.1", server_port) as proxy:
        url = f"http://{proxy.host}:{proxy.port}/"
        proxy.set_fault("close", after_bytes=4096, direction="up", count=1)
        ...                                   # the next connection is cut
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["MODES", "FaultProxy"]

#: The fault modes :meth:`FaultProxy.set_fault` accepts.
MODES = ("pass", "delay", "close", "reset", "blackhole", "refuse")
_POLL = 0.05
_BUFFER = 1 << 16


@dataclass(frozen=True)
class _Fault:
    mode: str = "pass"
    after_bytes: int = 0
    direction: str = "up"
    delay: float = 0.0


def _shut(sock: socket.socket, *, reset: bool = False) -> None:
    """Close ``sock`` with a FIN (shutdown first) or, when ``reset``, with an RST."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A select()-driven TCP proxy on 127.0.0.1 in front of (target_host, target_port)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0
        self._fault = _Fault()
        self._remaining: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- lifetime --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on a free loopback port and start accepting."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection and wait for the threads."""
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._listener is not None:
            _shut(self._listener)
            self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration -----------------------------------------------------------------

    def set_fault(
        self,
        mode: str = "pass",
        *,
        after_bytes: int = 0,
        direction: str = "up",
        delay: float = 0.0,
        count: int | None = None,
    ) -> None:
        """Apply ``mode`` to the next ``count`` new connections (all when ``None``).

        ``direction`` is ``"up"`` (client to server) or ``"down"`` (server to
        client); ``after_bytes`` is how many bytes pass in that direction before a
        ``close`` or ``reset`` cut. Connections already open keep their fault.
        """
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {MODES}")
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        if after_bytes < 0 or delay < 0 or (count is not None and count < 0):
            raise ValueError("after_bytes, delay and count must not be negative")
        with self._lock:
            self._fault = _Fault(mode, after_bytes, direction, delay)
            self._remaining = count

    def _next_fault(self) -> _Fault:
        with self._lock:
            self.accepted += 1
            fault = self._fault
            if self._remaining is not None:
                if self._remaining <= 0:
                    return _Fault()
                self._remaining -= 1
                if self._remaining == 0:
                    self._fault, self._remaining = _Fault(), None
            return fault

    # -- serving -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            readable, _, _ = select.select([listener], [], [], _POLL)
            if not readable:
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            fault = self._next_fault()
            if fault.mode == "refuse":
                _shut(client)
                continue
            thread = threading.Thread(
                target=self._serve, args=(client, fault), name="faultproxy-conn", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket, fault: _Fault) -> None:
        upstream: socket.socket | None = None
        try:
            if fault.mode == "blackhole":
                self._swallow(client)
                return
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), 5)
            except OSError:
                return
            self._pump(client, upstream, fault)
        finally:
            reset = fault.mode == "reset"
            _shut(client, reset=reset)
            if upstream is not None:
                _shut(upstream, reset=reset)

    def _swallow(self, client: socket.socket) -> None:
        """Read and discard until the client leaves or the proxy stops; never answer."""
        while not self._stopping.is_set():
            readable, _, _ = select.select([client], [], [], _POLL)
            if readable:
                try:
                    if not client.recv(_BUFFER):
                        return
                except OSError:
                    return

    def _pump(self, client: socket.socket, upstream: socket.socket, fault: _Fault) -> None:
        """Forward both ways until either side closes, the proxy stops or a cut is due."""
        cutting = fault.mode in ("close", "reset")
        budget = fault.after_bytes  # bytes still allowed in the cut direction
        if cutting and budget == 0:
            return
        peers = {client: (upstream, "up"), upstream: (client, "down")}
        while peers and not self._stopping.is_set():
            readable, _, _ = select.select(list(peers), [], [], _POLL)
            for source in readable:
                target, direction = peers[source]
                try:
                    data = source.recv(_BUFFER)
                except OSError:
                    return
                if not data:  # half-close: pass the FIN on, keep the other way open
                    del peers[source]
                    try:
                        target.shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    continue
                if fault.mode == "delay":
                    time.sleep(fault.delay)
                if cutting and direction == fault.direction:
                    data = data[:budget]
                    budget -= len(data)
                try:
                    target.sendall(data)
                except OSError:
                    return
                if cutting and budget == 0 and direction == fault.direction:
                    return
