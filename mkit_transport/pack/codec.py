"""Per-entry codecs: thread-local zstd contexts and the checks an object's bytes pass.

zstd contexts are not thread safe and are costly to create, so each thread keeps
its own; every decoded object is counted against its declared length (a bomb stops
at the first byte over) and re-hashed against its id.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Callable, Iterator
from typing import IO, cast

import blake3
import zstandard

from ..errors import InvalidArgument, InvalidResponse
from .format import CHUNK, CODEC_ZSTD, MAX_WINDOW

_local = threading.local()


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Map codec and struct failures while reading a pack onto InvalidResponse."""
    try:
        yield
    except (zstandard.ZstdError, struct.error) as exc:
        raise InvalidResponse(f"{what}: {exc}") from exc


def decompressor() -> zstandard.ZstdDecompressor:
    """Return this thread's decompressor (contexts are not thread safe)."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    return dctx


def inflate_small(frame: bytes, raw_len: int, where: str) -> bytes | None:
    """Decompress a small entry in one call, allocating at most ``raw_len`` bytes.

    A frame that declares its content size (every frame our writer makes does) must
    declare ``raw_len``, so a bomb is refused before it allocates; a second frame or
    trailing bytes are refused too. Returns None for a frame that does not declare
    its size: the caller streams it through the bounded decoder instead.
    """
    with decoding(where):
        declared = zstandard.frame_content_size(frame)
        if declared == -1:
            return None
        if declared != raw_len:
            raise InvalidResponse(
                f"{where}: zstd frame declares {declared} bytes, the entry {raw_len}"
            )
        return decompressor().decompress(frame, allow_extra_data=False)


def compressor(level: int) -> zstandard.ZstdCompressor:
    """Return this thread's one-shot compressor (compressors are not thread safe)."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("cctx", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def check_level(level: int) -> int:
    """Refuse a level zstd would silently clamp, so a pack's bytes follow from its inputs."""
    if not isinstance(level, int) or not 1 <= level <= 19:
        raise InvalidArgument(f"zstd level must be an int from 1 to 19, got {level!r}")
    return level


class ObjectCheck:
    """Receives an object's raw bytes: counts, hashes, forwards, stops a bomb early."""

    def __init__(self, oid: bytes, raw_len: int, out: Callable[[bytes], object] | None) -> None:
        self.oid = oid
        self.raw_len = raw_len
        self.out = out
        self.hasher = blake3.blake3()
        self.length = 0

    def write(self, data: bytes) -> int:
        """Take the next decoded bytes; refuse the first byte past the declared length."""
        self.length += len(data)
        if self.length > self.raw_len:
            raise InvalidResponse(
                f"object {self.oid.hex()} inflates past its declared {self.raw_len} bytes"
            )
        self.hasher.update(data)
        if self.out is not None:
            self.out(data)
        return len(data)

    def done(self) -> None:
        """Check the whole object: its exact length, then its id."""
        if self.length != self.raw_len:
            raise InvalidResponse(
                f"object {self.oid.hex()} has {self.length} bytes, not its declared {self.raw_len}"
            )
        if self.hasher.digest() != self.oid:
            raise InvalidResponse(f"object {self.oid.hex()} does not hash to its id")


def new_decompressor() -> zstandard.ZstdDecompressor:
    """A zstd decompressor with the format's window bound (reusable, one thread at a time)."""
    return zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)


class Decoder:
    """Feeds an entry's stored bytes through its codec into an :class:`ObjectCheck`."""

    def __init__(
        self, codec: int, check: ObjectCheck, dctx: zstandard.ZstdDecompressor | None = None
    ) -> None:
        """Decode into ``check``, with ``dctx`` if given (else a new decompressor).

        A stream of objects passes one ``dctx`` (never shared between threads):
        making one per object cost ~10 us, 0.1 s of a 10,000-file pull.
        """
        self.check = check
        self.writer: zstandard.ZstdDecompressionWriter | None = None
        if codec == CODEC_ZSTD:
            if dctx is None:
                dctx = new_decompressor()
            self.writer = dctx.stream_writer(
                cast(IO[bytes], check), write_size=CHUNK, closefd=False
            )

    def feed(self, data: bytes) -> None:
        """Decode the next stored bytes (codec errors become InvalidResponse)."""
        with decoding(f"object {self.check.oid.hex()}"):
            if self.writer is None:
                self.check.write(data)
            else:
                self.writer.write(data)

    def done(self) -> None:
        """Flush the codec and check the object (a truncated frame fails here)."""
        with decoding(f"object {self.check.oid.hex()}"):
            if self.writer is not None:
                self.writer.flush()  # type: ignore[no-untyped-call]
        self.check.done()
