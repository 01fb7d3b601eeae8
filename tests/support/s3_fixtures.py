"""Fixtures for the s3 tests (loaded by tests/conftest.py): two real S3 servers.

``moto_server`` (AWS's exact error semantics, any credentials) and SeaweedFS
``weed mini`` (an independent on-disk engine with real SigV4 authentication) are
started once per session on free loopback ports with temporary directories, waited
for with a bounded poll, and stopped by PID. ``s3_server`` is parametrized over
both, and ``s3_store`` gives each test a unique key prefix in a shared bucket, so
tests never see each other's objects.

Also here: :class:`ConditionStrippingProxy`, an HTTP proxy that forwards to a real
server but drops ``If-Match`` / ``If-None-Match``, the way some gateways silently
do; the probe must catch it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed.s3_servers import BUCKET, S3Server, start_moto, start_seaweedfs


@dataclass
class S3Store:
    """One test's corner of a server: a bucket and a unique key prefix."""

    server: S3Server
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"mkit+s3+http://127.0.0.1:{self.server.port}/{self.bucket}/{self.prefix}"

    @property
    def options(self) -> dict[str, object]:
        """Picklable credentials, so race workers in other processes can connect."""
        return {
            "access_key_id": self.server.access_key,
            "secret_access_key": self.server.secret_key,
        }

    def key(self, tail: str) -> str:
        return f"{self.prefix}/{tail}"

    def ref_key(self, name: str) -> str:
        """Where the transport stores a ref (spec/SPEC-S3.md, section 2)."""
        return f"{self.prefix}/{name}/.ref"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[S3Server]:
    server = start_seaweedfs()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real server in turn (started once per session)."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3Store:
    """A unique prefix in the shared bucket of each server, for one test."""
    return S3Store(s3_server, BUCKET, f"t-{uuid.uuid4().hex[:16]}")


class ConditionStrippingProxy:
    """An HTTP proxy to a real S3 server that silently drops conditional headers.

    It models the gateways that make conditional writes "always succeed": the
    request reaches the server as a plain, unconditional PUT. (Stripping a signed
    header breaks SigV4, so put it in front of moto, which does not check
    signatures.)
    """

    DROPPED = frozenset({"if-match", "if-none-match"})

    def __init__(self, target_port: int) -> None:
        target = target_port
        dropped = self.DROPPED

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                upstream = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ConditionStrippingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def stripping_proxy(moto_server: S3Server) -> Iterator[ConditionStrippingProxy]:
    """A condition-stripping gateway in front of moto."""
    with ConditionStrippingProxy(moto_server.port) as proxy:
        yield proxy
