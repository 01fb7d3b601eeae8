"""Random access to one object of a pack file through its index, without a scan."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from ..errors import InvalidResponse
from ..hashes import Hasher, PackKey
from .codec import Decoder, ObjectCheck, decoding, inflate_small
from .format import (
    CHUNK,
    CODEC_RAW,
    END_MAGIC,
    ENTRY,
    FOOTER,
    HEADER,
    MAX_ENTRIES,
    MAX_OBJECT_SIZE,
    MIN_PACK,
    ROW,
    SMALL_OBJECT,
    TRAILER_SIZE,
    check_entry,
    check_header,
)


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
        with decoding(f"pack {self.path}"):
            count = check_header(f.read(HEADER.size), max_entries)
            f.seek(size - TRAILER_SIZE - FOOTER.size)
            index_offset, footer_count, magic = FOOTER.unpack(f.read(FOOTER.size))
        if magic != END_MAGIC or footer_count != count:
            raise InvalidResponse(f"pack {self.path}: bad footer")
        end = size - TRAILER_SIZE - FOOTER.size
        if index_offset < HEADER.size or index_offset + count * ROW.size != end:
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
        self._index = f.read(count * ROW.size)
        self._index_offset = index_offset
        self.count = count
        previous = b""
        for i in range(count):
            oid = self._index[i * ROW.size : i * ROW.size + 32]
            if oid <= previous:
                raise InvalidResponse(f"pack {self.path}: index is not strictly sorted")
            previous = oid

    def ids(self) -> Iterator[bytes]:
        """Yield every object id, in id order."""
        for i in range(self.count):
            yield self._index[i * ROW.size : i * ROW.size + 32]

    def find(self, oid: bytes) -> int | None:
        """Return the offset of object ``oid``'s entry, or None (binary search)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            start = mid * ROW.size
            here = self._index[start : start + 32]
            if here < oid:
                lo = mid + 1
            elif here > oid:
                hi = mid
            else:
                return int(ROW.unpack_from(self._index, start)[1])
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
        if offset + ENTRY.size > self._index_offset:
            raise InvalidResponse(f"{where}: entry out of bounds")
        with decoding(where):
            kind, codec, entry_id, raw_len, stored_len = ENTRY.unpack(
                self._pread(ENTRY.size, offset, where)
            )
        check_entry(kind, codec, raw_len, stored_len, max_size or MAX_OBJECT_SIZE, where)
        start = offset + ENTRY.size
        if entry_id != oid or start + stored_len > self._index_offset:
            raise InvalidResponse(f"{where}: entry does not match the index")
        chunks: Iterable[bytes]
        if stored_len <= SMALL_OBJECT and raw_len <= SMALL_OBJECT:
            data = self._pread(stored_len, start, where)
            inflated = data if codec == CODEC_RAW else inflate_small(data, raw_len, where)
            if inflated is not None:
                if len(inflated) != raw_len or bytes(PackKey.of(inflated)) != oid:
                    raise InvalidResponse(f"{where}: does not hash to its id")
                if out is not None and inflated:
                    out(inflated)
                return kind, raw_len
            chunks = (data,)  # a frame without its size: the bounded streaming path
        else:
            chunks = (
                self._pread(min(CHUNK, stored_len - pos), start + pos, where)
                for pos in range(0, stored_len, CHUNK)
            )
        decoder = Decoder(codec, ObjectCheck(oid, raw_len, out))
        for chunk in chunks:
            decoder.feed(chunk)
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
