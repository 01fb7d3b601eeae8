"""Building packs: objects prepared in batches, a streaming writer, external splices."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

import blake3
import zstandard

from ..hashes import Hasher
from .codec import check_level, compressor
from .format import (
    CHUNK,
    CODEC_RAW,
    CODEC_ZSTD,
    END_MAGIC,
    ENTRY,
    FOOTER,
    HEADER,
    KINDS,
    MAGIC,
    MAX_ENTRIES,
    ROW,
    SMALL_OBJECT,
    VERSION,
    ZSTD_FEED,
    PackEntry,
    PackSummary,
)


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
    """Hash ``data`` and compress it if that saves bytes; safe to call from threads.

    A batch of one: without ``threads`` the batch compresses each object on its
    own, so this is the same object :func:`prepare_objects` makes for it.
    """
    return prepare_objects([(kind, data)], level)[0]


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
    level = check_level(level)
    known = oids if oids is not None else [None] * len(items)
    ids = [
        oid if oid is not None else blake3.blake3(data).digest()
        for (_, data), oid in zip(items, known, strict=True)
    ]
    todo = [i for i, (_, data) in enumerate(items) if len(data) > 64]
    packed: list[bytes | None] = [None] * len(items)
    if len(todo) > 1 and threads > 1:
        frames = compressor(level).multi_compress_to_buffer(
            [items[i][1] for i in todo], threads=threads
        )
        if len(frames) != len(todo):  # zstandard drops empty inputs; none are passed
            raise RuntimeError("zstd returned a different number of frames")
        for j, i in enumerate(todo):
            packed[i] = frames[j].tobytes()
    else:
        for i in todo:
            packed[i] = compressor(level).compress(items[i][1])
    return [
        _prepared(kind, oid, data, frame)
        for (kind, data), oid, frame in zip(items, ids, packed, strict=True)
    ]


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
                with open(ext.path, "rb", buffering=0) as src:
                    remaining = ext.size
                    while remaining and (data := src.read(min(CHUNK, remaining))):
                        remaining -= len(data)
                        yield ext, data


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
        self.level = check_level(level)
        self.threads = threads
        self._rows: list[tuple[bytes, int]] = []
        self._entries: list[PackEntry] = []
        self._ids: set[bytes] = set()
        #: Source files spliced into the pack, in order (see :func:`iter_pack`).
        self.externals: list[External] = []
        self.out.write(HEADER.pack(MAGIC, VERSION, 0, 0, 0))
        self.size = HEADER.size  # the pack's size so far
        self._spooled = HEADER.size  # the bytes of it in the spool

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
        self.out.write(ENTRY.pack(obj.kind, obj.codec, obj.oid, obj.raw_len, len(obj.stored)))
        self.out.write(obj.stored)
        grown = ENTRY.size + len(obj.stored)
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
        entry = self._stream_entry(start, raw_len, source, compress=self._pays(source))
        if not entry.codec_is_raw and entry.stored_len >= entry.raw_len:
            self._drop_from(start + ENTRY.size)
            entry = self._stream_body(raw_len, source, compress=False)
        codec = CODEC_RAW if entry.codec_is_raw else CODEC_ZSTD
        result = PackEntry(entry.oid, kind, entry.raw_len, entry.stored_len)
        if result.oid in self._ids:  # a duplicate: drop what was written
            self._drop_from(start)
            return result
        self._commit_spooled(offset, start, codec, result)
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
            body = self._stream_entry(start, size, source, compress=True)
            if body.oid != oid or body.raw_len != size:
                self._drop_from(start)
                raise OSError(f"{path}: changed while it was being packed; push again")
            if body.stored_len < size:
                self._commit_spooled(
                    offset, start, CODEC_ZSTD, PackEntry(oid, kind, size, body.stored_len)
                )
                return True
        self._drop_from(start)
        self.out.write(ENTRY.pack(kind, CODEC_RAW, oid, size, size))
        self._spooled = start + ENTRY.size
        self.externals.append(External(self._spooled, path, size, oid))
        self.size = offset + ENTRY.size + size
        self._record(offset, PackEntry(oid, kind, size, size))
        return True

    def _drop_from(self, start: int) -> None:
        """Cut the spool back to ``start``, leaving it positioned there.

        Undoes a streamed body that is rewritten raw, a duplicate, or a file that
        changed: the spool must hold only committed entries, since :meth:`finish`
        and the next entry start at its end.
        """
        self.out.seek(start)
        self.out.truncate()

    def _commit_spooled(self, offset: int, start: int, codec: int, entry: PackEntry) -> None:
        """Keep an entry streamed into the spool at ``start`` (``offset`` in the pack).

        Its body's id and length are known only once it is written, so the header
        goes over the placeholder left at ``start``; the spool is left at its end,
        where every method expects it.
        """
        self.out.seek(start)
        self.out.write(ENTRY.pack(entry.kind, codec, entry.oid, entry.raw_len, entry.stored_len))
        self.size = offset + ENTRY.size + entry.stored_len
        self._spooled = start + ENTRY.size + entry.stored_len
        self.out.seek(self._spooled)
        self._record(offset, entry)

    def _pays(self, source: Callable[[], Iterable[bytes]]) -> bool:
        sample = bytearray()
        for chunk in source():
            sample += chunk
            if len(sample) >= SMALL_OBJECT:
                break
        if len(sample) <= 64:
            return False
        return len(compressor(self.level).compress(bytes(sample))) < len(sample) * 0.97

    def _stream_entry(
        self,
        start: int,
        raw_len: int,
        source: Callable[[], Iterable[bytes]],
        *,
        compress: bool,
    ) -> _Streamed:
        """Stream an entry's body into the spool at ``start``, behind a placeholder header.

        The header holds the body's id and stored length, known only once the body
        is written: :meth:`_commit_spooled` writes it over the placeholder.
        """
        self.out.seek(start)
        self.out.write(b"\0" * ENTRY.size)
        return self._stream_body(raw_len, source, compress=compress)

    def _stream_body(
        self, raw_len: int, source: Callable[[], Iterable[bytes]], *, compress: bool
    ) -> _Streamed:
        hasher = Hasher()
        if compress:
            cctx = zstandard.ZstdCompressor(level=self.level, threads=self.threads)
            writer = cctx.stream_writer(self.out, size=raw_len, closefd=False)
            for chunk in source():
                hasher.update(chunk)
                writer.write(chunk)
            writer.flush(zstandard.FLUSH_FRAME)
            # The compressed bytes written (checked with and without zstd threads).
            stored = writer.tell()
        else:
            for chunk in source():
                hasher.update(chunk)
                self.out.write(chunk)
            stored = hasher.length
        return _Streamed(bytes(hasher.pack_key()), hasher.length, stored, not compress)

    def finish(self) -> PackSummary:
        """Write the index, footer and trailer; return the pack's key and contents.

        The trailer pass reads the spool back (recently written: from the page
        cache) and every external file, checking each against its id.
        """
        index_offset = self.size
        self.out.seek(self._spooled)
        self.out.truncate()
        self.out.write(b"".join(ROW.pack(oid, offset) for oid, offset in sorted(self._rows)))
        self.out.write(FOOTER.pack(index_offset, len(self._rows), END_MAGIC))
        self.out.seek(0)
        self.out.write(HEADER.pack(MAGIC, VERSION, 0, 0, len(self._rows)))
        self.out.flush()
        hasher = Hasher()
        # One per external, made up front so an empty file (no chunk) is checked too.
        files = {ext: Hasher() for ext in self.externals}
        for ext, chunk in _segments(self.out, self.externals):
            if ext is not None:
                files[ext].update(chunk)
            hasher.update(chunk)
        for ext, file in files.items():
            if file.length != ext.size or bytes(file.pack_key()) != ext.oid:
                raise OSError(f"{ext.path}: changed while it was being packed; push again")
        trailer = bytes(hasher.pack_key())  # of everything before it
        self.out.seek(0, os.SEEK_END)
        self.out.write(trailer)
        self.out.flush()
        hasher.update(trailer)  # the key covers the trailer too
        return PackSummary(hasher.pack_key(), hasher.length, tuple(self._entries))


def _iter_path(path: str, chunk: int) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            yield data


@dataclass(frozen=True, slots=True)
class _Streamed:
    oid: bytes
    raw_len: int
    stored_len: int
    codec_is_raw: bool
