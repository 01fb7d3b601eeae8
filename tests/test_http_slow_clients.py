"""Slow and stalled clients cannot starve ``serve http`` (issue 15, item 1; HTTP-28).

Against a real server (2 workers, as the default): 20 raw connections trickle a
request head one byte at a time; meanwhile a normal client must get correct answers
(its timeout and the test's waits only bound the duration), and afterwards the
server must close every stalled connection itself (the header deadline). Under the
old sync workers the normal client got no answer at all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mkit_transport import Hash, PackKey, RefWriteCondition, open_transport
from testbed.http_server import HttpServer, running_http_server
from testbed.waiting import wait_until

pytestmark = pytest.mark.server

SLOW_CLIENTS = 20
HEADER_TIMEOUT = 15  # seconds; long enough that the slow clients hold while we work


class Trickler:
    """One raw connection sending a request head a byte every half second, never ending it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        self.closed_by_server = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.sock.sendall(b"a")
            except OSError:  # reset or broken pipe: the server closed it
                self.closed_by_server.set()
                return
            if self._server_hung_up():
                self.closed_by_server.set()
                return

    def _server_hung_up(self) -> bool:
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[HttpServer]:
    options = ["--header-timeout", str(HEADER_TIMEOUT)]
    with running_http_server(tmp_path / "root", options=options) as server:
        yield server


def test_normal_clients_are_served_while_slow_clients_hold_connections(
    guarded_server: HttpServer,
) -> None:
    slow = [Trickler(guarded_server.port) for _ in range(SLOW_CLIENTS)]
    try:
        time.sleep(1.5)  # every trickler has sent bytes: each holds a thread, not the poller
        started = time.monotonic()
        url = guarded_server.url("busy")
        # No retries: an answer must come the first time (the old server gave none).
        with open_transport(url, timeout=30, retries=0) as transport:
            data = b"served while slow clients hold connections" * 1000
            key = PackKey.of(data)
            transport.upload_pack_stream(key, [data], len(data))
            assert b"".join(transport.download_pack_stream(key)) == data
            transport.update_ref("refs/heads/main", RefWriteCondition.MISSING, Hash(bytes(key)))
            assert transport.read_ref("refs/heads/main") == Hash(bytes(key))
        served_in = time.monotonic() - started
        held = sum(not t.closed_by_server.is_set() for t in slow)
        # The slow clients were all still connected while the normal one was served
        # (unless the machine took longer than the header deadline to serve it).
        assert held == SLOW_CLIENTS or served_in >= HEADER_TIMEOUT, (held, served_in)

        # The server closes every stalled connection itself, at the header deadline.
        wait_until(
            lambda: all(t.closed_by_server.is_set() for t in slow),
            HEADER_TIMEOUT + 120,
            "the server closes connections whose head never ends",
        )
        assert "request head not complete in time" in guarded_server.log_text()
    finally:
        for trickler in slow:
            trickler.close()
