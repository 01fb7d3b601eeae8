"""Snapshot sync over every network transport, against real servers on loopback.

Push, pull and mirror use only the :class:`Transport` verbs, so the local tests
(memory, file) prove the machinery; these prove it end to end over the wire: a
real gunicorn pack server, moto and SeaweedFS, and OpenSSH's sshd, each started by
the fixtures. Each test asserts exact incremental figures, not just "it ran".
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mkit_transport import Transport, open_transport
from mkit_transport.sync import mirror, pull, push
from testbed.http_server import HttpServer
from testbed.s3_servers import BUCKET, S3Server
from testbed.ssh_server import SshServer
from tests.support.s3_fixtures import S3Store
from tests.support.sync_fixtures import describe, race_two_pushers, record_of, write_tree

#: Every test here talks to real servers; some reach them through getfixturevalue.
pytestmark = pytest.mark.server

REF = "refs/heads/main"
ROOT = Path(__file__).resolve().parent.parent
NETWORK = ["http", "moto", "seaweedfs", "ssh"]


@dataclass(frozen=True)
class Remote:
    """How to reach one fresh, empty store on a running server."""

    kind: str
    url: str
    options: dict[str, object]

    def open(self) -> Transport:
        return open_transport(self.url, **self.options)


def _fresh(request: pytest.FixtureRequest, kind: str) -> Remote:
    """A new, empty store on the session's server of ``kind``."""
    name = f"sync-{uuid.uuid4().hex[:12]}"
    if kind == "http":
        http: HttpServer = request.getfixturevalue("http_server")
        return Remote(kind, http.url(name), {})
    if kind == "ssh":
        sshd: SshServer = request.getfixturevalue("sshd")
        return Remote(kind, sshd.url(sshd.store(name)), sshd.options())
    s3: S3Server = request.getfixturevalue(f"{kind}_server")
    store = S3Store(s3, BUCKET, name)
    return Remote(kind, store.url, store.options)


@pytest.fixture
def fresh_remote(request: pytest.FixtureRequest) -> Callable[[str], Remote]:
    """Make fresh stores on demand (a test may need several, on different servers)."""
    return lambda kind: _fresh(request, kind)


@pytest.fixture(params=NETWORK)
def remote(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """An open transport to a fresh store on each network server in turn."""
    with _fresh(request, request.param).open() as transport:
        yield transport


def test_push_edit_push_pull_is_exact_and_incremental(remote: Transport, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=5, files=60, large=2)
    # small packs: several of them, and the 3 MiB files in packs of their own (streamed)
    first = push(src, remote, REF, pack_size=1 << 20)
    assert first.updated and first.old is None and first.new == remote.read_ref(REF)
    assert first.packs_uploaded >= 3 and first.objects_skipped == 0
    packs = [p.key for p in record_of(remote, REF).packs]
    assert all(remote.pack_exists(key) for key in packs)  # ref last: all there
    cache = str(tmp_path / "cache")
    pulled = pull(remote, REF, tmp_path / "one", cache_dir=cache, cache_limit=1 << 30)
    assert describe(tmp_path / "one") == describe(src)
    assert (pulled.files, pulled.packs_cached) == (first.files, 0)

    (src / "d1" / "e1" / "f1.txt").write_text("edited over the wire")
    second = push(src, remote, REF, pack_size=1 << 20)
    assert (second.old, second.objects_sent) == (first.new, 4)  # blob, e1, d1, root
    assert second.objects_skipped == first.objects_sent - 4
    assert second.packs_uploaded == 2  # one tree pack, one blob pack

    again = push(src, remote, REF, pack_size=1 << 20)
    assert (again.updated, again.objects_sent, again.bytes_uploaded) == (False, 0, 0)
    assert remote.read_ref(REF) == second.new

    # the same cache: only the two new packs cross the wire
    update = pull(remote, REF, tmp_path / "two", cache_dir=cache)
    assert describe(tmp_path / "two") == describe(src)
    assert (update.packs_downloaded, update.packs_cached) == (2, first.packs_uploaded)


def test_mirror_hops_through_every_network_transport(
    fresh_remote: Callable[[str], Remote], tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", seed=9, files=50, large=1)
    hops = [fresh_remote(kind) for kind in ["http", "moto", "ssh", "seaweedfs"]]
    transports = [hop.open() for hop in hops]
    try:
        first = push(src, transports[0], REF, pack_size=1 << 20)
        for a, b in itertools.pairwise(transports):
            copied = mirror(a, b, REF)
            assert (copied.updated, copied.new, copied.packs_skipped) == (True, first.new, 0)
            assert copied.objects_sent == first.objects_sent
        pull(transports[-1], REF, tmp_path / "end1", cache_dir=str(tmp_path / "c1"))
        assert describe(tmp_path / "end1") == describe(src)

        (src / "added.txt").write_text("one more file")
        second = push(src, transports[0], REF, pack_size=1 << 20)
        for a, b in itertools.pairwise(transports):
            copied = mirror(a, b, REF)
            assert (copied.old, copied.new) == (first.new, second.new)
            assert (copied.packs_uploaded, copied.objects_sent) == (2, second.objects_sent)
            assert copied.packs_skipped == first.packs_uploaded
        pull(transports[-1], REF, tmp_path / "end2", cache_dir=str(tmp_path / "c2"))
        assert describe(tmp_path / "end2") == describe(src)
    finally:
        for transport in transports:
            transport.close()


def test_cli_push_and_pull_over_http_as_real_processes(
    http_server: HttpServer, tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", seed=2, files=20)
    url = http_server.url(f"cli-{uuid.uuid4().hex[:8]}")

    def cli(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "mkit_transport", *args, "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        return result

    pushed = cli("push", str(src), url, REF)
    assert pushed["updated"] is True and pushed["objects_skipped"] == 0
    pulled = cli("pull", url, REF, str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert pulled["value"] == pushed["new"]
    assert describe(tmp_path / "out") == describe(src)
    again = cli("push", str(src), url, REF)
    assert (again["updated"], again["bytes_uploaded"]) == (False, 0)


def test_two_pushers_over_http_exactly_one_wins(http_server: HttpServer, tmp_path: Path) -> None:
    race_two_pushers(http_server.url(f"race-{uuid.uuid4().hex[:8]}"), tmp_path, REF)
