"""Walking a ref's chain of records: what gc marks and fsck checks (one walk for both).

A snapshot ref holds the key of its record blob; the record lists the packs and index
blobs the snapshot needs and names its parent record. :func:`walk_records` follows
that chain and says, for each record key, whether the record was read, is absent or
is unreadable; what to do about an absent or unreadable record is the caller's
policy (gc refuses to sweep, fsck reports it). Records are read only through
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

__all__ = ["RecordStep", "walk_records"]


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
        try:
            record = fetch_record(transport, ref_value(key))
        except PackNotFound as error:
            yield RecordStep(key, depth, error=error)
            return
        except (InvalidResponse, PayloadTooLarge) as error:
            yield RecordStep(key, depth, error=error)
            return
        yield RecordStep(key, depth, record=record)
        key = record.parent
        depth += 1
