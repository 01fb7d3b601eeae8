"""The SSH server: one connection's frame loop over stdin/stdout (spec/SPEC-SSH.md).

``python -m mkit_transport serve ssh PATH`` runs :func:`serve` for a
:class:`~mkit_transport.FileTransport` rooted at ``PATH``; ``serve ssh --backend
URL`` for any :class:`~mkit_transport.Transport`. sshd starts one such process per
channel, so every connection has its own process and the backend orders their
ref writes (the file transport's lock, S3's conditional writes...).

A file store that is missing is created only by an explicit ``init`` request:
every other request on it is answered "no store", so a typo in a URL never
creates a store.

The loop trusts nothing it reads. Each frame is checked against the 1 MiB cap
before it is buffered, each connection has caps on frames, bytes and idle time
(no slow-loris), and an upload is stored only once the backend has seen every byte
in order and the BLAKE3 of the whole equals the key. A refused upload is drained
to its last chunk so the connection stays in step; when that is impossible (a
declared size over the cap, a non-chunk frame mid-upload) the server says why
and closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import os
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final, NoReturn

from .._version import __version__
from ..errors import (
    InvalidArgument,
    PayloadTooLarge,
    ProtocolError,
    RemoteError,
    ServerError,
    TransportError,
)
from ..hashes import Hash, PackKey
from ..protocol.ssh import (
    CHUNK_SIZE,
    MAX_FRAME,
    PACK_PAGE,
    VERSION,
    BadHeader,
    Disconnected,
    Frame,
    FrameReader,
    FrameTooLarge,
    WireError,
    digest,
    encode_frame,
    encode_listing,
    encode_pack_listing,
    error_fields,
    field_of,
    optional_digest,
)
from ..refs import RefWriteCondition
from ..retry import RetryPolicy
from ..transport import PACK_BODY_LIMIT, Transport
from ..transports.file import FileTransport

__all__ = ["EXIT_CAPPED", "EXIT_LOST", "EXIT_OK", "EXIT_PROTOCOL", "Limits", "serve"]

EXIT_OK: Final = 0  # "bye", or EOF between frames
EXIT_LOST: Final = 1  # the stream ended inside a frame: nobody left to tell
EXIT_PROTOCOL: Final = 2  # a frame the loop could not stay in step after
EXIT_CAPPED: Final = 3  # a per-connection cap or deadline was hit


@dataclass(frozen=True)
class Limits:
    """Per-connection caps. The defaults let one connection move many 4 GiB packs."""

    #: Largest declared upload.
    max_upload: int = PACK_BODY_LIMIT
    #: Frames one connection may send.
    max_frames: int = 1_000_000
    #: Bytes one connection may send.
    max_bytes: int = 64 << 30
    #: Seconds to wait for the next request.
    idle_timeout: float = 600.0
    #: Seconds to receive a whole frame once it has begun (and the hello).
    frame_timeout: float = 60.0


class _Stop(Exception):
    """End the connection with this exit status (after any frame already sent)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Input:
    """``recv(n)`` over a file: deadline-aware on a real descriptor (select + read)."""

    def __init__(self, rfile: BinaryIO) -> None:
        self.rfile = rfile
        self.deadline: float | None = None
        try:
            self.fd: int | None = rfile.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            self.fd = None

    def recv(self, size: int) -> bytes:
        if self.fd is None:
            return self.rfile.read(size)
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise TimeoutError("the client sent nothing in time")
        return os.read(self.fd, size)


