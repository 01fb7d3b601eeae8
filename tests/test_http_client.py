"""Client unit tests: URL rules, token handling and the one error-mapping place.

Responses are built in memory here on purpose: this file checks only the mapping
table; every behaviour claim against a server lives in the other test_http_* files.
"""

from __future__ import annotations

import http.server
import io
import json
import pickle
import ssl
import threading
from collections.abc import Iterator

import pytest
import requests
import urllib3

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    InsecureScheme,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackKey,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RemoteError,
    RetryPolicy,
    ServerError,
    is_retryable,
    open_transport,
)
from mkit_transport.errors import TransportError
from mkit_transport.transports.http import HttpTransport, _mapped, _SizedBody, _status_error

_H = Hash.of(b"h")


def _response(
    status: int, body: object = b"", headers: dict[str, str] | None = None
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.raw = io.BytesIO(raw)
    response.headers.update(headers or {})
    response.reason = "test"
    return response


def _err(status: int, code: str = "", **extra: object) -> TransportError:
    body = {"error": code, "message": "m", **extra} if code else {}
    return _status_error(_response(status, body, {"Mkit-Error": code} if code else {}))


# -- the status table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_ref", InvalidRef),
        (400, "invalid_argument", InvalidArgument),
        (400, "pack_not_found", ProtocolError),  # a code counts only with its own status
        (400, "protocol_error", ProtocolError),
        (400, "invalid_request", ProtocolError),
        (401, "unauthorized", AccessDenied),
        (403, "forbidden", AccessDenied),
        (404, "pack_not_found", PackNotFound),
        (404, "ref_not_found", RefNotFound),
        (404, "not_found", RemoteError),
        (404, "", RemoteError),
        (405, "method_not_allowed", ProtocolError),
        (409, "ref_conflict", RefConflict),
        (411, "length_required", ProtocolError),
        (412, "ref_conflict", RefConflict),
        (413, "payload_too_large", PayloadTooLarge),
        (416, "range_not_satisfiable", ProtocolError),
        (429, "", ServerError),
        (500, "", ServerError),
        (500, "internal_error", ServerError),
        (500, "invalid_stored_value", InvalidResponse),
        (500, "remote_error", RemoteError),
        (502, "", ServerError),
        (503, "backend_unavailable", ServerError),
        (504, "", ServerError),
        (302, "", InvalidResponse),
    ],
)
def test_status_table(status: int, code: str, expected: type[TransportError]) -> None:
    error = _err(status, code)
    assert type(error) is expected
    retried = status == 429 or (status >= 500 and expected is ServerError)
    assert is_retryable(error) is retried
    if isinstance(error, ServerError):
        assert error.status == status


def test_conflicts_are_never_retried() -> None:
    for status in (409, 412):
        assert not is_retryable(_err(status, "ref_conflict"))


def test_conflict_carries_the_current_value() -> None:
    error = _err(412, "ref_conflict", current=_H.hex())
    assert isinstance(error, RefConflict)
    assert error.current == _H and error.known
    absent = _err(412, "ref_conflict", current=None)
    assert isinstance(absent, RefConflict)
    assert absent.current is None and absent.known
    unknown = _err(412, "ref_conflict")
    assert isinstance(unknown, RefConflict) and not unknown.known


def test_conflict_with_a_malformed_current_is_an_invalid_response() -> None:
    assert isinstance(_err(412, "ref_conflict", current="NOT-HEX"), InvalidResponse)


def test_retry_after_is_kept() -> None:
    error = _status_error(_response(429, b"", {"Retry-After": "7"}))
    assert isinstance(error, ServerError) and error.retry_after == 7.0


def test_garbage_error_bodies_still_map_by_status() -> None:
    assert isinstance(_status_error(_response(503, b"<html>oops</html>")), ServerError)
    assert isinstance(_status_error(_response(401, b"\xff\xfe not json")), AccessDenied)
    assert isinstance(_status_error(_response(409, b"[1, 2]")), RefConflict)


