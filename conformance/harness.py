"""What a transport under test hands the conformance suite: a :class:`Harness`.

The suite never trusts the transport to check itself. Where a transport can offer
one, a :class:`Backdoor` reads and writes the backing state directly (the file
tree, the memory dict, the bucket), so the suite can check the 65-byte wire form
and plant corrupt bytes that the transport must refuse to return.

Every test writes under its own ref namespace (``refs/mkit-conformance/<uuid>/``)
and uses freshly salted pack contents, so the suite can run against a shared,
non-empty remote without touching anything else on it; each test's refs are
deleted after it, pass or fail.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from mkit_transport import FileTransport, PackKey, RetryPolicy, Transport
from mkit_transport.errors import AccessDenied, ConnectionFailed, RemoteError, TransportError
from mkit_transport.transports.memory import MemoryStore

__all__ = [
    "FAULT_KINDS",
    "Backdoor",
    "FileBackdoor",
    "FileFaults",
    "Harness",
    "MemoryBackdoor",
    "MemoryFaults",
    "StoreFaults",
]

#: The failures a :class:`StoreFaults` hook can make its store suffer.
FAULT_KINDS = ("permission_denied", "out_of_space", "connection_dropped")


class Backdoor(Protocol):
    """Raw access to a store's backing state, bypassing the transport under test."""

    def read_ref_bytes(self, name: str) -> bytes | None:
        """The stored bytes of a ref (``None`` if absent), exactly as stored."""

    def write_ref_bytes(self, name: str, data: bytes) -> None:
        """Store arbitrary bytes as a ref's value (to plant malformed values)."""

    def read_pack_bytes(self, key: PackKey) -> bytes | None:
        """The stored bytes under a pack key (``None`` if absent)."""

    def write_pack_bytes(self, key: PackKey, data: bytes) -> None:
        """Store arbitrary bytes under a pack key (to plant corrupt packs)."""


class StoreFaults(Protocol):
    """Makes the backing store itself fail, so the suite can check the error mapping.

    A transport author implements it for their store (a bucket policy, a full disk, a
    proxy that cuts the connection). ``inject(kind, times)`` returns a context manager:
    while it is open, the store's operations fail as ``kind`` (one of
    :data:`FAULT_KINDS`), the first ``times`` of them, or all when ``times`` is None.
    It returns ``None`` for a kind the store cannot suffer (that check is then listed
    as not checked). The suite expects:

    * ``permission_denied``: :class:`~mkit_transport.errors.AccessDenied`, not retried;
    * ``out_of_space``: a permanent error (``RemoteError`` in the built-in transports),
      not retried, and nothing written;
    * ``connection_dropped``: a transient error (``ConnectionFailed``, or a 5xx
      ``ServerError``) that the retry policy retries, so a single drop is invisible.
    """

    def inject(
        self, kind: str, times: int | None = None
    ) -> contextlib.AbstractContextManager[None] | None:
        """A context during which the store fails as ``kind``; ``None`` if it cannot."""


@dataclass
class Harness:
    """How the suite reaches a transport under test.

    ``open(retry)`` returns a new client on the same store (``retry=None`` means the
    transport's default policy); the suite closes what it opens. ``url`` (with
    picklable ``options``) lets races run in separate processes through
    ``open_transport(url, **options)``; without it, or for in-process stores, races
    use threads. ``fresh`` says the store starts empty.
    """

    open: Callable[[RetryPolicy | None], Transport]
    url: str | None = None
    options: dict[str, object] = field(default_factory=dict)
    backdoor: Backdoor | None = None
    #: Makes the backing store fail (error mapping); without it those checks do not run.
    faults: StoreFaults | None = None
    fresh: bool = False
    #: Size of the pack pushed through the streaming verbs.
    large_pack_size: int = 64 << 20
    #: Races: workers per round and rounds; counter: workers x increments.
    race_workers: int = 4
    race_rounds: int = 10
    counter_workers: int = 4
    counter_increments: int = 25
    #: Races: how long (seconds) a worker waits for its peers at a barrier; raise it
    #: for a slow remote.
    race_wait: float = 120.0
    #: Races: seconds a looping worker keeps starting new operations. It bounds the
    #: race's duration, never its verdict: a slow store does fewer increments, and the
    #: suite checks only that what was done adds up.
    race_budget: float = 90.0
    #: Races: seconds the counter may stay unchanged while every worker's CAS conflicts
    #: before the race fails as a livelock (a clear message instead of a long wait).
    race_stall: float = 30.0
    #: Refs written to check a listing past one page (object stores page at 1000);
    #: 0 leaves the check out (listed as not checked) for a store too slow for it.
    listing_refs: int = 1100
    #: Hypothesis state machine: examples and steps per example.
    stateful_examples: int = 20
    stateful_steps: int = 25


