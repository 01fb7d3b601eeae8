"""Incremental pull: bring a directory an earlier pull wrote to another snapshot (issue 13).

Only the entries that differ are written, and only the objects no local file
holds are fetched (whole files copied by content id, a chunked file's chunks read
from the old file at their offsets, each verified by its id). The promise
(spec/SPEC-SYNC.md SYNC-50): every changed file is written whole under a staging
directory beside the destination first, then a journal beside the manifest records
the pull as ``applying`` (old and new entries of the paths that change), then each
path is replaced by one rename; so a
kill leaves every path either as it was or as the snapshot has it, never a partial
file, and a re-run recognises both states and finishes the job.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import blake3

from ..directio import write_all
from ..hashes import Hasher
from .checkout import Entry, Manifest, save_journal, save_manifest, stat_key
from .fetch import ObjectFetcher
from .materialise import _Pool
from .model import MAX_SYMLINK, TYPE_CHUNKED, TYPE_DIR, TYPE_FILE, TYPE_SYMLINK, _bad
from .plan import Limits, TreePlan
from .progress import Meter
from .restore import _stage_prefix, check_room, remove_tree, sweep_stages
from .target import subtree, tree_diff, whole_target

__all__ = ["LocalEdits", "update_tree"]

_BLOCK = 1 << 20


class LocalEdits(FileExistsError):
    """The destination holds changes no pull made; the pull refuses unless ``force``."""


def _kind(st: os.stat_result) -> int | None:
    if stat.S_ISDIR(st.st_mode):
        return TYPE_DIR
    if stat.S_ISLNK(st.st_mode):
        return TYPE_SYMLINK
    if stat.S_ISREG(st.st_mode):
        return TYPE_FILE
    return None  # a special file: never a pull's


def _is_file(kind: int) -> bool:
    return kind in (TYPE_FILE, TYPE_CHUNKED)


def _hash_file(path: str) -> bytes | None:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(8 * _BLOCK):
                hasher.update(block)
    except OSError:
        return None
    return hasher.digest()


def _scan(dest: str) -> dict[str, os.stat_result]:
    """Every path under ``dest`` with its lstat (iterative, never following a symlink)."""
    found: dict[str, os.stat_result] = {}
    stack = [("", dest)]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as it:
            for item in it:
                path = prefix + item.name
                st = item.stat(follow_symlinks=False)
                found[path] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path + "/", item.path))
    return found


def _classify(
    dest: str,
    local: dict[str, os.stat_result],
    target: dict[str, Entry],
    old: Manifest | None,
) -> tuple[dict[str, Entry], list[str]]:
    """Which local paths hold what a pull (or the target) put there, and which are edits.

    A path is clean when its stat matches an entry the manifest recorded (old, or
    new while ``applying``), or, failing that, when its bytes equal that entry's or
    the target's (hashed). Anything else is a local edit or an extra file.
    """
    clean: dict[str, Entry] = {}
    edits: list[str] = []
    for path, st in local.items():
        kind = _kind(st)
        candidates = [e for e in ((old.entries.get(path), old.prev.get(path)) if old else ()) if e]
        found: Entry | None = None
        for entry in candidates:
            if kind == TYPE_DIR and entry.type == TYPE_DIR:
                found = entry
            elif kind is not None and kind != TYPE_DIR and entry.st == stat_key(st):
                same = _is_file(entry.type) if kind == TYPE_FILE else entry.type == kind
                found = entry if same else None
            if found is not None:
                break
        if found is None and kind is not None:
            wanted = candidates + ([target[path]] if path in target else [])
            found = _by_content(os.path.join(dest, path), st, kind, wanted)
        if found is None:
            edits.append(path)
        elif kind == TYPE_DIR or found.st == stat_key(st):
            clean[path] = found
        else:
            clean[path] = replace(found, st=stat_key(st))
    return clean, edits


def _by_content(full: str, st: os.stat_result, kind: int, wanted: list[Entry]) -> Entry | None:
    if kind == TYPE_DIR:
        return next((e for e in wanted if e.type == TYPE_DIR), None)
    if kind == TYPE_SYMLINK:
        try:
            oid = blake3.blake3(os.fsencode(os.readlink(full))).digest()
        except OSError:
            return None
        return next((e for e in wanted if e.type == TYPE_SYMLINK and e.oid == oid), None)
    sized = [e for e in wanted if _is_file(e.type) and e.size == st.st_size]
    if not sized:
        return None
    cid = _hash_file(full)
    return next((e for e in sized if e.cid == cid), None)


@dataclass(slots=True)
class _Sources:
    """Local bytes a write may take instead of downloading: whole files and chunks."""

    dest: str
    files: dict[bytes, str] = field(default_factory=dict)  # content id -> path
    chunks: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, dest: str, clean: dict[str, Entry], wanted: set[bytes] | None = None) -> _Sources:
        """The files of ``clean`` (only those holding a ``wanted`` content or chunk id)."""
        sources = cls(dest)
        for path, entry in clean.items():
            if not _is_file(entry.type):
                continue
            if wanted is not None and entry.cid not in wanted:
                if not entry.chunks or not any(cid in wanted for cid, _ in entry.chunks):
                    continue
            full = os.path.join(dest, path)
            sources.files.setdefault(entry.cid, full)
            offset = 0
            for cid, length in entry.chunks:
                sources.chunks.setdefault(cid, (full, offset, length))
                offset += length
        return sources

    def read_chunk(self, cid: bytes) -> bytes | None:
        """The chunk's bytes from a local file, if there and still intact."""
        where = self.chunks.get(cid)
        if where is None:
            return None
        path, offset, length = where
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        except OSError:
            return None
        return data if blake3.blake3(data).digest() == cid else None

    def copy(self, cid: bytes, fd: int) -> bool:
        """Copy a whole local file of content ``cid`` into ``fd``; ``False`` if none or changed."""
        path = self.files.get(cid)
        if path is None:
            return False
        hasher = blake3.blake3()
        try:
            with open(path, "rb") as fh:
                while block := fh.read(_BLOCK):
                    hasher.update(block)
                    write_all(fd, block)
        except OSError:
            return False
        if hasher.digest() == cid:
            return True
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return False


