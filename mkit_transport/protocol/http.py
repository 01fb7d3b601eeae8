"""The HTTP error table (spec/SPEC-HTTP.md section 5), shared by the client and the server.

One table, :data:`ERROR_CODES`, says for every error code the status the server sends
it with and the taxonomy class the client raises for it. The server turns what its
backend raised into a status and code with :func:`failure_for` and looks a status up
with :func:`status_of`; the client turns a failure answer back into a taxonomy error
with :func:`error_for`. Both ends read the same rows, so they cannot drift apart, and
the spec's table is checked against this one by a test.

A code counts only with the status it belongs to: an answer whose code is unknown (a
newer server, a proxy, a test's injected fault) or comes with another status maps by
its status alone, as an older client would map it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import (
    AccessDenied,
    ConnectionFailed,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RemoteError,
    ServerError,
    TransportError,
)
from ..hashes import Hash

__all__ = [
    "ERROR_CODES",
    "ErrorCode",
    "error_for",
    "failure_for",
    "status_of",
]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One row: ``code`` is sent with ``status`` and read back as ``error``."""

    code: str
    status: int
    error: type[TransportError]


#: Every error code a server sends, its status, and the class the client raises.
ERROR_CODES: Final[tuple[ErrorCode, ...]] = (
    ErrorCode("invalid_ref", 400, InvalidRef),
    ErrorCode("invalid_argument", 400, InvalidArgument),
    ErrorCode("protocol_error", 400, ProtocolError),
    ErrorCode("invalid_request", 400, ProtocolError),
    ErrorCode("unauthorized", 401, AccessDenied),
    ErrorCode("forbidden", 403, AccessDenied),
    ErrorCode("pack_not_found", 404, PackNotFound),
    ErrorCode("ref_not_found", 404, RefNotFound),
    ErrorCode("not_found", 404, RemoteError),
    ErrorCode("method_not_allowed", 405, ProtocolError),
    ErrorCode("length_required", 411, ProtocolError),
    ErrorCode("ref_conflict", 412, RefConflict),
    ErrorCode("payload_too_large", 413, PayloadTooLarge),
    ErrorCode("request_line_too_long", 414, ProtocolError),
    ErrorCode("range_not_satisfiable", 416, ProtocolError),
    ErrorCode("expectation_failed", 417, ProtocolError),
    ErrorCode("header_fields_too_large", 431, ProtocolError),
    ErrorCode("invalid_stored_value", 500, InvalidResponse),
    ErrorCode("remote_error", 500, RemoteError),
    ErrorCode("internal_error", 500, ServerError),
    ErrorCode("not_implemented", 501, ProtocolError),
    ErrorCode("backend_unavailable", 503, ServerError),
)

_BY_CODE: Final = {row.code: row for row in ERROR_CODES}

_Kinds = type[TransportError] | tuple[type[TransportError], ...]

#: What the server reports a backend's failure as, first match wins. A backend's
#: ``AccessDenied`` is the *server's* credentials refused, not the client's, so it is
#: a ``remote_error`` (with everything else not listed), never a 401.
_BACKEND_CODES: Final[tuple[tuple[_Kinds, str], ...]] = (
    (PackNotFound, "pack_not_found"),
    (RefNotFound, "ref_not_found"),
    (RefConflict, "ref_conflict"),
    (ProtocolError, "protocol_error"),
    (PayloadTooLarge, "payload_too_large"),
    (InvalidRef, "invalid_ref"),
    (InvalidArgument, "invalid_argument"),
    (InvalidResponse, "invalid_stored_value"),
    ((ConnectionFailed, ServerError), "backend_unavailable"),
)


def status_of(code: str) -> int:
    """The status a server sends ``code`` with (a code not in the table is a bug)."""
    return _BY_CODE[code].status


def failure_for(error: TransportError) -> tuple[int, str]:
    """The status and code a server answers with when its backend raised ``error``."""
    code = next((c for kind, c in _BACKEND_CODES if isinstance(error, kind)), "remote_error")
    return status_of(code), code


def error_for(
    status: int,
    code: str,
    message: str,
    *,
    current: Hash | None = None,
    known: bool = False,
    retry_after: float | None = None,
) -> TransportError:
    """The taxonomy error for a failure answer (client side).

    ``current`` and ``known`` are a conflict's ref value and whether the server named
    one; ``retry_after`` is the ``Retry-After`` header in seconds. The code decides
    when it is in the table with this status; otherwise the status does.
    """
    row = _BY_CODE.get(code)
    kind = row.error if row is not None and row.status == status else _by_status(status)
    if kind is RefConflict:
        return RefConflict(message, current=current, known=known)
    if kind is ServerError:
        return ServerError(message, status=status, retry_after=retry_after)
    if kind is RemoteError and status == 404:
        return RemoteError(f"{message} (is this an mkit pack server?)")
    return kind(message)


def _by_status(status: int) -> type[TransportError]:
    """The class for a status whose code is not in the table (SPEC-HTTP's last rows)."""
    if status in (401, 403):
        return AccessDenied
    if status == 404:
        return RemoteError
    if status in (409, 412):
        return RefConflict
    if status == 413:
        return PayloadTooLarge
    if status == 429 or status >= 500:
        return ServerError
    if 400 <= status < 500:
        return ProtocolError
    return InvalidResponse
