"""Scaling out: several ``serve http`` instances and ``serve ssh`` on one S3 bucket.

A user who outgrows one server runs several ``serve http --backend URL`` instances
behind a load balancer on one bucket, and SSH access on the same bucket (issue 15;
README "Scaling out"). The instances share nothing but the bucket: every ref
condition is decided by S3's conditional writes, so CAS stays exact however requests
are spread. Real processes throughout: SeaweedFS (real SigV4, conditional writes),
three gunicorn servers, a private sshd running ``serve ssh --backend``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import RefWriteCondition, Transport, open_transport
from mkit_transport.conformance.workers import (
    Limits,
    UrlOpener,
    check_counter,
    counter_value,
    counter_worker,
    run_workers,
)
from mkit_transport.sync import pull, push
from testbed.http_server import HttpServer, start_http_server, stop_http_server
from testbed.s3_servers import BUCKET, S3Server
from testbed.ssh_server import running_sshd
from tests.support.sync_fixtures import describe, write_tree

pytestmark = pytest.mark.server

INSTANCES = 3
WORKERS, INCREMENTS = 8, 25
REF = "refs/heads/main"


@dataclass(frozen=True)
class Fleet:
    """Three ``serve http`` instances on one S3 prefix, and how to reach that prefix."""

    servers: list[HttpServer]
    s3: S3Server
    backend: str  # the --backend URL every instance (and serve ssh) is started with

    def credentials(self) -> dict[str, str]:
        return _credentials(self.s3)

    def direct(self, project: str) -> Transport:
        """The project's store opened on S3 itself, behind every server's back."""
        return open_transport(
            f"{self.backend}/{project}",
            access_key_id=self.s3.access_key,
            secret_access_key=self.s3.secret_key,
        )


def _credentials(s3: S3Server) -> dict[str, str]:
    """The backend's credentials as every server gets them: in its environment."""
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}


@pytest.fixture(scope="module")
def fleet(seaweedfs_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three servers started exactly as the README says, sharing one bucket prefix."""
    backend = (
        f"mkit+s3+http://127.0.0.1:{seaweedfs_server.port}/{BUCKET}/fleet-{uuid.uuid4().hex[:12]}"
    )
    env = _credentials(seaweedfs_server)
    base = tmp_path_factory.mktemp("fleet")
    servers: list[HttpServer] = []
    try:
        for i in range(INSTANCES):
            servers.append(
                start_http_server(base / f"instance{i}", args=["--backend", backend], env=env)
            )
        yield Fleet(servers, seaweedfs_server, backend)
    finally:
        for server in servers:
            stop_http_server(server)


@dataclass(frozen=True)
class SpreadOpener:
    """Picklable: worker ``i`` talks to instance ``i % len(urls)``, as a balancer would."""

    urls: tuple[str, ...]

    def __call__(self) -> Transport:  # the Opener protocol; the workers below pick by index
        return open_transport(self.urls[0])

    def for_worker(self, worker: int) -> UrlOpener:
        return UrlOpener(self.urls[worker % len(self.urls)])


def spread_counter_worker(
    opener: Any, barrier: Any, event: Any, ns: str, worker: int, n: int, limits: Limits
) -> list[tuple[Any, ...]]:
    """:func:`counter_worker` on the instance this worker's index picks (runs in a child)."""
    assert isinstance(opener, SpreadOpener)
    return counter_worker(opener.for_worker(worker), barrier, event, ns, worker, n, limits)


@pytest.mark.slow
def test_several_servers_on_one_s3_backend_keep_cas_exact(fleet: Fleet) -> None:
    """8 processes of CAS increments over 3 instances: the counter equals the successes."""
    project = f"counter-{uuid.uuid4().hex[:12]}"
    ns = "refs/race/counter"
    urls = tuple(server.url(project) for server in fleet.servers)
    with open_transport(urls[0]) as first:
        first.update_ref(f"{ns}/counter", RefWriteCondition.MISSING, counter_value(ns, 0))
    results = run_workers(
        spread_counter_worker, SpreadOpener(urls), ns, WORKERS, INCREMENTS, processes=True
    )
    rows = [row for worker in results for row in worker]
    with fleet.direct(project) as s3:  # the bucket itself holds the exact count
        final = s3.read_ref(f"{ns}/counter")
    check_counter(rows, final, ns)
    for server in fleet.servers:  # every instance took CAS writes, and reads the same
        assert f'"PUT /{project}/{ns}/counter ' in server.log_text(), server.base
        with open_transport(server.url(project)) as client:
            assert client.read_ref(f"{ns}/counter") == final


def test_push_through_one_instance_pull_through_another(fleet: Fleet, tmp_path: Path) -> None:
    project = f"sync-{uuid.uuid4().hex[:12]}"
    src = write_tree(tmp_path / "src", seed=15, files=40, large=1)
    one, two, three = (open_transport(server.url(project)) for server in fleet.servers)
    with one, two, three:
        first = push(src, one, REF, pack_size=1 << 20)
        pull(two, REF, tmp_path / "out1")
        assert describe(tmp_path / "out1") == describe(src)
        (src / "added.txt").write_text("pushed through the third instance")
        second = push(src, three, REF, pack_size=1 << 20)
        assert (second.old, second.objects_skipped > 0) == (first.new, True)
        update = pull(one, REF, tmp_path / "out2")
        assert describe(tmp_path / "out2") == describe(src)
        assert two.read_ref(REF) == second.new == update.value


def test_serve_ssh_on_the_same_s3_backend(fleet: Fleet, tmp_path: Path) -> None:
    """``serve ssh --backend`` as the README's forced command: push over SSH, pull over HTTP.

    A private sshd (its keys file is rewritten, so not the session's): the client key
    is pinned to ``serve ssh --backend`` on the fleet's bucket, the credentials in the
    forced command's environment, the store chosen by the path the client asks for.
    """
    project = f"ssh-{uuid.uuid4().hex[:12]}"
    credentials = " ".join(f"{k}={v}" for k, v in fleet.credentials().items())
    src = write_tree(tmp_path / "src", seed=16, files=30, large=1)
    (tmp_path / "sshd").mkdir()
    with running_sshd(tmp_path / "sshd") as sshd:
        forced = f"env {credentials} {sshd.remote_command} --backend {fleet.backend}"
        client_pub = Path(sshd.client_key + ".pub").read_text().strip()
        (sshd.directory / "authorized_keys").write_text(
            f'restrict,command="{forced}" {client_pub}\n'
        )
        with (
            open_transport(sshd.url(f"/{project}"), **sshd.options()) as ssh,
            open_transport(fleet.servers[1].url(project)) as http,
        ):
            first = push(src, ssh, REF, pack_size=1 << 20)
            pull(http, REF, tmp_path / "via-http")
            assert describe(tmp_path / "via-http") == describe(src)
            (src / "over-http.txt").write_text("and back the other way")
            second = push(src, http, REF, pack_size=1 << 20)
            assert second.old == first.new
            pull(ssh, REF, tmp_path / "via-ssh")
            assert describe(tmp_path / "via-ssh") == describe(src)
    with fleet.direct(project) as s3:
        assert s3.read_ref(REF) == second.new
