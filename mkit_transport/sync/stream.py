"""A fresh pull that writes file contents while their packs stream in (issues 12, 17).

Reading a pack back from disk costs a write, a read and a hash of every byte of it;
restic and borg write each object where it belongs as it arrives. So does this:

1. the packs holding trees (push gives them packs of their own) and the packs already
   in the cache are opened whole, as before; the tree is planned (:func:`plan_tree`);
2. one walk creates the directories, collects which files (and which offsets of
   chunked files) each blob fills, and fetches the small objects it must read first
   (symlink targets, chunk lists: :meth:`ObjectFetcher.get`, by ranges when small);
3. blobs held by an open pack are read from it; every other pack is streamed once
   through a :class:`~mkit_transport.pack.PackVerifier` whose sink writes each
   object into all the files that hold it, verified against its own id as it is
   decoded (SYNC-13); only the packs the bounded cache will keep are written to disk
   on the way (SYNC-45).

Every write goes into the staging directory the caller swaps in only after this
returns; any failure leaves it to be removed whole (SYNC-15). A chunked file is
checked whole against its chunk list's content id: hashed as its chunks arrive in
order, and the rest read back from disk when they did not.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from ..errors import InvalidResponse, PackNotFound, PayloadTooLarge
from ..hashes import Hasher
from ..limits import CHUNK_SIZE
from ..pack import KIND_TREE
from .atomic import replacing
from .checkout import Entry
from .chunking import ChunkedFile
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .common import fetch_index, parallel
from .fetch import ObjectFetcher
from .materialise import _check_size, _manifest_entry, make_symlink, walk_dirs
from .model import TYPE_CHUNKED, TYPE_DIR, TYPE_SYMLINK, TreeEntry, _bad
from .objects import held
from .plan import TreePlan
from .restore import verified_chunks

__all__ = ["stream_tree"]

_NEW: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_OLD: Final = os.O_WRONLY | os.O_NOFOLLOW


@dataclass(slots=True)
class _Assembly:
    """A chunked file being filled chunk by chunk, possibly from several threads."""

    path: bytes
    entry: TreeEntry
    chunked: ChunkedFile
    left: int
    hasher: Hasher = field(default_factory=Hasher)
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, offset: int) -> bool:
        """Whether the chunk at ``offset`` extends the hashed prefix (then it is hashed)."""
        with self.lock:
            if self.busy or self.hasher.length != offset:
                return False
            self.busy = True
            return True

    def release(self, hashed: bool) -> bool:
        """One chunk is written; whether it was the last."""
        with self.lock:
            if hashed:
                self.busy = False
            self.left -= 1
            return self.left == 0


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one blob goes: a whole file (``assembly`` None) or a chunk at ``offset``."""

    path: bytes
    entry: TreeEntry | None
    assembly: _Assembly | None = None
    offset: int = 0
    length: int = 0


class _Tree:
    """What one snapshot's blobs fill, and the manifest entries of what was written."""

    def __init__(self, base: bytes, written: dict[str, Entry] | None) -> None:
        self.base = base
        self.written = written
        self.want: dict[bytes, list[_Target]] = {}
        self.lock = threading.Lock()
        self.files = 0

    def note(self, path: bytes, entry: Entry) -> None:
        if self.written is not None:
            with self.lock:
                self.written[os.fsdecode(path[len(self.base) + 1 :])] = entry

    def take(self, oid: bytes) -> list[_Target] | None:
        """The targets of ``oid``, once: a blob held by two packs is written from one."""
        with self.lock:
            return self.want.pop(oid, None)


