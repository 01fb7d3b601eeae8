"""Repack: rewrite packs that are mostly unused, then move refs to rewritten records.

A pack holding one live chunk cannot be deleted, so with chunked files a store fills
with packs that are mostly dead chunks (spec/SPEC-GC.md, section 4). :func:`repack`
rewrites the worst of them, restic's ``prune --max-unused`` policy:

1. **read**: every ref's kept records (all, or the newest ``keep_last``), every
   pack they list downloaded and verified into a scratch cache, and the objects
   their trees reach (trees, blobs, chunk lists and their chunks): the *live* set;
2. **choose**: a pack's *unused* bytes are its entries no kept tree reaches; packs
   are chosen in order of unused share, worst first, until the unused bytes of the
   packs left are at most ``max_unused`` percent of live plus unused;
3. **write new packs first**: the live objects of the chosen packs, each copied
   verbatim (stored frame) after its bytes were verified against its id, into new
   packs (trees and chunk lists apart from file contents), each uploaded with its
   index blob;
4. **new records**: every kept record that lists a chosen pack (or whose parent was
   rewritten) gets a rewritten copy listing the new packs it needs in place of the
   chosen ones (same root, same time); records are content-addressed, so the copy
   has a new key and its children are rewritten too;
5. **move each ref**, once every key written is checked to be still stored (as
   push re-checks before its CAS), by compare-and-swap from the value read in
   step 1 to its rewritten record. A ref that moved meanwhile (a concurrent push) is left alone:
   its CAS fails, nothing of it changes, and what this repack wrote for it is an
   unreferenced young orphan for a later gc.

Nothing is deleted here: :func:`~mkit_transport.sync.gc.gc` marks again after the
refs moved, and sweeps only what that second mark does not reach, under the grace
period. So a crash at any point leaves every ref on a complete record.

Memory: the ids of the packs the kept records list (32 bytes an object), the live
set, one object's bytes at a time. Disk: the packs the kept records list (scratch).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InvalidArgument, InvalidResponse, PackNotFound, RefConflict
from ..hashes import Hash, PackKey
from ..pack import PackFile, PackWriter, PreparedObject
from ..pack.format import ENTRY
from ..refs import RefWriteCondition
from ..transport import Transport
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .common import ref_value
from .model import TYPE_CHUNKED, TYPE_DIR, PackRef, Record, encode_index, encode_record
from .objects import PackObjects
from .options import DEFAULT_LEVEL, DEFAULT_PACK_SIZE
from .progress import Meter
from .restore import PackCache
from .walk import RecordStep, walk_last, walk_records

__all__ = ["DEFAULT_MAX_UNUSED", "RepackReport", "check_max_unused", "repack"]

#: Default unused share (percent) a repack leaves in the packs it keeps (restic's 5%).
DEFAULT_MAX_UNUSED = 5.0


@dataclass
class RepackReport:
    """What a repack found and did (or, in a dry run, would do).

    ``live_bytes`` and ``unused_bytes`` are the stored bytes (entry header and
    stored frame) of the objects the kept records' trees reach, and of the others,
    over every pack a kept record lists, before the repack.
    """

    packs_read: int = 0
    live_bytes: int = 0
    unused_bytes: int = 0
    packs_rewritten: int = 0
    bytes_rewritten: int = 0
    packs_written: int = 0
    bytes_written: int = 0
    records_rewritten: int = 0
    refs_moved: int = 0
    #: Refs a concurrent writer moved during the repack: left as they were.
    refs_conflicted: int = 0
    #: Hex keys of the packs rewritten (or that a dry run would rewrite).
    rewritten: tuple[str, ...] = ()


def check_max_unused(max_unused: object) -> float:
    """``max_unused`` as a float in [0, 100], else :class:`InvalidArgument`."""
    if (
        not isinstance(max_unused, int | float)
        or isinstance(max_unused, bool)
        or not math.isfinite(max_unused)
        or not 0 <= max_unused <= 100
    ):
        raise InvalidArgument(
            f"max_unused must be a percentage between 0 and 100, got {max_unused!r}"
        )
    return float(max_unused)


@dataclass(frozen=True, slots=True)
class _Kept:
    """The kept records: per ref, the value read and its chain; every record by key."""

    heads: list[tuple[str, Hash]]
    records: dict[PackKey, Record]


def _kept_records(transport: Transport, keep_last: int | None) -> _Kept:
    """Read each ref's kept chain (gc's mark already refused unreadable ones)."""
    heads: list[tuple[str, Hash]] = []
    records: dict[PackKey, Record] = {}
    for ref in transport.list_refs(""):
        steps: Iterator[RecordStep]
        if keep_last is None:
            steps = walk_records(transport, ref.hash, set())
        else:
            steps = walk_last(transport, ref.hash, keep_last, {})
        first = True
        for step in steps:
            if step.record is None:
                if isinstance(step.error, PackNotFound):
                    break
                raise InvalidResponse(
                    f"ref {ref.name} reaches blob {step.key.hex()}, which is not a "
                    f"snapshot record ({step.error}); repack refuses to guess"
                ) from step.error
            records[step.key] = step.record
            if first:
                heads.append((ref.name, ref.hash))
                first = False
    return _Kept(heads, records)


def tree_objects(
    objects: PackObjects, root: bytes, metadata: set[bytes] | None = None
) -> set[bytes]:
    """Every object a snapshot's tree reaches: trees, blobs, chunk lists, chunks.

    The trees and chunk lists are also added to ``metadata`` when given: repack
    keeps them in packs of their own, as push does (metadata packs).
    """
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        tree = stack.pop()
        if tree in seen:
            continue
        seen.add(tree)
        if metadata is not None:
            metadata.add(tree)
        for entry in objects.tree(tree):
            if entry.type == TYPE_DIR:
                stack.append(entry.oid)
                continue
            seen.add(entry.oid)
            if entry.type == TYPE_CHUNKED:
                if metadata is not None:
                    metadata.add(entry.oid)
                _kind, data = objects.read_bytes(entry.oid, MAX_CHUNK_LIST_SIZE)
                seen.update(cid for cid, _length in decode_chunk_list(data).chunks)
    return seen


@dataclass(slots=True)
class _PackUse:
    """One listed pack: its ref, its object ids, and its live and unused stored bytes."""

    ref: PackRef
    ids: frozenset[bytes]
    live: int = 0
    unused: int = 0


def _entry_sizes(path: str, pack: PackFile) -> Iterator[tuple[bytes, int]]:
    """``(oid, stored bytes)`` of each entry: its header and its stored frame."""
    with open(path, "rb") as f:
        for oid in pack.ids():
            offset = pack.find(oid)
            assert offset is not None
            head = os.pread(f.fileno(), ENTRY.size, offset)
            if len(head) != ENTRY.size:
                raise InvalidResponse(f"pack {path}: entry of {oid.hex()} is truncated")
            stored = int(ENTRY.unpack(head)[4])
            yield oid, ENTRY.size + stored


def _measure(
    kept: _Kept, objects: PackObjects, cache: PackCache, uses: list[_PackUse], meta: set[bytes]
) -> set[bytes]:
    """The live set (what the kept trees reach); each pack's live and unused bytes.

    The live trees and chunk lists are also added to ``meta``.
    """
    live: set[bytes] = set()
    for record in kept.records.values():
        live |= tree_objects(objects, record.root, meta)
    for use in uses:
        with PackFile(cache.path(use.ref.key), check_trailer=False) as file:
            for oid, size in _entry_sizes(file.path, file):
                if oid in live:
                    use.live += size
                else:
                    use.unused += size
    return live


def _choose(uses: list[_PackUse], max_unused: float) -> list[_PackUse]:
    """The packs to rewrite: worst unused share first, until the rest is within bounds.

    As restic's ``--max-unused P%``: the unused bytes left in the packs kept must be
    at most P% of live plus unused, i.e. ``unused <= P / (100 - P) * live``.
    """
    live = sum(u.live for u in uses)
    unused = sum(u.unused for u in uses)
    limit = math.inf if max_unused >= 100 else max_unused / (100 - max_unused) * live
    chosen: list[_PackUse] = []
    order = sorted(
        (u for u in uses if u.unused > 0),
        key=lambda u: (-u.unused / (u.live + u.unused), bytes(u.ref.key)),
    )
    for use in order:
        if unused <= limit:
            break
        chosen.append(use)
        unused -= use.unused
    return chosen


class _NewPacks:
    """Writes the moved objects into new packs of at most ``pack_size``, uploads each."""

    def __init__(self, transport: Transport, spool: str, pack_size: int, level: int) -> None:
        self.transport, self.spool, self.pack_size, self.level = (
            transport,
            spool,
            pack_size,
            level,
        )
        self.packs: list[PackRef] = []
        #: Each moved object's new pack (an index into ``packs``).
        self.home: dict[bytes, int] = {}
        self._writer: PackWriter | None = None
        self._path = os.path.join(spool, "repack.pack")
        self._pending: list[bytes] = []

    def add(self, source: PackFile, oid: bytes) -> None:
        """Copy ``oid``'s stored entry verbatim, once its bytes hashed to its id."""
        if oid in self.home or (self._writer is not None and oid in self._writer):
            return
        kind, raw_len = source.read_object(oid, None)  # verifies the bytes against the id
        offset = source.find(oid)
        assert offset is not None
        with open(source.path, "rb") as f:
            head = os.pread(f.fileno(), ENTRY.size, offset)
            _k, codec, _id, _raw, stored_len = ENTRY.unpack(head)
            stored = os.pread(f.fileno(), stored_len, offset + ENTRY.size)
        if len(stored) != stored_len:
            raise InvalidResponse(f"pack {source.path}: entry of {oid.hex()} is truncated")
        writer = self._open()
        if writer.size + ENTRY.size + stored_len > self.pack_size and len(writer):
            self.seal()
            writer = self._open()
        writer.add_prepared(PreparedObject(kind, oid, raw_len, codec, stored))
        self._pending.append(oid)

    def _open(self) -> PackWriter:
        if self._writer is None:
            self._out = open(self._path, "w+b")  # noqa: SIM115 - closed by seal()
            self._writer = PackWriter(self._out, level=self.level)
        return self._writer

    def seal(self) -> None:
        """Finish the pack being written and upload it (unless stored) and its index."""
        if self._writer is None:
            return
        summary = self._writer.finish()
        self._out.close()
        self._writer = None
        index = encode_index(summary.key, [(e.oid, e.kind) for e in summary.entries])
        if not self.transport.pack_exists(summary.key):
            self.transport.upload_pack_stream(summary.key, _FileBytes(self._path), summary.size)
        self.transport.upload_blob(index, PackKey.of(index))
        os.unlink(self._path)
        number = len(self.packs)
        self.packs.append(
            PackRef(summary.key, PackKey.of(index), summary.size, len(summary.entries))
        )
        for oid in self._pending:
            self.home[oid] = number
        self._pending = []


