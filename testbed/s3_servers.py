"""Two real S3 servers (moto's server and SeaweedFS) for tests and benchmarks.

Started on free loopback ports with temporary directories, waited for with a
bounded poll, stopped by PID. Shared by the test fixtures (tests/support) and
bench/, so neither imports the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.ports import free_port
from testbed.processes import stop_process
from testbed.waiting import wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "S3Server",
    "raw_client",
    "start_moto",
    "start_seaweedfs",
]

VENV_BIN = Path(sys.executable).parent
_REPO = Path(__file__).resolve().parents[1]
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
        which hundreds of tests' back doors added up to).
        """
        if config:
            return raw_client(self.endpoint, self.access_key, self.secret_key, **config)
        if self._client is None:
            self._client = raw_client(self.endpoint, self.access_key, self.secret_key)
        return self._client

    def stop(self) -> None:
        """Stop by PID: SIGTERM, a bounded wait, then SIGKILL."""
        stop_process(self.process, STOP_TIMEOUT)
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
    """Start moto's server on a free loopback port with a fresh bucket."""
    workdir = tempfile.mkdtemp(prefix="mkit-moto-")
    port = free_port()
    log = Path(workdir) / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # moto_server with atomic conditional writes (see testbed/moto_atomic.py).
            [sys.executable, "-m", "testbed.moto_atomic", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(_REPO)},
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
