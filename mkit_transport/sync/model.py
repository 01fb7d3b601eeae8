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
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

from ..directio import write_all
from ..errors import InvalidResponse, PayloadTooLarge
from ..hashes import Hasher, PackKey
from ..pack import KIND_TREE, KINDS, MAX_ENTRIES, PackFile
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list

__all__ = [
    "TYPE_CHUNKED",
    "TYPE_DIR",
    "TYPE_FILE",
    "TYPE_SYMLINK",
    "FileEntry",
    "ObjectReader",
    "PackObjects",
    "PackRef",
    "Record",
    "TreeEntry",
    "decode_index",
    "decode_record",
    "decode_tree",
    "encode_index",
    "encode_record",
    "encode_tree",
    "list_files",
    "materialise",
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
#: Deepest directory nesting and most entries a materialisation accepts.
MAX_DEPTH: Final = 512
MAX_TOTAL_ENTRIES: Final = 50_000_000


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


class PackObjects:
    """Objects found across a snapshot's pack files (each re-hashed as it is read)."""

    def __init__(self, packs: list[PackFile]) -> None:
        self.packs = packs

    def read_object(
        self, oid: bytes, out: Callable[[bytes], object] | None, *, max_size: int | None = None
    ) -> tuple[int, int]:
        """Stream object ``oid`` from whichever pack holds it."""
        for pack in self.packs:
            if oid in pack:
                return pack.read_object(oid, out, max_size=max_size)
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
        """Close every pack file."""
        for pack in self.packs:
            pack.close()


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


def materialise(objects: PackObjects, root: bytes, dest: str, *, workers: int = 1) -> int:
    """Write tree ``root`` into the existing empty directory ``dest``; return the file count.

    Names come from validated trees (no ``/``, ``.`` or ``..``) and every parent is a
    directory this function created, so no write ever passes through a symlink.
    Trees are walked in this thread; with ``workers > 1`` file contents are
    decompressed, verified and written by a pool of that many threads (zstd, BLAKE3
    and file writes release the GIL), with a bounded number of files in flight.
    Directory modes are applied once every file is written, deepest first. On an
    error, the files in flight finish or stop before this returns (the caller then
    removes ``dest``). A chunked file is written chunk by chunk and checked whole
    (:func:`_write_chunked`).
    """
    count = 0
    base = os.fsencode(dest)
    budget = [MAX_TOTAL_ENTRIES]
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

    def fill(tree: bytes, path: bytes, depth: int, run: Callable[[bytes, TreeEntry], None]) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            raise _bad(f"tree nesting is deeper than {MAX_DEPTH}")
        for entry in objects.tree(tree):
            budget[0] -= 1
            if budget[0] < 0:
                raise PayloadTooLarge(f"snapshot has more than {MAX_TOTAL_ENTRIES} entries")
            target = os.path.join(path, entry.name)
            if entry.type == TYPE_DIR:
                os.mkdir(target, 0o700)
                fill(entry.oid, target, depth + 1, run)
                modes.append((target, entry.mode))
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
        fill(root, base, 0, write_file)
    else:
        with _Pool(workers) as pool:
            fill(root, base, 0, partial(pool.submit, write_file))
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


def list_files(objects: PackObjects, root: bytes, path: str | None = None) -> list[FileEntry]:
    """List every entry of a snapshot (or under ``path``), depth first, sorted."""
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
    found: list[FileEntry] = []

    def walk(oid: bytes, base: str) -> None:
        for entry in objects.tree(oid):
            name = base + os.fsdecode(entry.name)
            found.append(_file_entry(name, entry))
            if entry.type == TYPE_DIR:
                walk(entry.oid, name + "/")

    walk(tree, prefix)
    return found


def _file_entry(path: str, entry: TreeEntry) -> FileEntry:
    return FileEntry(path, _TYPE_NAMES[entry.type], entry.mode, entry.size, entry.oid.hex())
