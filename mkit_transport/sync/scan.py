"""Scan a local directory into snapshot objects (spec/SPEC-SYNC.md).

File contents are hashed, never held (except the bytes of a small file handed to
a consumer that is about to pack them). The walk is single-threaded, in sorted
name order; files over a megabyte are hashed on a second thread meanwhile, so a
tree of many small files and a few large ones keeps both cores busy, and a first
push gets its small files without waiting behind the large ones.

With a :class:`~.statcache.StatCache`, a file whose ``lstat`` matches its trusted
entry is not read at all: its id (or chunk list) comes from the cache, and its
bytes are read later only if the remote lacks them (the packer re-hashes them).

A file larger than one maximal chunk (``CHUNK_MAX``) is cut into content-defined
chunks instead (:func:`~.chunking.chunk_file`, section 8): each distinct chunk is a
blob read from ``(path, offset, length)``, and the file's tree entry names a chunk
list, a metadata object packed with the trees. An edit then re-sends the chunks it
touched, not the file.
"""

from __future__ import annotations

import os
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterator, KeysView, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from operator import itemgetter
from typing import Final, TypeVar

import blake3

from ..errors import PayloadTooLarge
from ..hashes import Hasher
from ..limits import PACK_BODY_LIMIT
from ..pack import KIND_BLOB, KIND_TREE, SMALL_OBJECT
from .chunking import DEFAULT_CHUNKING, ChunkedFile, ChunkParams, chunk_file
from .chunklist import encode_chunk_list
from .model import TYPE_CHUNKED, TYPE_DIR, TYPE_FILE, TYPE_SYMLINK, TreeRow, encode_tree_rows
from .statcache import Cached, Row, StatCache, StatKey, Subtree, stat_key

__all__ = ["HANDOFF_SIZE", "MAX_FILE_SIZE", "ObjectSource", "Snapshot", "scan"]

#: The largest file a snapshot can hold: one object in one pack.
MAX_FILE_SIZE: Final = PACK_BODY_LIMIT - (1 << 20)
#: ``scan`` hands ``on_blob`` the bytes of files up to this size (it read them whole).
HANDOFF_SIZE: Final = 64 << 10
_READ: Final = 4 << 20


@dataclass(slots=True)
class ObjectSource:
    """Where an object's bytes come from: a file on disk, or bytes held (trees, links).

    Treated as immutable, but not ``frozen``: a scan makes one per file, and a frozen
    dataclass's ``__init__`` costs 3x more (~20 ms of a 10,000-file re-push).

    A chunk of a large file has an ``offset`` (its ``size`` bytes start there in
    ``path``); a whole file has none. ``meta`` marks a chunk list: a blob packed with
    the trees, so ``show`` and a pull's planning fetch metadata packs only.
    """

    kind: int
    size: int
    path: str | None = None
    data: bytes | None = None
    offset: int | None = None
    meta: bool = False

    @property
    def with_trees(self) -> bool:
        """Whether this object goes into the tree packs (trees and chunk lists)."""
        return self.kind == KIND_TREE or self.meta


class Snapshot:
    """A scanned directory: its root tree id and every object of its closure.

    ``objects`` is ordered (trees first, deepest last, then chunk lists, then blobs
    in the order :func:`scan` found them) so that packs built from it are
    deterministic. It may be given as a function building it, called once on first
    use: an unchanged re-push needs only ``root`` and ``count`` (how many objects),
    and skips building an object per file (~10 ms of a 10,000-file re-push).
    """

    __slots__ = ("_build", "_objects", "_order", "count", "files", "root")

    def __init__(
        self,
        root: bytes,
        objects: dict[bytes, ObjectSource] | Callable[[], dict[bytes, _Pending]],
        files: int,
        count: int | None = None,
    ) -> None:
        self.root, self.files = root, files
        self._objects: dict[bytes, ObjectSource] | None = None
        self._order: Mapping[bytes, _Pending] | None = None
        self._build: Callable[[], dict[bytes, _Pending]] | None = None
        if isinstance(objects, dict):
            self._objects = self._order = objects
            self.count = len(objects)
        else:
            if count is None:
                raise TypeError("a Snapshot built on demand needs its object count")
            self._build, self.count = objects, count

    def _ordered(self) -> Mapping[bytes, _Pending]:
        if self._order is None:
            assert self._build is not None
            self._order, self._build = self._build(), None
        return self._order

    def ids(self) -> KeysView[bytes]:
        """The ids of :attr:`objects`, in their order, without building an object per file."""
        return self._ordered().keys()

    def source(self, oid: bytes) -> ObjectSource:
        """Where object ``oid``'s bytes come from (KeyError if not in the snapshot)."""
        return _source(self._ordered()[oid])

    @property
    def objects(self) -> dict[bytes, ObjectSource]:
        """Every object of the closure, in pack order (built on first use)."""
        if self._objects is None:
            self._objects = {oid: _source(held) for oid, held in self._ordered().items()}
        return self._objects


