"""The stat cache of push (spec/SPEC-SYNC.md section 9, "Stat cache"): unchanged files are not read.

Git's index idea: per source directory, a local file maps each regular file's
relative path and ``(size, mtime_ns, ctime_ns, inode, mode)`` to what hashing it
gave (its content id; for a chunked file, its whole chunk list). A re-push whose
files match their entries rebuilds the snapshot without reading them, so an
unchanged tree costs a walk and ``lstat`` calls, not a re-hash of every byte. The
packer still reads (and re-hashes, checking the id) any object the remote lacks.

The cache only ever speeds a push up; it never decides what a snapshot holds:

* **racily clean entries** (git's rule): an entry whose mtime or ctime is not
  strictly older than the cache's reference time minus :data:`RACY_WINDOW_NS` is
  not trusted. The reference time is the filesystem's clock when the push that
  wrote the cache *started* its scan (the mtime of the cache's temp file, created
  before the walk), so a file changed after its ``lstat`` within one timestamp
  tick of it is hashed again next time;
* **a corrupt, truncated or foreign file** is ignored whole (and rewritten by the
  push): magic, version, the source's real path and device, the chunking
  parameters, and a BLAKE3 trailer over every byte before it must all match;
* **concurrent pushes** each write their own temp file and ``os.replace`` it: a
  reader sees one whole cache or another, never a mix;
* **the limitation shared with git**: a change that keeps size, mtime, ctime and
  inode (and mode) is not seen; ``push(stat_cache=False)`` / ``--no-cache`` re-hashes
  everything.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import operator
import os
import struct
import tempfile
import time
from collections.abc import Callable
from operator import itemgetter
from types import TracebackType
from typing import Final, NamedTuple, TypeVar

import blake3

from ..errors import InvalidResponse
from .chunking import DEFAULT_CHUNKING, ChunkedFile, ChunkParams
from .chunklist import decode_chunk_list, encode_chunk_list
from .lstatcheck import stale
from .model import tree_names
from .restore import default_cache_dir

__all__ = [
    "CACHE_VERSION",
    "RACY_WINDOW_NS",
    "Cached",
    "StatCache",
    "StatKey",
    "cache_path",
    "default_stat_cache_dir",
    "stat_key",
]

#: The cache file's format version (a change of it invalidates every cache file).
CACHE_VERSION: Final = 3
#: The timestamp granularity assumed of any filesystem (FAT's 2 s, the coarsest);
#: an entry is trusted only if it is older than the cache's reference time by more.
RACY_WINDOW_NS: Final = 2_000_000_000

_MAGIC: Final = b"MKSTATC\0"
#: magic, version, reserved, chunk min/avg/max, reference time, device, root length,
#: entry count, bytes of the paths, bytes of the chunk lists, directory count, bytes
#: of the directory paths, bytes of the trees, whether the cache is complete, the
#: snapshot's file and object counts (both 0 unless complete); then the root's real
#: path, the rows, the paths (NUL-separated, in row order), the chunk lists, the
#: directory rows, the directory paths and the trees.
_HEAD = struct.Struct("<8sHHIIIqQIIQQIQQBQQ")
#: size, mtime_ns, ctime_ns, inode, mode, kind, content id, chunk list offset and length
_ROW = struct.Struct("<QqqQIB32sQI")
#: the directory's own size, mtime_ns, ctime_ns, inode and mode (its lstat before it
#: was listed), tree id, entry count, mode bits, tree offset and length
_DIR = struct.Struct("<QqqQI32sIIQI")
_TRAILER: Final = 32
_WHOLE: Final = 0
_CHUNKED: Final = 1

#: ``(size, mtime_ns, ctime_ns, inode, mode)`` of an ``lstat``.
StatKey = tuple[int, int, int, int, int]
#: What hashing a file gave: ``(content id, size)``, or its chunking.
Cached = tuple[bytes, int] | ChunkedFile
#: One entry as stored: the :data:`StatKey` fields, kind, id, chunk list offset, length.
Row = tuple[int, int, int, int, int, int, bytes, int, int]
#: A directory's tree as stored (git's cache-tree): its id, its entry count, its own
#: mode bits (as its parent's tree row gives them), the tree's bytes, and the
#: directory's ``lstat`` taken before it was listed (its names are unchanged while
#: that is).
Tree = tuple[bytes, int, int, bytes, StatKey]


def stat_key(st: os.stat_result) -> StatKey:
    """The fields of ``st`` an entry is keyed by."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def default_stat_cache_dir() -> str:
    """Where stat caches live unless told: ``$XDG_CACHE_HOME/mkit_transport/stat``."""
    return os.path.join(default_cache_dir(), "stat")


