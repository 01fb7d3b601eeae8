"""The chunk list object of a chunked file (spec/SPEC-SYNC.md section 8).

A chunked file's tree entry (type 4) names a chunk list: the whole file's size
and content id (what a pull verifies the assembled file against, end to end) and
its chunks in order. The scan writes one per large file and a push packs it with
the trees. Readers check lengths and their sum, never the cut points, so lists
made with other chunker parameters stay readable.
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import InvalidResponse
from .chunking import ChunkedFile

__all__ = ["MAX_CHUNK_LENGTH", "MAX_CHUNK_LIST_SIZE", "decode_chunk_list", "encode_chunk_list"]

_MAGIC: Final = b"MKCL"
_VERSION: Final = 1
_HEAD = struct.Struct("<4sBBHQ32sI")
_ROW = struct.Struct("<32sI")
#: Largest chunk a reader accepts (any chunker's max, with room to spare).
MAX_CHUNK_LENGTH: Final = 16 << 20
#: Most chunks a list may declare (a 4 GiB file of 64 KiB chunks), capped before parsing.
_MAX_CHUNKS: Final = 1 << 16
MAX_CHUNK_LIST_SIZE: Final = _HEAD.size + _MAX_CHUNKS * _ROW.size


def encode_chunk_list(chunked: ChunkedFile) -> bytes:
    """Return the canonical bytes of ``chunked``'s chunk list."""
    head = _HEAD.pack(_MAGIC, _VERSION, 0, 0, chunked.size, chunked.id, len(chunked.chunks))
    return head + b"".join(_ROW.pack(cid, length) for cid, length in chunked.chunks)


def decode_chunk_list(data: bytes) -> ChunkedFile:
    """Parse a chunk list, refusing anything malformed (InvalidResponse)."""
    if len(data) > MAX_CHUNK_LIST_SIZE:
        raise InvalidResponse(f"chunk list of {len(data)} bytes is over the cap")
    try:
        magic, version, flags, reserved, size, oid, count = _HEAD.unpack_from(data, 0)
    except struct.error as exc:
        raise InvalidResponse(f"chunk list is truncated: {exc}") from exc
    if magic != _MAGIC or version != _VERSION or flags or reserved:
        raise InvalidResponse("not a version-1 chunk list")
    if count < 1 or len(data) != _HEAD.size + count * _ROW.size:
        raise InvalidResponse(f"chunk list declares {count} chunks in {len(data)} bytes")
    chunks = tuple(_ROW.iter_unpack(data[_HEAD.size :]))
    if any(not 1 <= length <= MAX_CHUNK_LENGTH for _, length in chunks):
        raise InvalidResponse("chunk list has a chunk length out of range")
    if sum(length for _, length in chunks) != size:
        raise InvalidResponse(f"chunk list lengths do not add up to its size {size}")
    return ChunkedFile(oid, size, chunks)