# -- foreign exceptions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (requests.ConnectionError("refused"), ConnectionFailed),
        (requests.ConnectTimeout("slow"), ConnectionFailed),
        (requests.ReadTimeout("slow"), ConnectionFailed),
        (requests.exceptions.ChunkedEncodingError("cut"), ConnectionFailed),
        (ConnectionResetError("reset"), ConnectionFailed),
        (requests.exceptions.InvalidURL("bad"), InvalidArgument),
        (requests.exceptions.SSLError("handshake cut"), ConnectionFailed),
        (
            requests.exceptions.SSLError(
                urllib3.exceptions.MaxRetryError(
                    None,  # type: ignore[arg-type]
                    "/",
                    urllib3.exceptions.SSLError(ssl.SSLCertVerificationError("bad cert")),
                )
            ),
            RemoteError,
        ),
    ],
)
def test_foreign_exceptions_are_mapped_and_chained(
    raised: BaseException, expected: type[TransportError]
) -> None:
    with pytest.raises(expected) as caught, _mapped("GET x"):
        raise raised
    assert caught.value.__cause__ is raised


def test_taxonomy_errors_pass_through_unchanged() -> None:
    original = ProtocolError("stream too long")
    with pytest.raises(ProtocolError) as caught, _mapped("PUT x"):
        raise original
    assert caught.value is original


# -- URLs and options ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mkit+http://127.0.0.1:8080/p",
        "mkit+http://127.8.9.10/p",
        "mkit+http://localhost:1/p",
        "mkit+http://[::1]:8080/p",
        "mkit+https://example.com/p",
        "mkit+https://example.com:8443/mount/p",
    ],
)
def test_accepted_urls(url: str) -> None:
    with open_transport(url) as transport:
        assert isinstance(transport, HttpTransport)
        assert transport.base_url.endswith("/p/")


@pytest.mark.parametrize(
    "url", ["mkit+http://example.com/p", "mkit+http://10.0.0.1/p", "mkit+http://[::2]/p"]
)
def test_plain_http_to_a_remote_host_is_insecure(url: str) -> None:
    with pytest.raises(InsecureScheme):
        open_transport(url)


