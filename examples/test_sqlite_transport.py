"""The conformance suite against the example SQLite transport: the page to copy.

Run it with ``python -m pytest examples/test_sqlite_transport.py`` (the suite's pytest
plugin, installed with mkit_transport, brings its markers, options and fixtures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.sqlite_transport import SCHEME, SqliteBackdoor, SqliteFaults, SqliteTransport
from mkit_transport import RetryPolicy, Transport, register_transport
from mkit_transport.conformance import ConformanceSuite, Harness

# A package of your own would declare the entry point instead (see the README):
#   [project.entry-points."mkit_transport.transports"]
#   "mkit+sqlite" = "my_package.sqlite_transport:SqliteTransport"
register_transport(SCHEME, SqliteTransport)


class TestSqliteTransport(ConformanceSuite):
    """Every topic of the suite; races run in separate processes on the same file."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        """How the suite reaches the transport: a fresh database per test."""
        path = tmp_path / "store.db"

        def opener(retry: RetryPolicy | None) -> Transport:
            return SqliteTransport(path, retry=retry)

        return Harness(
            open=opener,
            url=f"{SCHEME}://{path}",  # what the race workers open, in other processes
            backdoor=SqliteBackdoor(path),
            faults=SqliteFaults(),
            fresh=True,
            large_pack_size=8 << 20,  # the default buffers 64 MiB in one row
        )
