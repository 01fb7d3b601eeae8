"""S3 transport against real servers: URLs, key layout, CAS details, listing, probe, credentials."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mkit_transport import (
    AccessDenied,
    Hash,
    InsecureScheme,
    InvalidArgument,
    InvalidResponse,
    PackKey,
    RefConflict,
    RefWriteCondition,
    RemoteError,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.transports import s3 as s3_module
from mkit_transport.transports.s3 import S3Transport
from testbed.s3_servers import BUCKET, S3Server
from tests.support.s3_fixtures import ConditionStrippingProxy, S3Store

A, B, C = (Hash.of(label) for label in (b"a", b"b", b"c"))


def _open(store: S3Store, **options: object) -> S3Transport:
    transport = open_transport(store.url, **store.options, **options)
    assert isinstance(transport, S3Transport)
    return transport


@pytest.fixture
def s3(s3_store: S3Store) -> Iterator[S3Transport]:
    with _open(s3_store) as transport:
        yield transport


def _keys(store: S3Store) -> list[str]:
    client = store.server.client()
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=store.prefix + "/"
    )
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


# -- URLs and options (no I/O) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint", "bucket", "prefix"),
    [
        ("mkit+s3://s3.example.com/bkt", "https://s3.example.com", "bkt", ""),
        ("mkit+s3://s3.example.com/bkt/", "https://s3.example.com", "bkt", ""),
        ("mkit+s3://h:9000/my-bucket/a/b.c/d_e", "https://h:9000", "my-bucket", "a/b.c/d_e"),
        ("mkit+s3+http://127.0.0.1:9000/bkt/p", "http://127.0.0.1:9000", "bkt", "p"),
        ("mkit+s3+http://localhost/bkt", "http://localhost", "bkt", ""),
        ("mkit+s3+http://[::1]:9000/bkt", "http://[::1]:9000", "bkt", ""),
    ],
)
def test_url_forms(url: str, endpoint: str, bucket: str, prefix: str) -> None:
    with open_transport(url, access_key_id="k", secret_access_key="s") as transport:
        assert isinstance(transport, S3Transport)
        assert (transport.endpoint, transport.bucket, transport.prefix) == (
            endpoint,
            bucket,
            prefix,
        )


@pytest.mark.parametrize(
    "url",
    [
        "mkit+s3://host",  # no bucket
        "mkit+s3://host/",
        "mkit+s3:///bkt",  # no host
        "mkit+s3://host/Upper",  # not a bucket name
        "mkit+s3://host/b",  # too short
        "mkit+s3://host/bkt//p",  # empty segment
        "mkit+s3://host/bkt/p/",  # trailing slash
        "mkit+s3://host/bkt/./p",
        "mkit+s3://host/bkt/../p",
        "mkit+s3://host/bkt/p%2Fq",
        "mkit+s3://host/bkt/p\\q",
        "mkit+s3://host/bkt/" + "p" * 501,
        "mkit+s3://host:99999/bkt",  # bad port
        "mkit+s3://user:pw@host/bkt",  # credentials in the URL
        "mkit+s3://host/bkt?secret_access_key=x",
        "mkit+s3://host/bkt?unknown=1",
        "mkit+s3://host/bkt?part_size=1024",  # below S3's 5 MiB part minimum
        "mkit+s3://host/bkt?part_size=lots",
        "mkit+s3://host/bkt?access_key_id=only-half",
        "s3://host/bkt",  # bare scheme
    ],
)
def test_bad_urls_are_invalid_argument(url: str) -> None:
    with pytest.raises(InvalidArgument):
        open_transport(url)


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("secret_access_key=SECRET", "secret_access_key"),
        ("%73ecret_access_key=SECRET", "secret_access_key"),
        ("region=x&session%5Ftoken=SECRET", "session_token"),
        ("session_token=SECRET%20x", "session_token"),  # refused before the space is
    ],
)
def test_a_secret_in_the_url_is_refused_however_spelled(
    monkeypatch: pytest.MonkeyPatch, query: str, key: str
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(S3Transport, "__init__", lambda *args, **kw: opened.append(args))
    with pytest.raises(InvalidArgument, match=f"{key} may not appear in a URL") as refused:
        open_transport(f"mkit+s3+http://127.0.0.1:1/bkt?{query}")
    assert "SECRET" not in str(refused.value)
    assert opened == []


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1", "[2001:db8::1]", "127.0.0.1.nip.io"])
def test_plain_http_only_to_loopback(host: str) -> None:
    with pytest.raises(InsecureScheme):
        open_transport(f"mkit+s3+http://{host}/bkt")


# -- layout and CAS on real servers --------------------------------------------------


def test_key_layout(s3: S3Transport, s3_store: S3Store) -> None:
    """Packs under packs/<hex>, refs under their name, 65 bytes; nothing else left."""
    data = b"pack bytes"
    key = PackKey.of(data)
    s3.upload_pack(data, key)
    s3.update_ref("refs/heads/main", RefWriteCondition.MISSING, A)
    s3.update_ref("refs/heads/main", RefWriteCondition.match(A), B)
    assert _keys(s3_store) == [
        s3_store.key("packs/" + key.hex()),
        s3_store.ref_key("refs/heads/main"),
    ], "the probe cleans up after itself"
    raw = s3_store.server.client().get_object(
        Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/main")
    )["Body"]
    assert raw.read() == B.hex().encode() + b"\n"


def test_match_works_when_the_etag_is_not_an_md5(s3: S3Transport, s3_store: S3Store) -> None:
    """A ref stored by multipart upload has an ETag like "...-1", never MD5(body).

    Upstream sent If-Match: MD5(expected wire form), which can never match such an
    object: every CAS would fail. Reading the ETag the server gave cannot.
    """
    client = s3_store.server.client()
    object_key = s3_store.ref_key("refs/heads/mpu")
    upload = client.create_multipart_upload(Bucket=s3_store.bucket, Key=object_key)
    part = client.upload_part(
        Bucket=s3_store.bucket,
        Key=object_key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=A.hex().encode() + b"\n",
    )
    client.complete_multipart_upload(
        Bucket=s3_store.bucket,
        Key=object_key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert client.head_object(Bucket=s3_store.bucket, Key=object_key)["ETag"].endswith('-1"')
    s3.update_ref("refs/heads/mpu", RefWriteCondition.match(A), B)
    assert s3.read_ref("refs/heads/mpu") == B


def test_a_ref_and_its_children_in_either_order(s3: S3Transport) -> None:
    """A child first, then the parent with MISSING: SeaweedFS answered 412 for a bare
    ``refs/a`` key once ``refs/a/b`` existed (a "directory"); ``<name>/.ref`` keys avoid it.
    """
    s3.write_ref("refs/p/a/b", A)
    s3.update_ref("refs/p/a", RefWriteCondition.MISSING, B)
    s3.update_ref("refs/p/a/b/c", RefWriteCondition.MISSING, C)
    s3.update_ref("refs/p/a", RefWriteCondition.match(B), C)
    assert [(r.name, r.hash) for r in s3.list_refs("refs/p")] == [
        ("a", C),
        ("a/b", A),
        ("a/b/c", C),
    ]


def test_match_on_absent_and_changed_refs_reports_current(s3: S3Transport) -> None:
    with pytest.raises(RefConflict) as absent:
        s3.update_ref("refs/heads/x", RefWriteCondition.match(A), B)
    assert absent.value.known and absent.value.current is None
    s3.write_ref("refs/heads/x", C)
    with pytest.raises(RefConflict) as changed:
        s3.update_ref("refs/heads/x", RefWriteCondition.match(A), B)
    assert changed.value.current == C
    with pytest.raises(RefConflict) as exists:
        s3.update_ref("refs/heads/x", RefWriteCondition.MISSING, B)
    assert exists.value.current == C
    assert s3.read_ref("refs/heads/x") == C


def test_listing_paginates_skips_foreign_objects_and_never_reads_packs(
    s3: S3Transport, s3_store: S3Store
) -> None:
    client = s3_store.server.client()
    body = A.hex().encode() + b"\n"
    names = [f"refs/many/r{i:04d}" for i in range(1050)]  # over one 1000-key page

    def plant(name: str) -> None:
        client.put_object(Bucket=s3_store.bucket, Key=s3_store.ref_key(name), Body=body)

    with ThreadPoolExecutor(8) as pool:  # the client is thread-safe; 1050 PUTs in turn are slow
        list(pool.map(plant, names))
    for foreign in ("refs/many/", "refs/many/r0000", "refs/many/x/.ref/y"):
        client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(foreign), Body=b"")
    client.put_object(Bucket=s3_store.bucket, Key=s3_store.key("packs/junk"), Body=b"x" * 100)
    listed = s3.list_refs("refs/many")
    assert [r.name for r in listed] == [n.removeprefix("refs/many/") for n in names]
    assert {r.hash for r in listed} == {A}
    assert len(s3.list_refs("")) == 1050


def test_listing_refuses_a_ref_of_the_wrong_size(s3: S3Transport, s3_store: S3Store) -> None:
    s3.write_ref("refs/ok/a", A)
    s3_store.server.client().put_object(
        Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/ok/b"), Body=b"x" * 10_000
    )
    with pytest.raises(InvalidResponse):
        s3.list_refs("refs/ok")
    with pytest.raises(InvalidResponse):
        s3.read_ref("refs/ok/b")


# -- probe ---------------------------------------------------------------------------


def test_probe_passes_on_real_servers(s3: S3Transport, s3_store: S3Store) -> None:
    result = s3.probe()
    assert result.ok, result.detail
    assert _keys(s3_store) == []


def test_cas_is_refused_behind_a_gateway_that_drops_conditions(
    stripping_proxy: ConditionStrippingProxy, moto_server: S3Server
) -> None:
    url = f"mkit+s3+http://127.0.0.1:{stripping_proxy.port}/{BUCKET}/strip"
    client = moto_server.client()
    with open_transport(url, access_key_id="k", secret_access_key="s") as transport:
        assert isinstance(transport, S3Transport)
        verdict = transport.probe()
        assert not verdict.if_none_match and not verdict.if_match
        for condition in (RefWriteCondition.MISSING, RefWriteCondition.match(A)):
            with pytest.raises(RemoteError, match="ignores conditional writes"):
                transport.update_ref("refs/heads/guarded", condition, B)
        with pytest.raises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=BUCKET, Key="strip/refs/heads/guarded/.ref")
        transport.write_ref("refs/heads/plain", A)  # ANY needs no condition
        assert transport.read_ref("refs/heads/plain") == A
        place = (transport.endpoint, transport.bucket)
        assert s3_module._probed[place].ok is False  # cached: probed once per process


def test_probe_can_be_skipped_for_a_trusted_endpoint(s3_store: S3Store) -> None:
    with _open(s3_store, probe="false") as transport:
        s3_module._probed.pop((transport.endpoint, transport.bucket), None)
        transport.update_ref("refs/heads/t", RefWriteCondition.MISSING, A)
        assert (transport.endpoint, transport.bucket) not in s3_module._probed


def test_cli_probe(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_store.server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store.server.secret_key)
    out = io.StringIO()
    assert main(["probe", s3_store.url, "--json"], out=out) == 0
    assert '"ok": true' in out.getvalue()


def test_cli_probe_fails_behind_a_stripping_gateway(
    stripping_proxy: ConditionStrippingProxy, tmp_path: Path
) -> None:
    """As a real subprocess: exit status 1 and both conditions reported ignored."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    url = f"mkit+s3+http://127.0.0.1:{stripping_proxy.port}/{BUCKET}/cli"
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "probe", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 1, done.stderr
    assert "If-None-Match: IGNORED" in done.stdout
    assert "If-Match:      IGNORED" in done.stdout


