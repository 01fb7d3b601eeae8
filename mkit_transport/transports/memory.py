"""``mkit+memory://NAME``: an in-process store, the reference semantics of the contract.

One lock guards each store, so every verb, and every CAS condition, is atomic.
Stores opened by the same ``NAME`` are shared within the process (handy for tests
and for wiring a server to a client in one process); ``MemoryTransport()`` and
``mkit+memory://`` get a private store of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ..errors import InvalidArgument, PackNotFound
from ..hashes import Hash, PackKey
from ..refs import RefWriteCondition, decode_ref_value, encode_ref_value
from ..retry import RetryPolicy
from ..transport import PackInfo, Transport
from ..urls import pop_retry, redact_url, reject_options, split_url

__all__ = ["MemoryStore", "MemoryTransport"]


@dataclass
class MemoryStore:
    """The state behind one memory transport; also its back door for tests."""

    packs: dict[PackKey, bytes] = field(default_factory=dict)
    refs: dict[str, bytes] = field(default_factory=dict)  # name -> 65-byte wire form
    #: When each pack was stored (seconds since the epoch); a pack planted through
    #: the back door without one counts as stored at the epoch.
    times: dict[PackKey, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set by ``init_store``: a memory store exists as soon as it is opened, so this
    #: only lets init say "created" once, like the other transports.
    initialized: bool = False


_named_stores: dict[str, MemoryStore] = {}
_named_lock = threading.Lock()


class MemoryTransport(Transport):
    """A transport over a :class:`MemoryStore` in this process."""

    schemes: ClassVar[tuple[str, ...]] = ("mkit+memory",)
    shared_across_processes: ClassVar[bool] = False

    def __init__(self, name: str | None = None, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(retry=retry)
        self.name = name
        if name is None:
            self.store = MemoryStore()
        else:
            with _named_lock:
                self.store = _named_stores.setdefault(name, MemoryStore())

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+memory://NAME`` (shared by name) or ``mkit+memory://`` (private)."""
        parts = split_url(url, options)
        retry = pop_retry(options)
        reject_options(url, options)
        if parts.path not in ("", "/"):
            raise InvalidArgument(
                f"{redact_url(url)!r}: a memory URL is mkit+memory://NAME and nothing more"
            )
        name = parts.netloc
        if name and not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
            raise InvalidArgument(
                f"{redact_url(url)!r}: a memory store name uses [A-Za-z0-9._-] only"
            )
        return cls(name or None, retry=retry)

    def __repr__(self) -> str:
        return f"MemoryTransport({self.name!r})" if self.name else "MemoryTransport()"

    def _init_store(self) -> bool:
        with self.store.lock:
            existed = self.store.initialized or bool(self.store.packs or self.store.refs)
            self.store.initialized = True
        return not existed

    def _pack_size(self, key: PackKey) -> int:
        return len(self._get_pack(key))

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        with self.store.lock:
            if key not in self.store.packs:
                self.store.packs[key] = data
                self.store.times[key] = time.time()

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        with self.store.lock:
            stored = self.store.packs.get(key)
        if stored is not None and PackKey.of(stored) == key:
            return  # the base still checks the stream
        data = b"".join(chunks)  # raises, storing nothing, if the stream is refused
        with self.store.lock:
            self.store.packs[key] = data
            self.store.times[key] = time.time()

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        # A snapshot sorted under the lock: memory stores are small by nature.
        with self.store.lock:
            keys = sorted(k for k in self.store.packs if after is None or after < k)[:limit]
            return [
                PackInfo(k, len(self.store.packs[k]), self.store.times.get(k, 0.0)) for k in keys
            ]

    def _delete_pack(self, key: PackKey) -> None:
        with self.store.lock:
            self.store.packs.pop(key, None)
            self.store.times.pop(key, None)

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        with self.store.lock:
            raw = self.store.refs.get(name)
            if condition.kind == "any":  # even a corrupt value: ANY is how to clear one
                self.store.refs.pop(name, None)
                return
            current = None if raw is None else decode_ref_value(raw, remote=False, name=name)
            condition.require(name, current)
            del self.store.refs[name]

    def _get_pack(self, key: PackKey) -> bytes:
        with self.store.lock:
            data = self.store.packs.get(key)
        if data is None:
            raise PackNotFound(f"no pack {key.hex()}")
        return data

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        with self.store.lock:
            data = self.store.packs.get(key)
            if data is None:
                raise PackNotFound(f"no pack {key.hex()}")
            if offset + length > len(data):
                raise self._range_past_end(key, offset, length, len(data))
            return data[offset : offset + length]

    def _has_pack(self, key: PackKey) -> bool:
        with self.store.lock:
            return key in self.store.packs

    def _read_ref(self, name: str) -> Hash | None:
        with self.store.lock:
            raw = self.store.refs.get(name)
        return None if raw is None else decode_ref_value(raw, remote=False, name=name)

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        with self.store.lock:
            raw = self.store.refs.get(name)
            current = None if raw is None else decode_ref_value(raw, remote=False, name=name)
            condition.require(name, current)
            self.store.refs[name] = encode_ref_value(value)

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        with self.store.lock:
            items = list(self.store.refs.items())
        return [(name, decode_ref_value(raw, remote=False, name=name)) for name, raw in items]
