"""The pack layout (spec/SPEC-PACK.md): constants, caps, and the checks both readers share.

Everything here is a pure function of bytes: the writer, the streaming verifier and
the random-access reader agree on the layout because they take it from one place.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidResponse, PayloadTooLarge
from ..hashes import PackKey
from ..limits import PACK_BODY_LIMIT

MAGIC: Final = b"MKPK"
END_MAGIC: Final = b"MKPE"
VERSION: Final = 1
KIND_BLOB: Final = 1
KIND_TREE: Final = 2
KINDS: Final = frozenset({KIND_BLOB, KIND_TREE})
CODEC_RAW: Final = 0
CODEC_ZSTD: Final = 1

HEADER = struct.Struct("<4sBBHI")
ENTRY = struct.Struct("<BB32sQQ")
ROW = struct.Struct("<32sQ")
FOOTER = struct.Struct("<QI4s")
TRAILER_SIZE: Final = 32
#: The smallest pack: header, footer and trailer of a pack with no entries.
MIN_PACK: Final = HEADER.size + FOOTER.size + TRAILER_SIZE

#: Readers refuse a pack declaring more entries (bounds the index kept in memory).
MAX_ENTRIES: Final = 1 << 18
#: Readers refuse an object declaring more raw bytes (the zstd bomb guard).
MAX_OBJECT_SIZE: Final = PACK_BODY_LIMIT
#: Objects up to this size are compressed in one shot; larger ones are streamed.
SMALL_OBJECT: Final = 1 << 20
#: Largest zstd window a reader accepts (levels 1-19 stay well under it).
MAX_WINDOW: Final = 1 << 24
#: Read size when streaming a pack file.
CHUNK: Final = 1 << 20
#: Read size when compressing a file (zstd's input block: ~1.7x faster than 1 MiB).
ZSTD_FEED: Final = 128 << 10


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One object as a pack lists it."""

    oid: bytes
    kind: int
    raw_len: int
    stored_len: int


@dataclass(frozen=True, slots=True)
class PackSummary:
    """What a written or verified pack holds."""

    key: PackKey
    size: int
    entries: tuple[PackEntry, ...]

    @property
    def raw_bytes(self) -> int:
        """Sum of the objects' raw sizes."""
        return sum(e.raw_len for e in self.entries)


def check_entry(
    kind: int, codec: int, raw_len: int, stored_len: int, max_object: int, where: str
) -> None:
    """Refuse an entry header before any of its bytes are read or allocated for."""
    if kind not in KINDS:
        raise InvalidResponse(f"{where}: unknown object kind {kind}")
    if codec not in (CODEC_RAW, CODEC_ZSTD):
        raise InvalidResponse(f"{where}: unknown codec {codec}")
    if raw_len > max_object:
        raise PayloadTooLarge(
            f"{where}: object declares {raw_len} bytes, over the {max_object}-byte cap",
            size=raw_len,
            limit=max_object,
        )
    if codec == CODEC_RAW and stored_len != raw_len:
        raise InvalidResponse(f"{where}: a raw entry stores {stored_len} of {raw_len} bytes")
    if codec == CODEC_ZSTD and stored_len == 0:
        raise InvalidResponse(f"{where}: an empty zstd entry")


def check_header(data: bytes, max_entries: int) -> int:
    """Check a pack's header and return its entry count (capped before use)."""
    magic, version, flags, reserved, count = HEADER.unpack(data)
    if magic != MAGIC:
        raise InvalidResponse(f"not a pack: magic {magic!r}")
    if version != VERSION:
        raise InvalidResponse(f"unsupported pack version {version}")
    if flags or reserved:
        raise InvalidResponse("pack header has reserved bits set")
    if count > max_entries:
        raise PayloadTooLarge(
            f"pack declares {count} entries, over the cap of {max_entries}",
            size=count,
            limit=max_entries,
        )
    return int(count)
