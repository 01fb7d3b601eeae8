"""Ranged reads: ``read_pack_range`` returns exactly the stored bytes asked for, or fails.

A range cannot be checked against the pack key (that takes the whole pack), so these
tests check what the transport itself must get right: the right bytes at the right
offset, exactly ``length`` of them, a range past the end refused (never short data),
bad arguments refused before any request, and the verb retried like every other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mkit_transport import (
    PACK_BODY_LIMIT,
    ConnectionFailed,
    Hash,
    InvalidArgument,
    PackKey,
    PackNotFound,
    PayloadTooLarge,
    RetryPolicy,
    Transport,
)

from .base import SuiteBase, make_pack
from .faults import Fault, FaultyTransport
from .harness import Harness

__all__ = ["RangeSuite"]

spec = pytest.mark.spec

#: The pack most range tests cut from.
_SIZE = 10_000


class RangeSuite(SuiteBase):
    """``read_pack_range`` behaves the same on every transport."""

    @pytest.fixture
    def stored(self, transport: Transport, salt: bytes) -> tuple[bytes, PackKey]:
        data, key = make_pack(salt, "ranged", _SIZE)
        transport.upload_pack(data, key)
        return data, key

    @pytest.fixture
    def counted(self, harness: Harness) -> Iterator[FaultyTransport]:
        """The transport behind a wrapper that records every primitive call it makes."""
        inner = harness.open(RetryPolicy(retries=0))
        try:
            yield FaultyTransport(inner=inner, retry=RetryPolicy(sleep=lambda _: None))
        finally:
            inner.close()

    @spec("T-RANGE-1")
    @pytest.mark.parametrize(
        ("offset", "length"),
        [(0, 1), (0, 100), (1234, 4321), (_SIZE - 100, 100), (_SIZE - 1, 1), (0, _SIZE)],
        ids=["first-byte", "start", "middle", "end", "last-byte", "whole"],
    )
    def test_a_range_is_exactly_the_stored_bytes(
        self, transport: Transport, stored: tuple[bytes, PackKey], offset: int, length: int
    ) -> None:
        data, key = stored
        got = transport.read_pack_range(key, offset, length)
        assert type(got) is bytes
        assert got == data[offset : offset + length]

    @spec("T-RANGE-2")
    @pytest.mark.parametrize("offset", [0, 5000, _SIZE])
    def test_an_empty_range_inside_a_stored_pack_is_empty(
        self, transport: Transport, stored: tuple[bytes, PackKey], offset: int
    ) -> None:
        _, key = stored
        assert transport.read_pack_range(key, offset, 0) == b""

    @spec("T-RANGE-2")
    def test_ranges_of_the_empty_pack(self, transport: Transport) -> None:
        key = PackKey.of(b"")
        transport.upload_pack(b"", key)
        assert transport.read_pack_range(key, 0, 0) == b""
        with pytest.raises(InvalidArgument, match=r"\(0 bytes\)"):
            transport.read_pack_range(key, 0, 1)

    @spec("T-RANGE-3")
    @pytest.mark.parametrize(
        ("offset", "length"),
        [
            (_SIZE - 10, 11),
            (0, _SIZE + 1),
            (_SIZE, 1),
            (_SIZE + 1, 1),
            (_SIZE + 1, 0),
            (1 << 40, 5),
        ],
        ids=["ends-one-past", "whole-plus-one", "at-the-end", "past-the-end", "empty-past", "far"],
    )
    def test_a_range_past_the_end_is_refused_naming_the_size(
        self, transport: Transport, stored: tuple[bytes, PackKey], offset: int, length: int
    ) -> None:
        _, key = stored
        with pytest.raises(InvalidArgument, match=rf"\({_SIZE} bytes\)"):
            transport.read_pack_range(key, offset, length)
        assert transport.read_pack_range(key, 0, 8) == stored[0][:8], "the client still works"

    @spec("T-RANGE-4")
    @pytest.mark.parametrize(
        ("offset", "length", "error"),
        [
            (-1, 1, InvalidArgument),
            (0, -1, InvalidArgument),
            (True, 1, InvalidArgument),
            (0, False, InvalidArgument),
            (1.0, 1, InvalidArgument),
            (0, 2.0, InvalidArgument),
            ("0", 1, InvalidArgument),
            (0, None, InvalidArgument),
            (0, PACK_BODY_LIMIT + 1, PayloadTooLarge),
        ],
        ids=["neg-offset", "neg-length", "bool-offset", "bool-length", "float-offset",
             "float-length", "str-offset", "none-length", "over-the-limit"],
    )  # fmt: skip
    def test_bad_range_arguments_are_refused_before_any_request(
        self,
        counted: FaultyTransport,
        salt: bytes,
        offset: object,
        length: object,
        error: type[Exception],
    ) -> None:
        data, key = make_pack(salt, "bad-range-args")
        counted.inner.upload_pack(data, key)
        with pytest.raises(error):
            counted.read_pack_range(key, offset, length)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            counted.read_pack_range(Hash.of(data), 0, 1)  # type: ignore[arg-type]
        assert counted.calls == [], "nothing may be sent for bad arguments"

    @spec("T-RANGE-5")
    @pytest.mark.parametrize(("offset", "length"), [(0, 1), (0, 0), (10, 5), (1 << 40, 1)])
    def test_a_range_of_an_absent_pack_is_pack_not_found(
        self, transport: Transport, salt: bytes, offset: int, length: int
    ) -> None:
        _, key = make_pack(salt, "never-uploaded-range")
        with pytest.raises(PackNotFound):
            transport.read_pack_range(key, offset, length)

    @spec("T-RANGE-6")
    def test_a_range_spanning_chunk_boundaries(
        self, transport: Transport, harness: Harness, salt: bytes
    ) -> None:
        size = min(harness.large_pack_size, 6 << 20)
        data, key = make_pack(salt, "ranged-large", size)
        transport.upload_pack(data, key)
        for offset, length in [
            ((1 << 20) - 10, (3 << 20) + 20),  # across several 1 MiB (and 960 KiB) chunks
            (size - (2 << 20) - 1, (2 << 20) + 1),  # to the very end
            (0, size),
        ]:
            assert transport.read_pack_range(key, offset, length) == data[offset : offset + length]

    @spec("T-RANGE-7")
    def test_a_range_is_read_from_the_store_unverified(
        self, transport: Transport, harness: Harness, salt: bytes
    ) -> None:
        data, key = make_pack(salt, "ranged-backdoor", 4096)
        transport.upload_pack(data, key)
        got = transport.read_pack_range(key, 1000, 2000)
        assert got == data[1000:3000]
        if harness.backdoor is not None:
            stored = harness.backdoor.read_pack_bytes(key)
            assert stored is not None and got == stored[1000:3000]
            # Plant other bytes of the same size: a range is what is stored now, as it
            # is (the caller verifies the objects it cuts out by their own ids).
            rotted = bytes(b ^ 0xFF for b in data)
            harness.backdoor.write_pack_bytes(key, rotted)
            assert transport.read_pack_range(key, 1000, 2000) == rotted[1000:3000]

    @spec("T-RANGE-8")
    def test_a_range_read_is_retried(self, counted: FaultyTransport, salt: bytes) -> None:
        data, key = make_pack(salt, "ranged-retry", 5000)
        counted.inner.upload_pack(data, key)
        counted.plan = [Fault(lambda: ConnectionFailed("cut"), verb="get_pack_range")] * 2
        assert counted.read_pack_range(key, 100, 200) == data[100:300]
        assert counted.calls == ["get_pack_range"] * 3
        assert counted.drops == 2, "a connection is dropped before every retry"