class _Delivery:
    """One blob's bytes, written to every target that holds it as they are decoded."""

    def __init__(self, tree: _Tree, targets: list[_Target], raw_len: int | None) -> None:
        self.tree = tree
        self.targets = targets
        self.fds: list[int] = []
        self.pos: list[int] = []
        self.hashing: list[bool] = []
        if raw_len is not None:
            self.check(raw_len)
        try:
            for target in targets:
                whole = target.assembly is None
                self.fds.append(os.open(target.path, _NEW if whole else _OLD, 0o600))
                self.pos.append(target.offset)
                assembly = target.assembly
                self.hashing.append(assembly is not None and assembly.claim(target.offset))
        except BaseException:
            self.close()
            raise

    def check(self, raw_len: int) -> None:
        """Refuse a blob whose length is not what the tree (or chunk list) says."""
        for target in self.targets:
            if target.assembly is None:
                assert target.entry is not None
                _check_size(target.entry, raw_len)
            elif raw_len != target.length:
                raise _bad(
                    f"{os.fsdecode(target.path)!r}: a chunk has {raw_len} bytes, "
                    f"its list says {target.length}"
                )

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        for i, target in enumerate(self.targets):
            fd, pos = self.fds[i], self.pos[i]
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], pos + done)
            self.pos[i] = pos + done
            if self.hashing[i]:
                assert target.assembly is not None
                target.assembly.hasher.update(view)

    def done(self) -> None:
        """Every byte matched the blob's id: finish each file (mode, manifest)."""
        for i, target in enumerate(self.targets):
            fd = self.fds[i]
            assembly = target.assembly
            if assembly is None:
                assert target.entry is not None
                os.fchmod(fd, target.entry.mode)  # keeps size, mtime and inode
                st = os.fstat(fd) if self.tree.written is not None else None
                self.fds[i] = -1
                os.close(fd)
                self.tree.note(target.path, _manifest_entry(target.entry, st))
                continue
            self.fds[i] = -1
            os.close(fd)
            if assembly.release(self.hashing[i]):
                _finish_chunked(self.tree, assembly)

    def close(self) -> None:
        """Close what a failure left open (the staging directory is removed anyway)."""
        for fd in self.fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds = [-1] * len(self.fds)


