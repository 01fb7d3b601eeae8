"""Verifying a pack fed chunk by chunk (a download, a copy between remotes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import blake3
import zstandard

from ..errors import InvalidResponse, PayloadTooLarge
from ..hashes import PackKey
from ..limits import PACK_BODY_LIMIT
from .codec import Decoder, ObjectCheck, decoding, new_decompressor
from .format import (
    CHUNK,
    END_MAGIC,
    ENTRY,
    FOOTER,
    HEADER,
    MAX_ENTRIES,
    MAX_OBJECT_SIZE,
    ROW,
    TRAILER_SIZE,
    PackEntry,
    PackSummary,
    check_entry,
    check_header,
)


class ObjectSink(Protocol):
    """Receives one object's raw bytes as a verifier decodes them (see ``PackVerifier``)."""

    def write(self, data: bytes) -> object:
        """Take the next decoded bytes (not yet proven: the id is checked at the end)."""
        ...

    def done(self) -> None:
        """The object matched its id and length: its bytes may now be relied on."""
        ...


#: Asked at each entry's header with ``(oid, kind, raw_len)``: a sink for its bytes, or None.
SinkFactory = Callable[[bytes, int, int], ObjectSink | None]


class PackVerifier:
    """Verify a pack fed as chunks, holding a bounded amount of memory.

    Feed every chunk to :meth:`feed`, then call :meth:`finish`, which returns the
    :class:`PackSummary` only if the whole pack checks: structure, caps, every object
    against its id (unless ``objects`` is false: then the caller verifies each object
    when it reads it, PACK-14), the index against the entries, the trailer, no
    trailing bytes. Errors can surface from any call; nothing read is trustworthy
    before :meth:`finish` returns.

    With ``sink`` (and ``objects``), each object's decoded bytes are also handed to
    the sink it returns for that entry, whose ``done`` is called only once the
    object matched its id: a pull writes objects while their pack streams in, each
    proven by its own id, without storing the pack first.
    """

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_object: int = MAX_OBJECT_SIZE,
        objects: bool = True,
        sink: SinkFactory | None = None,
        key: PackKey | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_object = max_object
        #: Decompress and re-hash every object (False: structure, trailer and key
        #: only, for a caller that verifies each object when it reads it, see PACK-14).
        self.objects = objects
        self.sink = sink if objects else None
        #: ``key``: the caller checks the whole pack against this key itself
        #: (``Transport.download_pack_stream`` does, after the last chunk), which
        #: proves the trailer too: the pack is then not hashed a second time here
        #: (a pull hashed each pack twice, issue 17), and the summary names ``key``.
        self._known = key
        self._out: ObjectSink | None = None
        # One pass over the bytes: the trailer is a digest of a copy of this state,
        # the pack key the digest after the trailer is fed too.
        self._hasher = blake3.blake3()
        self._length = 0
        self._key: PackKey | None = None
        self._buf = bytearray()
        self._state = "header"
        self._need = HEADER.size
        self._count = 0
        self._entries: list[PackEntry] = []
        self._rows: list[tuple[bytes, int]] = []
        self._sorted: list[tuple[bytes, int]] = []
        self._offset = 0  # bytes consumed so far
        self._entry_offset = 0
        self._decoder: Decoder | None = None
        self._dctx: zstandard.ZstdDecompressor | None = None  # one for every entry
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
        if self._known is None:
            self._hasher.update(data)
        self._offset += len(data)

    def _step(self, block: bytes) -> None:
        with decoding("malformed pack"):
            if self._state == "header":
                self._count = check_header(block, self.max_entries)
                self._next_entry_or_index()
            elif self._state == "entry":
                self._start_entry(block)
            elif self._state == "index":
                self._check_row(block)
            elif self._state == "footer":
                self._check_footer(block)
            elif self._state == "trailer":
                if self._known is not None:
                    self._key = self._known
                else:
                    if block != self._hasher.copy().digest():
                        raise InvalidResponse("pack trailer does not match its contents")
                    self._hasher.update(block)
                    self._key = PackKey(self._hasher.digest())
                self._state = "done"

    def _next_entry_or_index(self) -> None:
        if len(self._entries) < self._count:
            self._state, self._need = "entry", ENTRY.size
            self._entry_offset = self._offset
        elif self._count:
            self._state, self._need = "index", ROW.size
            self._index_offset = self._offset
            self._sorted = sorted(self._rows)
            self._rows = []
            self._row = 0
        else:
            self._index_offset = self._offset
            self._state, self._need = "footer", FOOTER.size

    def _start_entry(self, block: bytes) -> None:
        kind, codec, oid, raw_len, stored_len = ENTRY.unpack(block)
        where = f"entry {len(self._entries)}"
        check_entry(kind, codec, raw_len, stored_len, self.max_object, where)
        if self._offset + stored_len > PACK_BODY_LIMIT:
            raise PayloadTooLarge(f"{where} runs past the pack size limit")
        self._pending = (kind, codec, oid, raw_len, stored_len)
        if self.objects:
            self._out = self.sink(oid, kind, raw_len) if self.sink is not None else None
            out = self._out.write if self._out is not None else None
            if self._dctx is None:
                self._dctx = new_decompressor()
            self._decoder = Decoder(codec, ObjectCheck(oid, raw_len, out), self._dctx)
        self._remaining = stored_len
        self._state = "data"
        if stored_len == 0:
            self._end_entry()

    def _end_entry(self) -> None:
        assert self._pending is not None
        if self._decoder is not None:
            self._decoder.done()
        if self._out is not None:
            out, self._out = self._out, None
            out.done()
        kind, _codec, oid, raw_len, stored_len = self._pending
        self._entries.append(PackEntry(oid, kind, raw_len, stored_len))
        self._rows.append((oid, self._entry_offset))
        self._decoder = self._pending = None
        self._next_entry_or_index()

    def _check_row(self, block: bytes) -> None:
        row = ROW.unpack(block)
        if row != self._sorted[self._row]:
            raise InvalidResponse(f"pack index row {self._row} does not match the entries")
        if self._row and row[0] == self._sorted[self._row - 1][0]:
            raise InvalidResponse("pack holds the same object twice")
        self._row += 1
        if self._row == self._count:
            self._sorted = []
            self._state, self._need = "footer", FOOTER.size

    def _check_footer(self, block: bytes) -> None:
        index_offset, count, magic = FOOTER.unpack(block)
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
