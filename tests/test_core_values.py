"""Hash, PackKey, Ref, RefWriteCondition and the error taxonomy."""

from __future__ import annotations

import dataclasses
import pickle

import blake3
import pytest

import mkit_transport
from mkit_transport import (
    Hash,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackKey,
    Ref,
    RefConflict,
    RefNotFound,
    RefWriteCondition,
    ServerError,
    errors,
)
from mkit_transport.refs import decode_ref_value, encode_ref_value

HEX = blake3.blake3(b"x").hexdigest()


def test_hash_is_blake3() -> None:
    assert Hash.of(b"x").hex() == HEX
    assert bytes(Hash.of(b"x")) == bytes.fromhex(HEX)
    big = b"y" * (3 << 20)  # the multi-threaded path gives the same digest
    assert Hash.of(big).hex() == blake3.blake3(big).hexdigest()


def test_hash_round_trips_and_is_a_value() -> None:
    h = Hash.from_hex(HEX)
    assert h == Hash.of(b"x")
    assert hash(h) == hash(Hash.of(b"x"))
    assert repr(h) == f"Hash('{HEX}')"
    assert str(h) == HEX
    assert {h: 1}[Hash.of(b"x")] == 1
    assert pickle.loads(pickle.dumps(h)) == h
    with pytest.raises(AttributeError):
        h._digest = b"0" * 32
    assert sorted([Hash.of(b"b"), Hash.of(b"a")]) == sorted([Hash.of(b"a"), Hash.of(b"b")])


def test_pack_key_is_a_distinct_type() -> None:
    assert PackKey.of(b"x").hex() == HEX
    assert PackKey.of(b"x") != Hash.of(b"x")
    assert len({PackKey.of(b"x"), Hash.of(b"x")}) == 2
    assert repr(PackKey.of(b"x")).startswith("PackKey(")


@pytest.mark.parametrize(
    "text",
    ["", HEX[:63], HEX + "0", HEX.upper(), " " + HEX[1:], HEX[:63] + "g", HEX[:63] + "\n", 5],
)
def test_from_hex_is_strict(text: object) -> None:
    with pytest.raises(InvalidRef):
        Hash.from_hex(text)  # type: ignore[arg-type]
    with pytest.raises(InvalidRef):
        PackKey.from_hex(text)  # type: ignore[arg-type]


def test_digest_length_is_checked() -> None:
    with pytest.raises(InvalidRef):
        Hash(b"short")
    with pytest.raises(TypeError):
        Hash("0" * 32)  # type: ignore[arg-type]


