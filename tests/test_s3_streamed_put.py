"""S3-32: a streamed pack up to ``upload_cutoff`` goes in one PUT signed frame by frame.

The signer is checked against AWS's published example; everything else runs against
moto and SeaweedFS (which verifies SigV4, chunk signatures included), directly and
through the fault-injecting proxy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    InvalidArgument,
    PackKey,
    ProtocolError,
    RetryPolicy,
    open_transport,
)
from mkit_transport.transports._s3_streaming import (
    STREAMING_PAYLOAD,
    StreamSigner,
    encoded_length,
    frames,
)
from mkit_transport.transports.s3 import DEFAULT_UPLOAD_CUTOFF, S3Transport
from testbed.s3_servers import BUCKET, S3Server
from tests.support.faultproxy import FaultProxy
from tests.support.s3_fixtures import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1 << 20
PART = 5 * MIB  # the smallest part_size: a 12 MiB stream is over it, far under the cutoff


def _pack(size: int, label: bytes) -> tuple[bytes, PackKey]:
    block = Hash.of(label + size.to_bytes(8, "big")).hex().encode()
    data = (block * (size // len(block) + 1))[:size]
    return data, PackKey.of(data)


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def _open(url: str, store: S3Store, **options: object) -> S3Transport:
    transport = open_transport(url, probe="false", part_size=str(PART), **store.options, **options)
    assert isinstance(transport, S3Transport)
    return transport


def _stored(raw: S3Client, store: S3Store, key: PackKey) -> dict[str, object] | None:
    """The object under ``key`` (HEAD), or None; and no multipart upload may be left."""
    listed = raw.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    assert listed.get("Uploads", []) == [], "a single PUT never starts a multipart upload"
    listing = raw.list_objects_v2(Bucket=store.bucket, Prefix=store.key(f"packs/{key.hex()}"))
    if not listing.get("Contents"):
        return None
    head = raw.head_object(Bucket=store.bucket, Key=store.key(f"packs/{key.hex()}"))
    return {"size": head["ContentLength"], "etag": head["ETag"]}


@pytest.fixture
def raw(s3_store: S3Store) -> S3Client:
    return s3_store.server.client()


# -- the signer and the framing, offline ----------------------------------------------------


def test_signer_reproduces_the_aws_streaming_example() -> None:
    """AWS's worked example (sigv4-streaming): seed, both frames and the final one."""
    signer = StreamSigner(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "us-east-1",
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": signer.amz_date,
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": STREAMING_PAYLOAD,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": str(encoded_length(66560, frame=65536)),
    }
    assert headers["content-length"] == "66824"
    authorization, seed = signer.seed("PUT", "/examplebucket/chunkObject.txt", headers)
    assert seed == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class,Signature="
    )
    cut = list(frames([b"a" * 66560], frame=65536))
    assert [len(piece) for piece in cut] == [65536, 1024]
    signatures, previous = [], seed
    for piece in [*cut, b""]:
        previous = signer.frame(previous, piece)
        signatures.append(previous)
    assert signatures == [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]


@pytest.mark.parametrize("sizes", [[10], [3, 3, 3, 1], [1] * 10, [4, 0, 6], [7, 13]])
def test_frames_recut_any_chunking_into_exact_frames(sizes: list[int]) -> None:
    data = bytes(range(sum(sizes)))
    chunks, at = [], 0
    for size in sizes:
        chunks.append(data[at : at + size])
        at += size
    cut = list(frames(chunks, frame=4))
    assert b"".join(cut) == data
    assert all(len(piece) == 4 for piece in cut[:-1]) and 0 < len(cut[-1]) <= 4


def test_the_last_frame_is_held_back_until_the_stream_ends_cleanly() -> None:
    """A stream that fails at its end (the core's check) never gives out its last frame."""

    def failing() -> Iterator[bytes]:
        yield b"a" * 8
        yield b"b" * 8
        raise ProtocolError("mis-hashed")

    given: list[bytes] = []
    with pytest.raises(ProtocolError):
        for piece in frames(failing(), frame=4):
            given.append(piece)
    assert b"".join(given) == b"a" * 8 + b"b" * 4, "the last 4 bytes were never given out"


def test_upload_cutoff_validation() -> None:
    local = open_transport("mkit+s3+http://127.0.0.1:9/bucket", probe="false")
    assert isinstance(local, S3Transport) and local.upload_cutoff == DEFAULT_UPLOAD_CUTOFF
    remote = open_transport("mkit+s3://s3.example.com/bucket", probe="false")
    assert isinstance(remote, S3Transport) and remote.upload_cutoff == 0
    off = open_transport("mkit+s3+http://127.0.0.1:9/bucket?upload_cutoff=0", probe="false")
    assert isinstance(off, S3Transport) and off.upload_cutoff == 0
    for url in (
        "mkit+s3+http://127.0.0.1:9/bucket?upload_cutoff=-1",
        f"mkit+s3+http://127.0.0.1:9/bucket?upload_cutoff={(5 << 30) + 1}",
        "mkit+s3+http://127.0.0.1:9/bucket?upload_cutoff=big",
        "mkit+s3://s3.example.com/bucket?upload_cutoff=1048576000",
    ):
        with pytest.raises(InvalidArgument):
            open_transport(url, probe="false")