def test_cli_probe_refuses_other_schemes(tmp_path: Path) -> None:
    assert main(["probe", f"mkit+file://{tmp_path}"]) == 21  # InvalidArgument


# -- credentials ---------------------------------------------------------------------


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never leave loopback


def test_wrong_credentials_are_access_denied_and_write_nothing(
    seaweedfs_server: S3Server, no_ambient_credentials: None
) -> None:
    store = S3Store(seaweedfs_server, BUCKET, "denied")
    data = b"never stored"
    key = PackKey.of(data)
    with open_transport(store.url, access_key_id="testing", secret_access_key="wrong") as bad:
        for verb in (
            lambda: bad.upload_pack(data, key),
            lambda: bad.upload_pack_stream(key, [data], len(data)),
            lambda: bad.write_ref("refs/heads/x", A),
            lambda: bad.update_ref("refs/heads/x", RefWriteCondition.MISSING, A),
            lambda: bad.read_ref("refs/heads/x"),
            lambda: bad.list_refs(""),
            lambda: bad.pack_exists(key),
            lambda: bad.download_pack(key),
        ):
            with pytest.raises(AccessDenied):
                verb()
    assert _keys(store) == []


def test_missing_credentials_are_access_denied(
    seaweedfs_server: S3Server, no_ambient_credentials: None
) -> None:
    url = S3Store(seaweedfs_server, BUCKET, "anon").url
    with open_transport(url) as transport, pytest.raises(AccessDenied):
        transport.write_ref("refs/heads/x", A)


