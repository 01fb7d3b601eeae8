"""Snapshot sync (spec/SPEC-SYNC.md): push a directory, pull it back, mirror between remotes.

Everything goes through the public :class:`~mkit_transport.transport.Transport`
verbs, so these functions run unchanged over every transport. The invariants:

* **ref last, all or nothing**: a push uploads every pack, index blob and the
  record before it compare-and-swaps the ref; on any earlier error the ref is
  untouched and the remote stays pullable;
* **incremental**: an object in a pack listed by the remote tip's record is never
  sent again; what the remote holds is learnt from the record and the small index
  blobs (metadata), never from the packs;
* **conflict**: the ref is written with ``match(tip seen at start)`` (``MISSING``
  for a new ref); a lost race is :class:`RefConflict` saying "non-fast-forward"
  and carrying the remote's value;
* **atomic materialisation**: a pull writes into a directory beside the
  destination and swaps it in only once every object has been verified.

The push pipeline's machinery (scan hand-off, pack building, parallel uploads)
lives in :mod:`.packer`; pull's pack cache and atomic swap in
:mod:`.restore`; progress events in :mod:`.progress`; the
reports the verbs return in :mod:`.reports`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Final, TypeVar

from ..errors import InvalidResponse, PackNotFound, PayloadTooLarge, RefConflict, RefNotFound
from ..hashes import Hash, PackKey
from ..pack import (
    KIND_BLOB,
    KIND_TREE,
)
from ..refs import RefWriteCondition
from ..transport import Transport
from .model import (
    MAX_INDEX_SIZE,
    MAX_RECORD_SIZE,
    PackObjects,
    PackRef,
    Record,
    decode_index,
    decode_record,
    encode_record,
    list_files,
    materialise,
)
from .packer import ScanStream, build_and_upload
from .progress import Limiter, Meter, Progress
from .reports import Listing, LogEntry, MirrorReport, PullReport, PushReport
from .restore import PackCache, check_dest, default_cache_dir, staged, verified_chunks
from .scan import Snapshot, scan

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PACK_SIZE",
    "Listing",
    "LogEntry",
    "MirrorReport",
    "Progress",
    "PullReport",
    "PushReport",
    "default_cache_dir",
    "log",
    "mirror",
    "pull",
    "push",
    "show",
]

#: Target size of one pack (a pack is sealed before it would grow past it).
DEFAULT_PACK_SIZE: Final = 64 << 20
#: Uploads and downloads in flight at once.
DEFAULT_CONCURRENCY: Final = 4

_T = TypeVar("_T")
_R = TypeVar("_R")


# -- plumbing ----------------------------------------------------------------------------


def _parallel(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """Run ``fn`` over ``items`` with a bounded pool; results in order, first error raised."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _ref_value(key: PackKey) -> Hash:
    return Hash(bytes(key))


def _record_key(value: Hash) -> PackKey:
    return PackKey(bytes(value))


def _fetch_record(transport: Transport, value: Hash, meter: Meter | None = None) -> Record:
    data = transport.download_blob(_record_key(value))
    if meter is not None:
        meter.add(bytes_in=len(data))
    if len(data) > MAX_RECORD_SIZE:
        raise PayloadTooLarge(f"snapshot record {value.hex()} is {len(data)} bytes")
    return decode_record(data)


def _fetch_index(transport: Transport, pack: PackRef, meter: Meter) -> list[tuple[bytes, int]]:
    data = transport.download_blob(pack.index)
    meter.add(bytes_in=len(data))
    if len(data) > MAX_INDEX_SIZE:
        raise PayloadTooLarge(f"index blob {pack.index.hex()} is {len(data)} bytes")
    return decode_index(data, pack.key)


def _condition(expect: RefWriteCondition | None, current: Hash | None) -> RefWriteCondition:
    if expect is not None:
        return expect
    return RefWriteCondition.match(current) if current is not None else RefWriteCondition.MISSING


def _non_fast_forward(ref: str, current: Hash | None, known: bool = True) -> RefConflict:
    held = current.hex() if current is not None else "nothing"
    return RefConflict(
        f"non-fast-forward: {ref} moved on the remote (it holds {held}); "
        "pull, then push again, or force with expect=ANY",
        name=ref,
        current=current,
        known=known,
    )


def _write_ref(transport: Transport, ref: str, condition: RefWriteCondition, value: Hash) -> None:
    """CAS the ref; a lost race becomes a non-fast-forward (the base did any read-back)."""
    try:
        transport.update_ref(ref, condition, value)
    except RefConflict as conflict:
        raise _non_fast_forward(ref, conflict.current, conflict.known) from conflict


