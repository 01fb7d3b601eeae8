"""Fixtures for the s3 tests (loaded by tests/conftest.py): two real S3 servers.

``moto_server`` (AWS's exact error semantics, any credentials) and SeaweedFS
``weed mini`` (an independent on-disk engine with real SigV4 authentication) are
started once per session on free loopback ports with temporary directories, waited
for with a bounded poll, and stopped by PID. ``s3_server`` is parametrized over
both, and ``s3_store`` gives each test a unique key prefix in a shared bucket, so
tests never see each other's objects.

Also here: :class:`ConditionStrippingProxy`, an HTTP proxy that forwards to a real
server but drops ``If-Match`` / ``If-None-Match``, the way some gateways silently
do; the probe must catch it.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ConditionStrippingProxy",
    "S3Server",
    "S3Store",
    "raw_client",
    "start_moto",
    "start_seaweedfs",
]

VENV_BIN = Path(sys.executable).parent
ACCESS_KEY = "testing"
SECRET_KEY = "testingsecret"
BUCKET = "mkit-test"
#: Bounded waits: start-up (both start in about 1 s when idle; generous for a loaded
#: machine, the wait ends as soon as the server answers) and shutdown (weed: ~4 s).
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


@dataclass
class S3Server:
    """A running S3 server on loopback, stopped with :meth:`stop`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    host: str = "127.0.0.1"
    log: Path = field(default_factory=Path)
    _client: S3Client | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **config: Any) -> S3Client:
        """A plain boto3 client; the default one is made once per server and shared
        (boto3 clients are thread-safe, and each new one costs tens of milliseconds,
        which hundreds of tests' back doors added up to)."""
        if config:
            return raw_client(self.endpoint, self.access_key, self.secret_key, **config)
        if self._client is None:
            self._client = raw_client(self.endpoint, self.access_key, self.secret_key)
        return self._client

    def stop(self) -> None:
        """Stop by PID: SIGTERM, a bounded wait, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.workdir, ignore_errors=True)


def raw_client(endpoint: str, access_key: str, secret_key: str, **config: Any) -> S3Client:
    """A plain boto3 client (the back door and the baseline), never our transport."""
    import boto3
    from botocore.config import Config

    settings: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "s3": {"addressing_style": "path"},
        "connect_timeout": 5,
        "read_timeout": 60,
    }
    settings.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(**settings),
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _twin_bases() -> tuple[int, int]:
    """Where weed's base ports are drawn: base and base + 10000 both below the kernel's
    ephemeral range, so no outgoing connection takes one before weed binds it.

    Falls back to 20000-39999 if the range is unreadable or starts too low to fit.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 20000, 39999
    if low - 10000 - 1 < 10000 + 1000:  # too few bases between 10000 and the range
        return 20000, 39999
    return 10000, low - 10000 - 1


def _free_twin_port(taken: set[int]) -> int:
    """A free loopback port whose port + 10000 is free as well (weed's gRPC twin)."""
    first, last = _twin_bases()
    for _ in range(500):
        port = random.randint(first, last)
        if {port, port + 10000} & taken:
            continue
        if _port_free(port) and _port_free(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free loopback port found")


def _wait_ready(server: S3Server, bucket: str) -> None:
    """Poll until the server answers and a put+get round trip works (bounded)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client(connect_timeout=1, read_timeout=5)

    def ready() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.log.read_text()[-2000:]}")
        client.list_buckets()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="ready", Body=b"ok")
        if client.get_object(Bucket=bucket, Key="ready")["Body"].read() != b"ok":
            return False
        client.delete_object(Bucket=bucket, Key="ready")
        return True

    try:
        # Not up yet: connection refused, 5xx while booting (boto's errors); an exit is final.
        wait_until(
            ready,
            START_TIMEOUT,
            f"{server.name} put+get round trip",
            ignore=(BotoCoreError, ClientError),
        )
    except TimeoutError:
        server.stop()
        raise


def start_moto(bucket: str = BUCKET) -> S3Server:
    """Start ``moto_server`` on a free loopback port with a fresh bucket."""
    workdir = tempfile.mkdtemp(prefix="mkit-moto-")
    port = free_port()
    log = Path(workdir) / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = S3Server("moto", port, process, workdir, log=log)
    _wait_ready(server, bucket)
    return server


def start_seaweedfs(bucket: str = BUCKET) -> S3Server:
    """Start ``weed mini`` with SigV4 auth on (an s3.json identity), loopback only.

    Every SeaweedFS service also listens on its port + 10000 (gRPC), so each port is
    chosen with that twin free; ``-ip`` and ``-ip.bind`` keep it all on 127.0.0.1.
    """
    workdir = tempfile.mkdtemp(prefix="mkit-weed-")
    config = Path(workdir) / "s3.json"
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    data = Path(workdir) / "data"
    data.mkdir()
    taken: set[int] = set()
    master, volume, filer, s3, admin = (_free_twin_port(taken) for _ in range(5))
    log = Path(workdir) / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "weed"),
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                f"-s3.port={s3}",
                f"-admin.port={admin}",
                f"-s3.config={config}",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = S3Server("seaweedfs", s3, process, workdir, log=log)
    _wait_ready(server, bucket)
    return server


@dataclass
class S3Store:
    """One test's corner of a server: a bucket and a unique key prefix."""

    server: S3Server
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"mkit+s3+http://127.0.0.1:{self.server.port}/{self.bucket}/{self.prefix}"

    @property
    def options(self) -> dict[str, object]:
        """Picklable credentials, so race workers in other processes can connect."""
        return {
            "access_key_id": self.server.access_key,
            "secret_access_key": self.server.secret_key,
        }

    def key(self, tail: str) -> str:
        return f"{self.prefix}/{tail}"

    def ref_key(self, name: str) -> str:
        """Where the transport stores a ref (spec/SPEC-S3.md, section 2)."""
        return f"{self.prefix}/{name}/.ref"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[S3Server]:
    server = start_seaweedfs()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real server in turn (started once per session)."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3Store:
    """A unique prefix in the shared bucket of each server, for one test."""
    return S3Store(s3_server, BUCKET, f"t-{uuid.uuid4().hex[:16]}")


class ConditionStrippingProxy:
    """An HTTP proxy to a real S3 server that silently drops conditional headers.

    It models the gateways that make conditional writes "always succeed": the
    request reaches the server as a plain, unconditional PUT. (Stripping a signed
    header breaks SigV4, so put it in front of moto, which does not check
    signatures.)
    """

    DROPPED = frozenset({"if-match", "if-none-match"})

    def __init__(self, target_port: int) -> None:
        target = target_port
        dropped = self.DROPPED

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                upstream = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ConditionStrippingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def stripping_proxy(moto_server: S3Server) -> Iterator[ConditionStrippingProxy]:
    """A condition-stripping gateway in front of moto."""
    with ConditionStrippingProxy(moto_server.port) as proxy:
        yield proxy
