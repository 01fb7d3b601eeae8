"""Walking a ref's chain of records: what gc marks and fsck checks (one walk for both).

A snapshot ref holds the key of its record blob; the record lists the packs and index
blobs the snapshot needs and names its parent record. :func:`walk_records` follows
that chain and says, for each record key, whether the record was read, is absent or
is unreadable; what to do about an absent or unreadable record is the caller's
policy (gc refuses to sweep, fsck reports it). :func:`walk_last` is the bounded walk
of ``gc --keep-last``: only the newest records of each chain. Records are read only through
:mod:`.common` and :mod:`.model`, so every caller follows the snapshot formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InvalidResponse, PackNotFound, PayloadTooLarge, TransportError
from ..hashes import Hash, PackKey
from ..transport import Transport
from .common import fetch_record, record_key, ref_value
from .model import Record

__all__ = ["RecordStep", "walk_last", "walk_records"]


@dataclass(frozen=True, slots=True)
class RecordStep:
    """One record blob on a ref's chain: read (``record``), absent or unreadable.

    ``error`` is :class:`PackNotFound` for an absent blob and :class:`InvalidResponse`
    or :class:`PayloadTooLarge` for a stored blob that is not a readable record
    (damaged, or not a record at all); the walk ends after such a step. ``depth`` is
    0 for the record the ref names, 1 for its parent, and so on.
    """

    key: PackKey
    depth: int
    record: Record | None = None
    error: TransportError | None = None


def walk_records(transport: Transport, value: Hash, seen: set[PackKey]) -> Iterator[RecordStep]:
    """Yield the records on the chain from ``value`` (a ref's value), newest first.

    Stops at a record key already in ``seen`` (which it adds each key to), so one
    ``seen`` shared across refs reads every record once, and a chain with a cycle
    ends. Other transport errors (a lost connection) propagate.
    """
    key: PackKey | None = record_key(value)
    depth = 0
    while key is not None and key not in seen:
        seen.add(key)
        step = _read(transport, key, depth)
        yield step
        if step.record is None:
            return
        key = step.record.parent
        depth += 1


def walk_last(
    transport: Transport, value: Hash, last: int, kept: dict[PackKey, int]
) -> Iterator[RecordStep]:
    """Yield the newest ``last`` records on the chain from ``value``, newest first.

    ``kept`` maps each record key already walked to how many records were kept from
    it on (itself included), shared across refs. A shared ``seen`` set would be wrong
    here: a ref that joins another's chain nearer its own tip must keep more of that
    chain than the other ref did. So the walk stops only where an earlier walk
    already kept at least as many records from that key on; a record may then be
    read (and yielded) twice, at most ``last`` reads per ref. The depth bound also
    ends a chain with a cycle. ``last`` is at least 1 (the caller checks).
    """
    key: PackKey | None = record_key(value)
    depth = 0
    while key is not None and depth < last and kept.get(key, 0) < last - depth:
        kept[key] = last - depth
        step = _read(transport, key, depth)
        yield step
        if step.record is None:
            return
        key = step.record.parent
        depth += 1


def _read(transport: Transport, key: PackKey, depth: int) -> RecordStep:
    """One step: the record at ``key``, or why it cannot be read (absent, unreadable)."""
    try:
        record = fetch_record(transport, ref_value(key))
    except (PackNotFound, InvalidResponse, PayloadTooLarge) as error:
        return RecordStep(key, depth, error=error)
    return RecordStep(key, depth, record=record)