def _sources(dest: str, writes: list[tuple[str, Entry]], files: dict[str, Entry]) -> _Sources:
    """The local copies of what ``writes`` need among ``files``.

    On the fast path ``files`` includes paths the pull did not look at: safe, since
    every local byte is verified against its id before it is used.
    """
    wanted = {e.cid for _, e in writes} | {c for _, e in writes for c, _n in e.chunks}
    return _Sources.of(dest, files, wanted)


def _needed(writes: list[tuple[str, Entry]], sources: _Sources) -> set[bytes]:
    needed: set[bytes] = set()
    for _path, entry in writes:
        if entry.type == TYPE_SYMLINK:
            needed.add(entry.oid)
        elif entry.cid in sources.files:
            continue
        elif entry.type == TYPE_FILE:
            needed.add(entry.oid)
        else:
            needed.update(cid for cid, _ in entry.chunks if cid not in sources.chunks)
    return needed


class _Writer:
    """Writes one entry into the stage from local sources, else from fetched objects."""

    def __init__(self, fetcher: ObjectFetcher, sources: _Sources) -> None:
        self.fetcher = fetcher
        self.sources = sources
        self.lock = threading.Lock()

    def _object(self, oid: bytes, out: Callable[[bytes], object], size: int) -> int:
        with self.lock:  # a local source that changed under us: fetch the object after all
            objects = self.fetcher.get([oid])
        _kind, raw_len = objects.read_object(oid, out, max_size=size)
        return raw_len

    def write(self, temp: str, path: str, entry: Entry) -> tuple[int, int, int]:
        if entry.type == TYPE_SYMLINK:
            _k, link = self.fetcher.objects.read_bytes(entry.oid, MAX_SYMLINK)
            if len(link) != entry.size or not link or b"\0" in link:
                raise _bad(f"{path!r}: symlink target is empty, holds a NUL byte or mis-sized")
            os.symlink(link, temp)
            return stat_key(os.lstat(temp))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if not self.sources.copy(entry.cid, fd):
                if entry.type == TYPE_FILE:
                    raw_len = self._object(entry.oid, partial(write_all, fd), entry.size)
                    if raw_len != entry.size:
                        raise _bad(
                            f"{path!r}: object has {raw_len} bytes, the tree says {entry.size}"
                        )
                else:
                    self._chunked(fd, path, entry)
        finally:
            os.close(fd)
        os.chmod(temp, entry.mode)
        return stat_key(os.lstat(temp))

    def _chunked(self, fd: int, path: str, entry: Entry) -> None:
        whole = Hasher()

        def out(part: bytes) -> None:
            whole.update(part)
            write_all(fd, part)

        for cid, length in entry.chunks:
            data = self.sources.read_chunk(cid)
            if data is not None:
                out(data)
            elif self._object(cid, out, length) != length:
                raise _bad(f"{path!r}: chunk {cid.hex()} is not {length} bytes")
        if whole.length != entry.size or bytes(whole.pack_key()) != entry.cid:
            raise _bad(f"{path!r}: the file's chunks do not match its chunk list's content id")


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _under(path: str, tops: set[str]) -> bool:
    """Whether an ancestor directory of ``path`` is in ``tops``."""
    cut = path.find("/")
    while cut >= 0:
        if path[:cut] in tops:
            return True
        cut = path.find("/", cut + 1)
    return False


