"""Requests gunicorn refuses before the application sees them get SPEC-HTTP's JSON errors.

gunicorn answers a request it cannot parse itself; it used to send an HTML page, not
the JSON body and ``Mkit-Error`` header every other failure carries (issue 15, item
7; SPEC-HTTP HTTP-32). Each case is sent over a raw socket to a real ``serve http``,
and a normal client must still be served afterwards.
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from mkit_transport import PackKey, ProtocolError, open_transport
from mkit_transport.protocol.http import error_for
from mkit_transport.server.worker import gunicorn_failure
from testbed.http_server import HttpServer

_OK_HEAD = "GET /healthz HTTP/1.1\r\nHost: x\r\n"

#: (what is wrong, the raw request, the status and code it must get)
CASES = [
    ("malformed request line", "GARBAGE\r\nHost: x\r\n\r\n", 400, "invalid_request"),
    ("request line too long", f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "request_line_too_long"),
    ("header line too long", f"{_OK_HEAD}X-Long: {'b' * 9000}\r\n\r\n", 431,
     "header_fields_too_large"),
    ("too many headers",
     _OK_HEAD + "".join(f"X-H{i}: {i}\r\n" for i in range(100)) + "\r\n", 431,
     "header_fields_too_large"),
    ("invalid header", f"{_OK_HEAD}No colon here\r\n\r\n", 400, "invalid_request"),
    ("unknown expectation", f"{_OK_HEAD}Expect: teapot\r\n\r\n", 417, "expectation_failed"),
    ("unknown transfer coding", f"{_OK_HEAD}Transfer-Encoding: br, chunked\r\n\r\n", 501,
     "not_implemented"),
]  # fmt: skip


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` and read the whole answer (the server closes after an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


@pytest.mark.parametrize(
    ("what", "request_text", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_requests_gunicorn_refuses_get_json_errors(
    http_server: HttpServer, what: str, request_text: str, status: int, code: str
) -> None:
    got_status, headers, body = _exchange(http_server.port, request_text.encode("latin-1"))
    assert got_status == status, (what, body)
    assert headers["Content-Type"] == "application/json"
    assert headers["Mkit-Error"] == code
    assert int(headers["Content-Length"]) == len(body)
    payload = json.loads(body)
    assert payload["error"] == code and payload["message"]
    assert b"<html" not in body.lower()
    # The client reads it as the table says; the server goes on serving normal clients.
    assert isinstance(error_for(got_status, code, payload["message"]), ProtocolError)
    name = f"refusals-{uuid.uuid4().hex[:12]}"
    with open_transport(http_server.url(name)) as client:
        data = f"after {what}".encode()
        client.upload_pack(data, PackKey.of(data))
        assert client.download_pack(PackKey.of(data)) == data


def test_a_status_outside_the_table_never_goes_out_with_a_foreign_code() -> None:
    """A status gunicorn may add later falls back to 400/500 so code and status agree."""
    status, answer = gunicorn_failure(418, "I'm a teapot", ValueError("new"))
    assert status == 400 and b"HTTP/1.1 400 Bad Request\r\n" in answer
    assert b"Mkit-Error: invalid_request\r\n" in answer
    status, answer = gunicorn_failure(502, "Bad Gateway", ValueError("secret detail"))
    assert status == 500 and b"Mkit-Error: internal_error\r\n" in answer
    assert b"secret detail" not in answer  # a server fault's text stays in the log
    _, answer = gunicorn_failure(400, "Bad Request", ValueError("x" * 10_000))
    assert len(answer) < 1024  # an echoed request line is cut