#: An object of a snapshot as the scan holds it: its source, or for a small file the
#: stat cache answered, its ``(size, path)`` (the source is made when asked for).
_Pending = ObjectSource | tuple[int, str]


def _source(held: _Pending) -> ObjectSource:
    return held if isinstance(held, ObjectSource) else ObjectSource(KIND_BLOB, *held)


_Hashed = tuple[bytes, int, "bytes | None"]
_T = TypeVar("_T")


def _as_hashed(cached: tuple[bytes, int]) -> _Hashed:
    """A cached whole file as a hashing result (no bytes: the file was not read)."""
    return (cached[0], cached[1], None)


def _done(value: _T) -> Future[_T]:
    """A future already holding ``value`` (a file the stat cache answered)."""
    future: Future[_T] = Future()
    future.set_result(value)
    return future


def _chunk_file(path: str, params: ChunkParams) -> ChunkedFile:
    """Chunk a large file; one that shrank to nothing since its ``stat`` changed."""
    chunked = chunk_file(path, params)
    if not chunked.chunks:
        raise OSError(f"{path}: changed while it was being scanned (now empty); push again")
    return chunked


def _hash_file(path: str, expected: int) -> _Hashed:
    """Hash a file; return its id, size and, for a small file, the bytes hashed.

    ``expected`` is the size ``stat`` gave: a file under :data:`SMALL_OBJECT` bytes
    is read in one call of exactly that size plus one byte (a read of a whole
    megabyte costs ~4x more, allocating it for every file; measured). A file that
    grew is still hashed whole.
    """
    with open(path, "rb", buffering=0) as f:
        want = min(expected + 1, SMALL_OBJECT)
        first = f.read(want)
        if len(first) < want:
            return blake3.blake3(first).digest(), len(first), first
        hasher = Hasher()
        hasher.update(first)
        hasher.update_all(iter(partial(f.read, _READ), b""))
        return bytes(hasher.pack_key()), hasher.length, None


def _check_size(path: str | None, size: int) -> None:
    """Refuse a file too large for one pack (PayloadTooLarge), before anything is sent.

    Checked at ``stat`` (so a huge file is not hashed first) and again on the size
    hashed (a file may grow in between).
    """
    if size > MAX_FILE_SIZE:
        raise PayloadTooLarge(
            f"{path}: {size} bytes is over the {MAX_FILE_SIZE}-byte file limit",
            size=size,
            limit=MAX_FILE_SIZE,
        )


#: One entry of a directory being scanned: name, type, mode, then the size and id,
#: or the subdirectory (and no id), or a file's pending hash or chunking (and size 0).
_Entry = tuple[bytes, int, int, "int | _Dir", "bytes | Future[_Hashed] | Future[ChunkedFile]"]


class _Dir:
    """A scanned directory whose tree is encoded once every file in it is hashed.

    ``key`` is its path relative to the scanned directory plus "/" (b"" for the
    top), ``mode`` its mode bits as its parent's tree row has them; ``tree`` the
    id and bytes the stat cache gave for it (git's cache-tree), when every entry
    in it was answered by the cache: it is then not encoded again; ``links``
    whether it holds a symlink (then its tree is never cached); ``own`` its
    ``lstat``, taken before it was listed (the stat cache keeps it with the tree).
    """

    __slots__ = ("entries", "key", "links", "mode", "own", "tree")

    def __init__(self, key: bytes, mode: int, own: StatKey) -> None:
        self.entries: list[_Entry] = []
        self.key, self.mode, self.own = key, mode, own
        self.tree: tuple[bytes, bytes] | None = None
        self.links = False


