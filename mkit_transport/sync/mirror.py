"""``mirror``: copy the snapshot a ref points at from one remote to another, ref last.

Bytes flow from the source transport to the destination through memory only,
streamed and verified on the way (spec/SPEC-SYNC.md, mirror). A mirror first makes
a plan (which packs, index blobs and how many bytes the destination lacks), from
metadata only; a dry run reports that plan and a real run carries it out, so the
two report the same figures and the progress totals are known before the first
byte moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from ..errors import RefNotFound
from ..hashes import Hash, PackKey
from ..refs import RefWriteCondition
from ..transport import Transport
from .common import non_fast_forward, parallel, record_key, write_condition, write_ref
from .model import PackRef, Record, decode_record
from .options import TransferOptions, resolve
from .progress import Limiter, Meter, Progress
from .reports import MirrorReport
from .restore import verified_chunks

__all__ = ["mirror"]


class _RemotePack:
    """A re-iterable source of one pack's bytes from a remote, verified as they pass.

    Each iteration re-opens the download (so the destination's upload can be
    retried) and feeds a :class:`PackVerifier`: a corrupt pack raises from inside the
    iteration, so the destination never commits it. Each chunk waits for its slot
    under the bandwidth cap before it is handed on.
    """

    def __init__(self, src: Transport, pack: PackRef, meter: Meter, limiter: Limiter) -> None:
        self.src, self.pack, self.meter, self.limiter = src, pack, meter, limiter

    def __iter__(self) -> Iterator[bytes]:
        key = self.pack.key
        for chunk in verified_chunks(
            self.src, key, "source", self.meter, objects=True, relayed=True
        ):
            self.limiter.take(len(chunk))
            yield chunk


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the destination lacks, found from metadata only (no pack is read).

    ``packs``: the packs to copy (each with its index blob when that is missing
    too); ``indexes``: the missing index blobs with their sizes on the source;
    ``record``: False on the fast path (another destination ref already names the
    snapshot, so nothing but the ref is written).
    """

    packs: tuple[PackRef, ...]
    indexes: dict[PackKey, int]
    record: bool
    record_size: int

    @property
    def bytes(self) -> int:
        """The bytes the copy sends: packs, index blobs and the record."""
        body = sum(p.size for p in self.packs) + sum(self.indexes.values())
        return body + (self.record_size if self.record else 0)


def _held_elsewhere(dst: Transport, value: Hash) -> bool:
    """Whether a destination ref already holds ``value`` (so its snapshot is whole there).

    A ref is written last, after every pack, index blob and the record it needs, and
    gc keeps what a ref reaches: such a snapshot needs no byte copied. The record's
    presence is checked first (one request), so the refs are listed only when it is
    there.
    """
    if not dst.pack_exists(record_key(value)):
        return False
    return any(found.hash == value for found in dst.list_refs())


def _plan(
    src: Transport, dst: Transport, value: Hash, record: Record, size: int, concurrency: int
) -> _Plan:
    if _held_elsewhere(dst, value):
        return _Plan(packs=(), indexes={}, record=False, record_size=size)
    keys = [p.key for p in record.packs] + [p.index for p in record.packs]
    present = dict(zip(keys, parallel(dst.pack_exists, keys, concurrency), strict=True))
    missing = [p.index for p in record.packs if not present[p.index]]
    sizes = parallel(src.pack_size, missing, concurrency)
    return _Plan(
        packs=tuple(p for p in record.packs if not present[p.key]),
        indexes=dict(zip(missing, sizes, strict=True)),
        record=True,
        record_size=size,
    )


