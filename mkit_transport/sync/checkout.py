"""The local record of what a pull wrote: the checkout manifest (issue 13).

After each pull, ``<cache>/checkouts/<blake3 of dest's realpath>.manifest`` records the
snapshot pulled and, per path, what was written (type, object id, content id,
size, mode, a chunked file's chunks) and how the file looked on disk afterwards
(size, mtime_ns, inode). It lives under the cache, never in the tree, so a later
``push`` of the directory does not pick it up. An incremental pull
(:mod:`.update`) trusts a path whose stat still matches, and hashes one that does
not. A manifest that cannot be read, or names another directory, is ignored (the
pull then hashes the files it finds). While an incremental pull renames files in,
a journal beside it (``<manifest>.journal``, only the paths that change) makes it
``applying``, with both the old and the new entries, so a re-run after a kill
tells its own half-done work from local edits.

The manifest is binary (format 2): a fixed header (magic, format, payload length,
BLAKE3 of the payload) then a ``marshal`` payload, because JSON took ~60 ms to load
and ~70 ms to save for 10,000 entries, more than the rest of a small pull. A file
whose header, length or checksum does not match is never trusted (the pull then
hashes what it finds). The format-1 JSON manifest (``<hash>.json``) an earlier
version wrote is still read, and removed once a new manifest is saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import marshal
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import blake3

from .atomic import replacing

__all__ = [
    "Entry",
    "Manifest",
    "checkout_lock",
    "forget",
    "load_manifest",
    "manifest_path",
    "save_journal",
    "save_manifest",
    "stat_key",
]

_VERSION = 1  # the JSON journal's (and the legacy JSON manifest's) version
_MAGIC = b"MKCHECKOUT\n"
_FORMAT = 2
_HEADER = struct.Struct(">HQ32s")  # format, payload length, BLAKE3 of the payload
_SUFFIX = ".manifest"
_LEGACY = ".json"


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
    #: The entries of the manifest file itself (``entries`` minus a journal's changes).
    base: dict[str, Entry] = field(default_factory=dict)
    #: The paths a pending journal changes or deletes (``applying`` only).
    pending: set[str] = field(default_factory=set)


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """The part of a stat a manifest compares: size, mtime_ns, inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def manifest_path(cache_root: str, dest: str) -> str:
    """Where the manifest of ``dest`` lives (keyed by its real path)."""
    real = os.path.realpath(dest)
    name = blake3.blake3(os.fsencode(real)).hexdigest()[:40]
    return os.path.join(cache_root, "checkouts", name + _SUFFIX)


def _legacy_path(path: str) -> str:
    """The format-1 (JSON) manifest an earlier version kept for the same directory."""
    return path.removesuffix(_SUFFIX) + _LEGACY


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


def _load_full(path: str, dest: str) -> Manifest | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data["version"] != _VERSION or data["dest"] != os.path.realpath(dest):
            return None
        entries = _decode(data["entries"])
        return Manifest(
            dest=data["dest"],
            record=data["record"],
            root=bytes.fromhex(data["root"]),
            entries=entries,
            state=data["state"],
            prev=_decode(data["prev"]),
            stage=data["stage"],
            base=entries,
        )
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None


_Row = tuple[
    str, int, bytes, int, int, bytes, tuple[tuple[bytes, int], ...], tuple[int, int, int] | None
]


def _rows(entries: dict[str, Entry]) -> list[_Row]:
    """The entries as rows sorted by path (an update bisects them; a re-sort is then linear)."""
    rows: list[_Row] = []
    for path in sorted(entries):
        e = entries[path]
        cid = b"" if e.cid == e.oid else e.cid  # a blob's content id is its id: not twice
        rows.append((path, e.type, e.oid, e.size, e.mode, cid, e.chunks, e.st))
    return rows


def _entries(rows: object) -> dict[str, Entry]:
    if not isinstance(rows, list):
        raise TypeError("rows")
    out: dict[str, Entry] = {}
    for path, kind, oid, size, mode, cid, chunks, st in rows:
        if not (isinstance(path, str) and isinstance(oid, bytes) and isinstance(cid, bytes)):
            raise TypeError("row")
        out[path] = Entry(kind, oid, size, mode, cid or oid, chunks, st)
    return out


def _load_binary(path: str, dest: str) -> Manifest | None:
    """The format-2 manifest at ``path``; ``None`` if absent, foreign, cut short or damaged.

    Raises:
        FileNotFoundError: there is no manifest at ``path`` (the caller tries the
            legacy one).
    """
    with open(path, "rb") as fh:
        data = fh.read()
    start = len(_MAGIC) + _HEADER.size
    if not data.startswith(_MAGIC) or len(data) < start:
        return None
    form, length, digest = _HEADER.unpack_from(data, len(_MAGIC))
    payload = memoryview(data)[start:]
    if form != _FORMAT or length != len(payload) or blake3.blake3(payload).digest() != digest:
        return None
    try:
        # Our own file under the user's cache, its checksum verified: not foreign input.
        real, record, root, state, stage, rows, prev = marshal.loads(payload)  # noqa: S302
        if real != os.path.realpath(dest) or not isinstance(root, bytes):
            return None
        entries = _entries(rows)
        return Manifest(real, record, root, entries, state, _entries(prev), stage, entries)
    except (ValueError, TypeError, EOFError):
        return None