# -- real servers ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [MIB, 300_000], ids=["whole-frames", "odd-chunks"])
def test_a_streamed_pack_under_the_cutoff_is_one_put(
    s3_store: S3Store, raw: S3Client, chunk: int
) -> None:
    """One PUT: the object's ETag is the MD5 of its bytes (a multipart one ends ``-N``)."""
    data, key = _pack(12 * MIB + 12345, b"one-put")
    with _open(s3_store.url, s3_store) as s3:
        s3.upload_pack_stream(key, _pieces(data, chunk), len(data))
        assert s3.download_pack(key) == data
    stored = _stored(raw, s3_store, key)
    assert stored == {"size": len(data), "etag": f'"{hashlib.md5(data).hexdigest()}"'}


@pytest.mark.parametrize("fault", ["mis-hashed", "short", "long", "source-fails"])
def test_a_bad_stream_stores_nothing(s3_store: S3Store, raw: S3Client, fault: str) -> None:
    """The core refuses the stream at its end: the held-back frame is never sent."""
    data, key = _pack(12 * MIB, b"bad-stream")
    declared = len(data)
    pieces = _pieces(data, MIB)
    if fault == "mis-hashed":
        pieces[-1] = pieces[-1][:-1] + bytes([pieces[-1][-1] ^ 1])
    elif fault == "short":
        pieces = pieces[:-1]
    elif fault == "long":
        pieces.append(b"x")

    def source() -> Iterator[bytes]:
        yield from pieces[:6]
        raise OSError("disk went away")

    chunks = source() if fault == "source-fails" else iter(pieces)
    with _open(s3_store.url, s3_store) as s3:
        with pytest.raises(OSError if fault == "source-fails" else ProtocolError):
            s3.upload_pack_stream(key, chunks, declared)
        assert s3.pack_exists(key) is False
    assert _stored(raw, s3_store, key) is None


@pytest.fixture
def cutting(s3_store: S3Store) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy that cuts every connection after 4 MiB up (small requests pass), its URL."""
    with FaultProxy("127.0.0.1", s3_store.server.port) as proxy:
        proxy.set_fault("reset", after_bytes=4 * MIB, direction="up")
        yield proxy, f"mkit+s3+http://127.0.0.1:{proxy.port}/{s3_store.bucket}/{s3_store.prefix}"


def test_a_cut_put_is_retried_whole_from_a_re_iterable_stream(
    s3_store: S3Store, raw: S3Client, cutting: tuple[FaultProxy, str]
) -> None:
    proxy, url = cutting
    data, key = _pack(12 * MIB, b"cut-retried")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the network heals during the first back-off
        sleeps.append(seconds)
        proxy.set_fault("pass")

    with _open(url, s3_store, retry=RetryPolicy(sleep=sleep)) as s3:
        s3.upload_pack_stream(key, _pieces(data, MIB), len(data))
        assert sleeps == [1]
        assert s3.download_pack(key) == data
    assert _stored(raw, s3_store, key) == {
        "size": len(data),
        "etag": f'"{hashlib.md5(data).hexdigest()}"',
    }


def test_a_cut_put_of_a_one_shot_stream_fails_and_stores_nothing(
    s3_store: S3Store, raw: S3Client, cutting: tuple[FaultProxy, str]
) -> None:
    _, url = cutting
    data, key = _pack(12 * MIB, b"cut-one-shot")
    sleeps: list[float] = []
    with _open(url, s3_store, retry=RetryPolicy(sleep=sleeps.append)) as s3:
        with pytest.raises(ConnectionFailed):
            s3.upload_pack_stream(key, iter(_pieces(data, MIB)), len(data))
        assert sleeps == [], "a one-shot stream already read from is not retried"
    assert _stored(raw, s3_store, key) is None


def test_seaweedfs_refuses_a_wrong_seed_signature_and_nothing_is_stored(
    seaweedfs_server: S3Server,
) -> None:
    """The request's own signature is checked (a wrong secret): AccessDenied, nothing stored.

    SeaweedFS (4.x) checks the seed but not the frames' signatures; those are
    checked against AWS's published example above.
    """
    store = S3Store(seaweedfs_server, BUCKET, "signed-seed")
    data, key = _pack(12 * MIB, b"signatures")
    with _open(store.url, store) as s3:
        access, _, token = s3._keys
        s3._keys = (access, "not-the-secret", token)  # botocore's HEAD still signs right
        with pytest.raises(AccessDenied):
            s3.upload_pack_stream(key, _pieces(data, MIB), len(data))
    assert _stored(seaweedfs_server.client(), store, key) is None
