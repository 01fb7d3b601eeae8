"""Packs: round trip, missing, exists, idempotent upload, digest checks, streaming."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mkit_transport import (
    PACK_BODY_LIMIT,
    Hash,
    InvalidArgument,
    InvalidResponse,
    PackKey,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    Transport,
)

from .base import SuiteBase, make_pack
from .harness import Backdoor, Harness

__all__ = ["PackSuite", "StreamSource"]

spec = pytest.mark.spec


class StreamSource:
    """A re-iterable chunk source of ``size`` deterministic bytes (never held whole)."""

    def __init__(self, seed: bytes, size: int, chunk: int = 1 << 20) -> None:
        self.seed = seed
        self.size = size
        self.chunk = chunk
        block = (Hash.of(seed).hex() * 64).encode()  # 4 KiB pattern
        self._block = (block * (chunk // len(block) + 1))[:chunk]

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        index = 0
        while left > 0:
            n = min(self.chunk, left)
            yield index.to_bytes(8, "big") + self._block[8:n] if n > 8 else self._block[:n]
            left -= n
            index += 1

    def key(self) -> PackKey:
        from mkit_transport.hashes import Hasher

        hasher = Hasher()
        hasher.update_all(self)
        return hasher.pack_key()


class PackSuite(SuiteBase):
    """Packs and blobs behave the same on every transport."""

    @spec("T-PACK-1")
    @pytest.mark.parametrize("size", [1, 4096, (1 << 20) + 7])
    def test_round_trip(self, transport: Transport, salt: bytes, size: int) -> None:
        data, key = make_pack(salt, f"round-trip-{size}", size)
        transport.upload_pack(data, key)
        assert transport.download_pack(key) == data
        assert b"".join(transport.download_pack_stream(key)) == data

    @spec("T-PACK-2")
    def test_download_missing_is_pack_not_found(self, transport: Transport, salt: bytes) -> None:
        _, key = make_pack(salt, "never-uploaded")
        with pytest.raises(PackNotFound):
            transport.download_pack(key)

    @spec("T-PACK-2")
    def test_stream_of_missing_pack_fails_before_iterating(
        self, transport: Transport, salt: bytes
    ) -> None:
        _, key = make_pack(salt, "never-uploaded-stream")
        with pytest.raises(PackNotFound):
            transport.download_pack_stream(key)  # raised by the call, not by next()

    @spec("T-PACK-3")
    def test_exists(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "exists")
        assert transport.pack_exists(key) is False
        transport.upload_pack(data, key)
        assert transport.pack_exists(key) is True

    @spec("T-PACK-13")
    @pytest.mark.parametrize("size", [0, 1, 70_000])
    def test_pack_size_is_the_stored_length(
        self, transport: Transport, salt: bytes, size: int
    ) -> None:
        data, key = make_pack(salt, f"sized-{size}", size) if size else (b"", PackKey.of(b""))
        if size > len(salt):
            # Only a pack longer than the salt is unique to this run, so surely absent:
            # a 1-byte one is one of 256, which another test (or an earlier run against
            # the same remote) may have stored.
            with pytest.raises(PackNotFound):
                transport.pack_size(key)
        transport.upload_pack(data, key)
        assert transport.pack_size(key) == size

    @spec("T-PACK-4")
    def test_reupload_is_idempotent(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "idempotent")
        transport.upload_pack(data, key)
        transport.upload_pack(data, key)
        transport.upload_pack_stream(key, [data[:100], data[100:]], len(data))
        assert transport.download_pack(key) == data

    @spec("T-PACK-5")
    def test_digest_mismatch_is_refused_and_stores_nothing(
        self, transport: Transport, salt: bytes, harness: Harness
    ) -> None:
        data, _ = make_pack(salt, "payload")
        _, wrong = make_pack(salt, "other")
        with pytest.raises(ProtocolError):
            transport.upload_pack(data, wrong)
        assert transport.pack_exists(wrong) is False
        if harness.backdoor is not None:
            assert harness.backdoor.read_pack_bytes(wrong) is None

    @spec("T-PACK-5")
    @pytest.mark.parametrize("fault", ["wrong-digest", "short", "long"])
    def test_bad_stream_is_refused_and_stores_nothing(
        self, transport: Transport, salt: bytes, harness: Harness, fault: str
    ) -> None:
        data, key = make_pack(salt, "stream-payload", 300_000)
        chunks = [data[:100_000], data[100_000:200_000], data[200_000:]]
        if fault == "wrong-digest":
            _, key = make_pack(salt, "stream-other")
            total = len(data)
        elif fault == "short":
            total = len(data) + 1
        else:
            total = len(data) - 1
        with pytest.raises(ProtocolError):
            transport.upload_pack_stream(key, chunks, total)
        assert transport.pack_exists(key) is False
        if harness.backdoor is not None:
            assert harness.backdoor.read_pack_bytes(key) is None

    @spec("T-PACK-5")
    def test_bad_stream_for_a_stored_pack_is_still_refused(
        self, transport: Transport, salt: bytes
    ) -> None:
        data, key = make_pack(salt, "stored-then-bad", 50_000)
        transport.upload_pack(data, key)
        wrong = bytes(reversed(data))  # same length, other bytes
        with pytest.raises(ProtocolError):
            transport.upload_pack_stream(key, [wrong], len(wrong))
        assert transport.download_pack(key) == data

    @spec("T-PACK-6")
    def test_empty_pack(self, transport: Transport) -> None:
        key = PackKey.of(b"")
        transport.upload_pack(b"", key)
        assert transport.pack_exists(key)
        assert transport.download_pack(key) == b""
        transport.upload_pack_stream(key, [], 0)
        assert b"".join(transport.download_pack_stream(key)) == b""

    @spec("T-PACK-7")
    @pytest.mark.slow
    def test_large_pack_through_streaming_verbs(
        self, transport: Transport, salt: bytes, harness: Harness
    ) -> None:
        source = StreamSource(salt + b"large", harness.large_pack_size)
        key = source.key()
        transport.upload_pack_stream(key, source, harness.large_pack_size)
        assert transport.pack_exists(key)
        from mkit_transport.hashes import Hasher

        hasher = Hasher()
        for chunk in transport.download_pack_stream(key):
            assert len(chunk) <= 4 << 20, "a stream chunk should be bounded"
            hasher.update(chunk)
        assert hasher.length == harness.large_pack_size
        assert hasher.pack_key() == key

    @spec("T-PACK-8")
    def test_download_verifies_the_digest(
        self, transport: Transport, salt: bytes, backdoor: Backdoor
    ) -> None:
        data, key = make_pack(salt, "to-corrupt", 200_000)
        transport.upload_pack(data, key)
        corrupt = bytearray(data)
        corrupt[1234] ^= 0xFF
        backdoor.write_pack_bytes(key, bytes(corrupt))
        try:
            with pytest.raises(InvalidResponse):
                transport.download_pack(key)
            with pytest.raises(InvalidResponse):
                for _ in transport.download_pack_stream(key):
                    pass
        finally:
            backdoor.write_pack_bytes(key, data)  # leave the store sound

    @spec("T-PACK-9")
    def test_blobs_share_the_pack_keyspace(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "blob")
        transport.upload_blob(data, key)
        assert transport.pack_exists(key)
        assert transport.download_blob(key) == data
        assert transport.download_pack(key) == data
        _, wrong = make_pack(salt, "blob-wrong")
        with pytest.raises(ProtocolError):
            transport.upload_blob(data, wrong)

    @spec("T-PACK-10")
    def test_oversize_stream_is_refused_before_reading(
        self, transport: Transport, salt: bytes
    ) -> None:
        _, key = make_pack(salt, "huge")
        taken: list[int] = []

        def chunks() -> Iterator[bytes]:
            taken.append(1)
            yield b"x"

        with pytest.raises(PayloadTooLarge):
            transport.upload_pack_stream(key, chunks(), PACK_BODY_LIMIT + 1)
        assert taken == []
        assert transport.pack_exists(key) is False

    @spec("T-PACK-11")
    def test_a_hash_is_not_a_pack_key(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "typed")
        with pytest.raises(InvalidArgument):
            transport.upload_pack(data, Hash(bytes(key)))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            transport.pack_exists(Hash(bytes(key)))  # type: ignore[arg-type]
        assert transport.pack_exists(key) is False

    @spec("T-PACK-14")
    def test_streamed_upload_is_invisible_until_its_stream_ended(
        self, transport: Transport, harness: Harness, salt: bytes
    ) -> None:
        """Another client never sees the pack while its stream is still being read."""
        data, key = make_pack(salt, "stream-visibility", 300_000)
        seen: list[tuple[int, bool, bytes | None]] = []
        with harness.open(None) as other:

            def chunks() -> Iterator[bytes]:
                for i, start in enumerate(range(0, len(data), 100_000)):
                    if i:
                        raw = (
                            None
                            if harness.backdoor is None
                            else harness.backdoor.read_pack_bytes(key)
                        )
                        seen.append((i, other.pack_exists(key), raw))
                    yield data[start : start + 100_000]

            transport.upload_pack_stream(key, chunks(), len(data))
            early = [(i, exists) for i, exists, raw in seen if exists or raw is not None]
            assert early == [], f"the pack was visible after chunk(s) {early} of 3"
            assert len(seen) == 2
            assert other.pack_exists(key) is True
            assert other.download_pack(key) == data

    @spec("T-RETRY-9")
    @pytest.mark.parametrize("offset", [0, 1, 4095, 65_539, 199_999, 200_000])
    def test_a_stream_opened_at_an_offset_starts_there(
        self, transport: Transport, salt: bytes, offset: int
    ) -> None:
        """The transport's own resume path (``_open_pack_stream(key, offset)``).

        ``relay_pack_stream`` calls it directly, with no wrapper re-slicing the pack:
        the same path a broken download resumes through, and what the HTTP and SSH
        servers relay from.
        """
        data, key = make_pack(salt, "offset-stream", 200_000)
        transport.upload_pack(data, key)
        assert b"".join(transport.relay_pack_stream(key, offset)) == data[offset:]

    @spec("T-PACK-12")
    def test_one_shot_stream_is_accepted(self, transport: Transport, salt: bytes) -> None:
        data, key = make_pack(salt, "one-shot", 70_000)
        transport.upload_pack_stream(key, iter([data[:5], data[5:]]), len(data))
        assert transport.download_pack(key) == data
