"""The snapshot model (spec/SPEC-SYNC.md): blobs, trees, records and index blobs.

A directory tree becomes content-addressed objects, each named by the BLAKE3 of
its bytes: a **blob** per file content (and per symlink target) and a **tree**
per directory. A **record** names a root tree, its parent record and the packs a
reader needs; an **index blob** lists the objects of one pack, so a pusher learns
what the remote holds from metadata alone. This module holds the byte layouts
and the materialisation of a tree into a fresh directory; ``scanner`` turns a
local directory into objects.
"""

from __future__ import annotations

import os
import resource
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

from ..directio import write_all
from ..errors import InvalidArgument, InvalidResponse, PayloadTooLarge
from ..hashes import Hasher, PackKey
from ..pack import KIND_TREE, KINDS, MAX_ENTRIES, PackFile
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list

__all__ = [
    "TYPE_CHUNKED",
    "TYPE_DIR",
    "TYPE_FILE",
    "TYPE_SYMLINK",
    "FileEntry",
    "Limits",
    "ObjectReader",
    "PackObjects",
    "PackRef",
    "Record",
    "TreeEntry",
    "TreePlan",
    "decode_index",
    "decode_record",
    "decode_tree",
    "encode_index",
    "encode_record",
    "encode_tree",
    "list_files",
    "materialise",
    "plan_tree",
]

TYPE_FILE: Final = 1
TYPE_DIR: Final = 2
TYPE_SYMLINK: Final = 3
#: A file stored as a chunk list (tree version 2 only; SPEC-SYNC section 8).
TYPE_CHUNKED: Final = 4
_TYPE_NAMES: Final = {
    TYPE_FILE: "file",
    TYPE_DIR: "dir",
    TYPE_SYMLINK: "symlink",
    TYPE_CHUNKED: "file",
}
#: Entry types each tree version allows: version 1 is what every older writer made.
_TREE_TYPES: Final = {1: frozenset({1, 2, 3}), 2: frozenset({1, 2, 3, 4})}

_TREE_MAGIC: Final = b"MKTR"
_RECORD_MAGIC: Final = b"MKRC"
_INDEX_MAGIC: Final = b"MKIX"
_VERSION: Final = 1
_TREE_HEAD = struct.Struct("<4sBBHI")
_TREE_ENTRY = struct.Struct("<BIQ32s")
_RECORD_HEAD = struct.Struct("<4sBBH32s32sQI")
_RECORD_PACK = struct.Struct("<32s32sQI")
_INDEX_HEAD = struct.Struct("<4sBBH32sI")
_INDEX_ROW = struct.Struct("<B32s")

#: Caps a reader applies before trusting a remote's metadata.
MAX_TREE_ENTRIES: Final = 1 << 20
MAX_TREE_SIZE: Final = 64 << 20
MAX_RECORD_PACKS: Final = 1 << 16
MAX_RECORD_SIZE: Final = _RECORD_HEAD.size + MAX_RECORD_PACKS * _RECORD_PACK.size
MAX_INDEX_SIZE: Final = _INDEX_HEAD.size + MAX_ENTRIES * _INDEX_ROW.size
MAX_SYMLINK: Final = 4096
MAX_NAME: Final = 255
#: Deepest directory nesting and most entries (counted over the expansion of the tree
#: DAG) that ``pull`` and ``show`` accept by default; callers raise them (:class:`Limits`).
MAX_DEPTH: Final = 512
MAX_TOTAL_ENTRIES: Final = 10_000_000


def _bad(what: str) -> InvalidResponse:
    return InvalidResponse(what)


def _check_name(name: bytes) -> None:
    if not name or len(name) > MAX_NAME or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise _bad(f"invalid name {name[:80]!r} in a tree")


# -- trees ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a tree: ``name`` (file-system bytes), type, mode, size, object id."""

    name: bytes
    type: int
    mode: int
    size: int
    oid: bytes


def encode_tree(entries: list[TreeEntry]) -> bytes:
    """Return a tree's canonical bytes (entries sorted by name)."""
    ordered = sorted(entries, key=lambda e: e.name)
    # Version 2 only when needed, so a tree without chunked files keeps its old id.
    version = 2 if any(e.type == TYPE_CHUNKED for e in ordered) else 1
    parts = [_TREE_HEAD.pack(_TREE_MAGIC, version, 0, 0, len(ordered))]
    for e in ordered:
        _check_name(e.name)
        parts.append(struct.pack("<H", len(e.name)) + e.name)
        parts.append(_TREE_ENTRY.pack(e.type, e.mode, e.size, e.oid))
    return b"".join(parts)