# -- push --------------------------------------------------------------------------------


def push(
    source_dir: str | os.PathLike[str],
    transport: Transport,
    ref: str,
    *,
    expect: RefWriteCondition | None = None,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    level: int = 3,
    pack_size: int = DEFAULT_PACK_SIZE,
    bwlimit: float | None = None,
    spool_dir: str | None = None,
) -> PushReport:
    """Push the tree at ``source_dir`` as a snapshot and point ``ref`` at it, last.

    Sends only objects the remote tip's packs do not hold; an unchanged tree writes
    nothing. The ref is written with ``expect`` (default: ``match`` of the value
    read at the start, or ``MISSING``); a lost race raises :class:`RefConflict`
    ("non-fast-forward", with ``current``). ``dry_run`` reads only. ``bwlimit`` caps
    upload bytes per second; ``spool_dir`` is where packs are built (default: the
    system temp directory).

    Raises:
        RefConflict: the ref moved (non-fast-forward) or does not satisfy ``expect``.
        PayloadTooLarge: a file is larger than one pack can hold.
        OSError: the source cannot be read, or a file changed while it was pushed.
    """
    meter = Meter(progress)
    meter.enter("plan")
    old = transport.read_ref(ref)
    condition = _condition(expect, old)
    if not condition.allows(old):
        raise _non_fast_forward(ref, old)
    meter.enter("scan")
    build = partial(
        build_and_upload,
        transport,
        level=level,
        pack_size=pack_size,
        concurrency=concurrency,
        limiter=Limiter(bwlimit),
        meter=meter,
        spool_dir=spool_dir,
    )
    if old is None and not dry_run:
        # A first push sends everything: pack blobs while the scan goes on.
        meter.enter("upload")
        with ScanStream(source_dir, pack_size) as stream:
            uploaded = build(stream.groups(), first=1)  # trees first in the record
        assert stream.snap is not None
        snap = stream.snap
        meter.enter("upload", total=len(snap.objects))
        raw = sum(src.size for src in snap.objects.values())
        sent = len(snap.objects)
        return _commit(transport, ref, condition, snap, None, [], uploaded, meter, raw, old, sent)
    snap = scan(source_dir)
    meter.enter("plan", total=len(snap.objects))
    base = _base_record(transport, old, condition, meter)

    def report(**changes: Any) -> PushReport:
        return _push_report(ref, old, snap, meter, dry_run=dry_run, **changes)

    if base is not None and base.root == snap.root:
        return report()
    remote: dict[bytes, int] = {}
    if base is not None:
        indexes = _parallel(lambda p: _fetch_index(transport, p, meter), base.packs, concurrency)
        for position, rows in enumerate(indexes):
            for oid, _kind in rows:
                remote.setdefault(oid, position)
    send = [oid for oid in snap.objects if oid not in remote]
    kept = sorted({remote[oid] for oid in snap.objects if oid in remote})
    raw = sum(snap.objects[oid].size for oid in send)
    meter.add(skipped=len(snap.objects) - len(send))
    if dry_run:
        return report(
            objects_sent=len(send),
            objects_skipped=len(snap.objects) - len(send),
            raw_bytes_sent=raw,
        )
    meter.enter("upload")
    trees = [(oid, snap.objects[oid]) for oid in send if snap.objects[oid].kind == KIND_TREE]
    blobs = [(oid, snap.objects[oid]) for oid in send if snap.objects[oid].kind == KIND_BLOB]
    uploaded = build([trees, blobs])
    kept_packs = [base.packs[i] for i in kept] if base is not None else []
    parent = _record_key(old) if base is not None and old is not None else None
    return _commit(
        transport, ref, condition, snap, parent, kept_packs, uploaded, meter, raw, old, len(send)
    )


def _commit(
    transport: Transport,
    ref: str,
    condition: RefWriteCondition,
    snap: Snapshot,
    parent: PackKey | None,
    kept: list[PackRef],
    uploaded: list[tuple[PackRef, bool, int]],
    meter: Meter,
    raw: int,
    old: Hash | None,
    sent: int,
) -> PushReport:
    """Upload the record naming the kept and new packs, then CAS the ref (last)."""
    packs = kept + [pack for pack, _, _ in uploaded]
    record = encode_record(Record(snap.root, parent, time.time_ns(), tuple(packs)))
    record_key = PackKey.of(record)
    transport.upload_blob(record, record_key)
    new = _ref_value(record_key)
    meter.enter("commit")
    _write_ref(transport, ref, condition, new)
    return _push_report(
        ref,
        old,
        snap,
        meter,
        new=new,
        updated=True,
        objects_sent=sent,
        objects_skipped=len(snap.objects) - sent,
        raw_bytes_sent=raw,
        packs_uploaded=sum(1 for _, up, _ in uploaded if up),
        packs_skipped=sum(1 for _, up, _ in uploaded if not up),
        bytes_uploaded=sum(n for _, _, n in uploaded) + len(record),
    )