class MemoryBackdoor:
    """Back door into a :class:`~mkit_transport.transports.memory.MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def read_ref_bytes(self, name: str) -> bytes | None:
        with self.store.lock:
            return self.store.refs.get(name)

    def write_ref_bytes(self, name: str, data: bytes) -> None:
        with self.store.lock:
            self.store.refs[name] = bytes(data)

    def read_pack_bytes(self, key: PackKey) -> bytes | None:
        with self.store.lock:
            return self.store.packs.get(key)

    def write_pack_bytes(self, key: PackKey, data: bytes) -> None:
        with self.store.lock:
            self.store.packs[key] = bytes(data)


class FileBackdoor:
    """Back door into a directory in the file transport's layout.

    Also serves any transport whose server stores into such a directory (the HTTP
    and SSH reference servers with their default file backend).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.layout = FileTransport(root)

    def read_ref_bytes(self, name: str) -> bytes | None:
        return _read(self.layout.ref_path(name))

    def write_ref_bytes(self, name: str, data: bytes) -> None:
        _write(self.layout.ref_path(name), data)

    def read_pack_bytes(self, key: PackKey) -> bytes | None:
        return _read(self.layout.pack_path(key))

    def write_pack_bytes(self, key: PackKey, data: bytes) -> None:
        _write(self.layout.pack_path(key), data)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class _FailingLock:
    """Stands in for a memory store's lock: the store fails as it is entered."""

    def __init__(self, real: object, error: Callable[[], TransportError], times: int | None):
        self.real = real
        self.error = error
        self.left = times

    def __enter__(self) -> object:
        if self.left is None or self.left > 0:
            if self.left is not None:
                self.left -= 1
            raise self.error()
        return self.real.__enter__()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.real.__exit__(*exc)  # type: ignore[attr-defined]


class MemoryFaults:
    """Fault hook for a :class:`MemoryStore`: its failures are already the taxonomy's.

    Every memory primitive enters the store's lock; while a fault is injected the lock
    raises the failure instead, as a store failing under the transport would.
    """

    _ERRORS: dict[str, Callable[[], TransportError]] = {
        "permission_denied": lambda: AccessDenied("permission denied (injected)"),
        "out_of_space": lambda: RemoteError("no space left on the store (injected)"),
        "connection_dropped": lambda: ConnectionFailed("connection dropped (injected)"),
    }

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def inject(
        self, kind: str, times: int | None = None
    ) -> contextlib.AbstractContextManager[None] | None:
        return self._inject(self._ERRORS[kind], times)

    @contextlib.contextmanager
    def _inject(self, error: Callable[[], TransportError], times: int | None) -> Iterator[None]:
        real = self.store.lock
        self.store.lock = _FailingLock(real, error, times)  # type: ignore[assignment]
        try:
            yield
        finally:
            self.store.lock = real


class _FailingOs:
    """The ``os`` module as the file transport sees it, with failing file-system calls."""

    CALLS = frozenset(
        {"open", "stat", "lstat", "scandir", "listdir", "makedirs", "mkdir", "replace"}
        | {"rename", "link", "unlink", "fsync", "write"}
    )

    def __init__(self, error: Callable[[], OSError], times: int | None) -> None:
        self.error = error
        self.left = times

    def __getattr__(self, name: str) -> object:
        real = getattr(os, name)
        if name not in self.CALLS:
            return real

        def failing(*args: object, **kwargs: object) -> object:
            if self.left is None or self.left > 0:
                if self.left is not None:
                    self.left -= 1
                raise self.error()
            return real(*args, **kwargs)

        return failing


class FileFaults:
    """Fault hook for the file transport: its system calls fail with ``errno`` errors.

    In this process only (the race workers' processes are not affected); a local
    file store has no connection to drop, so ``connection_dropped`` is not offered.
    """

    _ERRNO = {"permission_denied": errno.EACCES, "out_of_space": errno.ENOSPC}

    def inject(
        self, kind: str, times: int | None = None
    ) -> contextlib.AbstractContextManager[None] | None:
        code = self._ERRNO.get(kind)
        if code is None:
            return None
        return self._inject(lambda: OSError(code, os.strerror(code)), times)

    @contextlib.contextmanager
    def _inject(self, error: Callable[[], OSError], times: int | None) -> Iterator[None]:
        from mkit_transport.transports import file as module

        setattr(module, "os", _FailingOs(error, times))  # noqa: B010
        try:
            yield
        finally:
            setattr(module, "os", os)  # noqa: B010
