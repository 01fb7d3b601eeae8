"""Content-defined chunking of large files (spec/SPEC-SYNC.md section 8).

A large file is cut into chunks by FastCDC (the maintained ``pyfastcdc`` package;
never a chunker written in Python: it cuts at ~3.8 GB/s here, so chunking costs
almost nothing beside BLAKE3 and zstd). Cut points depend only on the bytes
around them, so a byte flipped or inserted changes one or two chunks, and the
rest keep their ids: that is what lets a push send only what changed.

The file is read through read-only mmap windows of :data:`WINDOW` bytes: in each,
the chunker finds the cut points, then BLAKE3 hashes each chunk and the whole file
(its content id, checked end to end by a pull). A window is unmapped before the
next is mapped, so the pages a push keeps resident stay bounded by the window,
whatever the file's size (one mapping of the whole file made the process's peak
RSS as large as the file). Windows give the same cut points as one pass: a cut is
kept only if it ends before the window does, and the next window starts at the
first cut not kept, which FastCDC finds from that offset exactly as in one pass
(a chunk's end depends only on its start and the next ``max_size`` bytes).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Final

import blake3
from pyfastcdc import FastCDC

from ..errors import InvalidArgument
from ..hashes import Hasher

__all__ = [
    "CHUNK_AVG",
    "CHUNK_MAX",
    "CHUNK_MIN",
    "DEFAULT_CHUNKING",
    "WINDOW",
    "ChunkParams",
    "ChunkedFile",
    "chunk_file",
]

#: Chosen parameters (SPEC-SYNC section 8): restic's order of size (512 KiB / 1 MiB /
#: 8 MiB), with a smaller minimum so an edit costs about one average chunk.
CHUNK_MIN: Final = 256 << 10
CHUNK_AVG: Final = 1 << 20
CHUNK_MAX: Final = 4 << 20
#: Bytes of a file mapped at once while chunking (four max-size chunks per window).
#: Mapped pages count in the process's RSS: 64 MiB windows put a push of the mixed
#: bench tree at 164-179 MiB peak (restic: 170), 16 MiB at 121-127 MiB and no slower
#: (redoing the cut that reaches a window's end costs a few MB of chunking at GB/s).
WINDOW: Final = 16 << 20


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """FastCDC sizes; tests pass small ones to exercise chunking on small files."""

    min_size: int = CHUNK_MIN
    avg_size: int = CHUNK_AVG
    max_size: int = CHUNK_MAX


#: The parameters a push uses (SPEC-SYNC section 8).
DEFAULT_CHUNKING: Final = ChunkParams()


@dataclass(frozen=True, slots=True)
class ChunkedFile:
    """A file's content id and size, and its chunks as ``(id, length)`` in order."""

    id: bytes
    size: int
    chunks: tuple[tuple[bytes, int], ...]


def _cuts(cdc: FastCDC, view: memoryview) -> list[tuple[int, int]]:
    """The cut points as ``(offset, length)``; the chunker's views die with this call."""
    return [(c.offset, c.length) for c in cdc.cut_buf(view)]


def chunk_file(
    path: str, params: ChunkParams = ChunkParams(), *, window: int = WINDOW
) -> ChunkedFile:
    """Cut ``path`` into content-defined chunks and hash it whole, in one read pass.

    ``window`` (bytes mapped at once) must exceed ``params.max_size``; tests pass a
    small one to prove the cut points do not depend on it.
    """
    if window <= params.max_size:
        raise InvalidArgument(f"window {window} must exceed max_size {params.max_size}")
    cdc = FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=1,
        seed=0,
    )
    whole = Hasher()
    chunks: list[tuple[bytes, int]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = 0
        while start < size:
            start_next = start
            base = start - start % mmap.ALLOCATIONGRANULARITY
            end = min(size, start + window)
            # Every view into the mmap (ours, the chunker's) is released before it closes.
            with (
                mmap.mmap(f.fileno(), end - base, offset=base, access=mmap.ACCESS_READ) as mm,
                memoryview(mm) as mapped,
                mapped[start - base :] as view,
            ):
                for offset, length in _cuts(cdc, view):
                    if end < size and offset + length >= end - start:
                        break  # may be cut short by the window: the next one redoes it
                    with view[offset : offset + length] as part:
                        whole.update(part)
                        chunks.append((blake3.blake3(part).digest(), length))
                    start_next = start + offset + length
                assert start_next > start, "a window shorter than one chunk"
                start = start_next
    return ChunkedFile(bytes(whole.pack_key()), whole.length, tuple(chunks))
