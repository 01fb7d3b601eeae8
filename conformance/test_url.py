"""The whole suite against ``--mkit-url`` (or a fresh temporary file store)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mkit_transport import FileTransport, MemoryTransport, RetryPolicy, Transport, open_transport

from . import ConformanceSuite
from .harness import Backdoor, FileBackdoor, Harness, MemoryBackdoor


def _backdoor(transport: Transport) -> Backdoor | None:
    """The back doors we know how to open from a URL alone (local stores)."""
    if isinstance(transport, FileTransport):
        return FileBackdoor(transport.root)
    if isinstance(transport, MemoryTransport):
        return MemoryBackdoor(transport.store)
    return None


class TestTransportAtURL(ConformanceSuite):
    """Runs every topic against the transport named on the command line."""

    @pytest.fixture
    def harness(
        self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Harness:
        url = request.config.getoption("--mkit-url")
        fresh = False
        if url in ("mkit+memory://", "mkit+memory:///"):
            # An unnamed memory store is private to each client; the suite needs
            # every client it opens to see the same store, so give it a name.
            url, fresh = f"mkit+memory://conformance-{uuid.uuid4().hex}", True
        if url is None:
            root: Path = tmp_path_factory.mktemp("store")
            url, fresh = f"mkit+file://{root}", True
        options: dict[str, object] = {}
        for item in request.config.getoption("--mkit-option"):
            key, _, text = item.partition("=")
            options[key] = text

        def opener(retry: RetryPolicy | None) -> Transport:
            extra = dict(options)
            if retry is not None:
                extra["retry"] = retry
            return open_transport(url, **extra)

        probe = opener(None)
        harness = Harness(
            open=opener, url=url, options=options, backdoor=_backdoor(probe), fresh=fresh
        )
        probe.close()
        if request.config.getoption("--mkit-quick"):
            harness.large_pack_size = 8 << 20
            harness.race_rounds = 4
            harness.counter_increments = 10
            harness.stateful_examples = 5
        return harness
