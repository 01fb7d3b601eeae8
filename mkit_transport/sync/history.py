"""``log`` and ``show``: read a ref's history and a snapshot's file list.

Both read metadata only: ``log`` follows parent records; ``show`` downloads just the
packs that hold trees, found through the index blobs.
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidResponse, PackNotFound, RefNotFound
from ..hashes import PackKey
from ..pack import KIND_TREE
from ..transport import Transport
from .common import fetch_index, fetch_record, open_packs, parallel, record_key, ref_value
from .materialise import list_files
from .options import TransferOptions, resolve
from .plan import Limits
from .progress import Meter
from .reports import Listing, LogEntry

__all__ = ["HISTORY_TRUNCATED", "log", "show"]

#: How ``log`` marks where a history ends at an absent parent record.
HISTORY_TRUNCATED = (
    "(history truncated here: older records are not in this store; "
    "gc --keep-last collected them, or a mirror never copied them)"
)


def log(transport: Transport, ref: str, *, limit: int | None = None) -> list[LogEntry]:
    """Return the snapshots of ``ref``, newest first, following parent records.

    Stops at the first snapshot without a parent, after ``limit`` entries, or at a
    parent record the remote does not hold (a mirrored history, or one that
    ``gc --keep-last`` cut), which the last entry marks with ``parent_missing``
    (the command line then prints :data:`HISTORY_TRUNCATED`). An absent ref is :class:`RefNotFound`.
    """
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: no history to show", name=ref)
    entries: list[LogEntry] = []
    key: PackKey | None = record_key(value)
    seen: set[PackKey] = set()
    while key is not None and (limit is None or len(entries) < limit):
        if key in seen:
            raise InvalidResponse(f"snapshot history loops at record {key.hex()}")
        seen.add(key)
        try:
            record = fetch_record(transport, ref_value(key))
        except PackNotFound:
            if not entries:
                raise
            entries[-1] = dataclasses.replace(entries[-1], parent_missing=True)
            break
        entries.append(
            LogEntry(
                key=key,
                root=record.root.hex(),
                parent=record.parent,
                created_ns=record.created_ns,
                packs=len(record.packs),
                pack_bytes=sum(p.size for p in record.packs),
            )
        )
        key = record.parent
    return entries


def show(
    transport: Transport,
    ref: str,
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    options: TransferOptions | None = None,
    concurrency: int | None = None,
    max_entries: int | None = None,
    max_depth: int | None = None,
) -> Listing:
    """List the files of the snapshot ``ref`` points at (or those under ``path``).

    Downloads only the packs that hold trees (found through the index blobs), never
    the packs of file contents. ``options`` carries the transfer knobs
    (:class:`TransferOptions`; show reads ``concurrency`` and ``cache_dir``, also
    taken as keywords, but not with ``options``). The listing is counted over the
    tree DAG's expansion before it is built and refused beyond ``max_entries``
    (default 10,000,000) or ``max_depth`` (default 512), so memory stays bounded.

    Raises:
        RefNotFound: the ref is absent.
        PackNotFound: a pack it needs is missing.
        FileNotFoundError: ``path`` is not in the snapshot.
        PayloadTooLarge: the listing is over ``max_entries`` or ``max_depth``.
        InvalidArgument: ``options`` and a keyword knob were both given.
    """
    knobs = resolve("show", options, concurrency=concurrency, cache_dir=cache_dir)
    limits = Limits.of(max_entries, max_depth)
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: nothing to show", name=ref)
    meter = Meter(None)
    record = fetch_record(transport, value, meter)
    indexes = parallel(lambda p: fetch_index(transport, p, meter), record.packs, knobs.concurrency)
    tree_packs = [
        pack
        for pack, rows in zip(record.packs, indexes, strict=True)
        if any(kind == KIND_TREE for _, kind in rows)
    ]
    objects, _ = open_packs(transport, tree_packs, knobs.cache_dir, knobs.concurrency, meter)
    try:
        entries = list_files(objects, record.root, path, limits=limits)
    finally:
        objects.close()
    return Listing(ref=ref, key=record_key(value), root=record.root.hex(), entries=tuple(entries))
