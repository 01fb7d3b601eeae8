"""The pack format (spec/SPEC-PACK.md): a streaming writer and two verifying readers.

A pack holds content-addressed objects, each named by the BLAKE3 of its raw bytes::

    header   "MKPK" | u8 version=1 | u8 flags=0 | u16 reserved=0 | u32 entry_count
    entries  u8 kind | u8 codec | 32 id | u64 raw_len | u64 stored_len | stored bytes
    index    entry_count x (32 id | u64 entry offset), sorted by id, ids unique
    footer   u64 index_offset | u32 entry_count | "MKPE"
    trailer  BLAKE3 of every byte before it (32 bytes)

Integers are little endian. The pack key is the BLAKE3 of the whole pack, trailer
included. The writer streams into a seekable file (a spool), so building a pack of
any size holds a bounded amount of memory (a large file that does not compress
stays in place and is spliced in, see :func:`iter_pack`); :class:`PackVerifier` checks a pack fed
chunk by chunk (a download, a copy between remotes) and :class:`PackFile` reads one
object from a pack file through its index, without a scan (thread safe). Both refuse a bad pack
with :class:`InvalidResponse` (a pack comes from a remote) and a pack whose declared
sizes exceed the caps with :class:`PayloadTooLarge`, before allocating anything.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, BinaryIO, Final, cast

import blake3
import zstandard

from .errors import InvalidResponse, PayloadTooLarge
from .hashes import Hasher, PackKey
from .transport import PACK_BODY_LIMIT

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "KIND_BLOB",
    "KIND_TREE",
    "MAX_ENTRIES",
    "MAX_OBJECT_SIZE",
    "External",
    "PackEntry",
    "PackFile",
    "PackSummary",
    "PackVerifier",
    "PackWriter",
    "PreparedObject",
    "iter_pack",
    "prepare_object",
    "prepare_objects",
    "verify_pack_file",
]

MAGIC: Final = b"MKPK"
END_MAGIC: Final = b"MKPE"
VERSION: Final = 1
KIND_BLOB: Final = 1
KIND_TREE: Final = 2
KINDS: Final = frozenset({KIND_BLOB, KIND_TREE})
CODEC_RAW: Final = 0
CODEC_ZSTD: Final = 1

_HEADER = struct.Struct("<4sBBHI")
_ENTRY = struct.Struct("<BB32sQQ")
_ROW = struct.Struct("<32sQ")
_FOOTER = struct.Struct("<QI4s")
TRAILER_SIZE: Final = 32
#: The smallest pack: header, footer and trailer of a pack with no entries.
MIN_PACK: Final = _HEADER.size + _FOOTER.size + TRAILER_SIZE

#: Readers refuse a pack declaring more entries (bounds the index kept in memory).
MAX_ENTRIES: Final = 1 << 18
#: Readers refuse an object declaring more raw bytes (the zstd bomb guard).
MAX_OBJECT_SIZE: Final = PACK_BODY_LIMIT
#: Objects up to this size are compressed in one shot; larger ones are streamed.
SMALL_OBJECT: Final = 1 << 20
#: Largest zstd window a reader accepts (levels 1-19 stay well under it).
MAX_WINDOW: Final = 1 << 24
#: Read size when streaming a pack file.
CHUNK: Final = 1 << 20
#: Read size when compressing a file (zstd's input block: ~1.7x faster than 1 MiB).
ZSTD_FEED: Final = 128 << 10

_local = threading.local()


@contextlib.contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Map codec and struct failures while reading a pack onto InvalidResponse."""
    try:
        yield
    except (zstandard.ZstdError, struct.error) as exc:
        raise InvalidResponse(f"{what}: {exc}") from exc


