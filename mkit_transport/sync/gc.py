"""Garbage collection: delete the packs and blobs no ref reaches (spec/SPEC-SYNC.md, gc).

Mark, then sweep:

* **mark** every key reachable from every ref: the record blob a ref names, the packs
  and index blobs that record lists, then its parent record, as far as the chain of
  records exists (a pruned history ends where its first missing record is);
* **sweep** the listing (:meth:`~mkit_transport.transport.Transport.list_packs`): a
  key not marked is deleted only if the store wrote it more than ``grace`` seconds
  before the mark began; deletes go in batches (``delete_packs``).

With ``keep_last=N`` (``gc --keep-last N``) the mark follows only the newest N
records of each ref: older records, and the packs only they held, are swept like any
orphan (under the same grace period). Every record lists every pack its snapshot
needs, so a kept record never depends on a dropped one; the oldest kept record's
parent is then absent, which the walk already takes as the chain's end and ``log``
marks as truncated history.

Why the grace period makes gc safe against a running push: a push uploads its packs,
index blobs and record, and only then moves its ref by compare-and-swap. Everything
it uploads after the mark began is younger than the mark, so the sweep keeps it; a
push that uploaded *before* the mark and has not moved its ref yet is protected as
long as it moves it within ``grace`` of its uploads. What remains open is written
in the spec: a push stalled for longer than ``grace`` between its uploads and its
CAS, and a push that skips uploading a pack because an identical, unreachable one
is already there (an orphan of a lost race) and older than ``grace``. Choose a
grace period far longer than any push (the default is a day) and longer than the
clock skew between this host and the store (an S3 server stamps ``LastModified``).

Records and index blobs are read only through :mod:`.common` and :mod:`.model`, so
gc follows the snapshot formats wherever they go. Memory: the set of reachable keys
(about 100 bytes a key) and one listing page; never the whole listing.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from ..errors import InvalidArgument, InvalidResponse, PackNotFound, PayloadTooLarge
from ..hashes import PackKey
from ..transport import Transport
from .common import ref_value
from .model import Record
from .repack import RepackReport, check_max_unused, repack
from .walk import RecordStep, walk_last, walk_records

__all__ = ["DEFAULT_GRACE", "GcReport", "gc", "reachable"]

#: Keys deleted per :meth:`~Transport.delete_packs` call (one listing page's worth):
#: the file store then fsyncs each fan-out directory once a batch, not once a key.
_DELETE_BATCH = 1000

#: Default grace period: a day, far longer than any push between its uploads and CAS.
DEFAULT_GRACE = 24 * 3600.0


@dataclass
class GcReport:
    """What a gc found and did (or, with ``dry_run``, would do)."""

    refs: int = 0
    records: int = 0
    reachable: int = 0
    listed: int = 0
    listed_bytes: int = 0
    swept: int = 0
    swept_bytes: int = 0
    kept_young: int = 0
    kept_young_bytes: int = 0
    #: The keys swept (or, in a dry run, that a real run would sweep), hex, in the
    #: order they went: a dry run names what it would delete, not only how much.
    swept_keys: list[str] = field(default_factory=list)
    #: Debris of killed writers swept (temporary files, S3 multipart uploads).
    debris: int = 0
    dry_run: bool = False
    grace: float = DEFAULT_GRACE
    #: ``None``: keep every ref's whole history; N: only the newest N records of each.
    keep_last: int | None = None
    #: ``None``: no repack; P: packs rewritten until at most P% of what is kept is unused.
    max_unused: float | None = None
    #: What the repack found and did (None without ``max_unused``).
    repack: RepackReport | None = None

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-able data (the CLI's ``--json``)."""
        return asdict(self)


def reachable(
    transport: Transport, *, keep_last: int | None = None, cutoff: float | None = None
) -> tuple[set[PackKey], int, int]:
    """Mark: every key reachable from every ref; also how many refs and records.

    A ref whose value names no stored blob reaches nothing (not a snapshot ref, or
    one whose record is gone); a parent record that is missing ends its chain. A
    stored blob that is not a record is :class:`InvalidResponse`: gc cannot know
    what such a ref needs, so it refuses to sweep rather than guess. ``keep_last``
    (checked by :func:`gc`) bounds each ref's walk to its newest records.
    """
    live, cuts = _mark_refs(transport, keep_last, cutoff)
    return live, cuts.refs, cuts.records


@dataclass
class _Marked:
    """What a mark found besides the live keys: counts, and where kept histories end."""

    refs: int = 0
    records: int = 0
    #: The record just past each ref's kept history (``keep_last``), not live itself.
    cuts: set[PackKey] = field(default_factory=set)


def _mark_refs(
    transport: Transport, keep_last: int | None, cutoff: float | None
) -> tuple[set[PackKey], _Marked]:
    """Mark from every ref; with ``keep_last``, also find each history's cut.

    A dropped record younger than the grace period (``cutoff``) is kept, and so is
    everything it lists: the history then goes on to its parent. Otherwise a young
    dropped record would outlive the old packs it lists, and be a record naming
    missing packs on a ref's chain (fsck would rightly report it).
    """
    live: set[PackKey] = set()
    read: set[PackKey] = set()
    kept: dict[PackKey, int] = {}
    found = _Marked()
    refs = transport.list_refs("")
    found.refs = len(refs)
    for ref in refs:
        if keep_last is None:
            steps = walk_records(transport, ref.hash, live)
        else:
            steps = walk_last(transport, ref.hash, keep_last, kept)
        last: Record | None = None
        for step in steps:
            if not _mark(step, ref.name, live):
                last = None
                break
            read.add(step.key)
            last = step.record
        while keep_last is not None and last is not None and last.parent is not None:
            parent = last.parent
            if parent in live or cutoff is None or not _younger(transport, parent, cutoff):
                found.cuts.add(parent)
                break
            young = next(walk_last(transport, ref_value(parent), 1, {}), None)
            if young is None or not _mark(young, ref.name, live):
                break
            read.add(young.key)
            last = young.record
    found.records = len(read)
    found.cuts -= live
    return live, found


