"""The pack format: round trips, random access, and every refusal the reader owes."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path

import blake3
import pytest
import zstandard

from mkit_transport import InvalidResponse, PackKey, PayloadTooLarge
from mkit_transport.pack import (
    CODEC_RAW,
    CODEC_ZSTD,
    KIND_BLOB,
    KIND_TREE,
    MIN_PACK,
    PackFile,
    PackVerifier,
    PackWriter,
    PreparedObject,
    verify_pack_file,
)
from tests.support.pack_fixtures import one_entry_pack, reseal, verify


def build(objects: list[tuple[int, bytes]], level: int = 3) -> bytes:
    out = io.BytesIO()
    writer = PackWriter(out, level=level)
    for kind, data in objects:
        if len(data) > 1 << 20:
            halves = [data[: len(data) // 2], data[len(data) // 2 :]]
            writer.add_stream(kind, len(data), partial(list, halves))
        else:
            writer.add_bytes(kind, data)
    summary = writer.finish()
    data = out.getvalue()
    assert summary.size == len(data)
    return data


SAMPLE = [
    (KIND_TREE, b"a tree"),
    (KIND_BLOB, b""),
    (KIND_BLOB, b"compressible " * 1000),
    (KIND_BLOB, os.urandom(5000)),
    (KIND_BLOB, b"big and compressible " * 100_000),
    (KIND_BLOB, os.urandom(3 << 20)),
]


def test_round_trip_in_any_chunking_and_by_random_access(tmp_path: Path) -> None:
    data = build(SAMPLE)
    for size in (1, 7, 4096, 1 << 20, len(data)):
        summary = verify(data, size) if size > 1 else None
        if summary is not None:
            assert len(summary.entries) == len(SAMPLE)
    path = tmp_path / "p.pack"
    path.write_bytes(data)
    assert verify_pack_file(path).size == len(data)
    with PackFile(path) as pack:
        assert pack.count == len(SAMPLE)
        for kind, raw in SAMPLE:
            oid = blake3.blake3(raw).digest()
            got: list[bytes] = []
            assert pack.read_object(oid, got.append) == (kind, len(raw))
            assert b"".join(got) == raw
        assert pack.find(bytes(32)) is None
        with pytest.raises(KeyError):
            pack.read_object(bytes(32), None)


def test_compression_only_when_it_pays_and_level_is_honoured() -> None:
    summary = verify(build(SAMPLE))
    stored = {e.raw_len: e.stored_len for e in summary.entries}
    assert stored[13000] < 1000 and stored[5000] == 5000 and stored[3 << 20] == 3 << 20
    assert stored[2_100_000] < 100_000
    text = [(KIND_BLOB, bytes(range(256)) * 40 + b"tail %d" % i) for i in range(3)]
    assert len(build(text, level=19)) <= len(build(text, level=1))
    with pytest.raises(ValueError):
        PackWriter(io.BytesIO(), level=0)


def test_same_objects_same_pack() -> None:
    assert build(SAMPLE) == build(SAMPLE)  # so an interrupted push finds its packs


def test_duplicates_are_stored_once() -> None:
    out = io.BytesIO()
    writer = PackWriter(out)
    writer.add_bytes(KIND_BLOB, b"same")
    writer.add_bytes(KIND_BLOB, b"same")
    big = b"x" * (2 << 20)
    writer.add_stream(KIND_BLOB, len(big), lambda: [big])
    writer.add_stream(KIND_BLOB, len(big), lambda: [big])
    assert len(writer.finish().entries) == 2
    assert len(verify(out.getvalue()).entries) == 2


def test_empty_pack() -> None:
    data = build([])
    assert len(data) == MIN_PACK and verify(data).entries == ()


BAD: dict[str, Callable[[bytes], bytes]] = {
    "magic": lambda d: b"XXXX" + d[4:],
    "version": lambda d: reseal(bytearray(d[:4] + b"\x02" + d[5:])),
    "trailer": lambda d: d[:-1] + bytes([d[-1] ^ 1]),
    "truncated": lambda d: d[:-1],
    "trailing bytes": lambda d: d + b"\0",
    "unknown kind": lambda d: reseal(bytearray(d[:12] + b"\x09" + d[13:])),
    "unknown codec": lambda d: reseal(bytearray(d[:13] + b"\x07" + d[14:])),
    "object bytes": lambda d: reseal(bytearray(d[:62] + bytes([d[62] ^ 1]) + d[63:])),
    "short": lambda d: d[:20],
}


@pytest.mark.parametrize("damage", list(BAD))
def test_damaged_packs_are_refused_by_both_readers(damage: str, tmp_path: Path) -> None:
    data = BAD[damage](build([(KIND_TREE, b"a tree object"), (KIND_BLOB, b"blob " * 50)]))
    with pytest.raises(InvalidResponse):
        verify(data)
    path = tmp_path / "bad.pack"
    path.write_bytes(data)
    with pytest.raises(InvalidResponse), PackFile(path) as pack:
        for oid in list(pack.ids()):
            pack.read_object(oid, None)


def test_a_zstd_bomb_is_stopped_at_its_declared_size() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(256 << 20))  # 256 MiB of zeros, ~8 KB
    data = one_entry_pack(CODEC_ZSTD, bytes(32), 1000, bomb)
    with pytest.raises(InvalidResponse, match="inflates past"):
        verify(data, 1 << 20)


def test_declared_sizes_over_the_caps_are_refused_before_reading() -> None:
    huge = one_entry_pack(CODEC_ZSTD, bytes(32), 1 << 40, b"x")
    with pytest.raises(PayloadTooLarge):
        verify(huge)
    many = struct.pack("<4sBBHI", b"MKPK", 1, 0, 0, 1 << 30)
    with pytest.raises(PayloadTooLarge):
        PackVerifier().feed(many)
    with pytest.raises(PayloadTooLarge):
        PackVerifier(max_entries=1).feed(build([(KIND_BLOB, b"a"), (KIND_BLOB, b"b")]))


def test_a_raw_entry_must_store_exactly_its_length() -> None:
    data = one_entry_pack(CODEC_RAW, bytes(32), 5, b"abc")
    with pytest.raises(InvalidResponse):
        verify(data)


def test_prepared_objects_are_checked_on_write() -> None:
    writer = PackWriter(io.BytesIO())
    with pytest.raises(ValueError):
        writer.add_prepared(PreparedObject(7, bytes(32), 1, CODEC_RAW, b"x"))


@pytest.mark.parametrize("damage", [d for d in BAD if d != "trailer"])
def test_a_verifier_told_the_key_still_checks_structure_and_every_object(damage: str) -> None:
    """``key=``: the caller checks the whole-pack digest (a download does), nothing else is
    given up: every damage but a bad trailer (which the key check catches) still fails."""
    good = build([(KIND_TREE, b"a tree object"), (KIND_BLOB, b"blob " * 50)])
    key = PackKey(blake3.blake3(good).digest())
    verifier = PackVerifier(key=key)
    verifier.feed(good)
    assert verifier.finish().key == key
    with pytest.raises(InvalidResponse):
        told = PackVerifier(key=key)
        for piece in (BAD[damage](good)[i : i + 7] for i in range(0, len(good) + 7, 7)):
            told.feed(piece)
        told.finish()


def test_a_pull_refuses_a_pack_whose_trailer_alone_is_damaged(tmp_path: Path) -> None:
    """The one damage a keyed verifier does not see itself is caught by the key check."""
    from mkit_transport import MemoryTransport
    from mkit_transport.sync.progress import Meter
    from mkit_transport.sync.restore import verified_chunks

    good = build([(KIND_BLOB, b"blob " * 50)])
    key = PackKey(blake3.blake3(good).digest())
    remote = MemoryTransport()
    remote.upload_pack(good, key)
    assert b"".join(verified_chunks(remote, key, "remote", Meter(None), objects=True)) == good
    remote.store.packs[key] = BAD["trailer"](good)  # damaged at rest, under the same key
    with pytest.raises(InvalidResponse, match="corrupt on the remote"):
        for _chunk in verified_chunks(remote, key, "remote", Meter(None), objects=True):
            pass