class _FileBytes:
    """A re-iterable chunk source over a sealed pack (a retried upload replays it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk


def repack(
    transport: Transport,
    *,
    max_unused: float = DEFAULT_MAX_UNUSED,
    keep_last: int | None = None,
    dry_run: bool = False,
    pack_size: int = DEFAULT_PACK_SIZE,
    level: int = DEFAULT_LEVEL,
    work_dir: str | None = None,
) -> RepackReport:
    """Rewrite the packs of the kept records whose unused share is worst (module doc).

    Called by :func:`~mkit_transport.sync.gc.gc` (``max_unused``), which checks the
    arguments and deletes what the refs no longer reach afterwards; this deletes
    nothing. ``work_dir`` holds the scratch cache of downloaded packs.
    """
    max_unused = check_max_unused(max_unused)
    report = RepackReport()
    kept = _kept_records(transport, keep_last)
    listed: dict[PackKey, PackRef] = {}
    for record in kept.records.values():
        for pack in record.packs:
            listed.setdefault(pack.key, pack)
    if not listed:
        return report
    with tempfile.TemporaryDirectory(prefix="mkit-repack-", dir=work_dir) as scratch:
        cache = PackCache(scratch)
        meter = Meter(None)
        objects = PackObjects()
        uses: list[_PackUse] = []
        try:
            for pack in listed.values():
                file, _fresh = cache.open(transport, pack, meter)
                ids = frozenset(file.ids())
                objects.add(file)
                uses.append(_PackUse(pack, ids))
            meta: set[bytes] = set()
            live = _measure(kept, objects, cache, uses, meta)
            report.packs_read = len(uses)
            report.live_bytes = sum(u.live for u in uses)
            report.unused_bytes = sum(u.unused for u in uses)
            chosen = _choose(uses, max_unused)
            report.packs_rewritten = len(chosen)
            report.bytes_rewritten = sum(u.ref.size for u in chosen)
            report.rewritten = tuple(u.ref.key.hex() for u in chosen)
            chosen_keys = {u.ref.key for u in chosen}
            if dry_run or not chosen:
                return report
            new = _NewPacks(transport, scratch, pack_size, level)
            for wanted in (live & meta, live - meta):  # metadata packs first, then blobs
                for use in sorted(chosen, key=lambda u: bytes(u.ref.key)):
                    with PackFile(cache.path(use.ref.key), check_trailer=False) as file:
                        for oid in sorted(use.ids & wanted):
                            new.add(file, oid)
                new.seal()
            report.packs_written = len(new.packs)
            report.bytes_written = sum(p.size for p in new.packs)
            rewriter = _Rewriter(
                transport, kept.records, objects, {u.ref.key: u for u in uses}, chosen_keys, new
            )
            _move_refs(transport, kept.heads, rewriter, report)
            report.records_rewritten = rewriter.written
        finally:
            objects.close()
    return report


def _move_refs(
    transport: Transport,
    heads: list[tuple[str, Hash]],
    rewriter: _Rewriter,
    report: RepackReport,
) -> None:
    """CAS each ref from the value read to its rewritten record; a moved ref stays.

    Every record is rewritten (and uploaded) before the first ref moves; then every
    new key is checked once more, as push does before its CAS (SPEC-GC, GC-7): an
    identical pack, index blob or record already stored was not uploaded again, so
    another gc may have swept it as an old orphan meanwhile.
    """
    targets = [(name, value, rewriter.rewrite(PackKey(bytes(value)))) for name, value in heads]
    fresh = [k for p in rewriter.new.packs for k in (p.key, p.index)] + rewriter.uploaded
    missing = [key for key in fresh if not transport.pack_exists(key)]
    if missing:
        raise PackNotFound(
            f"{len(missing)} key(s) this repack wrote were deleted before its refs moved "
            f"(e.g. {missing[0].hex()}, by another gc?); no ref was moved: run gc again"
        )
    for name, value, target in targets:
        if target == PackKey(bytes(value)):
            continue
        try:
            transport.update_ref(name, RefWriteCondition.match(value), ref_value(target))
        except RefConflict:
            report.refs_conflicted += 1
            continue
        report.refs_moved += 1


class _Rewriter:
    """Rewrites kept records onto the new packs, parents before children (memoised)."""

    def __init__(
        self,
        transport: Transport,
        records: dict[PackKey, Record],
        objects: PackObjects,
        uses: dict[PackKey, _PackUse],
        chosen: set[PackKey],
        new: _NewPacks,
    ) -> None:
        self.transport, self.records, self.objects = transport, records, objects
        self.uses, self.chosen, self.new = uses, chosen, new
        self.memo: dict[PackKey, PackKey] = {}
        self.written = 0
        #: The record blobs written (:func:`_move_refs` checks them before moving refs).
        self.uploaded: list[PackKey] = []

    def rewrite(self, key: PackKey) -> PackKey:
        """The key of ``key``'s rewritten record (``key`` itself if unchanged)."""
        chain: list[PackKey] = []
        at: PackKey | None = key
        while at is not None and at in self.records and at not in self.memo:
            chain.append(at)
            at = self.records[at].parent
        for step in reversed(chain):
            self.memo[step] = self._one(step)
        return self.memo.get(key, key)

    def _one(self, key: PackKey) -> PackKey:
        record = self.records[key]
        parent = record.parent
        new_parent = self.memo.get(parent, parent) if parent is not None else None
        moved = [p for p in record.packs if p.key in self.chosen]
        if not moved and new_parent == parent:
            return key
        packs: list[PackRef] = []
        if moved:
            stays = [p for p in record.packs if p.key not in self.chosen]
            held: set[bytes] = set()
            for pack in stays:
                held |= self.uses[pack.key].ids
            needed = sorted(
                {
                    self.new.home[oid]
                    for oid in tree_objects(self.objects, record.root)
                    if oid not in held and oid in self.new.home
                }
            )
            fresh = [self.new.packs[i] for i in needed if self.new.packs[i] not in stays]
            for pack in record.packs:
                if pack.key not in self.chosen:
                    packs.append(pack)
                elif fresh:  # the new packs take the place of the first moved one
                    packs.extend(fresh)
                    fresh = []
        else:
            packs = list(record.packs)
        data = encode_record(Record(record.root, new_parent, record.created_ns, tuple(packs)))
        blob = PackKey.of(data)
        self.transport.upload_blob(data, blob)
        self.uploaded.append(blob)
        self.written += 1
        return blob