class _Scanner:
    """One scan: the walk, the pending large files and the objects found so far."""

    def __init__(
        self,
        on_blob: Callable[[bytes, ObjectSource], None] | None,
        eager: int | None,
        hasher: ThreadPoolExecutor,
        chunking: ChunkParams,
        cache: StatCache | None = None,
    ) -> None:
        self.on_blob, self.eager, self.hasher = on_blob, eager, hasher
        self.chunking, self.cache = chunking, cache
        self.max_size = chunking.max_size
        #: A file up to this size is hashed whole, in the walk (none is chunked).
        self.small = min(SMALL_OBJECT, chunking.max_size)
        self.lookup = cache.lookup if cache is not None else None
        #: Files the cache did not answer and symlinks, so far: a directory whose
        #: walk leaves this unchanged had all of its entries answered.
        self.unanswered = 0
        #: Each regular file's relative path, ``lstat`` key and hashing, for the cache.
        self.hashed: list[tuple[bytes, StatKey, _Hashed | Future[_Hashed] | Future[ChunkedFile]]]
        self.hashed = []
        #: Blobs in walk order; a small file the cache answered is held as its
        #: ``(size, path)`` until the snapshot's objects are built (if ever).
        self.blobs: dict[bytes, _Pending] = {}
        self.trees: dict[bytes, ObjectSource] = {}
        #: Chunk lists, in walk order (packed with the trees).
        self.lists: dict[bytes, ObjectSource] = {}
        self.files = 0
        #: Directories walked (the top included).
        self.dirs = 0
        #: Files over a megabyte, in walk order (their place in ``blobs``).
        self.large: list[tuple[str, Future[_Hashed] | Future[ChunkedFile]]] = []
        #: The eager ones among them, not yet handed to ``on_blob``.
        self.early: deque[tuple[str, Future[_Hashed]]] = deque()
        #: Blobs ``on_blob`` got ahead of their place in ``blobs``.
        self.announced: set[bytes] = set()

    def found(self, oid: bytes, source: ObjectSource, handoff: bytes | None = None) -> None:
        """Record a blob at its place in the order; hand it over unless it went early."""
        if oid in self.blobs:
            return
        _check_size(source.path, source.size)
        self.blobs[oid] = source
        if self.on_blob is not None and oid not in self.announced:
            small = handoff is not None and len(handoff) <= HANDOFF_SIZE
            self.on_blob(oid, replace(source, data=handoff) if small else source)

    def announce(self, path: str, future: Future[_Hashed]) -> None:
        """Hand an eager file over now; it is recorded at its walk-order place later."""
        oid, size, _data = future.result()
        _check_size(path, size)
        if self.on_blob is not None and oid not in self.blobs and oid not in self.announced:
            self.announced.add(oid)
            self.on_blob(oid, ObjectSource(KIND_BLOB, size, path=path))

    def poll(self) -> None:
        """Hand over the eager files hashed so far."""
        while self.early and self.early[0][1].done():
            self.announce(*self.early.popleft())

    def finish(self) -> None:
        """Wait for the large files: the eager ones go first, then all in walk order."""
        while self.early:
            self.announce(*self.early.popleft())
        for path, future in self.large:
            result = future.result()
            if isinstance(result, ChunkedFile):
                self.found_chunked(path, result)
            else:
                oid, size, data = result
                self.found(oid, ObjectSource(KIND_BLOB, size, path=path), data)
            self.files += 1

    def found_chunked(self, path: str, chunked: ChunkedFile) -> None:
        """Record a chunked file: its chunk list, then each new chunk, in file order."""
        _check_size(path, chunked.size)
        data = encode_chunk_list(chunked)
        self.lists.setdefault(
            blake3.blake3(data).digest(), ObjectSource(KIND_BLOB, len(data), data=data, meta=True)
        )
        offset = 0
        for cid, length in chunked.chunks:
            self.found(cid, ObjectSource(KIND_BLOB, length, path=path, offset=offset))
            offset += length

    def walk(self, path: str) -> _Dir:
        """Scan ``path`` depth first, in sorted name order, iteratively (any nesting)."""
        top = _Dir(b"", 0, stat_key(os.lstat(path)))
        self.dirs = 1
        #: Each frame: the children left (name, path), the directory, ``unanswered``
        #: at its start.
        stack: list[tuple[Iterator[tuple[bytes, str]], _Dir, int]] = [
            (self.children(path, top), top, 0)
        ]
        file, is_reg, is_dir, lstat = self.file, stat.S_ISREG, stat.S_ISDIR, os.lstat
        answer = self.cache.small_answer(self.small) if self.cache is not None else None
        # The files whose lstat the cache checked as it opened (and found unchanged,
        # trusted): answered here without another.
        nothing: dict[bytes, Row] = {}
        clean = (self.cache.clean if self.cache is not None else nothing).get
        carried = self.cache.carry() if self.cache is not None else nothing
        small, keep, listing = self.small, self.blobs.setdefault, self.on_blob is None
        # A directory the cache has whole (nothing in it changed) is not visited: only
        # when listing (a first push's stream hands blobs over as it finds them).
        whole = self.cache.subtree if self.cache is not None and listing else None
        base, nested = os.path.join(path, ""), self.graft
        while stack:
            children, folder, before = stack[-1]
            entries, prefix = folder.entries, folder.key
            # One loop per directory (cheaper than a step of the outer loop per entry);
            # it breaks to walk a subdirectory first, and resumes after it.
            for name, child in children:
                if self.early:
                    self.poll()
                rel = prefix + name
                row = clean(rel)
                if row is not None and not row[5] and row[0] <= small:
                    # The common case of a re-push: a small file whose lstat the cache
                    # checked as it opened.
                    carried[rel] = row
                    size, hit, kind = row[0], row[6], row[4]
                else:
                    if whole is not None and (taken := whole(rel + b"/")) is not None:
                        entries.append(nested(name, rel + b"/", base, taken))
                        continue
                    st = lstat(child)
                    kind = st.st_mode
                    if is_dir(kind):
                        sub = _Dir(rel + b"/", kind & 0o777, stat_key(st))
                        entries.append((name, TYPE_DIR, kind & 0o777, sub, b""))
                        stack.append((self.children(child, sub), sub, self.unanswered))
                        self.dirs += 1
                        break
                    if not is_reg(kind):
                        entries.append(self.link(folder, child, name, kind))
                        continue
                    # A small file the cache answers on its lstat (taken just now).
                    answered = answer(rel, st) if answer is not None else None
                    if answered is None:
                        entries.append(file(child, name, rel, kind & 0o777, st))
                        continue
                    size, hit = st.st_size, answered
                if listing:
                    keep(hit, (size, child))
                elif hit not in self.blobs:
                    self.found(hit, ObjectSource(KIND_BLOB, size, path=child))
                self.files += 1
                entries.append((name, TYPE_FILE, kind & 0o777, size, hit))
            else:
                stack.pop()
                self.reuse(folder, before)
        return top

    def graft(self, name: bytes, key: bytes, base: str, whole: Subtree) -> _Entry:
        """The entry of directory ``key``, which the stat cache had whole (``subtree``).

        Its files are found as the walk would find them (in its order; ``base`` is
        the scanned directory's path plus a separator), none read, and its tree and
        its subdirectories' are the cached ones, for :meth:`encode` to record.
        """
        folders: dict[bytes, _Dir] = {}
        for sub, (oid, _count, mode, data, own) in whole.trees:
            folder = folders[sub] = _Dir(sub, mode, own)
            folder.tree = (oid, data)
            if sub != key:
                parent = sub[: sub.rfind(b"/", 0, len(sub) - 1) + 1]
                folders[parent].entries.append((sub[len(parent) : -1], TYPE_DIR, mode, folder, b""))
        self.dirs += len(whole.trees)
        rows = whole.rows
        # One decode for all the paths (NUL is in no name, and decodes alone).
        names = b"\0".join(whole.paths).decode(_FS_ENCODING, _FS_ERRORS).split("\0")
        paths = list(map(base.__add__, names)) if rows else []
        if not rows or max(map(itemgetter(0), rows)) <= self.small:
            # The common case, in C-level passes: small whole files (in walk order,
            # an id already found keeping its place and path).
            pairs = zip(map(itemgetter(0), rows), paths, strict=True)
            deque(map(self.blobs.setdefault, map(itemgetter(6), rows), pairs), 0)
            self.files += len(rows)
        else:
            for rel, row, path in zip(whole.paths, rows, paths, strict=True):
                self.graft_file(path, row, whole.lists.get(rel))
        top = folders[key]
        return (name, TYPE_DIR, top.mode, top, b"")

    def graft_file(self, path: str, row: Row, chunked: ChunkedFile | None) -> None:
        """Find one file of a grafted directory as :meth:`file` finds one the cache answered."""
        size, oid = row[0], row[6]
        if chunked is not None:
            _check_size(path, size)
            self.large.append((path, _done(chunked)))
        elif size > SMALL_OBJECT:
            _check_size(path, size)
            self.large.append((path, _done(_as_hashed((oid, size)))))
        else:
            if size <= self.small:
                self.blobs.setdefault(oid, (size, path))
            else:
                self.found(oid, ObjectSource(KIND_BLOB, size, path=path))
            self.files += 1

    def children(self, path: str, folder: _Dir) -> Iterator[tuple[bytes, str]]:
        """The entries of ``folder`` (at ``path``): name bytes and paths, sorted by name.

        From the stat cache when it found the directory's ``lstat`` unchanged (then
        that ``lstat`` is the folder's own), else listed. ``os.listdir``, not
        ``scandir``: the walk ``lstat``s what the cache did not check anyway.
        """
        prefix = os.path.join(path, "")
        known = self.cache.listing(folder.key) if self.cache is not None else None
        if known is not None:
            folder.own, names = known
            return iter([(name, prefix + name.decode(_FS_ENCODING, _FS_ERRORS)) for name in names])
        listed = [(n.encode(_FS_ENCODING, _FS_ERRORS), prefix + n) for n in os.listdir(path)]
        # Names are unique in a directory: no two entries are compared beyond them.
        listed.sort()
        return iter(listed)

    def link(self, folder: _Dir, path: str, name: bytes, kind: int) -> _Entry:
        """The entry of a symlink (its target is its blob); OSError for anything else."""
        if not stat.S_ISLNK(kind):
            raise OSError(f"{path}: not a regular file, directory or symlink")
        self.unanswered += 1
        folder.links = True
        target = os.fsencode(os.readlink(path))
        oid = blake3.blake3(target).digest()
        self.found(oid, ObjectSource(KIND_BLOB, len(target), data=target))
        return (name, TYPE_SYMLINK, 0, len(target), oid)

    def reuse(self, folder: _Dir, before: int) -> None:
        """Take ``folder``'s tree from the cache if every entry in it was answered.

        Answered recursively: each file's ``lstat`` matched a trusted entry, and each
        subdirectory's tree was reused (one that was not counts as unanswered, so
        its parents are not reused either).
        """
        if self.cache is None:
            return
        if self.unanswered == before:
            folder.tree = self.cache.tree(folder.key, len(folder.entries), folder.mode, folder.own)
        if folder.tree is None:
            self.unanswered += 1

    def file(self, path: str, name: bytes, rel: bytes, mode: int, st: os.stat_result) -> _Entry:
        """Hash (or chunk) a regular file, or take what it gave from the stat cache.

        ``rel`` is its path relative to the scanned directory (the cache's key).
        """
        cached = self.lookup(rel, st) if self.lookup is not None else None
        size = st.st_size
        if cached is None:
            self.unanswered += 1
        elif size <= self.small and type(cached) is tuple:
            # The common case of a re-push, kept short: a small file the cache answered.
            oid = cached[0]
            if self.on_blob is None:
                self.blobs.setdefault(oid, (size, path))
            elif oid not in self.blobs:
                self.found(oid, ObjectSource(KIND_BLOB, size, path=path))
            self.files += 1
            return (name, TYPE_FILE, mode, size, oid)
        if size > self.max_size:
            _check_size(path, size)
            if isinstance(cached, ChunkedFile):
                chunking: Future[ChunkedFile] = _done(cached)
            else:
                chunking = self.hasher.submit(_chunk_file, path, self.chunking)
                self.missed(rel, st, chunking)
            self.large.append((path, chunking))
            return (name, TYPE_CHUNKED, mode, 0, chunking)
        whole = cached if isinstance(cached, tuple) else None
        if size > SMALL_OBJECT:
            _check_size(path, size)
            if whole is not None:
                future: Future[_Hashed] = _done(_as_hashed(whole))
            else:
                future = self.hasher.submit(_hash_file, path, size)
                self.missed(rel, st, future)
            self.large.append((path, future))
            if self.eager is not None and size >= self.eager:
                self.early.append((path, future))
            return (name, TYPE_FILE, mode, 0, future)
        if whole is not None:
            oid, size = whole
            self.found(oid, ObjectSource(KIND_BLOB, size, path=path))
        else:
            hashed = _hash_file(path, size)
            oid, size, data = hashed
            self.found(oid, ObjectSource(KIND_BLOB, size, path=path), data)
            self.missed(rel, st, hashed)
        self.files += 1
        return (name, TYPE_FILE, mode, size, oid)

    def missed(
        self,
        rel: bytes,
        st: os.stat_result,
        hashed: _Hashed | Future[_Hashed] | Future[ChunkedFile],
    ) -> None:
        """Note a file the cache did not answer, to record once it is hashed."""
        if self.cache is not None:
            self.hashed.append((rel, stat_key(st), hashed))

    def remember(self) -> None:
        """Record the hashing of each file the cache did not answer (the scan is done)."""
        if self.cache is None:
            return
        for rel, key, hashed in self.hashed:
            result = hashed.result() if isinstance(hashed, Future) else hashed
            cached: Cached = result if isinstance(result, ChunkedFile) else result[:2]
            self.cache.record(rel, key, cached)

    def encode(self, top: _Dir) -> bytes:
        """Encode ``top``'s tree (and its subtrees, first); return its id.

        Iterative post-order, children in entry order: the trees are found in the
        order the recursive encoder found them, so packs stay deterministic.
        """
        #: Each frame: the entries left, the tree rows made so far, the directory
        #: and the (name, type, mode) it has in its parent (None for the top). A
        #: directory whose tree the cache gave visits its subdirectories only (to
        #: record their trees, in the same order), and makes no rows.
        stack: list[tuple[Iterator[_Entry], list[TreeRow], _Dir, tuple[bytes, int, int] | None]] = [
            (self.pending(top), [], top, None)
        ]
        while True:
            pending, done, folder, named = stack[-1]
            item = next(pending, None)
            if item is None:
                stack.pop()
                oid = self.encode_one(done, folder)
                if named is None:
                    return oid
                stack[-1][1].append((named[0], named[1], named[2], 0, oid))
                continue
            name, kind, mode, size, ref = item
            if isinstance(size, _Dir):
                stack.append((self.pending(size), [], size, (name, kind, mode)))
            elif isinstance(ref, Future):
                result = ref.result()
                if isinstance(result, ChunkedFile):
                    data = encode_chunk_list(result)
                    list_id = blake3.blake3(data).digest()
                    done.append((name, kind, mode, result.size, list_id))
                else:
                    oid, real_size, _data = result
                    done.append((name, kind, mode, real_size, oid))
            else:
                done.append((name, kind, mode, size, ref))

    @staticmethod
    def pending(folder: _Dir) -> Iterator[_Entry]:
        """The entries of ``folder`` to encode: its subdirectories only if its tree is reused."""
        if folder.tree is None:
            return iter(folder.entries)
        return (entry for entry in folder.entries if entry[1] == TYPE_DIR)

    def encode_one(self, rows: list[TreeRow], folder: _Dir) -> bytes:
        """Encode one tree from its rows (or take the cache's), record it, return its id."""
        if folder.tree is not None:
            oid, data = folder.tree
        else:
            data = encode_tree_rows(rows)
            oid = blake3.blake3(data).digest()
            if self.cache is not None and not folder.links:
                self.cache.record_tree(
                    folder.key, oid, len(folder.entries), folder.mode, data, folder.own
                )
        self.trees.setdefault(oid, ObjectSource(KIND_TREE, len(data), data=data))
        return oid


