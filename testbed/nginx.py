"""A real nginx reverse proxy for tests: ``nginx -c CONFIG -p PREFIX`` in the foreground.

The caller gives the ``http {}`` body (upstream and server blocks, as a site file in
``/etc/nginx/conf.d`` would hold); the launcher wraps it in a main config of its own
(``daemon off;``, pid file, error log and temporary paths in a private directory),
waits a bounded time until the port answers, and stops nginx by its PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import free_port
from testbed.processes import stop_process
from testbed.waiting import wait_until

__all__ = ["NGINX", "Nginx", "defaults_site", "running_nginx", "start_nginx", "stop_nginx"]

#: Where Debian's nginx (nginx-light or nginx) installs the binary.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_START_TIMEOUT = 60.0


@dataclass
class Nginx:
    """A running nginx: its port, its directory and its error log."""

    port: int
    prefix: Path
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, project: str) -> str:
        return f"mkit+http://127.0.0.1:{self.port}/{project}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def defaults_site(port: int, upstream: str) -> str:
    """A site with only ``proxy_pass``: nginx's defaults (HTTP/1.0 upstream, 1 MiB bodies)."""
    return (
        f"server {{\n    listen 127.0.0.1:{port};\n"
        f"    location / {{\n        proxy_pass http://{upstream};\n    }}\n}}\n"
    )


def _main_config(prefix: Path, site: Path) -> str:
    temp = prefix / "temp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    return (
        f"daemon off;\nworker_processes 1;\n{user}"
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    include {site};\n"
        "}\n"
    )


def start_nginx(prefix: Path, site: Callable[[int], str]) -> Nginx:
    """Start nginx serving ``site(port)`` (an ``http {}`` body) on a free loopback port."""
    port = free_port()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    site_file = prefix / "site.conf"
    site_file.write_text(site(port))
    config = prefix / "nginx.conf"
    config.write_text(_main_config(prefix, site_file))
    with open(prefix / "stdout.log", "wb") as out:
        process = subprocess.Popen(
            [NGINX, "-c", str(config), "-p", str(prefix)], stdout=out, stderr=subprocess.STDOUT
        )
    proxy = Nginx(port, prefix, process)

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{proxy.error_log()}")
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    try:
        wait_until(listening, _START_TIMEOUT, "nginx listening", ignore=(OSError,))
    except (TimeoutError, RuntimeError):
        stop_nginx(proxy)
        raise
    return proxy


def stop_nginx(proxy: Nginx) -> None:
    """Stop nginx by its PID: SIGQUIT would wait for connections, so SIGTERM, then SIGKILL."""
    stop_process(proxy.process)


@contextlib.contextmanager
def running_nginx(prefix: Path, site: Callable[[int], str]) -> Iterator[Nginx]:
    """nginx serving ``site(port)`` for the duration of a ``with`` block."""
    proxy = start_nginx(prefix, site)
    try:
        yield proxy
    finally:
        stop_nginx(proxy)