def cache_path(source_dir: str | os.PathLike[str], directory: str | None = None) -> str:
    """The cache file of ``source_dir``: named by the BLAKE3 of its real path."""
    real = os.fsencode(os.path.realpath(source_dir))
    name = blake3.blake3(real).hexdigest()
    return os.path.join(directory or default_stat_cache_dir(), name)


#: A temp file this old is a killed push's (no live push scans for a day).
_STALE_NS: Final = 86_400 * 1_000_000_000


def _sweep(folder: str, prefix: str) -> None:
    """Remove the temp files killed pushes of this directory left (a day old or more)."""
    now = time.time_ns()
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime_ns > _STALE_NS:
                        os.unlink(entry.path)


class _Foreign(Exception):
    """The cache file is not a valid cache of this directory (ignored whole)."""


_V = TypeVar("_V")


def _without(rows: dict[bytes, _V], stale: list[int]) -> dict[bytes, _V]:
    """``rows`` less the entries at positions ``stale`` (``rows`` itself if none)."""
    if not stale:
        return rows
    keys, kept = list(rows), dict(rows)
    for index in stale:
        del kept[keys[index]]
    return kept


#: Files in the walk's order, their sort keys, their rows; directories, their sort keys.
_Order = tuple[list[bytes], list[bytes], list[Row], list[bytes], list[bytes]]
#: A path's sort key in the walk's order (``/`` as NUL).
_walk_key: Final = operator.methodcaller("replace", b"/", b"\0")


class Subtree(NamedTuple):
    """A directory the stat cache has whole (:meth:`StatCache.subtree`), in the walk's order."""

    #: Its files' paths (relative to the source), in the walk's order, and their rows.
    paths: list[bytes]
    rows: list[Row]
    #: Its directories (itself first) by key, with their cached trees.
    trees: list[tuple[bytes, Tree]]
    #: The chunk lists of its chunked files, by path.
    lists: dict[bytes, ChunkedFile]


def _above(paths: list[bytes]) -> set[bytes]:
    """The directory keys (``a/b/``, and b"" for the top) holding each of ``paths``.

    A directory's key (``a/b/``) counts as within itself: its names changed.
    """
    keys: set[bytes] = set()
    for path in paths:
        keys.add(b"")
        cut = path.rfind(b"/")
        while cut >= 0 and path[: cut + 1] not in keys:
            keys.add(path[: cut + 1])
            cut = path.rfind(b"/", 0, cut)
    return keys


def _parse_trees(keys: list[bytes], rows: memoryview, trees: memoryview) -> dict[bytes, Tree]:
    """The directory rows of a cache file with their trees' bytes; :class:`_Foreign` if bad."""
    parsed: dict[bytes, Tree] = {}
    for key, (*own, oid, count, mode, at, length) in zip(keys, _DIR.iter_unpack(rows), strict=True):
        if at + length > len(trees):
            raise _Foreign
        data = bytes(trees[at : at + length])
        parsed[key] = (oid, count, mode, data, (own[0], own[1], own[2], own[3], own[4]))
    return parsed