def test_ref_is_frozen() -> None:
    ref = Ref("main", Hash.of(b"x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.name = "other"  # type: ignore[misc]


def test_conditions() -> None:
    a, b = Hash.of(b"a"), Hash.of(b"b")
    assert RefWriteCondition.ANY.allows(None) and RefWriteCondition.ANY.allows(a)
    assert RefWriteCondition.MISSING.allows(None) and not RefWriteCondition.MISSING.allows(a)
    assert RefWriteCondition.match(a).allows(a)
    assert not RefWriteCondition.match(a).allows(b)
    assert not RefWriteCondition.match(a).allows(None)
    assert RefWriteCondition.match(a) == RefWriteCondition.match(a)
    with pytest.raises(InvalidArgument):
        RefWriteCondition.match(PackKey.of(b"a"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        RefWriteCondition("bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        RefWriteCondition("any", a)


def test_wire_form() -> None:
    h = Hash.of(b"x")
    assert encode_ref_value(h) == HEX.encode() + b"\n"
    assert len(encode_ref_value(h)) == 65
    assert decode_ref_value(encode_ref_value(h), remote=True) == h
    with pytest.raises(InvalidResponse):
        decode_ref_value(HEX.encode(), remote=True)
    # A corrupt value read back from a local store is a corrupt stored value too,
    # never the caller's bad input.
    with pytest.raises(InvalidResponse, match="malformed stored ref value of refs/a"):
        decode_ref_value(HEX.encode() + b"\r\n", remote=False, name="refs/a")


def test_exactly_thirteen_leaves() -> None:
    leaves = {
        name
        for name in errors.__all__
        if name != "TransportError" and issubclass(getattr(errors, name), errors.TransportError)
    }
    assert leaves == {
        "PackNotFound",
        "AccessDenied",
        "RemoteError",
        "RefConflict",
        "RefNotFound",
        "InvalidRef",
        "InvalidArgument",
        "ConnectionFailed",
        "ServerError",
        "InvalidResponse",
        "ProtocolError",
        "PayloadTooLarge",
        "InsecureScheme",
    }
    for name in leaves:
        cls = getattr(errors, name)
        extra = (ValueError,) if name == "InvalidArgument" else ()
        assert cls.__bases__ == (errors.TransportError, *extra)
        assert getattr(mkit_transport, name) is cls
        assert name in (errors.__doc__ or ""), "the tree in the docstring names every leaf"


def test_errors_pickle_with_their_details() -> None:
    conflict = RefConflict("lost", name="refs/x", current=Hash.of(b"x"), known=True)
    back = pickle.loads(pickle.dumps(conflict))
    assert (back.name, back.current, back.known, str(back)) == (
        "refs/x",
        Hash.of(b"x"),
        True,
        "lost",
    )
    server = pickle.loads(pickle.dumps(ServerError("busy", status=503, retry_after=2.0)))
    assert (server.status, server.retry_after) == (503, 2.0)
    absent = pickle.loads(pickle.dumps(RefNotFound("absent", name="refs/y")))
    assert (type(absent), absent.name, str(absent)) == (RefNotFound, "refs/y", "absent")
    bad = pickle.loads(pickle.dumps(InvalidArgument("bad option")))
    assert isinstance(bad, InvalidArgument) and isinstance(bad, ValueError)


def test_bad_arguments_are_invalid_argument_not_invalid_ref() -> None:
    """Wrong types, negative sizes and offsets, a bad level: bad arguments, one class."""
    from collections.abc import Callable

    from mkit_transport import MemoryTransport, RetryPolicy
    from mkit_transport.pack.codec import check_level

    t = MemoryTransport()
    key = PackKey.of(b"x")
    refused: list[Callable[[], object]] = [
        lambda: t.upload_pack(b"x", Hash.of(b"x")),  # type: ignore[arg-type]
        lambda: t.upload_pack("text", key),  # type: ignore[arg-type]
        lambda: t.upload_pack_stream(key, [b"x"], -1),
        lambda: t.relay_pack_stream(key, -1),
        lambda: t.write_ref("refs/a", key),  # type: ignore[arg-type]
        lambda: t.update_ref("refs/a", "MISSING", Hash.of(b"x")),  # type: ignore[arg-type]
        lambda: check_level(20),
        lambda: RetryPolicy(retries=-1),
    ]
    for call in refused:
        with pytest.raises(InvalidArgument) as caught:
            call()
        assert not isinstance(caught.value, InvalidRef)
    assert t.pack_exists(key) is False and t.list_refs() == []


def test_public_names() -> None:
    assert mkit_transport.__all__ == sorted(
        mkit_transport.__all__, key=lambda n: (not n.isupper(), n)
    )
    for name in mkit_transport.__all__:
        assert hasattr(mkit_transport, name)


def test_sync_names_load_on_first_use() -> None:
    """``import mkit_transport`` leaves the sync layer unloaded (serve ssh starts per
    channel and never syncs); its names still import from the package, and list."""
    import subprocess
    import sys

    probe = (
        "import sys, mkit_transport as m\n"
        "assert 'mkit_transport.sync' not in sys.modules\n"
        "assert {'push', 'pull', 'PushReport'} <= set(dir(m))\n"
        "from mkit_transport import push, PullReport\n"
        "from mkit_transport.sync import push as pushed\n"
        "assert push is pushed and m.PullReport is PullReport\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    with pytest.raises(AttributeError):
        mkit_transport.no_such_name  # noqa: B018


def test_a_minimal_third_party_transport_gets_the_policy() -> None:
    """A subclass that skips super().__init__() still validates, retries and verifies."""
    from collections.abc import Iterable

    from mkit_transport import RefWriteCondition, Transport

    class Tiny(Transport):
        def __init__(self) -> None:
            self.packs: dict[PackKey, bytes] = {}
            self.refs: dict[str, Hash] = {}

        def _put_pack(self, key: PackKey, data: bytes | bytearray | memoryview) -> None:
            self.packs[key] = bytes(data)

        def _get_pack(self, key: PackKey) -> bytes:
            return self.packs[key]

        def _has_pack(self, key: PackKey) -> bool:
            return key in self.packs

        def _read_ref(self, name: str) -> Hash | None:
            return self.refs.get(name)

        def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
            condition.require(name, self.refs.get(name))
            self.refs[name] = value

        def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
            return list(self.refs.items())

    t = Tiny()
    assert t.retry.ladder() == [1, 2, 4, 8, 16]
    with pytest.raises(InvalidRef):
        t.read_ref("main")
    t.upload_pack(b"x", PackKey.of(b"x"))
    t.packs[PackKey.of(b"x")] = b"y"
    with pytest.raises(InvalidResponse):
        t.download_pack(PackKey.of(b"x"))
    with Tiny() as u:
        u.write_ref("refs/a", Hash.of(b"a"))
        with pytest.raises(RefConflict):
            u.update_ref("refs/a", RefWriteCondition.MISSING, Hash.of(b"b"))


def test_a_stream_cut_short_then_found_stored_on_retry_is_still_checked() -> None:
    """T-PACK-5 across a retry: a first attempt reads part of a re-iterable stream and
    fails; another writer stores the pack meanwhile; the retry finds it stored and
    reads nothing. The base must still read the stream to its end and refuse a bad one.
    """
    from collections.abc import Iterable

    from mkit_transport import ConnectionFailed, MemoryTransport, ProtocolError, RetryPolicy

    good = b"the pack another writer stored" * 100
    key = PackKey.of(good)
    bad = [good[:1000], bytes(len(good) - 1000)]  # same length, wrong bytes

    class Racy(MemoryTransport):
        attempts = 0

        def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
            self.attempts += 1
            if self.attempts == 1:
                next(iter(chunks))  # the first part goes out, then the link drops
                self._put_pack(key, good)  # ...while another writer lands the pack
                raise ConnectionFailed("link dropped")
            if self._has_pack(key):
                return  # already stored: nothing to send
            super()._put_pack_stream(key, chunks, total)

    transport = Racy(retry=RetryPolicy(sleep=lambda s: None))
    with pytest.raises(ProtocolError):
        transport.upload_pack_stream(key, bad, len(good))
    assert transport.attempts == 2
    assert transport.download_pack(key) == good
    # A good stream in the same race succeeds.
    again = Racy(retry=RetryPolicy(sleep=lambda s: None))
    again.upload_pack_stream(key, [good[:1000], good[1000:]], len(good))
    assert again.attempts == 2