def decode_tree(data: bytes) -> list[TreeEntry]:
    """Parse a tree, refusing anything but the canonical form (InvalidResponse)."""
    try:
        magic, version, flags, reserved, count = _TREE_HEAD.unpack_from(data, 0)
        if magic != _TREE_MAGIC or version not in _TREE_TYPES or flags or reserved:
            raise _bad("not a version-1 or version-2 tree")
        allowed = _TREE_TYPES[version]
        if count > MAX_TREE_ENTRIES:
            raise _bad(f"tree declares {count} entries")
        pos = _TREE_HEAD.size
        entries: list[TreeEntry] = []
        previous = b""
        for _ in range(count):
            (length,) = struct.unpack_from("<H", data, pos)
            name = data[pos + 2 : pos + 2 + length]
            if len(name) != length:
                raise _bad("tree is truncated")
            pos += 2 + length
            kind, mode, size, oid = _TREE_ENTRY.unpack_from(data, pos)
            pos += _TREE_ENTRY.size
            _check_name(name)
            if entries and name <= previous:
                raise _bad("tree entries are not strictly sorted by name")
            if kind not in allowed or mode > 0o777:
                raise _bad(f"tree entry {name!r} has type {kind}, mode {mode:o}")
            if (kind == TYPE_DIR and size) or (
                kind == TYPE_SYMLINK and (mode or size > MAX_SYMLINK)
            ):
                raise _bad(f"tree entry {name!r} is inconsistent")
            previous = name
            entries.append(TreeEntry(name, kind, mode, size, oid))
    except struct.error as exc:
        raise _bad(f"tree is truncated: {exc}") from exc
    if pos != len(data):
        raise _bad("tree has trailing bytes")
    if version == 2 and not any(e.type == TYPE_CHUNKED for e in entries):
        raise _bad("version-2 tree without a chunked file (not canonical)")
    return entries


# -- records and index blobs ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackRef:
    """A pack a snapshot needs: its key, its index blob's key, its size and object count."""

    key: PackKey
    index: PackKey
    size: int
    objects: int


@dataclass(frozen=True, slots=True)
class Record:
    """A snapshot: its root tree, the record it follows and every pack it needs."""

    root: bytes
    parent: PackKey | None
    created_ns: int
    packs: tuple[PackRef, ...]


def encode_record(record: Record) -> bytes:
    """Return a record's bytes; the ref holds their BLAKE3."""
    if len(record.packs) > MAX_RECORD_PACKS:
        raise ValueError(f"a record lists at most {MAX_RECORD_PACKS} packs")
    parent = bytes(record.parent) if record.parent is not None else bytes(32)
    head = _RECORD_HEAD.pack(
        _RECORD_MAGIC,
        _VERSION,
        1 if record.parent is not None else 0,
        0,
        record.root,
        parent,
        record.created_ns,
        len(record.packs),
    )
    rows = [
        _RECORD_PACK.pack(bytes(p.key), bytes(p.index), p.size, p.objects) for p in record.packs
    ]
    return head + b"".join(rows)


def decode_record(data: bytes) -> Record:
    """Parse a record (InvalidResponse if malformed; it came from a remote)."""
    if len(data) > MAX_RECORD_SIZE or len(data) < _RECORD_HEAD.size:
        raise _bad(f"a record of {len(data)} bytes is malformed")
    magic, version, flags, reserved, root, parent, created, count = _RECORD_HEAD.unpack_from(data)
    if magic != _RECORD_MAGIC or version != _VERSION or flags not in (0, 1) or reserved:
        raise _bad("not a version-1 snapshot record")
    if flags == 0 and parent != bytes(32):
        raise _bad("record without a parent has parent bytes")
    if len(data) != _RECORD_HEAD.size + count * _RECORD_PACK.size:
        raise _bad("record length does not match its pack count")
    packs = []
    for i in range(count):
        key, index, size, objects = _RECORD_PACK.unpack_from(
            data, _RECORD_HEAD.size + i * _RECORD_PACK.size
        )
        packs.append(PackRef(PackKey(key), PackKey(index), size, objects))
    if len({p.key for p in packs}) != len(packs):
        raise _bad("record lists a pack twice")
    return Record(root, PackKey(parent) if flags else None, created, tuple(packs))


def encode_index(pack: PackKey, rows: list[tuple[bytes, int]]) -> bytes:
    """Return the index blob of ``pack``: its ``(object id, kind)`` rows, sorted by id."""
    ordered = sorted(rows)
    head = _INDEX_HEAD.pack(_INDEX_MAGIC, _VERSION, 0, 0, bytes(pack), len(ordered))
    return head + b"".join(_INDEX_ROW.pack(kind, oid) for oid, kind in ordered)