class StatCache:
    """One push's view of a directory's stat cache: the old entries in, new ones out.

    :meth:`open` loads the last cache written (if valid) and creates the temp file
    the new one is written to, whose mtime is this push's reference time;
    :meth:`lookup` answers from the old entries; :meth:`record` collects the new;
    :meth:`save` replaces the cache file atomically. Leaving the ``with`` block
    without :meth:`save` removes the temp file and changes nothing.
    """

    def __init__(
        self,
        path: str,
        root: bytes,
        device: int,
        chunking: ChunkParams,
        *,
        read: bool = True,
    ) -> None:
        self.path, self.root, self.device, self.chunking = path, root, device, chunking
        #: Rows by relative path: the entries read, and the entries to write.
        self._old: dict[bytes, Row] = {}
        self._new: dict[bytes, Row] = {}
        #: The chunk lists of chunked entries, read and to write.
        self._old_lists: dict[bytes, ChunkedFile] = {}
        self._new_lists: dict[bytes, ChunkedFile] = {}
        #: Directory trees by the directory's relative path plus "/" (b"" for the top):
        #: read, and to write (every directory of this push whose tree may be reused).
        self._old_trees: dict[bytes, Tree] = {}
        self._new_trees: dict[bytes, Tree] = {}
        #: Whether an entry was recorded (hashed) rather than carried over from the file.
        self._changed = False
        self._trusted_before = 0
        self._temp: tuple[int, str] | None = None
        self._ref_ns = 0
        #: The file's rows and paths as stored, for :meth:`_check` (then dropped).
        self._stored: tuple[bytes, memoryview, bytes, memoryview] | None = None
        #: What the file says of the snapshot when it is complete (every file and
        #: directory of the tree has its entry): its root, files and objects.
        self._complete: tuple[bytes, int, int] | None = None
        #: The same, of this push's scan, for :meth:`save` (:meth:`scanned`).
        self._summary: tuple[bytes, int, int] | None = None
        #: The rows of the files whose ``lstat`` matched just now (:meth:`_check`).
        self._clean: dict[bytes, Row] = {}
        #: The same of the directories: their names are the cached tree's.
        self._clean_dirs: dict[bytes, Tree] = {}
        #: Whether every file and directory matched and the cache is complete.
        self._unchanged = False
        #: With a complete cache: the directories on the path of a change (a file or
        #: directory whose ``lstat`` did not match); every other directory the check
        #: found unchanged is taken whole (:meth:`subtree`). None: nothing is.
        self._dirty: set[bytes] | None = None
        #: The file and directory paths in walk order (``/`` as NUL sorts a
        #: directory's subtree where the walk visits it), made on first use.
        self._order: _Order | None = None
        #: Entries the valid cache file held (0: absent, invalid or not read).
        self.loaded = 0
        #: Files the cache could not answer (hashed); :attr:`hits` counts the others.
        self.misses = 0
        self._recorded = 0
        if read:
            self._load()

    @classmethod
    def open(
        cls,
        source_dir: str | os.PathLike[str],
        chunking: ChunkParams = DEFAULT_CHUNKING,
        directory: str | None = None,
    ) -> StatCache:
        """The cache of ``source_dir`` (empty if absent or invalid), ready to be rewritten.

        A cache directory that cannot be created or written leaves a cache that
        answers nothing and saves nothing: the push then hashes every file.
        """
        real = os.path.realpath(source_dir)
        path = cache_path(real, directory)
        root = os.fsencode(real)
        try:
            device = os.stat(real).st_dev
        except OSError:
            device = 0  # the scan reports the missing directory
        folder, prefix = os.path.dirname(path), os.path.basename(path) + ".tmp-"
        try:
            os.makedirs(folder, exist_ok=True)
            _sweep(folder, prefix)
            fd, temp = tempfile.mkstemp(prefix=prefix, dir=folder)
        except OSError:
            return cls(path, root, device, chunking, read=False)
        cache = cls(path, root, device, chunking)
        cache._temp = (fd, temp)
        # The filesystem's clock now, before the walk (never later than the clock the
        # process reads, should the two disagree).
        cache._ref_ns = min(os.fstat(fd).st_mtime_ns, time.time_ns())
        cache._check()
        return cache

    def _check(self) -> None:
        """``lstat`` every file and directory the file holds, at once (:mod:`.lstatcheck`).

        Done after the reference time is taken, so each ``lstat`` counts as the
        walk's own: a file whose ``lstat`` matches its trusted row is answered
        without another (:attr:`clean`), and a tree none of whose files and
        directories changed is the last push's snapshot (:meth:`unchanged`).
        """
        if self._stored is None:
            return
        paths, rows, dir_paths, dir_rows = self._stored
        self._stored = None
        root, trusted = os.fsdecode(self.root), self._trusted_before
        threads = min(4, os.cpu_count() or 1)
        try:
            bad = stale(root, paths, len(self._old), rows, _ROW.size, trusted, threads)
            bad_dirs = stale(
                root, dir_paths, len(self._old_trees), dir_rows, _DIR.size, trusted, threads
            )
        except OSError:
            return  # the source is gone or unreadable: the scan says so
        self._clean, self._clean_dirs = (
            _without(self._old, bad),
            _without(self._old_trees, bad_dirs),
        )
        self._unchanged = not bad and not bad_dirs and self._complete is not None
        if self._complete is not None:
            files, dirs = list(self._old), list(self._old_trees)
            self._dirty = _above([files[i] for i in bad] + [dirs[i] for i in bad_dirs])

    @property
    def clean(self) -> dict[bytes, Row]:
        """The rows of the files whose ``lstat`` matched their trusted row when opened.

        Read-only to the caller: the walk answers such a file without an ``lstat``,
        and carries its row over with :meth:`carry`.
        """
        return self._clean

    def listing(self, key: bytes) -> tuple[StatKey, list[bytes]] | None:
        """The ``lstat`` and names of directory ``key`` as cached, if they still hold.

        So if the check found the directory's ``lstat`` unchanged (and trusted): no
        name came or went since the cached tree was built from its listing. The walk
        then lists it from here and keeps that ``lstat`` as the directory's own (the
        one its names belong to, not a later one).
        """
        tree = self._clean_dirs.get(key)
        if tree is None:
            return None
        try:
            return tree[4], tree_names(tree[3])
        except InvalidResponse:
            return None

    def subtree(self, key: bytes) -> Subtree | None:
        """Directory ``key`` whole, if neither it nor anything in it changed: git's cache-tree.

        So when the cache is complete (its trees and entries describe every file and
        directory of the last snapshot) and the check found the ``lstat`` of every
        file and directory under ``key`` (and of ``key``) unchanged and trusted: the
        files are those entries, unread, and each tree the cached one (its bytes
        checked against its id). Else None: the walk visits it. Answered, every entry
        and tree is carried over to the cache :meth:`save` writes.
        """
        if self._dirty is None or key in self._dirty or key not in self._clean_dirs:
            return None
        files, file_keys, rows, dirs, dir_keys = self._walk_order()
        low = key.replace(b"/", b"\0")
        high = low[:-1] + b"\1"  # past every path that starts with ``key``
        first, last = bisect.bisect_left(file_keys, low), bisect.bisect_left(file_keys, high)
        paths, found = files[first:last], rows[first:last]
        first, last = bisect.bisect_left(dir_keys, low), bisect.bisect_left(dir_keys, high)
        trees = [(k, self._old_trees[k]) for k in dirs[first:last]]
        if any(blake3.blake3(tree[3]).digest() != tree[0] for _key, tree in trees):
            return None
        largest, lists = self.chunking.max_size, {}
        if found and max(map(itemgetter(0), found)) > largest:
            # Chunked files (rare): each with its list, and none the chunking in force
            # would treat otherwise (cut files whole, or chunk a whole one).
            for rel, row in zip(paths, found, strict=True):
                if row[5] == _CHUNKED:
                    lists[rel] = self._old_lists[rel]
                if (row[5] == _CHUNKED) != (row[0] > largest):
                    return None
        elif any(map(itemgetter(5), found)):
            return None
        self._new.update(zip(paths, found, strict=True))
        self._new_lists.update(lists)
        self._new_trees.update(trees)
        return Subtree(paths, found, trees, lists)

    def _walk_order(self) -> _Order:
        """The cached files in the walk's order, their sort keys and rows; the same of directories.

        A directory's names sort bytewise and the walk visits a subdirectory at its
        name's place, so with NUL (below any byte of a name) for ``/``, the sort key,
        a directory's subtree is one run, where the walk reaches it. Made on first use.
        """
        if self._order is None:
            files = sorted(self._old, key=_walk_key)
            dirs = sorted(self._old_trees, key=_walk_key)
            self._order = (
                files,
                list(map(_walk_key, files)),
                list(map(self._old.__getitem__, files)),
                dirs,
                list(map(_walk_key, dirs)),
            )
        return self._order

    def carry(self) -> dict[bytes, Row]:
        """The rows to write (the walk adds each answered file's row to it)."""
        return self._new

    def unchanged(self) -> tuple[bytes, int, int] | None:
        """The last push's ``(root, files, objects)`` if the tree is exactly as it was then.

        So when the cache was complete (each file and directory of that snapshot had
        its entry) and every one of them still matches its trusted ``lstat``: no
        file changed (git's rule) and no directory gained or lost a name (its mtime
        would have moved). Everything is then carried over to the cache
        :meth:`save` writes, which therefore writes nothing.
        """
        if not self._unchanged or self._complete is None:
            return None
        top = self._old_trees.get(b"")
        if top is None or top[0] != self._complete[0] or blake3.blake3(top[3]).digest() != top[0]:
            return None
        self._new = dict(self._old)
        self._new_lists = dict(self._old_lists)
        self._new_trees = dict(self._old_trees)
        self._summary = self._complete
        return self._complete

    def scanned(self, root: bytes, files: int, objects: int, dirs: int) -> None:
        """Note what this push's scan found, for :meth:`save`.

        The cache is complete if each of the ``files`` files and ``dirs`` directories
        has its entry (so no symlink anywhere, no file changed while read) and the top's
        tree is ``root``.
        """
        top = self._new_trees.get(b"")
        if files == len(self._new) and dirs == len(self._new_trees) and top and top[0] == root:
            self._summary = (root, files, objects)

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return
        with contextlib.suppress(_Foreign):
            self._old, self._old_lists, self._old_trees, ref_ns = self._parse(data)
            self._trusted_before = ref_ns - RACY_WINDOW_NS
            self.loaded = len(self._old)

    def _parse(
        self, data: bytes
    ) -> tuple[dict[bytes, Row], dict[bytes, ChunkedFile], dict[bytes, Tree], int]:
        """The rows, chunk lists and reference time of ``data``; :class:`_Foreign` if not valid.

        The rows are a fixed-size array and the paths one NUL-separated run (a path
        holds no NUL), so parsing is a few C loops, not one Python step per entry.
        """
        if len(data) < _HEAD.size + _TRAILER:
            raise _Foreign
        body, trailer = memoryview(data)[:-_TRAILER], data[-_TRAILER:]
        if blake3.blake3(body).digest() != trailer:
            raise _Foreign
        (magic, version, reserved, cmin, cavg, cmax, ref_ns, device, rootlen, count, paths_len,
         lists_len, dir_count, dir_paths_len, trees_len, complete, files, objects,
         ) = _HEAD.unpack_from(body, 0)  # fmt: skip
        params = (self.chunking.min_size, self.chunking.avg_size, self.chunking.max_size)
        if magic != _MAGIC or version != CACHE_VERSION or reserved or (cmin, cavg, cmax) != params:
            raise _Foreign
        rows_at = _HEAD.size + rootlen
        paths_at = rows_at + count * _ROW.size
        lists_at = paths_at + paths_len
        dirs_at = lists_at + lists_len
        dir_paths_at = dirs_at + dir_count * _DIR.size
        trees_at = dir_paths_at + dir_paths_len
        if (
            device != self.device
            or body[_HEAD.size : rows_at] != self.root
            or trees_at + trees_len != len(body)
        ):
            raise _Foreign
        rows = list(_ROW.iter_unpack(body[rows_at:paths_at]))
        paths = bytes(body[paths_at:lists_at]).split(b"\0") if count else []
        entries = dict(zip(paths, rows, strict=False))
        if len(paths) != count or len(entries) != count:
            raise _Foreign
        lists: dict[bytes, ChunkedFile] = {}
        # The rows of whole files (kind 0, most of them) are checked in C-level passes:
        # none names a chunk list; the others are looked at one by one.
        kinds = list(map(itemgetter(5), rows))
        if any(itertools.compress(map(itemgetter(8), rows), map(operator.not_, kinds))):
            raise _Foreign
        try:
            for rel in itertools.compress(paths, kinds):
                row = entries[rel]
                if row[5] != _CHUNKED or row[7] + row[8] > lists_len:
                    raise _Foreign
                at = lists_at + row[7]
                chunked = decode_chunk_list(bytes(body[at : at + row[8]]))
                if chunked.id != row[6] or chunked.size != row[0]:
                    raise _Foreign
                lists[rel] = chunked
        except InvalidResponse as exc:
            raise _Foreign from exc
        dir_paths = bytes(body[dir_paths_at:trees_at]).split(b"\0") if dir_count else []
        if len(dir_paths) != dir_count:
            raise _Foreign
        trees = _parse_trees(dir_paths, body[dirs_at:dir_paths_at], body[trees_at:])
        if len(trees) != dir_count or complete not in (0, 1):
            raise _Foreign
        if complete:
            top = trees.get(b"")
            self._complete = (top[0], files, objects) if top is not None else None
        self._stored = (
            bytes(body[paths_at:lists_at]),
            body[rows_at:paths_at],
            bytes(body[dir_paths_at:trees_at]),
            body[dirs_at:dir_paths_at],
        )
        return entries, lists, trees, ref_ns

    def lookup(self, rel: bytes, st: os.stat_result) -> Cached | None:
        """What hashing ``rel`` gave, if its entry matches ``st`` and is not racy.

        An entry answered is carried over to the cache :meth:`save` writes.
        """
        row = self._old.get(rel)
        if (
            row is None
            or row[1] != st.st_mtime_ns
            or row[0] != st.st_size
            or row[2] != st.st_ctime_ns
            or row[3] != st.st_ino
            or row[4] != st.st_mode
            or row[1] >= self._trusted_before
            or row[2] >= self._trusted_before
        ):
            self.misses += 1
            return None
        self._new[rel] = row
        if row[5] == _CHUNKED:
            chunked = self._new_lists[rel] = self._old_lists[rel]
            return chunked
        return (row[6], row[0])

    @property
    def hits(self) -> int:
        """Files answered from the cache (every entry carried over to the new cache)."""
        return len(self._new) - self._recorded

    def small_answer(self, small: int) -> Callable[[bytes, os.stat_result], bytes | None]:
        """A :meth:`lookup` for the walk's common case: a whole file of at most ``small`` bytes.

        Answers only an entry :meth:`lookup` would answer as a whole file (same
        match, same racy rule, carried over the same way) that is at most ``small``
        bytes; None sends the walk to :meth:`lookup`'s full path (which counts the
        miss). One closure, its state in locals: it runs once per file of a re-push.
        """
        old_get, new, trusted = self._old.get, self._new, self._trusted_before

        def answer(rel: bytes, st: os.stat_result) -> bytes | None:
            row = old_get(rel)
            if (
                row is None
                or row[5]
                or row[1] != st.st_mtime_ns
                or row[0] != st.st_size
                or row[0] > small
                or row[2] != st.st_ctime_ns
                or row[3] != st.st_ino
                or row[4] != st.st_mode
                or row[1] >= trusted
                or row[2] >= trusted
            ):
                return None
            new[rel] = row
            return row[6]

        return answer

    def tree(self, key: bytes, count: int, mode: int, own: StatKey) -> tuple[bytes, bytes] | None:
        """The tree id and bytes of directory ``key`` from the last push, if still exact.

        The caller asks only for a directory every file of which (recursively) the
        cache answered (:meth:`lookup`, so none racily clean) and that holds no
        symlink. Its tree is then the one the last push built from those very
        entries, provided the directory still has as many entries (each name was
        answered, so the names are the same) and its mode bits are the same; and
        the stored bytes still hash to the id (checked here, cheap: a damaged copy
        is never trusted). Answered, the tree is carried over to the cache
        :meth:`save` writes.
        """
        tree = self._old_trees.get(key)
        if tree is None or tree[1] != count or tree[2] != mode:
            return None
        if blake3.blake3(tree[3]).digest() != tree[0]:
            return None
        if tree[4] != own:
            # Same entries, but the directory's lstat moved (a name came and went): keep
            # the new one, which the next push compares against.
            tree = (*tree[:4], own)
            self._changed = True
        self._new_trees[key] = tree
        return tree[0], tree[3]

    def record_tree(
        self, key: bytes, oid: bytes, count: int, mode: int, data: bytes, own: StatKey
    ) -> None:
        """Remember directory ``key``'s tree, as this push built it from its entries.

        Only directories without symlinks are recorded (a symlink has no entry to
        check it by). A file in it that was hashed but not recorded (it changed
        while read) has no entry, so the next push's :meth:`lookup` misses it and
        never asks for this tree.
        """
        if key not in self._new_trees:
            self._new_trees[key] = (oid, count, mode, data, own)
            self._changed = True

    def record(self, rel: bytes, key: StatKey, result: Cached) -> None:
        """Remember that the file ``rel``, as ``key`` described it, hashed to ``result``.

        A file whose hashed size is not the size its ``lstat`` gave changed while it
        was read: it is not recorded (the next push hashes it).
        """
        if isinstance(result, ChunkedFile):
            if result.size == key[0]:
                self._new[rel] = (*key, _CHUNKED, result.id, 0, 0)
                self._new_lists[rel] = result
                self._changed = True
                self._recorded += 1
        elif result[1] == key[0]:
            self._new[rel] = (*key, _WHOLE, result[0], 0, 0)
            self._changed = True
            self._recorded += 1

    def save(self) -> None:
        """Write the entries of this push, then ``os.replace`` the cache with them (atomic).

        Nothing is written when every entry was answered from the file and none
        dropped (it holds exactly them, all trusted already). A cache that cannot
        be written is left as it was: the push does not fail for its own speed-up.
        """
        if self._temp is None:
            return
        if (
            not self._changed
            and len(self._new) == self.loaded
            and len(self._new_trees) == len(self._old_trees)
            and self._summary == self._complete
        ):
            self.close()
            return
        fd, temp = self._temp
        self._temp = None
        params = (self.chunking.min_size, self.chunking.avg_size, self.chunking.max_size)
        # The chunked rows get their list's place; every row is then packed in one
        # C-level pass (a Python step per row cost ~5 ms of a 10,000-file push).
        lists: list[bytes] = []
        placed: dict[bytes, Row] = {}
        at = 0
        for rel, chunked in self._new_lists.items():
            row = self._new.get(rel)
            if row is not None and row[5] == _CHUNKED:
                data = encode_chunk_list(chunked)
                placed[rel] = (*row[:7], at, len(data))
                lists.append(data)
                at += len(data)
        new = self._new
        if placed:
            new = {**new, **placed}
        rows = itertools.starmap(_ROW.pack, new.values())
        paths = b"\0".join(new)
        dir_rows: list[bytes] = []
        trees: list[bytes] = []
        tree_at = 0
        for oid, count, mode, data, own in self._new_trees.values():
            dir_rows.append(_DIR.pack(*own, oid, count, mode, tree_at, len(data)))
            trees.append(data)
            tree_at += len(data)
        dir_paths = b"\0".join(self._new_trees)
        summary = self._summary
        complete = (1, summary[1], summary[2]) if summary is not None else (0, 0, 0)
        head = _HEAD.pack(
            _MAGIC, CACHE_VERSION, 0, *params, self._ref_ns, self.device, len(self.root),
            len(self._new), len(paths), at, len(self._new_trees), len(dir_paths), tree_at,
            *complete,
        )  # fmt: skip
        body = b"".join(
            [head, self.root, b"".join(rows), paths, *lists, *dir_rows, dir_paths, *trees]
        )
        try:
            with open(fd, "wb") as f:
                f.write(body)
                f.write(blake3.blake3(body).digest())
            os.replace(temp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def close(self) -> None:
        """Drop the temp file of a push that did not :meth:`save`; the cache is unchanged."""
        if self._temp is not None:
            fd, temp = self._temp
            self._temp = None
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def __enter__(self) -> StatCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
