"""The whole conformance suite against two real S3 servers: moto and SeaweedFS."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mkit_transport import PackKey, RetryPolicy, Transport, open_transport
from mkit_transport.conformance import ConformanceSuite, Harness
from tests.support.conformance_parts import error_mapping_tested_elsewhere
from tests.support.s3_fixtures import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3Backdoor:
    """Raw access to the bucket with a plain boto3 client, bypassing the transport."""

    def __init__(self, store: S3Store) -> None:
        self.client: S3Client = store.server.client()
        self.store = store

    def _read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.store.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.store.bucket, Key=key, Body=data)

    def read_ref_bytes(self, name: str) -> bytes | None:
        return self._read(self.store.ref_key(name))

    def write_ref_bytes(self, name: str, data: bytes) -> None:
        self._write(self.store.ref_key(name), data)

    def read_pack_bytes(self, key: PackKey) -> bytes | None:
        return self._read(self.store.key(f"packs/{key.hex()}"))

    def write_pack_bytes(self, key: PackKey, data: bytes) -> None:
        self._write(self.store.key(f"packs/{key.hex()}"), data)


@error_mapping_tested_elsewhere
class TestS3Conformance(ConformanceSuite):
    """Each test gets a fresh prefix on each server; races run in separate processes."""

    @pytest.fixture
    def harness(self, s3_store: S3Store) -> Harness:
        def opener(retry: RetryPolicy | None) -> Transport:
            extra = {} if retry is None else {"retry": retry}
            return open_transport(s3_store.url, **s3_store.options, **extra)

        return Harness(
            open=opener,
            url=s3_store.url,
            options=s3_store.options,
            backdoor=S3Backdoor(s3_store),
            fresh=True,
            large_pack_size=24 << 20,  # three 8 MiB multipart parts
            stateful_examples=10,
        )
