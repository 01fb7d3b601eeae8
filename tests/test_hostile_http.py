"""Hostile HTTP: huge ranges sent to the server, deep JSON sent to the client.

Each case asserts the protocol answer (a JSON error or the specified empty 206, never a
500) or the taxonomy error, and that the store did not change (spec/SPEC-THREATS.md).
"""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mkit_transport import InvalidResponse, PackKey, open_transport
from mkit_transport.transports.http import HttpTransport
from testbed.http_server import HttpServer

_DATA = b"hostile range bytes"
_KEY = PackKey.of(_DATA)
HUGE = ["9223372036854775807", "9223372036854775808", "9999999999999999999"]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "refs.lock"
    }


@pytest.fixture
def project(http_server: HttpServer) -> str:
    name = f"hostile-{uuid.uuid4().hex[:12]}"
    with open_transport(http_server.url(name)) as client:
        client.upload_pack(_DATA, _KEY)
    return name


@pytest.mark.parametrize("offset", HUGE)
def test_a_huge_open_range_is_the_empty_206_not_a_500(
    http_server: HttpServer, project: str, offset: str
) -> None:
    before = _files(http_server.root)
    url = f"{http_server.base}/{project}/packs/{_KEY.hex()}"
    answer = requests.get(url, headers={"Range": f"bytes={offset}-"}, timeout=60)
    assert answer.status_code == 206 and answer.content == b""  # HTTP-9: empty past the end
    assert answer.headers["Mkit-Range-Start"] == offset
    assert _files(http_server.root) == before


@pytest.mark.parametrize("offset", HUGE)
def test_a_huge_closed_range_is_a_json_416(
    http_server: HttpServer, project: str, offset: str
) -> None:
    url = f"{http_server.base}/{project}/packs/{_KEY.hex()}"
    answer = requests.get(url, headers={"Range": f"bytes={offset}-{offset}"}, timeout=60)
    assert answer.status_code == 416
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"] == "range_not_satisfiable"


def test_a_huge_range_over_a_raw_socket_gets_no_html(http_server: HttpServer, project: str) -> None:
    request = (
        f"GET /{project}/packs/{_KEY.hex()} HTTP/1.1\r\nHost: x\r\n"
        f"Range: bytes={HUGE[0]}-\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=60) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 206 ")
    assert b"<html" not in reply.lower()


class _DeepJson(http.server.BaseHTTPRequestHandler):
    """A hostile server: every answer is JSON nested deeper than any parser's stack."""

    body = b'{"refs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def do_GET(self) -> None:
        status = 200 if "/refs" in self.path or "/packs?" in self.path else 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def deep_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DeepJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/p"
    finally:
        server.shutdown()
        server.server_close()


def test_deep_json_in_a_ref_listing_is_invalid_response(deep_server: str) -> None:
    with HttpTransport(deep_server) as client:
        with pytest.raises(InvalidResponse, match="malformed ref listing"):
            client.list_refs("refs/")
        with pytest.raises(InvalidResponse, match="malformed pack listing"):
            list(client.list_packs())
