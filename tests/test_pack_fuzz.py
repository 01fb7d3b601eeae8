"""Hypothesis fuzzing of the pack readers: any mutation is refused with our errors only."""

from __future__ import annotations

import contextlib
import io
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkit_transport import InvalidResponse, PayloadTooLarge
from mkit_transport.hashes import Hasher
from mkit_transport.pack import (
    KIND_BLOB,
    KIND_TREE,
    TRAILER_SIZE,
    PackFile,
    PackVerifier,
    PackWriter,
)

OURS = (InvalidResponse, PayloadTooLarge)


def _pack() -> bytes:
    out = io.BytesIO()
    writer = PackWriter(out)
    writer.add_bytes(KIND_TREE, b"tree bytes " * 20)
    writer.add_bytes(KIND_BLOB, b"")
    writer.add_bytes(KIND_BLOB, b"x")
    writer.add_bytes(KIND_BLOB, b"compressible text " * 300)
    writer.add_bytes(KIND_BLOB, bytes(range(256)))
    writer.finish()
    return out.getvalue()


PACK = _pack()


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(PACK)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "set":
            data[at : at + 8] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    mutated = bytes(data)
    if mutated == PACK:
        data.append(0)
    return bytes(data)


def _verify(data: bytes, chunk: int) -> None:
    verifier = PackVerifier()
    for i in range(0, len(data), chunk):
        verifier.feed(data[i : i + chunk])
    verifier.finish()


def _random_access(data: bytes, check_trailer: bool) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        with PackFile(f.name, check_trailer=check_trailer) as pack:
            for oid in list(pack.ids()):
                pack.read_object(oid, None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutations(), chunk=st.integers(1, 700))
def test_any_mutation_is_refused_by_both_readers(data: bytes, chunk: int) -> None:
    with pytest.raises(OURS):
        _verify(data, chunk)
    with pytest.raises(OURS):
        _random_access(data, True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutations(), chunk=st.integers(1, 700))
def test_resealed_mutations_never_crash_the_readers(data: bytes, chunk: int) -> None:
    """With a valid trailer the parsers reach every deeper check; only our errors escape.

    (A resealed mutation can be a valid pack, e.g. a kind byte changed from blob to
    tree: the trailer is what refuses it in the test above.)
    """
    if len(data) > TRAILER_SIZE:
        body = bytearray(data)
        hasher = Hasher()
        hasher.update(bytes(body[:-TRAILER_SIZE]))
        body[-TRAILER_SIZE:] = bytes(hasher.pack_key())
        data = bytes(body)
    with contextlib.suppress(*OURS):
        _verify(data, chunk)
    with contextlib.suppress(*OURS):
        _random_access(data, False)


def test_the_unmutated_pack_is_accepted() -> None:
    _verify(PACK, 13)
    _random_access(PACK, True)
