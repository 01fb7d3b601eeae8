"""Content-defined chunking: edits change few chunks; ids are the chunk bytes' BLAKE3."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import blake3
import pytest

from mkit_transport.errors import InvalidResponse
from mkit_transport.sync.chunking import ChunkParams, chunk_file
from mkit_transport.sync.chunklist import decode_chunk_list, encode_chunk_list

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
