"""The store's lifecycle verbs: list and delete packs, delete refs (CAS), repair.

These are the verbs garbage collection and repair are built on (``sync/gc.py``),
so they get the same scrutiny as the write verbs: a listing that shows debris, a
delete that is not idempotent or a ref delete that is not atomic would make gc
lose data.
"""

from __future__ import annotations

import threading
import time

import pytest

from mkit_transport import (
    ConnectionFailed,
    Hash,
    InvalidArgument,
    InvalidRef,
    PackKey,
    PackNotFound,
    ProtocolError,
    RefConflict,
    RefWriteCondition,
    RetryPolicy,
    Transport,
)
from mkit_transport.transport import MAX_DELETE_BATCH

from .base import SuiteBase, make_pack, value_of
from .faults import Fault, FaultyTransport
from .harness import Backdoor, Harness

__all__ = ["LifecycleSuite"]

spec = pytest.mark.spec


def _mine(transport: Transport, keys: set[PackKey], page_size: int = 1000) -> list[PackKey]:
    """The listed keys that are among ``keys`` (the store may hold others), in order."""
    return [info.key for info in transport.list_packs(page_size=page_size) if info.key in keys]


def _race_round(clients: list[Transport], name: str, start: Hash) -> list[tuple[int, bool]]:
    """Odd clients CAS-delete ``name``, even ones CAS-write it, all expecting ``start``.

    Returns ``(client index, won)`` per client.
    """
    outcomes: list[tuple[int, bool]] = []
    barrier = threading.Barrier(len(clients))

    def work(i: int, client: Transport) -> None:
        barrier.wait()
        try:
            if i % 2:
                client.delete_ref(name, RefWriteCondition.match(start))
            else:
                client.update_ref(name, RefWriteCondition.match(start), value_of(f"w{i}"))
        except RefConflict:
            outcomes.append((i, False))
        else:
            outcomes.append((i, True))

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


