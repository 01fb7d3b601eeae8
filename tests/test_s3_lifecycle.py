"""S3 lifecycle verbs (spec/SPEC-S3.md, "Listing and deleting") on moto and SeaweedFS."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mkit_transport import Hash, PackKey, RefWriteCondition, RemoteError, open_transport
from mkit_transport.transports import s3
from tests.support.s3_fixtures import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_DATA = b"a pack that is kept"
_KEY = PackKey.of(_DATA)


@pytest.mark.server
def test_listing_skips_torn_objects_and_multipart_uploads(s3_store: S3Store) -> None:
    client: S3Client = s3_store.server.client()
    with open_transport(s3_store.url, **s3_store.options) as store:
        store.upload_pack(_DATA, _KEY)
        torn = PackKey.of(b"torn")
        client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(f"packs/{torn.hex()}"), Body=b"")
        client.put_object(Bucket=s3_store.bucket, Key=s3_store.key("packs/README"), Body=b"x")
        pending = PackKey.of(b"pending")
        upload = client.create_multipart_upload(
            Bucket=s3_store.bucket, Key=s3_store.key(f"packs/{pending.hex()}")
        )
        try:
            assert [(i.key, i.size) for i in store.list_packs()] == [(_KEY, len(_DATA))]
            assert [i.key for i in store.list_packs(page_size=1)] == [_KEY]
        finally:
            client.abort_multipart_upload(
                Bucket=s3_store.bucket,
                Key=s3_store.key(f"packs/{pending.hex()}"),
                UploadId=upload["UploadId"],
            )


@pytest.mark.server
def test_match_delete_is_refused_where_conditional_deletes_are_ignored(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, value = "refs/heads/main", Hash.of(b"main")
    with open_transport(s3_store.url, **s3_store.options) as store:
        assert isinstance(store, s3.S3Transport)
        store.write_ref(name, value)
        verdict = s3.ProbeResult(True, True, "stale If-Match deleted", delete_if_match=False)
        monkeypatch.setitem(s3._probed, (store.endpoint, store.bucket), verdict)
        with pytest.raises(RemoteError, match="DeleteObject"):
            store.delete_ref(name, RefWriteCondition.match(value))
        assert store.read_ref(name) == value, "nothing deleted"
        store.update_ref(name, RefWriteCondition.match(value), Hash.of(b"next"))  # writes work
        store.delete_ref(name, RefWriteCondition.ANY)  # and so does an unconditional delete
        assert store.read_ref(name) is None
    with open_transport(s3_store.url, probe=True, **s3_store.options) as fresh:
        assert isinstance(fresh, s3.S3Transport)
        assert fresh.probe().delete_if_match, "both servers here honour conditional deletes"
