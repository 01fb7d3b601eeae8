"""The push pipeline's moving parts: batched compression, the scan's order and hand-off,
packs of their own for large files, and determinism across all of it (PACK-3, SYNC-8)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import MemoryTransport, PackKey, RemoteError, pull, push
from mkit_transport.pack import (
    KIND_BLOB,
    KIND_TREE,
    PackWriter,
    prepare_object,
    prepare_objects,
)
from mkit_transport.sync import scan as scanner
from mkit_transport.sync.scan import HANDOFF_SIZE, ObjectSource, _hash_file, scan
from tests.support.sync_fixtures import describe, record_of, write_tree

REF = "refs/heads/main"
MIB = 1 << 20


def _items() -> list[tuple[int, bytes]]:
    rng = random.Random(7)
    items: list[tuple[int, bytes]] = [(KIND_BLOB, b""), (KIND_BLOB, b"x" * 10)]
    items += [(KIND_BLOB, b"word %d " % i * rng.randint(10, 3000)) for i in range(300)]
    items += [(KIND_BLOB, rng.randbytes(5000)), (KIND_TREE, b"ab" * 5000), (KIND_BLOB, b"y" * 65)]
    return items


@pytest.mark.parametrize("level", [1, 3, 19])
def test_batched_preparation_is_byte_identical_to_one_at_a_time(level: int) -> None:
    items = _items()
    one_by_one = [prepare_object(kind, data, level) for kind, data in items]
    assert prepare_objects(items, level, threads=2) == one_by_one  # zstd's batch call
    assert prepare_objects(items, level, threads=0) == one_by_one  # a one-core machine
    assert {o.codec for o in one_by_one} == {0, 1}  # both stored raw and compressed


def test_batched_preparation_refuses_a_bad_level() -> None:
    with pytest.raises(ValueError, match="level"):
        prepare_objects(_items(), 0, threads=2)


def test_hash_file_reads_exactly_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"z" * 100)
    grown = _hash_file(str(path), expected=10)  # stat said 10 bytes; it grew since
    shrunk = _hash_file(str(path), expected=5000)
    assert grown[:2] == shrunk[:2] == (bytes(PackKey.of(b"z" * 100)), 100)
    assert grown[2] is None and shrunk[2] == b"z" * 100


def test_scan_order_and_hand_off(tmp_path: Path) -> None:
    """Small files in walk order, then large files in walk order; eager ones early."""
    rng = random.Random(3)
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "big1").write_bytes(rng.randbytes(3 * MIB))
    (root / "a" / "small1").write_bytes(b"s1" * 10)
    (root / "b").mkdir()
    (root / "b" / "big2").write_bytes(rng.randbytes(2 * MIB))
    (root / "b" / "mid").write_bytes(rng.randbytes(HANDOFF_SIZE + 1))
    (root / "c").write_bytes(b"s2" * 10)
    seen: list[tuple[str, ObjectSource]] = []

    def on_blob(oid: bytes, src: ObjectSource) -> None:
        seen.append((os.path.relpath(src.path or "", root), src))

    snap = scan(root, on_blob=on_blob)
    assert [name for name, _ in seen] == ["a/small1", "b/mid", "c", "a/big1", "b/big2"]
    handed = {name: src.data for name, src in seen}
    assert handed["a/small1"] == b"s1" * 10 and handed["c"] == b"s2" * 10
    assert handed["b/mid"] is None and handed["a/big1"] is None  # over HANDOFF_SIZE
    assert all(src.data is None for src in snap.objects.values() if src.kind == KIND_BLOB)
    seen.clear()
    again = scan(root, on_blob=on_blob, eager=2 * MIB)
    assert again.root == snap.root and list(again.objects) == list(snap.objects)
    names = [name for name, _ in seen]
    assert sorted(names) == ["a/big1", "a/small1", "b/big2", "b/mid", "c"]
    assert [n for n in names if "big" not in n] == ["a/small1", "b/mid", "c"]


def test_an_early_hand_off_leaves_the_snapshot_order_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eager file handed over ahead of its turn keeps its walk-order place in objects."""
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "big").write_bytes(random.Random(5).randbytes(3 * MIB))
    (root / "a" / "small").write_bytes(b"first small")
    (root / "b").mkdir()
    (root / "b" / "small").write_bytes(b"second small")
    plain = scan(root)
    # The scan's hashing thread runs each job only once ``release`` is set, so the big
    # file cannot be hashed (and handed over) before "a/small"; its future is kept.
    release = threading.Event()
    submitted: list[Future[Any]] = []

    class GatedHasher(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            def gated() -> Any:
                if not release.wait(120):  # a hang guard
                    raise TimeoutError("the hash job was never released")
                return fn(*args, **kwargs)

            future = super().submit(gated)
            submitted.append(future)
            return future

    monkeypatch.setattr(scanner, "ThreadPoolExecutor", GatedHasher)
    seen: list[str] = []

    def slow_on_blob(oid: bytes, src: ObjectSource) -> None:
        seen.append(os.path.relpath(src.path or "", root))
        if seen == ["a/small"]:
            release.set()  # the big file's hash runs and finishes now: handed over next
            done, pending = wait(submitted, timeout=120)  # a 3 MiB hash: a hang guard
            assert len(submitted) == 1 and not pending, (submitted, done)

    early = scan(root, on_blob=slow_on_blob, eager=2 * MIB)
    assert seen == ["a/small", "a/big", "b/small"]  # handed over ahead of its turn...
    assert list(early.objects) == list(plain.objects)  # ...but recorded in its place


def _big_tree(root: Path) -> Path:
    """Small files plus files that get packs of their own at pack_size=1 MiB."""
    write_tree(root, files=80)
    rng = random.Random(11)
    for i in range(4):
        data = rng.randbytes(2 * MIB) if i % 2 else b"squeeze %d " % i * (2 * MIB // 10)
        (root / f"solo{i}.bin").write_bytes(data)
    (root / "d1" / "mid.bin").write_bytes(rng.randbytes(MIB + 7))  # hashed aside, solo too
    (root / "d2" / "shared.bin").write_bytes(rng.randbytes(300 << 10))  # shares a pack
    return root


def test_first_push_packs_are_deterministic_with_solo_packs(tmp_path: Path) -> None:
    src = _big_tree(tmp_path / "src")
    keys = []
    for _ in range(3):
        remote = MemoryTransport()
        report = push(src, remote, REF, pack_size=MIB)
        assert report.packs_uploaded >= 6
        keys.append([bytes(p.key) for p in record_of(remote, REF).packs])
    assert sorted(keys[0]) == sorted(keys[1]) == sorted(keys[2])
    assert keys[0][0] == keys[1][0] == keys[2][0]  # the tree pack is listed first


class _FailAt(MemoryTransport):
    """Fails the ``fail_at``-th streamed pack upload (after the others landed)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at, self.uploads = fail_at, 0
        self.landed: list[PackKey] = []

    def upload_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self.uploads += 1
        if self.uploads == self.fail_at:
            raise RemoteError("injected: disk full")
        super().upload_pack_stream(key, chunks, total)
        self.landed.append(key)


def test_interrupted_first_push_resumes_skipping_every_pack_that_landed(tmp_path: Path) -> None:
    src = _big_tree(tmp_path / "src")
    remote = _FailAt(fail_at=4)
    with pytest.raises(RemoteError, match="injected"):
        push(src, remote, REF, pack_size=MIB, concurrency=1)
    assert remote.read_ref(REF) is None
    landed = {bytes(key) for key in remote.landed}
    assert len(landed) == 3
    remote.fail_at = 0
    resumed = push(src, remote, REF, pack_size=MIB, concurrency=1)
    assert resumed.packs_skipped == 3
    assert landed <= {bytes(p.key) for p in record_of(remote, REF).packs}
    pull(remote, REF, tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    assert describe(tmp_path / "out") == describe(src)


def test_a_large_file_packs_the_same_with_one_or_more_zstd_workers(tmp_path: Path) -> None:
    """One-core machines use one worker, not zstd's single-threaded mode (other bytes)."""
    path = tmp_path / "big"
    path.write_bytes(b"squeeze me %d " * 400_000 % tuple(range(400_000)))
    oid = bytes(PackKey.of(path.read_bytes()))
    keys = []
    for threads in (1, 2, 4):
        with open(tmp_path / f"pack{threads}", "w+b") as out:
            writer = PackWriter(out, level=3, threads=threads)
            assert writer.add_file(KIND_BLOB, oid, path.stat().st_size, str(path))
            summary = writer.finish()
        assert summary.entries[0].stored_len < path.stat().st_size  # compressed
        keys.append(summary.key)
    assert keys[0] == keys[1] == keys[2]