def _decompressor() -> zstandard.ZstdDecompressor:
    """Return this thread's decompressor (contexts are not thread safe)."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    return dctx


def _inflate_small(frame: bytes, raw_len: int, where: str) -> bytes | None:
    """Decompress a small entry in one call, allocating at most ``raw_len`` bytes.

    A frame that declares its content size (every frame our writer makes does) must
    declare ``raw_len``, so a bomb is refused before it allocates; a second frame or
    trailing bytes are refused too. Returns None for a frame that does not declare
    its size: the caller streams it through the bounded decoder instead.
    """
    with _decoding(where):
        declared = zstandard.frame_content_size(frame)
        if declared == -1:
            return None
        if declared != raw_len:
            raise InvalidResponse(
                f"{where}: zstd frame declares {declared} bytes, the entry {raw_len}"
            )
        return _decompressor().decompress(frame, allow_extra_data=False)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """Return this thread's one-shot compressor (compressors are not thread safe)."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("cctx", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _check_level(level: int) -> int:
    if not isinstance(level, int) or not 1 <= level <= 19:
        raise ValueError(f"zstd level must be an int from 1 to 19, got {level!r}")
    return level


@dataclass(frozen=True, slots=True)
class PreparedObject:
    """A small object, hashed and compressed (when it pays), ready to be appended."""

    kind: int
    oid: bytes
    raw_len: int
    codec: int
    stored: bytes


def _prepared(kind: int, oid: bytes, data: bytes, frame: bytes | None) -> PreparedObject:
    """Keep the zstd frame only if it saves more than its entry's worth of bytes."""
    if frame is not None and len(frame) + 16 < len(data):
        return PreparedObject(kind, oid, len(data), CODEC_ZSTD, frame)
    return PreparedObject(kind, oid, len(data), CODEC_RAW, bytes(data))


def prepare_object(kind: int, data: bytes, level: int = 3) -> PreparedObject:
    """Hash ``data`` and compress it if that saves bytes; safe to call from threads."""
    oid = blake3.blake3(data).digest()
    frame = _compressor(_check_level(level)).compress(data) if len(data) > 64 else None
    return _prepared(kind, oid, data, frame)