def _push_report(
    ref: str, old: Hash | None, snap: Snapshot, meter: Meter, **changes: Any
) -> PushReport:
    """The report of a push that wrote nothing (the ref stays ``old``), with ``changes``.

    Ends the progress (phase ``done``), so ``bytes_downloaded`` is the final count.
    """
    meter.enter("done")
    nothing = PushReport(
        ref=ref,
        old=old,
        new=old,
        dry_run=False,
        updated=False,
        objects_sent=0,
        objects_skipped=len(snap.objects),
        raw_bytes_sent=0,
        packs_uploaded=0,
        packs_skipped=0,
        bytes_uploaded=0,
        bytes_downloaded=meter.bytes_in,
        files=snap.files,
    )
    return dataclasses.replace(nothing, **changes)


def _base_record(
    transport: Transport, old: Hash | None, condition: RefWriteCondition, meter: Meter
) -> Record | None:
    """The remote tip's record; a forced push tolerates an unreadable one (starts over)."""
    if old is None:
        return None
    try:
        return _fetch_record(transport, old, meter)
    except (PackNotFound, InvalidResponse):
        if condition.kind == "any":
            return None
        raise


# -- pull --------------------------------------------------------------------------------


def _open_packs(
    transport: Transport,
    packs: Sequence[PackRef],
    cache_dir: str | None,
    concurrency: int,
    meter: Meter,
) -> tuple[PackObjects, int]:
    cache = PackCache(cache_dir or default_cache_dir())
    opened = _parallel(lambda p: cache.open(transport, p, meter), packs, concurrency)
    files = [f for f, _ in opened]
    downloaded = sum(1 for _, fresh in opened if fresh)
    return PackObjects(files), downloaded