def decode_index(data: bytes, pack: PackKey) -> list[tuple[bytes, int]]:
    """Parse the index blob of ``pack`` into ``(object id, kind)`` rows."""
    if len(data) > MAX_INDEX_SIZE or len(data) < _INDEX_HEAD.size:
        raise _bad(f"an index blob of {len(data)} bytes is malformed")
    magic, version, flags, reserved, key, count = _INDEX_HEAD.unpack_from(data)
    if magic != _INDEX_MAGIC or version != _VERSION or flags or reserved:
        raise _bad("not a version-1 index blob")
    if key != bytes(pack):
        raise _bad(f"index blob describes pack {key.hex()}, not {pack.hex()}")
    if len(data) != _INDEX_HEAD.size + count * _INDEX_ROW.size:
        raise _bad("index blob length does not match its count")
    rows: list[tuple[bytes, int]] = []
    for i in range(count):
        kind, oid = _INDEX_ROW.unpack_from(data, _INDEX_HEAD.size + i * _INDEX_ROW.size)
        if kind not in KINDS or (rows and oid <= rows[-1][0]):
            raise _bad("index blob rows are malformed or unsorted")
        rows.append((oid, kind))
    return rows


# -- reading objects back ---------------------------------------------------------------


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
        for pack in packs or ():
            self.add(pack)

    def add(self, pack: PackFile) -> None:
        """Take over the open ``pack`` (closed at once if the budget is spent)."""
        slot = _Slot(pack.path, b"".join(pack.ids()), pack)
        with self._lock:
            self._slots.append(slot)
            self._lru[len(self._slots) - 1] = None
            self._evict()

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
        """Stream object ``oid`` from whichever pack holds it."""
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


