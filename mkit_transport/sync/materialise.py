"""Writing a planned tree into a fresh directory, and listing one for ``show``.

Files are written by a pool of writers, each verified object streamed to disk
(chunked files chunk by chunk, checked whole against their content id at the end);
``restore`` stages the directory and swaps it in (spec/SPEC-SYNC.md).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from ..directio import write_all
from ..errors import InvalidResponse
from ..hashes import Hasher
from .checkout import Entry, stat_key
from .chunking import ChunkedFile
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .model import (
    _TYPE_NAMES,
    MAX_SYMLINK,
    TYPE_CHUNKED,
    TYPE_DIR,
    TYPE_SYMLINK,
    TreeEntry,
    _bad,
)
from .objects import PackObjects
from .plan import Limits, TreePlan, plan_tree

__all__ = ["FileEntry", "list_files", "materialise"]


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


def _write_chunked(objects: PackObjects, fd: int, entry: TreeEntry, what: str) -> ChunkedFile:
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
    return chunked


def _manifest_entry(
    entry: TreeEntry, st: os.stat_result | None, chunked: ChunkedFile | None = None
) -> Entry:
    """The manifest entry of a path just written (its stat, a chunked file's chunks)."""
    cid, chunks = (chunked.id, chunked.chunks) if chunked else (entry.oid, ())
    key = stat_key(st) if st is not None else None
    return Entry(entry.type, entry.oid, entry.size, entry.mode, cid, chunks, key)


def _write_file(
    objects: PackObjects,
    base: bytes,
    written: dict[str, Entry] | None,
    target: bytes,
    entry: TreeEntry,
) -> None:
    """Write one regular or chunked file at ``target`` (verified), then set its mode."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    chunked: ChunkedFile | None = None
    try:
        if entry.type == TYPE_CHUNKED:
            what = os.fsdecode(os.path.relpath(target, base))
            chunked = _write_chunked(objects, fd, entry, what)
        else:
            _, raw_len = objects.read_object(entry.oid, partial(write_all, fd), max_size=entry.size)
            _check_size(entry, raw_len)
        st = os.fstat(fd) if written is not None else None
    finally:
        os.close(fd)
    os.chmod(target, entry.mode)  # keeps size, mtime and inode: the stat recorded
    if written is not None and st is not None:
        written[os.fsdecode(target[len(base) + 1 :])] = _manifest_entry(entry, st, chunked)


def materialise(
    objects: PackObjects,
    root: bytes,
    dest: str,
    *,
    workers: int = 1,
    plan: TreePlan | None = None,
    written: dict[str, Entry] | None = None,
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
    (:func:`_write_chunked`). With ``written``, each path's manifest entry
    (:class:`~.checkout.Entry`, with the file's stat as written) is put there, so a
    pull records its manifest without walking the tree again.
    """
    if plan is None:
        plan_tree(objects, root)
    count = 0
    base = os.fsencode(dest)
    modes: list[tuple[bytes, int]] = []  # directories, children before parents
    write_file = partial(_write_file, objects, base, written)

    def note(
        target: bytes, entry: TreeEntry, st: os.stat_result | None, chunked: ChunkedFile | None
    ) -> None:
        if written is not None:
            written[os.fsdecode(target[len(base) + 1 :])] = _manifest_entry(entry, st, chunked)

    def fill(run: Callable[[bytes, TreeEntry], None]) -> None:
        nonlocal count
        for target, entry in walk_dirs(objects, root, base, modes):
            if entry.type == TYPE_DIR:
                note(target, entry, None, None)
            elif entry.type == TYPE_SYMLINK:
                make_symlink(objects, target, entry)
                note(target, entry, os.lstat(target) if written is not None else None, None)
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


def walk_dirs(
    objects: PackObjects, root: bytes, base: bytes, modes: list[tuple[bytes, int]]
) -> Iterator[tuple[bytes, TreeEntry]]:
    """Every entry of tree ``root`` as ``(its path under base, entry)``, depth first.

    Iterative (any nesting the plan allowed, no recursion). A directory is created
    (0o700, so the pull can write into it) before it is yielded and entered; its own
    mode goes to ``modes`` once its entries are done (children before parents), for
    the caller to apply last.
    """
    # Each frame: the entries left, the directory's path and its mode.
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
        yield target, entry


def make_symlink(objects: PackObjects, target: bytes, entry: TreeEntry) -> None:
    """Create the symlink ``entry`` names at ``target`` (its target checked first)."""
    _kind, link = objects.read_bytes(entry.oid, MAX_SYMLINK)
    _check_size(entry, len(link))
    if not link or b"\0" in link:
        # os.symlink would raise ValueError / FileNotFoundError: not the taxonomy.
        raise _bad(f"{entry.name!r}: symlink target is empty or holds a NUL byte")
    os.symlink(link, target)


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
