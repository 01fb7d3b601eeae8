"""The local record of what a pull wrote: the checkout manifest (issue 13).

After each pull, ``<cache>/checkouts/<blake3 of dest's realpath>.json`` records the
snapshot pulled and, per path, what was written (type, object id, content id,
size, mode, a chunked file's chunks) and how the file looked on disk afterwards
(size, mtime_ns, inode). It lives under the cache, never in the tree, so a later
``push`` of the directory does not pick it up. An incremental pull
(:mod:`.update`) trusts a path whose stat still matches, and hashes one that does
not. A manifest that cannot be read, or names another directory, is ignored (the
pull then hashes the files it finds). While an incremental pull renames files in,
the manifest holds ``state: applying`` with both the old and the new entries, so
a re-run after a kill tells its own half-done work from local edits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import blake3

from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .model import TYPE_CHUNKED, TYPE_DIR, TYPE_FILE, TYPE_SYMLINK
from .objects import PackObjects

__all__ = [
    "Entry",
    "Manifest",
    "checkout_lock",
    "load_manifest",
    "manifest_path",
    "save_manifest",
    "stat_key",
    "tree_entries",
]

_VERSION = 1


@dataclass(slots=True)
class Entry:
    """One path of a pulled snapshot and, for a file or symlink, its stat once written."""

    type: int
    oid: bytes  # tree, blob, chunk list or symlink blob id
    size: int
    mode: int
    cid: bytes  # content id: the BLAKE3 of the file's bytes (a blob's own id)
    chunks: tuple[tuple[bytes, int], ...] = ()
    st: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) after writing


@dataclass(slots=True)
class Manifest:
    """What a pull left in ``dest`` (``prev``: the state before, while ``applying``)."""

    dest: str
    record: str
    root: bytes
    entries: dict[str, Entry]
    state: str = "done"
    prev: dict[str, Entry] = field(default_factory=dict)
    stage: str | None = None


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """The part of a stat a manifest compares: size, mtime_ns, inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def manifest_path(cache_root: str, dest: str) -> str:
    """Where the manifest of ``dest`` lives (keyed by its real path)."""
    real = os.path.realpath(dest)
    name = blake3.blake3(os.fsencode(real)).hexdigest()[:40]
    return os.path.join(cache_root, "checkouts", name + ".json")


@contextlib.contextmanager
def checkout_lock(cache_root: str, dest: str) -> Iterator[None]:
    """Hold an exclusive lock on ``dest``'s manifest: pulls into one directory take turns."""
    path = manifest_path(cache_root, dest) + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _encode(entries: dict[str, Entry]) -> dict[str, list[object]]:
    return {
        path: [
            e.type,
            e.oid.hex(),
            e.size,
            e.mode,
            e.cid.hex(),
            [[c.hex(), n] for c, n in e.chunks],
            list(e.st) if e.st is not None else None,
        ]
        for path, e in entries.items()
    }


def _decode(rows: dict[str, list[object]]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for path, row in rows.items():
        kind, oid, size, mode, cid, chunks, st = row
        assert isinstance(kind, int) and isinstance(size, int) and isinstance(mode, int)
        assert isinstance(oid, str) and isinstance(cid, str) and isinstance(chunks, list)
        out[path] = Entry(
            kind,
            bytes.fromhex(oid),
            size,
            mode,
            bytes.fromhex(cid),
            tuple((bytes.fromhex(c), int(n)) for c, n in chunks),
            (int(st[0]), int(st[1]), int(st[2])) if isinstance(st, list) else None,
        )
    return out


def load_manifest(path: str, dest: str) -> Manifest | None:
    """The manifest at ``path`` if it is whole and describes ``dest``; else ``None``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data["version"] != _VERSION or data["dest"] != os.path.realpath(dest):
            return None
        return Manifest(
            dest=data["dest"],
            record=data["record"],
            root=bytes.fromhex(data["root"]),
            entries=_decode(data["entries"]),
            state=data["state"],
            prev=_decode(data["prev"]),
            stage=data["stage"],
        )
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None


def save_manifest(path: str, manifest: Manifest) -> None:
    """Write ``manifest`` atomically (temporary file, rename).

    Not fsynced, like the files a pull writes: the promise is against the process
    being killed (the page cache survives it), and an fsync per pull cost ~0.1 s.
    """
    data = {
        "version": _VERSION,
        "dest": manifest.dest,
        "record": manifest.record,
        "root": manifest.root.hex(),
        "state": manifest.state,
        "stage": manifest.stage,
        "entries": _encode(manifest.entries),
        "prev": _encode(manifest.prev),
    }
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    text = json.dumps(data, separators=(",", ":"))  # the C encoder: json.dump streams in Python
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".manifest-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def entry_of(objects: PackObjects, kind: int, oid: bytes, size: int, mode: int) -> Entry:
    """The manifest entry of a tree entry (a chunked file's list read for its chunks)."""
    if kind == TYPE_CHUNKED:
        _k, data = objects.read_bytes(oid, MAX_CHUNK_LIST_SIZE)
        chunked = decode_chunk_list(data)
        return Entry(kind, oid, size, mode, chunked.id, tuple(chunked.chunks))
    return Entry(kind, oid, size, mode, oid)


def tree_entries(objects: PackObjects, root: bytes, dest: str) -> dict[str, Entry]:
    """Every path of tree ``root`` as written under ``dest``, each file's stat taken now."""
    found: dict[str, Entry] = {}
    stack: list[tuple[bytes, str]] = [(root, "")]
    while stack:
        oid, prefix = stack.pop()
        for item in objects.tree(oid):
            path = prefix + os.fsdecode(item.name)
            entry = entry_of(objects, item.type, item.oid, item.size, item.mode)
            found[path] = entry
            if item.type == TYPE_DIR:
                stack.append((item.oid, path + "/"))
            elif item.type in (TYPE_FILE, TYPE_CHUNKED, TYPE_SYMLINK):
                st = os.lstat(os.path.join(dest, path))
                if not stat.S_ISDIR(st.st_mode):
                    entry.st = stat_key(st)
    return found
