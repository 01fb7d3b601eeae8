"""The SSH frame protocol (spec/SPEC-SSH.md), shared by the client and the server.

Pure encoding and decoding, no I/O policy: a frame is written to any byte sink and
read from any ``recv(n)`` callable, so the server's loop can be driven from a pipe,
a ``BytesIO`` or an SSH channel alike. A frame is::

    length      u32 big-endian: bytes that follow, at most MAX_FRAME (1 MiB)
    header_len  u16 big-endian: at most MAX_HEADER
    header      a JSON object, UTF-8: {"op": ..., fields}
    payload     raw bytes: pack data, or a ref listing

The length is checked against the cap before anything is allocated. Decoding
failures raise :class:`WireError` (the frame breaks the protocol) or
:class:`Disconnected` (the byte stream ended inside a frame); each side maps them
onto the taxonomy from its own point of view. Error *frames* carry a code that maps
one to one onto the taxonomy (:func:`error_fields`, :func:`error_from_fields`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ..errors import (
    AccessDenied,
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
from ..hashes import Hash, PackKey
from ..refs import is_valid_ref_name
from ..urls import is_valid_remote_path

__all__ = [
    "CHUNK_SIZE",
    "MAX_FRAME",
    "MAX_HEADER",
    "VERSION",
    "BadHeader",
    "Disconnected",
    "Frame",
    "FrameReader",
    "FrameTooLarge",
    "WireError",
    "decode_listing",
    "decode_pack_listing",
    "digest",
    "encode_frame",
    "encode_listing",
    "encode_pack_listing",
    "error_fields",
    "error_from_fields",
    "field_of",
    "is_valid_remote_path",
    "optional_digest",
]

#: The protocol version this module speaks (sent in both hellos).
VERSION: Final = 1
#: The hard cap on a frame, after its 4-byte length: 1 MiB.
MAX_FRAME: Final = 1 << 20
#: The cap on a frame's JSON header.
MAX_HEADER: Final = 16 << 10
#: The largest payload a sender puts in one pack chunk or listing page.
CHUNK_SIZE: Final = 960 << 10
#: The longest message kept in an error frame.
MAX_MESSAGE: Final = 1000

_PREFIX = struct.Struct(">IH")
_LISTING_LINE: Final = re.compile(rb"([0-9a-f]{64}) ([!-~]+)")
_PACK_LINE: Final = re.compile(rb"([0-9a-f]{64}) ([0-9]{1,19}) ([0-9]{1,12}(?:\.[0-9]{1,9})?)")
#: Most entries in one ``packs`` answer: at most 64 + 20 + 22 + 3 bytes a line, so a
#: page always fits one frame.
PACK_PAGE: Final = 8000

_D = TypeVar("_D", Hash, PackKey)
_T = TypeVar("_T")


class WireError(Exception):
    """A frame that breaks the protocol: bad length, bad header, bad field."""


class FrameTooLarge(WireError):
    """A frame (or a header) over its cap; refused before it is buffered."""


class BadHeader(WireError):
    """A complete, well-framed frame whose header is not a JSON object with an ``op``.

    The frame was read to its end, so the stream is still in step: a server answers
    it and goes on (SPEC-SSH SSH-2), unlike a bad length, past which nothing can be
    trusted.
    """


class Disconnected(Exception):
    """The byte stream ended inside a frame, or where a frame was due."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its ``op``, its other header fields and its payload."""

    op: str
    fields: dict[str, object] = field(default_factory=dict)
    payload: bytes = b""


def encode_frame(
    op: str, payload: bytes | memoryview = b"", **fields: object
) -> list[bytes | memoryview]:
    """Encode a frame as the pieces to write in order (the payload is not copied).

    Raises :class:`WireError` if the frame would break a cap: a sender never sends
    an oversized frame.
    """
    header = json.dumps({"op": op, **fields}, separators=(",", ":")).encode("utf-8")
    if len(header) > MAX_HEADER:
        raise FrameTooLarge(f"{op} frame header of {len(header)} bytes is over {MAX_HEADER}")
    length = _PREFIX.size - 4 + len(header) + len(payload)
    if length > MAX_FRAME:
        raise FrameTooLarge(f"{op} frame of {length} bytes is over the {MAX_FRAME}-byte cap")
    head = _PREFIX.pack(length, len(header)) + header
    return [head, payload] if payload else [head]


