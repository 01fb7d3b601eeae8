"""A multipart upload left by a killed writer is resumed, never left behind (S3-26).

A push or mirror killed during a multipart upload cannot abort it: the upload and
its parts stay (billed, invisible to listings). The next upload of the same pack key
must pick it up. Each test makes that leftover through the raw boto3 client (what a
killed writer leaves), uploads the pack through the transport against real moto and
SeaweedFS, and checks with ``ListMultipartUploads`` that nothing is left for the key
and that the pack downloads verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from mkit_transport import Hash, PackKey, open_transport
from mkit_transport.transports.s3 import MIN_PART_SIZE, S3Transport
from tests.support.s3_fixtures import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1 << 20
PART = MIN_PART_SIZE  # 5 MiB parts keep the packs small


def _pack(size: int, label: bytes) -> tuple[bytes, PackKey]:
    block = Hash.of(label + size.to_bytes(8, "big")).hex().encode()
    data = (block * (size // len(block) + 1))[:size]
    return data, PackKey.of(data)


def _uploads(raw: S3Client, store: S3Store, object_key: str | None = None) -> list[str]:
    listed = raw.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    keys = [upload["Key"] for upload in listed.get("Uploads", [])]
    return [k for k in keys if object_key is None or k == object_key]


def _leftover(raw: S3Client, store: S3Store, object_key: str, parts: dict[int, bytes]) -> str:
    """An incomplete multipart upload holding ``parts``, as a killed writer leaves it."""
    upload = raw.create_multipart_upload(Bucket=store.bucket, Key=object_key)["UploadId"]
    for number, body in parts.items():
        raw.upload_part(
            Bucket=store.bucket, Key=object_key, UploadId=upload, PartNumber=number, Body=body
        )
    return upload


@pytest.fixture
def s3(s3_store: S3Store) -> Iterator[S3Transport]:
    transport = open_transport(
        s3_store.url, probe="false", part_size=str(PART), upload_cutoff="0", **s3_store.options
    )
    assert isinstance(transport, S3Transport)
    with transport:
        yield transport


@pytest.fixture
def sent_parts(s3: S3Transport, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The part numbers the transport sends (the real call still goes to the server)."""
    numbers: list[int] = []
    real = s3.client.upload_part

    def counting(**request: Any) -> Any:
        numbers.append(int(request["PartNumber"]))
        return real(**request)

    monkeypatch.setattr(s3.client, "upload_part", counting)
    return numbers


def test_a_killed_multipart_upload_is_resumed_reusing_matching_parts(
    s3_store: S3Store, s3: S3Transport, sent_parts: list[int]
) -> None:
    raw = s3_store.server.client()
    data, key = _pack(2 * PART + 2 * MIB, b"resume")  # parts of 5, 5 and 2 MiB
    object_key = s3.pack_key(key)
    # Part 1 landed whole; part 2 holds other bytes (a torn or foreign part).
    _leftover(raw, s3_store, object_key, {1: data[:PART], 2: b"x" * PART})
    chunks = iter([data[i : i + MIB] for i in range(0, len(data), MIB)])
    s3.upload_pack_stream(key, chunks, len(data))
    assert sent_parts == [2, 3], "part 1 was reused, part 2 sent over the wrong one"
    assert _uploads(raw, s3_store, object_key) == []
    assert s3.download_pack(key) == data  # verified against its key


def test_every_incomplete_multipart_upload_of_the_key_is_gone_afterwards(
    s3_store: S3Store, s3: S3Transport, sent_parts: list[int]
) -> None:
    raw = s3_store.server.client()
    data, key = _pack(PART + 3 * MIB, b"several")  # parts of 5 and 3 MiB
    object_key = s3.pack_key(key)
    other_data, other = _pack(PART + MIB, b"another pack")
    other_key = s3.pack_key(other)
    # Parts cut at another size (6 MiB) never match: every part is sent again.
    _leftover(raw, s3_store, object_key, {1: data[: 6 * MIB]})
    _leftover(raw, s3_store, object_key, {})
    _leftover(raw, s3_store, other_key, {1: other_data[:PART]})
    assert len(_uploads(raw, s3_store, object_key)) == 2
    s3.upload_pack_stream(key, iter([data]), len(data))
    assert sorted(sent_parts) == [1, 2]
    assert _uploads(raw, s3_store, object_key) == []
    assert _uploads(raw, s3_store) == [other_key], "another key's upload is not touched"
    assert s3.download_pack(key) == data