def _finish_chunked(tree: _Tree, assembly: _Assembly) -> None:
    """Check a chunked file whole (reading back what was not hashed in order), then seal it."""
    chunked, entry = assembly.chunked, assembly.entry
    fd = os.open(assembly.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        hasher = assembly.hasher
        while hasher.length < chunked.size:
            piece = os.pread(fd, min(CHUNK_SIZE, chunked.size - hasher.length), hasher.length)
            if not piece:
                break
            hasher.update(piece)
        if hasher.length != chunked.size or bytes(hasher.pack_key()) != chunked.id:
            what = os.fsdecode(assembly.path[len(tree.base) + 1 :])
            raise _bad(f"{what}: the file's chunks do not match its chunk list's content id")
        os.fchmod(fd, entry.mode)
        st = os.fstat(fd) if tree.written is not None else None
    finally:
        os.close(fd)
    tree.note(assembly.path, _manifest_entry(entry, st, chunked))


@contextlib.contextmanager
def _delivering() -> Iterator[list[_Delivery]]:
    """Deliveries opened in a block, closed if it fails."""
    open_ones: list[_Delivery] = []
    try:
        yield open_ones
    finally:
        for delivery in open_ones:
            delivery.close()


def _walk(fetcher: ObjectFetcher, root: bytes, tree: _Tree) -> list[tuple[bytes, int]]:
    """Create the directories and symlinks, and fill ``tree.want``; return directory modes."""
    objects = fetcher.objects
    modes: list[tuple[bytes, int]] = []
    chunk_lists: list[tuple[bytes, TreeEntry]] = []
    links: list[tuple[bytes, TreeEntry]] = []
    for target, entry in walk_dirs(objects, root, tree.base, modes):
        if entry.type == TYPE_DIR:
            tree.note(target, _manifest_entry(entry, None))
        elif entry.type == TYPE_SYMLINK:
            links.append((target, entry))
        elif entry.type == TYPE_CHUNKED:
            chunk_lists.append((target, entry))
            tree.files += 1
        else:
            tree.want.setdefault(entry.oid, []).append(_Target(target, entry))
            tree.files += 1
    fetcher.get({e.oid for _, e in links} | {e.oid for _, e in chunk_lists})
    for target, entry in links:
        make_symlink(objects, target, entry)
        st = os.lstat(target) if tree.written is not None else None
        tree.note(target, _manifest_entry(entry, st))
    for target, entry in chunk_lists:
        _plan_chunked(fetcher, tree, target, entry)
    return modes


def _plan_chunked(fetcher: ObjectFetcher, tree: _Tree, target: bytes, entry: TreeEntry) -> None:
    """Create a chunked file empty and say which chunk fills which offset of it."""
    what = os.fsdecode(target[len(tree.base) + 1 :])
    _kind, data = fetcher.objects.read_bytes(entry.oid, MAX_CHUNK_LIST_SIZE)
    try:
        chunked = decode_chunk_list(data)
    except InvalidResponse as error:
        raise _bad(f"{what}: {error}") from error
    if chunked.size != entry.size:
        raise _bad(f"{what}: chunk list has {chunked.size} bytes, the tree says {entry.size}")
    os.close(os.open(target, _NEW, 0o600))
    assembly = _Assembly(target, entry, chunked, len(chunked.chunks))
    if not chunked.chunks:
        _finish_chunked(tree, assembly)
        return
    offset = 0
    for cid, length in chunked.chunks:
        tree.want.setdefault(cid, []).append(_Target(target, None, assembly, offset, length))
        offset += length


def _read_local(fetcher: ObjectFetcher, tree: _Tree, oid: bytes) -> None:
    """Write a blob an open pack (or a ranged read) holds into its targets."""
    targets = tree.take(oid)
    if targets is None:
        return
    first = targets[0]
    expected = first.entry.size if first.entry is not None else first.length
    with _delivering() as open_ones:
        delivery = _Delivery(tree, targets, None)
        open_ones.append(delivery)
        _kind, raw_len = fetcher.objects.read_object(oid, delivery.write, max_size=expected)
        delivery.check(raw_len)
        delivery.done()


def _stream_pack(fetcher: ObjectFetcher, tree: _Tree, number: int, keep: bool) -> None:
    """Stream pack ``number`` once, writing its blobs as they are verified.

    With ``keep`` the bytes are also written to this pull's directory, to be offered
    to the cache at the end (:meth:`PullPacks.finish`); otherwise they never touch
    the disk.
    """
    pack = fetcher.packs[number]
    with _delivering() as open_ones:

        def sink(oid: bytes, _kind: int, raw_len: int) -> _Delivery | None:
            targets = tree.take(oid)
            if targets is None:
                return None
            delivery = _Delivery(tree, targets, raw_len)
            open_ones.append(delivery)
            return delivery

        chunks = verified_chunks(
            fetcher.transport, pack.key, "remote", fetcher.meter, objects=True, sink=sink
        )
        if not keep:
            for _chunk in chunks:
                pass
            return
        mine = os.path.join(fetcher.session.dir, pack.key.hex())
        with replacing(mine, ".download-") as out:
            for chunk in chunks:
                out.write(chunk)
        fetcher.session.adopt(mine)


def stream_tree(
    fetcher: ObjectFetcher,
    root: bytes,
    dest: str,
    *,
    plan: TreePlan,
    cache_limit: int,
    written: dict[str, Entry] | None = None,
) -> int:
    """Write tree ``root`` into the empty directory ``dest``; return the file count.

    ``fetcher`` has the snapshot's tree packs open already (:func:`open_tree_packs`)
    and ``plan`` is their plan. Packs are streamed ``fetcher.concurrency`` at a time;
    of the streamed packs, those that fit ``cache_limit`` together are kept for the
    cache. Directory modes are applied last, deepest first.
    """
    tree = _Tree(os.fsencode(dest), written)
    modes = _walk(fetcher, root, tree)
    here = fetcher.objects.which(tree.want)
    local = [oid for oid in tree.want if oid in here]  # in walk order
    parallel(lambda oid: _read_local(fetcher, tree, oid), local, fetcher.concurrency)
    remaining = set(tree.want)
    numbers: list[int] = []
    for number in range(len(fetcher.packs)):
        if not remaining:
            break
        if number in fetcher.opened:
            continue
        ids = fetcher.pack_ids(number)
        hits = held(ids, remaining)
        if hits:
            numbers.append(number)
            remaining -= hits
    for oid in remaining:
        raise InvalidResponse(f"object {oid.hex()} is in none of the snapshot's packs")
    budget = cache_limit
    jobs: list[tuple[int, bool]] = []
    for number in numbers:
        size = fetcher.packs[number].size
        jobs.append((number, size <= budget))
        if size <= budget:
            budget -= size
    fetcher.opened.update(numbers)
    fetcher.downloaded += len(numbers)
    parallel(lambda job: _stream_pack(fetcher, tree, *job), jobs, fetcher.concurrency)
    for oid in tree.want:
        raise InvalidResponse(f"object {oid.hex()} was not delivered by its pack")
    for target, mode in modes:
        os.chmod(target, mode)
    return tree.files


def open_tree_packs(fetcher: ObjectFetcher) -> None:
    """Open whole the packs that hold trees, and those the cache has (their ids remembered).

    Which packs hold trees comes from their index blobs; a pack whose index blob is
    missing or unreadable is opened whole too, so its own verification names it.
    """

    def kinds(number: int) -> bool:
        pack = fetcher.packs[number]
        if fetcher.cached(number):
            return True
        try:
            rows = fetch_index(fetcher.transport, pack, fetcher.meter)
        except (InvalidResponse, PackNotFound, PayloadTooLarge):
            return True  # no usable index: the pack, read whole, speaks for itself
        fetcher.learn_ids(number, b"".join(sorted(oid for oid, _kind in rows)))
        return any(kind == KIND_TREE for _oid, kind in rows)

    numbers = list(range(len(fetcher.packs)))
    whole = parallel(kinds, numbers, fetcher.concurrency)
    fetcher.open_all([n for n, w in zip(numbers, whole, strict=True) if w])
