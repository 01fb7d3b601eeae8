"""BLAKE3 digests: :class:`Hash` (what a ref points at) and :class:`PackKey` (a pack's name).

Both are 32 immutable bytes with the same text form (64 lowercase hex), but they
are distinct types on purpose: a ``PackKey`` never equals a ``Hash``, so a ref
value cannot be passed where a pack key is expected without saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Self

import blake3

from .errors import InvalidRef

__all__ = ["DIGEST_SIZE", "Hash", "Hasher", "PackKey"]

DIGEST_SIZE: Final = 32
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
# Above this size hashing fans out over every core (measured ~2x on 2 cores).
_PARALLEL_THRESHOLD: Final = 1 << 20


def _blake3(data: bytes | bytearray | memoryview) -> bytes:
    if len(data) >= _PARALLEL_THRESHOLD:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
    return blake3.blake3(data).digest()


class _Digest:
    """Shared behaviour of the two digest types: immutable, hashable, ordered."""

    __slots__ = ("_digest",)
    _digest: bytes

    def __init__(self, digest: bytes) -> None:
        if not isinstance(digest, bytes | bytearray | memoryview):
            raise TypeError(f"{type(self).__name__} takes bytes, not {type(digest).__name__}")
        raw = bytes(digest)
        if len(raw) != DIGEST_SIZE:
            raise InvalidRef(f"{type(self).__name__} must be {DIGEST_SIZE} bytes, got {len(raw)}")
        object.__setattr__(self, "_digest", raw)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> Self:
        """Return the BLAKE3 digest of ``data``."""
        return cls(_blake3(data))

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse exactly 64 lowercase hex characters; anything else is :class:`InvalidRef`.

        Uppercase is refused rather than folded: the wire form is lowercase only, and
        accepting both would give one value two spellings.
        """
        if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
            shown = text if isinstance(text, str) and len(text) <= 80 else f"{str(text)[:80]}..."
            raise InvalidRef(f"not a {cls.__name__}: expected 64 lowercase hex, got {shown!r}")
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        """Return the 64-character lowercase hex form."""
        return self._digest.hex()

    def __bytes__(self) -> bytes:
        return self._digest

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Digest)
        return self._digest == other._digest

    def __lt__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._digest < other._digest

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._digest))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()!r})"

    def __str__(self) -> str:
        return self.hex()

    def __reduce__(self) -> tuple[type[Self], tuple[bytes]]:
        return (type(self), (self._digest,))


class Hash(_Digest):
    """A 32-byte BLAKE3 value: what a ref points at."""

    __slots__ = ()


class PackKey(_Digest):
    """A 32-byte BLAKE3 value naming a pack (or blob): the digest of its bytes."""

    __slots__ = ()


class Hasher:
    """Incremental BLAKE3 over a stream of chunks, finishing as a :class:`PackKey`.

    Single-threaded unless ``parallel``: an upload is hashed beside other work
    (packing, other uploads), where BLAKE3's thread pool only added waiting and
    spinning (push of the bench tree ~8% slower with it; bench/bench_sync.py),
    while a download's check is usually the only CPU work in flight (a 256 MiB
    streamed download ~15% faster with it).
    """

    __slots__ = ("_state", "length")

    def __init__(self, *, parallel: bool = False) -> None:
        threads = blake3.blake3.AUTO if parallel else 1
        self._state = blake3.blake3(max_threads=threads)
        self.length = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk."""
        self._state.update(chunk)
        self.length += len(chunk)

    def update_all(self, chunks: Iterable[bytes]) -> None:
        """Feed every chunk of ``chunks``."""
        for chunk in chunks:
            self.update(chunk)

    def pack_key(self) -> PackKey:
        """Return the digest of everything fed so far."""
        return PackKey(self._state.digest())
