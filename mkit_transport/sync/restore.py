"""Pull's local side: the cache of verified packs and the atomic swap into place.

Both exist so that a pull never leaves a half-state behind: the cache holds only
whole packs that passed the verifier (a download lands under a temporary name and
is renamed in), and a restored tree is built beside its destination and swapped in
with renames, the old tree moved aside first and deleted last.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Final

from ..errors import InvalidResponse, PackNotFound, PayloadTooLarge, TransportError
from ..hashes import PackKey
from ..pack import PackFile, PackVerifier
from ..pack.verifier import SinkFactory
from ..transport import Transport
from .atomic import replacing
from .model import PackRef
from .plan import TreePlan
from .progress import Meter

__all__ = [
    "STAGE_GRACE",
    "PackCache",
    "PullPacks",
    "check_dest",
    "check_room",
    "default_cache_dir",
    "default_cache_limit",
    "relabel",
    "remove_tree",
    "staged",
    "swap_in",
    "sweep_stages",
    "verified_chunks",
]


def default_cache_dir() -> str:
    """The pack cache used when none is given: ``$XDG_CACHE_HOME/mkit_transport``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mkit_transport")


def relabel(error: TransportError, what: str) -> TransportError:
    """The same error class, with ``what`` (a pack's name) in front of its message."""
    if isinstance(error, PayloadTooLarge):
        return PayloadTooLarge(f"{what}: {error}", size=error.size, limit=error.limit)
    return type(error)(f"{what}: {error}")


