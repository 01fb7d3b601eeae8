"""Helpers shared by the pack tests: feed a pack to a verifier, reseal a damaged
pack, and write a one-entry pack by hand (so an entry can lie)."""

from __future__ import annotations

import struct

from mkit_transport.hashes import Hasher
from mkit_transport.pack import KIND_BLOB, TRAILER_SIZE, PackSummary, PackVerifier


def verify(data: bytes, chunk: int = 4096, verifier: PackVerifier | None = None) -> PackSummary:
    """Feed ``data`` to ``verifier`` (a fresh full one by default) in ``chunk``-byte pieces."""
    verifier = verifier if verifier is not None else PackVerifier()
    for i in range(0, len(data), chunk):
        verifier.feed(data[i : i + chunk])
    return verifier.finish()


def reseal(data: bytearray) -> bytes:
    """Recompute the trailer, so a test reaches the checks behind it."""
    hasher = Hasher()
    hasher.update(bytes(data[:-TRAILER_SIZE]))
    data[-TRAILER_SIZE:] = bytes(hasher.pack_key())
    return bytes(data)


def one_entry_pack(
    codec: int, oid: bytes, raw_len: int, stored: bytes, *, kind: int = KIND_BLOB
) -> bytes:
    """A sealed pack of one entry, whatever its header declares (it may lie)."""
    header = struct.pack("<4sBBHI", b"MKPK", 1, 0, 0, 1)
    entry = struct.pack("<BB32sQQ", kind, codec, oid, raw_len, len(stored)) + stored
    index = struct.pack("<32sQ", oid, 12)
    footer = struct.pack("<QI4s", 12 + len(entry), 1, b"MKPE")
    return reseal(bytearray(header + entry + index + footer + bytes(TRAILER_SIZE)))
