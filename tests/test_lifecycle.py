"""Lifecycle verbs per transport: what the conformance suite cannot plant by itself.

Debris (temporary files of killed writers, torn objects, multipart uploads) must
never be listed as a pack; the HTTP server needs the write token for deletes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from mkit_transport import (
    AccessDenied,
    FileTransport,
    Hash,
    PackKey,
    RefWriteCondition,
    open_transport,
)
from testbed.http_server import READ_TOKEN, WRITE_TOKEN, HttpServer

_DATA = b"a pack that is kept"
_KEY = PackKey.of(_DATA)


def test_file_listing_skips_debris(tmp_path: Path) -> None:
    store = FileTransport(tmp_path)
    store.upload_pack(_DATA, _KEY)
    packs = tmp_path / "packs"
    hexed = PackKey.of(b"other").hex()
    (packs / f".{hexed}.tmp.123.4").write_bytes(b"half written")  # a killed writer
    (packs / _KEY.hex()[:2] / f".{_KEY.hex()}.tmp.9.9").write_bytes(b"x")
    wrong_fan = "00" if not hexed.startswith("00") else "01"
    (packs / wrong_fan).mkdir(exist_ok=True)
    (packs / wrong_fan / hexed).write_bytes(b"other")  # not under its own fan-out
    (packs / _KEY.hex()[:2] / "README").write_bytes(b"foreign")
    (packs / "zz").mkdir()
    (packs / hexed[:2]).mkdir(exist_ok=True)
    os.symlink("/etc/hostname", packs / hexed[:2] / hexed)  # a symlink is not a pack
    listed = list(store.list_packs())
    assert [(i.key, i.size) for i in listed] == [(_KEY, len(_DATA))]


def test_file_delete_ref_removes_empty_directories_only(tmp_path: Path) -> None:
    store = FileTransport(tmp_path)
    store.write_ref("refs/heads/a/b", Hash.of(b"b"))
    store.write_ref("refs/heads/c", Hash.of(b"c"))
    store.delete_ref("refs/heads/a/b", RefWriteCondition.ANY)
    assert not (tmp_path / "refs" / "heads" / "a").exists()
    assert (tmp_path / "refs" / "heads" / "c" / ".ref").exists()
    store.delete_ref("refs/heads/c", RefWriteCondition.match(Hash.of(b"c")))
    assert (tmp_path / "refs").is_dir()  # the top stays


def test_file_delete_ref_any_clears_a_corrupt_value(tmp_path: Path) -> None:
    store = FileTransport(tmp_path)
    store.write_ref("refs/heads/x", Hash.of(b"x"))
    (tmp_path / "refs" / "heads" / "x" / ".ref").write_bytes(b"garbage")
    store.delete_ref("refs/heads/x", RefWriteCondition.ANY)
    assert store.read_ref("refs/heads/x") is None


@pytest.mark.server
def test_http_deletes_need_the_write_token(http_token_server: HttpServer) -> None:
    url = http_token_server.url("life")
    name, value = "refs/heads/main", Hash.of(b"main")
    with open_transport(url, token=WRITE_TOKEN) as writer:
        writer.upload_pack(_DATA, _KEY)
        writer.write_ref(name, value)
    for token in (None, "wrong", READ_TOKEN):
        with open_transport(url, token=token) as client:
            with pytest.raises(AccessDenied):
                client.delete_pack(_KEY)
            with pytest.raises(AccessDenied):
                client.delete_ref(name, RefWriteCondition.ANY)
    with open_transport(url, token=READ_TOKEN) as reader:
        assert reader.read_ref(name) == value
        assert [i.key for i in reader.list_packs()] == [_KEY]  # listing is a read
    base = f"{http_token_server.base}/life"
    auth = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    missing = requests.delete(f"{base}/{name}", headers={**auth, "If-None-Match": "*"}, timeout=10)
    assert (missing.status_code, missing.headers.get("Mkit-Error")) == (400, "invalid_argument")
    for query in ("limit=0", "limit=10001", "limit=x", "after=XYZ", "other=1"):
        bad = requests.get(f"{base}/packs?{query}", headers=auth, timeout=10)
        assert bad.status_code == 400, query
    with open_transport(url, token=WRITE_TOKEN) as writer:
        writer.delete_ref(name, RefWriteCondition.match(value))
        writer.delete_pack(_KEY)
        assert writer.read_ref(name) is None
        assert list(writer.list_packs()) == []


def test_ssh_pack_listing_lines_round_trip_and_refuse_junk() -> None:
    from mkit_transport.protocol.ssh import WireError, decode_pack_listing, encode_pack_listing

    entries = [(PackKey.of(b"a"), 0, 0.0), (PackKey.of(b"b"), 4 << 30, 1764700000.123456)]
    assert decode_pack_listing(encode_pack_listing(entries)) == entries
    assert decode_pack_listing(b"") == []
    hexed = PackKey.of(b"a").hex()
    for junk in (
        f"{hexed} 1 2".encode(),  # no line feed
        f"{hexed} -1 2\n".encode(),
        f"{hexed} 1 nan\n".encode(),
        f"{hexed.upper()} 1 2\n".encode(),
        f"{hexed} 1 2 extra\n".encode(),
    ):
        with pytest.raises(WireError):
            decode_pack_listing(junk)


@pytest.mark.server
def test_http_repair_header_must_be_1(http_token_server: HttpServer) -> None:
    url = f"{http_token_server.base}/life-repair/packs/{_KEY.hex()}"
    auth = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    bad = requests.put(url, data=_DATA, headers={**auth, "Mkit-Repair": "yes"}, timeout=10)
    assert (bad.status_code, bad.headers.get("Mkit-Error")) == (400, "invalid_request")
    good = requests.put(url, data=_DATA, headers={**auth, "Mkit-Repair": "1"}, timeout=10)
    assert good.status_code == 204
