"""S3 ``init_store`` (spec/SPEC-S3.md, "Creating a store") on moto and SeaweedFS.

A store is a bucket and a prefix: init creates a missing bucket and only looks at an
existing one; every other verb on a missing bucket fails and creates nothing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from mkit_transport import Hash, PackKey, RemoteError, open_transport
from testbed.s3_servers import S3Server
from tests.support.s3_fixtures import S3Store


@pytest.fixture
def new_bucket(s3_server: S3Server) -> Iterator[str]:
    """A bucket name nobody has used; removed (with its objects) after the test."""
    name = f"mkit-init-{uuid.uuid4().hex[:12]}"
    yield name
    client = s3_server.client()
    with contextlib.suppress(Exception):
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        for item in listed:
            client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


def _bucket_exists(server: S3Server, name: str) -> bool:
    return any(b["Name"] == name for b in server.client().list_buckets().get("Buckets", []))


def test_init_creates_a_missing_bucket_then_finds_it(s3_server: S3Server, new_bucket: str) -> None:
    url = f"mkit+s3+http://127.0.0.1:{s3_server.port}/{new_bucket}/some/prefix"
    options = {
        "access_key_id": s3_server.access_key,
        "secret_access_key": s3_server.secret_key,
        "retries": 0,
    }
    data = b"a pack in a new bucket"
    with open_transport(url, **options) as transport:
        with pytest.raises(RemoteError, match="NoSuchBucket"):
            transport.read_ref("refs/heads/main")
        with pytest.raises(RemoteError, match="NoSuchBucket"):
            transport.list_refs()
        if s3_server.name == "moto":  # SeaweedFS creates a bucket on a PUT by itself
            with pytest.raises(RemoteError, match="NoSuchBucket"):
                transport.write_ref("refs/heads/main", Hash.of(b"x"))
            with pytest.raises(RemoteError, match="NoSuchBucket"):
                transport.upload_pack(data, PackKey.of(data))
        assert not _bucket_exists(s3_server, new_bucket), "no verb but init creates a bucket"
        assert transport.init_store() is True
        assert _bucket_exists(s3_server, new_bucket)
        assert transport.init_store() is False
        transport.upload_pack(data, PackKey.of(data))
        transport.write_ref("refs/heads/main", Hash.of(b"x"))
        assert transport.download_pack(PackKey.of(data)) == data
        assert transport.read_ref("refs/heads/main") == Hash.of(b"x")


def test_init_keeps_an_existing_bucket_and_its_objects(s3_store: S3Store) -> None:
    client = s3_store.server.client()
    client.put_object(Bucket=s3_store.bucket, Key=s3_store.key("foreign"), Body=b"mine")

    def listing() -> list[tuple[str, str]]:
        found = client.list_objects_v2(Bucket=s3_store.bucket, Prefix=s3_store.prefix + "/")
        return [(o["Key"], o["ETag"]) for o in found.get("Contents", [])]

    before = listing()
    with open_transport(s3_store.url, **s3_store.options) as transport:
        assert transport.init_store() is False
        assert transport.init_store() is False
    assert listing() == before
    body = client.get_object(Bucket=s3_store.bucket, Key=s3_store.key("foreign"))["Body"]
    assert body.read() == b"mine"