def prepare_objects(
    items: Sequence[tuple[int, bytes]],
    level: int = 3,
    threads: int = 0,
    *,
    oids: Sequence[bytes | None] | None = None,
) -> list[PreparedObject]:
    """:func:`prepare_object` over a batch, compressing on ``threads`` zstd workers.

    One call into zstd for the whole batch: thousands of small files cost one
    release of the GIL instead of one each (per-object calls spent a fifth of a
    push's CPU time switching threads, measured in bench/bench_sync.py). An id
    given in ``oids`` is taken as is (the caller hashed those very bytes); None
    there, or no ``oids``, hashes the object.
    """
    level = _check_level(level)
    known = oids if oids is not None else [None] * len(items)
    ids = [
        oid if oid is not None else blake3.blake3(data).digest()
        for (_, data), oid in zip(items, known, strict=True)
    ]
    todo = [i for i, (_, data) in enumerate(items) if len(data) > 64]
    packed: list[bytes | None] = [None] * len(items)
    if len(todo) > 1 and threads > 1:
        frames = _compressor(level).multi_compress_to_buffer(
            [items[i][1] for i in todo], threads=threads
        )
        if len(frames) != len(todo):  # zstandard drops empty inputs; none are passed
            raise RuntimeError("zstd returned a different number of frames")
        for j, i in enumerate(todo):
            packed[i] = frames[j].tobytes()
    else:
        for i in todo:
            packed[i] = _compressor(level).compress(items[i][1])
    return [
        _prepared(kind, oid, data, frame)
        for (kind, data), oid, frame in zip(items, ids, packed, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One object as a pack lists it."""

    oid: bytes
    kind: int
    raw_len: int
    stored_len: int


@dataclass(frozen=True, slots=True)
class PackSummary:
    """What a written or verified pack holds."""

    key: PackKey
    size: int
    entries: tuple[PackEntry, ...]

    @property
    def raw_bytes(self) -> int:
        """Sum of the objects' raw sizes."""
        return sum(e.raw_len for e in self.entries)


class _Counted:
    """A write-only file wrapper counting bytes (the compressor's output)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


@dataclass(frozen=True, slots=True)
class External:
    """Pack bytes left in a source file instead of being copied into the spool.

    ``size`` bytes of ``path`` go in at ``spool_offset`` of the spool and must hash
    to ``oid``.
    """

    spool_offset: int
    path: str
    size: int
    oid: bytes


def iter_pack(spool: BinaryIO | str, externals: Sequence[External]) -> Iterator[bytes]:
    """Yield a pack's bytes: the spool with each external file spliced in at its offset.

    A file that shrank yields fewer bytes (the caller's length and key checks refuse
    the result); one that grew is read to its recorded size only.
    """
    for _ext, chunk in _segments(spool, externals):
        yield chunk


def _segments(
    spool: BinaryIO | str, externals: Sequence[External]
) -> Iterator[tuple[External | None, bytes]]:
    with contextlib.ExitStack() as stack:
        f = spool if not isinstance(spool, str) else stack.enter_context(open(spool, "rb"))
        f.seek(0)
        pos = 0
        for ext in [*externals, None]:
            stop = ext.spool_offset if ext is not None else None
            while stop is None or pos < stop:
                data = f.read(CHUNK if stop is None else min(CHUNK, stop - pos))
                if not data:
                    break
                pos += len(data)
                yield None, data
            if ext is not None:
                src = stack.enter_context(open(ext.path, "rb", buffering=0))
                remaining = ext.size
                while remaining and (data := src.read(min(CHUNK, remaining))):
                    remaining -= len(data)
                    yield ext, data
                src.close()


class PackWriter:
    """Append objects to a pack in a seekable, empty binary file (the spool).

    Entries land in the order they are added; :meth:`finish` writes the index, the
    footer and the trailer and returns the pack's key. The output is a function of
    the objects, their order and the level only, so rebuilding the same pack gives
    the same key (an interrupted push finds the packs that already landed).

    A large file that does not compress (:meth:`add_file`) is not copied into the
    spool: the pack references it (:attr:`externals`) and :func:`iter_pack` splices
    it in, so a push of incompressible data writes no spool bytes for it. Its bytes
    are hashed against its id when the pack is sealed (with the trailer), and the
    transport checks the key again when they are uploaded.
    """

    def __init__(self, out: BinaryIO, *, level: int = 3, threads: int = 0) -> None:
        self.out = out
        self.level = _check_level(level)
        self.threads = threads
        self._rows: list[tuple[bytes, int]] = []
        self._entries: list[PackEntry] = []
        self._ids: set[bytes] = set()
        #: Source files spliced into the pack, in order (see :func:`iter_pack`).
        self.externals: list[External] = []
        self.out.write(_HEADER.pack(MAGIC, VERSION, 0, 0, 0))
        self.size = _HEADER.size  # the pack's size so far
        self._spooled = _HEADER.size  # the bytes of it in the spool

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, oid: bytes) -> bool:
        return oid in self._ids

    def _record(self, offset: int, entry: PackEntry) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            raise ValueError(f"a pack holds at most {MAX_ENTRIES} entries")
        self._rows.append((entry.oid, offset))
        self._entries.append(entry)
        self._ids.add(entry.oid)

    def add_prepared(self, obj: PreparedObject) -> bool:
        """Append a prepared object; return False (and add nothing) if already present."""
        if obj.kind not in KINDS:
            raise ValueError(f"unknown object kind {obj.kind}")
        if obj.oid in self._ids:
            return False
        offset = self.size  # every method leaves the spool positioned at its end
        self.out.write(_ENTRY.pack(obj.kind, obj.codec, obj.oid, obj.raw_len, len(obj.stored)))
        self.out.write(obj.stored)
        grown = _ENTRY.size + len(obj.stored)
        self.size += grown
        self._spooled += grown
        self._record(offset, PackEntry(obj.oid, obj.kind, obj.raw_len, len(obj.stored)))
        return True

    def add_bytes(self, kind: int, data: bytes) -> bytes:
        """Append a small object given whole; return its id."""
        obj = prepare_object(kind, data, self.level)
        self.add_prepared(obj)
        return obj.oid

    def add_stream(
        self, kind: int, raw_len: int, source: Callable[[], Iterable[bytes]]
    ) -> PackEntry:
        """Append a large object read from ``source()`` (called once or twice).

        The object is compressed as it streams (with ``threads`` zstd workers) when a
        sample of its first megabyte compresses; if the whole does not end up
        smaller, it is rewritten raw from a second ``source()``. The returned entry
        carries the id and length actually read: the caller compares them with what
        it expected, since the source may have changed under it.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown object kind {kind}")
        offset, start = self.size, self._spooled
        self.out.seek(start)
        self.out.write(b"\0" * _ENTRY.size)
        entry = self._stream_body(raw_len, source, compress=self._pays(source))
        if not entry.codec_is_raw and entry.stored_len >= entry.raw_len:
            self.out.seek(start + _ENTRY.size)
            self.out.truncate()
            entry = self._stream_body(raw_len, source, compress=False)
        codec = CODEC_RAW if entry.codec_is_raw else CODEC_ZSTD
        result = PackEntry(entry.oid, kind, entry.raw_len, entry.stored_len)
        if result.oid in self._ids:  # a duplicate: drop what was written
            self.out.seek(start)
            self.out.truncate()
            return result
        self.out.seek(start)
        self.out.write(_ENTRY.pack(kind, codec, result.oid, result.raw_len, result.stored_len))
        self.size = offset + _ENTRY.size + result.stored_len
        self._spooled = start + _ENTRY.size + result.stored_len
        self.out.seek(self._spooled)
        self._record(offset, result)
        return result

    def add_file(self, kind: int, oid: bytes, size: int, path: str) -> bool:
        """Append the object held by file ``path`` (``size`` bytes hashing to ``oid``).

        Compressed through the spool when a sample of its first megabyte compresses
        and the whole shrinks; otherwise stored raw as an :class:`External`, read
        from ``path`` only when the pack is sealed and when it is uploaded. Returns
        False (adding nothing) for an object already in the pack.

        Raises:
            OSError: the file does not hold ``size`` bytes hashing to ``oid`` (it
                changed since it was hashed), here or when the pack is sealed.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown object kind {kind}")
        if oid in self._ids:
            return False
        # zstd's own input block size: larger writes stall its worker threads (measured).
        source = partial(_iter_path, path, ZSTD_FEED)
        offset, start = self.size, self._spooled
        if size > 64 and self._pays(source):
            self.out.seek(start)
            self.out.write(b"\0" * _ENTRY.size)
            body = self._stream_body(size, source, compress=True)
            if body.oid != oid or body.raw_len != size:
                self.out.seek(start)
                self.out.truncate()
                raise OSError(f"{path}: changed while it was being packed; push again")
            if body.stored_len < size:
                self.out.seek(start)
                self.out.write(_ENTRY.pack(kind, CODEC_ZSTD, oid, size, body.stored_len))
                self.size = offset + _ENTRY.size + body.stored_len
                self._spooled = start + _ENTRY.size + body.stored_len
                self.out.seek(self._spooled)
                self._record(offset, PackEntry(oid, kind, size, body.stored_len))
                return True
        self.out.seek(start)
        self.out.truncate()
        self.out.write(_ENTRY.pack(kind, CODEC_RAW, oid, size, size))
        self._spooled = start + _ENTRY.size
        self.externals.append(External(self._spooled, path, size, oid))
        self.size = offset + _ENTRY.size + size
        self._record(offset, PackEntry(oid, kind, size, size))
        return True

    def _pays(self, source: Callable[[], Iterable[bytes]]) -> bool:
        sample = bytearray()
        for chunk in source():
            sample += chunk
            if len(sample) >= SMALL_OBJECT:
                break
        if len(sample) <= 64:
            return False
        return len(_compressor(self.level).compress(bytes(sample))) < len(sample) * 0.97

    def _stream_body(
        self, raw_len: int, source: Callable[[], Iterable[bytes]], *, compress: bool
    ) -> _Streamed:
        hasher = blake3.blake3()
        length = 0
        if compress:
            cctx = zstandard.ZstdCompressor(level=self.level, threads=self.threads)
            counted = _Counted(self.out)
            writer = cctx.stream_writer(cast(IO[bytes], counted), size=raw_len, closefd=False)
            for chunk in source():
                hasher.update(chunk)
                length += len(chunk)
                writer.write(chunk)
            writer.flush(zstandard.FLUSH_FRAME)
            stored = counted.count
        else:
            for chunk in source():
                hasher.update(chunk)
                length += len(chunk)
                self.out.write(chunk)
            stored = length
        return _Streamed(hasher.digest(), length, stored, not compress)

    def finish(self) -> PackSummary:
        """Write the index, footer and trailer; return the pack's key and contents.

        The trailer pass reads the spool back (recently written: from the page
        cache) and every external file, checking each against its id.
        """
        index_offset = self.size
        self.out.seek(self._spooled)
        self.out.truncate()
        self.out.write(b"".join(_ROW.pack(oid, offset) for oid, offset in sorted(self._rows)))
        self.out.write(_FOOTER.pack(index_offset, len(self._rows), END_MAGIC))
        self.out.seek(0)
        self.out.write(_HEADER.pack(MAGIC, VERSION, 0, 0, len(self._rows)))
        self.out.flush()
        hasher = blake3.blake3()
        length = 0
        check: tuple[External, Any, list[int]] | None = None
        for ext, chunk in _segments(self.out, self.externals):
            if check is not None and ext is not check[0]:
                self._check_external(*check)
                check = None
            if ext is not None and check is None:
                check = (ext, blake3.blake3(), [0])
            if check is not None:
                check[1].update(chunk)
                check[2][0] += len(chunk)
            hasher.update(chunk)
            length += len(chunk)
        if check is not None:
            self._check_external(*check)
        for ext in self.externals:
            if ext.size == 0:  # an empty file yields no chunk
                self._check_external(ext, blake3.blake3(), [0])
        trailer = hasher.digest()
        self.out.seek(0, os.SEEK_END)
        self.out.write(trailer)
        self.out.flush()
        hasher.update(trailer)
        length += TRAILER_SIZE
        expected = self.size + len(self._rows) * _ROW.size + _FOOTER.size + TRAILER_SIZE
        if length != expected:
            raise OSError("a file of the pack changed while it was being packed; push again")
        return PackSummary(PackKey(hasher.digest()), length, tuple(self._entries))

    @staticmethod
    def _check_external(ext: External, hasher: Any, length: list[int]) -> None:
        if length[0] != ext.size or hasher.digest() != ext.oid:
            raise OSError(f"{ext.path}: changed while it was being packed; push again")


def _iter_path(path: str, chunk: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            yield data


@dataclass(frozen=True, slots=True)
class _Streamed:
    oid: bytes
    raw_len: int
    stored_len: int
    codec_is_raw: bool


class _ObjectCheck:
    """Receives an object's raw bytes: counts, hashes, forwards, stops a bomb early."""

    def __init__(self, oid: bytes, raw_len: int, out: Callable[[bytes], object] | None) -> None:
        self.oid = oid
        self.raw_len = raw_len
        self.out = out
        self.hasher = blake3.blake3()
        self.length = 0

    def write(self, data: bytes) -> int:
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
        if self.length != self.raw_len:
            raise InvalidResponse(
                f"object {self.oid.hex()} has {self.length} bytes, not its declared {self.raw_len}"
            )
        if self.hasher.digest() != self.oid:
            raise InvalidResponse(f"object {self.oid.hex()} does not hash to its id")


class _Decoder:
    """Feeds an entry's stored bytes through its codec into an :class:`_ObjectCheck`."""

    def __init__(self, codec: int, check: _ObjectCheck) -> None:
        self.check = check
        self.writer: zstandard.ZstdDecompressionWriter | None = None
        if codec == CODEC_ZSTD:
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
            self.writer = dctx.stream_writer(
                cast(IO[bytes], check), write_size=CHUNK, closefd=False
            )

    def feed(self, data: bytes) -> None:
        with _decoding(f"object {self.check.oid.hex()}"):
            if self.writer is None:
                self.check.write(data)
            else:
                self.writer.write(data)

    def done(self) -> None:
        with _decoding(f"object {self.check.oid.hex()}"):
            if self.writer is not None:
                self.writer.flush()  # type: ignore[no-untyped-call]
        self.check.done()


def _check_entry(
    kind: int, codec: int, raw_len: int, stored_len: int, max_object: int, where: str
) -> None:
    if kind not in KINDS:
        raise InvalidResponse(f"{where}: unknown object kind {kind}")
    if codec not in (CODEC_RAW, CODEC_ZSTD):
        raise InvalidResponse(f"{where}: unknown codec {codec}")
    if raw_len > max_object:
        raise PayloadTooLarge(
            f"{where}: object declares {raw_len} bytes, over the {max_object}-byte cap",
            size=raw_len,
            limit=max_object,
        )
    if codec == CODEC_RAW and stored_len != raw_len:
        raise InvalidResponse(f"{where}: a raw entry stores {stored_len} of {raw_len} bytes")
    if codec == CODEC_ZSTD and stored_len == 0:
        raise InvalidResponse(f"{where}: an empty zstd entry")


def _check_header(data: bytes, max_entries: int) -> int:
    magic, version, flags, reserved, count = _HEADER.unpack(data)
    if magic != MAGIC:
        raise InvalidResponse(f"not a pack: magic {magic!r}")
    if version != VERSION:
        raise InvalidResponse(f"unsupported pack version {version}")
    if flags or reserved:
        raise InvalidResponse("pack header has reserved bits set")
    if count > max_entries:
        raise PayloadTooLarge(
            f"pack declares {count} entries, over the cap of {max_entries}",
            size=count,
            limit=max_entries,
        )
    return int(count)


class PackVerifier:
    """Verify a pack fed as chunks, holding a bounded amount of memory.

    Feed every chunk to :meth:`feed`, then call :meth:`finish`, which returns the
    :class:`PackSummary` only if the whole pack checks: structure, caps, every object
    against its id (unless ``objects`` is false: then the caller verifies each object
    when it reads it, PACK-14), the index against the entries, the trailer, no
    trailing bytes. Errors can surface from any call; nothing read is trustworthy
    before :meth:`finish` returns.
    """

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_object: int = MAX_OBJECT_SIZE,
        objects: bool = True,
    ) -> None:
        self.max_entries = max_entries
        self.max_object = max_object
        #: Decompress and re-hash every object (False: structure, trailer and key
        #: only, for a caller that verifies each object when it reads it, see PACK-13).
        self.objects = objects
        # One pass over the bytes: the trailer is a digest of a copy of this state,
        # the pack key the digest after the trailer is fed too.
        self._hasher = blake3.blake3()
        self._length = 0
        self._key: PackKey | None = None
        self._buf = bytearray()
        self._state = "header"
        self._need = _HEADER.size
        self._count = 0
        self._entries: list[PackEntry] = []
        self._rows: list[tuple[bytes, int]] = []
        self._sorted: list[tuple[bytes, int]] = []
        self._offset = 0  # bytes consumed so far
        self._entry_offset = 0
        self._decoder: _Decoder | None = None
        self._remaining = 0
        self._pending: tuple[int, int, bytes, int, int] | None = None
        self._index_offset = 0
        self._row = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk of the pack."""
        view = memoryview(chunk).cast("B")
        self._length += len(view)
        if self._length > PACK_BODY_LIMIT:
            raise PayloadTooLarge("pack is over the size limit", limit=PACK_BODY_LIMIT)
        while view:
            if self._state == "data":
                take = view[: self._remaining]
                self._consume(take)
                if self._decoder is not None:
                    self._decoder.feed(bytes(take))
                self._remaining -= len(take)
                view = view[len(take) :]
                if self._remaining == 0:
                    self._end_entry()
                continue
            if self._state == "done":
                raise InvalidResponse("pack has bytes after its trailer")
            take = view[: self._need - len(self._buf)]
            self._buf += take
            view = view[len(take) :]
            if len(self._buf) == self._need:
                block = bytes(self._buf)
                self._buf.clear()
                if self._state != "trailer":
                    self._consume(block)
                self._step(block)

    def _consume(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._offset += len(data)

    def _step(self, block: bytes) -> None:
        with _decoding("malformed pack"):
            if self._state == "header":
                self._count = _check_header(block, self.max_entries)
                self._next_entry_or_index()
            elif self._state == "entry":
                self._start_entry(block)
            elif self._state == "index":
                self._check_row(block)
            elif self._state == "footer":
                self._check_footer(block)
            elif self._state == "trailer":
                if block != self._hasher.copy().digest():
                    raise InvalidResponse("pack trailer does not match its contents")
                self._hasher.update(block)
                self._key = PackKey(self._hasher.digest())
                self._state = "done"

    def _next_entry_or_index(self) -> None:
        if len(self._entries) < self._count:
            self._state, self._need = "entry", _ENTRY.size
            self._entry_offset = self._offset
        elif self._count:
            self._state, self._need = "index", _ROW.size
            self._index_offset = self._offset
            self._sorted = sorted(self._rows)
            self._rows = []
            self._row = 0
        else:
            self._index_offset = self._offset
            self._state, self._need = "footer", _FOOTER.size

    def _start_entry(self, block: bytes) -> None:
        kind, codec, oid, raw_len, stored_len = _ENTRY.unpack(block)
        where = f"entry {len(self._entries)}"
        _check_entry(kind, codec, raw_len, stored_len, self.max_object, where)
        if self._offset + stored_len > PACK_BODY_LIMIT:
            raise PayloadTooLarge(f"{where} runs past the pack size limit")
        self._pending = (kind, codec, oid, raw_len, stored_len)
        if self.objects:
            self._decoder = _Decoder(codec, _ObjectCheck(oid, raw_len, None))
        self._remaining = stored_len
        self._state = "data"
        if stored_len == 0:
            self._end_entry()

    def _end_entry(self) -> None:
        assert self._pending is not None
        if self._decoder is not None:
            self._decoder.done()
        kind, _codec, oid, raw_len, stored_len = self._pending
        self._entries.append(PackEntry(oid, kind, raw_len, stored_len))
        self._rows.append((oid, self._entry_offset))
        self._decoder = self._pending = None
        self._next_entry_or_index()

    def _check_row(self, block: bytes) -> None:
        row = _ROW.unpack(block)
        if row != self._sorted[self._row]:
            raise InvalidResponse(f"pack index row {self._row} does not match the entries")
        if self._row and row[0] == self._sorted[self._row - 1][0]:
            raise InvalidResponse("pack holds the same object twice")
        self._row += 1
        if self._row == self._count:
            self._sorted = []
            self._state, self._need = "footer", _FOOTER.size

    def _check_footer(self, block: bytes) -> None:
        index_offset, count, magic = _FOOTER.unpack(block)
        if magic != END_MAGIC or index_offset != self._index_offset or count != self._count:
            raise InvalidResponse("pack footer does not match its contents")
        self._state, self._need = "trailer", TRAILER_SIZE

    def finish(self) -> PackSummary:
        """Return the summary of a complete, valid pack (else InvalidResponse)."""
        if self._state != "done" or self._key is None:
            raise InvalidResponse(f"pack is truncated (stopped in its {self._state})")
        return PackSummary(self._key, self._length, tuple(self._entries))


def verify_pack_file(path: str | os.PathLike[str]) -> PackSummary:
    """Fully verify the pack stored in a file (streamed; bounded memory)."""
    verifier = PackVerifier()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            verifier.feed(chunk)
    return verifier.finish()


class PackFile:
    """Random access to the objects of a pack file through its index.

    Opening checks the header, footer and index (and, unless ``check_trailer`` is
    false, the trailer over the whole file); every object read is re-hashed
    against its id, so a pack damaged after it was verified is still caught.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_trailer: bool = True,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._fd = self._file.fileno()
        try:
            self._load(check_trailer, max_entries)
        except BaseException:
            self._file.close()
            raise

    def _load(self, check_trailer: bool, max_entries: int) -> None:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        self.size = size
        if size < MIN_PACK:
            raise InvalidResponse(f"pack {self.path} is {size} bytes: too short")
        with _decoding(f"pack {self.path}"):
            count = _check_header(f.read(_HEADER.size), max_entries)
            f.seek(size - TRAILER_SIZE - _FOOTER.size)
            index_offset, footer_count, magic = _FOOTER.unpack(f.read(_FOOTER.size))
        if magic != END_MAGIC or footer_count != count:
            raise InvalidResponse(f"pack {self.path}: bad footer")
        end = size - TRAILER_SIZE - _FOOTER.size
        if index_offset < _HEADER.size or index_offset + count * _ROW.size != end:
            raise InvalidResponse(f"pack {self.path}: index out of bounds")
        if check_trailer:
            f.seek(0)
            hasher = Hasher()
            remaining = size - TRAILER_SIZE
            while remaining:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    raise InvalidResponse(f"pack {self.path} shrank while read")
                hasher.update(chunk)
                remaining -= len(chunk)
            if f.read(TRAILER_SIZE) != bytes(hasher.pack_key()):
                raise InvalidResponse(f"pack {self.path}: trailer does not match")
        f.seek(index_offset)
        self._index = f.read(count * _ROW.size)
        self._index_offset = index_offset
        self.count = count
        previous = b""
        for i in range(count):
            oid = self._index[i * _ROW.size : i * _ROW.size + 32]
            if oid <= previous:
                raise InvalidResponse(f"pack {self.path}: index is not strictly sorted")
            previous = oid

    def ids(self) -> Iterator[bytes]:
        """Yield every object id, in id order."""
        for i in range(self.count):
            yield self._index[i * _ROW.size : i * _ROW.size + 32]

    def find(self, oid: bytes) -> int | None:
        """Return the offset of object ``oid``'s entry, or None (binary search)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            start = mid * _ROW.size
            here = self._index[start : start + 32]
            if here < oid:
                lo = mid + 1
            elif here > oid:
                hi = mid
            else:
                return int(_ROW.unpack_from(self._index, start)[1])
        return None

    def __contains__(self, oid: bytes) -> bool:
        return self.find(oid) is not None

    def read_object(
        self, oid: bytes, out: Callable[[bytes], object] | None, *, max_size: int | None = None
    ) -> tuple[int, int]:
        """Stream object ``oid``'s raw bytes to ``out``; return ``(kind, raw_len)``.

        Raises KeyError when the pack does not hold it, InvalidResponse when its entry
        is malformed or its bytes do not hash to ``oid`` (after ``out`` saw them:
        callers write into a staging area they discard on error). Safe to call from
        several threads at once (positioned reads, per-thread decompressors).
        """
        offset = self.find(oid)
        if offset is None:
            raise KeyError(oid.hex())
        where = f"pack {self.path}, object {oid.hex()}"
        if offset + _ENTRY.size > self._index_offset:
            raise InvalidResponse(f"{where}: entry out of bounds")
        with _decoding(where):
            kind, codec, entry_id, raw_len, stored_len = _ENTRY.unpack(
                self._pread(_ENTRY.size, offset, where)
            )
        _check_entry(kind, codec, raw_len, stored_len, max_size or MAX_OBJECT_SIZE, where)
        start = offset + _ENTRY.size
        if entry_id != oid or start + stored_len > self._index_offset:
            raise InvalidResponse(f"{where}: entry does not match the index")
        if stored_len <= SMALL_OBJECT and raw_len <= SMALL_OBJECT:
            data = self._pread(stored_len, start, where)
            if codec == CODEC_ZSTD:
                inflated = _inflate_small(data, raw_len, where)
                if inflated is None:  # a frame without its size: the bounded streaming path
                    decoder = _Decoder(codec, _ObjectCheck(oid, raw_len, out))
                    decoder.feed(data)
                    decoder.done()
                    return kind, raw_len
                data = inflated
            if len(data) != raw_len or bytes(PackKey.of(data)) != oid:
                raise InvalidResponse(f"{where}: does not hash to its id")
            if out is not None and data:
                out(data)
            return kind, raw_len
        decoder = _Decoder(codec, _ObjectCheck(oid, raw_len, out))
        remaining = stored_len
        while remaining:
            chunk = self._pread(min(CHUNK, remaining), start, where)
            decoder.feed(chunk)
            start += len(chunk)
            remaining -= len(chunk)
        decoder.done()
        return kind, raw_len

    def _pread(self, size: int, offset: int, where: str) -> bytes:
        """Read exactly ``size`` bytes at ``offset`` (no shared file position)."""
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise InvalidResponse(f"{where}: pack file is truncated")
        return data

    def read_bytes(self, oid: bytes, *, max_size: int) -> tuple[int, bytes]:
        """Return ``(kind, raw bytes)`` of a small object (at most ``max_size`` bytes)."""
        parts: list[bytes] = []
        kind, _ = self.read_object(oid, parts.append, max_size=max_size)
        return kind, b"".join(parts)

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> PackFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