class PackCache:
    """Verified packs kept on disk by key: ``<dir>/packs/<hex>`` (only whole, verified packs)."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.join(directory, "packs")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, key: PackKey) -> str:
        """Where pack ``key`` lives once whole and verified (named by its key alone)."""
        return os.path.join(self.dir, key.hex())

    def fetch(self, transport: Transport, key: PackKey, meter: Meter) -> None:
        """Download ``key``, verifying it as it streams, and move it into the cache.

        The transport checks the key; the verifier checks the structure and the
        trailer. Objects are not decompressed here: each is verified against its id
        when it is read for writing (SYNC-13), so the bytes are inflated once.
        """
        with replacing(self.path(key), ".download-") as out:
            for chunk in verified_chunks(transport, key, "remote", meter, objects=False):
                out.write(chunk)

    def trim(self, limit: int) -> list[str]:
        """Evict least recently used entries until at most ``limit`` bytes remain.

        One budget covers the packs (``packs/``) and the pack ids an incremental pull
        reads offline (``packids/``, tiny): packs go first, oldest mtime first, then
        pack ids. Returns the evicted paths. Races are harmless: a pack another pull
        still reads is hard-linked into that pull's own directory (:class:`PullPacks`),
        and a missing pack id is fetched again as the pack's index blob.
        """
        ids = os.path.join(os.path.dirname(self.dir), "packids")
        entries = [(0, *row) for row in _pack_files(self.dir)]
        entries += [(1, *row) for row in _pack_files(ids)]
        entries.sort()
        total = sum(row[2] for row in entries)
        evicted: list[str] = []
        for _ids, _mtime, size, path in entries:
            if total <= limit:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                evicted.append(path)
            total -= size
        return evicted

    def open(self, transport: Transport, pack: PackRef, meter: Meter) -> tuple[PackFile, bool]:
        """Return the pack as a :class:`PackFile`, downloading it unless cached and intact."""
        path = self.path(pack.key)
        if os.path.exists(path):
            try:
                return PackFile(path, check_trailer=True), False
            except InvalidResponse:
                os.unlink(path)  # damaged in the cache: fetch it again
        self.fetch(transport, pack.key, meter)
        return PackFile(path, check_trailer=False), True


#: The default cache limit is this fraction of the tree a pull wrote (issue 13).
CACHE_FRACTION: Final = 0.10


def default_cache_limit(tree_bytes: int) -> int:
    """The pack cache's default size after a pull: 10% of the files' bytes it wrote."""
    return int(tree_bytes * CACHE_FRACTION)


def _pack_files(directory: str) -> list[tuple[float, int, str]]:
    """``(mtime, size, path)`` of every whole entry of ``directory`` (temporaries skipped)."""
    found: list[tuple[float, int, str]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found.append((st.st_mtime, st.st_size, entry.path))
    except OSError:
        pass
    return found


class PullPacks:
    """The packs one pull reads, in a directory of its own under the cache (issue 13).

    A cached pack is hard-linked in (no copy, no extra disk), so another pull that
    evicts it from the cache cannot pull it from under this one; a pack that is not
    cached (or vanished between the look and the link) is downloaded here. At the
    end :meth:`finish` offers the downloaded packs to the cache and trims the cache
    to its limit, least recently used first; :meth:`close` removes the directory.
    Directories of killed pulls (``pulls/<pid>-*`` whose pid is dead) are swept.
    """

    def __init__(self, cache: PackCache) -> None:
        self.cache = cache
        root = os.path.join(os.path.dirname(cache.dir), "pulls")
        os.makedirs(root, exist_ok=True)
        _sweep_pull_dirs(root)
        self.dir = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
        self.fresh: list[str] = []
        self._lock = threading.Lock()

    def open(self, transport: Transport, pack: PackRef, meter: Meter) -> tuple[PackFile, bool]:
        """The pack as a :class:`PackFile`: linked from the cache if intact, else downloaded."""
        name = pack.key.hex()
        mine = os.path.join(self.dir, name)
        cached = self.cache.path(pack.key)
        try:
            os.link(cached, mine)
            have = True
        except FileNotFoundError:
            have = False  # not cached, or evicted by another pull a moment ago
        except FileExistsError:
            have = True
        except OSError:  # no hard links here: read it from the cache in place
            mine, have = cached, os.path.exists(cached)
        if have:
            try:
                file = PackFile(mine, check_trailer=True)
            except (InvalidResponse, FileNotFoundError):
                for path in {mine, cached}:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            else:
                with contextlib.suppress(OSError):
                    os.utime(cached)  # recently used: evicted last
                return file, False
        mine = os.path.join(self.dir, name)
        with replacing(mine, ".download-") as out:
            for chunk in verified_chunks(transport, pack.key, "remote", meter, objects=False):
                out.write(chunk)
        with self._lock:
            self.fresh.append(mine)
        return PackFile(mine, check_trailer=False), True

    def adopt(self, path: str) -> None:
        """Count a pack written into this pull's directory as downloaded (offered at the end)."""
        with self._lock:
            self.fresh.append(path)

    def finish(self, limit: int) -> None:
        """Offer the downloaded packs to the cache, then trim it to ``limit`` bytes (LRU).

        A downloaded pack larger than what the limit leaves is never linked in (no
        write of a pack about to be deleted). Trimming evicts the least recently used
        packs (oldest mtime; a use touches it) until the cache holds at most
        ``limit`` bytes of packs; a pull reading an evicted pack holds its own link.
        """
        for path in self.fresh:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) <= limit:
                    os.link(path, os.path.join(self.cache.dir, os.path.basename(path)))
        self.cache.trim(limit)

    def close(self) -> None:
        """Remove this pull's directory (its links and downloads)."""
        remove_tree(self.dir)


def _sweep_pull_dirs(root: str) -> None:
    """Remove the per-pull directories of pulls whose process is gone (housekeeping)."""
    with contextlib.suppress(OSError), os.scandir(root) as it:
        for entry in list(it):
            pid, _, _ = entry.name.partition("-")
            if pid.isdigit() and not _pid_alive(int(pid)):
                remove_tree(entry.path)


