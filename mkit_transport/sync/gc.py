"""Garbage collection: delete the packs and blobs no ref reaches (spec/SPEC-SYNC.md, gc).

Mark, then sweep:

* **mark** every key reachable from every ref: the record blob a ref names, the packs
  and index blobs that record lists, then its parent record, as far as the chain of
  records exists (a pruned history ends where its first missing record is);
* **sweep** the listing (:meth:`~mkit_transport.transport.Transport.list_packs`): a
  key not marked is deleted only if the store wrote it more than ``grace`` seconds
  before the mark began.

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
from dataclasses import asdict, dataclass

from ..errors import InvalidArgument, InvalidResponse, PackNotFound, PayloadTooLarge
from ..hashes import PackKey
from ..transport import Transport
from .walk import walk_records

__all__ = ["DEFAULT_GRACE", "GcReport", "gc", "reachable"]

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
    #: Debris of killed writers swept (temporary files, S3 multipart uploads).
    debris: int = 0
    dry_run: bool = False
    grace: float = DEFAULT_GRACE

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-able data (the CLI's ``--json``)."""
        return asdict(self)


def reachable(transport: Transport) -> tuple[set[PackKey], int, int]:
    """Mark: every key reachable from every ref; also how many refs and records.

    A ref whose value names no stored blob reaches nothing (not a snapshot ref, or
    one whose record is gone); a parent record that is missing ends its chain. A
    stored blob that is not a record is :class:`InvalidResponse`: gc cannot know
    what such a ref needs, so it refuses to sweep rather than guess.
    """
    live: set[PackKey] = set()
    records = 0
    refs = transport.list_refs("")
    for ref in refs:
        for step in walk_records(transport, ref.hash, live):
            if isinstance(step.error, PackNotFound):
                break
            if isinstance(step.error, PayloadTooLarge):
                raise step.error
            if step.record is None:
                raise InvalidResponse(
                    f"ref {ref.name} reaches blob {step.key.hex()}, which is not a snapshot "
                    f"record ({step.error}); gc refuses to sweep a store it cannot read"
                ) from step.error
            records += 1
            for pack in step.record.packs:
                live.add(pack.key)
                live.add(pack.index)
    return live, len(refs), records


def gc(
    transport: Transport,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """Delete every pack and blob no ref reaches that is older than ``grace`` seconds.

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
    started = time.time() if now is None else float(now)
    cutoff = started - grace
    live, refs, records = reachable(transport)
    report = GcReport(
        refs=refs, records=records, reachable=len(live), dry_run=dry_run, grace=float(grace)
    )
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
            transport.delete_pack(info.key)
        report.swept += 1
        report.swept_bytes += info.size
    if not dry_run:
        report.debris = transport.sweep_debris(grace)
    return report
