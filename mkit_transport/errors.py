"""The closed error taxonomy every transport maps its failures onto.

Callers branch on the class, never on the message: messages are advisory and may
change. The tree is flat on purpose, so that ``except TransportError`` catches
everything a transport can raise and each leaf means one thing everywhere::

    TransportError
     ├── PackNotFound       the pack or blob key is not stored on the remote
     ├── AccessDenied       credentials missing, wrong, or without the right
     ├── RemoteError        the remote failed in a way it explained (e.g. a
     │                      local store's I/O error, a path escaping the root)
     ├── RefConflict        a CAS write lost: .name, .current (Hash | None)
     ├── RefNotFound        a verb that needs a ref found it absent: .name
     ├── InvalidRef         a bad ref name, prefix or hash text, refused before
     │                      any I/O
     ├── InvalidArgument    a bad URL, option or argument (also a ValueError),
     │                      refused before any I/O
     ├── ConnectionFailed   the remote could not be reached or the connection
     │                      broke (retried)
     ├── ServerError        the remote answered with a failure status: .status
     │                      (retried when >= 500, 429, or marked .transient)
     ├── InvalidResponse    a stored or received value breaks the contract (a
     │                      ref value that does not decode, from a local file
     │                      or a remote; a digest mismatch; bad JSON)
     ├── ProtocolError      the request or stream itself breaks the protocol
     │                      (an upload whose bytes do not hash to its key, a
     │                      stream shorter or longer than declared)
     ├── PayloadTooLarge    a body is over a documented cap: .size, .limit
     └── InsecureScheme     a plaintext scheme towards a non-loopback host

Only :class:`ConnectionFailed` and :class:`ServerError` with a status of 429 or
>= 500 (or marked ``transient``) are transient (see :func:`mkit_transport.retry.is_retryable`).

Every error pickles with its attributes, so conformance races that run in worker
processes can report exactly what they saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hashes import Hash

__all__ = [
    "AccessDenied",
    "ConnectionFailed",
    "InsecureScheme",
    "InvalidArgument",
    "InvalidRef",
    "InvalidResponse",
    "PackNotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RefConflict",
    "RefNotFound",
    "RemoteError",
    "ServerError",
    "TransportError",
]


class TransportError(Exception):
    """Base of every error a transport raises at its boundary."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or type(self).__name__


class PackNotFound(TransportError):
    """The requested pack or blob key is not stored on the remote."""


class AccessDenied(TransportError):
    """The remote refused the credentials (or their absence) for this operation."""


class RemoteError(TransportError):
    """The remote failed in a way that is neither transient nor the caller's fault."""


class RefConflict(TransportError):
    """A conditional ref write lost: the ref did not hold what the condition required.

    ``current`` is the value the ref holds (``None`` when it is absent) where the
    transport can know it; ``known`` says whether ``current`` was actually observed.
    """

    def __init__(
        self,
        message: str = "",
        *,
        name: str | None = None,
        current: Hash | None = None,
        known: bool = False,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.current = current
        self.known = known or current is not None


class InvalidRef(TransportError):
    """A ref name, prefix, or hash or pack-key text is malformed; nothing was sent.

    Only that: a bad URL, option or argument is :class:`InvalidArgument`, and a
    stored value that does not decode is :class:`InvalidResponse`.
    """


class InvalidArgument(TransportError, ValueError):
    """A URL, an option or an argument is malformed or unusable; nothing was sent.

    Also a ``ValueError``, since that is what it is to Python code that knows
    nothing of transports. Refused before any I/O.
    """


class RefNotFound(TransportError):
    """A verb that needs a ref (pull, mirror, show, log) found it absent.

    ``name`` is the ref. Reading an absent ref with ``read_ref`` is not an error
    (it returns ``None``); this is for verbs that cannot go on without one.
    """

    def __init__(self, message: str = "", *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class ConnectionFailed(TransportError):
    """The remote could not be reached, or the connection broke mid-operation."""


class ServerError(TransportError):
    """The remote answered with a failure status (``status`` 0 when it has none).

    ``transient`` marks a status that is not 429 or 5xx but that the remote's own
    error code calls temporary (S3's 409 ``ConditionalRequestConflict``): the status
    stays truthful and the retry policy still retries it.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status: int = 0,
        retry_after: float | None = None,
        transient: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.transient = transient


class InvalidResponse(TransportError):
    """A stored or received value breaks the contract: bad ref value, digest mismatch, bad body.

    A ref file of a local store that does not decode is this too: the store is
    corrupt, which is never the caller's malformed input (:class:`InvalidRef`).
    """


class ProtocolError(TransportError):
    """The request or stream breaks the protocol (wrong digest, wrong length, bad chunk)."""


class PayloadTooLarge(TransportError):
    """A body exceeds a documented cap; refused before it was buffered."""

    def __init__(self, message: str = "", *, size: int | None = None, limit: int | None = None):
        super().__init__(message)
        self.size = size
        self.limit = limit


class InsecureScheme(TransportError):
    """A plaintext scheme was asked for towards a host that is not loopback."""
