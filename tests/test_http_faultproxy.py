"""The fault proxy does what each mode promises, checked against a real echo/sink server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from testbed.waiting import wait_until
from tests.support.faultproxy import FaultProxy


class _Backend:
    """A loopback server: records what each connection sent, answers with a fixed reply."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        got = bytearray()
        try:
            if self.reply:
                conn.sendall(self.reply)
            while chunk := conn.recv(65536):
                got += chunk
        except OSError:
            pass
        finally:
            self.received.append(bytes(got))
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def backend() -> Iterator[_Backend]:
    server = _Backend(reply=b"r" * 100_000)
    yield server
    server.close()


@pytest.fixture
def proxy(backend: _Backend) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", backend.port) as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    got = bytearray()
    while chunk := sock.recv(65536):
        got += chunk
    return bytes(got)


def test_pass_forwards_both_ways(proxy: FaultProxy, backend: _Backend) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"x" * 50_000)
        sock.shutdown(socket.SHUT_WR)
        assert _read_all(sock) == b"r" * 100_000
    wait_until(lambda: backend.received, 60, "the backend received the bytes")
    assert backend.received == [b"x" * 50_000]
    assert proxy.accepted == 1


def test_close_up_delivers_exactly_n_bytes_then_fin(proxy: FaultProxy, backend: _Backend) -> None:
    proxy.set_fault("close", after_bytes=1000, direction="up")
    with _connect(proxy) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"x" * 200_000)
        wait_until(lambda: backend.received, 60, "the backend received the bytes")
    assert backend.received == [b"x" * 1000]


def test_close_down_delivers_exactly_n_bytes_then_eof(proxy: FaultProxy) -> None:
    proxy.set_fault("close", after_bytes=777, direction="down")
    with _connect(proxy) as sock:
        assert _read_all(sock) == b"r" * 777


def test_reset_sends_rst(proxy: FaultProxy) -> None:
    proxy.set_fault("reset", after_bytes=10, direction="down")
    with _connect(proxy) as sock, pytest.raises(ConnectionResetError):
        _read_all(sock)


def test_blackhole_never_answers_nor_connects(proxy: FaultProxy, backend: _Backend) -> None:
    proxy.set_fault("blackhole")
    with _connect(proxy) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"hello?")
        with pytest.raises(TimeoutError):
            sock.recv(10)
    assert backend.connections == 0


def test_refuse_closes_at_once(proxy: FaultProxy, backend: _Backend) -> None:
    proxy.set_fault("refuse")
    with _connect(proxy) as sock, contextlib.suppress(ConnectionResetError):
        assert sock.recv(10) == b""
    assert backend.connections == 0
    assert proxy.accepted == 1


def test_delay_slows_each_chunk(proxy: FaultProxy) -> None:
    proxy.set_fault("delay", delay=0.2)
    started = time.monotonic()
    with _connect(proxy) as sock:
        sock.recv(10)
    assert time.monotonic() - started >= 0.2


def test_count_limits_the_fault_to_new_connections(proxy: FaultProxy, backend: _Backend) -> None:
    proxy.set_fault("refuse", count=2)
    for _ in range(2):
        with _connect(proxy) as sock, contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
    with _connect(proxy) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert _read_all(sock) == b"r" * 100_000
    assert proxy.accepted == 3
    assert backend.connections == 1


def test_rejects_unknown_settings(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.set_fault("explode")
    with pytest.raises(ValueError):
        proxy.set_fault("close", direction="sideways")