def _younger(transport: Transport, key: PackKey, cutoff: float) -> bool:
    """Whether the stored ``key`` was written after ``cutoff`` (absent: False)."""
    number = int.from_bytes(bytes(key), "big")
    after = PackKey((number - 1).to_bytes(32, "big")) if number else None
    info = next(iter(transport.list_packs(after=after, page_size=1)), None)
    return info is not None and info.key == key and info.mtime > cutoff


def _mark(step: RecordStep, ref: str, live: set[PackKey]) -> bool:
    """Mark one step's record and what it lists; False where the chain ends (absent)."""
    if isinstance(step.error, PackNotFound):
        return False
    if isinstance(step.error, PayloadTooLarge):
        raise step.error
    if step.record is None:
        raise InvalidResponse(
            f"ref {ref} reaches blob {step.key.hex()}, which is not a snapshot "
            f"record ({step.error}); gc refuses to sweep a store it cannot read"
        ) from step.error
    live.add(step.key)
    for pack in step.record.packs:
        live.add(pack.key)
        live.add(pack.index)
    return True


def gc(
    transport: Transport,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    now: float | None = None,
    keep_last: int | None = None,
    max_unused: float | None = None,
    work_dir: str | None = None,
) -> GcReport:
    """Delete every pack and blob no ref reaches that is older than ``grace`` seconds.

    ``keep_last=N`` keeps only the newest N records of each ref's history (and what
    they reach); older records and what only they held go like any orphan. N is a
    positive int: keeping no record would sweep what the refs name.
    ``max_unused=P`` also repacks (:mod:`.repack`, SPEC-GC section 4): packs the kept
    records list are rewritten, worst unused share first, until at most P percent of
    their bytes are unused; refs move by CAS to rewritten records, and the sweep then
    follows a second mark, so what the refs no longer reach goes (grace permitting)
    and a ref a concurrent push moved keeps what it names. ``work_dir`` holds the
    repack's scratch copy of the packs it reads.
    ``dry_run`` counts what would go and deletes nothing. ``now`` (seconds since the
    epoch) is when the mark starts; tests pass a later time to age the store.
    Raises what the transport raises; a store whose refs cannot be read (a corrupt
    record) is refused with :class:`InvalidResponse` before anything is deleted.
    """
    if (
        not isinstance(grace, int | float)
        or isinstance(grace, bool)
        or not math.isfinite(grace)
        or grace < 0
    ):
        raise InvalidArgument(f"grace must be a non-negative number of seconds, got {grace!r}")
    if not isinstance(dry_run, bool):
        raise InvalidArgument(f"dry_run must be a bool, not {type(dry_run).__name__}")
    if keep_last is not None and (
        not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1
    ):
        raise InvalidArgument(
            f"keep_last must be a positive number of records (or None for all), "
            f"got {keep_last!r}: keeping none would sweep what the refs name"
        )
    if max_unused is not None:
        max_unused = check_max_unused(max_unused)
    started = time.time() if now is None else float(now)
    cutoff = started - grace
    live, marked = _mark_refs(transport, keep_last, cutoff)
    report = GcReport(
        refs=marked.refs,
        records=marked.records,
        reachable=len(live),
        dry_run=dry_run,
        grace=float(grace),
        keep_last=keep_last,
        max_unused=max_unused,
    )
    if max_unused is not None:
        report.repack = repack(
            transport,
            max_unused=max_unused,
            keep_last=keep_last,
            dry_run=dry_run,
            work_dir=work_dir,
        )
        if report.repack.packs_written:
            # Mark again: the refs moved to rewritten records, so what only the old
            # ones listed is now unreachable; a ref a concurrent push moved instead
            # still names the old packs, and this mark keeps them (SPEC-GC, GC-12).
            live, marked = _mark_refs(transport, keep_last, cutoff)
            report.refs, report.records, report.reachable = marked.refs, marked.records, len(live)
    if marked.cuts and not dry_run:
        # The record past each kept history goes first, in a batch of its own: a gc
        # killed later in its sweep then leaves histories that end where they were
        # cut, never a dropped record naming packs the sweep already took (GC-19).
        for key in sorted(marked.cuts):  # counted as the listing below would have
            try:
                size = transport.pack_size(key)
            except PackNotFound:
                continue
            report.listed, report.listed_bytes = report.listed + 1, report.listed_bytes + size
            report.swept, report.swept_bytes = report.swept + 1, report.swept_bytes + size
            report.swept_keys.append(key.hex())
        transport.delete_packs(sorted(marked.cuts))
    doomed: list[PackKey] = []
    for info in transport.list_packs():
        report.listed += 1
        report.listed_bytes += info.size
        if info.key in live:
            continue
        if info.mtime > cutoff:
            report.kept_young += 1
            report.kept_young_bytes += info.size
            continue
        if not dry_run:
            doomed.append(info.key)
            if len(doomed) >= _DELETE_BATCH:
                transport.delete_packs(doomed)
                doomed = []
        report.swept += 1
        report.swept_bytes += info.size
        report.swept_keys.append(info.key.hex())
    if doomed:
        transport.delete_packs(doomed)
    if not dry_run:
        report.debris = transport.sweep_debris(grace)
    return report
