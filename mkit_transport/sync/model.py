"""The snapshot model (spec/SPEC-SYNC.md): blobs, trees, records and index blobs.

A directory tree becomes content-addressed objects, each named by the BLAKE3 of
its bytes: a **blob** per file content (and per symlink target) and a **tree**
per directory. A **record** names a root tree, its parent record and the packs a
reader needs; an **index blob** lists the objects of one pack, so a pusher learns
what the remote holds from metadata alone. This module holds the byte layouts;
``objects`` reads verified objects out of packs, ``plan`` counts a tree before a
pull writes it, ``materialise`` writes it, and ``scan`` turns a local directory
into objects.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Final

from ..errors import InvalidResponse
from ..hashes import PackKey
from ..pack import KINDS, MAX_ENTRIES

__all__ = [
    "TYPE_CHUNKED",
    "TYPE_DIR",
    "TYPE_FILE",
    "TYPE_SYMLINK",
    "PackRef",
    "Record",
    "TreeEntry",
    "TreeRow",
    "decode_index",
    "decode_record",
    "decode_tree",
    "encode_index",
    "encode_record",
    "encode_tree",
    "encode_tree_rows",
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


#: A tree entry as a plain tuple, in :class:`TreeEntry`'s field order: name, type,
#: mode, size, object id.
TreeRow = tuple[bytes, int, int, int, bytes]


def encode_tree(entries: list[TreeEntry]) -> bytes:
    """Return a tree's canonical bytes (entries sorted by name)."""
    return encode_tree_rows([(e.name, e.type, e.mode, e.size, e.oid) for e in entries])


def encode_tree_rows(rows: list[TreeRow]) -> bytes:
    """:func:`encode_tree` of plain tuples.

    A scan encodes a tree per directory on every push; building a frozen
    :class:`TreeEntry` per file first cost ~30 ms of a 10,000-file re-push.
    """
    ordered = sorted(rows, key=_row_name)
    # Version 2 only when needed, so a tree without chunked files keeps its old id.
    version = 2 if any(row[1] == TYPE_CHUNKED for row in ordered) else 1
    parts = [_TREE_HEAD.pack(_TREE_MAGIC, version, 0, 0, len(ordered))]
    for name, kind, mode, size, oid in ordered:
        _check_name(name)
        length = len(name)
        row = _ROWS.get(length) or _ROWS.setdefault(length, struct.Struct(f"<H{length}sBIQ32s"))
        parts.append(row.pack(length, name, kind, mode, size, oid))
    return b"".join(parts)


#: One compiled ``struct`` per name length: a row packs in one call.
_ROWS: dict[int, struct.Struct] = {}


def _row_name(row: TreeRow) -> bytes:
    return row[0]


def tree_names(data: bytes) -> list[bytes]:
    """The entry names of a tree, in order, without decoding the rest (InvalidResponse).

    For the stat cache's own copies, checked by its checksum already: the walk lists a
    directory whose ``lstat`` did not move from these instead of the filesystem.
    """
    try:
        count = _TREE_HEAD.unpack_from(data, 0)[4]
        pos, names = _TREE_HEAD.size, []
        for _ in range(count):
            length = data[pos] | data[pos + 1] << 8
            names.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length + _TREE_ENTRY.size
    except (struct.error, IndexError) as exc:
        raise _bad(f"tree is truncated: {exc}") from exc
    if pos != len(data):
        raise _bad("tree has trailing bytes")
    return names


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
    # C-level passes, not a Python step per row: a push reads every index blob of
    # its base (tens of thousands of rows) to learn what the remote holds.
    unpacked = list(_INDEX_ROW.iter_unpack(memoryview(data)[_INDEX_HEAD.size :]))
    kinds = list(map(itemgetter(0), unpacked))
    oids = list(map(itemgetter(1), unpacked))
    if not set(kinds) <= KINDS or not all(map(operator.lt, oids, islice(oids, 1, None))):
        raise _bad("index blob rows are malformed or unsorted")
    rows = list(zip(oids, kinds, strict=True))
    return rows


# -- reading objects back ---------------------------------------------------------------