#: ``os.fsencode``'s codec, bound once (its call per name cost ~10 ms of a 10,000-file scan).
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()


def scan(
    source_dir: str | os.PathLike[str],
    on_blob: Callable[[bytes, ObjectSource], None] | None = None,
    eager: int | None = None,
    _chunking: ChunkParams = DEFAULT_CHUNKING,
    *,
    stat_cache: StatCache | None = None,
    _shortcut: bool = True,
) -> Snapshot:
    """Hash a directory tree into a :class:`Snapshot`, never following a symlink.

    Regular files, directories and symlinks are kept (with their permission bits);
    anything else (a socket, a device) is an OSError. ``on_blob(oid, source)`` once per
    distinct blob as soon as it is hashed (a first push packs blobs while the scan
    goes on), with the bytes in ``source.data`` for a file of at most
    :data:`HANDOFF_SIZE` bytes. The order is deterministic: symlinks and small
    files in walk order, then files over a megabyte in walk order, and
    ``Snapshot.objects`` keeps that order. Files of at least ``eager`` bytes are
    handed to ``on_blob`` as soon as they are hashed, ahead of it (for a consumer
    that packs each of them alone, so the order does not matter to it). An
    exception from a callback stops the scan.

    A file over ``_chunking.max_size`` bytes (``CHUNK_MAX``; tests pass smaller
    :class:`ChunkParams`) is chunked: its chunks are handed over as blobs with an
    ``offset``, in file order at the file's place among the large files, and its
    chunk list joins ``Snapshot.objects`` after the trees (``meta``); chunks are
    never eager.

    ``stat_cache`` (push's, spec/SPEC-SYNC.md "Stat cache"): a file whose ``lstat``
    matches a trusted entry is not read (its id or chunk list comes from the
    cache; ``on_blob`` then gets no bytes), and every file's hashing is recorded in
    it for :meth:`~.statcache.StatCache.save`.
    """
    root_path = os.fspath(source_dir)
    if not os.path.isdir(root_path):
        raise NotADirectoryError(f"{root_path}: not a directory")
    shortcut = stat_cache is not None and on_blob is None and _shortcut
    same = stat_cache.unchanged() if shortcut and stat_cache is not None else None
    if same is not None:
        # Not one file or directory changed since the last push (the cache checked
        # each lstat): its snapshot, whose objects are listed only if asked for.
        root, files, count = same
        return Snapshot(
            root, partial(_rescan, root_path, _chunking, stat_cache, root), files, count
        )
    with ThreadPoolExecutor(1, thread_name_prefix="mkit-hash") as hasher:
        scanner = _Scanner(on_blob, eager, hasher, _chunking, stat_cache)
        try:
            top = scanner.walk(root_path)
            scanner.finish()
        except BaseException:
            hasher.shutdown(cancel_futures=True)
            raise
    root = scanner.encode(top)
    scanner.remember()
    trees, lists, blobs = scanner.trees, scanner.lists, scanner.blobs
    count = len(trees.keys() | lists.keys() | blobs.keys())
    if stat_cache is not None:
        stat_cache.scanned(root, scanner.files, count, scanner.dirs)

    def objects() -> dict[bytes, _Pending]:
        built: dict[bytes, _Pending] = dict(reversed(list(trees.items())))
        built.update((k, v) for k, v in lists.items() if k not in built)
        # The blobs in C-level passes: an id already there keeps its place and source.
        first = {k: built[k] for k in built.keys() & blobs.keys()}
        built.update(blobs)
        built.update(first)
        return built

    return Snapshot(root, objects, scanner.files, count)


def _rescan(
    root_path: str, chunking: ChunkParams, cache: StatCache | None, root: bytes
) -> dict[bytes, _Pending]:
    """The objects of an unchanged tree, when asked for: the walk, the cache answering.

    A tree that changed since the cache found it unchanged is an OSError, like a
    file that changes while it is pushed: the snapshot's root would not hold them.
    """
    again = scan(root_path, _chunking=chunking, stat_cache=cache, _shortcut=False)
    if again.root != root:
        raise OSError(f"{root_path}: the tree changed while it was pushed")
    return dict(again._ordered())