def mirror(
    src: Transport,
    dst: Transport,
    ref: str,
    *,
    expect: RefWriteCondition | None = None,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    options: TransferOptions | None = None,
    concurrency: int | None = None,
    bwlimit: float | None = None,
) -> MirrorReport:
    """Copy the snapshot ``ref`` points at on ``src`` to ``dst``, destination ref last.

    Bytes flow from one transport to the other through memory only (streamed and
    verified on the way); packs and index blobs ``dst`` already holds are skipped,
    and when another ``dst`` ref already points at the snapshot nothing but the ref
    is written. The destination ref is written with ``expect`` (default: ``match``
    of its value at the start, or ``MISSING``). Only the tip record is copied:
    ``log`` on ``dst`` stops at the first parent record it lacks.

    A dry run reads only and reports the packs and bytes the real run would copy.
    Progress events carry the object and byte totals (and the skipped objects)
    before the first byte is copied.

    ``options`` carries the transfer knobs (:class:`TransferOptions`; mirror reads
    ``concurrency`` and ``bwlimit``, the bytes per second it sends to ``dst``, also
    taken as keywords, but not with ``options``).

    Raises:
        RefNotFound: the ref is absent on ``src``.
        RefConflict: the destination ref moved (non-fast-forward) or does not
            satisfy ``expect``.
        InvalidArgument: ``options`` and a keyword knob were both given.
    """
    knobs = resolve("mirror", options, concurrency=concurrency, bwlimit=bwlimit)
    meter = Meter(progress)
    meter.enter("plan")
    value = src.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent on the source: nothing to mirror", name=ref)
    old = dst.read_ref(ref)
    condition = write_condition(expect, old)
    if not condition.allows(old):
        raise non_fast_forward(ref, old)
    nothing = MirrorReport(
        ref=ref,
        old=old,
        new=value,
        dry_run=dry_run,
        updated=False,
        objects_sent=0,
        objects_skipped=0,
        packs_uploaded=0,
        packs_skipped=0,
        bytes_uploaded=0,
    )
    if old == value:
        meter.enter("done")
        return nothing
    record_blob = record_key(value)
    record_bytes = src.download_blob(record_blob)
    record = decode_record(record_bytes)
    plan = _plan(src, dst, value, record, len(record_bytes), knobs.concurrency)
    sent_objects = sum(p.objects for p in plan.packs)
    skipped_objects = sum(p.objects for p in record.packs) - sent_objects
    planned = replace(
        nothing,
        objects_sent=sent_objects,
        objects_skipped=skipped_objects,
        packs_uploaded=len(plan.packs),
        packs_skipped=len(record.packs) - len(plan.packs),
        bytes_uploaded=plan.bytes,
    )
    meter.enter("plan", total=sent_objects + skipped_objects, bytes_total=plan.bytes)
    meter.add(skipped=skipped_objects)
    if dry_run:
        meter.enter("done")
        return planned
    meter.enter("upload")
    limiter = Limiter(knobs.bwlimit)
    sent = _copy(src, dst, plan, meter, limiter, knobs.concurrency)
    if plan.record:
        _send(dst, record_blob, record_bytes, meter, limiter)
        sent += len(record_bytes)
    meter.enter("commit")
    write_ref(dst, ref, condition, value)
    meter.enter("done")
    return replace(planned, updated=True, bytes_uploaded=sent)


def _send(dst: Transport, key: PackKey, data: bytes, meter: Meter, limiter: Limiter) -> None:
    """Upload one small blob already read, under the bandwidth cap, and count it."""
    limiter.take(len(data))
    dst.upload_blob(data, key)
    meter.add(bytes_in=len(data), bytes_out=len(data))


def _copy(
    src: Transport, dst: Transport, plan: _Plan, meter: Meter, limiter: Limiter, workers: int
) -> int:
    """Copy the planned packs (each followed by its index blob), then the other index blobs.

    Returns the bytes sent. One :class:`Limiter` is shared by every worker, so the
    cap holds for the whole mirror, not per thread.
    """

    def index(key: PackKey) -> int:
        data = src.download_blob(key)
        _send(dst, key, data, meter, limiter)
        return len(data)

    def pack(p: PackRef) -> int:
        dst.upload_pack_stream(p.key, _RemotePack(src, p, meter, limiter), p.size)
        meter.add(done=p.objects)
        return p.size + (index(p.index) if p.index in plan.indexes else 0)

    with_pack = {p.index for p in plan.packs}
    sent = sum(parallel(pack, plan.packs, workers))
    rest = [key for key in plan.indexes if key not in with_pack]
    return sent + sum(parallel(index, rest, workers))