def _plan_changes(
    fetcher: ObjectFetcher, root: bytes, dest: str, old: Manifest, limits: Limits
) -> tuple[dict[str, Entry], dict[str, os.stat_result], list[str]]:
    """The target, the lstat of each path the pull may touch, and those paths (fast path).

    Only the paths whose entries change (and, under a directory the snapshot
    removes, whatever is there) are looked at: a local edit elsewhere is not the
    pull's business; it stays, and the manifest keeps the stat that shows it.
    """
    diff = tree_diff(fetcher, root, old, limits)
    target = dict(old.entries)
    for path in diff.deleted:
        target.pop(path, None)
    target.update(diff.changed)
    # A killed pull's journal: the paths it was changing may hold either state.
    paths = sorted({*diff.changed, *diff.deleted, *old.pending, *old.prev})
    local: dict[str, os.stat_result] = {}
    # Directories scanned whole, and paths that are not a real directory here (a symlink
    # is never followed): nothing under them is looked at again. Sorted, so an
    # ancestor (always among ``paths``: its tree id changed too) comes first.
    done: set[str] = set()
    remade: list[str] = []
    for path in paths:
        if done and _under(path, done):
            continue
        st = _lstat(os.path.join(dest, path))
        entry = target.get(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            done.add(path)
            if entry is not None and entry.type == TYPE_DIR:
                # The pull makes this directory afresh: all it holds is written, changed or not.
                remade.extend(p for p in subtree(diff.keys, path) if p in target)
            if st is None:
                continue
        local[path] = st
        if stat.S_ISDIR(st.st_mode) and (entry is None or entry.type != TYPE_DIR):
            # A directory going away (or becoming a file): whatever it holds must be the pull's.
            done.add(path)
            for sub, sub_st in _scan(os.path.join(dest, path)).items():
                local[f"{path}/{sub}"] = sub_st
    return target, local, sorted({*paths, *remade}) if remade else paths


def _refusal(dest: str, edits: list[str]) -> LocalEdits:
    shown = ", ".join(sorted(edits)[:10]) + (" ..." if len(edits) > 10 else "")
    return LocalEdits(
        f"{dest} holds {len(edits)} local change(s) no pull made: {shown} "
        "(force=True, or --force, overwrites them)"
    )


def _work(
    looked: list[str],
    target: dict[str, Entry],
    local: dict[str, os.stat_result],
    clean: dict[str, Entry],
) -> tuple[list[tuple[str, Entry]], list[str], list[str]]:
    """The files to write, directories to make and local paths to remove (sorted)."""

    def kind_at(path: str) -> int | None:
        return _kind(local[path]) if path in local else None

    writes: list[tuple[str, Entry]] = []
    mkdirs: list[str] = []
    for path in looked:
        entry = target.get(path)
        if entry is None:
            continue
        here = clean.get(path)
        if entry.type == TYPE_DIR:
            if kind_at(path) != TYPE_DIR:
                mkdirs.append(path)
        elif here is None or here.type != entry.type or here.oid != entry.oid:
            writes.append((path, entry))
    removes = [
        p
        for p in local
        if p not in target or (kind_at(p) == TYPE_DIR) != (target[p].type == TYPE_DIR)
    ]
    return writes, mkdirs, removes


def update_tree(
    fetcher: ObjectFetcher,
    value: str,
    root: bytes,
    dest: str,
    manifest_file: str,
    old: Manifest | None,
    *,
    force: bool,
    limits: Limits,
    workers: int,
    meter: Meter,
) -> tuple[int, dict[str, Entry]]:
    """Bring ``dest`` to snapshot ``root``; return the files written and the new entries.

    Refuses (:class:`LocalEdits`, naming paths, nothing changed) when a path the
    pull writes or removes holds an edit or an extra file no pull made, unless
    ``force`` (then it is overwritten or deleted). With a manifest only the paths
    the snapshot changes (and those a killed pull's journal was changing) are
    looked at (:func:`_plan_changes`); without one every local path is scanned and
    every local file hashed against the target: equal ones are kept, different
    ones and extra files count as edits.
    """
    sweep_stages(dest, grace=0.0)  # under the checkout lock: a dead pid's stage is garbage
    if old is not None and old.stage:
        remove_tree(old.stage)
    meter.enter("plan")
    consider: list[str] | None
    if old is not None:
        target, local, consider = _plan_changes(fetcher, root, dest, old, limits)
        if not consider and old.record == value and old.state == "done":
            return 0, target  # nothing to do, nothing to save
    else:
        target = whole_target(fetcher, root, old, limits)
        local = _scan(dest)
        consider = None
    clean, edits = _classify(dest, local, target, old)
    if edits and not force:
        raise _refusal(dest, edits)

    looked = sorted(target) if consider is None else consider
    writes, mkdirs, removes = _work(looked, target, local, clean)
    plan = TreePlan(
        files=len(writes),
        bytes=sum(e.size for _, e in writes if _is_file(e.type)),
        longest=max((len(os.fsencode(p)) for p in looked), default=0),
    )
    check_room(dest, plan)
    trusted = old.entries if old is not None and consider is not None else {}
    sources = _sources(dest, writes, {**trusted, **clean} if writes else {})
    meter.enter("download")
    fetcher.get(_needed(writes, sources))
    meter.enter("write")
    stage = tempfile.mkdtemp(
        prefix=f"{_stage_prefix(dest)}{os.getpid()}-", dir=os.path.dirname(dest)
    )
    try:
        writer = _Writer(fetcher, sources)
        staged: dict[str, str] = {}

        def one(number: int, path: str, entry: Entry) -> None:
            temp = os.path.join(stage, str(number))
            # A new value, never a change to an entry the old manifest still holds.
            target[path] = replace(entry, st=writer.write(temp, path, entry))
            staged[path] = temp

        with _Pool(max(1, workers)) as pool:
            for number, (path, entry) in enumerate(writes):
                pool.submit(partial(one, number), path, entry)
        for path, here in clean.items():
            now = target.get(path)
            if now is not None and path not in staged and now.type != TYPE_DIR:
                if now.st != here.st:
                    target[path] = replace(now, st=here.st)
        # The old state of each path the renames may change (the rest is in ``target``).
        before = {p: e for p, e in clean.items() if target.get(p) != e}
        base = old.base if old is not None else {}
        save_journal(manifest_file, dest, value, root, stage, target, base, before, consider)
        _apply(dest, target, local, removes, mkdirs, staged, looked)
        save_manifest(manifest_file, Manifest(os.path.realpath(dest), value, root, target))
    finally:
        remove_tree(stage)
    return len(writes), target


def _apply(
    dest: str,
    target: dict[str, Entry],
    local: dict[str, os.stat_result],
    removes: list[str],
    mkdirs: list[str],
    staged: dict[str, str],
    looked: list[str],
) -> None:
    """Swap the staged entries in, one rename each: removals, new directories, files, modes.

    A directory that will change but whose mode denies its owner writes (a pull
    writes read-only directories too) is opened to ``u+rwx`` first; every mode is
    set to the snapshot's at the end, deepest first; only the ``looked`` paths (those
    the pull examined) and the ones it opened can need a mode change.
    """
    parents = {os.path.dirname(p) for p in (*removes, *mkdirs, *staged)}
    opened: set[str] = set()
    for parent in sorted(parents):
        full = os.path.join(dest, parent)
        mode = os.lstat(full).st_mode if os.path.isdir(full) else None
        if mode is not None and not stat.S_ISLNK(mode) and mode & 0o700 != 0o700:
            os.chmod(full, stat.S_IMODE(mode) | 0o700)
            opened.add(parent)
    for path in sorted(removes, key=lambda p: -p.count("/")):
        full = os.path.join(dest, path)
        if os.path.isdir(full) and not os.path.islink(full):
            remove_tree(full)
        elif os.path.lexists(full):
            os.unlink(full)
    for path in mkdirs:  # sorted: parents first
        os.makedirs(os.path.join(dest, path), 0o700, exist_ok=True)
    for path, temp in staged.items():
        os.replace(temp, os.path.join(dest, path))
    # Modes: what the scan saw differs, or the path was (re)made here; deepest first.
    made = set(mkdirs) | set(staged) | set(removes) | opened
    for path in sorted({*looked, *opened}, key=lambda p: -p.count("/")):
        entry = target.get(path)
        if entry is None or entry.type == TYPE_SYMLINK:
            continue
        seen = local.get(path)
        if path in made or seen is None or stat.S_IMODE(seen.st_mode) != entry.mode:
            full = os.path.join(dest, path)
            if stat.S_IMODE(os.lstat(full).st_mode) != entry.mode:
                os.chmod(full, entry.mode)
