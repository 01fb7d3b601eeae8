"""The pack format (spec/SPEC-PACK.md): a streaming writer and two verifying readers.

A pack holds content-addressed objects, each named by the BLAKE3 of its raw bytes::

    header   "MKPK" | u8 version=1 | u8 flags=0 | u16 reserved=0 | u32 entry_count
    entries  u8 kind | u8 codec | 32 id | u64 raw_len | u64 stored_len | stored bytes
    index    entry_count x (32 id | u64 entry offset), sorted by id, ids unique
    footer   u64 index_offset | u32 entry_count | "MKPE"
    trailer  BLAKE3 of every byte before it (32 bytes)

Integers are little endian. The pack key is the BLAKE3 of the whole pack, trailer
included. The writer streams into a seekable file (a spool), so building a pack of
any size holds a bounded amount of memory (a large file that does not compress
stays in place and is spliced in, see :func:`iter_pack`); :class:`PackVerifier` checks a pack fed
chunk by chunk (a download, a copy between remotes) and :class:`PackFile` reads one
object from a pack file through its index, without a scan (thread safe). Both refuse a bad pack
with :class:`InvalidResponse` (a pack comes from a remote) and a pack whose declared
sizes exceed the caps with :class:`PayloadTooLarge`, before allocating anything.
"""

from __future__ import annotations

from .format import (
    CODEC_RAW,
    CODEC_ZSTD,
    KIND_BLOB,
    KIND_TREE,
    KINDS,
    MAX_ENTRIES,
    MAX_OBJECT_SIZE,
    MIN_PACK,
    SMALL_OBJECT,
    TRAILER_SIZE,
    PackEntry,
    PackSummary,
)
from .packfile import PackFile
from .verifier import PackVerifier, verify_pack_file
from .writer import External, PackWriter, PreparedObject, iter_pack, prepare_object, prepare_objects

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "KINDS",
    "KIND_BLOB",
    "KIND_TREE",
    "MAX_ENTRIES",
    "MAX_OBJECT_SIZE",
    "MIN_PACK",
    "SMALL_OBJECT",
    "TRAILER_SIZE",
    "External",
    "PackEntry",
    "PackFile",
    "PackSummary",
    "PackVerifier",
    "PackWriter",
    "PreparedObject",
    "iter_pack",
    "prepare_object",
    "prepare_objects",
    "verify_pack_file",
]
