"""S3 through a fault-injecting TCP proxy in front of real servers.

Each test opens a fresh client, so its first request opens the first connection the
proxy sees (boto3 keeps connections alive, and a fault applies to new connections).
The probe is skipped here (``probe=false``): it is tested on its own, and here it
would send the first requests. Sleeps are recorded, never slept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from mkit_transport import (
    ConnectionFailed,
    Hash,
    PackKey,
    RefWriteCondition,
    RetryPolicy,
    open_transport,
)
from mkit_transport.transports.s3 import S3Transport
from tests.support.faultproxy import FaultProxy
from tests.support.s3_fixtures import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1 << 20


@pytest.fixture
def proxy(s3_store: S3Store) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", s3_store.server.port) as started:
        yield started


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def raw(s3_store: S3Store) -> S3Client:
    return s3_store.server.client()


def _client(
    store: S3Store, proxy: FaultProxy, sleeps: list[float], retries: int = 5, **options: object
) -> S3Transport:
    url = f"mkit+s3+http://127.0.0.1:{proxy.port}/{store.bucket}/{store.prefix}"
    retry = RetryPolicy(retries=retries, sleep=sleeps.append)
    transport = open_transport(url, retry=retry, probe="false", **store.options, **options)
    assert isinstance(transport, S3Transport)
    return transport


def _pack(size: int, label: bytes = b"") -> tuple[bytes, PackKey]:
    block = Hash.of(label + size.to_bytes(8, "big")).hex().encode()
    data = (block * (size // len(block) + 1))[:size]
    return data, PackKey.of(data)


def _uploads(raw: S3Client, store: S3Store) -> list[str]:
    listed = raw.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    return [upload["Key"] for upload in listed.get("Uploads", [])]


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_cut_upload_is_retried(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float], mode: str
) -> None:
    data, key = _pack(2 * MIB)
    proxy.set_fault(mode, after_bytes=MIB, direction="up", count=1)
    with _client(s3_store, proxy, sleeps) as s3:
        s3.upload_pack(data, key)
        assert sleeps == [1]
        assert s3.download_pack(key) == data


def test_blackhole_times_out_through_the_whole_ladder(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float]
) -> None:
    proxy.set_fault("blackhole")
    with (
        _client(s3_store, proxy, sleeps, read_timeout=0.3, connect_timeout=0.3) as s3,
        pytest.raises(ConnectionFailed),
    ):
        s3.read_ref("refs/heads/main")
    assert sleeps == [1, 2, 4, 8, 16]
    assert proxy.accepted == 6, "one connection per attempt, no hidden boto3 retries"


def test_refused_connections_are_retried_then_fail(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float]
) -> None:
    proxy.set_fault("refuse", count=2)
    with _client(s3_store, proxy, sleeps) as s3:
        assert s3.read_ref("refs/heads/absent") is None
    assert sleeps == [1, 2]


def test_download_stream_reset_midway_resumes(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float], raw: S3Client
) -> None:
    data, key = _pack(10 * MIB, b"resume")
    raw.put_object(Bucket=s3_store.bucket, Key=s3_store.key(f"packs/{key.hex()}"), Body=data)
    proxy.set_fault("reset", after_bytes=3 * MIB, direction="down", count=1)
    with _client(s3_store, proxy, sleeps) as s3:
        assert b"".join(s3.download_pack_stream(key)) == data
    assert sleeps == [1]


def test_lost_acknowledgement_of_a_missing_write_is_success(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float], raw: S3Client
) -> None:
    """The PUT lands, its answer is cut; the retry gets 412; the read-back says it was ours.

    First find, without retries, a cut point in the answer where the call fails yet
    the ref holds the value (the acknowledgement was lost; where exactly depends on
    the server's ``100 Continue`` and header sizes). Then the same cut with retries
    must succeed.
    """

    def stored(name: str) -> bytes | None:
        try:
            reply = raw.get_object(Bucket=s3_store.bucket, Key=s3_store.ref_key(name))
        except raw.exceptions.NoSuchKey:
            return None
        return reply["Body"].read()

    lost_ack_at = None
    for after in range(28, 200, 8):
        name = f"refs/heads/probe-{after}"
        proxy.set_fault("close", after_bytes=after, direction="down", count=1)
        with _client(s3_store, proxy, sleeps, retries=0) as s3:
            try:
                s3.update_ref(name, RefWriteCondition.MISSING, Hash.of(b"v"))
            except ConnectionFailed:
                if stored(name) is not None:
                    lost_ack_at = after
                    break
    assert lost_ack_at is not None, "no cut point lost only the acknowledgement"
    value = Hash.of(b"mine")
    proxy.set_fault("close", after_bytes=lost_ack_at, direction="down", count=1)
    with _client(s3_store, proxy, sleeps) as s3:
        s3.update_ref("refs/heads/ack", RefWriteCondition.MISSING, value)
    assert sleeps == [1]
    assert stored("refs/heads/ack") == value.hex().encode() + b"\n"


def test_cut_ref_write_never_leaves_a_torn_ref(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float]
) -> None:
    """Cut right after ``100 Continue``: the body never arrives, and no empty ref appears.

    SeaweedFS 4.48 stores an empty object in that case unless the PUT carries
    Content-MD5, which the transport sends with every ref write.
    """
    value = Hash.of(b"x")
    proxy.set_fault("close", after_bytes=1, direction="down", count=1)
    with _client(s3_store, proxy, sleeps, retries=0) as s3:
        with pytest.raises(ConnectionFailed):
            s3.update_ref("refs/heads/torn", RefWriteCondition.MISSING, value)
        stored = s3.read_ref("refs/heads/torn")  # an empty object would be InvalidResponse
        assert stored in (None, value), "absent, or landed whole: never torn"
        s3.write_ref("refs/heads/torn", value)


def test_cut_multipart_upload_leaves_no_object_and_no_parts(
    s3_store: S3Store, proxy: FaultProxy, sleeps: list[float], raw: S3Client
) -> None:
    """A one-shot stream cannot be replayed: the part fails, the upload is aborted.

    Every connection may carry 4 MiB upstream: small requests pass, an 8 MiB part
    is always cut.
    """
    data, key = _pack(12 * MIB, b"cut-mpu")
    proxy.set_fault("reset", after_bytes=4 * MIB, direction="up")
    with _client(
        s3_store, proxy, sleeps, retries=0, part_size=str(8 * MIB), upload_cutoff="0"
    ) as s3:
        chunks = iter([data[i : i + MIB] for i in range(0, len(data), MIB)])
        with pytest.raises(ConnectionFailed):
            s3.upload_pack_stream(key, chunks, len(data))
        assert s3.pack_exists(key) is False
    assert _uploads(raw, s3_store) == [], "the multipart upload was aborted"


def test_multipart_parts_are_retried_on_their_own(
    s3_store: S3Store, proxy: FaultProxy, raw: S3Client
) -> None:
    """The first part is cut; only it is sent again (the stream is one-shot).

    One part in flight (``upload_workers=1``), so "the first part" is the only one
    the proxy sees while it cuts; with several, each would be cut and retried alike.
    """
    data, key = _pack(20 * MIB, b"retry-part")
    proxy.set_fault("close", after_bytes=4 * MIB, direction="up")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the network heals during the first back-off
        sleeps.append(seconds)
        proxy.set_fault("pass")

    url = f"mkit+s3+http://127.0.0.1:{proxy.port}/{s3_store.bucket}/{s3_store.prefix}"
    retry = RetryPolicy(sleep=sleep)
    options = {
        "part_size": str(8 * MIB),
        "upload_workers": "1",
        "upload_cutoff": "0",
        **s3_store.options,
    }
    with open_transport(url, retry=retry, probe="false", **options) as s3:
        chunks = iter([data[i : i + MIB] for i in range(0, len(data), MIB)])
        s3.upload_pack_stream(key, chunks, len(data))
        assert sleeps == [1]
        assert s3.download_pack(key) == data
    assert _uploads(raw, s3_store) == []


def test_a_part_that_always_fails_costs_one_ladder_not_its_square(
    s3_store: S3Store,
    proxy: FaultProxy,
    sleeps: list[float],
    raw: S3Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Part retries and the core's retry of the upload climb one ladder: six attempts.

    The stream is a list, so the core could replay it: before, every replay gave the
    part a fresh ladder of its own (6 x 6 attempts, 35 sleeps). One part in flight,
    so the first part's attempts are the only ones counted.
    """
    data, key = _pack(12 * MIB, b"stuck-part")
    proxy.set_fault("reset", after_bytes=4 * MIB, direction="up")  # every 8 MiB part cut
    with _client(
        s3_store, proxy, sleeps, part_size=str(8 * MIB), upload_workers="1", upload_cutoff="0"
    ) as s3:
        sent: list[int] = []
        upload_part = s3.client.upload_part

        def counting(**request: Any) -> Any:
            sent.append(request["PartNumber"])
            return upload_part(**request)

        monkeypatch.setattr(s3.client, "upload_part", counting)
        chunks = [data[i : i + MIB] for i in range(0, len(data), MIB)]
        with pytest.raises(ConnectionFailed):
            s3.upload_pack_stream(key, chunks, len(data))
        assert sent == [1] * 6
        assert sleeps == [1, 2, 4, 8, 16]
        assert s3.pack_exists(key) is False
    assert _uploads(raw, s3_store) == [], "the multipart upload was aborted"