def load_manifest(path: str, dest: str) -> Manifest | None:
    """The manifest of ``dest`` at ``path`` (or its legacy JSON one), journal merged in.

    See :func:`_load_with_journal`; ``None`` when there is none or none can be trusted.
    """
    try:
        full = _load_binary(path, dest)
    except FileNotFoundError:
        legacy = _legacy_path(path)
        # A pull killed after loading a legacy manifest wrote its journal beside the new path.
        journal = path + ".journal" if os.path.lexists(path + ".journal") else legacy + ".journal"
        return _load_with_journal(journal, dest, _load_full(legacy, dest))
    except OSError:
        full = None
    return _load_with_journal(path + ".journal", dest, full)


def _load_with_journal(journal: str, dest: str, full: Manifest | None) -> Manifest | None:
    """``full`` with the pending journal at ``journal`` merged in (``None``: no manifest).

    A journal (``<manifest>.journal``, written before an incremental pull's renames)
    holds the new entries of the paths that change and the old entries they had;
    merged, the manifest is ``applying``: both states count as clean. A journal
    whose record the manifest file already holds is stale (the pull finished) and
    is ignored. Anything unreadable is ignored.
    """
    try:
        with open(journal, encoding="utf-8") as fh:
            data = json.load(fh)
        if data["version"] != _VERSION or data["dest"] != os.path.realpath(dest):
            return full
        if full is not None and full.state == "done" and full.record == data["record"]:
            return full
        base = full.entries if full is not None else {}
        entries = dict(base)
        for gone in data["deleted"]:
            entries.pop(gone, None)
        entries.update(_decode(data["changed"]))
        return Manifest(
            dest=data["dest"],
            record=data["record"],
            root=bytes.fromhex(data["root"]),
            entries=entries,
            state="applying",
            prev=_decode(data["prev"]),
            stage=data["stage"],
            base=base,
            pending={*data["changed"], *data["deleted"]},
        )
    except FileNotFoundError:
        return full
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return full


def _write_json(path: str, data: object) -> None:
    text = json.dumps(data, separators=(",", ":"))  # the C encoder: json.dump streams in Python
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with replacing(path, ".manifest-") as out:
        out.write(text.encode("utf-8"))


def save_journal(
    path: str,
    dest: str,
    record: str,
    root: bytes,
    stage: str,
    target: dict[str, Entry],
    base: dict[str, Entry],
    prev: dict[str, Entry],
    paths: Iterable[str] | None = None,
) -> None:
    """Record, before any rename, what an incremental pull is about to change.

    Only the difference from the manifest file (``base``) is written, so its size
    follows the change, not the tree; ``prev`` holds the old entries of the paths
    that change. ``paths``, when given, are the only paths that may differ (so the
    cost follows the change too). Atomic (temporary file, rename).
    """
    if paths is None:
        changed = {p: e for p, e in target.items() if base.get(p) != e}
        deleted = [p for p in base if p not in target]
    else:
        changed = {p: target[p] for p in paths if p in target and base.get(p) != target[p]}
        deleted = [p for p in paths if p in base and p not in target]
    _write_json(
        path + ".journal",
        {
            "version": _VERSION,
            "dest": os.path.realpath(dest),
            "record": record,
            "root": root.hex(),
            "stage": stage,
            "changed": _encode(changed),
            "deleted": deleted,
            "prev": _encode(prev),
        },
    )


def forget(path: str) -> None:
    """Remove the manifest at ``path`` and its journal (the tree is about to be replaced)."""
    legacy = _legacy_path(path)
    for name in (path, path + ".journal", legacy, legacy + ".journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def save_manifest(path: str, manifest: Manifest) -> None:
    """Write ``manifest`` atomically (temporary file, rename), then drop its journal.

    Not fsynced, like the files a pull writes: the promise is against the process
    being killed (the page cache survives it), and an fsync per pull cost ~0.1 s.
    """
    payload = marshal.dumps(
        (
            manifest.dest,
            manifest.record,
            manifest.root,
            manifest.state,
            manifest.stage,
            _rows(manifest.entries),
            _rows(manifest.prev),
        ),
        4,
    )
    header = _HEADER.pack(_FORMAT, len(payload), blake3.blake3(payload).digest())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with replacing(path, ".manifest-") as out:
        out.write(_MAGIC + header)
        out.write(payload)
    legacy = _legacy_path(path)
    for name in (path + ".journal", legacy, legacy + ".journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
