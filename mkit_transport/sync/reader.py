"""One file of a remote snapshot on demand: :func:`open_snapshot` (spec/SPEC-SYNC.md section 10).

A pull downloads whole packs; reading one file should not. :class:`RemoteSnapshot`
downloads the snapshot's record, then only what a question needs, by ranged reads
(:mod:`.ranged`): a pack's index (its tail, one range), the trees on the way to a
path, and the file's blob or chunk list and chunks. Every object is verified against
its own id before its bytes are handed on; a chunked file is also checked whole
against its chunk list before the end of the file is reported. Trees and pack
indexes are memoised per reader, within byte budgets.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator
from typing import Final

from ..errors import InvalidArgument, InvalidResponse, PayloadTooLarge, RefNotFound
from ..hashes import Hash, Hasher, PackKey
from ..pack import KIND_BLOB, KIND_TREE, MAX_OBJECT_SIZE
from ..transport import Transport
from .chunklist import MAX_CHUNK_LENGTH, MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .common import fetch_record, record_key
from .materialise import FileEntry, _file_entry
from .model import (
    MAX_SYMLINK,
    MAX_TREE_SIZE,
    TYPE_CHUNKED,
    TYPE_DIR,
    TYPE_FILE,
    TYPE_SYMLINK,
    Record,
    TreeEntry,
    decode_tree,
)
from .plan import MAX_DEPTH
from .progress import Meter
from .ranged import RangedPack, iter_object, read_object, read_pack_index

__all__ = ["RemoteSnapshot", "open_snapshot"]

#: Default memory for memoised pack indexes (48 bytes an object) and trees.
DEFAULT_INDEX_BUDGET: Final = 32 << 20
DEFAULT_TREE_BUDGET: Final = 32 << 20
#: A plain (unchunked) blob up to this size is verified whole before ``open`` hands
#: out its first byte; a larger one (only old or foreign writers make them) streams
#: and is verified before end of file is reported.
_HOLD_BACK: Final = MAX_CHUNK_LENGTH


def open_snapshot(
    transport: Transport,
    ref_or_hash: str | Hash | PackKey,
    *,
    index_budget: int = DEFAULT_INDEX_BUDGET,
    tree_budget: int = DEFAULT_TREE_BUDGET,
) -> RemoteSnapshot:
    """Open the snapshot a ref points at (or the record ``ref_or_hash`` names) for reading.

    ``ref_or_hash`` is a ref name (``refs/...``), a record's hash as 64 lowercase hex
    (what ``log`` prints), or a :class:`Hash`/:class:`PackKey`. Only the record is
    downloaded here.

    Raises:
        RefNotFound: the ref is absent.
        InvalidRef: a malformed ref name or hash.
        PackNotFound: the record blob is absent.
        InvalidArgument: ``ref_or_hash`` is of another type.
    """
    meter = Meter(None)
    ref: str | None = None
    if isinstance(ref_or_hash, Hash | PackKey):
        value = Hash(bytes(ref_or_hash))
    elif isinstance(ref_or_hash, str):
        if ref_or_hash.startswith("refs/"):
            ref = ref_or_hash
            found = transport.read_ref(ref)
            if found is None:
                raise RefNotFound(f"ref {ref} is absent: no snapshot to read", name=ref)
            value = found
        else:
            value = Hash.from_hex(ref_or_hash)
    else:
        raise InvalidArgument(
            f"open_snapshot takes a ref name or a record hash, not {type(ref_or_hash).__name__}"
        )
    record = fetch_record(transport, value, meter)
    return RemoteSnapshot(
        transport,
        record_key(value),
        record,
        ref=ref,
        meter=meter,
        index_budget=index_budget,
        tree_budget=tree_budget,
    )


class RemoteSnapshot:
    """A snapshot read in place on its remote, object by object (see :func:`open_snapshot`).

    Safe to share between threads: its caches are locked (pack indexes and trees are
    read under that lock, file contents outside it). ``bytes_in`` counts every byte
    it downloaded, record included.
    """

    def __init__(
        self,
        transport: Transport,
        key: PackKey,
        record: Record,
        *,
        ref: str | None = None,
        meter: Meter | None = None,
        index_budget: int = DEFAULT_INDEX_BUDGET,
        tree_budget: int = DEFAULT_TREE_BUDGET,
    ) -> None:
        self.transport = transport
        self.key = key
        self.record = record
        self.ref = ref
        self.meter = meter if meter is not None else Meter(None)
        self.index_budget = index_budget
        self.tree_budget = tree_budget
        self._indexes: OrderedDict[PackKey, RangedPack] = OrderedDict()
        self._trees: OrderedDict[bytes, tuple[list[TreeEntry], int]] = OrderedDict()
        self._index_bytes = self._tree_bytes = 0
        self._lock = threading.RLock()

    @property
    def root(self) -> bytes:
        """The id of the snapshot's root tree."""
        return self.record.root

    @property
    def bytes_in(self) -> int:
        """Bytes downloaded so far (record, index ranges, object ranges)."""
        return self.meter.bytes_in

    @property
    def cached(self) -> tuple[int, int]:
        """How many pack indexes and trees are memoised now (bounded by the budgets)."""
        with self._lock:
            return len(self._indexes), len(self._trees)

    # -- objects ---------------------------------------------------------------------

    def _index(self, number: int) -> RangedPack:
        """Pack ``number``'s index, memoised (least recently used dropped past the budget)."""
        pack = self.record.packs[number]
        with self._lock:
            index = self._indexes.get(pack.key)
            if index is not None:
                self._indexes.move_to_end(pack.key)
                return index
            index = read_pack_index(self.transport, pack, self.meter)
            self._indexes[pack.key] = index
            self._index_bytes += index.nbytes
            while self._index_bytes > self.index_budget and len(self._indexes) > 1:
                _, dropped = self._indexes.popitem(last=False)
                self._index_bytes -= dropped.nbytes
            return index

    def _locate(self, oid: bytes) -> RangedPack | None:
        """The index of the pack holding ``oid``: memoised packs first, newest use first."""
        with self._lock:
            for index in reversed(list(self._indexes.values())):
                if oid in index:
                    self._indexes.move_to_end(index.key)
                    return index
            cached = set(self._indexes)
            for number, pack in enumerate(self.record.packs):
                if pack.key not in cached:
                    index = self._index(number)
                    if oid in index:
                        return index
        return None

    def _need(self, oid: bytes, what: str) -> RangedPack:
        """The pack of an object the snapshot refers to: absent means the store is damaged."""
        index = self._locate(oid)
        if index is None:
            raise InvalidResponse(f"{what}: object {oid.hex()} is in none of the snapshot's packs")
        return index

    def has_object(self, oid: bytes | str) -> bool:
        """Whether one of the snapshot's packs holds object ``oid`` (reads pack indexes only)."""
        return self._locate(_oid(oid)) is not None

    def get_object(self, oid: bytes | str, *, max_size: int = MAX_OBJECT_SIZE) -> bytes:
        """Object ``oid``'s raw bytes (blob, tree or chunk list), verified against its id.

        An id none of the snapshot's packs holds is :class:`InvalidArgument`.
        """
        raw = _oid(oid)
        index = self._locate(raw)
        if index is None:
            raise InvalidArgument(f"object {raw.hex()} is not in snapshot {self.key.hex()}")
        return read_object(self.transport, index, raw, max_size=max_size, meter=self.meter)[1]

    def _read(self, oid: bytes, max_size: int, kind: int, what: str) -> bytes:
        index = self._need(oid, what)
        got, data = read_object(self.transport, index, oid, max_size=max_size, meter=self.meter)
        if got != kind:
            raise InvalidResponse(f"{what}: object {oid.hex()} is of kind {got}, not {kind}")
        return data

    def _tree(self, oid: bytes) -> list[TreeEntry]:
        with self._lock:
            hit = self._trees.get(oid)
            if hit is not None:
                self._trees.move_to_end(oid)
                return hit[0]
            data = self._read(oid, MAX_TREE_SIZE, KIND_TREE, "tree")
            entries = decode_tree(data)
            self._trees[oid] = (entries, len(data))
            self._tree_bytes += len(data)
            while self._tree_bytes > self.tree_budget and len(self._trees) > 1:
                _, (_, size) = self._trees.popitem(last=False)
                self._tree_bytes -= size
            return entries

    # -- paths -----------------------------------------------------------------------

    def _lookup(self, path: str) -> tuple[str, TreeEntry]:
        """The entry at ``path`` (the root is a directory entry with an empty path)."""
        if not isinstance(path, str):
            raise InvalidArgument(f"a snapshot path is a str, not {type(path).__name__}")
        parts = [p for p in path.split("/") if p]
        entry = TreeEntry(b"", TYPE_DIR, 0o755, 0, self.record.root)
        for i, part in enumerate(parts):
            if entry.type != TYPE_DIR:
                here = "/".join(parts[:i])
                raise InvalidArgument(f"{path}: {here} is not a directory in the snapshot")
            name = os.fsencode(part)
            match = [e for e in self._tree(entry.oid) if e.name == name]
            if not match:
                raise InvalidArgument(f"{path}: not in the snapshot")
            entry = match[0]
        return "/".join(parts), entry

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` (type, mode, size, id); a missing path is InvalidArgument."""
        where, entry = self._lookup(path)
        return _file_entry(where or "/", entry)

    def entries(self, path: str = "") -> Iterator[FileEntry]:
        """Yield every entry under ``path`` (or the entry itself, for a file), depth first.

        Iterative (no recursion): memory is one open tree per directory level, and a
        nesting deeper than the pull's limit (512) is :class:`PayloadTooLarge`.
        """
        where, entry = self._lookup(path)
        if entry.type != TYPE_DIR:
            yield _file_entry(where, entry)
            return
        prefix = where + "/" if where else ""
        stack: list[tuple[Iterator[TreeEntry], str]] = [(iter(self._tree(entry.oid)), prefix)]
        while stack:
            children, base = stack[-1]
            item = next(children, None)
            if item is None:
                stack.pop()
                continue
            name = base + os.fsdecode(item.name)
            yield _file_entry(name, item)
            if item.type == TYPE_DIR:
                if len(stack) >= MAX_DEPTH:
                    raise PayloadTooLarge(f"{name}: nested deeper than {MAX_DEPTH} directories")
                stack.append((iter(self._tree(item.oid)), name + "/"))

    def readlink(self, path: str) -> str:
        """A symlink's target (verified); anything else is InvalidArgument."""
        where, entry = self._lookup(path)
        if entry.type != TYPE_SYMLINK:
            raise InvalidArgument(f"{where or '/'}: not a symlink")
        link = self._read(entry.oid, MAX_SYMLINK, KIND_BLOB, where)
        return os.fsdecode(link)

    def _file(self, path: str) -> tuple[str, TreeEntry]:
        where, entry = self._lookup(path)
        if entry.type == TYPE_DIR:
            raise InvalidArgument(f"{where or '/'}: is a directory, not a file")
        if entry.type == TYPE_SYMLINK:
            raise InvalidArgument(f"{where}: is a symlink, not a file (readlink reads its target)")
        return where, entry

    def read(self, path: str) -> bytes:
        """The whole content of the file at ``path``, verified (use :meth:`open` for big ones)."""
        where, entry = self._file(path)
        return b"".join(self._pieces(where, entry))

    def open(self, path: str) -> io.BufferedReader:
        """A binary file object streaming the file at ``path`` (read, readinto, close, with).

        Memory: one chunk (at most 16 MiB, 1 MiB on average) at a time. Each chunk is
        verified before its first byte is returned; a chunked file's last chunk is
        returned only after the whole file matched its chunk list. A mismatch raises
        :class:`InvalidResponse` from ``read`` and end of file is never reported for
        bytes that were not verified.
        """
        where, entry = self._file(path)
        return io.BufferedReader(_Stream(self._pieces(where, entry)), buffer_size=1 << 16)

    def _pieces(self, where: str, entry: TreeEntry) -> Iterator[bytes]:
        """The file's bytes as verified pieces (see :meth:`open`)."""
        if entry.type == TYPE_FILE:
            index = self._need(entry.oid, where)
            pieces = iter_object(
                self.transport, index, entry.oid, max_size=entry.size, meter=self.meter
            )
            if entry.size <= _HOLD_BACK:
                yield b"".join(_checked(pieces, entry.size, KIND_BLOB, where))
            else:
                yield from _checked(pieces, entry.size, KIND_BLOB, where)
            return
        if entry.type != TYPE_CHUNKED:
            raise InvalidResponse(f"{where}: tree entry of type {entry.type}")
        listing = self._read(entry.oid, MAX_CHUNK_LIST_SIZE, KIND_BLOB, where)
        chunked = decode_chunk_list(listing)
        if chunked.size != entry.size:
            raise InvalidResponse(
                f"{where}: chunk list has {chunked.size} bytes, the tree says {entry.size}"
            )
        whole = Hasher()
        last = len(chunked.chunks) - 1
        for number, (cid, length) in enumerate(chunked.chunks):
            data = self._read(cid, length, KIND_BLOB, where)
            if len(data) != length:
                raise InvalidResponse(
                    f"{where}: chunk {cid.hex()} has {len(data)} bytes, its list says {length}"
                )
            whole.update(data)
            if number == last and bytes(whole.pack_key()) != chunked.id:
                raise InvalidResponse(
                    f"{where}: the file's chunks do not match its chunk list's content id"
                )
            yield data

    def close(self) -> None:
        """Drop the memoised indexes and trees (the transport is the caller's)."""
        with self._lock:
            self._indexes.clear()
            self._trees.clear()
            self._index_bytes = self._tree_bytes = 0

    def __enter__(self) -> RemoteSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked(
    pieces: Generator[bytes, None, tuple[int, int]], size: int, kind: int, where: str
) -> Iterator[bytes]:
    """Pass ``pieces`` on; then check the object's kind and length against its tree entry."""
    got_kind, raw_len = yield from pieces
    if got_kind != kind or raw_len != size:
        raise InvalidResponse(
            f"{where}: object of kind {got_kind} and {raw_len} bytes, the tree says {size}"
        )


def _oid(oid: bytes | str) -> bytes:
    """An object id from 32 bytes or 64 lowercase hex (else InvalidArgument)."""
    if isinstance(oid, str):
        try:
            return bytes(PackKey.from_hex(oid))
        except Exception as error:
            raise InvalidArgument(f"not an object id: {oid[:80]!r}") from error
    if isinstance(oid, bytes | bytearray) and len(oid) == 32:
        return bytes(oid)
    raise InvalidArgument(f"an object id is 32 bytes or 64 hex characters, not {oid!r:.80}")


class _Stream(io.RawIOBase):
    """A raw binary stream over an iterator of verified pieces (what :meth:`open` wraps)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        super().__init__()
        self._pieces: Iterator[bytes] | None = pieces
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("read of a closed snapshot file")
        while not self._view and self._pieces is not None:
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
            else:
                self._view = memoryview(piece)
        count = min(len(buffer), len(self._view))
        memoryview(buffer).cast("B")[:count] = self._view[:count]
        self._view = self._view[count:]
        return count

    def close(self) -> None:
        self._pieces = None
        self._view = memoryview(b"")
        super().close()