class LifecycleSuite(SuiteBase):
    """Listing and deleting packs, deleting refs: the verbs gc and repair use."""

    @spec("T-LIFE-1")
    def test_list_packs_reports_each_stored_pack_with_its_size(
        self, transport: Transport, salt: bytes
    ) -> None:
        started = time.time()
        packs = [make_pack(salt, f"list-{i}", size) for i, size in enumerate((1, 700, 5000))]
        for data, key in packs:
            transport.upload_pack(data, key)
        sizes = {key: len(data) for data, key in packs}
        listed = [info for info in transport.list_packs() if info.key in sizes]
        assert sorted(info.key for info in listed) == sorted(sizes)
        for info in listed:
            assert info.size == sizes[info.key]
            # Stores keep their own clocks (an S3 server's): a generous bound.
            assert abs(info.mtime - started) < 3600, "mtime is seconds since the epoch"
        keys = [info.key for info in transport.list_packs()]
        assert keys == sorted(keys), "in key order"
        assert len(keys) == len(set(keys)), "each pack once"

    @spec("T-LIFE-2")
    def test_list_packs_pages_and_resumes_after_a_cursor(
        self, transport: Transport, salt: bytes
    ) -> None:
        packs = [make_pack(salt, f"page-{i}") for i in range(5)]
        for data, key in packs:
            transport.upload_pack(data, key)
        keys = {key for _, key in packs}
        everything = _mine(transport, keys)
        assert sorted(everything) == sorted(keys)
        assert _mine(transport, keys, page_size=2) == everything
        assert _mine(transport, keys, page_size=1) == everything
        cursor = everything[1]
        after = [i.key for i in transport.list_packs(after=cursor, page_size=2) if i.key in keys]
        assert after == everything[2:]
        for bad in (0, -1, True, 10_001, "2"):
            with pytest.raises(InvalidArgument):
                transport.list_packs(page_size=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            transport.list_packs(after=Hash.of(b"x"))  # type: ignore[arg-type]

    @spec("T-LIFE-3")
    def test_a_refused_upload_is_never_listed(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "refused", 4096)
        with pytest.raises(ProtocolError):
            transport.upload_pack_stream(key, [data[:100]], len(data))  # short stream
        with pytest.raises(ProtocolError):
            transport.upload_pack(data + b"x", key)  # wrong digest
        assert _mine(transport, {key}) == []

    @spec("T-LIFE-4")
    def test_delete_pack_is_idempotent_and_touches_nothing_else(
        self, transport: Transport, salt: bytes
    ) -> None:
        (gone, gone_key), (kept, kept_key) = make_pack(salt, "gone"), make_pack(salt, "kept")
        transport.upload_pack(gone, gone_key)
        transport.upload_pack(kept, kept_key)
        transport.delete_pack(gone_key)
        assert not transport.pack_exists(gone_key)
        with pytest.raises(PackNotFound):
            transport.download_pack(gone_key)
        assert _mine(transport, {gone_key, kept_key}) == [kept_key]
        transport.delete_pack(gone_key)  # again: absent is fine
        transport.delete_pack(make_pack(salt, "never")[1])
        assert transport.download_pack(kept_key) == kept
        transport.upload_pack(gone, gone_key)  # and it can be stored again
        assert transport.download_pack(gone_key) == gone
        with pytest.raises(InvalidArgument):
            transport.delete_pack(Hash.of(b"x"))  # type: ignore[arg-type]

    @spec("T-LIFE-10")
    def test_delete_packs_deletes_a_batch_as_one_by_one(
        self, transport: Transport, salt: bytes
    ) -> None:
        made = [make_pack(salt, f"batch{i}") for i in range(12)]
        for data, key in made:
            transport.upload_pack(data, key)
        gone = [key for _data, key in made[:8]]
        kept = {key for _data, key in made[8:]}
        never = make_pack(salt, "never")[1]
        transport.delete_packs([*gone, never, gone[0]])  # absent and repeated keys are fine
        assert _mine(transport, set(gone) | kept) == sorted(kept)
        for key in gone:
            assert not transport.pack_exists(key)
        for data, key in made[8:]:
            assert transport.download_pack(key) == data
        transport.delete_packs(gone)  # again: idempotent
        transport.delete_packs([])
        with pytest.raises(InvalidArgument):  # one bad key: nothing is deleted
            transport.delete_packs([*kept, Hash.of(b"x")])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument):
            transport.delete_packs([never] * (MAX_DELETE_BATCH + 1))
        assert _mine(transport, kept) == sorted(kept)
        data, key = made[0]
        transport.upload_pack(data, key)  # and a deleted pack can be stored again
        assert transport.download_pack(key) == data

    @spec("T-LIFE-5")
    def test_delete_ref_match_deletes_only_the_expected_value(
        self, transport: Transport, ns: str
    ) -> None:
        name, held, other = f"{ns}/match", value_of("held"), value_of("other")
        transport.write_ref(name, held)
        with pytest.raises(RefConflict) as caught:
            transport.delete_ref(name, RefWriteCondition.match(other))
        assert caught.value.current == held
        assert caught.value.name == name
        assert transport.read_ref(name) == held, "a refused delete deletes nothing"
        transport.delete_ref(name, RefWriteCondition.match(held))
        assert transport.read_ref(name) is None
        assert transport.list_refs(ns) == []
        with pytest.raises(RefConflict) as caught:
            transport.delete_ref(name, RefWriteCondition.match(held))
        assert caught.value.current is None
        transport.update_ref(name, RefWriteCondition.MISSING, other)  # absent again
        assert transport.read_ref(name) == other

    @spec("T-LIFE-6")
    def test_delete_ref_any_and_children(self, transport: Transport, ns: str) -> None:
        parent, child = f"{ns}/a", f"{ns}/a/b"
        transport.write_ref(parent, value_of("parent"))
        transport.write_ref(child, value_of("child"))
        transport.delete_ref(parent, RefWriteCondition.ANY)
        assert transport.read_ref(parent) is None
        assert transport.read_ref(child) == value_of("child"), "a child ref survives"
        assert [ref.name for ref in transport.list_refs(ns)] == ["a/b"]
        transport.delete_ref(parent, RefWriteCondition.ANY)  # absent: fine
        transport.delete_ref(child, RefWriteCondition.ANY)
        assert transport.list_refs(ns) == []
        transport.update_ref(parent, RefWriteCondition.MISSING, value_of("again"))
        assert transport.read_ref(parent) == value_of("again")

    @spec("T-LIFE-7")
    def test_delete_ref_refuses_bad_arguments_and_changes_nothing(
        self, transport: Transport, ns: str
    ) -> None:
        name = f"{ns}/kept"
        transport.write_ref(name, value_of("kept"))
        with pytest.raises(InvalidArgument):
            transport.delete_ref(name, RefWriteCondition.MISSING)
        with pytest.raises(InvalidArgument):
            transport.delete_ref(name, "any")  # type: ignore[arg-type]
        with pytest.raises(InvalidRef):
            transport.delete_ref(f"{ns}/bad..name/.x", RefWriteCondition.ANY)
        assert transport.read_ref(name) == value_of("kept")

    @spec("T-LIFE-8")
    def test_cas_deletes_race_cas_writes_with_one_winner(
        self, harness: Harness, transport: Transport, ns: str
    ) -> None:
        """Deleters and writers all expect the same value: exactly one of them wins."""
        workers = max(2, harness.race_workers)
        clients = [harness.open(None) for _ in range(workers)]
        try:
            for round_ in range(harness.race_rounds):
                name, start = f"{ns}/race-{round_}", value_of(f"start-{round_}")
                transport.write_ref(name, start)
                outcomes = _race_round(clients, name, start)
                winners = [i for i, won in outcomes if won]
                assert len(outcomes) == workers
                assert len(winners) == 1, f"round {round_}: winners {winners}"
                expected = None if winners[0] % 2 else value_of(f"w{winners[0]}")
                assert transport.read_ref(name) == expected
        finally:
            for client in clients:
                client.close()

    @spec("T-LIFE-9")
    def test_lost_acknowledgement_of_a_cas_delete_is_success(
        self, harness: Harness, ns: str
    ) -> None:
        inner = harness.open(RetryPolicy(retries=0))
        try:
            faulty = FaultyTransport(inner=inner, retry=RetryPolicy(sleep=lambda _: None))
            name, held = f"{ns}/lost-delete", value_of("held")
            inner.write_ref(name, held)
            faulty.plan = [Fault(lambda: ConnectionFailed("ack lost"), "after", "delete_ref")]
            faulty.delete_ref(name, RefWriteCondition.match(held))
            assert inner.read_ref(name) is None
            assert faulty.calls == ["delete_ref", "delete_ref", "read_ref"]
            # ...but a first-attempt conflict is final, and a ref re-created since is one.
            inner.write_ref(name, value_of("new"))
            faulty.plan = []
            with pytest.raises(RefConflict) as caught:
                faulty.delete_ref(name, RefWriteCondition.match(held))
            assert caught.value.current == value_of("new")
        finally:
            inner.close()

    @spec("T-LIFE-10")
    @pytest.mark.parametrize("verb", ["repair_pack", "repair_pack_stream"])
    def test_repair_replaces_a_corrupt_same_size_copy(
        self, transport: Transport, backdoor: Backdoor, salt: bytes, verb: str
    ) -> None:
        data, key = make_pack(salt, f"rotted-{verb}", 4096)
        transport.upload_pack(data, key)
        rotted = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, one byte flipped
        backdoor.write_pack_bytes(key, rotted)

        def upload(payload: bytes) -> None:
            if verb == "repair_pack":
                transport.repair_pack(payload, key)
            else:
                transport.repair_pack_stream(key, [payload], len(payload))

        with pytest.raises(ProtocolError):
            upload(data[:-1] + b"?")  # wrong bytes are refused even for a repair...
        assert backdoor.read_pack_bytes(key) == rotted, "...and replace nothing"
        upload(data)
        assert backdoor.read_pack_bytes(key) == data
        assert transport.download_pack(key) == data
        upload(data)  # a good copy: repairing again changes nothing
        assert transport.download_pack(key) == data
        absent, absent_key = make_pack(salt, f"absent-{verb}")
        transport.repair_pack(absent, absent_key)  # an absent pack: stored
        assert transport.download_pack(absent_key) == absent
        with pytest.raises(InvalidArgument):
            transport.repair_pack(data, Hash.of(data))  # type: ignore[arg-type]