@dataclass(frozen=True, slots=True)
class Limits:
    """How far ``pull`` and ``show`` follow a snapshot's tree DAG (issue 15).

    A tree may name the same subtree many times (legal: the store is a DAG), so a
    few kilobytes of trees can expand to 2**41 entries; these caps are counted over
    the expansion, before anything is written or listed. Callers raise them with
    the ``max_entries`` / ``max_depth`` keywords (``--max-entries``, ``--max-depth``).
    """

    entries: int = MAX_TOTAL_ENTRIES
    depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        for name, value in (("max_entries", self.entries), ("max_depth", self.depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a positive whole number, not {value!r}")

    @classmethod
    def of(cls, max_entries: int | None, max_depth: int | None) -> Limits:
        """The limits a verb's keywords ask for (``None``: the default)."""
        return cls(
            MAX_TOTAL_ENTRIES if max_entries is None else max_entries,
            MAX_DEPTH if max_depth is None else max_depth,
        )


@dataclass(slots=True)
class TreePlan:
    """What a tree expands to: entries, files, declared file bytes, nesting, longest path.

    ``depth`` is the nesting below the tree (0: no subdirectory); ``longest`` is the
    longest relative path under it, in bytes. Counted over the expansion: a subtree
    named twice counts twice, as a pull writes it twice.
    """

    entries: int = 0
    files: int = 0
    bytes: int = 0
    depth: int = 0
    longest: int = 0

    def absorb(self, name_length: int, child: TreePlan) -> None:
        """Add subdirectory ``child`` (named with ``name_length`` bytes) to this tree's sum."""
        self.entries += child.entries
        self.files += child.files
        self.bytes += child.bytes
        self.depth = max(self.depth, child.depth + 1)
        self.longest = max(self.longest, name_length + 1 + child.longest)


@dataclass(slots=True)
class _Frame:
    oid: bytes
    own: int  # entries of this tree itself
    dirs: list[tuple[bytes, int]]  # subdirectories: tree id and name length, in order
    plan: TreePlan
    next: int = 0


def _over_entries(limits: Limits, count: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the snapshot expands to more than {limits.entries} entries (a tree may name the "
        "same subtree many times); raise the limit with max_entries= (--max-entries)",
        size=count,
        limit=limits.entries,
    )


def plan_tree(objects: PackObjects, root: bytes, limits: Limits | None = None) -> TreePlan:
    """Count what tree ``root`` expands to, refusing beyond ``limits``; write nothing.

    An iterative depth-first walk over the DAG (no recursion, so any nesting is a
    clear error, never a RecursionError) that reads each distinct tree once and sums
    each subtree once (memoised by id), so 40 trees naming their child twice cost 40
    reads, not 2**40. Refuses (``PayloadTooLarge``, naming the keyword that raises the
    limit) as soon as any subtree, or the trees on the current path, exceed
    ``limits.entries``, or nesting exceeds ``limits.depth``; a tree that contains
    itself is ``InvalidResponse``. Memory: one summary per distinct tree, and the
    subdirectory ids of the trees on the current path (bounded by the entry limit).
    """
    limits = limits or Limits()
    done: dict[bytes, TreePlan] = {}
    frames: list[_Frame] = []
    on_path: set[bytes] = set()
    stacked = 0  # entries of the trees on the current path

    def enter(oid: bytes) -> None:
        nonlocal stacked
        if oid in on_path:
            raise _bad(f"tree {oid.hex()} contains itself")
        if len(frames) > limits.depth:
            raise PayloadTooLarge(
                f"the snapshot nests directories deeper than {limits.depth}; "
                "raise the limit with max_depth= (--max-depth)",
                size=len(frames),
                limit=limits.depth,
            )
        entries = objects.tree(oid)
        plan = TreePlan(entries=len(entries))
        dirs: list[tuple[bytes, int]] = []
        for entry in entries:
            if entry.type == TYPE_DIR:
                dirs.append((entry.oid, len(entry.name)))
                continue
            plan.longest = max(plan.longest, len(entry.name))
            if entry.type in (TYPE_FILE, TYPE_CHUNKED):
                plan.files += 1
                plan.bytes += entry.size
        stacked += len(entries)
        if stacked > limits.entries:
            raise _over_entries(limits, stacked)
        frames.append(_Frame(oid, len(entries), dirs, plan))
        on_path.add(oid)

    enter(root)
    while True:
        frame = frames[-1]
        if frame.next < len(frame.dirs):
            oid, name_length = frame.dirs[frame.next]
            child = done.get(oid)
            if child is None:
                enter(oid)
                continue
            frame.plan.absorb(name_length, child)
            frame.next += 1
            if frame.plan.entries > limits.entries:
                raise _over_entries(limits, frame.plan.entries)
            continue
        frames.pop()
        on_path.discard(frame.oid)
        stacked -= frame.own
        done[frame.oid] = frame.plan
        if not frames:
            return frame.plan


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One path of a snapshot, as ``show`` lists it."""

    path: str
    type: str
    mode: int
    size: int
    oid: str


def _check_size(entry: TreeEntry, raw_len: int) -> None:
    if raw_len != entry.size:
        raise _bad(f"{entry.name!r}: object has {raw_len} bytes, the tree says {entry.size}")


def _write_chunked(objects: PackObjects, fd: int, entry: TreeEntry, what: str) -> None:
    """Write a chunked file chunk by chunk and check it whole against its chunk list.

    Each chunk is verified against its id as it is decompressed (the pack reader);
    a BLAKE3 of everything written is then checked against the list's content id
    and size, so a list whose chunks are each sound but do not make the file (a
    lying or damaged writer) fails the pull. Memory: one chunk's stream at a time.
    """
    _kind, data = objects.read_bytes(entry.oid, MAX_CHUNK_LIST_SIZE)
    try:
        chunked = decode_chunk_list(data)
    except InvalidResponse as error:
        raise _bad(f"{what}: {error}") from error
    if chunked.size != entry.size:
        raise _bad(f"{what}: chunk list has {chunked.size} bytes, the tree says {entry.size}")
    whole = Hasher()

    def out(part: bytes) -> None:
        whole.update(part)
        write_all(fd, part)

    for cid, length in chunked.chunks:
        _, raw_len = objects.read_object(cid, out, max_size=length)
        if raw_len != length:
            raise _bad(f"{what}: chunk {cid.hex()} has {raw_len} bytes, its list says {length}")
    if whole.length != chunked.size or bytes(whole.pack_key()) != chunked.id:
        raise _bad(f"{what}: the file's chunks do not match its chunk list's content id")


def materialise(
    objects: PackObjects,
    root: bytes,
    dest: str,
    *,
    workers: int = 1,
    plan: TreePlan | None = None,
) -> int:
    """Write tree ``root`` into the existing empty directory ``dest``; return the file count.

    The tree is planned first (:func:`plan_tree`, default :class:`Limits`) unless the
    caller passes the ``plan`` it already made, so what is written is bounded before
    the first write. Names come from validated trees (no ``/``, ``.`` or ``..``) and
    every parent is a directory this function created, so no write ever passes
    through a symlink. Trees are walked iteratively in this thread (any nesting the
    plan allowed, no recursion); with ``workers > 1`` file contents are
    decompressed, verified and written by a pool of that many threads (zstd, BLAKE3
    and file writes release the GIL), with a bounded number of files in flight.
    Directory modes are applied once every file is written, deepest first. On an
    error, the files in flight finish or stop before this returns (the caller then
    removes ``dest``). A chunked file is written chunk by chunk and checked whole
    (:func:`_write_chunked`).
    """
    if plan is None:
        plan_tree(objects, root)
    count = 0
    base = os.fsencode(dest)
    modes: list[tuple[bytes, int]] = []  # directories, children before parents

    def write_file(target: bytes, entry: TreeEntry) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if entry.type == TYPE_CHUNKED:
                what = os.fsdecode(os.path.relpath(target, base))
                _write_chunked(objects, fd, entry, what)
            else:
                _, raw_len = objects.read_object(
                    entry.oid, partial(write_all, fd), max_size=entry.size
                )
                _check_size(entry, raw_len)
        finally:
            os.close(fd)
        os.chmod(target, entry.mode)

    def fill(run: Callable[[bytes, TreeEntry], None]) -> None:
        nonlocal count
        # Each frame: the entries left to write, the directory's path and its mode.
        stack: list[tuple[Iterator[TreeEntry], bytes, int | None]] = [
            (iter(objects.tree(root)), base, None)
        ]
        while stack:
            entries, path, mode = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if mode is not None:
                    modes.append((path, mode))
                continue
            target = os.path.join(path, entry.name)
            if entry.type == TYPE_DIR:
                os.mkdir(target, 0o700)
                stack.append((iter(objects.tree(entry.oid)), target, entry.mode))
            elif entry.type == TYPE_SYMLINK:
                _kind, link = objects.read_bytes(entry.oid, MAX_SYMLINK)
                _check_size(entry, len(link))
                if not link or b"\0" in link:
                    # os.symlink would raise ValueError / FileNotFoundError: not the taxonomy.
                    raise _bad(f"{entry.name!r}: symlink target is empty or holds a NUL byte")
                os.symlink(link, target)
            else:
                run(target, entry)
                count += 1

    if workers <= 1:
        fill(write_file)
    else:
        with _Pool(workers) as pool:
            fill(partial(pool.submit, write_file))
    for target, mode in modes:
        os.chmod(target, mode)
    return count


class _Pool:
    """A thread pool with a bounded window of pending calls; the first error wins.

    ``submit`` blocks while ``4 * workers`` calls are pending (memory stays bounded
    whatever the tree) and raises the first failure it sees; leaving the ``with``
    block waits for everything, cancels what has not started after an error, and
    raises the first failure.
    """

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="mkit-write")
        self.window = 4 * workers
        self.pending: deque[Future[None]] = deque()

    def submit(self, fn: Callable[[bytes, TreeEntry], None], *args: object) -> None:
        while len(self.pending) >= self.window:
            self.pending.popleft().result()
        self.pending.append(self.executor.submit(fn, *args))  # type: ignore[arg-type]

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                for future in self.pending:
                    future.result()
        finally:
            self.executor.shutdown(wait=True, cancel_futures=True)


def list_files(
    objects: PackObjects, root: bytes, path: str | None = None, *, limits: Limits | None = None
) -> list[FileEntry]:
    """List every entry of a snapshot (or under ``path``), depth first, sorted.

    The (sub)tree is planned first (:func:`plan_tree`), so a listing beyond
    ``limits`` is refused before it is built and memory stays bounded by the
    entry limit; the walk itself is iterative.
    """
    tree, prefix = root, ""
    if path:
        parts = [p for p in path.strip("/").split("/") if p]
        for i, part in enumerate(parts):
            match = [e for e in objects.tree(tree) if e.name == os.fsencode(part)]
            if not match:
                raise FileNotFoundError(f"{path}: not in the snapshot")
            entry = match[0]
            here = "/".join(parts[: i + 1])
            if entry.type != TYPE_DIR:
                if i != len(parts) - 1:
                    raise FileNotFoundError(f"{path}: {here} is not a directory")
                return [_file_entry(here, entry)]
            tree, prefix = entry.oid, here + "/"
    plan_tree(objects, tree, limits)
    found: list[FileEntry] = []
    stack: list[tuple[Iterator[TreeEntry], str]] = [(iter(objects.tree(tree)), prefix)]
    while stack:
        entries, base = stack[-1]
        item = next(entries, None)
        if item is None:
            stack.pop()
            continue
        name = base + os.fsdecode(item.name)
        found.append(_file_entry(name, item))
        if item.type == TYPE_DIR:
            stack.append((iter(objects.tree(item.oid)), name + "/"))
    return found


def _file_entry(path: str, entry: TreeEntry) -> FileEntry:
    return FileEntry(path, _TYPE_NAMES[entry.type], entry.mode, entry.size, entry.oid.hex())
