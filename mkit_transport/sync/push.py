"""``push``: a directory becomes a snapshot on a remote, ref last (spec/SPEC-SYNC.md).

The invariants:

* **ref last, all or nothing**: a push uploads every pack, index blob and the
  record before it compare-and-swaps the ref; on any earlier error the ref is
  untouched and the remote stays pullable;
* **incremental**: an object in a pack listed by the remote tip's record is never
  sent again; what the remote holds is learnt from the record and the small index
  blobs (metadata), never from the packs;
* **conflict**: the ref is written with ``match(tip seen at start)`` (``MISSING``
  for a new ref); a lost race is :class:`RefConflict` saying "non-fast-forward"
  and carrying the remote's value.

The pipeline's machinery (scan hand-off, pack building, parallel uploads) lives in
:mod:`.packer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, Final

from ..errors import InvalidArgument, InvalidResponse, PackNotFound
from ..hashes import Hash, PackKey
from ..refs import RefWriteCondition
from ..transport import Transport
from .blobcache import BlobCache
from .chunking import DEFAULT_CHUNKING, ChunkParams
from .common import (
    fetch_index,
    fetch_record,
    index_rows,
    non_fast_forward,
    parallel,
    record_key,
    ref_value,
    write_condition,
    write_ref,
)
from .model import PackRef, Record, encode_record
from .options import TransferOptions, resolve
from .packer import ScanStream, UploadedPack, build_and_upload
from .progress import Limiter, Meter, Progress
from .reports import PushReport
from .scan import Snapshot, scan
from .statcache import StatCache, default_stat_cache_dir

__all__ = ["push"]


def push(
    source_dir: str | os.PathLike[str],
    transport: Transport,
    ref: str,
    *,
    expect: RefWriteCondition | None = None,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    options: TransferOptions | None = None,
    concurrency: int | None = None,
    level: int | None = None,
    pack_size: int | None = None,
    bwlimit: float | None = None,
    spool_dir: str | None = None,
    repair: bool = False,
    stat_cache: bool = True,
    stat_cache_dir: str | None = None,
    _chunking: ChunkParams = DEFAULT_CHUNKING,
) -> PushReport:
    """Push the tree at ``source_dir`` as a snapshot and point ``ref`` at it, last.

    Sends only objects the remote tip's packs do not hold; an unchanged tree writes
    nothing. The ref is written with ``expect`` (default: ``match`` of the value
    read at the start, or ``MISSING``); a lost race raises :class:`RefConflict`
    ("non-fast-forward", with ``current``). ``dry_run`` reads only.

    ``options`` carries the transfer knobs (:class:`TransferOptions`: concurrency,
    zstd level, pack size, ``bwlimit`` in upload bytes per second, ``spool_dir``
    where packs are built); the same knobs are also taken as keywords, but not both.

    ``repair`` (spec/SPEC-FSCK.md, FSCK-6): send every object as a first push does,
    and check each pack and index blob found already stored, replacing a damaged copy
    (:meth:`~Transport.repair_pack_stream`) instead of skipping it; the record names
    the packs this push built, its parent is the old tip. A push over a rotted copy
    thus heals it. Off by default (then a stored pack is trusted unread).

    ``stat_cache`` (spec/SPEC-SYNC.md section 9, "Stat cache"): keep a local cache of each
    file's ``lstat`` and content id, so a re-push does not read files whose size,
    mtime, ctime, inode and mode are unchanged (racily clean ones excepted). Like
    git's index it cannot see a change that keeps all of those; ``False`` hashes
    every file and neither reads nor writes the cache. ``stat_cache_dir`` is where
    the cache files live (default ``$XDG_CACHE_HOME/mkit_transport/stat``). A dry
    run reads the cache but does not write it. Beside it (``blobs/``) the push keeps
    verified copies of the remote's records and index blobs (:mod:`.blobcache`),
    so the push of an edit reads what the remote holds from local disk; off with
    ``stat_cache=False`` too.

    ``_chunking`` (private, for tests): the chunker's sizes; a file over its
    ``max_size`` is chunked (SPEC-SYNC section 8).

    Raises:
        RefConflict: the ref moved (non-fast-forward) or does not satisfy ``expect``.
        PayloadTooLarge: a file is larger than one pack can hold.
        InvalidArgument: ``options`` and a keyword knob were both given, or
            ``repair`` or ``stat_cache`` is not a bool, or ``stat_cache_dir`` not a
            str.
        OSError: the source cannot be read, or a file changed while it was pushed.
    """
    knobs = resolve(
        "push",
        options,
        concurrency=concurrency,
        level=level,
        pack_size=pack_size,
        bwlimit=bwlimit,
        spool_dir=spool_dir,
    )
    blobs = _blob_cache(repair, stat_cache, stat_cache_dir)
    meter = Meter(progress)
    meter.enter("plan")
    old = transport.read_ref(ref)
    condition = write_condition(expect, old)
    if not condition.allows(old):
        raise non_fast_forward(ref, old)
    meter.enter("scan")
    build = partial(
        build_and_upload,
        transport,
        level=knobs.level,
        pack_size=knobs.pack_size,
        concurrency=knobs.concurrency,
        limiter=Limiter(knobs.bwlimit),
        meter=meter,
        spool_dir=knobs.spool_dir,
        repair=repair,
        keep=blobs.put if blobs is not None else None,
    )
    # A push to a new ref learns what the store holds from the tips of other refs
    # (SYNC-59), so a branch of a pushed tree sends only what differs.
    borrowed = [] if old is not None or repair else _borrowed_packs(transport, ref, meter, blobs)
    known: dict[bytes, int] = {}
    with _open_cache(source_dir, _chunking, stat_cache, stat_cache_dir) as cache:
        if (old is None or repair) and not dry_run:
            # A first push sends what the store lacks: pack blobs while the scan goes on
            # (so does a repairing push, which trusts nothing the remote holds).
            meter.enter("upload")
            if borrowed:
                known = _remote(transport, borrowed, meter, blobs, knobs.concurrency)
            with ScanStream(source_dir, knobs.pack_size, _chunking, cache, known) as stream:
                uploaded = build(stream.groups(), first=1)  # trees first in the record
            assert stream.snap is not None
            snap = stream.snap
        else:
            uploaded = None
            snap = scan(source_dir, _chunking=_chunking, stat_cache=cache)
        if cache is not None and not dry_run:
            cache.save()
    if uploaded is not None:
        return _commit_streamed(
            transport, ref, condition, snap, old, uploaded, known, borrowed, meter, blobs
        )
    meter.enter("plan", total=snap.count)
    base = None if repair else _base_record(transport, old, condition, meter, blobs)
    # What the remote holds: the tip's packs, or (a dry run to a new ref) the packs
    # borrowed from other refs' tips.
    packs = list(base.packs) if base is not None else borrowed

    def report(**changes: Any) -> PushReport:
        return _push_report(ref, old, snap, meter, dry_run=dry_run, **changes)

    if base is not None and base.root == snap.root:
        return report()
    remote = _remote(transport, packs, meter, blobs, knobs.concurrency) if packs else {}
    # By id, in C-level passes; a source is made only for what is sent (an edit's few).
    ids = snap.ids()
    send = list(itertools.filterfalse(remote.__contains__, ids))
    kept = sorted(p for p in set(map(remote.get, ids)) if p is not None)
    sources = [(oid, snap.source(oid)) for oid in send]
    raw = sum(src.size for _oid, src in sources)
    meter.add(skipped=snap.count - len(send))
    if dry_run:
        return report(
            objects_sent=len(send),
            objects_skipped=snap.count - len(send),
            raw_bytes_sent=raw,
        )
    meter.enter("upload")
    # Chunk lists travel with the trees (metadata packs); chunks with the blobs.
    trees = [(oid, src) for oid, src in sources if src.with_trees]
    contents = [(oid, src) for oid, src in sources if not src.with_trees]
    uploaded = build([trees, contents])
    kept_packs = [packs[i] for i in kept]
    parent = record_key(old) if base is not None and old is not None else None
    return _commit(
        transport,
        ref,
        condition,
        snap,
        parent,
        kept_packs,
        uploaded,
        meter,
        raw,
        old,
        len(send),
        blobs,
    )


def _blob_cache(repair: bool, stat_cache: bool, stat_cache_dir: str | None) -> BlobCache | None:
    """Check the flags; the local copies of metadata blobs, unless the stat cache is off."""
    for name, flag in (("repair", repair), ("stat_cache", stat_cache)):
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name} must be a bool, not {type(flag).__name__}")
    if stat_cache_dir is not None and not isinstance(stat_cache_dir, str):
        raise InvalidArgument(f"stat_cache_dir must be a str, not {type(stat_cache_dir).__name__}")
    if not stat_cache:
        return None
    return BlobCache(os.path.join(stat_cache_dir or default_stat_cache_dir(), "blobs"))


def _remote(
    transport: Transport,
    packs: Sequence[PackRef],
    meter: Meter,
    blobs: BlobCache | None,
    concurrency: int,
) -> dict[bytes, int]:
    """What the remote holds: each object of ``packs``, at the first pack holding it.

    The index blobs come from the local copies first, the rest in parallel: a push
    of an edit usually finds every one in its copies (the push before wrote or read
    them), and then starts no pool and downloads nothing.
    """
    rows: list[list[tuple[bytes, int]] | None] = [None] * len(packs)
    missing: list[int] = []
    for position, pack in enumerate(packs):
        data = blobs.get(pack.index) if blobs is not None else None
        if data is None:
            missing.append(position)
        else:
            rows[position] = index_rows(pack, data)
    fetched = parallel(
        lambda i: fetch_index(transport, packs[i], meter, blobs), missing, concurrency
    )
    for position, got in zip(missing, fetched, strict=True):
        rows[position] = got
    # Later packs go in first and an earlier one overwrites: one C-level pass per
    # pack, not a Python step per row.
    remote: dict[bytes, int] = {}
    for position in reversed(range(len(rows))):
        remote.update(dict.fromkeys(map(itemgetter(0), rows[position] or ()), position))
    return remote


#: At most this many other refs' tips are read by a push to a new ref (SYNC-59).
MAX_BORROWED_REFS: Final = 16


def _borrowed_packs(
    transport: Transport, ref: str, meter: Meter, blobs: BlobCache | None
) -> list[PackRef]:
    """The packs of other refs' tips, which a push to the new ``ref`` need not resend.

    Its siblings first (the refs beside it: ``refs/heads/*`` for a branch), else every
    ref; of those, the last :data:`MAX_BORROWED_REFS` by name (date-stamped backup refs:
    the newest). A ref whose record cannot be read is skipped: another ref's damage
    is fsck's to report, not a reason to fail this push. Each pack once, in order.
    """
    parent = ref.rpartition("/")[0]
    refs = [
        (f"{parent}/{r.name}" if parent else r.name, r.hash) for r in transport.list_refs(parent)
    ]
    if not [name for name, _value in refs if name != ref]:
        refs = [(r.name, r.hash) for r in transport.list_refs("")]
    values = [value for name, value in refs if name != ref][-MAX_BORROWED_REFS:]
    packs: dict[PackKey, PackRef] = {}
    for value in values:
        try:
            record = fetch_record(transport, value, meter, blobs)
        except (PackNotFound, InvalidResponse):
            continue
        for pack in record.packs:
            packs.setdefault(pack.key, pack)
    return list(packs.values())


def _open_cache(
    source_dir: str | os.PathLike[str], chunking: ChunkParams, enabled: bool, directory: str | None
) -> contextlib.AbstractContextManager[StatCache | None]:
    """The source's stat cache, or a context holding ``None`` when it is off."""
    if not enabled:
        return contextlib.nullcontext()
    return StatCache.open(source_dir, chunking, directory)


def _commit(
    transport: Transport,
    ref: str,
    condition: RefWriteCondition,
    snap: Snapshot,
    parent: PackKey | None,
    kept: list[PackRef],
    uploaded: list[UploadedPack],
    meter: Meter,
    raw: int,
    old: Hash | None,
    sent: int,
    blobs: BlobCache | None,
    *,
    borrowed: bool = False,
) -> PushReport:
    """Upload the record naming the kept and new packs, then CAS the ref (last).

    The record is kept in ``blobs`` too (the next push reads it from there), and
    ``blobs`` is trimmed to its budget. ``borrowed``: the kept packs are other refs'
    (a push to a new ref), so they are checked before the CAS like the packs found
    stored (GC-7): the ref this push writes does not name them yet.
    """
    packs = kept + [up.pack for up in uploaded]
    record = encode_record(Record(snap.root, parent, time.time_ns(), tuple(packs)))
    record_blob = PackKey.of(record)
    transport.upload_blob(record, record_blob)
    new = ref_value(record_blob)
    meter.enter("commit")
    _check_still_stored(transport, uploaded, kept if borrowed else [])
    write_ref(transport, ref, condition, new)
    if blobs is not None:
        blobs.put(record_blob, record)
        blobs.trim()
    return _push_report(
        ref,
        old,
        snap,
        meter,
        new=new,
        updated=True,
        objects_sent=sent,
        objects_skipped=snap.count - sent,
        raw_bytes_sent=raw,
        packs_uploaded=sum(1 for up in uploaded if up.sent),
        packs_skipped=sum(1 for up in uploaded if not up.sent),
        bytes_uploaded=sum(up.bytes_sent for up in uploaded) + len(record),
    )


def _commit_streamed(
    transport: Transport,
    ref: str,
    condition: RefWriteCondition,
    snap: Snapshot,
    old: Hash | None,
    uploaded: list[UploadedPack],
    known: dict[bytes, int],
    borrowed: list[PackRef],
    meter: Meter,
    blobs: BlobCache | None,
) -> PushReport:
    """Commit a push whose packs were built while the scan went on (a first push).

    Objects ``known`` (held by ``borrowed`` packs of other refs' tips) were not sent:
    the record keeps the borrowed packs that hold any of them.
    """
    meter.enter("upload", total=len(snap.objects))
    held = [oid for oid in snap.objects if oid in known]
    raw = sum(src.size for oid, src in snap.objects.items() if oid not in known)
    parent = record_key(old) if old is not None else None
    kept = [borrowed[i] for i in sorted(set(map(known.__getitem__, held)))]
    return _commit(
        transport,
        ref,
        condition,
        snap,
        parent,
        kept,
        uploaded,
        meter,
        raw,
        old,
        len(snap.objects) - len(held),
        blobs,
        borrowed=bool(kept),
    )


def _check_still_stored(
    transport: Transport, uploaded: list[UploadedPack], borrowed: Sequence[PackRef] = ()
) -> None:
    """Fail before the CAS if a key this push found stored, not sent, is gone now.

    A pack the push skipped because it was already there (and every index blob,
    whose upload of an identical stored copy may be skipped too) was not written by
    this push, so its age is not this push's: gc may have swept it as an old orphan
    since (spec/SPEC-GC.md, section 2). Committing would point the ref at a missing
    pack; failing leaves the ref and the old snapshot as they were, and pushing
    again uploads the pack anew. Packs kept from the base record need no check: the
    ref names them, and if the ref moved the CAS fails anyway; packs borrowed from
    another ref's tip (``borrowed``, a push to a new ref) are checked. The keys are checked
    one after another in this thread: a push of an edit has two or three, and a pool
    started for them cost more than the checks on a loaded machine (~20 ms a push,
    profiled: each thread start waits for the thread to be scheduled).
    """
    keys = [up.pack.key for up in uploaded if not up.sent] + [up.pack.index for up in uploaded]
    keys += [key for pack in borrowed for key in (pack.key, pack.index)]
    missing = [key for key in keys if not transport.pack_exists(key)]
    if missing:
        raise PackNotFound(
            f"{len(missing)} pack(s) or index blob(s) this push found stored were deleted "
            f"before its ref was written (e.g. {missing[0].hex()}, by gc?); nothing was "
            "committed: push again"
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
        objects_skipped=snap.count,
        raw_bytes_sent=0,
        packs_uploaded=0,
        packs_skipped=0,
        bytes_uploaded=0,
        bytes_downloaded=meter.bytes_in,
        files=snap.files,
    )
    return dataclasses.replace(nothing, **changes)


def _base_record(
    transport: Transport,
    old: Hash | None,
    condition: RefWriteCondition,
    meter: Meter,
    blobs: BlobCache | None,
) -> Record | None:
    """The remote tip's record; a forced push tolerates an unreadable one (starts over)."""
    if old is None:
        return None
    try:
        return fetch_record(transport, old, meter, blobs)
    except (PackNotFound, InvalidResponse):
        if condition.kind == "any":
            return None
        raise