class _Upload:
    """The chunk frames of one upload, checked as the backend consumes them.

    Here: every frame is a chunk, in order. The backend's ``upload_pack_stream``
    refuses a stream longer or shorter than its total, or mis-hashed, from inside the
    iteration (so before it commits), with the same ``ProtocolError``.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.received = 0
        self.finished = False  # the last chunk was read
        self.broken = False  # a frame that is not a chunk: the stream is out of step

    def _next(self) -> Frame | None:
        """The next frame, or None (and ``broken``) if its header is unreadable."""
        try:
            return self.connection.next_frame(self.connection.limits.frame_timeout)
        except BadHeader:
            self.broken = True  # not a chunk we can place: out of step
            return None

    def __iter__(self) -> Iterator[bytes]:
        while not self.finished:
            frame = self._next()
            if frame is None or frame.op != "chunk":
                self.broken = True
                got = "an unreadable header" if frame is None else repr(frame.op)
                raise ProtocolError(f"expected a chunk frame mid-upload, got {got}")
            offset = field_of(frame, "offset", int)
            self.finished = field_of(frame, "last", bool)
            if offset != self.received:
                raise ProtocolError(f"chunk at offset {offset}, expected {self.received}")
            self.received += len(frame.payload)
            if frame.payload:
                yield frame.payload

    def drain(self) -> None:
        """Read and discard chunks up to the last one, so the next frame is a request."""
        while not self.finished and not self.broken:
            frame = self._next()
            if frame is None or frame.op != "chunk":
                self.broken = True
            else:
                self.finished = field_of(frame, "last", bool)


class _Connection:
    """One client's session: the frame loop, its caps and its verbs."""

    def __init__(
        self,
        backend: Transport,
        rfile: BinaryIO,
        wfile: BinaryIO,
        limits: Limits,
        directory: str | None = None,
    ) -> None:
        self.backend = backend
        #: A file store's directory, until it is seen to exist: while it is missing,
        #: every request but ``init`` is refused. Checked again at each request, as
        #: another channel of the same client may have run ``init`` meanwhile.
        self.directory = directory
        self.input = _Input(rfile)
        self.reader = FrameReader(self.input.recv)
        self.wfile = wfile
        self.limits = limits
        self.frames = 0
        self.verbs: dict[str, Callable[[Frame], None]] = {
            "has": self._has,
            "get": self._get,
            "put": self._put,
            "read-ref": self._read_ref,
            "update-ref": self._update_ref,
            "list-refs": self._list_refs,
            "init": self._init,
            "list-packs": self._list_packs,
            "delete-pack": self._delete_pack,
            "delete-ref": self._delete_ref,
        }

    # -- framing ---------------------------------------------------------------------

    def send(self, op: str, payload: bytes | memoryview = b"", **fields: object) -> None:
        for piece in encode_frame(op, payload, **fields):
            self.wfile.write(piece)
        self.wfile.flush()

    def fail(self, error: TransportError) -> None:
        """Answer the current request with an error frame; the connection stays in step."""
        self.send("error", b"", **error_fields(error))

    def close_with(self, error: TransportError, status: int) -> NoReturn:
        """Say why, then end the connection: the stream cannot be trusted to be in step."""
        self.fail(error)
        raise _Stop(status)

    def next_frame(self, timeout: float, *, boundary: bool = False) -> Frame:
        """Read a frame within ``timeout``, enforcing the caps; EOF ends the connection."""
        self.input.deadline = time.monotonic() + timeout
        try:
            frame = self.reader.read()
        except TimeoutError as error:
            self.close_with(ServerError(f"closing: {error}", status=503), EXIT_CAPPED)
        except Disconnected as error:
            raise _Stop(EXIT_LOST) from error
        except BadHeader:
            # A whole frame was read: the stream is in step, the caller answers it.
            self._count()
            raise
        except WireError as error:
            # Past a bad length prefix nothing can be trusted: say why, then close.
            self.close_with(_wire_error(error), EXIT_PROTOCOL)
        if frame is None:
            raise _Stop(EXIT_OK if boundary else EXIT_LOST)
        self._count()
        return frame

    def _count(self) -> None:
        """Count a frame read, and close the connection once it is over its budget."""
        self.frames += 1
        if self.frames > self.limits.max_frames or self.reader.bytes_read > self.limits.max_bytes:
            budget = ServerError("this connection used up its budget; reconnect", status=503)
            self.close_with(budget, EXIT_CAPPED)

    # -- the loop --------------------------------------------------------------------

    def run(self, refusal: TransportError | None) -> int:
        try:
            self._hello(refusal)
            while True:
                try:
                    frame = self.next_frame(self.limits.idle_timeout, boundary=True)
                except BadHeader as error:
                    self.fail(_wire_error(error))  # SSH-2: answered, the session goes on
                    continue
                if frame.op == "bye":
                    return EXIT_OK
                verb = self.verbs.get(frame.op)
                try:
                    if verb is None:
                        raise ProtocolError(f"unknown or misplaced request {frame.op!r}")
                    verb(frame)
                except WireError as error:
                    self.fail(_wire_error(error))
                except TransportError as error:
                    self.fail(error)
        except _Stop as stop:
            return stop.status
        except (BrokenPipeError, ConnectionError):
            return EXIT_LOST

    def _hello(self, refusal: TransportError | None) -> None:
        try:
            frame: Frame | None = self.next_frame(self.limits.frame_timeout)
        except BadHeader:
            frame = None
        # type(): JSON true is not version 1, although True == 1 in Python.
        version = None if frame is None else frame.fields.get("version")
        if frame is None or frame.op != "hello" or type(version) is not int or version != VERSION:
            self.close_with(ProtocolError(f"expected hello version {VERSION}"), EXIT_PROTOCOL)
        if refusal is not None:
            self.close_with(refusal, EXIT_PROTOCOL)
        self.send(
            "hello",
            version=VERSION,
            server=f"mkit_transport/{__version__}",
            max_upload=self.limits.max_upload,
        )

    # -- verbs -----------------------------------------------------------------------

    def _store(self) -> Transport:
        """The backend, once the store is there; until then the "no store" error."""
        if self.directory is not None:
            if not os.path.isdir(self.directory):
                raise RemoteError(
                    f"no store at {self.directory} "
                    "(create it with 'python -m mkit_transport init URL')"
                )
            self.directory = None
        return self.backend

    def _init(self, frame: Frame) -> None:
        created = self.backend.init_store()
        self.directory = None
        self.send("store", created=created)

    def _has(self, frame: Frame) -> None:
        exists = self._store().pack_exists(digest(frame, "key", PackKey))
        self.send("exists", exists=exists)

    def _get(self, frame: Frame) -> None:
        key = digest(frame, "key", PackKey)
        offset = field_of(frame, "offset", int)
        # ``length`` (optional, SPEC-SSH 3.2): a ranged read of exactly that many bytes.
        length = None if frame.fields.get("length") is None else field_of(frame, "length", int)
        size = self._store().pack_size(key)
        if length is not None and offset + length > size:
            raise InvalidArgument(
                f"range of {length} bytes at offset {offset} runs past the end of pack"
                f" {key.hex()} ({size} bytes)"
            )
        if offset > size:
            raise ProtocolError(f"offset {offset} is past the end of a {size}-byte pack")
        end = size if length is None else offset + length
        chunks = self.backend.relay_pack_stream(key, offset)  # the client verifies
        if length is None:
            self.send("pack", size=size, offset=offset)
        else:
            self.send("pack", size=size, offset=offset, length=length)
        position = offset
        try:
            for piece in chunks:
                view = memoryview(piece)  # frames slice it without copying
                if length is not None:
                    view = view[: end - position]
                for start in range(0, len(view), CHUNK_SIZE):
                    part = view[start : start + CHUNK_SIZE]
                    self.send("chunk", part, offset=position, last=False)
                    position += len(part)
                if length is not None and position >= end:
                    break
        except TransportError as error:
            self.fail(error)  # ends the download: the client reads it as its answer
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.send("chunk", offset=position, last=True)

    def _put(self, frame: Frame) -> None:
        key = digest(frame, "key", PackKey)
        total = field_of(frame, "total", int)
        if total > self.limits.max_upload:
            # Draining up to `total` bytes would be the very cost the cap prevents.
            error = PayloadTooLarge(
                f"upload of {total} bytes is over this server's {self.limits.max_upload}",
                size=total,
                limit=self.limits.max_upload,
            )
            self.close_with(error, EXIT_PROTOCOL)
        if self.reader.bytes_read + total > self.limits.max_bytes:
            budget = ServerError("this upload would exceed the connection's budget", status=503)
            self.close_with(budget, EXIT_CAPPED)
        repair = frame.fields.get("repair", False)
        if not isinstance(repair, bool):  # before any chunk: the stream is out of step
            self.close_with(
                ProtocolError("put frame: field 'repair' must be a bool"), EXIT_PROTOCOL
            )
        upload = _Upload(self)
        outcome: TransportError | None = None
        try:
            store = self._store()
            (store.repair_pack_stream if repair else store.upload_pack_stream)(key, upload, total)
        except WireError as error:
            outcome = _wire_error(error)
        except TransportError as error:
            outcome = error
        upload.drain()
        if upload.broken:
            self.close_with(outcome or ProtocolError("upload out of step"), EXIT_PROTOCOL)
        if outcome is not None:
            raise outcome
        self.send("ok")

    def _read_ref(self, frame: Frame) -> None:
        value = self._store().read_ref(field_of(frame, "name", str))
        self.send("ref", value=value.hex() if value is not None else None)

    def _update_ref(self, frame: Frame) -> None:
        name = field_of(frame, "name", str)
        kind = field_of(frame, "condition", str)
        expected = optional_digest(frame, "expected", Hash)
        value = digest(frame, "value", Hash)
        # InvalidArgument (code invalid-argument) for an unknown kind, or expected without match.
        condition = RefWriteCondition(kind, expected)  # type: ignore[arg-type]
        self._store().update_ref(name, condition, value)
        self.send("ok")

    def _list_packs(self, frame: Frame) -> None:
        after = optional_digest(frame, "after", PackKey)
        limit = min(field_of(frame, "limit", int), PACK_PAGE)  # a short page is fine
        if limit < 1:
            raise WireError("list-packs frame: field 'limit' must be at least 1")
        listing = self._store().list_packs(after=after, page_size=limit)
        page = [(i.key, i.size, float(i.mtime)) for i in itertools.islice(listing, limit)]
        self.send("packs", encode_pack_listing(page))

    def _delete_pack(self, frame: Frame) -> None:
        self._store().delete_pack(digest(frame, "key", PackKey))
        self.send("ok")

    def _delete_ref(self, frame: Frame) -> None:
        name = field_of(frame, "name", str)
        kind = field_of(frame, "condition", str)
        expected = optional_digest(frame, "expected", Hash)
        # InvalidArgument for an unknown kind, expected without match, or MISSING.
        condition = RefWriteCondition(kind, expected)  # type: ignore[arg-type]
        self._store().delete_ref(name, condition)
        self.send("ok")

    def _list_refs(self, frame: Frame) -> None:
        prefix = field_of(frame, "prefix", str)
        refs = self._store().list_refs(prefix)
        head = prefix.rstrip("/") + "/" if prefix else ""
        pages = list(encode_listing([(head + ref.name, ref.hash) for ref in refs]))
        for index, page in enumerate(pages):
            self.send("refs", page, last=index == len(pages) - 1)


