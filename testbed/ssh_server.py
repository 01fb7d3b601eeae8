"""A private OpenSSH sshd on loopback for tests and benchmarks.

Its own config, host key, client keys and authorized_keys in a temporary
directory; started by absolute path and stopped by PID. Shared by the test
fixtures (tests/support) and bench/, so neither imports the other.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testbed.ports import free_port
from testbed.processes import stop_process
from testbed.waiting import wait_until

SSHD = "/usr/sbin/sshd"
KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@dataclass
class SshServer:
    """A running sshd and everything a client needs to reach it."""

    host: str
    port: int
    user: str
    directory: Path
    stores: Path  # where stores live (the forced key's root)
    client_key: str
    forced_key: str
    other_key: str  # a valid key that is NOT authorized
    known_hosts: str
    pid: int
    remote_command: str = f"{sys.executable} -m mkit_transport serve ssh"
    log: Path = field(default_factory=Path)

    def store(self, name: str) -> Path:
        """A store directory under ``stores`` (created, as the server requires)."""
        path = self.stores / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def known_hosts_for(self, port: int, path: Path) -> str:
        """Write a known_hosts file trusting this host key on another port (a proxy)."""
        host_key = (self.directory / "host_ed25519.pub").read_text().split()[:2]
        path.write_text(f"[{self.host}]:{port} {' '.join(host_key)}\n")
        return str(path)

    def url(self, path: Path | str, *, port: int | None = None) -> str:
        return f"mkit+ssh://{self.user}@{self.host}:{port or self.port}{path}"

    def options(self, *, forced: bool = False, timeout: float = 20.0) -> dict[str, object]:
        """Keyword options for ``open_transport`` (picklable, for worker processes)."""
        return {
            "identity_file": self.forced_key if forced else self.client_key,
            "known_hosts_file": self.known_hosts,
            "remote_command": self.remote_command,
            "config_file": os.devnull,
            "timeout": timeout,
        }


def _keygen(path: Path) -> str:
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text()}")
        with socket.create_connection(("127.0.0.1", port), 1):
            return True

    try:
        wait_until(listening, 120, f"sshd listening on {port}", ignore=(OSError,))
    except TimeoutError as error:
        raise RuntimeError(f"{error}: {log.read_text()}") from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, 5.0)


@contextlib.contextmanager
def running_sshd(d: Path) -> Iterator[SshServer]:
    """Run a private sshd with its files in the (empty) directory ``d``; stop it after."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: run `sh scripts/system-deps.sh` (make unit does)")
    stores = d / "stores"
    stores.mkdir()
    host_pub = _keygen(d / "host_ed25519")
    client_pub = _keygen(d / "client_ed25519")
    forced_pub = _keygen(d / "forced_ed25519")
    _keygen(d / "other_ed25519")
    remote = f"{sys.executable} -m mkit_transport serve ssh"
    (d / "authorized_keys").write_text(
        f"{client_pub} mkit-test-client\n"
        f'restrict,command="{remote} --root {stores}" {forced_pub} mkit-test-forced\n'
    )
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    known_hosts = d / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_ed25519'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        "StrictModes no\nUseDNS no\nPrintMotd no\nMaxSessions 64\nMaxStartups 64:30:128\n"
        "MaxAuthTries 10\nLogLevel VERBOSE\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
    log = d / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(port, process, log)
        yield SshServer(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            directory=d,
            stores=stores,
            client_key=str(d / "client_ed25519"),
            forced_key=str(d / "forced_ed25519"),
            other_key=str(d / "other_ed25519"),
            known_hosts=str(known_hosts),
            pid=process.pid,
            remote_command=remote,
            log=log,
        )
    finally:
        _stop(process)
