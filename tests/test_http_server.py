"""The server against raw HTTP: malformed requests, auth, caps, health, log, CLI.

Each refusal is checked twice: the status and stable error code, and that the
store on disk did not change.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from mkit_transport import (
    AccessDenied,
    Hash,
    PackKey,
    RefWriteCondition,
    open_transport,
)
from mkit_transport.cli import EXIT_CODES, main
from testbed.http_server import (
    READ_TOKEN,
    WRITE_TOKEN,
    HttpServer,
    running_http_server,
    start_http_server,
)
from testbed.waiting import wait_until

_A = Hash.of(b"a")
_DATA = b"some pack bytes"
_KEY = PackKey.of(_DATA)


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "refs.lock"
    }


@pytest.fixture
def project(http_server: HttpServer) -> str:
    name = f"srv-{uuid.uuid4().hex[:12]}"
    with open_transport(http_server.url(name)) as client:
        client.upload_pack(_DATA, _KEY)
        client.write_ref("refs/heads/main", _A)
    return name


def _code(response: requests.Response) -> str:
    body = response.json()
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Mkit-Error"] == body["error"]
    assert body["message"]
    return str(body["error"])


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("GET", "/P/refs/heads/../x", {}, None, 400, "invalid_ref"),
        ("GET", "/P/refs/heads/%2e%2e/%2e%2e/%2e%2e/x", {}, None, 400, "invalid_ref"),
        ("PUT", "/P/refs/%2e%2e/%2e%2e/escape", {}, _A.hex().encode() + b"\n", 400, "invalid_ref"),
        ("GET", "/P/refs/heads/ma%00in", {}, None, 400, "invalid_ref"),
        ("GET", "/%2e%2e/refs/heads/main", {}, None, 404, "not_found"),
        ("PUT", "/P/refs/heads/.x", {}, _A.hex().encode() + b"\n", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/x.lock", {}, _A.hex().encode() + b"\n", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/HEAD", {}, _A.hex().encode() + b"\n", 400, "invalid_ref"),
        ("GET", "/P/refs/heads//main", {}, None, 400, "invalid_ref"),
        ("GET", "/P/refs?prefix=heads", {}, None, 400, "invalid_ref"),
        ("GET", "/P/refs?prefix=refs&prefix=refs/x", {}, None, 400, "invalid_request"),
        ("GET", "/P/refs?other=1", {}, None, 400, "invalid_request"),
        ("GET", "/P/packs/" + "A" * 64, {}, None, 400, "invalid_ref"),
        ("PUT", "/P/packs/xyz", {}, _DATA, 400, "invalid_ref"),
        ("PUT", "/P/packs/" + Hash.of(b"other").hex(), {}, _DATA, 400, "protocol_error"),
        ("PUT", "/P/refs/heads/main", {}, b"not a hash value at all", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/main", {}, _A.hex().upper().encode() + b"\n", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/main", {}, b'{"garbage": [1, 2' + b" " * 48, 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/main", {}, b"x" * 5000, 413, "payload_too_large"),
        ("PUT", "/P/refs/heads/main", {"If-Match": "*"}, b"", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/main", {"If-Match": _A.hex()}, b"", 400, "invalid_ref"),
        ("PUT", "/P/refs/heads/main", {"If-None-Match": '"x"'}, b"", 400, "invalid_request"),
        (
            "PUT",
            "/P/refs/heads/main",
            {"If-None-Match": "*", "If-Match": f'"{_A.hex()}"'},
            _A.hex().encode() + b"\n",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/P/packs/" + _KEY.hex(),
            {"Range": "bytes=0-1,4-5"},
            None,
            416,
            "range_not_satisfiable",
        ),
        ("PATCH", "/P/packs/" + _KEY.hex(), {}, None, 405, "method_not_allowed"),
        ("PATCH", "/P/refs/heads/main", {}, None, 405, "method_not_allowed"),
        ("POST", "/P/refs", {}, b"{}", 405, "method_not_allowed"),
        ("GET", "/P", {}, None, 404, "not_found"),
        ("GET", "/.P/refs", {}, None, 404, "not_found"),
        ("GET", "/P/other/thing", {}, None, 404, "not_found"),
        ("GET", "/P/packs/" + Hash.of(b"absent").hex(), {}, None, 404, "pack_not_found"),
        ("GET", "/P/refs/heads/absent", {}, None, 404, "ref_not_found"),
    ],
)
def test_malformed_requests_get_the_right_status_and_change_nothing(
    http_server: HttpServer,
    project: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    before = _snapshot(http_server.root)
    # http.client sends the path exactly as written (requests would fold "..").
    connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=60)
    try:
        connection.request(method, path.replace("/P", f"/{project}", 1), body, headers)
        reply = connection.getresponse()
        payload = json.loads(reply.read())
    finally:
        connection.close()
    assert reply.status == status, payload
    assert reply.getheader("Mkit-Error") == payload["error"] == code
    assert payload["message"]
    assert _snapshot(http_server.root) == before


def _raw(server: HttpServer, request: bytes) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(request)
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        return reply.status, reply.getheader("Mkit-Error", "")


def test_oversized_declared_upload_is_refused_before_reading(
    http_server: HttpServer, project: str
) -> None:
    before = _snapshot(http_server.root)
    head = (
        f"PUT /{project}/packs/{Hash.of(b'huge').hex()} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {(4 << 30) + 1}\r\n\r\n"
    ).encode()
    assert _raw(http_server, head) == (413, "payload_too_large")
    assert _snapshot(http_server.root) == before


def test_upload_without_a_length_is_refused(http_server: HttpServer, project: str) -> None:
    before = _snapshot(http_server.root)
    response = requests.put(
        f"{http_server.base}/{project}/packs/{PackKey.of(b'abc').hex()}",
        data=iter([b"abc"]),  # a generator: sent chunked, without Content-Length
        timeout=60,
    )
    assert (response.status_code, _code(response)) == (411, "length_required")
    assert _snapshot(http_server.root) == before


def test_short_upload_stores_nothing(http_server: HttpServer, project: str) -> None:
    data = os.urandom(100_000)
    key = PackKey.of(data)
    head = (
        f"PUT /{project}/packs/{key.hex()} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=60) as sock:
        sock.sendall(head + data[:50_000])
        sock.shutdown(socket.SHUT_WR)  # the client goes away halfway
        sock.recv(100)
    with open_transport(http_server.url(project)) as client:
        assert not client.pack_exists(key)
    assert not any(key.hex() in p.name for p in (http_server.root / project).rglob("*"))


def test_health_and_range(http_server: HttpServer, project: str) -> None:
    health = requests.get(f"{http_server.base}/healthz", timeout=60)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    url = f"{http_server.base}/{project}/packs/{_KEY.hex()}"
    part = requests.get(url, headers={"Range": "bytes=5-"}, timeout=60)
    assert part.status_code == 206 and part.content == _DATA[5:]
    assert part.headers["Mkit-Range-Start"] == "5"
    past = requests.get(url, headers={"Range": "bytes=999-"}, timeout=60)
    assert past.status_code == 206 and past.content == b""
    ref = requests.get(f"{http_server.base}/{project}/refs/heads/main", timeout=60)
    assert ref.content == _A.hex().encode() + b"\n"
    assert ref.headers["ETag"] == f'"{_A.hex()}"'


def test_a_closed_range_is_206_with_content_range_and_416_past_the_end(
    http_server: HttpServer, project: str
) -> None:
    url = f"{http_server.base}/{project}/packs/{_KEY.hex()}"
    part = requests.get(url, headers={"Range": "bytes=5-9"}, timeout=60)
    assert part.status_code == 206 and part.content == _DATA[5:10]
    assert part.headers["Content-Range"] == f"bytes 5-9/{len(_DATA)}"
    assert part.headers["Content-Length"] == "5"
    assert part.headers["Mkit-Range-Start"] == "5"
    last = requests.get(url, headers={"Range": f"bytes=0-{len(_DATA) - 1}"}, timeout=60)
    assert last.status_code == 206 and last.content == _DATA
    for wanted in (f"bytes=5-{len(_DATA)}", f"bytes={len(_DATA)}-{len(_DATA) + 3}"):
        past = requests.get(url, headers={"Range": wanted}, timeout=60)
        assert past.status_code == 416, wanted
        assert past.headers["Content-Range"] == f"bytes */{len(_DATA)}"
        assert past.json()["error"] == "range_not_satisfiable"
        assert past.json()["size"] == len(_DATA)
    backwards = requests.get(url, headers={"Range": "bytes=9-5"}, timeout=60)
    assert backwards.status_code == 416 and "Content-Range" not in backwards.headers
    missing = f"{http_server.base}/{project}/packs/{PackKey.of(b'absent').hex()}"
    assert requests.get(missing, headers={"Range": "bytes=0-3"}, timeout=60).status_code == 404


def test_access_log_records_requests(http_server: HttpServer, project: str) -> None:
    status = requests.get(f"{http_server.base}/{project}/refs/heads/main", timeout=60).status_code
    line = f'"GET /{project}/refs/heads/main HTTP/1.1" {status}'
    # the worker writes its log line after the response
    wait_until(lambda: line in http_server.log_text(), 60, f"access log line {line}")


# -- auth ------------------------------------------------------------------------------


def test_tokens(http_token_server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = http_token_server
    url = server.url("auth")
    with open_transport(url, token=WRITE_TOKEN) as writer:
        writer.upload_pack(_DATA, _KEY)
        writer.write_ref("refs/heads/main", _A)
        assert writer.read_ref("refs/heads/main") == _A
    before = _snapshot(server.root)
    other = Hash.of(b"other")
    for token in (None, "wrong", READ_TOKEN):
        with open_transport(url, token=token) as client:
            with pytest.raises(AccessDenied):
                client.update_ref("refs/heads/main", RefWriteCondition.ANY, other)
            with pytest.raises(AccessDenied):
                client.write_ref("refs/heads/new", other)
            with pytest.raises(AccessDenied):
                client.upload_pack(b"new", PackKey.of(b"new"))
            if token == READ_TOKEN:
                assert client.read_ref("refs/heads/main") == _A
                assert client.download_pack(_KEY) == _DATA
            else:
                with pytest.raises(AccessDenied):
                    client.read_ref("refs/heads/main")
                with pytest.raises(AccessDenied):
                    client.pack_exists(_KEY)
    assert _snapshot(server.root) == before
    monkeypatch.setenv("MKIT_API_TOKEN", READ_TOKEN)
    with open_transport(url) as client:
        assert [r.name for r in client.list_refs("refs/heads")] == ["main"]
    denied = requests.put(f"{server.base}/auth/refs/heads/x", data=b"x", timeout=60)
    assert (denied.status_code, _code(denied)) == (401, "unauthorized")
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    forbidden = requests.put(
        f"{server.base}/auth/refs/heads/x",
        data=other.hex().encode() + b"\n",
        headers={"Authorization": f"Bearer {READ_TOKEN}"},
        timeout=60,
    )
    assert (forbidden.status_code, _code(forbidden)) == (403, "forbidden")
    assert requests.get(f"{server.base}/healthz", timeout=60).status_code == 200
    assert _snapshot(server.root) == before
    log = server.log_text()
    assert READ_TOKEN not in log and WRITE_TOKEN not in log


# -- CLI and backends ------------------------------------------------------------------


def test_cli_verbs_over_http(http_server: HttpServer, tmp_path: Path) -> None:
    url = http_server.url(f"cli-{uuid.uuid4().hex[:8]}")
    out = io.StringIO()
    assert main(["refs", "write", url, "refs/heads/main", _A.hex(), "--missing"], out) == 0
    assert (
        main(["refs", "write", url, "refs/heads/main", _A.hex(), "--missing"], out)
        == (EXIT_CODES["RefConflict"])
    )
    pack = tmp_path / "pack"
    pack.write_bytes(_DATA)
    assert main(["packs", "upload", url, str(pack)], out) == 0
    out = io.StringIO()
    assert main(["refs", "list", url, "--json"], out) == 0
    assert json.loads(out.getvalue()) == [{"name": "refs/heads/main", "hash": _A.hex()}]
    insecure = main(["refs", "list", "mkit+http://example.com/p"], io.StringIO())
    assert insecure == EXIT_CODES["InsecureScheme"]
    both = ["serve", "http", "--root", str(tmp_path), "--backend", "mkit+file:///x"]
    assert main(both, io.StringIO()) == EXIT_CODES["InvalidArgument"]
    with pytest.raises(SystemExit):
        main(["serve", "http", "--root", str(tmp_path), "--bind", "nonsense"], io.StringIO())


def test_cli_serve_help_in_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "serve", "http", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--backend" in done.stdout and "--write-token" in done.stdout


@pytest.mark.slow
@pytest.mark.server
def test_backend_url_serves_projects_as_sub_paths(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--backend", f"mkit+file://{store}?durable=false"]
    with running_http_server(tmp_path / "unused", args=args) as server:
        with open_transport(server.url("proj")) as client:
            client.upload_pack(_DATA, _KEY)
            client.write_ref("refs/heads/main", _A)
        assert (store / "proj" / "refs" / "heads" / "main" / ".ref").read_bytes() == (
            _A.hex().encode() + b"\n"
        )
        assert (store / "proj" / "packs" / _KEY.hex()[:2] / _KEY.hex()).read_bytes() == _DATA


@pytest.mark.server
def test_bad_backend_url_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="InvalidArgument"):
        start_http_server(tmp_path / "r", args=["--backend", "mkit+nope:///x"])


@pytest.mark.slow
def test_the_shipped_server_has_no_fault_switch(tmp_path: Path) -> None:
    """Fault injection lives in test support only: the old environment switch does nothing."""
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"status": 503, "count": 5}))
    env = {"MKIT_HTTP_TEST_FAULT_FILE": str(plan)}
    with running_http_server(tmp_path / "root", env=env) as server:
        with open_transport(server.url("proj")) as client:
            client.upload_pack(_DATA, _KEY)
            assert client.download_pack(_KEY) == _DATA
        assert "fault" not in server.log_text().lower()
    assert json.loads(plan.read_text())["count"] == 5