def pull(
    transport: Transport,
    ref: str,
    dest_dir: str | os.PathLike[str],
    *,
    cache_dir: str | None = None,
    replace: bool = False,
    progress: Callable[[Progress], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> PullReport:
    """Restore the snapshot ``ref`` points at into ``dest_dir``, atomically.

    Downloads only packs missing from the cache (``cache_dir``, default
    :func:`default_cache_dir`), verifies every pack and object, writes the tree into
    a new directory beside ``dest_dir`` and swaps it in. An existing ``dest_dir``
    that is not an empty directory is refused unless ``replace`` (then it is
    replaced whole). On any failure ``dest_dir`` is unchanged.

    Raises:
        RefNotFound: the ref is absent.
        PackNotFound: a pack it needs is missing (named).
        InvalidResponse: a pack, record, tree or object is corrupt (named).
        FileExistsError: ``dest_dir`` is in the way and ``replace`` is false.
    """
    meter = Meter(progress)
    dest = os.path.abspath(os.fspath(dest_dir))
    check_dest(dest, replace)
    meter.enter("plan")
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: nothing to pull", name=ref)
    record = _fetch_record(transport, value, meter)
    meter.enter("download", total=sum(p.objects for p in record.packs))
    objects, downloaded = _open_packs(transport, record.packs, cache_dir, concurrency, meter)
    try:
        meter.enter("write")
        with staged(dest, replace) as stage:
            files = materialise(objects, record.root, stage, workers=concurrency)
    finally:
        objects.close()
    meter.enter("done")
    return PullReport(
        ref, value, dest, files, downloaded, len(record.packs) - downloaded, meter.bytes_in
    )


# -- mirror ------------------------------------------------------------------------------


class _RemotePack:
    """A re-iterable source of one pack's bytes from a remote, verified as they pass.

    Each iteration re-opens the download (so the destination's upload can be
    retried) and feeds a :class:`PackVerifier`: a corrupt pack raises from inside the
    iteration, so the destination never commits it.
    """

    def __init__(self, src: Transport, pack: PackRef, meter: Meter) -> None:
        self.src, self.pack, self.meter = src, pack, meter

    def __iter__(self) -> Iterator[bytes]:
        key = self.pack.key
        return verified_chunks(self.src, key, "source", self.meter, objects=True, relayed=True)


def _copy_blob(src: Transport, dst: Transport, key: PackKey) -> int:
    data = src.download_blob(key)
    dst.upload_blob(data, key)
    return len(data)


def mirror(
    src: Transport,
    dst: Transport,
    ref: str,
    *,
    expect: RefWriteCondition | None = None,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> MirrorReport:
    """Copy the snapshot ``ref`` points at on ``src`` to ``dst``, destination ref last.

    Bytes flow from one transport to the other through memory only (streamed and
    verified on the way); packs ``dst`` already holds are skipped. The destination
    ref is written with ``expect`` (default: ``match`` of its value at the start, or
    ``MISSING``). Only the tip record is copied: ``log`` on ``dst`` stops at the
    first parent record it lacks.
    """
    meter = Meter(progress)
    meter.enter("plan")
    value = src.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent on the source: nothing to mirror", name=ref)
    old = dst.read_ref(ref)
    condition = _condition(expect, old)
    if not condition.allows(old):
        raise _non_fast_forward(ref, old)
    if old == value:
        return MirrorReport(ref, old, value, dry_run, False, 0, 0, 0, 0, 0)
    record_key = _record_key(value)
    record_bytes = src.download_blob(record_key)
    record = decode_record(record_bytes)
    present = _parallel(lambda p: dst.pack_exists(p.key), record.packs, concurrency)
    missing = [p for p, here in zip(record.packs, present, strict=True) if not here]
    sent_objects = sum(p.objects for p in missing)
    skipped_objects = sum(p.objects for p in record.packs) - sent_objects
    if dry_run:
        return MirrorReport(ref, old, value, True, False, sent_objects, skipped_objects, 0, 0, 0)
    meter.enter("upload", total=sum(p.objects for p in record.packs))

    def copy(pack: PackRef) -> int:
        source = _RemotePack(src, pack, meter)
        dst.upload_pack_stream(pack.key, source, pack.size)
        index_size = _copy_blob(src, dst, pack.index)
        meter.add(done=pack.objects)
        return pack.size + index_size

    def copy_index(pack: PackRef) -> int:
        """The index of a pack ``dst`` already holds may still be missing there."""
        return 0 if dst.pack_exists(pack.index) else _copy_blob(src, dst, pack.index)

    sent = _parallel(copy, missing, concurrency)
    held = [p for p, here in zip(record.packs, present, strict=True) if here]
    sent += _parallel(copy_index, held, concurrency)
    dst.upload_blob(record_bytes, record_key)
    meter.enter("commit")
    _write_ref(dst, ref, condition, value)
    meter.enter("done")
    return MirrorReport(
        ref,
        old,
        value,
        False,
        True,
        sent_objects,
        skipped_objects,
        len(missing),
        len(record.packs) - len(missing),
        sum(sent) + len(record_bytes),
    )


# -- log and show ------------------------------------------------------------------------


def log(transport: Transport, ref: str, *, limit: int | None = None) -> list[LogEntry]:
    """Return the snapshots of ``ref``, newest first, following parent records.

    Stops at the first snapshot without a parent, after ``limit`` entries, or at a
    parent record the remote does not hold (a mirrored history), which the last
    entry marks with ``parent_missing``. An absent ref is :class:`RefNotFound`.
    """
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: no history to show", name=ref)
    entries: list[LogEntry] = []
    key: PackKey | None = _record_key(value)
    seen: set[PackKey] = set()
    while key is not None and (limit is None or len(entries) < limit):
        if key in seen:
            raise InvalidResponse(f"snapshot history loops at record {key.hex()}")
        seen.add(key)
        try:
            record = _fetch_record(transport, _ref_value(key))
        except PackNotFound:
            if not entries:
                raise
            entries[-1] = dataclasses.replace(entries[-1], parent_missing=True)
            break
        entries.append(
            LogEntry(
                key,
                record.root.hex(),
                record.parent,
                record.created_ns,
                len(record.packs),
                sum(p.size for p in record.packs),
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
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Listing:
    """List the files of the snapshot ``ref`` points at (or those under ``path``).

    Downloads only the packs that hold trees (found through the index blobs), never
    the packs of file contents.

    Raises:
        RefNotFound: the ref is absent.
        PackNotFound: a pack it needs is missing.
        FileNotFoundError: ``path`` is not in the snapshot.
    """
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: nothing to show", name=ref)
    meter = Meter(None)
    record = _fetch_record(transport, value, meter)
    indexes = _parallel(lambda p: _fetch_index(transport, p, meter), record.packs, concurrency)
    tree_packs = [
        pack
        for pack, rows in zip(record.packs, indexes, strict=True)
        if any(kind == KIND_TREE for _, kind in rows)
    ]
    objects, _ = _open_packs(transport, tree_packs, cache_dir, concurrency, meter)
    try:
        entries = list_files(objects, record.root, path)
    finally:
        objects.close()
    return Listing(ref, _record_key(value), record.root.hex(), tuple(entries))
