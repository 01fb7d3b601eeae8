"""One PUT of a streamed pack, signed frame by frame (SigV4 streaming, ``aws-chunked``).

Private to :mod:`mkit_transport.transports.s3` (spec/SPEC-S3.md, S3-32).

*Why not botocore:* over plain http botocore signs the SHA-256 of the whole body in
the request's headers, so it must read a body twice, which a stream cannot be. The
other way, a multipart upload, makes the server pass over every byte a second time
when it joins the parts (moto spent 62 % of a 256 MiB upload there). With
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` the headers are signed alone (the seed) and
each frame of the body carries a signature chained from the one before, so the body
is sent as it is read, in one request, and a frame cannot be dropped, altered or
reordered without the server refusing the upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import re
import socket
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, urlsplit

import botocore.exceptions as bce

from ..errors import ConnectionFailed
from ..limits import CHUNK_SIZE
from ._s3_errors import mapped

__all__ = ["FRAME", "STREAMING_PAYLOAD", "StreamSigner", "encoded_length", "frames", "put_streamed"]

#: The request's ``x-amz-content-sha256``: the body is signed frame by frame.
STREAMING_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
#: Bytes of the pack per frame (the last may be shorter). S3 asks for at least 8 KiB;
#: one core chunk per frame lets a source of whole chunks through without a copy.
FRAME: Final = CHUNK_SIZE
#: An error reply is read up to this much (its XML names the code and message).
_ERROR_BODY_LIMIT: Final = 64 << 10

_CODE_RE: Final = re.compile(rb"<Code>([^<]{1,256})</Code>")
_MESSAGE_RE: Final = re.compile(rb"<Message>([^<]{1,1024})</Message>")
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
_SIGNATURE_FIELD: Final = ";chunk-signature="


def _frame_length(size: int) -> int:
    """Bytes on the wire of one frame of ``size`` data bytes."""
    return len(f"{size:x}") + len(_SIGNATURE_FIELD) + 64 + 2 + size + 2


def encoded_length(total: int, frame: int = FRAME) -> int:
    """The ``Content-Length`` of ``total`` bytes cut into frames, with the empty last frame."""
    full, rest = divmod(total, frame)
    length = full * _frame_length(frame) + _frame_length(0)
    return length + (_frame_length(rest) if rest else 0)


def _cut(chunks: Iterable[bytes], frame: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        if not buffer and len(chunk) == frame:
            yield chunk  # a whole frame already: no copy
            continue
        buffer += chunk
        if len(buffer) >= frame:
            whole = len(buffer) - len(buffer) % frame
            with memoryview(buffer) as view:
                for at in range(0, whole, frame):
                    yield bytes(view[at : at + frame])
            del buffer[:whole]
    if buffer:
        yield bytes(buffer)


def frames(chunks: Iterable[bytes], frame: int = FRAME) -> Iterator[bytes]:
    """``chunks`` cut into frames of exactly ``frame`` bytes (the last may be shorter).

    Each frame is given out only once the next one exists or ``chunks`` ended without
    raising. The core's checked stream raises at its end when the pack is short, long
    or mis-hashed: by then the last frame has not been sent, so the server holds
    fewer bytes than the request declared and cannot store the object, whatever it
    does with a body cut short.
    """
    held: bytes | None = None
    for piece in _cut(chunks, frame):
        if held is not None:
            yield held
        held = piece
    if held is not None:
        yield held


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class StreamSigner:
    """SigV4 for one streamed request: the seed over its headers, then each frame."""

    def __init__(self, access_key: str, secret_key: str, region: str, when: datetime) -> None:
        self.access_key = access_key
        self.amz_date = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        day = self.amz_date[:8]
        self.scope = f"{day}/{region}/s3/aws4_request"
        key = _hmac(f"AWS4{secret_key}".encode(), day)
        self._key = _hmac(_hmac(_hmac(key, region), "s3"), "aws4_request")

    def _sign(self, kind: str, lines: Iterable[str]) -> str:
        text = "\n".join([kind, self.amz_date, self.scope, *lines])
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def seed(self, method: str, path: str, headers: dict[str, str]) -> tuple[str, str]:
        """Sign ``headers`` (every one, names lower case); return (Authorization, seed)."""
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                "",  # no query
                "".join(f"{name}:{headers[name].strip()}\n" for name in names),
                ";".join(names),
                STREAMING_PAYLOAD,
            ]
        )
        seed = self._sign("AWS4-HMAC-SHA256", [hashlib.sha256(canonical.encode()).hexdigest()])
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{self.scope},"
            f"SignedHeaders={';'.join(names)},Signature={seed}"
        )
        return authorization, seed

    def frame(self, previous: str, data: bytes) -> str:
        """The signature of one frame, chained from the previous one (the seed first)."""
        digest = hashlib.sha256(data).hexdigest()
        return self._sign("AWS4-HMAC-SHA256-PAYLOAD", [previous, _EMPTY_SHA256, digest])


def _refusal(status: int, reason: str, body: bytes) -> bce.ClientError:
    """The server's error reply as botocore would raise it, for the one error mapping."""
    # Two fields read by pattern, not an XML parser: nothing in a hostile reply
    # (entities, depth) can cost more than the 64 KiB read.
    code, message = _CODE_RE.search(body), _MESSAGE_RE.search(body)
    error = {
        "Code": code[1].decode(errors="replace") if code else str(status),
        "Message": message[1].decode(errors="replace") if message else reason,
    }
    reply = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bce.ClientError(reply, "PutObject")  # type: ignore[arg-type]


