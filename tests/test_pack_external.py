"""The pack fast paths: files spliced in (not spooled), structure-only verification,
one-shot small objects and concurrent reads. Each keeps every check of the slow path."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard

from mkit_transport import InvalidResponse
from mkit_transport.hashes import Hasher
from mkit_transport.pack import (
    CODEC_RAW,
    CODEC_ZSTD,
    KIND_BLOB,
    TRAILER_SIZE,
    PackFile,
    PackVerifier,
    PackWriter,
    iter_pack,
)
from mkit_transport.pack import verifier as verifier_module
from tests.support.pack_fixtures import one_entry_pack, verify


def _oid(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    contents = {
        "noise.bin": os.urandom(3 << 20),
        "text.txt": b"compressible line\n" * 200_000,
        "noise2.bin": os.urandom((2 << 20) + 17),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    return contents


def test_incompressible_files_are_spliced_in_not_copied(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    spool = io.BytesIO()
    writer = PackWriter(spool)
    writer.add_bytes(KIND_BLOB, b"small object " * 100)
    for name, data in files.items():
        assert writer.add_file(KIND_BLOB, _oid(data), len(data), str(tmp_path / name))
    assert not writer.add_file(KIND_BLOB, _oid(files["noise.bin"]), 3 << 20, "/nonexistent")
    summary = writer.finish()
    assert [os.path.basename(e.path) for e in writer.externals] == ["noise.bin", "noise2.bin"]
    spooled = len(spool.getvalue())
    assert spooled < summary.size - (5 << 20)  # the random files are not in the spool
    pack = b"".join(iter_pack(spool, writer.externals))
    assert len(pack) == summary.size
    whole = Hasher()
    whole.update(pack)
    assert verify(pack, 1 << 16).key == summary.key == whole.pack_key()
    path = tmp_path / "p.pack"
    path.write_bytes(pack)
    with PackFile(path) as reader:
        for data in files.values():
            got: list[bytes] = []
            reader.read_object(_oid(data), got.append)
            assert b"".join(got) == data
    stored = {e.raw_len: e.stored_len for e in summary.entries}
    assert stored[len(files["text.txt"])] < 100_000  # compressed through the spool


def test_same_files_same_pack_key(tmp_path: Path, files: dict[str, bytes]) -> None:
    def key() -> bytes:
        writer = PackWriter(io.BytesIO())
        for name, data in files.items():
            assert writer.add_file(KIND_BLOB, _oid(data), len(data), str(tmp_path / name))
        return bytes(writer.finish().key)

    assert key() == key()


def test_a_file_changed_after_it_was_added_fails_the_seal(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    writer = PackWriter(io.BytesIO())
    data = files["noise.bin"]
    assert writer.add_file(KIND_BLOB, _oid(data), len(data), str(tmp_path / "noise.bin"))
    (tmp_path / "noise.bin").write_bytes(os.urandom(len(data)))  # same size, new bytes
    with pytest.raises(OSError, match="changed while it was being packed"):
        writer.finish()
    shrunk = PackWriter(io.BytesIO())
    assert shrunk.add_file(KIND_BLOB, _oid(data), len(data), str(tmp_path / "noise.bin"))
    (tmp_path / "noise.bin").write_bytes(data[:100])
    with pytest.raises(OSError, match="changed"):
        shrunk.finish()


def test_a_compressible_file_that_does_not_match_its_id_is_refused(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    writer = PackWriter(io.BytesIO())
    with pytest.raises(OSError, match="changed"):
        writer.add_file(KIND_BLOB, bytes(32), len(files["text.txt"]), str(tmp_path / "text.txt"))


def test_structure_only_verification_leaves_objects_to_the_reader(tmp_path: Path) -> None:
    raw = b"payload " * 100
    bad = one_entry_pack(CODEC_RAW, bytes(32), len(raw), raw)  # id does not match
    assert verify(bad, verifier=PackVerifier(objects=False))  # structure and trailer are fine
    with pytest.raises(InvalidResponse, match="hash"):
        verify(bad)
    path = tmp_path / "bad.pack"
    path.write_bytes(bad)
    with PackFile(path, check_trailer=False) as pack, pytest.raises(InvalidResponse):
        pack.read_object(bytes(32), None)
    broken = bytearray(bad)
    broken[-1] ^= 1
    with pytest.raises(InvalidResponse, match="trailer"):
        verify(bytes(broken), verifier=PackVerifier(objects=False))


def test_small_zstd_entries_are_checked_in_one_shot(tmp_path: Path) -> None:
    raw = b"abc" * 1000
    cases = {
        "size lie": (zstandard.ZstdCompressor().compress(raw), len(raw) - 1, "declares"),
        "two frames": (zstandard.ZstdCompressor().compress(raw) * 2, len(raw), "unused"),
        "no size": (
            zstandard.ZstdCompressor(write_content_size=False).compress(raw),
            len(raw),
            None,
        ),
    }
    for name, (frame, raw_len, error) in cases.items():
        path = tmp_path / f"{name}.pack"
        path.write_bytes(one_entry_pack(CODEC_ZSTD, _oid(raw), raw_len, frame))
        with PackFile(path) as pack:
            if error is None:  # a frame without its size goes through the bounded stream
                got: list[bytes] = []
                assert pack.read_object(_oid(raw), got.append) == (KIND_BLOB, len(raw))
                assert b"".join(got) == raw
            else:
                with pytest.raises(InvalidResponse, match=error):
                    pack.read_object(_oid(raw), None)


def test_objects_read_from_many_threads_at_once(tmp_path: Path) -> None:
    objects = [os.urandom(100 + i) if i % 2 else b"text %d " % i * 500 for i in range(200)]
    objects.append(os.urandom(3 << 20))
    spool = io.BytesIO()
    writer = PackWriter(spool)
    for data in objects:
        if len(data) > 1 << 20:
            writer.add_stream(KIND_BLOB, len(data), partial(list, [data]))
        else:
            writer.add_bytes(KIND_BLOB, data)
    writer.finish()
    path = tmp_path / "p.pack"
    path.write_bytes(spool.getvalue())

    with PackFile(path) as pack:

        def read(data: bytes) -> bool:
            got: list[bytes] = []
            pack.read_object(_oid(data), got.append)
            return b"".join(got) == data

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read, objects * 3))


class _CountingBlake3:
    """Stands in for the ``blake3`` module inside the verifier: counts what it hashes."""

    def __init__(self) -> None:
        self.made = 0  # hashers started (copies of one are not counted)
        self.hashed = 0  # bytes fed to any of them or their copies

    def blake3(self, data: bytes = b"", **kwargs: Any) -> _CountedHasher:
        self.made += 1
        self.hashed += len(data)
        return _CountedHasher(self, blake3.blake3(data, **kwargs))


class _CountedHasher:
    def __init__(self, counter: _CountingBlake3, state: Any) -> None:
        self.counter, self.state = counter, state

    def update(self, data: bytes | bytearray | memoryview) -> _CountedHasher:
        self.counter.hashed += memoryview(data).nbytes
        self.state.update(data)
        return self

    def copy(self) -> _CountedHasher:
        return _CountedHasher(self.counter, self.state.copy())

    def digest(self, *args: Any, **kwargs: Any) -> bytes:
        return bytes(self.state.digest(*args, **kwargs))


def test_a_verified_pack_key_needs_one_hash_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"x" * 5000
    data = one_entry_pack(CODEC_RAW, _oid(raw), len(raw), raw)
    counter = _CountingBlake3()
    monkeypatch.setattr(verifier_module, "blake3", counter)
    summary = verify(data, 7)
    # one pass: a single hasher saw each byte once (the trailer checked against a copy)
    assert (counter.made, counter.hashed) == (1, len(data))
    hasher = Hasher()
    hasher.update(data)
    assert summary.key == hasher.pack_key()
    assert summary.size == len(data)
    assert data[-TRAILER_SIZE:] == blake3.blake3(data[:-TRAILER_SIZE]).digest()
