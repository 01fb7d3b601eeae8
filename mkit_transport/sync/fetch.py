"""Getting the objects a pull needs: whole packs through a :class:`~.restore.PullPacks`.

One place answers "make these objects readable" (:class:`ObjectFetcher`), so a
ranged object reader can replace whole-pack downloads later without touching the
callers. Which pack holds which object comes from the pack ids a pull remembered
(``<cache>/packids/<pack hex>``, the sorted ids of a verified pack) or else from the
pack's index blob on the remote.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence

from ..errors import InvalidResponse
from ..transport import Transport
from .common import fetch_index, parallel
from .model import PackRef
from .objects import PackObjects, _holds
from .progress import Meter
from .restore import PullPacks

__all__ = ["ObjectFetcher", "remember_ids"]

_ID = 32


def _ids_dir(packs: PullPacks) -> str:
    path = os.path.join(os.path.dirname(packs.cache.dir), "packids")
    os.makedirs(path, exist_ok=True)
    return path


def remember_ids(packs: PullPacks, key_hex: str, ids: bytes) -> None:
    """Keep a verified pack's sorted ids, so a later pull knows what it holds offline."""
    directory = _ids_dir(packs)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".ids-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(ids)
        os.replace(temp, os.path.join(directory, key_hex))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)


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
    ) -> None:
        self.transport = transport
        self.packs = list(packs)
        self.session = session
        self.concurrency = concurrency
        self.meter = meter
        self.objects = PackObjects()
        self.downloaded = 0
        self.opened: set[int] = set()
        self._ids: list[bytes | None] = [None] * len(self.packs)

    def _pack_ids(self, number: int) -> bytes:
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

    def get(self, needed: Iterable[bytes]) -> PackObjects:
        """Open the packs holding ``needed`` (each pack once); return the reader."""
        wanted = set(needed)
        if not wanted:
            return self.objects
        wanted = {oid for oid in wanted if not self._have(oid)}
        numbers = [n for n in range(len(self.packs)) if n not in self.opened]
        found: list[int] = []
        for number, ids in zip(
            numbers, parallel(self._pack_ids, numbers, self.concurrency), strict=True
        ):
            hits = {oid for oid in wanted if _holds(ids, oid)}
            if hits:
                found.append(number)
                wanted -= hits
            if not wanted:
                break
        for oid in wanted:
            raise InvalidResponse(f"object {oid.hex()} is in none of the snapshot's packs")
        self.open_all(found)
        return self.objects

    def _have(self, oid: bytes) -> bool:
        return any(_holds(ids, oid) for ids in self.objects.id_runs().values())

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
