"""Content-defined chunking: edits change few chunks; ids are the chunk bytes' BLAKE3."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import cast

import blake3
import pytest

from mkit_transport.errors import InvalidArgument, InvalidResponse
from mkit_transport.sync.chunking import ChunkParams, chunk_file
from mkit_transport.sync.chunklist import decode_chunk_list, encode_chunk_list
from mkit_transport.sync.materialise import list_files
from mkit_transport.sync.model import (
    TYPE_CHUNKED,
    TYPE_DIR,
    TYPE_FILE,
    TYPE_SYMLINK,
    TreeEntry,
    decode_tree,
    encode_tree,
)
from mkit_transport.sync.objects import PackObjects

SMALL = ChunkParams(min_size=4 << 10, avg_size=16 << 10, max_size=64 << 10)


def _data(n: int, seed: int = 1) -> bytearray:
    return bytearray(random.Random(seed).randbytes(n))


def test_chunks_cover_the_file_and_are_named_by_their_bytes(tmp_path: Path) -> None:
    data = _data(1 << 20)
    p = tmp_path / "f"
    p.write_bytes(data)
    got = chunk_file(str(p), SMALL)
    assert got.size == len(data)
    assert got.id == blake3.blake3(bytes(data)).digest()
    assert len(got.chunks) > 16
    pos = 0
    for cid, length in got.chunks:
        assert SMALL.min_size <= length <= SMALL.max_size or pos + length == len(data)
        assert cid == blake3.blake3(bytes(data[pos : pos + length])).digest()
        pos += length
    assert pos == len(data)


def test_a_flipped_byte_or_an_insert_changes_few_chunks(tmp_path: Path) -> None:
    data = _data(2 << 20)
    p = tmp_path / "f"
    p.write_bytes(data)
    before = {cid for cid, _ in chunk_file(str(p), SMALL).chunks}
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    p.write_bytes(flipped)
    after = chunk_file(str(p), SMALL).chunks
    assert sum(1 for cid, _ in after if cid not in before) <= 2
    p.write_bytes(b"x" * 100 + data)
    shifted = chunk_file(str(p), SMALL).chunks
    assert sum(1 for cid, _ in shifted if cid not in before) <= 2
    assert len(before) > 64


def test_an_empty_file_has_no_chunks(tmp_path: Path) -> None:
    p = tmp_path / "e"
    p.write_bytes(b"")
    got = chunk_file(str(p))
    assert (got.size, got.chunks, got.id) == (0, (), blake3.blake3(b"").digest())


def test_chunk_list_round_trips_and_refuses_malformed(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(_data(1 << 20))
    chunked = chunk_file(str(p), SMALL)
    data = encode_chunk_list(chunked)
    assert decode_chunk_list(data) == chunked
    bad = [
        data[:-1],  # truncated
        data + b"\0",  # trailing bytes
        b"MKCX" + data[4:],  # magic
        data[:4] + b"\x02" + data[5:],  # version
        data[:8] + struct.pack("<Q", chunked.size + 1) + data[16:],  # sum differs
        data[:48] + struct.pack("<I", 0),  # no chunks
        data[:-4] + struct.pack("<I", 0),  # a zero-length chunk
    ]
    for blob in bad:
        with pytest.raises(InvalidResponse):
            decode_chunk_list(blob)


_V1_GOLDEN = (  # made by the version-1 writer before chunked files existed
    "4d4b5452010000000300000001006101a40100000300000000000000010101010101010101010101"
    "010101010101010101010101010101010101010101006402ed010000000000000000000002020202"
    "0202020202020202020202020202020202020202020202020202020201006c030000000001000000"
    "000000000303030303030303030303030303030303030303030303030303030303030303"
)
_V1_ENTRIES = [
    TreeEntry(b"a", TYPE_FILE, 0o644, 3, b"\x01" * 32),
    TreeEntry(b"d", TYPE_DIR, 0o755, 0, b"\x02" * 32),
    TreeEntry(b"l", TYPE_SYMLINK, 0, 1, b"\x03" * 32),
]


def test_trees_without_chunked_files_keep_the_version_1_bytes_of_the_old_writer() -> None:
    assert encode_tree(_V1_ENTRIES).hex() == _V1_GOLDEN
    assert decode_tree(bytes.fromhex(_V1_GOLDEN)) == _V1_ENTRIES


def test_a_chunked_entry_makes_a_version_2_tree_and_only_there() -> None:
    entries = [*_V1_ENTRIES, TreeEntry(b"z", TYPE_CHUNKED, 0o600, 9 << 20, b"\x04" * 32)]
    data = encode_tree(entries)
    assert data[4] == 2
    assert decode_tree(data) == entries
    with pytest.raises(InvalidResponse):  # type 4 in a version-1 tree
        decode_tree(data[:4] + b"\x01" + data[5:])
    with pytest.raises(InvalidResponse):  # a version-2 tree needs a chunked entry
        decode_tree(bytes.fromhex(_V1_GOLDEN[:8] + "02" + _V1_GOLDEN[10:]))


class _OneTree:
    """Serves one tree (the only call a walk makes before it meets a chunked entry)."""

    def __init__(self, entries: list[TreeEntry]) -> None:
        self.entries = entries

    def tree(self, oid: bytes) -> list[TreeEntry]:
        return self.entries


def test_show_lists_a_chunked_entry_as_a_file_with_its_size() -> None:
    entry = TreeEntry(b"big", TYPE_CHUNKED, 0o600, 9 << 20, b"\x04" * 32)
    listed = list_files(cast(PackObjects, _OneTree([entry])), b"\0" * 32)
    assert [(f.path, f.type, f.mode, f.size) for f in listed] == [("big", "file", 0o600, 9 << 20)]


def _one_pass(data: bytes, params: ChunkParams) -> list[tuple[bytes, int]]:
    """The cut points of one FastCDC pass over the whole file (the reference)."""
    from pyfastcdc import FastCDC

    cdc = FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=1,
        seed=0,
    )
    return [
        (blake3.blake3(data[c.offset : c.offset + c.length]).digest(), c.length)
        for c in cdc.cut_buf(data)
    ]


@pytest.mark.parametrize("kind", ["random", "zeros", "mixed"])
@pytest.mark.parametrize("size", [0, 1, (64 << 10) * 6, 1_000_003, (1 << 20) + (64 << 10) * 2])
def test_mapping_window_by_window_cuts_exactly_as_one_pass(
    tmp_path: Path, kind: str, size: int
) -> None:
    # Zeros cut every max_size bytes, so chunk ends fall exactly on window ends: the
    # case where a window could cut a chunk short if the boundary rule were wrong.
    data = {
        "random": bytes(_data(size)),
        "zeros": bytes(size),
        "mixed": bytes(_data(size // 2)) + bytes(size - size // 2),
    }[kind]
    p = tmp_path / "f"
    p.write_bytes(data)
    want = _one_pass(data, SMALL)
    for window in (SMALL.max_size + 1, 2 * SMALL.max_size, 200_000, 1 << 20, 64 << 20):
        got = chunk_file(str(p), SMALL, window=window)
        assert list(got.chunks) == want, f"window {window}"
        assert got.size == size
        assert got.id == blake3.blake3(data).digest()


def test_a_window_no_longer_than_a_chunk_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    with pytest.raises(InvalidArgument, match="must exceed max_size"):
        chunk_file(str(p), SMALL, window=SMALL.max_size)