@pytest.mark.parametrize(
    "url",
    [
        "mkit+https://example.com",
        "mkit+https://example.com/",
        "mkit+https://example.com/../p",
        "mkit+https://example.com/p/.hidden",
        "mkit+https://example.com/a b",
        "mkit+https://user:pw@example.com/p",
        "mkit+https://example.com:99999/p",
        "mkit+https://example.com/p?token=abc",
        "mkit+https://example.com/p?colour=blue",
        "mkit+https://example.com/p?timeout=soon",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(InvalidArgument):
        open_transport(url)


@pytest.mark.parametrize(
    "query", ["token=SECRET", "%74oken=SECRET", "tok%65n=SECRET", "retries=1&%74oken=SECRET"]
)
def test_a_token_in_the_url_is_refused_however_spelled(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    """Query keys are percent-decoded before use, so the refusal must see them decoded."""
    opened: list[object] = []
    monkeypatch.setattr(HttpTransport, "__init__", lambda *args, **kw: opened.append(args))
    with pytest.raises(InvalidArgument, match="token may not appear in a URL") as refused:
        open_transport(f"mkit+http://127.0.0.1:1/p?{query}")
    assert "SECRET" not in str(refused.value)
    assert opened == []


def test_options_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(retries=1)
    with open_transport(
        "mkit+https://example.com/p?timeout=9", timeout=2.5, retry=policy, token="t", verify=False
    ) as transport:
        assert isinstance(transport, HttpTransport)
        assert transport.timeout == (2.5, 2.5)
        assert transport.retry is policy
        assert transport._verify is False
    with open_transport("mkit+https://example.com/p", verify="/etc/ca.pem", retries=0) as other:
        assert isinstance(other, HttpTransport)
        assert other._verify == "/etc/ca.pem"
        assert other.retry.retries == 0


def test_token_is_redacted_and_taken_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MKIT_API_TOKEN", "env-secret")
    with open_transport("mkit+https://example.com/p") as transport:
        assert isinstance(transport, HttpTransport)
        assert transport._token == "env-secret"
        assert "env-secret" not in repr(transport) and "***" in repr(transport)
    with open_transport("mkit+https://example.com/p", token="opt-secret") as transport:
        assert isinstance(transport, HttpTransport)
        assert transport._token == "opt-secret"
        assert "opt-secret" not in repr(transport) and "opt-secret" not in str(transport)
    monkeypatch.delenv("MKIT_API_TOKEN")
    with open_transport("mkit+https://example.com/p") as transport:
        assert "token=None" in repr(transport)


def test_errors_pickle_for_process_races() -> None:
    error = _err(412, "ref_conflict", current=_H.hex())
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, RefConflict) and again.current == _H


# -- redirects (decided before any connection is made) ----------------------------


def _redirect(location: str) -> requests.Response:
    return _response(307, b"", {"Location": location})


def test_redirect_rules() -> None:
    with HttpTransport("https://example.com/p") as transport:
        follow = transport._redirect_target
        assert follow("https://example.com/p/x", _redirect("/q/x"), None) == (
            "https://example.com/q/x"
        )
        with pytest.raises(InsecureScheme):
            follow("https://example.com/p/x", _redirect("http://example.com/p/x"), None)
        with pytest.raises(InsecureScheme):
            follow("https://example.com/p/x", _redirect("http://127.0.0.1/p/x"), None)
        with pytest.raises(InvalidResponse):
            follow("https://example.com/p/x", _redirect("ftp://example.com/x"), None)
        with pytest.raises(RemoteError):
            follow("https://example.com/p/x", _redirect("/q"), _SizedBody([b"x"], 1))
    with HttpTransport("http://127.0.0.1:9/p") as local:
        with pytest.raises(InsecureScheme):
            local._redirect_target("http://127.0.0.1:9/p", _redirect("http://example.com/"), None)
        assert local._redirect_target("http://127.0.0.1:9/p", _redirect("http://[::1]:9/"), None)


class _OldServer(http.server.BaseHTTPRequestHandler):
    """A pack server older than closed ranges: only ``bytes=N-``, else a bare 416.

    ``lying`` makes its 206 name another range than the one asked for.
    """

    data = b"0123456789" * 300
    lying = False

    def do_GET(self) -> None:
        wanted = self.headers.get("Range", "")
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        if last and not self.lying:
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.data[int(first or 0) :]
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Mkit-Range-Start", first)
        if last:  # lying: a closed range answered as if it were open
            self.send_header("Content-Range", f"bytes {first}-{len(self.data) - 1}/*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def old_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        _OldServer.lying = False


def test_a_range_from_a_server_without_closed_ranges_is_cut_exactly(
    old_server: http.server.ThreadingHTTPServer,
) -> None:
    data = _OldServer.data
    key = PackKey.of(data)
    with HttpTransport(f"http://127.0.0.1:{old_server.server_address[1]}/p") as transport:
        assert transport.read_pack_range(key, 7, 1500) == data[7:1507]
        assert transport.read_pack_range(key, len(data) - 3, 3) == data[-3:]
        with pytest.raises(InvalidArgument, match=rf"\({len(data)} bytes\)"):
            transport.read_pack_range(key, len(data) - 3, 4)


def test_a_206_for_another_range_is_refused(old_server: http.server.ThreadingHTTPServer) -> None:
    _OldServer.lying = True
    key = PackKey.of(_OldServer.data)
    with (
        HttpTransport(f"http://127.0.0.1:{old_server.server_address[1]}/p") as transport,
        pytest.raises(InvalidResponse, match="got another range"),
    ):
        transport.read_pack_range(key, 7, 10)
