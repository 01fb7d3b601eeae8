"""The one HTTP status<->error table: the spec says what the code does, both ends agree.

The wire test runs the real :class:`PackServer` under the standard library's WSGI
server in a thread, over a backend that fails on purpose, and a real
:class:`HttpTransport` client: what the backend raised must come out of the client
as the same class (SPEC-HTTP HTTP-21).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    MemoryTransport,
    PackKey,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RemoteError,
    ServerError,
    TransportError,
    open_transport,
)
from mkit_transport.protocol.http import (
    ERROR_CODES,
    ErrorCode,
    error_for,
    failure_for,
    status_of,
)
from mkit_transport.retry import is_retryable
from mkit_transport.server.http import PackServer

SPEC = (Path(__file__).parent.parent / "spec" / "SPEC-HTTP.md").read_text(encoding="utf-8")

#: One error of every class a backend can raise.
_EVERY_CLASS: list[TransportError] = [
    PackNotFound("p"),
    AccessDenied("a"),
    RemoteError("r"),
    RefConflict("c", current=Hash.of(b"c")),
    RefNotFound("n", name="refs/heads/gone"),
    InvalidRef("i"),
    InvalidArgument("v"),
    ConnectionFailed("f"),
    ServerError("s", status=502),
    InvalidResponse("b"),
    ProtocolError("x"),
    PayloadTooLarge("t"),
]


def _spec_rows() -> set[tuple[int, str, str, bool]]:
    """(status, code, client class, retried) for each row of the spec's code table."""
    table = SPEC[SPEC.index("## 5. Status codes") : SPEC.index("## 6.")]
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| `(\w+)[^|]*\| ([^|]+) \|$", table, re.M)
    return {(int(s), code, cls, retried.strip() == "yes") for s, code, cls, retried in rows}


def test_the_spec_table_is_the_code_table() -> None:
    """SPEC-HTTP's table and protocol/http.py's ERROR_CODES say the same, row for row."""
    code_rows = {
        (
            row.status,
            row.code,
            row.error.__name__,
            is_retryable(error_for(row.status, row.code, "m")),
        )
        for row in ERROR_CODES
    }
    assert _spec_rows() == code_rows
    assert len({row.code for row in ERROR_CODES}) == len(ERROR_CODES), "one row per code"


@pytest.mark.parametrize("row", ERROR_CODES, ids=lambda row: row.code)
def test_each_code_reads_back_as_its_class(row: ErrorCode) -> None:
    back = error_for(row.status, row.code, "message")
    assert type(back) is row.error
    assert status_of(row.code) == row.status


@pytest.mark.parametrize("error", _EVERY_CLASS, ids=lambda e: type(e).__name__)
def test_every_class_has_one_code(error: TransportError) -> None:
    """A backend failure goes out with the code of its class and reads back as it."""
    status, code = failure_for(error)
    back = error_for(status, code, str(error))
    if isinstance(error, ConnectionFailed | ServerError):
        assert (status, code, type(back)) == (503, "backend_unavailable", ServerError)
        assert is_retryable(back)
    elif isinstance(error, AccessDenied):
        # The backend refused the server's credentials, not the client's.
        assert (status, code, type(back)) == (500, "remote_error", RemoteError)
    else:
        assert type(back) is type(error)


# -- over the wire ---------------------------------------------------------------------


class _Failing(MemoryTransport):
    """A backend whose ref listing and pack reads raise whatever the test plans."""

    failure: TransportError | None = None

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        assert self.failure is not None
        raise self.failure

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        assert self.failure is not None
        raise self.failure


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing() -> Iterator[tuple[_Failing, str]]:
    backend = _Failing()
    app = PackServer(lambda name: backend)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend, f"mkit+http://127.0.0.1:{server.server_port}/proj?retries=0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument("the backend refused an argument"),
        RefNotFound("gone", name="refs/heads/gone"),
        InvalidResponse("malformed stored ref value of refs/heads/x"),
        InvalidRef("bad name"),
        PackNotFound("no pack"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_backend_failures_keep_their_class_over_http(
    failing: tuple[_Failing, str], error: TransportError
) -> None:
    backend, url = failing
    backend.failure = error
    with open_transport(url) as client:
        with pytest.raises(TransportError) as caught:
            client.list_refs("refs")
        assert type(caught.value) is type(error)
        assert str(error) in str(caught.value)
        with pytest.raises(TransportError) as streamed:
            client.download_pack(PackKey.of(b"x"))
        assert type(streamed.value) is type(error)
