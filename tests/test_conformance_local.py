"""The whole conformance suite against the two local transports, as a third party runs it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mkit_transport import FileTransport, MemoryTransport, RetryPolicy, Transport
from mkit_transport.conformance import (
    ConformanceSuite,
    FileBackdoor,
    FileFaults,
    Harness,
    MemoryBackdoor,
    MemoryFaults,
)


class TestMemoryConformance(ConformanceSuite):
    """Memory: one named store per test; races run in threads (in-process store)."""

    @pytest.fixture
    def harness(self) -> Harness:
        name = f"conformance-{uuid.uuid4().hex}"

        def opener(retry: RetryPolicy | None) -> Transport:
            return MemoryTransport(name, retry=retry)

        return Harness(
            open=opener,
            url=f"mkit+memory://{name}",
            backdoor=MemoryBackdoor(MemoryTransport(name).store),
            faults=MemoryFaults(MemoryTransport(name).store),
            fresh=True,
        )


class TestFileConformance(ConformanceSuite):
    """File: a fresh directory per test; races run in separate processes."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        root = tmp_path / "store"

        def opener(retry: RetryPolicy | None) -> Transport:
            return FileTransport(root, retry=retry)

        return Harness(
            open=opener,
            url=f"mkit+file://{root}",
            backdoor=FileBackdoor(root),
            faults=FileFaults(),
            fresh=True,
            race_workers=6,
            counter_workers=6,
            counter_increments=40,
        )
