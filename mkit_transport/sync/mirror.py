"""``mirror``: copy the snapshot a ref points at from one remote to another, ref last.

Bytes flow from the source transport to the destination through memory only,
streamed and verified on the way (spec/SPEC-SYNC.md, mirror).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from ..errors import RefNotFound
from ..hashes import PackKey
from ..refs import RefWriteCondition
from ..transport import Transport
from .common import non_fast_forward, parallel, record_key, write_condition, write_ref
from .model import PackRef, decode_record
from .options import TransferOptions, resolve
from .progress import Meter, Progress
from .reports import MirrorReport
from .restore import verified_chunks

__all__ = ["mirror"]


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
    options: TransferOptions | None = None,
    concurrency: int | None = None,
) -> MirrorReport:
    """Copy the snapshot ``ref`` points at on ``src`` to ``dst``, destination ref last.

    Bytes flow from one transport to the other through memory only (streamed and
    verified on the way); packs ``dst`` already holds are skipped. The destination
    ref is written with ``expect`` (default: ``match`` of its value at the start, or
    ``MISSING``). Only the tip record is copied: ``log`` on ``dst`` stops at the
    first parent record it lacks.

    ``options`` carries the transfer knobs (:class:`TransferOptions`; mirror reads
    ``concurrency``, also taken as a keyword, but not with ``options``).

    Raises:
        RefNotFound: the ref is absent on ``src``.
        RefConflict: the destination ref moved (non-fast-forward) or does not
            satisfy ``expect``.
        InvalidArgument: ``options`` and a keyword knob were both given.
    """
    knobs = resolve("mirror", options, concurrency=concurrency)
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
        return nothing
    record_blob = record_key(value)
    record_bytes = src.download_blob(record_blob)
    record = decode_record(record_bytes)
    present = parallel(lambda p: dst.pack_exists(p.key), record.packs, knobs.concurrency)
    missing = [p for p, here in zip(record.packs, present, strict=True) if not here]
    sent_objects = sum(p.objects for p in missing)
    skipped_objects = sum(p.objects for p in record.packs) - sent_objects
    if dry_run:
        return replace(nothing, objects_sent=sent_objects, objects_skipped=skipped_objects)
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

    sent = parallel(copy, missing, knobs.concurrency)
    held = [p for p, here in zip(record.packs, present, strict=True) if here]
    sent += parallel(copy_index, held, knobs.concurrency)
    dst.upload_blob(record_bytes, record_blob)
    meter.enter("commit")
    write_ref(dst, ref, condition, value)
    meter.enter("done")
    return replace(
        nothing,
        updated=True,
        objects_sent=sent_objects,
        objects_skipped=skipped_objects,
        packs_uploaded=len(missing),
        packs_skipped=len(record.packs) - len(missing),
        bytes_uploaded=sum(sent) + len(record_bytes),
    )
