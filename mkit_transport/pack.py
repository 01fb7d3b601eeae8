"""The pack format (spec/SPEC-PACK.md): a streaming writer and two verifying readers.

A pack holds content-addressed objects, each named by the BLAKE3 of its raw bytes::

    header   "MKPK" | u8 version=1 | u8 flags=0 | u16 reserved=0 | u32 entry_count
    entries  u8 kind | u8 codec | 32 id | u64 raw_len | u64 stored_len | stored bytes
    index    entry_count x (32 id | u64 entry offset), sorted by id, ids unique
    footer   u64 index_offset | u32 entry_count | "MKPE"
    trailer  BLAKE3 of every byte before it (32 bytes)

Integers are little endian. The pack key is the BLAKE3 of the whole pack, trailer
included. The writer streams into a seekable file (a spool), so building a pack of
any size holds a bounded amount of memory; :class:`PackVerifier` checks a pack fed
chunk by chunk (a download, a copy between remotes) and :class:`PackFile` reads one
object from a pack file through its index, without a scan. Both refuse a bad pack
with :class:`InvalidResponse` (a pack comes from a remote) and a pack whose declared
sizes exceed the caps with :class:`PayloadTooLarge`, before allocating anything.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, Final, cast

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
    "PackEntry",
    "PackFile",
    "PackSummary",
    "PackVerifier",
    "PackWriter",
    "PreparedObject",
    "prepare_object",
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

_local = threading.local()


@contextlib.contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Map codec and struct failures while reading a pack onto InvalidResponse."""
    try:
        yield
    except (zstandard.ZstdError, struct.error) as exc:
        raise InvalidResponse(f"{what}: {exc}") from exc


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


def prepare_object(kind: int, data: bytes, level: int = 3) -> PreparedObject:
    """Hash ``data`` and compress it if that saves bytes; safe to call from threads."""
    oid = blake3.blake3(data).digest()
    if len(data) > 64:
        packed = _compressor(_check_level(level)).compress(data)
        if len(packed) + 16 < len(data):
            return PreparedObject(kind, oid, len(data), CODEC_ZSTD, packed)
    return PreparedObject(kind, oid, len(data), CODEC_RAW, bytes(data))


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


class PackWriter:
    """Append objects to a pack in a seekable, empty binary file.

    Entries land in the order they are added; :meth:`finish` writes the index, the
    footer and the trailer and returns the pack's key. The output is a function of
    the objects, their order and the level only, so rebuilding the same pack gives
    the same key (an interrupted push finds the packs that already landed).
    """

    def __init__(self, out: BinaryIO, *, level: int = 3, threads: int = 0) -> None:
        self.out = out
        self.level = _check_level(level)
        self.threads = threads
        self._rows: list[tuple[bytes, int]] = []
        self._entries: list[PackEntry] = []
        self._ids: set[bytes] = set()
        self.out.write(_HEADER.pack(MAGIC, VERSION, 0, 0, 0))
        self.size = _HEADER.size

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
        offset = self.size
        self.out.write(_ENTRY.pack(obj.kind, obj.codec, obj.oid, obj.raw_len, len(obj.stored)))
        self.out.write(obj.stored)
        self.size += _ENTRY.size + len(obj.stored)
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
        offset = self.size
        self.out.seek(offset)
        self.out.write(b"\0" * _ENTRY.size)
        entry = self._stream_body(raw_len, source, compress=self._pays(source))
        if not entry.codec_is_raw and entry.stored_len >= entry.raw_len:
            self.out.seek(offset + _ENTRY.size)
            self.out.truncate()
            entry = self._stream_body(raw_len, source, compress=False)
        codec = CODEC_RAW if entry.codec_is_raw else CODEC_ZSTD
        result = PackEntry(entry.oid, kind, entry.raw_len, entry.stored_len)
        if result.oid in self._ids:  # a duplicate: drop what was written
            self.out.seek(offset)
            self.out.truncate()
            return result
        self.out.seek(offset)
        self.out.write(_ENTRY.pack(kind, codec, result.oid, result.raw_len, result.stored_len))
        self.out.seek(0, os.SEEK_END)
        self.size = offset + _ENTRY.size + result.stored_len
        self._record(offset, result)
        return result

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
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
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
        """Write the index, footer and trailer; return the pack's key and contents."""
        index_offset = self.size
        self.out.seek(index_offset)
        for oid, offset in sorted(self._rows):
            self.out.write(_ROW.pack(oid, offset))
        self.out.write(_FOOTER.pack(index_offset, len(self._rows), END_MAGIC))
        self.out.seek(0)
        self.out.write(_HEADER.pack(MAGIC, VERSION, 0, 0, len(self._rows)))
        self.out.flush()
        self.out.seek(0)
        hasher = Hasher()
        while chunk := self.out.read(CHUNK):
            hasher.update(chunk)
        trailer = bytes(hasher.pack_key())
        self.out.write(trailer)
        self.out.flush()
        hasher.update(trailer)
        return PackSummary(hasher.pack_key(), hasher.length, tuple(self._entries))


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
    against its id, the index against the entries, the trailer, no trailing bytes.
    Errors can surface from any call; nothing read is trustworthy before
    :meth:`finish` returns.
    """

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_object: int = MAX_OBJECT_SIZE
    ) -> None:
        self.max_entries = max_entries
        self.max_object = max_object
        self._hasher = Hasher()  # over everything but the trailer
        self._key = Hasher()  # over everything: the pack key
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
        self._key.update(view)
        if self._key.length > PACK_BODY_LIMIT:
            raise PayloadTooLarge("pack is over the size limit", limit=PACK_BODY_LIMIT)
        while view:
            if self._state == "data":
                take = view[: self._remaining]
                self._consume(take)
                assert self._decoder is not None
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
                if block != bytes(self._hasher.pack_key()):
                    raise InvalidResponse("pack trailer does not match its contents")
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
        self._decoder = _Decoder(codec, _ObjectCheck(oid, raw_len, None))
        self._remaining = stored_len
        self._state = "data"
        if stored_len == 0:
            self._end_entry()

    def _end_entry(self) -> None:
        assert self._decoder is not None and self._pending is not None
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
        if self._state != "done":
            raise InvalidResponse(f"pack is truncated (stopped in its {self._state})")
        return PackSummary(self._key.pack_key(), self._key.length, tuple(self._entries))


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
        callers write into a staging area they discard on error).
        """
        offset = self.find(oid)
        if offset is None:
            raise KeyError(oid.hex())
        f = self._file
        where = f"pack {self.path}, object {oid.hex()}"
        if offset + _ENTRY.size > self._index_offset:
            raise InvalidResponse(f"{where}: entry out of bounds")
        f.seek(offset)
        with _decoding(where):
            kind, codec, entry_id, raw_len, stored_len = _ENTRY.unpack(f.read(_ENTRY.size))
        _check_entry(kind, codec, raw_len, stored_len, max_size or MAX_OBJECT_SIZE, where)
        if entry_id != oid or offset + _ENTRY.size + stored_len > self._index_offset:
            raise InvalidResponse(f"{where}: entry does not match the index")
        decoder = _Decoder(codec, _ObjectCheck(oid, raw_len, out))
        remaining = stored_len
        while remaining:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise InvalidResponse(f"{where}: pack file is truncated")
            decoder.feed(chunk)
            remaining -= len(chunk)
        decoder.done()
        return kind, raw_len

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
