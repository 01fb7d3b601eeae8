"""The whole conformance suite over a real OpenSSH sshd, in both server modes.

Plain mode: the client asks sshd to run ``serve ssh PATH``. Forced mode: the key is
pinned in authorized_keys to ``serve ssh --root STORES``, which serves the path the
client asked for only inside that root. Races run in separate processes, each with
its own SSH connection, against the same store.

Each class shares one long-lived client across its tests (as a real client would
use one connection for many calls) instead of opening a new SSH connection, and so
a new server process, per test: that was most of the file's run time. Tests that
need their own client (retries, races, the state machine) still open one through
the harness, and the shared client's reconnect after a refused stream is tested
on the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mkit_transport import RetryPolicy, Transport, open_transport
from mkit_transport.conformance import ConformanceSuite, FileBackdoor, Harness
from testbed.ssh_server import SshServer
from tests.support.conformance_parts import error_mapping_tested_elsewhere

pytestmark = pytest.mark.slow  # the whole suite twice over sshd: about two minutes


def _harness(sshd: SshServer, name: str, *, forced: bool) -> Harness:
    root = sshd.store(name)
    # Forced mode: a path relative to the forced root (the SCP form of the URL).
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:{name}" if forced else sshd.url(root)
    options = sshd.options(forced=forced)

    def opener(retry: RetryPolicy | None) -> Transport:
        return open_transport(url, retry=retry, **options)

    sizes: dict[str, Any] = (
        {}
        if not forced
        else {  # the default sizes once; forced mode a lighter pass
            "large_pack_size": 32 << 20,
            "race_rounds": 5,
            "counter_increments": 10,
            "stateful_examples": 8,
            "stateful_steps": 20,
        }
    )
    return Harness(
        open=opener,
        url=url,
        options=options,
        backdoor=FileBackdoor(root),
        fresh=False,
        **sizes,
    )


@pytest.fixture(scope="module")
def shared_clients() -> Iterator[dict[str, Transport]]:
    """One open client per store URL for the module; closed at its end."""
    clients: dict[str, Transport] = {}
    yield clients
    for client in clients.values():
        client.close()


@error_mapping_tested_elsewhere
class _SharedClient(ConformanceSuite):
    @pytest.fixture
    def transport(self, harness: Harness, shared_clients: dict[str, Transport]) -> Transport:
        assert harness.url is not None
        if harness.url not in shared_clients:
            shared_clients[harness.url] = harness.open(None)
        return shared_clients[harness.url]


class TestSshConformance(_SharedClient):
    """``serve ssh PATH`` run as the command the client asks for."""

    @pytest.fixture
    def harness(self, sshd: SshServer) -> Harness:
        return _harness(sshd, "conformance-plain", forced=False)


class TestSshForcedConformance(_SharedClient):
    """``serve ssh --root STORES`` pinned as a forced command in authorized_keys."""

    @pytest.fixture
    def harness(self, sshd: SshServer) -> Harness:
        return _harness(sshd, "conformance-forced", forced=True)
