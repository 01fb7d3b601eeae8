"""Deliberately broken transports: each breaks one guarantee the conformance suite checks.

They prove the suite can fail: tests/test_conformance_catches_bugs.py runs the suite
against each and asserts that exactly the right tests fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    PackKey,
    RefConflict,
    RefWriteCondition,
    RemoteError,
    RetryPolicy,
    Transport,
    TransportError,
)
from mkit_transport.conformance import (
    ErrorSuite,
    Harness,
    MemoryBackdoor,
    MemoryFaults,
    PackSuite,
    RaceSuite,
    RangeSuite,
    RefSuite,
)
from mkit_transport.refs import decode_ref_value, encode_ref_value
from mkit_transport.transports.memory import MemoryTransport


class LostUpdateTransport(MemoryTransport):
    """The upstream file-transport defect: ANY writes without the lock match holds."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        if condition.kind == "any":
            self.store.refs[name] = value.hex().encode() + b"\n"  # no lock
            return
        with self.store.lock:
            current = self._read_ref(name)
            if not condition.allows(current):
                raise RefConflict("conflict", name=name, current=current)
            time.sleep(0.0005)  # the window between the read and the write
            self.store.refs[name] = value.hex().encode() + b"\n"

    def _read_ref(self, name: str) -> Hash | None:
        raw = self.store.refs.get(name)
        return None if raw is None else Hash.from_hex(raw[:64].decode())


class CheckThenWriteTransport(MemoryTransport):
    """MISSING and match decided outside the lock (zarr/fsspec-style 'racy default')."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        current = self._read_ref(name)
        if not condition.allows(current):
            raise RefConflict("conflict", name=name, current=current)
        time.sleep(0.001)
        with self.store.lock:
            self.store.refs[name] = value.hex().encode() + b"\n"

    def _read_ref(self, name: str) -> Hash | None:
        raw = self.store.refs.get(name)
        return None if raw is None else Hash.from_hex(raw[:64].decode())


class SloppyWireTransport(MemoryTransport):
    """Stores refs without the line feed and reads whatever looks like hex."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        with self.store.lock:
            current = self._read_ref(name)
            if not condition.allows(current):
                raise RefConflict("conflict", name=name, current=current)
            self.store.refs[name] = value.hex().encode()

    def _read_ref(self, name: str) -> Hash | None:
        raw = self.store.refs.get(name)
        return None if raw is None else Hash.from_hex(raw.strip().lower()[:64].decode())

    def _list_refs(self, prefix: str) -> list[tuple[str, Hash]]:
        return [(n, h) for n in list(self.store.refs) if (h := self._read_ref(n)) is not None]


class IgnoresMissingTransport(MemoryTransport):
    """Treats MISSING as ANY: a create-only write overwrites."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        if condition.kind == "missing":
            condition = RefWriteCondition.ANY
        super()._update_ref(name, condition, value)


class IgnoresConditionsTransport(MemoryTransport):
    """A store that refuses conditional writes (an S3 server ignoring If-None-Match)."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        if condition.kind != "any":
            raise RemoteError("the server ignores conditional writes (If-Match)")
        super()._update_ref(name, condition, value)