class FrameReader:
    """Reads frames from ``recv(n)``, which returns at most ``n`` bytes (``b""``: EOF)."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buffer = bytearray()
        #: Bytes of frames read so far (for per-connection caps).
        self.bytes_read = 0

    def _fill(self, size: int, *, at_boundary: bool) -> bool:
        """Buffer ``size`` bytes; False on EOF before the first byte of a frame."""
        while len(self._buffer) < size:
            data = self._recv(max(size - len(self._buffer), 1 << 16))
            if not data:
                if at_boundary and not self._buffer:
                    return False
                raise Disconnected(f"stream ended after {len(self._buffer)} of {size} bytes")
            self._buffer += data
        return True

    def read(self) -> Frame | None:
        """Return the next frame, or ``None`` on EOF exactly between two frames.

        Only the prefix and the header go through the buffer; the payload is taken
        as the pieces ``recv`` returns and joined once (a piece that is the whole
        payload is kept as it is). At pack speeds every copy of a megabyte frame
        shows: buffering the payload and copying it out again cost a third copy of
        every byte a download or an upload moved.
        """
        head = self.read_head()
        if head is None:
            return None
        frame, length = head
        if not length:
            return frame
        # A one-piece join returns that piece itself: no copy.
        return Frame(frame.op, frame.fields, b"".join(self.payload(length)))

    def read_head(self) -> tuple[Frame, int] | None:
        """Read the next frame's header and return it with the payload's length.

        The payload is left unread: the caller takes it with :meth:`payload`
        before it reads another frame. A download streams its chunk frames this
        way, so no frame is ever joined into one megabyte ``bytes``: a join under
        1 MiB holds the GIL, which the thread decrypting the SSH channel (the
        download's bottleneck) then waits for (issue 17). ``None`` on EOF exactly
        between two frames. A bad header raises :class:`BadHeader` only after the
        payload was read and dropped, so the stream is still in step.
        """
        if not self._fill(4, at_boundary=True):
            return None
        (length,) = struct.unpack_from(">I", self._buffer, 0)
        if length > MAX_FRAME:
            raise FrameTooLarge(f"frame length {length} is over the {MAX_FRAME}-byte cap")
        if length < 2:
            raise WireError(f"frame length {length} is too short for a header")
        end = 4 + length
        self._fill(6, at_boundary=False)
        (header_len,) = struct.unpack_from(">H", self._buffer, 4)
        if header_len > MAX_HEADER or 6 + header_len > end:
            raise WireError(f"header length {header_len} does not fit the frame")
        head_end = 6 + header_len
        self._fill(head_end, at_boundary=False)
        header_bytes = bytes(self._buffer[6:head_end])
        del self._buffer[:head_end]  # CPython drops a bytearray's head without moving the rest
        self.bytes_read += end
        payload_length = end - head_end
        try:
            header = json.loads(header_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            # RecursionError: nesting deeper than the parser's stack (a hostile header).
            self.skip(payload_length)
            raise BadHeader(f"frame header is not JSON: {error}") from error
        if not isinstance(header, dict) or not isinstance(header.get("op"), str):
            self.skip(payload_length)
            raise BadHeader("frame header is not an object with a string 'op'")
        op = header.pop("op")
        return Frame(op, header), payload_length

    def skip(self, length: int) -> None:
        """Read and drop a payload of ``length`` bytes (see :meth:`payload`)."""
        for _ in self.payload(length):
            pass

    def payload(self, length: int) -> Iterator[bytes]:
        """Yield the next ``length`` bytes: the buffered ones, then straight from ``recv``.

        The pieces are as ``recv`` returns them (never copied again). Never reads
        past ``length``: what follows belongs to the next frame.
        """
        buffered = min(len(self._buffer), length)
        if buffered:
            piece = bytes(self._buffer[:buffered])
            del self._buffer[:buffered]
            yield piece
        missing = length - buffered
        while missing > 0:
            data = self._recv(missing)
            if not data:
                raise Disconnected(f"stream ended {missing} bytes before the end of a frame")
            if len(data) > missing:  # a recv that broke its contract: keep the rest
                self._buffer += data[missing:]
                data = data[:missing]
            missing -= len(data)
            yield data


def field_of(frame: Frame, name: str, kind: type[_T]) -> _T:
    """Return a header field of the given type; ints must be non-negative.

    ``bool`` is not accepted where an ``int`` is due (JSON ``true`` is not a size).
    """
    value = frame.fields.get(name)
    if type(value) is not kind or (isinstance(value, int) and value < 0):
        raise WireError(f"{frame.op} frame: field {name!r} must be a {kind.__name__}")
    return value


def digest(frame: Frame, name: str, kind: type[_D]) -> _D:
    """Return a header field holding a digest as 64 lowercase hex."""
    text = field_of(frame, name, str)
    try:
        return kind.from_hex(text)
    except InvalidRef as error:
        raise WireError(f"{frame.op} frame: field {name!r}: {error}") from error


def optional_digest(frame: Frame, name: str, kind: type[_D]) -> _D | None:
    """As :func:`digest`, where JSON ``null`` (or no field) means none."""
    return None if frame.fields.get(name) is None else digest(frame, name, kind)


# -- ref listings ---------------------------------------------------------------------


def encode_listing(entries: list[tuple[str, Hash]]) -> Iterator[bytes]:
    """Yield listing pages (payloads): one ``<64 hex> <full name>`` line per ref."""
    page = bytearray()
    for name, value in entries:
        line = f"{value.hex()} {name}\n".encode("ascii")
        if len(page) + len(line) > CHUNK_SIZE:
            yield bytes(page)
            page.clear()
        page += line
    yield bytes(page)


def decode_listing(payload: bytes) -> list[tuple[str, Hash]]:
    """Parse one listing page; a malformed line is a :class:`WireError`."""
    found: list[tuple[str, Hash]] = []
    for line in payload.split(b"\n")[:-1] if payload else []:
        match = _LISTING_LINE.fullmatch(line)
        name = match.group(2).decode("ascii") if match else ""
        if match is None or not is_valid_ref_name(name):
            raise WireError(f"malformed listing line {line[:100]!r}")
        found.append((name, Hash(bytes.fromhex(match.group(1).decode("ascii")))))
    if payload and not payload.endswith(b"\n"):
        raise WireError("listing page does not end with a line feed")
    return found


# -- pack listings ---------------------------------------------------------------------


def encode_pack_listing(entries: list[tuple[PackKey, int, float]]) -> bytes:
    """One ``packs`` payload: a ``<64 hex> <size> <mtime seconds>`` line per pack."""
    return b"".join(
        f"{key.hex()} {size} {max(mtime, 0.0):.6f}\n".encode("ascii")
        for key, size, mtime in entries
    )


def decode_pack_listing(payload: bytes) -> list[tuple[PackKey, int, float]]:
    """Parse one ``packs`` payload; a malformed line is a :class:`WireError`."""
    if payload and not payload.endswith(b"\n"):
        raise WireError("pack listing does not end with a line feed")
    found: list[tuple[PackKey, int, float]] = []
    for line in payload.split(b"\n")[:-1] if payload else []:
        match = _PACK_LINE.fullmatch(line)
        if match is None:
            raise WireError(f"malformed pack listing line {line[:100]!r}")
        key = PackKey(bytes.fromhex(match.group(1).decode("ascii")))
        found.append((key, int(match.group(2)), float(match.group(3))))
    return found


# -- error frames -----------------------------------------------------------------------

#: Error codes and the taxonomy class each one means, both ways.
CODES: Final[dict[str, type[TransportError]]] = {
    "not-found": PackNotFound,
    "denied": AccessDenied,
    "remote": RemoteError,
    "conflict": RefConflict,
    "invalid-ref": InvalidRef,
    "invalid-argument": InvalidArgument,
    "invalid-response": InvalidResponse,
    "ref-not-found": RefNotFound,
    "protocol": ProtocolError,
    "too-large": PayloadTooLarge,
    "unavailable": ServerError,
}


def error_fields(error: TransportError) -> dict[str, object]:
    """The header fields of an ``error`` frame reporting ``error`` (server side).

    A class without a code of its own is ``unavailable`` when it is transient
    (``ConnectionFailed``, a 5xx) and ``remote`` otherwise.
    """
    from ..retry import is_retryable

    code = next((c for c, cls in CODES.items() if type(error) is cls), None)
    if code is None or code == "unavailable":
        code = "unavailable" if is_retryable(error) else "remote"
    fields: dict[str, object] = {"code": code, "message": str(error)[:MAX_MESSAGE]}
    if isinstance(error, RefConflict):
        fields["current"] = error.current.hex() if error.current is not None else None
        fields["known"] = error.known
    if isinstance(error, PayloadTooLarge):
        fields["size"], fields["limit"] = error.size, error.limit
    if isinstance(error, RefNotFound):
        fields["name"] = error.name
    return fields


def error_from_fields(frame: Frame) -> TransportError:
    """The taxonomy error an ``error`` frame reports (client side).

    An unknown code is a :class:`RemoteError` carrying the server's message (a newer
    server may add codes: one older than ``invalid-argument``, ``invalid-response``
    and ``ref-not-found`` sent ``invalid-ref`` or ``remote`` for those failures, which
    still map as they did); an ``unavailable`` server is a retryable 503.
    """
    code = field_of(frame, "code", str)
    message = f"remote: {field_of(frame, 'message', str)}"
    cls = CODES.get(code, RemoteError)
    if cls is RefConflict:
        current = optional_digest(frame, "current", Hash)
        known = frame.fields.get("known") is True or current is not None
        return RefConflict(message, current=current, known=known)
    if cls is PayloadTooLarge:
        size = frame.fields.get("size")
        limit = frame.fields.get("limit")
        return PayloadTooLarge(
            message,
            size=size if type(size) is int else None,
            limit=limit if type(limit) is int else None,
        )
    if cls is RefNotFound:
        name = frame.fields.get("name")
        return RefNotFound(message, name=name if type(name) is str else None)
    if cls is ServerError:
        return ServerError(message, status=503)
    return cls(message)


# -- remote paths -------------------------------------------------------------------------
