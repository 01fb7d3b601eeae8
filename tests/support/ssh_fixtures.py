"""Fixtures for the ssh tests (loaded by tests/conftest.py): a private OpenSSH sshd.

One sshd per test session, on a free loopback port, with its own config, host key,
client keys and authorized_keys in a temporary directory; started by absolute path
(``sshd -D -e -f``) and stopped by PID. Two client keys are authorized: ``client``
may run any command (the transport asks for ``serve ssh PATH``), ``forced`` is
pinned to ``serve ssh --root STORES`` with ``restrict``, as the README recipe does.
The remote command uses this venv's interpreter, which has the package.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.ssh_server import SshServer, running_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A private sshd on 127.0.0.1 for the whole session."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
