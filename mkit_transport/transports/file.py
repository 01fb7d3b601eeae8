"""``mkit+file:///absolute/path``: a store in a local directory, safe across processes.

Layout (spec/SPEC-TRANSPORT.md, "File transport")::

    <root>/packs/<2 hex>/<64 hex>     pack and blob bytes, named by their BLAKE3
    <root>/refs/<name...>/.ref        a ref's 65-byte value; e.g. refs/heads/main/.ref
    <root>/refs.lock                  the lock every ref write holds

A ref's value lives in a ``.ref`` file inside a directory named after the ref, so
``refs/a`` and ``refs/a/b`` can coexist as they do on every other transport (no
valid segment starts with ``.``, so the file never collides with a child).

Every file is written to a temporary name in its final directory, fsynced, renamed
over the target and the directory fsynced: a reader sees the old bytes or the new,
never a torn or empty file, and a crash leaves at most an ignored ``.*.tmp.*``.
Every ref write, whatever its condition, holds an in-process lock and an exclusive
``flock`` on ``refs.lock`` and reads the ref again under them, so ``ANY``,
``MISSING`` and ``match`` are atomic against each other across threads and processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import ClassVar, Final, Self, TypeVar
from urllib.parse import unquote

from ..directio import DIRECT_MIN, write_chunks
from ..errors import AccessDenied, InvalidArgument, PackNotFound, RemoteError
from ..hashes import Hash, Hasher, PackKey
from ..refs import (
    REF_VALUE_SIZE,
    RefWriteCondition,
    decode_ref_value,
    encode_ref_value,
    is_valid_ref_name,
)
from ..retry import RetryPolicy
from ..transport import PackInfo, Transport
from ..urls import pop_bool, pop_retry, redact_url, reject_options, split_url

__all__ = ["FileTransport"]

REF_FILE: Final = ".ref"
LOCK_FILE: Final = "refs.lock"
#: Read size for streamed downloads: large enough that per-chunk overhead vanishes
#: against the copy itself, small enough to keep memory bounded (see bench/).
_READ_SIZE: Final = 4 << 20
#: A temporary file older than this is a crash's leftover, never a write in progress.
STALE_AFTER: Final = 24 * 3600.0
#: Temporary names tried before a write gives up (a taken name is skipped).
_TEMP_ATTEMPTS: Final = 100
#: Times a writer makes a directory again that a failed writer took back meanwhile.
_RACES: Final = 8

_T = TypeVar("_T")

_HEX: Final = frozenset("0123456789abcdef")
_temp_seq = itertools.count()
_root_locks: dict[str, threading.Lock] = {}
_root_locks_guard = threading.Lock()


def _looks_temp(name: str) -> bool:
    """Whether ``name`` is shaped like one of our temporaries (``.<name>.tmp.<pid>.<seq>``).

    The one naming rule both sweeps apply (tested before any ``stat``), so it
    follows :meth:`FileTransport._write_atomic` from one place.
    """
    return name.startswith(".") and ".tmp." in name


def _regular_size(path: str) -> int | None:
    """The size of the regular file at ``path`` (not following a symlink), else None."""
    info = os.lstat(path)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _is_hex(name: str, length: int) -> bool:
    """Whether ``name`` is exactly ``length`` lowercase hex digits."""
    return len(name) == length and set(name) <= _HEX


def _os_error(error: OSError, what: str) -> Exception:
    """Map an OS error onto the taxonomy (one place for the whole module)."""
    if error.errno == errno.ELOOP:  # O_NOFOLLOW met a planted symlink
        return RemoteError(f"{what}: a symlink is in the way; refused")
    if isinstance(error, PermissionError):
        return AccessDenied(f"{what}: {error.strerror or error}")
    return RemoteError(f"{what}: {error.strerror or error}")


class FileTransport(Transport):
    """A transport over a directory tree on a local (POSIX) file system."""

    schemes: ClassVar[tuple[str, ...]] = ("mkit+file",)

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = True,
        direct_io: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        self.root = os.path.abspath(os.fspath(root))
        #: fsync files and directories (on by default; off trades crash durability,
        #: never atomicity, for speed).
        self.durable = durable
        #: write packs of at least DIRECT_MIN bytes around the page cache where the
        #: file system allows it (see mkit_transport.directio); same bytes either way.
        self.direct_io = direct_io
        #: The root with symlinks resolved: the lock key and what ``_confine`` checks.
        self._real_root = os.path.realpath(self.root)
        with _root_locks_guard:
            self._thread_lock = _root_locks.setdefault(self._real_root, threading.Lock())
        self._swept = False

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+file:///absolute/path`` (``durable``, ``direct_io``, ``retries``)."""
        parts = split_url(url, options)
        durable = pop_bool(options, "durable", True)
        direct_io = pop_bool(options, "direct_io", True)
        retry = pop_retry(options)
        reject_options(url, options)
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"{redact_url(url)!r}: a file URL needs an absolute path: mkit+file:///path "
                f"({redact_url(parts.netloc)!r} would be a relative path or a remote host)"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise InvalidArgument(f"{redact_url(url)!r}: a file URL needs an absolute path")
        return cls(path, durable=durable, direct_io=direct_io, retry=retry)

    def __repr__(self) -> str:
        return f"FileTransport({self.root!r})"

    # -- paths -----------------------------------------------------------------------

    def pack_path(self, key: PackKey) -> str:
        """Where the pack ``key`` is stored."""
        hexed = key.hex()
        return os.path.join(self.root, "packs", hexed[:2], hexed)

    def ref_path(self, name: str) -> str:
        """Where the value of the ref ``name`` (already validated) is stored."""
        return os.path.join(self.root, *name.split("/"), REF_FILE)

    def _confine(self, path: str) -> str:
        """Refuse a path that leaves the root through a symlink (RemoteError).

        ``path`` is built under the root; only the part that exists can hold a
        symlink, so resolve its deepest existing ancestor below the root. The root
        itself may be a symlink (e.g. macOS ``/tmp``).
        """
        probe = path
        while probe != self.root and not os.path.lexists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:  # not under the root at all
                raise RemoteError(f"path outside the store root: {path}")
            probe = parent
        if probe == self.root:
            return path
        real = os.path.realpath(probe)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise RemoteError(f"path escapes the store root through a symlink: {path}")
        return path

    # -- durable writes --------------------------------------------------------------

    def _fsync_dir(self, path: str) -> None:
        if not self.durable:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _make_dirs(self, path: str, created: list[str] | None = None) -> list[str]:
        """Create ``path`` and missing parents, fsyncing each new entry's parent.

        Returns the directories it created, parents first (also appended to
        ``created`` as they are made), so a failed write can take them back (a
        refused upload leaves no empty ``packs/``).
        """
        made = created if created is not None else []
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
                made.append(directory)
            except FileExistsError:
                pass
            self._fsync_dir(os.path.dirname(directory))
        return made

    def _in_dir(self, directory: str, step: Callable[[], _T], created: list[str]) -> _T:
        """Make ``directory`` (noting what was made in ``created``), then run ``step`` in it.

        A writer that made a directory and failed takes it back if it is empty
        (:meth:`_remove_dirs`). That can fall between this writer making or finding
        it and creating its entry there (two uploads racing into a new store, as a
        client retrying a cut upload does): ``FileNotFoundError`` then makes it again.
        """
        for _ in range(_RACES - 1):
            with contextlib.suppress(FileNotFoundError):
                self._make_dirs(directory, created)
                return step()
        self._make_dirs(directory, created)
        return step()

    @staticmethod
    def _remove_dirs(created: list[str]) -> None:
        """Remove directories :meth:`_make_dirs` created, deepest first, if still empty."""
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    @staticmethod
    def _create_temp(stage: str, base: str) -> tuple[str, int]:
        """Create a new temporary file in ``stage``; return its path and descriptor.

        Temporary names are predictable (pid, counter), so one may already be taken,
        by a planted symlink among others: ``O_EXCL | O_NOFOLLOW`` never opens what is
        there, and the next name is tried.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        for _attempt in range(_TEMP_ATTEMPTS):
            temp = os.path.join(stage, f".{base}.tmp.{os.getpid()}.{next(_temp_seq)}")
            try:
                return temp, os.open(temp, flags, 0o644)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, f"{_TEMP_ATTEMPTS} temporary names taken", stage)

    def _write_atomic(
        self, target: str, chunks: Iterable[bytes], stage: str | None = None, direct: bool = False
    ) -> None:
        """Write ``chunks`` to a temp file, then rename it over ``target``.

        The temp file lives in ``stage`` (default: the target's directory; it must be
        on the same file system). If ``chunks`` raises (a short, long or mis-hashed
        stream), the temp file is removed and nothing else has changed: the target's
        directory is only created once the bytes are complete.
        """
        directory = os.path.dirname(target)
        stage = stage or directory
        created: list[str] = []
        try:
            temp, fd = self._in_dir(
                stage, partial(self._create_temp, stage, os.path.basename(target)), created
            )
        except BaseException:
            self._remove_dirs(created)
            raise
        try:
            try:
                write_chunks(fd, chunks, direct=direct)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # Made only now (else above, and the temp file keeps it). The rename
            # replaces a symlink there, never follows it.
            rename = partial(os.replace, temp, target)
            if stage != directory:
                self._in_dir(directory, rename, [])
            else:
                rename()
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self._remove_dirs(created)
            raise
        self._fsync_dir(directory)

    def remove_stale_temp_files(self, older_than: float = STALE_AFTER) -> int:
        """Delete temporary files a crashed writer left behind; return how many.

        Only files named like our temporaries (``.<name>.tmp.<pid>.<seq>``) and not
        modified for ``older_than`` seconds are removed, so a write in progress on
        another process or host is never touched. Pack staging is swept
        automatically (once per client, at its first upload); call this to sweep
        the whole store, refs included.
        """
        removed = 0
        cutoff = time.time() - older_than
        for directory, _subdirs, files in os.walk(self.root, followlinks=False):
            for name in files:
                if _looks_temp(name):
                    path = os.path.join(directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        if os.lstat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
        return removed

    def _sweep_debris(self, older_than: float) -> int:
        try:
            return self.remove_stale_temp_files(older_than)
        except OSError as error:
            raise _os_error(error, f"sweep {self.root}") from error

    def _sweep_pack_stage(self) -> None:
        if self._swept:
            return
        self._swept = True
        stage = os.path.join(self.root, "packs")
        cutoff = time.time() - STALE_AFTER
        with contextlib.suppress(OSError), os.scandir(stage) as entries:
            for entry in entries:
                if _looks_temp(entry.name) and entry.is_file():
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)

    # -- the store -------------------------------------------------------------------

    def _init_store(self) -> bool:
        """Create the root with ``packs/`` and ``refs/``, each fsynced into its parent.

        A directory that is already there is a store (an empty one is an empty
        store) and is left exactly as it is.
        """
        if os.path.isdir(self.root):
            return False
        try:
            for inner in ("packs", "refs"):
                self._make_dirs(os.path.join(self.root, inner))
        except OSError as error:
            raise _os_error(error, f"create store {self.root}") from error
        return True

    # -- packs -----------------------------------------------------------------------

    def _store_pack(
        self, key: PackKey, chunks: Iterable[bytes], total: int, *, repair: bool = False
    ) -> None:
        path = self._confine(self.pack_path(key))
        self._sweep_pack_stage()
        try:
            if repair:
                if self._hashes_to(path, key):
                    return
            elif _regular_size(path) == total:
                # Content-addressed: same name and size means already stored (the
                # base still checks the stream). A different size means a damaged
                # copy, which the rename replaces.
                return
        except FileNotFoundError:
            pass
        except OSError as error:
            raise _os_error(error, f"stat {path}") from error
        try:
            self._write_atomic(
                path,
                chunks,
                stage=os.path.join(self.root, "packs"),
                direct=self.direct_io and total >= DIRECT_MIN,
            )
        except OSError as error:
            raise _os_error(error, f"store pack {key.hex()}") from error

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        self._store_pack(key, [data], len(data))

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        # A damaged copy is replaced by the same atomic rename as any upload.
        self._store_pack(key, chunks, total, repair=True)

    def _hashes_to(self, path: str, key: PackKey) -> bool:
        """Say whether the file at ``path`` hashes to ``key`` (FileNotFoundError if absent)."""
        hasher = Hasher(parallel=True)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW), "rb", 0) as f:
            while chunk := f.read(_READ_SIZE):
                hasher.update(chunk)
        return hasher.pack_key() == key

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self._store_pack(key, chunks, total)

    def _open(self, key: PackKey) -> int:
        path = self._confine(self.pack_path(key))
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise PackNotFound(f"no pack {key.hex()}") from error
        except OSError as error:
            raise _os_error(error, f"open pack {key.hex()}") from error

    def _get_pack(self, key: PackKey) -> bytes:
        fd = self._open(key)
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as error:
            raise _os_error(error, f"read pack {key.hex()}") from error

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        fd = self._open(key)

        def chunks() -> Iterator[bytes]:
            with os.fdopen(fd, "rb", buffering=0) as f:
                try:
                    if offset >= os.fstat(f.fileno()).st_size:
                        return  # past the end is empty; lseek refuses offsets over 2**63
                    f.seek(offset)
                    while chunk := f.read(_READ_SIZE):
                        yield chunk
                except OSError as error:
                    raise _os_error(error, f"read pack {key.hex()}") from error

        return chunks()

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        fd = self._open(key)
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if offset + length > size:
                    raise self._range_past_end(key, offset, length, size)
                taken = bytearray()
                while len(taken) < length:
                    chunk = os.pread(
                        f.fileno(), min(length - len(taken), _READ_SIZE), offset + len(taken)
                    )
                    if not chunk:  # packs are immutable: only a damaged store shrinks one
                        break
                    taken += chunk
                return bytes(taken)
        except OSError as error:
            raise _os_error(error, f"read pack {key.hex()}") from error

    def _pack_size(self, key: PackKey) -> int:
        path = self._confine(self.pack_path(key))
        try:
            size = _regular_size(path)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise PackNotFound(f"no pack {key.hex()}") from error
        except OSError as error:
            raise _os_error(error, f"stat pack {key.hex()}") from error
        if size is None:
            raise RemoteError(f"pack {key.hex()} is not a regular file (a symlink?); refused")
        return size

    def _has_pack(self, key: PackKey) -> bool:
        # Not os.path.isfile: it answers False for any failure, so a store the process
        # may not read (EACCES) would say "no such pack" instead of AccessDenied.
        try:
            mode = os.lstat(self._confine(self.pack_path(key))).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            raise _os_error(error, f"pack {key.hex()}") from error
        return stat.S_ISREG(mode)

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        """Scan the fan-out directories in order from ``after``'s, one at a time.

        Only ``packs/<2 hex>/<64 hex>`` regular files whose name starts with their
        directory's are packs: temporaries (``.*.tmp.*``, in ``packs/`` itself)
        and anything foreign are never listed. Memory holds one fan-out directory
        (1/256 of the store) at most.
        """
        top = self._confine(os.path.join(self.root, "packs"))
        start = after.hex() if after is not None else ""
        found: list[PackInfo] = []
        try:
            with os.scandir(top) as entries:
                fans = sorted(
                    e.name
                    for e in entries
                    if _is_hex(e.name, 2) and e.is_dir(follow_symlinks=False)
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise _os_error(error, f"list {top}") from error
        for fan in fans:
            if fan < start[:2]:
                continue
            try:
                with os.scandir(os.path.join(top, fan)) as entries:
                    names = sorted(
                        (e.name, e)
                        for e in entries
                        if _is_hex(e.name, 64) and e.name.startswith(fan) and e.name > start
                    )
                    for name, entry in names:
                        if len(found) == limit:
                            return found
                        try:
                            stat = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # deleted since the scan
                        if entry.is_file(follow_symlinks=False):
                            found.append(
                                PackInfo(PackKey.from_hex(name), stat.st_size, stat.st_mtime)
                            )
            except FileNotFoundError:
                continue
            except OSError as error:
                raise _os_error(error, f"list {top}/{fan}") from error
            if len(found) == limit:
                return found
        return found

    def _delete_pack(self, key: PackKey) -> None:
        self._delete_packs([key])

    def _delete_packs(self, keys: list[PackKey]) -> None:
        """Unlink each pack, then fsync each directory that lost one, once.

        A delete is durable when the verb returns either way; fsyncing the fan-out
        directory once per batch instead of once per pack (1-2 ms each) is what
        makes gc of a large store fast (bench/bench_gc.py).
        """
        touched: set[str] = set()
        confined: set[str] = set()  # a fan-out directory is checked once a batch
        try:
            for key in keys:
                path = self.pack_path(key)
                folder = os.path.dirname(path)
                if folder not in confined:
                    self._confine(folder)  # a symlinked folder must not lead outside
                    confined.add(folder)
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as error:
                    raise _os_error(error, f"delete pack {key.hex()}") from error
                touched.add(folder)
        finally:  # what was unlinked before an error is made durable too
            for directory in sorted(touched):
                self._fsync_dir(directory)

    # -- refs ------------------------------------------------------------------------

    def _read_ref_file(self, name: str, path: str) -> Hash | None:
        """Read the ref file at ``path``, which the caller has already confined."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise RemoteError(f"ref {name} is a symlink; refused") from error
            raise _os_error(error, f"read ref {name}") from error
        with os.fdopen(fd, "rb") as f:
            data = f.read(REF_VALUE_SIZE + 1)
        return decode_ref_value(data, remote=False, name=name)

    def _read_ref(self, name: str) -> Hash | None:
        return self._read_ref_file(name, self._confine(self.ref_path(name)))

    @contextlib.contextmanager
    def _ref_lock(self) -> Iterator[None]:
        # The thread lock orders threads of this process (flock on separate file
        # descriptors would too, but not for descriptors shared after fork); the
        # flock orders processes. The lock file is never renamed, so every writer
        # locks the same inode.
        with self._thread_lock:
            self._make_dirs(self.root)
            # O_NOFOLLOW: a planted refs.lock symlink would make O_CREAT create (and
            # the lock touch) a file outside the store.
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(os.path.join(self.root, LOCK_FILE), flags, 0o600)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise RemoteError(f"{LOCK_FILE} is a symlink; refused") from error
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the last descriptor releases the flock

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        path = self._confine(self.ref_path(name))
        try:
            with self._ref_lock():
                # Read again while holding the lock: this read decides the condition.
                current = self._read_ref_file(name, path)
                condition.require(name, current)
                if current != value:
                    self._write_atomic(path, [encode_ref_value(value)])
        except OSError as error:
            raise _os_error(error, f"write ref {name}") from error

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        path = self._confine(self.ref_path(name))
        try:
            with self._ref_lock():
                # Decided under the same lock as every ref write (see _update_ref).
                if condition.kind != "any":  # ANY also clears a corrupt value
                    condition.require(name, self._read_ref_file(name, path))
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    return
                self._fsync_dir(os.path.dirname(path))
                self._prune_ref_dirs(os.path.dirname(path))
        except OSError as error:
            raise _os_error(error, f"delete ref {name}") from error

    def _prune_ref_dirs(self, directory: str) -> None:
        """Remove the deleted ref's directories that are now empty, up to ``refs/``.

        Under the ref lock, so no writer is creating a child ref meanwhile.
        """
        stop = os.path.join(self.root, "refs")
        while directory != stop and directory.startswith(stop + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (a child ref), or already gone
            directory = os.path.dirname(directory)
        self._fsync_dir(directory)

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        top = os.path.join(self.root, *(prefix or "refs").split("/"))
        self._confine(top)
        found: list[tuple[str, Hash]] = []

        def fail(error: OSError) -> None:
            if not isinstance(error, FileNotFoundError | NotADirectoryError):
                raise _os_error(error, f"list refs under {prefix or 'refs'}")

        for directory, subdirs, files in os.walk(top, onerror=fail, followlinks=False):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            if REF_FILE not in files:
                continue
            name = os.path.relpath(directory, self.root).replace(os.sep, "/")
            path = os.path.join(directory, REF_FILE)
            # No _confine per ref: top is confined, the walk follows no symlinked
            # directory and a symlinked .ref is skipped here.
            if is_valid_ref_name(name) and not os.path.islink(path):
                value = self._read_ref_file(name, path)
                if value is not None:
                    found.append((name, value))
        return found
