"""Reading verified objects out of a snapshot's packs, a bounded number open at once.

A pull or ``show`` holds one :class:`PackObjects` over the packs it fetched: it knows
which pack holds each object and opens pack files on demand, keeping at most a budget
of them open (an LRU), so a snapshot of more packs than the process may open files
still pulls (spec/SPEC-SYNC.md).
"""

from __future__ import annotations

import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import InvalidResponse, PayloadTooLarge
from ..limits import CHUNK_SIZE
from ..pack import KIND_TREE, MAX_OBJECT_SIZE, PackFile
from .model import (
    MAX_TREE_SIZE,
    TreeEntry,
    _bad,
    decode_tree,
)

__all__ = ["ObjectReader", "PackObjects", "open_file_budget"]


class ObjectReader(Protocol):
    """Anything that streams a verified object by id (see :class:`PackObjects`)."""

    def read_object(
        self, oid: bytes, out: Callable[[bytes], object] | None, *, max_size: int | None = None
    ) -> tuple[int, int]:
        """Stream the object's raw bytes to ``out``; return ``(kind, raw_len)``."""
        ...


def open_file_budget() -> int:
    """How many pack files a reader keeps open: 64, or a quarter of RLIMIT_NOFILE if less.

    A snapshot may need more packs than a process may hold files open (issue 15), so
    :class:`PackObjects` opens them on demand within this budget; the rest of the
    descriptors stay free for the files a pull writes and its transport's sockets.
    """
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return _MAX_OPEN_PACKS
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _MAX_OPEN_PACKS
    return max(1, min(_MAX_OPEN_PACKS, soft // 4))


_MAX_OPEN_PACKS: Final = 64
_ID: Final = 32


def _holds(ids: bytes, oid: bytes) -> bool:
    """Whether the sorted run of 32-byte ``ids`` holds ``oid`` (binary search)."""
    lo, hi = 0, len(ids) // _ID
    while lo < hi:
        mid = (lo + hi) // 2
        here = ids[mid * _ID : mid * _ID + _ID]
        if here < oid:
            lo = mid + 1
        elif here > oid:
            hi = mid
        else:
            return True
    return False


def held(ids: bytes, wanted: set[bytes]) -> set[bytes]:
    """Which of ``wanted`` the sorted run of 32-byte ``ids`` holds.

    A binary search each when few are wanted; else one pass over the run, which
    costs a slice per id but no Python-level search loop (a pull asks this of
    every pack for every object of the snapshot: 0.15 s of a 4 s pull of the
    10,000-file bench tree by searching).
    """
    if len(wanted) * 16 < len(ids) // _ID:
        return {oid for oid in wanted if _holds(ids, oid)}
    return wanted.intersection([ids[i : i + _ID] for i in range(0, len(ids), _ID)])


@dataclass(slots=True)
class _Slot:
    """One pack of a :class:`PackObjects`: its ids always, its open file only while in the LRU."""

    path: str
    ids: bytes
    file: PackFile | None
    users: int = 0


class PackObjects:
    """Objects found across a snapshot's pack files (each re-hashed as it is read).

    Each pack's ids are kept in memory (32 bytes an object, what its index holds);
    its file is open only while it is among the ``max_open`` most recently used
    (default :func:`open_file_budget`), so a snapshot of more packs than the
    process may open files still pulls. A pack being read is never closed under
    its reader (threads share this object); it is reopened, index checked, when
    next needed.
    """

    def __init__(self, packs: list[PackFile] | None = None, *, max_open: int | None = None) -> None:
        self.max_open = max_open if max_open is not None else open_file_budget()
        self._slots: list[_Slot] = []
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self._loose: dict[bytes, tuple[int, int, str]] = {}
        for pack in packs or ():
            self.add(pack)

    def add_loose(self, oid: bytes, kind: int, raw_len: int, path: str) -> None:
        """Take a verified object kept alone in the file ``path`` (its raw bytes).

        A pull reads an object by ranges when it needs a small part of a pack
        (:mod:`.fetch`); the object was checked against its id as it arrived, and the
        file is in the pull's own directory, removed with it.
        """
        with self._lock:
            self._loose[oid] = (kind, raw_len, path)

    def has(self, oid: bytes) -> bool:
        """Whether an object is readable here (in an added pack or kept alone)."""
        with self._lock:
            return oid in self._loose or any(_holds(slot.ids, oid) for slot in self._slots)

    def which(self, oids: Iterable[bytes]) -> set[bytes]:
        """The objects of ``oids`` readable here (:meth:`has` of each, in one pass per pack)."""
        wanted = set(oids)
        with self._lock:
            found = {oid for oid in wanted if oid in self._loose}
            for slot in self._slots:
                if wanted := wanted - found:
                    found |= held(slot.ids, wanted)
        return found

    def _read_loose(
        self, oid: bytes, out: Callable[[bytes], object] | None, max_size: int | None
    ) -> tuple[int, int] | None:
        with self._lock:
            loose = self._loose.get(oid)
        if loose is None:
            return None
        kind, raw_len, path = loose
        limit = max_size or MAX_OBJECT_SIZE
        if raw_len > limit:
            raise PayloadTooLarge(
                f"object {oid.hex()} is {raw_len} bytes, over the {limit}-byte cap",
                size=raw_len,
                limit=limit,
            )
        if out is not None:
            with open(path, "rb") as fh:
                while piece := fh.read(CHUNK_SIZE):
                    out(piece)
        return kind, raw_len

    def add(self, pack: PackFile) -> None:
        """Take over the open ``pack`` (closed at once if the budget is spent)."""
        slot = _Slot(pack.path, b"".join(pack.ids()), pack)
        with self._lock:
            self._slots.append(slot)
            self._lru[len(self._slots) - 1] = None
            self._evict()

    def id_runs(self) -> dict[str, bytes]:
        """Each pack's path and the sorted run of ids it holds."""
        with self._lock:
            return {slot.path: slot.ids for slot in self._slots}

    def open_count(self) -> int:
        """How many pack files are open now (at most ``max_open`` plus those being read)."""
        with self._lock:
            return len(self._lru)

    def _acquire(self, number: int) -> PackFile:
        with self._lock:
            slot = self._slots[number]
            if slot.file is None:
                slot.file = PackFile(slot.path, check_trailer=False)
            slot.users += 1
            self._lru[number] = None
            self._lru.move_to_end(number)
            self._evict()
            return slot.file

    def _release(self, number: int) -> None:
        with self._lock:
            self._slots[number].users -= 1
            self._evict()

    def _evict(self) -> None:
        """Close the least recently used idle packs while over budget (lock held)."""
        if len(self._lru) <= self.max_open:
            return
        for number in list(self._lru):
            slot = self._slots[number]
            if slot.users == 0 and slot.file is not None:
                slot.file.close()
                slot.file = None
                del self._lru[number]
                if len(self._lru) <= self.max_open:
                    return

    def read_object(
        self, oid: bytes, out: Callable[[bytes], object] | None, *, max_size: int | None = None
    ) -> tuple[int, int]:
        """Stream object ``oid`` from whichever pack holds it (or its own file)."""
        loose = self._read_loose(oid, out, max_size)
        if loose is not None:
            return loose
        for number, slot in enumerate(self._slots):
            if _holds(slot.ids, oid):
                pack = self._acquire(number)
                try:
                    return pack.read_object(oid, out, max_size=max_size)
                finally:
                    self._release(number)
        raise InvalidResponse(f"object {oid.hex()} is in none of the snapshot's packs")

    def read_bytes(self, oid: bytes, max_size: int) -> tuple[int, bytes]:
        """Return a small object whole."""
        parts: list[bytes] = []
        kind, _ = self.read_object(oid, parts.append, max_size=max_size)
        return kind, b"".join(parts)

    def tree(self, oid: bytes) -> list[TreeEntry]:
        """Read and parse a tree object."""
        kind, data = self.read_bytes(oid, MAX_TREE_SIZE)
        if kind != KIND_TREE:
            raise _bad(f"object {oid.hex()} is not a tree")
        return decode_tree(data)

    def close(self) -> None:
        """Close every open pack file."""
        with self._lock:
            for number in self._lru:
                file = self._slots[number].file
                if file is not None:
                    file.close()
                    self._slots[number].file = None
            self._lru.clear()


# -- planning: what a tree expands to, before anything is written ------------------------
