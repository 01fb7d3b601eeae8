"""gc over the network transports, against real servers: HTTP and S3 (moto, SeaweedFS).

Time is aged with gc's ``now`` (the store stamps ``mtime`` with its own clock), so no
assertion depends on the machine's speed. The races of pushes against gc run in real
processes (:mod:`tests.support.gc_race`, the file test's code): 2 pushers x 25 rounds
each, the issue's 50 rounds per transport.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from mkit_transport import PackKey, RefWriteCondition, Transport, open_transport
from mkit_transport.sync import pull, push
from mkit_transport.sync.gc import gc, reachable
from testbed.http_server import HttpServer
from tests.support.gc_race import RaceStore, race_pushes_against_gc
from tests.support.s3_fixtures import S3Store

DAY = 24 * 3600.0


def _tree(root: Path, label: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (root / f"f{i}.txt").write_bytes(f"{label} {i}\n".encode() * 40)
    return root


def _collect_and_check(store: Transport, tmp_path: Path) -> None:
    push(_tree(tmp_path / "v1", "one"), store, "refs/heads/main")
    push(_tree(tmp_path / "v2", "two"), store, "refs/heads/main")
    push(_tree(tmp_path / "gone", "gone"), store, "refs/heads/gone")
    value = store.read_ref("refs/heads/gone")
    assert value is not None
    store.delete_ref("refs/heads/gone", RefWriteCondition.match(value))
    orphan = b"an orphan"
    store.upload_pack(orphan, PackKey.of(orphan))
    before = {info.key for info in store.list_packs(page_size=2)}
    assert gc(store, grace=DAY).swept == 0, "everything is younger than a day"
    dry = gc(store, grace=DAY, dry_run=True, now=time.time() + 2 * DAY)
    assert dry.swept > 1
    assert {info.key for info in store.list_packs()} == before
    done = gc(store, grace=DAY, now=time.time() + 2 * DAY)
    assert (done.swept, done.swept_bytes) == (dry.swept, dry.swept_bytes)
    live, refs, records = reachable(store)
    assert (refs, records) == (1, 2)
    assert {info.key for info in store.list_packs()} == live & before
    pull(store, "refs/heads/main", tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "out" / "f0.txt").read_bytes().startswith(b"two")


@pytest.mark.server
def test_gc_over_http(http_server: HttpServer, tmp_path: Path) -> None:
    with open_transport(http_server.url(f"gc-{uuid.uuid4().hex[:8]}")) as store:
        _collect_and_check(store, tmp_path)


@pytest.mark.server
def test_gc_over_s3(s3_store: S3Store, tmp_path: Path) -> None:
    with open_transport(s3_store.url, **s3_store.options) as store:
        _collect_and_check(store, tmp_path)


@pytest.mark.server
def test_old_multipart_uploads_are_aborted(s3_store: S3Store) -> None:
    client = s3_store.server.client()
    key = s3_store.key(f"packs/{PackKey.of(b'pending').hex()}")
    upload = client.create_multipart_upload(Bucket=s3_store.bucket, Key=key)
    with open_transport(s3_store.url, **s3_store.options) as store:
        if s3_store.server.name == "moto":
            # moto 5.2.5 reports every upload as initiated in 2010 (SPEC-S3 section 9):
            # there every upload counts as old.
            assert store.sweep_debris(DAY) == 1
        else:
            assert store.sweep_debris(DAY) == 0, "a young upload may be in progress"
            time.sleep(1.5)  # Initiated has a one-second resolution on some servers
            assert store.sweep_debris(0.5) == 1
    listed = client.list_multipart_uploads(Bucket=s3_store.bucket, Prefix=key)
    assert upload["UploadId"] not in [u["UploadId"] for u in listed.get("Uploads", [])]


#: Two pushers of 25 rounds each: 50 rounds of pushes racing gc per transport.
PUSHERS, ROUNDS = 2, 25


@pytest.mark.server
def test_pushes_racing_gc_over_http_never_break_a_ref(
    http_server: HttpServer, tmp_path: Path
) -> None:
    """The server's backend is a file store the test can reach, so the planted
    orphans are aged and the collector sweeps them while the pushes run."""
    project = f"gc-race-{uuid.uuid4().hex[:8]}"
    store = RaceStore(http_server.url(project), backend=str(http_server.root / project))
    race_pushes_against_gc(store, tmp_path, pushers=PUSHERS, rounds=ROUNDS)


@pytest.mark.server
def test_pushes_racing_gc_over_s3_never_break_a_ref(s3_store: S3Store, tmp_path: Path) -> None:
    """The server stamps its own clock: nothing young may go while the pushes run, and
    everything unreachable goes once the grace period is over."""
    store = RaceStore(s3_store.url, options=s3_store.options)
    race_pushes_against_gc(store, tmp_path, pushers=PUSHERS, rounds=ROUNDS)
