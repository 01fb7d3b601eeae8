"""Retry: the ladder, what is never retried, lost acknowledgements, resumed streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    InvalidArgument,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RefWriteCondition,
    RemoteError,
    RetryPolicy,
    ServerError,
    Transport,
)
from mkit_transport.errors import TransportError

from .base import SuiteBase, make_pack, value_of
from .faults import Fault, FaultyTransport
from .harness import Harness

__all__ = ["RetrySuite"]

spec = pytest.mark.spec


class RetrySuite(SuiteBase):
    """The base retry policy composed with the real transport."""

    @pytest.fixture
    def sleeps(self) -> list[float]:
        return []

    @pytest.fixture
    def faulty(self, harness: Harness, sleeps: list[float]) -> Iterator[FaultyTransport]:
        inner = harness.open(RetryPolicy(retries=0))
        try:
            yield FaultyTransport(inner=inner, retry=RetryPolicy(sleep=sleeps.append))
        finally:
            inner.close()

    @spec("T-RETRY-1")
    def test_transient_failures_follow_the_ladder(
        self, faulty: FaultyTransport, sleeps: list[float], ns: str
    ) -> None:
        faulty.inner.write_ref(f"{ns}/r", value_of("r"))
        faulty.plan = [Fault(lambda: ConnectionFailed("cut"), verb="read_ref")] * 3
        assert faulty.read_ref(f"{ns}/r") == value_of("r")
        assert faulty.calls == ["read_ref"] * 4
        assert sleeps == [1, 2, 4]
        assert faulty.drops == 3, "a connection is dropped before every retry"

    @spec("T-RETRY-1")
    def test_exhausted_retries_raise_the_last_error(
        self, faulty: FaultyTransport, sleeps: list[float], ns: str
    ) -> None:
        faulty.plan = [Fault(lambda: ServerError("busy", status=503))] * 10
        with pytest.raises(ServerError) as caught:
            faulty.read_ref(f"{ns}/r")
        assert caught.value.status == 503
        assert len(faulty.calls) == 6
        assert sleeps == [1, 2, 4, 8, 16]

    @spec("T-RETRY-2")
    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
    def test_retryable_statuses(
        self, faulty: FaultyTransport, sleeps: list[float], salt: bytes, status: int
    ) -> None:
        data, key = make_pack(salt, f"retry-{status}")
        faulty.plan = [Fault(lambda: ServerError("x", status=status), verb="put_pack")]
        faulty.upload_pack(data, key)
        assert faulty.calls == ["put_pack", "put_pack"]
        assert sleeps == [1]
        assert faulty.inner.download_pack(key) == data

    @spec("T-RETRY-3")
    @pytest.mark.parametrize(
        "error",
        [
            lambda: ServerError("x", status=400),
            lambda: ServerError("x", status=404),
            lambda: ServerError("x", status=409),
            lambda: ServerError("x", status=0),
            lambda: AccessDenied("x"),
            lambda: RemoteError("x"),
            lambda: InvalidResponse("x"),
            lambda: ProtocolError("x"),
            lambda: PayloadTooLarge("x"),
            lambda: PackNotFound("x"),
            lambda: RefNotFound("x", name="refs/x"),
            lambda: InvalidArgument("x"),
        ],
    )
    def test_permanent_failures_are_not_retried(
        self,
        faulty: FaultyTransport,
        sleeps: list[float],
        ns: str,
        error: Callable[[], TransportError],
    ) -> None:
        faulty.plan = [Fault(error)] * 3
        with pytest.raises(type(error())):
            faulty.read_ref(f"{ns}/r")
        assert faulty.calls == ["read_ref"]
        assert sleeps == []

    @spec("T-RETRY-4")
    @pytest.mark.parametrize("condition", ["MISSING", "match"])
    def test_lost_acknowledgement_of_a_cas_write_is_success(
        self, faulty: FaultyTransport, sleeps: list[float], ns: str, condition: str
    ) -> None:
        name, old, new = f"{ns}/lost-ack", value_of("old"), value_of("new")
        cond = RefWriteCondition.MISSING
        if condition == "match":
            faulty.inner.write_ref(name, old)
            cond = RefWriteCondition.match(old)
        faulty.plan = [Fault(lambda: ConnectionFailed("ack lost"), "after", "update_ref")]
        faulty.update_ref(name, cond, new)
        assert faulty.inner.read_ref(name) == new
        assert faulty.calls == ["update_ref", "update_ref", "read_ref"]

    @spec("T-RETRY-4")
    def test_lost_acknowledgement_then_overwritten_is_a_conflict(
        self, faulty: FaultyTransport, ns: str
    ) -> None:
        name, other = f"{ns}/lost-ack-moved", value_of("other")
        faulty.plan = [
            Fault(
                lambda: ConnectionFailed("ack lost"),
                "after",
                "update_ref",
                then=lambda: faulty.inner.write_ref(name, other),
            )
        ]
        with pytest.raises(RefConflict) as caught:
            faulty.update_ref(name, RefWriteCondition.MISSING, value_of("mine"))
        assert caught.value.current == other
        assert faulty.inner.read_ref(name) == other

    @spec("T-RETRY-4")
    def test_first_attempt_conflict_is_not_read_back(
        self, faulty: FaultyTransport, ns: str
    ) -> None:
        name = f"{ns}/plain-conflict"
        faulty.inner.write_ref(name, value_of("there"))
        with pytest.raises(RefConflict):
            faulty.update_ref(name, RefWriteCondition.MISSING, value_of("there"))
        assert faulty.calls == ["update_ref"], "a conflict on the first attempt is final"

    @spec("T-RETRY-5")
    def test_lost_acknowledgement_of_an_upload_is_success(
        self, faulty: FaultyTransport, salt: bytes
    ) -> None:
        data, key = make_pack(salt, "lost-ack-upload")
        faulty.plan = [Fault(lambda: ConnectionFailed("ack lost"), "after", "put_pack")]
        faulty.upload_pack(data, key)
        assert faulty.calls == ["put_pack", "put_pack"]
        assert faulty.inner.download_pack(key) == data

    @spec("T-RETRY-6")
    def test_broken_download_stream_resumes_where_it_stopped(
        self, faulty: FaultyTransport, sleeps: list[float], salt: bytes
    ) -> None:
        data, key = make_pack(salt, "resume", 100_000)
        faulty.inner.upload_pack(data, key)
        faulty.plan = [
            Fault(lambda: ConnectionFailed("cut"), "midstream", "open_pack_stream", 30_000),
            Fault(lambda: ConnectionFailed("cut"), "midstream", "open_pack_stream", 20_000),
        ]
        assert b"".join(faulty.download_pack_stream(key)) == data
        assert faulty.offsets == [0, 30_000, 50_000]
        assert sleeps == [1, 2]

    @spec("T-RETRY-7")
    def test_one_shot_stream_is_not_replayed_after_it_was_read(
        self, faulty: FaultyTransport, salt: bytes
    ) -> None:
        data, key = make_pack(salt, "one-shot", 50_000)
        faulty.plan = [Fault(lambda: ConnectionFailed("cut"), "after", "put_pack_stream")]
        faulty.plan[0].then = None
        with pytest.raises(ConnectionFailed):
            faulty.upload_pack_stream(key, iter([data]), len(data))
        assert faulty.calls == ["put_pack_stream"]
        replayable = [data[:10], data[10:]]
        faulty.plan = [Fault(lambda: ConnectionFailed("cut"), "before", "put_pack_stream")]
        faulty.upload_pack_stream(key, replayable, len(data))
        assert faulty.inner.download_pack(key) == data

    @spec("T-RETRY-8")
    @pytest.mark.parametrize(
        "verb",
        [
            "put_pack",
            "get_pack",
            "has_pack",
            "read_ref",
            "update_ref",
            "list_refs",
            "put_pack_stream",
            "open_pack_stream",
            "pack_size",
            "init_store",
        ],
    )
    def test_every_verb_is_retried(
        self, faulty: FaultyTransport, sleeps: list[float], salt: bytes, ns: str, verb: str
    ) -> None:
        data, key = make_pack(salt, f"every-{verb}")
        if verb not in ("put_pack", "put_pack_stream"):
            faulty.inner.upload_pack(data, key)
        faulty.plan = [Fault(lambda: ConnectionFailed("cut"), verb=verb)] * 2
        calls: dict[str, Callable[[Transport], object]] = {
            "put_pack": lambda t: t.upload_pack(data, key),
            "get_pack": lambda t: t.download_pack(key),
            "has_pack": lambda t: t.pack_exists(key),
            "read_ref": lambda t: t.read_ref(f"{ns}/x"),
            "update_ref": lambda t: t.write_ref(f"{ns}/x", value_of("x")),
            "list_refs": lambda t: t.list_refs(ns),
            "put_pack_stream": lambda t: t.upload_pack_stream(key, [data], len(data)),
            "open_pack_stream": lambda t: b"".join(t.download_pack_stream(key)),
            "pack_size": lambda t: t.pack_size(key),
            "init_store": lambda t: t.init_store(),
        }
        calls[verb](faulty)
        assert faulty.calls.count(verb) == 3
        assert sleeps == [1, 2]
        assert faulty.inner.download_pack(key) == data