def verified_chunks(
    transport: Transport,
    key: PackKey,
    side: str,
    meter: Meter,
    *,
    objects: bool,
    relayed: bool = False,
    sink: SinkFactory | None = None,
) -> Iterator[bytes]:
    """Yield pack ``key`` from ``transport``, each chunk fed to a :class:`PackVerifier`.

    A damaged pack raises from inside the iteration, before the consumer can commit
    what it wrote; errors name the pack and say it is missing or corrupt on the
    ``side`` it came from. ``objects`` re-hashes every object (PACK-14); ``relayed``
    counts the bytes as sent on as well as received (mirror); ``sink`` (with
    ``objects``) receives each object's bytes as they are decoded (a streamed pull).
    """
    what = f"pack {key.hex()}"
    # download_pack_stream checks the whole pack against ``key`` (raising after the
    # last chunk, before ``finish``): the verifier need not hash it again.
    verifier = PackVerifier(objects=objects, sink=sink, key=key)
    try:
        for chunk in transport.download_pack_stream(key):
            verifier.feed(chunk)
            meter.add(bytes_in=len(chunk), bytes_out=len(chunk) if relayed else 0)
            yield chunk
        verifier.finish()
    except PackNotFound as error:
        raise PackNotFound(f"{what} is missing on the {side}") from error
    except (InvalidResponse, PayloadTooLarge) as error:
        raise relabel(error, f"{what} is corrupt on the {side}") from error


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it, never following a symlink; ignore errors.

    Iterative: ``shutil.rmtree`` recurses once a level (before Python 3.12) and raises
    ``RecursionError``, which ``ignore_errors`` does not catch, on a tree a pull may
    legally write (``max_depth`` raised). Used for staging directories, swept stages
    and a replaced tree moved aside; best effort, like ``rmtree(ignore_errors=True)``.
    """
    stack: list[tuple[str, bool]] = [(path, False)]
    while stack:
        current, emptied = stack.pop()
        if emptied:
            with contextlib.suppress(OSError):
                os.rmdir(current)
            continue
        try:
            is_dir = stat.S_ISDIR(os.lstat(current).st_mode)
        except OSError:
            continue
        if not is_dir:
            with contextlib.suppress(OSError):
                os.unlink(current)
            continue
        stack.append((current, True))
        try:
            with os.scandir(current) as it:
                children = list(it)
        except OSError:
            continue
        for child in children:
            try:
                below = child.is_dir(follow_symlinks=False)
            except OSError:
                below = False
            if below:
                stack.append((child.path, False))
            else:
                with contextlib.suppress(OSError):
                    os.unlink(child.path)


def check_dest(dest: str, replace: bool) -> None:
    """Refuse a destination a pull would clobber, before anything is downloaded."""
    if not os.path.lexists(dest) or replace:
        return
    if not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest):
        raise FileExistsError(
            f"{dest} exists and is not an empty directory (update=True, or --update, "
            "writes only what changed since the pull that made it; replace=True, or "
            "--replace, replaces it whole)"
        )


def swap_in(stage: str, dest: str, replace: bool) -> None:
    """Move ``stage`` to ``dest``; an existing ``dest`` is moved aside first, then deleted."""
    check_dest(dest, replace)
    if not os.path.lexists(dest):
        os.rename(stage, dest)
        return
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.old-", dir=os.path.dirname(dest))
    old = os.path.join(aside, "old")
    os.rename(dest, old)
    try:
        os.rename(stage, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    remove_tree(aside)


#: How old a staging directory of a dead pull must be before a later pull removes it.
STAGE_GRACE: Final = 3600.0
#: A staging directory's name after ``.<dest>.pull-``: the owner's pid, then mkdtemp's
#: eight characters (``tempfile`` draws them from ``[a-z0-9_]``); older pulls wrote
#: no pid.
_STAGE_TAIL: Final = re.compile(r"(?:([0-9]{1,10})-)?[a-z0-9_]{8}")
#: The longest path a system takes when it does not say (Linux's PATH_MAX).
_PATH_MAX: Final = 4096


def _stage_prefix(dest: str) -> str:
    return f".{os.path.basename(dest)}.pull-"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by someone else
    return True


def sweep_stages(dest: str, *, grace: float = STAGE_GRACE, now: float | None = None) -> list[str]:
    """Remove the staging directories killed pulls into ``dest`` left; return their paths.

    A staging directory (``.<name>.pull-<pid>-*`` beside ``dest``) is removed only
    when its own mtime is more than ``grace`` seconds old *and* the pid in its name
    is not a live process here (a name without a pid, from an older pull, needs
    only the age). A concurrent pull is therefore kept: its pid is alive, and a
    fresh stage is young whatever its name says. (A pull on another host sharing
    the directory has a pid that means nothing here: the age alone protects it,
    as long as its top directory changed within ``grace``.) Symlinks and files of
    that name are left alone. Errors are ignored: sweeping is housekeeping, never a
    reason for a pull to fail.
    """
    parent = os.path.dirname(dest)
    prefix = _stage_prefix(dest)
    cutoff = (time.time() if now is None else now) - grace
    removed: list[str] = []
    try:
        with os.scandir(parent) as it:
            candidates = [e for e in it if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in candidates:
        match = _STAGE_TAIL.fullmatch(entry.name[len(prefix) :])
        if match is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
        except OSError:
            continue
        if match.group(1) is not None and _pid_alive(int(match.group(1))):
            continue
        remove_tree(entry.path)
        removed.append(entry.path)
    return removed


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        up = os.path.dirname(path)
        if up == path:
            break
        path = up
    return path


def check_room(dest: str, plan: TreePlan) -> None:
    """Refuse, before anything is written, a tree that cannot fit where ``dest`` is.

    The files' declared bytes must not exceed the free space of the file system
    that will hold the staging directory, and the longest path the tree holds must
    fit the system's path limit from there (a hostile tree of deep, long names
    would otherwise fail half-way with ENAMETOOLONG). Both are PayloadTooLarge
    naming the figures; nothing is created.
    """
    parent = os.path.dirname(dest)
    where = _existing_ancestor(parent)
    free = shutil.disk_usage(where).free
    if plan.bytes > free:
        raise PayloadTooLarge(
            f"{dest}: the snapshot declares {plan.bytes} bytes of files and only {free} "
            f"bytes are free on {where}",
            size=plan.bytes,
            limit=free,
        )
    try:
        path_max = os.pathconf(where, "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = _PATH_MAX
    if path_max <= 0:
        path_max = _PATH_MAX
    stage = os.path.join(parent, f"{_stage_prefix(dest)}{os.getpid()}-xxxxxxxx")
    base = max(len(os.fsencode(stage)), len(os.fsencode(dest)))
    if plan.longest and base + 1 + plan.longest >= path_max:
        raise PayloadTooLarge(
            f"{dest}: the snapshot holds a path of {plan.longest} bytes, too long for "
            f"this system's {path_max}-byte path limit from there",
            size=base + 1 + plan.longest,
            limit=path_max,
        )


@contextlib.contextmanager
def staged(dest: str, replace: bool) -> Iterator[str]:
    """A new directory beside ``dest`` to build a tree in, swapped in if the block ends well.

    Beside, so the swap is a rename on one file system; on any failure (in the
    block or the swap) the stage is removed and ``dest`` is left as it was. Its
    name records this process's pid (``.<name>.pull-<pid>-*``), so the next pull
    into ``dest`` can tell a killed pull's stage from a live one and sweep it
    (:func:`sweep_stages`).
    """
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    sweep_stages(dest)
    stage = tempfile.mkdtemp(prefix=f"{_stage_prefix(dest)}{os.getpid()}-", dir=parent)
    try:
        yield stage
        os.chmod(stage, 0o755)  # noqa: S103 - mkdtemp makes it 0o700; a tree is readable
        swap_in(stage, dest, replace)
    except BaseException:
        remove_tree(stage)
        raise