def _wire_error(error: WireError) -> TransportError:
    if isinstance(error, FrameTooLarge):
        return PayloadTooLarge(str(error), limit=MAX_FRAME)
    return ProtocolError(str(error))


#: Pipe capacity asked for on stdin/stdout: one frame fits, so sshd and this server
#: trade a frame per wake-up instead of a 64 KiB slice of one (a speed hint only).
PIPE_SIZE: Final = 1 << 20


def _widen_pipe(stream: BinaryIO) -> None:
    """Ask Linux for a pipe large enough for a whole frame; ignore any refusal."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        fcntl.fcntl(stream.fileno(), setpipe, PIPE_SIZE)


def serve(
    store: str | Transport,
    rfile: BinaryIO,
    wfile: BinaryIO,
    *,
    limits: Limits | None = None,
    refusal: TransportError | None = None,
) -> int:
    """Serve one store to one client over ``rfile``/``wfile``; return the exit status.

    ``store`` is a directory (served by a :class:`FileTransport` without retries:
    the client retries) or any open :class:`Transport`, which the caller closes.
    A file store whose directory is missing answers every request but ``init``
    with :class:`RemoteError` "no store". ``refusal``, when given, is sent in
    answer to the hello (e.g. the path is outside ``MKIT_SERVE_ROOT``), so the
    client gets a clean error instead of a dead pipe.
    """
    if isinstance(store, Transport):
        backend = store
    else:
        backend = FileTransport(store, retry=RetryPolicy(retries=0))
    directory = backend.root if isinstance(backend, FileTransport) else None
    for stream in (rfile, wfile):
        _widen_pipe(stream)
    return _Connection(backend, rfile, wfile, limits or Limits(), directory).run(refusal)
