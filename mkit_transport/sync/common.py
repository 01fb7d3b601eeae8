"""What the sync verbs share: records and index blobs, the ref's CAS, a bounded pool.

A snapshot's ref holds the key of its record blob (:func:`record_key`,
:func:`ref_value`); the record names the packs and, beside each, a small index blob
(:func:`fetch_record`, :func:`fetch_index`, both size-capped before decoding). Refs
are written last, by compare-and-swap, and a lost race reads as a non-fast-forward
(:func:`write_condition`, :func:`write_ref`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import PayloadTooLarge, RefConflict
from ..hashes import Hash, PackKey
from ..refs import RefWriteCondition
from ..transport import Transport
from .blobcache import BlobCache
from .model import MAX_INDEX_SIZE, MAX_RECORD_SIZE, PackRef, Record, decode_index, decode_record
from .objects import PackObjects
from .progress import Meter
from .restore import PackCache, default_cache_dir

__all__ = [
    "fetch_index",
    "fetch_record",
    "index_rows",
    "non_fast_forward",
    "open_packs",
    "parallel",
    "record_key",
    "ref_value",
    "write_condition",
    "write_ref",
]

_T = TypeVar("_T")
_R = TypeVar("_R")


def parallel(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """Run ``fn`` over ``items`` with a bounded pool; results in order, first error raised."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def ref_value(key: PackKey) -> Hash:
    """The value a ref holds to point at the record blob ``key``."""
    return Hash(bytes(key))


def record_key(value: Hash) -> PackKey:
    """The key of the record blob a ref's ``value`` points at."""
    return PackKey(bytes(value))


def _metadata(
    transport: Transport, key: PackKey, meter: Meter | None, cache: BlobCache | None
) -> tuple[bytes, bool]:
    """The bytes of the metadata blob ``key``: a verified local copy, or downloaded.

    Also whether they were downloaded (the caller keeps a copy once they decode).
    """
    if cache is not None and (data := cache.get(key)) is not None:
        return data, False
    data = transport.download_blob(key)
    if meter is not None:
        meter.add(bytes_in=len(data))
    return data, True


def fetch_record(
    transport: Transport,
    value: Hash,
    meter: Meter | None = None,
    cache: BlobCache | None = None,
) -> Record:
    """The record ``value`` points at (capped before decoding), from ``cache`` if there."""
    key = record_key(value)
    data, fresh = _metadata(transport, key, meter, cache)
    if len(data) > MAX_RECORD_SIZE:
        raise PayloadTooLarge(f"snapshot record {value.hex()} is {len(data)} bytes")
    record = decode_record(data)
    if fresh and cache is not None:
        cache.put(key, data)
    return record


def index_rows(pack: PackRef, data: bytes) -> list[tuple[bytes, int]]:
    """Decode the index blob ``data`` of ``pack`` (capped before decoding)."""
    if len(data) > MAX_INDEX_SIZE:
        raise PayloadTooLarge(f"index blob {pack.index.hex()} is {len(data)} bytes")
    return decode_index(data, pack.key)


def fetch_index(
    transport: Transport, pack: PackRef, meter: Meter, cache: BlobCache | None = None
) -> list[tuple[bytes, int]]:
    """The ``(oid, kind)`` rows of ``pack``'s index blob, from ``cache`` if there."""
    data, fresh = _metadata(transport, pack.index, meter, cache)
    rows = index_rows(pack, data)
    if fresh and cache is not None:
        cache.put(pack.index, data)
    return rows


def open_packs(
    transport: Transport,
    packs: Sequence[PackRef],
    cache_dir: str | None,
    concurrency: int,
    meter: Meter,
) -> tuple[PackObjects, int]:
    """Open ``packs`` through the cache (downloading the missing ones); also how many were.

    Each pack is handed to the :class:`PackObjects` as soon as it is open, which
    keeps its ids and closes its file beyond its budget, so at most that budget
    plus ``concurrency`` pack files are open at once, however many packs there are.
    """
    cache = PackCache(cache_dir or default_cache_dir())
    objects = PackObjects()

    def take(pack: PackRef) -> bool:
        file, fresh = cache.open(transport, pack, meter)
        objects.add(file)
        return fresh

    try:
        downloaded = sum(parallel(take, packs, concurrency))
    except BaseException:
        objects.close()
        raise
    return objects, downloaded


def write_condition(expect: RefWriteCondition | None, current: Hash | None) -> RefWriteCondition:
    """``expect``, or by default ``match`` of the value read at the start (or ``MISSING``)."""
    if expect is not None:
        return expect
    return RefWriteCondition.match(current) if current is not None else RefWriteCondition.MISSING


def non_fast_forward(ref: str, current: Hash | None, known: bool = True) -> RefConflict:
    """The conflict a push or mirror raises when ``ref`` moved on the remote."""
    held = current.hex() if current is not None else "nothing"
    return RefConflict(
        f"non-fast-forward: {ref} moved on the remote (it holds {held}); "
        "pull, then push again, or force with expect=ANY",
        name=ref,
        current=current,
        known=known,
    )


def write_ref(transport: Transport, ref: str, condition: RefWriteCondition, value: Hash) -> None:
    """CAS the ref; a lost race becomes a non-fast-forward (the base did any read-back)."""
    try:
        transport.update_ref(ref, condition, value)
    except RefConflict as conflict:
        raise non_fast_forward(ref, conflict.current, conflict.known) from conflict
