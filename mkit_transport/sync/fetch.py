"""Getting the objects a pull needs: whole packs, or only the objects, by ranges.

One place answers "make these objects readable" (:class:`ObjectFetcher`): a pack
is opened whole (through a :class:`~.restore.PullPacks`, from the cache or
downloaded) unless the pull needs only a small part of a pack it does not have,
which it then reads object by object with ranged reads (:mod:`.ranged`). Which
pack holds which object comes from the pack ids a pull remembered
(``<cache>/packids/<pack hex>``, the sorted ids of a verified pack) or else from
the pack's index blob on the remote.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import InvalidResponse
from ..transport import Transport
from .atomic import replacing
from .common import fetch_index, parallel
from .model import PackRef
from .objects import PackObjects, held
from .progress import Meter
from .ranged import RangedPack, iter_object, read_pack_index
from .restore import PullPacks

__all__ = ["ObjectFetcher", "remember_ids"]

_ID = 32
#: What share of a pack's bytes a pull may need before it downloads the whole pack
#: (one streamed request) rather than reading the objects by ranges (one or more
#: requests each): at a quarter, ranges cost at most a quarter of the bytes.
RANGED_SHARE: Final = 0.25


def _ids_dir(packs: PullPacks) -> str:
    path = os.path.join(os.path.dirname(packs.cache.dir), "packids")
    os.makedirs(path, exist_ok=True)
    return path


def remember_ids(packs: PullPacks, key_hex: str, ids: bytes) -> None:
    """Keep a verified pack's sorted ids, so a later pull knows what it holds offline."""
    with (
        contextlib.suppress(OSError),
        replacing(os.path.join(_ids_dir(packs), key_hex), ".ids-") as out,
    ):
        out.write(ids)


class ObjectFetcher:
    """Makes objects of one snapshot readable, downloading only packs that hold new ones.

    ``objects`` grows as packs are opened; :meth:`get` takes a set of object ids
    and opens every pack (cached or downloaded, never twice) holding one of them.
    An id in none of the snapshot's packs is ``InvalidResponse``.
    """

    def __init__(
        self,
        transport: Transport,
        packs: Sequence[PackRef],
        session: PullPacks,
        concurrency: int,
        meter: Meter,
        *,
        ranged: bool = True,
    ) -> None:
        self.transport = transport
        self.packs = list(packs)
        self.session = session
        self.concurrency = concurrency
        self.meter = meter
        self.objects = PackObjects()
        self.ranged = ranged
        self.ranged_objects = 0
        self._lock = threading.Lock()
        self.downloaded = 0
        self.opened: set[int] = set()
        self._ids: list[bytes | None] = [None] * len(self.packs)

    def pack_ids(self, number: int) -> bytes:
        """The sorted ids pack ``number`` holds: remembered, else from its index blob."""
        known = self._ids[number]
        if known is not None:
            return known
        pack = self.packs[number]
        path = os.path.join(_ids_dir(self.session), pack.key.hex())
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            if len(data) % _ID:
                raise InvalidResponse("truncated")
            os.utime(path)
        except (OSError, InvalidResponse):
            rows = fetch_index(self.transport, pack, self.meter)
            data = b"".join(sorted(oid for oid, _kind in rows))
            remember_ids(self.session, pack.key.hex(), data)
        self._ids[number] = data
        return data

    def learn_ids(self, number: int, ids: bytes) -> None:
        """Take pack ``number``'s sorted ids, read from its index blob, and remember them."""
        self._ids[number] = ids
        remember_ids(self.session, self.packs[number].key.hex(), ids)

    def get(self, needed: Iterable[bytes]) -> PackObjects:
        """Make ``needed`` readable; return the reader.

        A pack holding some of them is opened whole (from the cache, else downloaded)
        unless it is not cached and what is needed of it is at most
        :data:`RANGED_SHARE` of its bytes: then only those objects are read, by
        ranges, each verified by its id as it arrives (SYNC-51).
        """
        wanted = set(needed)
        wanted -= self.objects.which(wanted)
        if not wanted:
            return self.objects
        numbers = [n for n in range(len(self.packs)) if n not in self.opened]
        # Read the id lists not yet known in parallel, once; later calls (one per tree
        # level of an update) then start no threads.
        parallel(self.pack_ids, [n for n in numbers if self._ids[n] is None], self.concurrency)
        found: dict[int, set[bytes]] = {}
        for number in numbers:
            ids = self.pack_ids(number)
            hits = held(ids, wanted)
            if hits:
                found[number] = hits
                wanted -= hits
            if not wanted:
                break
        for oid in wanted:
            raise InvalidResponse(f"object {oid.hex()} is in none of the snapshot's packs")
        whole = [n for n in found if not self.ranged or self.cached(n)]
        parts = [n for n in found if n not in whole]
        plans = parallel(lambda n: self._plan(n, found[n]), parts, self.concurrency)
        whole += [n for n, plan in zip(parts, plans, strict=True) if plan is None]
        jobs = [(oid, index) for plan in plans if plan is not None for oid, index in plan]
        parallel(self._take_ranged, jobs, self.concurrency)
        self.open_all(whole)
        return self.objects

    def cached(self, number: int) -> bool:
        """Whether pack ``number`` is in the cache now."""
        return os.path.exists(self.session.cache.path(self.packs[number].key))

    def _plan(self, number: int, hits: set[bytes]) -> list[tuple[bytes, RangedPack]] | None:
        """The objects to read by range from pack ``number``, or None to take it whole."""
        pack = self.packs[number]
        index = read_pack_index(self.transport, pack, self.meter)
        needed = 0
        for oid in hits:
            span = index.span(oid)
            if span is None:
                raise InvalidResponse(f"pack {pack.key.hex()} does not hold object {oid.hex()}")
            needed += span[1] - span[0]
        if needed > pack.size * RANGED_SHARE:
            return None
        return [(oid, index) for oid in sorted(hits)]

    def _take_ranged(self, job: tuple[bytes, RangedPack]) -> None:
        oid, index = job
        directory = os.path.join(self.session.dir, "objects")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, oid.hex())
        with replacing(path, ".part-") as out:
            pieces = iter_object(self.transport, index, oid, meter=self.meter)
            while True:
                try:
                    out.write(next(pieces))
                except StopIteration as done:
                    kind, raw_len = done.value
                    break
        self.objects.add_loose(oid, int(kind), int(raw_len), path)
        with self._lock:
            self.ranged_objects += 1

    def open_all(self, numbers: Sequence[int] | None = None) -> PackObjects:
        """Open the packs ``numbers`` (default: every pack of the snapshot)."""
        todo = [n for n in (range(len(self.packs)) if numbers is None else numbers)]
        todo = [n for n in todo if n not in self.opened]

        def take(number: int) -> bool:
            file, fresh = self.session.open(self.transport, self.packs[number], self.meter)
            self.objects.add(file)
            return fresh

        self.opened.update(todo)
        self.downloaded += sum(parallel(take, todo, self.concurrency))
        return self.objects

    def remember(self) -> None:
        """Keep the ids of every pack opened (a later incremental pull reads them offline)."""
        for path, ids in self.objects.id_runs().items():
            name = os.path.basename(path)
            if len(name) == 64 and not os.path.exists(os.path.join(_ids_dir(self.session), name)):
                remember_ids(self.session, name, ids)
