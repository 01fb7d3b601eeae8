"""The SSH frame reader under any split of the stream (spec/SPEC-SSH.md framing).

A download streams each chunk's payload as the pieces ``recv`` returns
(:meth:`FrameReader.read_head` then :meth:`FrameReader.payload`), never joined. These
tests feed the reader streams cut at every kind of place (one byte at a time, at
random, a recv that returns more than asked) and check that every frame comes out
whole, in order, and that a bad header leaves the stream in step for the next frame.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest

from mkit_transport.protocol.ssh import (
    CHUNK_SIZE,
    BadHeader,
    Disconnected,
    FrameReader,
    encode_frame,
)


def _frame(op: str, payload: bytes = b"", **fields: object) -> bytes:
    return b"".join(encode_frame(op, payload, **fields))


def _bad(header: bytes, payload: bytes) -> bytes:
    """A well-framed frame whose header is not a JSON object with an op."""
    return struct.pack(">IH", 2 + len(header) + len(payload), len(header)) + header + payload


def _feeder(
    data: bytes, cut: Callable[[int], int], *, greedy: bool = False
) -> Callable[[int], bytes]:
    """``recv(n)`` over ``data``: at most ``cut(n)`` bytes a call (``greedy``: may exceed n)."""
    at = 0

    def recv(n: int) -> bytes:
        nonlocal at
        size = cut(n) if greedy else max(1, min(n, cut(n)))
        piece = data[at : at + size]
        at += len(piece)
        return piece

    return recv


PAYLOADS = [b"", b"x", bytes(range(256)) * 37, random.Random(1).randbytes(CHUNK_SIZE)]


def _stream(payloads: list[bytes]) -> bytes:
    return b"".join(
        _frame("chunk", payload, offset=i, last=i == len(payloads) - 1)
        for i, payload in enumerate(payloads)
    )


@pytest.mark.parametrize("cut", ["one-byte", "random", "whole"])
def test_payloads_come_out_whole_and_in_order_under_any_split(cut: str) -> None:
    rng = random.Random(cut)
    cuts: dict[str, Callable[[int], int]] = {
        "one-byte": lambda n: 1,
        "random": lambda n: rng.randrange(1, 70_000),
        "whole": lambda n: n,
    }
    # One byte a call: a short stream (a megabyte would take a million calls).
    payloads = [b"abc", b"", b"d"] if cut == "one-byte" else PAYLOADS
    data = _stream(payloads)
    reader = FrameReader(_feeder(data, cuts[cut]))
    got: list[bytes] = []
    while (head := reader.read_head()) is not None:
        frame, length = head
        assert frame.op == "chunk" and frame.fields["offset"] == len(got)
        pieces = list(reader.payload(length))
        assert all(pieces)  # never an empty piece
        got.append(b"".join(pieces))
    assert got == payloads
    assert reader.bytes_read == len(data)


def test_a_recv_returning_more_than_asked_keeps_the_rest_for_the_next_frame() -> None:
    reader = FrameReader(_feeder(_stream(PAYLOADS), lambda n: n + 5000, greedy=True))
    assert [f.payload for f in iter(reader.read, None)] == PAYLOADS


def test_a_payload_of_exactly_one_chunk_is_read_as_it_was_sent() -> None:
    payload = random.Random(2).randbytes(CHUNK_SIZE)
    reader = FrameReader(_feeder(_frame("chunk", payload, offset=0, last=True), lambda n: 1 << 16))
    frame = reader.read()
    assert (
        frame is not None
        and frame.payload == payload
        and frame.fields == {"offset": 0, "last": True}
    )
    assert reader.read() is None


@pytest.mark.parametrize("header", [b"[[[", b'{"op": 1}', b"\xff"], ids=["json", "op", "utf8"])
def test_a_bad_header_drains_its_payload_and_the_next_frame_reads(header: bytes) -> None:
    data = _bad(header, b"P" * 100_000) + _frame("refs", b"next")
    reader = FrameReader(_feeder(data, lambda n: 4096))
    with pytest.raises(BadHeader):
        reader.read_head()
    frame = reader.read()
    assert frame is not None and (frame.op, frame.payload) == ("refs", b"next")
    assert reader.read() is None


def test_a_stream_cut_inside_a_payload_is_disconnected_not_a_short_payload() -> None:
    data = _frame("chunk", b"y" * 10_000, offset=0, last=True)[:-1]
    reader = FrameReader(_feeder(data, lambda n: 3000))
    head = reader.read_head()
    assert head is not None
    with pytest.raises(Disconnected):
        b"".join(reader.payload(head[1]))