class LivelockTransport(MemoryTransport):
    """A conditional write refused while another client holds a lease on the store.

    Every client holds its lease from open to close, so with two clients open every
    CAS conflicts forever and nobody makes progress: a livelock, not a slow store.
    """

    leases: ClassVar[dict[int, set[int]]] = {}

    def __init__(self, name: str | None = None, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(name, retry=retry)
        self.leases.setdefault(id(self.store), set()).add(id(self))

    def close(self) -> None:
        self.leases.get(id(self.store), set()).discard(id(self))

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        if condition.kind != "any" and len(self.leases.get(id(self.store), ())) > 1:
            raise RefConflict("another client holds the lease", name=name)
        super()._update_ref(name, condition, value)


class EagerStreamTransport(MemoryTransport):
    """Appends each streamed chunk to the stored pack as it arrives (no staging)."""

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self.store.packs[key] = b""
        for chunk in chunks:
            with self.store.lock:
                self.store.packs[key] += chunk


class IgnoresOffsetTransport(MemoryTransport):
    """Its own resume path restarts the pack from the beginning."""

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        return super()._open_pack_stream(key, 0)


class IgnoresRangeOffsetTransport(MemoryTransport):
    """Its ranged read starts at byte 0 whatever offset it was asked for."""

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        return super()._get_pack_range(key, 0, length)


class ShortRangeTransport(MemoryTransport):
    """Slices like Python: a range past the end comes back short, not refused."""

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        return self._get_pack(key)[offset : offset + length]


class PrefixCasTransport(MemoryTransport):
    """Compares only the first 16 hex digits of the expected value (a short 'etag')."""

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        with self.store.lock:
            current = self._read_ref_unlocked(name)
            if condition.kind == "match":
                assert condition.expected is not None
                held = current is not None and current.hex()[:16] == condition.expected.hex()[:16]
            else:
                held = condition.allows(current)
            if not held:
                raise RefConflict("conflict", name=name, current=current)
            self.store.refs[name] = encode_ref_value(value)

    def _read_ref_unlocked(self, name: str) -> Hash | None:
        raw = self.store.refs.get(name)
        return None if raw is None else decode_ref_value(raw, remote=False)


class FirstPageTransport(MemoryTransport):
    """Returns the first page (1000 names) of a listing and never asks for the next."""

    def _list_refs(self, prefix: str) -> list[tuple[str, Hash]]:
        head = f"{prefix}/" if prefix else ""
        found = sorted((n, h) for n, h in super()._list_refs(prefix) if n.startswith(head))
        return found[:1000]


class RangeEndsAtZTransport(MemoryTransport):
    """Lists the key range [prefix/, prefix/z]: names continuing past 'z' are lost."""

    def _list_refs(self, prefix: str) -> list[tuple[str, Hash]]:
        head = f"{prefix}/" if prefix else ""
        end = head + "z" if head else "~"
        return [(n, h) for n, h in super()._list_refs(prefix) if head <= n <= end]


class CachingTransport(MemoryTransport):
    """Caches every ref it read, and never asks the store again."""

    def __init__(self, name: str | None = None, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(name, retry=retry)
        self.cache: dict[str, Hash | None] = {}

    def _read_ref(self, name: str) -> Hash | None:
        if name not in self.cache:
            self.cache[name] = super()._read_ref(name)
        return self.cache[name]

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        super()._update_ref(name, condition, value)
        self.cache[name] = value


class TransientAsPermanentTransport(MemoryTransport):
    """Reports every store failure as a RemoteError: a dropped connection is never retried."""

    def _read_ref(self, name: str) -> Hash | None:
        try:
            return super()._read_ref(name)
        except TransportError as error:
            raise RemoteError(f"store failed: {error}") from error

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        try:
            super()._update_ref(name, condition, value)
        except RefConflict:
            raise
        except TransportError as error:
            raise RemoteError(f"store failed: {error}") from error


class PermanentAsTransientTransport(MemoryTransport):
    """Reports a refusal as a dropped connection: retried for nothing, the cause hidden."""

    def _read_ref(self, name: str) -> Hash | None:
        try:
            return super()._read_ref(name)
        except AccessDenied as error:
            raise ConnectionFailed(f"store failed: {error}") from error


def _harness(cls: type[MemoryTransport], **settings: Any) -> Harness:
    name = f"broken-{uuid.uuid4().hex}"

    def opener(retry: RetryPolicy | None) -> Transport:
        return cls(name, retry=retry)

    sizes: dict[str, Any] = {"race_workers": 8, "race_rounds": 10, "counter_increments": 100}
    # In-memory stores answer in microseconds: short race bounds keep a broken
    # transport that wedges a worker from holding the whole run for minutes.
    sizes |= {"race_wait": 30.0, "race_budget": 20.0, "race_stall": 5.0}
    return Harness(
        open=opener,
        backdoor=MemoryBackdoor(MemoryTransport(name).store),
        faults=MemoryFaults(MemoryTransport(name).store),
        fresh=True,
        **{**sizes, **settings},
    )


class TestLostUpdate(RaceSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(LostUpdateTransport)


class TestCheckThenWrite(RaceSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(CheckThenWriteTransport)


class TestSloppyWire(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(SloppyWireTransport)


class TestIgnoresMissing(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(IgnoresMissingTransport)


class TestLivelock(RaceSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(LivelockTransport, race_stall=2.0, race_rounds=2)


class TestEagerStream(PackSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(EagerStreamTransport)


class TestIgnoresOffset(PackSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(IgnoresOffsetTransport)


class TestIgnoresRangeOffset(RangeSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(IgnoresRangeOffsetTransport)


class TestShortRange(RangeSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(ShortRangeTransport)


class TestPrefixCas(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(PrefixCasTransport)


class TestFirstPage(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(FirstPageTransport)


class TestRangeEndsAtZ(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(RangeEndsAtZTransport)


class TestCaching(RefSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(CachingTransport)


class TestTransientAsPermanent(ErrorSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(TransientAsPermanentTransport)


class TestPermanentAsTransient(ErrorSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return _harness(PermanentAsTransientTransport)
