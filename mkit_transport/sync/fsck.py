"""fsck: verify every record, pack and index blob the refs reach (spec/SPEC-FSCK.md).

Two passes, so memory stays bounded:

* **check**: walk every ref's chain of records (:func:`.walk.walk_records`, the walk gc
  marks with) and verify each key once: a pack is streamed
  (:func:`.restore.verified_chunks`, as pull and mirror stream them) through a
  :class:`~mkit_transport.pack.PackVerifier` (key, structure, every object's id), an
  index blob is read (small, capped) and decoded against its pack, a record is
  decoded. Absent keys are *missing*, keys whose bytes fail a check *corrupt*.
* **blame**: only when something is wrong, walk each ref again on its own and name,
  for every bad key, the refs that reach it (so a shared history blames every ref
  that shares it).

Memory: the set of keys checked (about 100 bytes a key), one chunk of one pack and the
verifier's per-pack entry list; never a whole pack or the whole store listing.

:func:`repair_from` then fetches each bad key from another store (verified) and
stores it with :meth:`~mkit_transport.transport.Transport.repair_pack_stream` (a
corrupt copy, replaced atomically) or an upload (a missing one), and checks it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import (
    InvalidArgument,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefNotFound,
)
from ..hashes import PackKey
from ..refs import Ref
from ..transport import Transport
from .model import MAX_INDEX_SIZE, MAX_RECORD_SIZE, decode_index, decode_record
from .progress import Meter
from .restore import verified_chunks
from .walk import walk_records

__all__ = [
    "MISSING",
    "Damage",
    "FsckReport",
    "RepairReport",
    "fsck",
    "repair_from",
]

#: What a key is to the snapshot that needs it.
What = Literal["record", "pack", "index"]

#: Reasons a check can fail with; anything else (a lost connection) ends fsck.
_BAD = (InvalidResponse, PayloadTooLarge)

#: The reason of a key that is absent.
MISSING = "missing"

#: A bad key: what it is, why, and the pack it describes (an index blob).
_Bad = tuple[What, str, PackKey | None]


@dataclass(frozen=True, slots=True)
class Damage:
    """A key a ref needs that is absent (``reason`` "missing") or fails a check.

    ``of`` is the pack an index blob describes (None for a pack or a record); ``refs``
    are the names of the refs that reach the key, so the ones it breaks.
    """

    key: str
    what: What
    reason: str
    refs: tuple[str, ...] = ()
    of: str | None = None


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What fsck checked and found. ``ok`` is true when nothing is missing or corrupt."""

    refs: tuple[str, ...] = ()
    records: int = 0
    packs_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    missing: tuple[Damage, ...] = ()
    corrupt: tuple[Damage, ...] = ()

    @property
    def ok(self) -> bool:
        """No key any ref reaches is missing or corrupt."""
        return not self.missing and not self.corrupt

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-able data (the CLI's ``--json``)."""
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair_from` put back (checked again after) and what it could not."""

    repaired: tuple[Damage, ...] = ()
    unrepaired: tuple[Damage, ...] = ()

    @property
    def ok(self) -> bool:
        """Every damaged key was replaced by one that now checks."""
        return not self.unrepaired

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-able data (the CLI's ``--json``)."""
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Tally:
    packs: int = 0
    blobs: int = 0
    bytes: int = 0


def fsck(
    transport: Transport,
    *,
    refs: Sequence[str] | None = None,
    progress: Callable[[FsckReport], None] | None = None,
) -> FsckReport:
    """Verify every record, pack and index blob reachable from ``refs`` (default: all).

    Reads only: the store is left byte for byte as it was. A named ref that is absent
    is :class:`RefNotFound` before anything is checked. ``progress`` is called after
    each pack with the report so far. A missing *parent* record ends its chain (a
    pruned history), as for gc; a ref whose own record is absent is reported missing.
    Transport failures other than absent or bad bytes (a lost connection) propagate.
    """
    chosen = _refs(transport, refs)
    tally = _Tally()
    checked: set[PackKey] = set()
    seen: set[PackKey] = set()
    bad: dict[PackKey, _Bad] = {}
    records = 0

    def check(key: PackKey, what: What, of: PackKey | None) -> None:
        if key in checked:
            return
        checked.add(key)
        reason = _check_key(transport, key, what, of, tally)
        if reason is not None:
            bad[key] = (what, reason, of)
        if progress is not None and what == "pack":
            progress(_report(chosen, records, tally, bad, {}))

    for ref in chosen:
        for step in walk_records(transport, ref.hash, seen):
            checked.add(step.key)
            if step.record is None:
                if step.depth == 0 or not isinstance(step.error, PackNotFound):
                    bad[step.key] = ("record", _reason(step.error), None)
                continue
            records += 1
            for pack in step.record.packs:
                check(pack.key, "pack", None)
                check(pack.index, "index", pack.key)
    blamed = _blame(transport, chosen, bad) if bad else {}
    return _report(chosen, records, tally, bad, blamed)


def _refs(transport: Transport, names: Sequence[str] | None) -> list[Ref]:
    """The refs to check: all of them, or the named ones (each must exist)."""
    if names is None:
        return transport.list_refs("")
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument("refs must be a list of ref names")
    chosen = []
    for name in dict.fromkeys(names):
        value = transport.read_ref(name)
        if value is None:
            raise RefNotFound(f"ref {name} is absent", name=name)
        chosen.append(Ref(name, value))
    return chosen


def _reason(error: BaseException | None) -> str:
    if isinstance(error, PackNotFound):
        return MISSING
    return str(error).splitlines()[0] if error is not None and str(error) else repr(error)


def _check_key(
    transport: Transport, key: PackKey, what: What, of: PackKey | None, tally: _Tally
) -> str | None:
    """Verify one pack, index blob or record; the reason it fails (:data:`MISSING`), or None."""
    try:
        if what == "pack":
            tally.packs += 1
            for chunk in verified_chunks(transport, key, "store", Meter(None), objects=True):
                tally.bytes += len(chunk)
        else:
            tally.blobs += 1
            data = transport.download_blob(key)
            tally.bytes += len(data)
            _decode(data, what, of)
    except PackNotFound:
        return MISSING
    except _BAD as error:
        return _reason(error)
    return None


def _decode(data: bytes, what: What, of: PackKey | None) -> None:
    """Check an index blob (against its pack) or a record decodes (InvalidResponse else)."""
    if what == "record":
        if len(data) > MAX_RECORD_SIZE:
            raise PayloadTooLarge(f"snapshot record is {len(data)} bytes")
        decode_record(data)
        return
    assert of is not None
    if len(data) > MAX_INDEX_SIZE:
        raise PayloadTooLarge(f"index blob is {len(data)} bytes")
    decode_index(data, of)


def _blame(
    transport: Transport, chosen: list[Ref], bad: dict[PackKey, _Bad]
) -> dict[PackKey, list[str]]:
    """For each bad key, the refs whose chains reach it (a second, per-ref walk)."""
    blamed: dict[PackKey, list[str]] = {key: [] for key in bad}
    for ref in chosen:
        hit: set[PackKey] = set()
        for step in walk_records(transport, ref.hash, set()):
            if step.key in bad:
                hit.add(step.key)
            if step.record is not None:
                for pack in step.record.packs:
                    hit.update(k for k in (pack.key, pack.index) if k in bad)
        for key in hit:
            blamed[key].append(ref.name)
    return blamed


def _report(
    chosen: list[Ref],
    records: int,
    tally: _Tally,
    bad: dict[PackKey, _Bad],
    blamed: dict[PackKey, list[str]],
) -> FsckReport:
    damages = [
        Damage(key.hex(), what, reason, tuple(sorted(blamed.get(key, []))), _hex(of))
        for key, (what, reason, of) in sorted(bad.items(), key=lambda kv: kv[0].hex())
    ]
    return FsckReport(
        refs=tuple(ref.name for ref in chosen),
        records=records,
        packs_checked=tally.packs,
        blobs_checked=tally.blobs,
        bytes_checked=tally.bytes,
        missing=tuple(d for d in damages if d.reason == MISSING),
        corrupt=tuple(d for d in damages if d.reason != MISSING),
    )


def _hex(key: PackKey | None) -> str | None:
    return key.hex() if key is not None else None


# -- repair -----------------------------------------------------------------------------


def repair_from(transport: Transport, source: Transport, report: FsckReport) -> RepairReport:
    """Put back every missing or corrupt key of ``report`` from ``source``, then re-check.

    Each key is read from ``source`` and verified as fsck verifies it (a pack: key,
    structure, every object) before anything is written; then a corrupt copy is
    replaced with :meth:`~Transport.repair_pack_stream` / :meth:`~Transport.repair_pack`
    (atomic where the transport can) and a missing one uploaded. A key ``source``
    lacks, or holds damaged too, is left as it was and reported unrepaired, as is one
    that still fails its check afterwards. A repaired record may list packs fsck
    could not see before: check again (the CLI does).
    """
    repaired: list[Damage] = []
    unrepaired: list[Damage] = []
    for damage in (*report.missing, *report.corrupt):
        key = PackKey.from_hex(damage.key)
        of = PackKey.from_hex(damage.of) if damage.of is not None else None
        failure = _put_back(transport, source, key, damage)
        if failure is None:
            again = _check_key(transport, key, damage.what, of, _Tally())
            failure = None if again is None else f"still damaged after repair: {again}"
        if failure is None:
            repaired.append(damage)
        else:
            unrepaired.append(dataclasses.replace(damage, reason=failure))
    return RepairReport(tuple(repaired), tuple(unrepaired))


def _put_back(transport: Transport, source: Transport, key: PackKey, damage: Damage) -> str | None:
    """Copy one key from ``source`` (verified first); why it could not be, or None."""
    replace = damage.reason != MISSING
    try:
        if damage.what == "pack":
            total = source.pack_size(key)
            for _chunk in verified_chunks(source, key, "source", Meter(None), objects=True):
                pass  # pass 1: verify the source's copy; write nothing
            # Pass 2 writes: the upload checks the bytes hash to the key just verified.
            put = transport.repair_pack_stream if replace else transport.upload_pack_stream
            put(key, source.download_pack_stream(key), total)
        else:
            data = source.download_blob(key)
            _decode(data, damage.what, PackKey.from_hex(damage.of) if damage.of else None)
            (transport.repair_pack if replace else transport.upload_blob)(data, key)
    except PackNotFound:
        return "the source lacks it"
    except (*_BAD, ProtocolError) as error:
        return f"the source's copy is damaged too: {_reason(error)}"
    return None
