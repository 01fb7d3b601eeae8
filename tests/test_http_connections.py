"""The HTTP client keeps its connection and still honours the environment.

Two costs found by profiling a CAS-heavy load (issue 17): every write whose answer
had no body closed its connection (a 204 left unread), so each ref update paid a new
TCP handshake; and requests re-read the environment (proxies, CA bundle, .netrc) on
every request. Both are gone; these tests keep them gone and prove that reading the
environment once per origin still honours it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mkit_transport import (
    ConnectionFailed,
    Hash,
    PackKey,
    RefConflict,
    RefWriteCondition,
    open_transport,
)
from testbed.http_server import HttpServer
from tests.support.faultproxy import FaultProxy


@pytest.fixture
def proxy(http_server: HttpServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", http_server.port) as running:
        yield running


def test_writes_reads_and_probes_share_one_connection(proxy: FaultProxy) -> None:
    url = f"mkit+http://127.0.0.1:{proxy.port}/conn-{uuid.uuid4().hex[:8]}"
    pack = b"a pack body"
    key = PackKey.of(pack)
    with open_transport(url) as transport:
        transport.init_store()
        transport.update_ref("refs/c", RefWriteCondition.MISSING, Hash(bytes(32)))
        for i in range(1, 20):
            before = Hash((i - 1).to_bytes(32, "big"))
            transport.update_ref(
                "refs/c", RefWriteCondition.match(before), Hash(i.to_bytes(32, "big"))
            )
            assert transport.read_ref("refs/c") == Hash(i.to_bytes(32, "big"))
        with pytest.raises(RefConflict):  # a conflict answer is read, not dropped
            transport.update_ref("refs/c", RefWriteCondition.MISSING, Hash(bytes(32)))
        transport.upload_pack(pack, key)
        assert transport.pack_exists(key)
        assert transport.download_pack(key) == pack
        transport.delete_ref("refs/c", RefWriteCondition.ANY)
    assert proxy.accepted == 1


def test_a_proxy_in_the_environment_is_used(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 on loopback (discard) has no listener here: a request sent through the
    # proxy fails to connect, one sent directly succeeds.
    url = http_server.url(f"env-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with open_transport(url, retries=0) as transport, pytest.raises(ConnectionFailed):
        transport.read_ref("refs/x")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with open_transport(url) as transport:
        assert transport.read_ref("refs/x") is None
