"""A real ``python -m mkit_transport serve http`` process for tests and benchmarks.

Gunicorn with 2 threaded workers on a free loopback port with a temporary root,
stopped by its PID. Shared by the test fixtures (tests/support) and bench/, so
neither imports the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testbed.ports import free_port
from testbed.processes import stop_process
from testbed.waiting import wait_until

READ_TOKEN = "read-secret-4a1f"
WRITE_TOKEN = "write-secret-9c2e"
#: A bound on start-up (about 1 s when idle), generous for a loaded machine.
_START_TIMEOUT = 120.0
_REPO = Path(__file__).resolve().parents[2]


@dataclass
class HttpServer:
    """A running pack server process and how to reach and steer it."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    fault_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, project: str) -> str:
        return f"mkit+http://127.0.0.1:{self.port}/{project}"

    def set_faults(
        self, status: int, count: int, *, after: bool = False, retry_after: float | None = None
    ) -> None:
        """Fail the next ``count`` requests with ``status`` (a server started with ``faults``)."""
        assert self.fault_file is not None, "this server was started without fault injection"
        plan = {"status": status, "count": count, "after": after, "retry_after": retry_after}
        self.fault_file.write_text(json.dumps(plan))

    def faults_left(self) -> int:
        assert self.fault_file is not None
        return int(json.loads(self.fault_file.read_text() or "{}").get("count", 0))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_http_server(
    root: Path,
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    faults: bool = False,
    workers: int = 2,
    options: list[str] | None = None,
) -> HttpServer:
    """Start a server process and wait until its health check answers.

    ``options`` are more ``serve http`` flags (``--header-timeout 5``, ``--threads 8``).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root.parent / f"{root.name}-server.log"
    run_env = dict(os.environ, **(env or {}))
    run_env.pop("MKIT_API_TOKEN", None)
    fault_file = None
    command = [sys.executable, "-m", "mkit_transport", "serve", "http"]
    if faults:  # the same command through the test-only launcher that adds the injector
        fault_file = root.parent / f"{root.name}-faults.json"
        fault_file.write_text("{}")
        command[2:3] = ["tests.support.http_fault_server", str(fault_file)]
        run_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_REPO), run_env.get("PYTHONPATH")])
        )
    command += args if args is not None else ["--root", str(root)]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), *(options or [])]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=run_env)
    server = HttpServer(root, port, process, log, fault_file, env or {})

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        return requests.get(f"{server.base}/healthz", timeout=5).status_code == 200

    try:
        wait_until(
            healthy, _START_TIMEOUT, "http server health check", ignore=(requests.RequestException,)
        )
    except TimeoutError as error:
        stop_http_server(server)
        raise RuntimeError(f"{error}:\n{server.log_text()}") from None
    return server


def stop_http_server(server: HttpServer) -> None:
    """Stop the server by its PID: SIGTERM (graceful), then SIGKILL after 10 s."""
    stop_process(server.process)


@contextlib.contextmanager
def running_http_server(root: Path, **kwargs: object) -> Iterator[HttpServer]:
    server = start_http_server(root, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_http_server(server)