def test_credentials_from_environment_and_profile(
    seaweedfs_server: S3Server,
    no_ambient_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    store = S3Store(seaweedfs_server, BUCKET, "creds")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret_key)
    with open_transport(store.url) as transport:
        transport.write_ref("refs/heads/env", A)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[mkit]\naws_access_key_id = {seaweedfs_server.access_key}\n"
        f"aws_secret_access_key = {seaweedfs_server.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    with open_transport(store.url, profile="mkit") as transport:
        assert transport.read_ref("refs/heads/env") == A
    with pytest.raises(AccessDenied):
        open_transport(store.url, profile="no-such-profile")


def test_spec_ids_are_all_mapped_to_existing_tests() -> None:
    """Every [S3-n] of spec/SPEC-S3.md is in its MUST table, and every test named exists."""
    import re

    root = Path(__file__).resolve().parent.parent
    spec = (root / "spec" / "SPEC-S3.md").read_text(encoding="utf-8")
    body, _, table = spec.partition("## 11. MUST -> test")
    tagged = set(re.findall(r"\[(S3-\d+)\]", body))
    rows = dict(re.findall(r"^\| (S3-\d+) \|[^|]*\|(.*)\|$", table, flags=re.MULTILINE))
    assert tagged == set(rows), f"tagged but not mapped, or back: {tagged ^ set(rows)}"
    files = [*root.glob("tests/test_s3_*.py"), *root.glob("tests/test_hostile_*.py")]
    sources = "".join(p.read_text(encoding="utf-8") for p in files)
    for ident, cell in rows.items():
        named = re.findall(r"(test_\w+)", cell.replace(".py", ""))
        assert named, f"{ident} names no test"
        for test in named:
            if test.startswith(("test_s3_", "test_hostile_")):
                continue  # a file name
            assert f"def {test}(" in sources, f"{ident}: no test named {test}"
