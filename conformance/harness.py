"""What a transport under test hands the conformance suite: a :class:`Harness`.

The suite never trusts the transport to check itself. Where a transport can offer
one, a :class:`Backdoor` reads and writes the backing state directly (the file
tree, the memory dict, the bucket), so the suite can check the 65-byte wire form
and plant corrupt bytes that the transport must refuse to return.

Every test writes under its own ref namespace (``refs/mkit-conformance/<uuid>/``)
and uses freshly salted pack contents, so the suite can run against a shared,
non-empty remote without touching anything else on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mkit_transport import FileTransport, PackKey, RetryPolicy, Transport
from mkit_transport.transports.memory import MemoryStore

__all__ = ["Backdoor", "FileBackdoor", "Harness", "MemoryBackdoor"]


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
    fresh: bool = False
    #: Size of the pack pushed through the streaming verbs.
    large_pack_size: int = 64 << 20
    #: Races: workers per round and rounds; counter: workers x increments.
    race_workers: int = 4
    race_rounds: int = 10
    counter_workers: int = 4
    counter_increments: int = 25
    #: Races: how long (seconds) a worker waits for its peers, and bounds a whole race;
    #: raise it for a slow remote. A race never fails for being slow under this bound.
    race_wait: float = 120.0
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
