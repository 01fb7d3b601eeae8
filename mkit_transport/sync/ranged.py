"""Objects out of remote packs by ranged reads, each verified against its own id.

A pack ends with an index of its objects' offsets (spec/SPEC-PACK.md section 1), and a
snapshot record gives each pack's size and object count, so the index and footer sit
at a known place: :func:`read_pack_index` fetches both in one ranged read
(:meth:`Transport.read_pack_range`) without downloading the pack. Entries are
contiguous, so an object's entry runs from its offset to the next offset (or the
index): :func:`iter_object` fetches that span, in pieces of at most 1 MiB, and streams
the decoded bytes through the pack codec's checks (declared length, bomb guard,
BLAKE3 of the raw bytes against the id). A range cannot be checked against the pack
key, so nothing read here is trusted beyond what its own id proves; any mismatch is
:class:`InvalidResponse` naming the object and the pack (spec/SPEC-SYNC.md SYNC-42).

:func:`fetch_objects` is the batch form a pull can use: "these ids, in these packs".
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidArgument, InvalidResponse
from ..hashes import PackKey
from ..pack import MAX_ENTRIES, MAX_OBJECT_SIZE, MIN_PACK, SMALL_OBJECT, TRAILER_SIZE
from ..pack.codec import Decoder, ObjectCheck, decoding, inflate_small
from ..pack.format import CHUNK, CODEC_RAW, END_MAGIC, ENTRY, FOOTER, HEADER, ROW, check_entry
from ..transport import Transport
from .model import PackRef
from .progress import Meter

__all__ = ["RangedPack", "fetch_objects", "iter_object", "read_object", "read_pack_index"]

_ID: Final = 32


@dataclass(frozen=True, slots=True)
class RangedPack:
    """The index of one remote pack, read by range: where each of its objects' entries is.

    ``rows`` is the pack's own index (``count`` rows of 32-byte id and u64 offset,
    sorted by id); ``starts`` the same offsets sorted, so an entry's end is the next
    start (or ``index_offset``). 48 bytes an object in memory.
    """

    key: PackKey
    size: int
    count: int
    index_offset: int
    rows: bytes
    starts: array[int]

    @property
    def nbytes(self) -> int:
        """Memory this index holds (for a cache's budget)."""
        return len(self.rows) + self.starts.itemsize * len(self.starts)

    def span(self, oid: bytes) -> tuple[int, int] | None:
        """The ``(start, end)`` of ``oid``'s entry in the pack, or None if it holds none."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            here = self.rows[mid * ROW.size : mid * ROW.size + _ID]
            if here < oid:
                lo = mid + 1
            elif here > oid:
                hi = mid
            else:
                start = int(ROW.unpack_from(self.rows, mid * ROW.size)[1])
                after = bisect.bisect_right(self.starts, start)
                end = self.starts[after] if after < len(self.starts) else self.index_offset
                return start, end
        return None

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, bytes) and self.span(oid) is not None


def _range(transport: Transport, key: PackKey, offset: int, length: int, where: str) -> bytes:
    """One ranged read; a range past the stored pack means the record lied about it."""
    try:
        return transport.read_pack_range(key, offset, length)
    except InvalidArgument as error:
        raise InvalidResponse(f"{where}: not where its record says: {error}") from error


def read_pack_index(transport: Transport, pack: PackRef, meter: Meter | None = None) -> RangedPack:
    """Fetch ``pack``'s index and footer in one ranged read and check them.

    Where they sit follows from the record's size and object count; the footer must
    repeat both, the ids must be strictly sorted and every offset must lie between the
    header and the index. The trailer is not checked (that needs the whole pack):
    each object read through this index is verified by its id instead.
    """
    where = f"pack {pack.key.hex()}"
    count = pack.objects
    if count > MAX_ENTRIES:
        raise InvalidResponse(f"{where}: its record declares {count} objects")
    length = count * ROW.size + FOOTER.size
    index_offset = pack.size - TRAILER_SIZE - length
    if pack.size < MIN_PACK or index_offset < HEADER.size:
        raise InvalidResponse(f"{where}: {pack.size} bytes cannot hold {count} objects")
    data = _range(transport, pack.key, index_offset, length, where)
    if meter is not None:
        meter.add(bytes_in=len(data))
    footer_offset, footer_count, magic = FOOTER.unpack_from(data, count * ROW.size)
    if magic != END_MAGIC or footer_count != count or footer_offset != index_offset:
        raise InvalidResponse(f"{where}: footer does not match its record's size and count")
    rows = data[: count * ROW.size]
    starts = array("Q")
    previous = b""
    for oid, offset in ROW.iter_unpack(rows):
        if oid <= previous:
            raise InvalidResponse(f"{where}: index is not strictly sorted")
        if not HEADER.size <= offset <= index_offset - ENTRY.size:
            raise InvalidResponse(f"{where}: index offset {offset} out of bounds")
        previous = oid
        starts.append(offset)
    ordered = array("Q", sorted(starts))
    return RangedPack(pack.key, pack.size, count, index_offset, rows, ordered)


def iter_object(
    transport: Transport,
    pack: RangedPack,
    oid: bytes,
    *,
    max_size: int | None = None,
    meter: Meter | None = None,
) -> Generator[bytes, None, tuple[int, int]]:
    """Yield object ``oid``'s raw bytes as its entry's ranges arrive; ``(kind, raw_len)`` last.

    A generator of ``bytes`` whose return value is ``(kind, raw_len)``. The last
    piece is yielded only after the whole object hashed to ``oid`` when it is small
    (at most 1 MiB); a larger object is streamed and checked when its last range is
    decoded, so a caller that needs verified bytes before using any buffers them
    (or, like a pull, writes into a staging area it discards on error). Raises
    KeyError if ``pack`` holds no ``oid``; InvalidResponse (naming object and pack)
    for any mismatch; PayloadTooLarge for an object over ``max_size``.
    """
    span = pack.span(oid)
    if span is None:
        raise KeyError(oid.hex())
    start, end = span
    where = f"pack {pack.key.hex()}, object {oid.hex()}"
    try:
        first = _range(transport, pack.key, start, min(end - start, ENTRY.size + CHUNK), where)
        if meter is not None:
            meter.add(bytes_in=len(first))
        with decoding(where):
            kind, codec, entry_id, raw_len, stored_len = ENTRY.unpack_from(first)
        check_entry(kind, codec, raw_len, stored_len, max_size or MAX_OBJECT_SIZE, where)
        if entry_id != oid or start + ENTRY.size + stored_len != end:
            raise InvalidResponse(f"{where}: entry does not match the index")
        body = first[ENTRY.size :]
        if stored_len == len(body) and stored_len <= SMALL_OBJECT and raw_len <= SMALL_OBJECT:
            inflated = body if codec == CODEC_RAW else inflate_small(body, raw_len, where)
            if inflated is not None:
                if len(inflated) != raw_len or bytes(PackKey.of(inflated)) != oid:
                    raise InvalidResponse(f"{where}: does not hash to its id")
                if inflated:
                    yield inflated
                return kind, raw_len
        pending: list[bytes] = []
        decoder = Decoder(codec, ObjectCheck(oid, raw_len, pending.append))
        position = start + len(first)
        piece = body
        while True:
            decoder.feed(piece)
            yield from pending
            pending.clear()
            if position >= end:
                break
            piece = _range(transport, pack.key, position, min(CHUNK, end - position), where)
            if meter is not None:
                meter.add(bytes_in=len(piece))
            position += len(piece)
        decoder.done()
        yield from pending
        return kind, raw_len
    except InvalidResponse as error:
        if pack.key.hex() in str(error):
            raise
        raise InvalidResponse(f"{where}: {error}") from error


def read_object(
    transport: Transport,
    pack: RangedPack,
    oid: bytes,
    *,
    max_size: int,
    meter: Meter | None = None,
) -> tuple[int, bytes]:
    """Return ``(kind, raw bytes)`` of object ``oid``, verified before it is returned."""
    parts: list[bytes] = []
    pieces = iter_object(transport, pack, oid, max_size=max_size, meter=meter)
    while True:
        try:
            parts.append(next(pieces))
        except StopIteration as done:
            kind, _raw_len = done.value
            return int(kind), b"".join(parts)


def fetch_objects(
    transport: Transport,
    wanted: Iterable[tuple[bytes, PackRef]],
    sink: Callable[[bytes, int, bytes], object],
    *,
    max_size: int = CHUNK * 16,
    meter: Meter | None = None,
    indexes: Sequence[RangedPack] = (),
) -> int:
    """Fetch each ``(object id, pack holding it)`` by ranged reads; return how many bytes.

    Each pack's index is read once (or taken from ``indexes``, already read); each
    object is verified against its id before ``sink(oid, kind, raw bytes)`` sees it,
    so ``max_size`` (default 16 MiB, the largest chunk) bounds the memory of one
    object. An object its pack does not hold is InvalidResponse (the caller's
    location came from an index blob that lied). Returns the raw bytes handed on.
    """
    known = {index.key: index for index in indexes}
    total = 0
    for oid, pack in wanted:
        index = known.get(pack.key)
        if index is None:
            index = known[pack.key] = read_pack_index(transport, pack, meter)
        if oid not in index:
            raise InvalidResponse(f"pack {pack.key.hex()} holds no object {oid.hex()}")
        kind, data = read_object(transport, index, oid, max_size=max_size, meter=meter)
        sink(oid, kind, data)
        total += len(data)
    return total