@contextlib.contextmanager
def _wire(connection: http.client.HTTPConnection, what: str) -> Iterator[None]:
    """Map a failed send; when the server answered before it closed, map its answer.

    A server that refuses a request (bad signature, no bucket) may reply and close
    while the body is still being sent: its reply says more than the broken pipe.
    """
    try:
        yield
    except (OSError, http.client.HTTPException) as error:
        try:
            reply = connection.getresponse()
            status, reason, body = reply.status, reply.reason, reply.read(_ERROR_BODY_LIMIT)
        except (OSError, http.client.HTTPException):
            raise ConnectionFailed(f"{what}: {error}") from error
        if status < 300:
            raise ConnectionFailed(f"{what}: {error}") from error
        with mapped(what):
            raise _refusal(status, reason, body) from error


def put_streamed(
    endpoint: str,
    path: str,
    chunks: Iterable[bytes],
    total: int,
    signer: StreamSigner,
    *,
    token: str | None,
    timeouts: tuple[float, float],
    what: str,
) -> None:
    """PUT ``total`` bytes from ``chunks`` to ``path`` (``/bucket/key``) on a plain-http endpoint.

    The object exists only once the server has every frame and their signatures;
    a failure of ``chunks`` (raised to the caller) or of the wire leaves none.
    """
    where = urlsplit(endpoint)
    path = quote(path, safe="/~")
    headers = {
        "host": where.netloc,
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_length(total)),
        "x-amz-content-sha256": STREAMING_PAYLOAD,
        "x-amz-date": signer.amz_date,
        "x-amz-decoded-content-length": str(total),
    }
    if token:
        headers["x-amz-security-token"] = token
    authorization, signature = signer.seed("PUT", path, headers)
    connect_timeout, read_timeout = timeouts
    connection = http.client.HTTPConnection(
        where.hostname or "", where.port or 80, timeout=connect_timeout
    )
    try:
        with _wire(connection, what):
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(read_timeout)
            # Each frame is its own send: without this, Nagle may hold a frame's last
            # partial segment until the previous one is acknowledged (urllib3, under
            # botocore, sets it too).
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.putheader("authorization", authorization)
            connection.endheaders()
        for data in frames(chunks):  # the caller's failures are raised as they are
            signature = signer.frame(signature, data)
            with _wire(connection, what):
                connection.send(f"{len(data):x}{_SIGNATURE_FIELD}{signature}\r\n".encode())
                connection.send(data)
                connection.send(b"\r\n")
        signature = signer.frame(signature, b"")
        with _wire(connection, what):
            connection.send(f"0{_SIGNATURE_FIELD}{signature}\r\n\r\n".encode())
            reply = connection.getresponse()
            status, reason, body = reply.status, reply.reason, reply.read(_ERROR_BODY_LIMIT)
        if not 200 <= status < 300:
            with mapped(what):
                raise _refusal(status, reason, body)
    finally:
        connection.close()
